//! Tiled detection of large images (aerial orthophotos are thousands of pixels on a side): the
//! image is cut into overlapping windows at native resolution, each window is detected like an
//! image of its own, and the boxes are merged back into image coordinates.
//!
//! Merging: a box that touches a window edge inside the image is *cut* (its object continues in
//! the next window). Per class, boxes are kept greedily, whole boxes before cut ones and higher
//! scores first; a box is dropped when a kept box overlaps it by more than the model's NMS IoU, or
//! when the two come from different windows and their intersection covers more than
//! [`CUT_COVER`] of the smaller box (the same object seen by two windows: whole in one, cut or
//! framed differently in the other). Within one window the model's own NMS already decided.
//!
//! Memory: a PNG file is read row by row and only one row of windows is held
//! ([`Detector::detect_path_tiled`]); other files and images given decoded are held once (RGB8,
//! bounded by the decode limits, 400 Mpx by default). One window at a time is copied and
//! letterboxed, so the network's working memory is that of one window whatever the image size.

use crate::detector::Detector;
use crate::error::{InferError, Result};
use crate::results::{Detection, Detections, StageTimings};
use detnas_core::detector::boxes::{BBox, area, iou};
use image::RgbImage;
use std::path::Path;
use std::time::Instant;

/// Share of the smaller box an overlap must cover to merge boxes of two windows.
pub const CUT_COVER: f32 = 0.6;

/// Pixels from a window edge within which a box counts as cut by it.
const EDGE: f32 = 2.0;

/// Window size and overlap of tiled detection.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Tiling {
    /// Window side in image pixels (windows are square, clipped at the image's edges).
    pub size: u32,
    /// Fraction of a window shared with its neighbour, in `[0, 0.9]`.
    pub overlap: f32,
}

impl Tiling {
    /// Windows of `size` pixels overlapping by `overlap`; a size under 32 or an overlap outside
    /// `[0, 0.9]` is an error.
    pub fn new(size: u32, overlap: f32) -> Result<Self> {
        if size < detnas_core::limits::MIN_TILE {
            return Err(InferError::Config(format!("tile size {size} is under 32 pixels")));
        }
        if !(0.0..=detnas_core::limits::MAX_TILE_OVERLAP).contains(&overlap) {
            return Err(InferError::Config(format!("tile overlap {overlap} is outside [0, 0.9]")));
        }
        Ok(Tiling { size, overlap })
    }

    /// Start offsets of the windows along a side of `len` pixels: a regular stride of
    /// `size * (1 - overlap)`, the last window flush with the end.
    fn starts(&self, len: u32) -> Vec<u32> {
        if len <= self.size {
            return vec![0];
        }
        let stride = ((self.size as f32 * (1.0 - self.overlap)).round() as u32).max(1);
        let last = len - self.size;
        let mut v: Vec<u32> = (0..).map(|i| i * stride).take_while(|&s| s < last).collect();
        v.push(last);
        v
    }

    /// Every window `[x, y, width, height]` of a `width x height` image, row by row.
    pub fn windows(&self, width: u32, height: u32) -> Vec<[u32; 4]> {
        let (w, h) = (self.size.min(width), self.size.min(height));
        let xs = self.starts(width);
        self.starts(height).into_iter().flat_map(|y| xs.iter().map(move |&x| [x, y, w, h])).collect()
    }
}

/// A detection in image coordinates, its window and whether a window edge cut it.
struct Candidate {
    detection: Detection,
    window: usize,
    cut: bool,
}

impl Detector {
    /// Detects in `image` window by window ([`Tiling`]) and merges the boxes; the result is in
    /// `image`'s pixels, highest score first, capped by the options' `max_detections` only.
    pub fn detect_tiled(&self, image: &RgbImage, tiling: Tiling) -> Result<Detections> {
        let (width, height) = image.dimensions();
        self.detect_windows(width, height, tiling, |[x, y, w, h]| {
            Ok(image::imageops::crop_imm(image, x, y, w, h).to_image())
        })
    }

    /// Detects in the image at `path` window by window ([`Detector::detect_tiled`]).
    ///
    /// A non-interlaced PNG without EXIF metadata is read row by row: only the rows of one row of
    /// windows are held (`3 * width * min(tile, height)` bytes, checked against the decode limits'
    /// `max_alloc`, as are the reader's own row buffers), so its size is bounded by the window, not
    /// by the image, and the image's own pixel limits do not apply. Any other file is decoded whole, within the decode limits
    /// (400 megapixels by default): convert a larger one to PNG to detect in it.
    pub fn detect_path_tiled(&self, path: impl AsRef<Path>, tiling: Tiling) -> Result<Detections> {
        Ok(self.detect_path_tiled_keeping(path.as_ref(), tiling, false)?.0)
    }

    /// [`Detector::detect_path_tiled`], also handing back the decoded image when `keep` is set
    /// and the file was decoded whole (always at full resolution); `None` for a PNG read row by
    /// row, which never holds the whole image.
    pub(crate) fn detect_path_tiled_keeping(
        &self,
        path: &Path,
        tiling: Tiling,
        keep: bool,
    ) -> Result<(Detections, Option<RgbImage>)> {
        #[cfg(feature = "png")]
        if let Some(rows) = detnas_data::png_rows::PngRows::open(path, &self.options().limits)? {
            return Ok((self.detect_rows_tiled(rows, tiling)?, None));
        }
        let t0 = Instant::now();
        let loaded = crate::image_io::load_image(path, &self.options().limits)?;
        let name = path.display().to_string();
        let loaded = if self.options().strict { loaded.deny_warnings(&name)? } else { loaded };
        let decode = t0.elapsed();
        let mut d = self.detect_tiled(&loaded.rgb, tiling)?;
        d.timings.decode = decode;
        d.warnings = loaded.warnings;
        Ok((d, keep.then_some(loaded.rgb)))
    }

    /// Tiled detection over a PNG read row by row through a [`Band`]; reading counts as decoding.
    #[cfg(feature = "png")]
    fn detect_rows_tiled(&self, rows: detnas_data::png_rows::PngRows, tiling: Tiling) -> Result<Detections> {
        let (width, height) = rows.dimensions();
        let band_bytes = 3 * u64::from(width) * u64::from(tiling.size.min(height));
        let limit = self.options().limits.max_alloc;
        if band_bytes > limit {
            let name = rows.name().to_string();
            let reason = format!(
                "a band of {} rows of {width} pixels needs {band_bytes} bytes, over the decode limit of {limit} bytes",
                tiling.size.min(height)
            );
            return Err(crate::image_io::ImageError::LimitExceeded { name, reason }.into());
        }
        let mut band = Band { rows, top: 0, data: Vec::new() };
        let mut decode = std::time::Duration::ZERO;
        let mut d = self.detect_windows(width, height, tiling, |window| {
            let t = Instant::now();
            let tile = band.window(window);
            decode += t.elapsed();
            tile
        })?;
        d.timings.preprocess = d.timings.preprocess.saturating_sub(decode);
        d.timings.decode = decode;
        Ok(d)
    }

    /// The tiling loop: `window` gives the pixels of each window `[x, y, width, height]`, row of
    /// windows by row of windows from the top (its time counts as preprocessing).
    fn detect_windows(
        &self,
        width: u32,
        height: u32,
        tiling: Tiling,
        mut window: impl FnMut([u32; 4]) -> Result<RgbImage>,
    ) -> Result<Detections> {
        let mut timings = StageTimings::default();
        let mut candidates = Vec::new();
        for (index, [x, y, w, h]) in tiling.windows(width, height).into_iter().enumerate() {
            let t0 = Instant::now();
            let tile = window([x, y, w, h])?;
            timings.preprocess += t0.elapsed();
            let found = self.detect_uncapped(&tile)?;
            timings.preprocess += found.timings.preprocess;
            timings.inference += found.timings.inference;
            timings.postprocess += found.timings.postprocess;
            let inner = |at: u32, end: u32, edge: f32, limit: u32| {
                at > 0 && (edge - at as f32).abs() <= EDGE || end < limit && (end as f32 - edge).abs() <= EDGE
            };
            for mut d in found.detections {
                let b = d.bbox;
                d.bbox = [b[0] + x as f32, b[1] + y as f32, b[2] + x as f32, b[3] + y as f32];
                let b = d.bbox;
                let cut = inner(x, x + w, b[0], width)
                    || inner(x, x + w, b[2], width)
                    || inner(y, y + h, b[1], height)
                    || inner(y, y + h, b[3], height);
                candidates.push(Candidate { detection: d, window: index, cut });
            }
        }
        let t = Instant::now();
        let mut detections = merge(candidates, self.thresholds().iou);
        detections.truncate(self.options().max_detections.unwrap_or(usize::MAX));
        timings.postprocess += t.elapsed();
        Ok(Detections { detections, width, height, timings, warnings: Vec::new() })
    }
}

/// The rows `top..top + held` of a PNG read row by row: windows are served in row-of-windows
/// order, rows above the current window are dropped, rows below are read as needed.
#[cfg(feature = "png")]
struct Band {
    rows: detnas_data::png_rows::PngRows,
    top: u32,
    /// RGB8 rows from `top` on.
    data: Vec<u8>,
}

#[cfg(feature = "png")]
impl Band {
    fn window(&mut self, [x, y, w, h]: [u32; 4]) -> Result<RgbImage> {
        let row_bytes = 3 * self.rows.dimensions().0 as usize;
        let held = (self.data.len() / row_bytes) as u32;
        if y >= self.top + held {
            // past every row held: skip to y (windows never leave a gap, but stay correct if they do)
            self.data.clear();
            for _ in self.top + held..y {
                self.rows.read_row(&mut self.data)?;
                self.data.clear();
            }
            self.top = y;
        } else if y > self.top {
            self.data.drain(..(y - self.top) as usize * row_bytes);
            self.top = y;
        }
        while ((self.data.len() / row_bytes) as u32) < y + h - self.top {
            self.rows.read_row(&mut self.data)?;
        }
        let (x0, span) = (3 * x as usize, 3 * w as usize);
        let mut tile = Vec::with_capacity(span * h as usize);
        for r in (y - self.top) as usize..(y - self.top + h) as usize {
            tile.extend_from_slice(&self.data[r * row_bytes + x0..r * row_bytes + x0 + span]);
        }
        Ok(RgbImage::from_raw(w, h, tile).expect("a window of w x h RGB pixels"))
    }
}

/// Greedy per-class merge: whole boxes before cut ones, then by score.
fn merge(mut candidates: Vec<Candidate>, iou_threshold: f32) -> Vec<Detection> {
    candidates.sort_by(|a, b| a.cut.cmp(&b.cut).then(b.detection.score.total_cmp(&a.detection.score)));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        let suppressed = kept.iter().any(|k| {
            k.detection.class_id == c.detection.class_id
                && (iou(&k.detection.bbox, &c.detection.bbox) > iou_threshold
                    || k.window != c.window && cover(&k.detection.bbox, &c.detection.bbox) > CUT_COVER)
        });
        if !suppressed {
            kept.push(c);
        }
    }
    let mut out: Vec<Detection> = kept.into_iter().map(|c| c.detection).collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// Intersection over the smaller box's area.
fn cover(a: &BBox, b: &BBox) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let smaller = area(a).min(area(b));
    if smaller > 0.0 { w * h / smaller } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_image_with_the_last_flush_to_the_edge() {
        let t = Tiling::new(400, 0.25).unwrap();
        assert_eq!(t.starts(1000), vec![0, 300, 600]);
        assert_eq!(t.starts(400), vec![0]);
        assert_eq!(t.starts(250), vec![0]);
        assert_eq!(t.windows(1000, 250).len(), 3);
        assert_eq!(t.windows(250, 250), vec![[0, 0, 250, 250]]);
        let no_overlap = Tiling::new(400, 0.0).unwrap();
        assert_eq!(no_overlap.starts(800), vec![0, 400]);
        assert!(Tiling::new(16, 0.1).is_err() && Tiling::new(400, 0.95).is_err() && Tiling::new(400, -0.1).is_err());
    }

    fn cand(b: BBox, score: f32, cut: bool, window: usize) -> Candidate {
        let detection = Detection { bbox: b, score, class_id: 0, class_name: "tree".into(), category_id: 1 };
        Candidate { detection, window, cut }
    }

    #[test]
    fn a_cut_box_yields_to_the_whole_one_even_with_a_higher_score() {
        let whole = cand([100.0, 100.0, 140.0, 140.0], 0.6, false, 0);
        let cut = cand([100.0, 100.0, 118.0, 140.0], 0.9, true, 1); // half of it, at a window edge
        let other = cand([300.0, 300.0, 340.0, 340.0], 0.7, true, 1); // cut, but alone
        let merged = merge(vec![cut, whole, other], 0.5);
        let boxes: Vec<BBox> = merged.iter().map(|d| d.bbox).collect();
        assert_eq!(boxes, vec![[300.0, 300.0, 340.0, 340.0], [100.0, 100.0, 140.0, 140.0]]);
        // nested boxes of one window are the model's decision; of two windows, one object
        let nested = |w| vec![cand([0.0, 0.0, 40.0, 40.0], 0.9, false, 0), cand([0.0, 0.0, 40.0, 18.0], 0.8, false, w)];
        assert_eq!(merge(nested(0), 0.5).len(), 2);
        assert_eq!(merge(nested(1), 0.5).len(), 1);
    }
}

//! Detection data sets: COCO instances JSON and Pascal VOC XML loaded into one form
//! ([`DetectionDataset`]), validated record by record under a [`ValidationPolicy`], split into a
//! deterministic hold-out set, and written back as COCO ground truth for `detnas eval`.
//!
//! Contract of a loaded [`DetectionDataset`]: image ids are unique; every sample's image file
//! existed at load time (unless [`ValidationPolicy::check_files`] is off); every box is
//! `[x1, y1, x2, y2]` in pixels with `0 <= x1 < x2 <= width` and `0 <= y1 < y2 <= height`, all
//! finite; every label is `< class_names.len()`; `category_ids[label]` is the data set's own id of
//! that class. Samples keep the order of the source (COCO `images`, VOC file list).

mod coco;
mod report;
mod voc;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_voc;

pub use report::{Example, Issue, ValidationPolicy, ValidationReport};
pub use voc::{VocOptions, voc_files};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use detnas_core::coco::{CocoAnnotation, CocoCategory, CocoDataset, CocoImage, GroundTruth};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// One image and its boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionSample {
    /// The image file (the loader's image folder joined with the recorded file name).
    pub image: PathBuf,
    /// Width in pixels, as recorded (or read from the file's header when the record has none).
    pub width: u32,
    /// Height in pixels, as recorded (or read from the file's header when the record has none).
    pub height: u32,
    /// Boxes `[x1, y1, x2, y2]` in pixels, inside the image, positive width and height.
    pub boxes: Vec<[f32; 4]>,
    /// 0-based class index of each box (`boxes.len()` entries).
    pub labels: Vec<usize>,
    /// The image's id: COCO's `id`; for VOC the 1-based position of its XML file in the list.
    pub image_id: u64,
}

/// A validated detection data set (see the module docs for the invariants).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionDataset {
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
    /// The data set's id of each class, indexed by label: COCO category ids in ascending order;
    /// `1..=K` for VOC.
    pub category_ids: Vec<u64>,
    /// The usable images with their boxes, in file order.
    pub samples: Vec<DetectionSample>,
    /// What validation found while loading (for a split: the report of the whole set).
    pub report: ValidationReport,
}

/// Overhang (pixels) clipped without being counted: floating-point noise of `x + width`.
const CLIP_TOLERANCE: f64 = 1e-3;

/// Checks a box `[x1, y1, x2, y2]` against a `width` x `height` image. `Ok((box, None))` keeps
/// it as is, `Ok((box, Some(BoxClipped)))` keeps it clipped, `Err(issue)` drops it.
pub(crate) fn check_box(b: [f64; 4], width: u32, height: u32, clip: bool) -> Result<([f32; 4], Option<Issue>), Issue> {
    if !b.iter().all(|v| v.is_finite()) {
        return Err(Issue::BoxInvalid);
    }
    let [x1, y1, x2, y2] = b;
    if x2 <= x1 || y2 <= y1 {
        return Err(Issue::BoxEmpty);
    }
    let (w, h) = (f64::from(width), f64::from(height));
    if x1 >= w || y1 >= h || x2 <= 0.0 || y2 <= 0.0 {
        return Err(Issue::BoxOutside);
    }
    let outside = x1 < -CLIP_TOLERANCE || y1 < -CLIP_TOLERANCE || x2 > w + CLIP_TOLERANCE || y2 > h + CLIP_TOLERANCE;
    if outside && !clip {
        return Err(Issue::BoxPartlyOutside);
    }
    let clipped = [x1.max(0.0) as f32, y1.max(0.0) as f32, x2.min(w) as f32, y2.min(h) as f32];
    if clipped[2] <= clipped[0] || clipped[3] <= clipped[1] {
        // Positive in f64, collapsed in f32 (or by clipping at the tolerance).
        return Err(if outside { Issue::BoxOutside } else { Issue::BoxEmpty });
    }
    Ok((clipped, outside.then_some(Issue::BoxClipped)))
}

/// Width and height from an image file's header (no pixel is decoded).
pub(crate) fn header_size(path: &Path) -> Option<(u32, u32)> {
    header_dimensions(path).ok()
}

/// Width and height from an image file's header, or why it cannot be read.
fn header_dimensions(path: &Path) -> std::result::Result<(u32, u32), String> {
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    match reader.into_dimensions() {
        Ok((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        Ok((w, h)) => Err(format!("{}: header declares a zero-size image ({w}x{h})", path.display())),
        Err(e) => Err(format!("{}: no readable image header: {e}", path.display())),
    }
}

/// An image file that passed [`check_image`].
pub(crate) struct CheckedImage {
    /// The recorded size when there is one, else the file's.
    pub size: (u32, u32),
    /// A decode warning (truncated JPEG, ...) of an image that still decoded.
    pub warning: Option<String>,
}

/// Checks the image file of a record: its header (or, with `decode`, the whole file through
/// [`crate::image_io::load_image`]) must decode, and its size must equal `recorded` when there is
/// one (transposed is accepted: EXIF orientations 5-8 swap the sides, which a header check cannot
/// see). Errors: the issue and its detail.
pub(crate) fn check_image(
    path: &Path,
    recorded: Option<(u32, u32)>,
    decode: bool,
) -> std::result::Result<CheckedImage, (Issue, String)> {
    let (actual, warning) = if decode {
        let img = crate::image_io::load_image(path, &crate::image_io::DecodeLimits::default())
            .map_err(|e| (Issue::UnreadableImage, e.to_string()))?;
        let warning = img.warnings.first().map(|w| format!("{}: {w}", path.display()));
        ((img.rgb.width(), img.rgb.height()), warning)
    } else {
        (header_dimensions(path).map_err(|e| (Issue::UnreadableImage, e))?, None)
    };
    let size = match recorded {
        Some((w, h)) if (w, h) != actual && (h, w) != actual => {
            let detail = format!("recorded {w}x{h}, but {} is {}x{}", path.display(), actual.0, actual.1);
            return Err((Issue::ImageSizeMismatch, detail));
        }
        Some(size) => size,
        None => actual,
    };
    Ok(CheckedImage { size, warning })
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl DetectionDataset {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Total number of boxes over all samples.
    pub fn num_boxes(&self) -> usize {
        self.samples.iter().map(|s| s.boxes.len()).sum()
    }

    /// Splits off a hold-out set: `(rest, holdout)`, disjoint by image id, each keeping the
    /// source order of its samples, both with the class list and the load report of `self`.
    ///
    /// Deterministic and independent of sample order: the distinct image ids are sorted, each is
    /// hashed with `seed` (SplitMix64), and the `round(fraction * n)` ids with the smallest hashes
    /// (ties by id) are held out — at least 1 and at most `n - 1` when `0 < fraction < 1` and
    /// `n >= 2`. For one seed a larger fraction holds out a superset. `fraction` must be in
    /// `[0, 1]`, else [`DataError::Argument`].
    pub fn split_holdout(&self, fraction: f64, seed: u64) -> Result<(DetectionDataset, DetectionDataset)> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(DataError::Argument(format!("hold-out fraction {fraction} is not in [0, 1]")));
        }
        let ids: BTreeSet<u64> = self.samples.iter().map(|s| s.image_id).collect();
        let n = ids.len();
        let mut count = (fraction * n as f64).round() as usize;
        if fraction > 0.0 && fraction < 1.0 && n >= 2 {
            count = count.clamp(1, n - 1);
        }
        let salt = mix64(seed ^ 0x6A09_E667_F3BC_C908);
        let mut keyed: Vec<(u64, u64)> = ids.into_iter().map(|id| (mix64(id ^ salt), id)).collect();
        keyed.sort_unstable();
        let held: BTreeSet<u64> = keyed.iter().take(count).map(|&(_, id)| id).collect();
        let (holdout, rest): (Vec<_>, Vec<_>) = self.samples.iter().cloned().partition(|s| held.contains(&s.image_id));
        let part = |samples| DetectionDataset {
            class_names: self.class_names.clone(),
            category_ids: self.category_ids.clone(),
            samples,
            report: self.report.clone(),
        };
        Ok((part(rest), part(holdout)))
    }

    /// The ground truth as a COCO instances data set: images with `file_name` (relative to
    /// `json_dir` when the image is inside it, else absolute), width and height; one category per
    /// class (`category_ids`, `class_names`); one annotation per box with ids `1..`, `bbox`
    /// `[x, y, w, h]`, `area = w * h`, `iscrowd` 0. Checked with `GroundTruth::new` (unique ids,
    /// consistent references, finite non-negative boxes); an inconsistent data set (labels
    /// without a class, ids over `i64::MAX`, ...) is [`DataError::Invalid`] naming `json_dir`.
    pub fn to_coco(&self, json_dir: &Path) -> Result<CocoDataset> {
        let invalid = |reason: String| DataError::invalid(json_dir, reason);
        if self.class_names.len() != self.category_ids.len() {
            return Err(invalid(format!(
                "{} class names but {} category ids",
                self.class_names.len(),
                self.category_ids.len()
            )));
        }
        let to_i64 = |what: &str, id: u64| i64::try_from(id).map_err(|_| invalid(format!("{what} {id} exceeds i64")));
        let categories = self
            .category_ids
            .iter()
            .zip(&self.class_names)
            .map(|(&id, name)| {
                Ok(CocoCategory { id: to_i64("category id", id)?, name: name.clone(), supercategory: None })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut images = Vec::with_capacity(self.samples.len());
        let mut annotations = Vec::with_capacity(self.num_boxes());
        for sample in &self.samples {
            let image_id = to_i64("image id", sample.image_id)?;
            if sample.boxes.len() != sample.labels.len() {
                return Err(invalid(format!(
                    "image id {image_id}: {} boxes but {} labels",
                    sample.boxes.len(),
                    sample.labels.len()
                )));
            }
            let file_name = relative_name(&sample.image, json_dir)
                .ok_or_else(|| invalid(format!("image id {image_id}: path {:?} is not UTF-8", sample.image)))?;
            images.push(CocoImage {
                id: image_id,
                file_name: Some(file_name),
                width: Some(sample.width),
                height: Some(sample.height),
            });
            for (b, &label) in sample.boxes.iter().zip(&sample.labels) {
                let category_id = categories
                    .get(label)
                    .ok_or_else(|| invalid(format!("image id {image_id}: label {label} has no class")))?
                    .id;
                let bbox = [short_f64(b[0]), short_f64(b[1]), short_f64(b[2] - b[0]), short_f64(b[3] - b[1])];
                let id = i64::try_from(annotations.len() + 1).map_err(|_| invalid("too many boxes".to_owned()))?;
                annotations.push(CocoAnnotation {
                    id,
                    image_id,
                    category_id,
                    bbox,
                    area: bbox[2] * bbox[3],
                    iscrowd: false,
                });
            }
        }
        let dataset = CocoDataset { images, annotations, categories };
        GroundTruth::new(dataset.clone()).map_err(|e| invalid(e.problem().map_or(e.to_string(), |p| p.to_string())))?;
        Ok(dataset)
    }

    /// Writes the ground truth ([`DetectionDataset::to_coco`], file names relative to the JSON's
    /// folder) as COCO instances JSON at `path`, atomically. The file loads back with
    /// [`DetectionDataset::from_coco`]`(path, path's folder, ..)` and evaluates with `detnas eval`.
    pub fn write_coco(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dataset = self.to_coco(dir).map_err(|e| match e {
            DataError::Invalid { reason, .. } => DataError::invalid(path, reason),
            other => other,
        })?;
        let json = serde_json::to_vec(&dataset).map_err(|e| DataError::invalid(path, e.to_string()))?;
        detnas_core::fsutil::write_atomic(path, &json)?;
        Ok(())
    }
}

/// The f64 with the shortest decimal form that reads back as the same f32 (`12.3f32` becomes
/// `12.3`, not `12.300000190734863`), so written files are readable and round-trip exactly.
fn short_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// `image` relative to `dir` when inside it (compared as absolute paths), else absolute; `None`
/// when the path is not UTF-8. Separators are `/`.
fn relative_name(image: &Path, dir: &Path) -> Option<String> {
    let abs_image = std::path::absolute(image).unwrap_or_else(|_| image.to_path_buf());
    let abs_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match abs_image.strip_prefix(&abs_dir) {
        Ok(rel) => {
            let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
            parts.map(|p| p.join("/"))
        }
        Err(_) => abs_image.to_str().map(str::to_owned),
    }
}

//! Batches for detection training and evaluation: decode (the SDK's image path), letterbox with
//! optional scale jitter and horizontal flip, anchor targets; produced ahead of the model on a
//! background thread. Every random choice of step `s` comes from a generator seeded by
//! `(seed, s)`, so a resumed run sees exactly the batches an uninterrupted one would.

use crate::error::{Result, TrainError};
use crate::faster_rcnn::{ImageTruth, image_truth};
use crate::loss::{ImageTargets, image_targets};
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::DetectorKind;
use detnas_core::detector::boxes::{BBox, Letterbox};
use detnas_core::detector::contract::seeds;
use detnas_core::rng::Rng;
use detnas_data::detection::DetectionDataset;
use detnas_data::image_io::{DecodeLimits, load_image};
use detnas_data::preprocess::letterbox_into;
use detnas_data::symmetry::Symmetry;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

/// Training-time augmentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Flip horizontally with probability 0.5.
    pub hflip: bool,
    /// Scale the letterboxed image by a factor uniform in `[scale_min, 1]`.
    pub scale_min: f32,
    /// One of the eight symmetries of the square, uniformly (rotations by 0, 90, 180, 270 degrees,
    /// each with or without a horizontal flip), applied to the decoded image before the rest:
    /// for imagery without an "up" (aerial, microscopy). Off by default; not serialised when off,
    /// so configuration hashes of runs without it are unchanged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dihedral: bool,
    /// Colour jitter: brightness, contrast and saturation each scaled by a factor uniform in
    /// `[1 - j, 1 + j]` (`j` in `[0, 1)`; 0, the default, is off and not serialised).
    #[serde(skip_serializing_if = "is_zero")]
    pub color_jitter: f32,
}

impl Augment {
    /// Checks the ranges: `scale_min` in `(0, 1]`, `color_jitter` in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if !(self.scale_min > 0.0 && self.scale_min <= 1.0) {
            return Err(TrainError::Config(format!("[augment] scale_min is {}, must be in (0, 1]", self.scale_min)));
        }
        if !(0.0..1.0).contains(&self.color_jitter) {
            let j = self.color_jitter;
            return Err(TrainError::Config(format!("[augment] color_jitter is {j}, must be in [0, 1)")));
        }
        Ok(())
    }
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

impl Default for Augment {
    fn default() -> Self {
        Augment { hflip: true, scale_min: 0.75, dihedral: false, color_jitter: 0.0 }
    }
}

/// Symmetry `k` (0..8) of the square ([`Symmetry`]) applied to `img` and its `boxes` (pixel edges).
pub fn dihedral(img: &RgbImage, boxes: &[BBox], k: u64) -> (RgbImage, Vec<BBox>) {
    let s = Symmetry::new(k);
    let (w, h) = img.dimensions();
    (s.image(img), boxes.iter().map(|b| s.bbox(b, w, h)).collect())
}

/// Brightness, contrast and saturation factors `(b, c, s)` applied in that order, in place.
fn jitter_colours(img: &mut RgbImage, (b, c, s): (f32, f32, f32)) {
    let luma = |p: &[f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let n = (img.width() * img.height()).max(1) as f32;
    let mean = img.pixels().map(|p| luma(&p.0.map(f32::from)) * b).sum::<f32>() / n;
    for p in img.pixels_mut() {
        let mut v = p.0.map(|x| f32::from(x) * b);
        v = v.map(|x| (x - mean) * c + mean);
        let g = luma(&v);
        p.0 = v.map(|x| (g + (x - g) * s).round().clamp(0.0, 255.0) as u8);
    }
}

/// One prepared image: input planes, letterbox geometry, boxes in input pixels.
pub struct Prepared {
    /// CHW planes of the letterboxed input (RGB 0-255, padding included).
    pub input: Vec<f32>,
    /// Where the (augmented) image lies in the input.
    pub letterbox: Letterbox,
    /// Boxes in input pixels.
    pub boxes: Vec<BBox>,
    /// Label of each box.
    pub labels: Vec<usize>,
}

/// Seed of step `step` for stream `stream` (data order, augmentation, path sampling).
pub fn step_seed(seed: u64, stream: u64, step: u64) -> u64 {
    detnas_core::detector::contract::seeds::stream_seed(seed, stream, step)
}

/// Loads sample `index` and letterboxes it into the configured input, with augmentation when
/// `rng` is given.
pub fn prepare(
    ds: &DetectionDataset,
    index: usize,
    cfg: &DetectorConfig,
    aug: Option<(&Augment, &mut Rng)>,
) -> Result<Prepared> {
    let s = &ds.samples[index];
    let mut img = load_image(&s.image, &DecodeLimits::default())
        .map_err(|e| TrainError::Data { path: s.image.clone(), reason: e.to_string() })?
        .rgb;
    let mut source_boxes = std::borrow::Cow::Borrowed(&s.boxes);
    let (w, h) = (cfg.input.width as u32, cfg.input.height as u32);
    let (scale, flip) = match aug {
        Some((a, rng)) => {
            let s = a.scale_min + (1.0 - a.scale_min) * rng.unit() as f32;
            let flip = a.hflip && rng.below(2) == 1;
            // draws of the optional augmentations come after, and only when they are on, so runs
            // without them see the same random stream as before they existed
            if a.dihedral {
                let (turned, boxes) = dihedral(&img, &source_boxes, rng.below(8));
                (img, source_boxes) = (turned, std::borrow::Cow::Owned(boxes));
            }
            if a.color_jitter > 0.0 {
                let mut factor = || 1.0 + a.color_jitter * (2.0 * rng.unit() as f32 - 1.0);
                let factors = (factor(), factor(), factor());
                jitter_colours(&mut img, factors);
            }
            (s, flip)
        }
        None => (1.0, false),
    };
    let fit = Letterbox::fit(img.width(), img.height(), w, h);
    let (rw, rh) = (
        ((fit.resized_w as f32 * scale).round() as u32).max(1),
        ((fit.resized_h as f32 * scale).round() as u32).max(1),
    );
    let mut small = vec![0f32; 3 * (rw * rh) as usize];
    letterbox_into(&img, rw, rh, cfg.preprocess.pad_value, &mut small);
    let mut input = vec![cfg.preprocess.pad_value; 3 * (w * h) as usize];
    for c in 0..3 {
        for y in 0..rh as usize {
            let src = &small[(c * rh as usize + y) * rw as usize..][..rw as usize];
            let dst = &mut input[(c * h as usize + y) * w as usize..][..rw as usize];
            if flip {
                for (d, v) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *v;
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
    let (sx, sy) = (rw as f32 / img.width() as f32, rh as f32 / img.height() as f32);
    let boxes = source_boxes
        .iter()
        .map(|b| {
            let (x1, x2) = (b[0] * sx, b[2] * sx);
            let (x1, x2) = if flip { (rw as f32 - x2, rw as f32 - x1) } else { (x1, x2) };
            [x1, b[1] * sy, x2, b[3] * sy]
        })
        .collect();
    let letterbox =
        Letterbox { scale: fit.scale * scale, resized_w: rw, resized_h: rh, src_w: img.width(), src_h: img.height() };
    Ok(Prepared { input, letterbox, boxes, labels: s.labels.clone() })
}

/// A training image that could not be loaded: its file and the decoder's error.
#[derive(Clone, Debug, PartialEq)]
pub struct BadImage {
    /// The image file.
    pub path: PathBuf,
    /// The loading error (it names the file).
    pub error: String,
}

impl std::fmt::Display for BadImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// A training batch: the images that loaded (`size` of the requested batch size; fewer when some
/// could not be decoded).
pub struct Batch {
    /// The step the batch is for.
    pub step: usize,
    /// The letterbox size of every image of this batch.
    pub input: detnas_core::InputSize,
    /// `[size, 3, H, W]` input planes, image after image.
    pub images: Vec<f32>,
    /// The training targets of each image, for the detector family of the configuration.
    pub targets: BatchTargets,
    /// Images in the batch.
    pub size: usize,
    /// Images of this batch found undecodable for the first time (skipped).
    pub bad_images: Vec<BadImage>,
}

/// Per-image training targets of a batch.
pub enum BatchTargets {
    /// RetinaNet: anchor labels and box targets.
    Retinanet(Vec<ImageTargets>),
    /// Faster R-CNN: the ground truth and the RPN's anchor targets (RoI targets need the
    /// proposals, so they are made in the step).
    FasterRcnn(Vec<ImageTruth>),
}

impl BatchTargets {
    fn empty(kind: DetectorKind) -> Self {
        match kind {
            DetectorKind::Retinanet => BatchTargets::Retinanet(Vec::new()),
            DetectorKind::FasterRcnn => BatchTargets::FasterRcnn(Vec::new()),
        }
    }
}

/// Seeded permutation of `0..n` for `epoch`.
fn epoch_permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = Rng::seed(step_seed(seed, seeds::EPOCH_PERMUTATION, epoch as u64));
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i as u64 + 1) as usize);
    }
    perm
}

/// Sample indices of step `step`: consecutive positions in per-epoch seeded permutations.
pub fn batch_indices(n: usize, batch: usize, seed: u64, step: usize) -> Vec<usize> {
    let mut perm: Option<(usize, Vec<usize>)> = None;
    (0..batch)
        .map(|j| {
            let g = step * batch + j;
            let (epoch, pos) = (g / n, g % n);
            if perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                perm = Some((epoch, epoch_permutation(n, seed, epoch)));
            }
            perm.as_ref().expect("set above").1[pos]
        })
        .collect()
}

/// Builds the batch of `step`. An image that fails to load is left out of the batch: reported in
/// [`Batch::bad_images`] the first time and remembered in `bad` (sample indices) so it is skipped
/// without decoding afterwards. The random choices of the other images do not depend on it.
#[allow(clippy::too_many_arguments)]
pub fn make_batch(
    ds: &DetectionDataset,
    cfg: &DetectorConfig,
    anchors: &[BBox],
    aug: &Augment,
    batch: usize,
    seed: u64,
    step: usize,
    bad: &mut HashSet<usize>,
) -> Batch {
    let mut rng = Rng::seed(step_seed(seed, seeds::DETECTION_AUGMENT, step as u64));
    let targets = BatchTargets::empty(cfg.kind());
    let mut out = Batch { step, input: cfg.input, images: Vec::new(), targets, size: 0, bad_images: Vec::new() };
    for i in batch_indices(ds.samples.len(), batch, seed, step) {
        if bad.contains(&i) {
            continue;
        }
        match prepare(ds, i, cfg, Some((aug, &mut rng))) {
            Ok(p) => {
                out.images.extend_from_slice(&p.input);
                match &mut out.targets {
                    BatchTargets::Retinanet(t) => t.push(image_targets(anchors, &p.boxes, &p.labels, cfg)),
                    BatchTargets::FasterRcnn(t) => t.push(image_truth(anchors, &p.boxes, &p.labels, cfg)),
                }
                out.size += 1;
            }
            Err(e) => {
                bad.insert(i);
                out.bad_images.push(BadImage { path: ds.samples[i].image.clone(), error: e.to_string() });
            }
        }
    }
    out
}

/// The detector configuration (input size) and anchors of each step's batch: the same for every
/// step, or per step for a genes supernet (whose input resolution is a gene).
pub type Geometry = Arc<dyn Fn(usize) -> (DetectorConfig, Arc<Vec<BBox>>) + Send + Sync>;

/// A [`Geometry`] that is the same for every step.
pub fn fixed_geometry(cfg: DetectorConfig, anchors: Arc<Vec<BBox>>) -> Geometry {
    Arc::new(move |_| (cfg.clone(), anchors.clone()))
}

/// Batches for steps `start..end`, prepared on a background thread (two ahead).
pub struct Loader {
    rx: Receiver<Batch>,
    /// Time the trainer spent waiting for data.
    pub waited: Duration,
}

impl Loader {
    /// Starts the thread; `geometry` gives each step's letterbox size and anchors.
    pub fn spawn(
        ds: Arc<DetectionDataset>,
        geometry: Geometry,
        aug: Augment,
        batch: usize,
        seed: u64,
        steps: std::ops::Range<usize>,
    ) -> Self {
        let (tx, rx) = sync_channel(2);
        std::thread::spawn(move || {
            let mut bad = HashSet::new();
            for step in steps {
                let (cfg, anchors) = geometry(step);
                if tx.send(make_batch(&ds, &cfg, &anchors, &aug, batch, seed, step, &mut bad)).is_err() {
                    break;
                }
            }
        });
        Loader { rx, waited: Duration::ZERO }
    }

    /// The next batch and how long this call waited for it; `None` when the range is exhausted.
    pub fn next_batch(&mut self) -> Option<(Batch, Duration)> {
        let t = Instant::now();
        let b = self.rx.recv().ok();
        let waited = t.elapsed();
        self.waited += waited;
        b.map(|b| (b, waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detnas_data::synthetic::{CLASSES, SyntheticSpec, generate};

    /// Augmented boxes must still frame the shapes: the pixel at each box centre has the class colour.
    #[test]
    fn augmented_boxes_follow_the_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SyntheticSpec {
            images: 6,
            width: 160,
            height: 120,
            classes: 3,
            min_size: 24,
            max_size: 40,
            ..Default::default()
        };
        let json = generate(dir.path(), &spec).unwrap();
        let ds = DetectionDataset::from_coco(&json, dir.path(), &Default::default()).unwrap();
        let cfg = DetectorConfig { input: detnas_core::InputSize::new(96, 128), ..DetectorConfig::default() };
        let aug = Augment { hflip: true, scale_min: 0.5, ..Augment::default() };
        let mut flips = 0;
        for seed in 0..12u64 {
            let mut rng = Rng::seed(seed);
            for i in 0..ds.samples.len() {
                let before = rng.clone();
                let p = prepare(&ds, i, &cfg, Some((&aug, &mut rng))).unwrap();
                let mut probe = before;
                let _ = probe.unit();
                flips += usize::from(probe.below(2) == 1);
                let plane = 96 * 128;
                for (b, &label) in p.boxes.iter().zip(&p.labels) {
                    let (cx, cy) = (((b[0] + b[2]) / 2.0) as usize, ((b[1] + b[3]) / 2.0) as usize);
                    let px =
                        [p.input[cy * 128 + cx], p.input[plane + cy * 128 + cx], p.input[2 * plane + cy * 128 + cx]];
                    let want = CLASSES[label].colour;
                    for c in 0..3 {
                        assert!(
                            (px[c] - want[c] as f32).abs() < 40.0,
                            "seed {seed} image {i} box {b:?}: {px:?} vs {want:?}"
                        );
                    }
                }
            }
        }
        assert!(flips > 10, "flips were exercised");

        // every symmetry of the square and colour jitter keep boxes on their shapes
        let aug = Augment { hflip: false, scale_min: 0.6, dihedral: true, color_jitter: 0.3 };
        let plane = 96 * 128;
        for seed in 0..16u64 {
            let mut rng = Rng::seed(seed);
            for i in 0..ds.samples.len() {
                let p = prepare(&ds, i, &cfg, Some((&aug, &mut rng))).unwrap();
                for (b, &label) in p.boxes.iter().zip(&p.labels) {
                    assert!(b[2] <= p.letterbox.resized_w as f32 + 1e-3 && b[3] <= p.letterbox.resized_h as f32 + 1e-3);
                    let (cx, cy) = (((b[0] + b[2]) / 2.0) as usize, ((b[1] + b[3]) / 2.0) as usize);
                    let px = [0, 1, 2].map(|c| p.input[c * plane + cy * 128 + cx]);
                    // jitter moves colours: the class's dominant channels stay above the others
                    let want = CLASSES[label].colour;
                    let min_hi = (0..3).filter(|&c| want[c] > 128).map(|c| px[c]).fold(f32::MAX, f32::min);
                    let max_lo = (0..3).filter(|&c| want[c] <= 128).map(|c| px[c]).fold(f32::MIN, f32::max);
                    if min_hi < f32::MAX && max_lo > f32::MIN {
                        assert!(min_hi > max_lo + 40.0, "seed {seed} image {i} box {b:?}: {px:?} vs {want:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn augmentations_off_leave_the_serialised_config_unchanged() {
        let plain = serde_json::to_value(Augment::default()).unwrap();
        assert_eq!(plain, serde_json::json!({ "hflip": true, "scale_min": 0.75 }), "hashes of existing runs hold");
        let on: Augment = toml::from_str("dihedral = true\ncolor_jitter = 0.2\n").unwrap();
        assert!(on.dihedral && on.color_jitter == 0.2 && on.hflip, "missing fields keep their defaults");
        assert!(toml::from_str::<Augment>("rotate = true\n").is_err(), "unknown fields refused");
        assert!(on.validate().is_ok() && Augment::default().validate().is_ok());
        assert!(Augment { color_jitter: 1.5, ..on.clone() }.validate().is_err());
        assert!(Augment { scale_min: 0.0, ..on }.validate().is_err());
    }
}

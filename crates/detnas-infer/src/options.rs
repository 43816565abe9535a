//! Detector settings: [`DetectorOptions`], the [`DetectorBuilder`] that fills them (with class
//! filters by name), and the effective [`Thresholds`].

use crate::detector::Detector;
use crate::device::Device;
use crate::error::Result;
use crate::image_io::DecodeLimits;
use detnas_data::symmetry::Symmetry;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The confidence a detector keeps by default: detections scoring below it are dropped.
///
/// The exported graph itself keeps everything from its own `score_thresh` (0.05, what COCO
/// evaluation needs) up to its detection cap; for showing or counting objects that is mostly
/// noise, so the SDK filters at 0.25, as Ultralytics does. Set
/// [`DetectorOptions::score_threshold`] to `None` (or [`DetectorBuilder::all_scores`]) to get every
/// detection the graph returns, e.g. for AP evaluation.
pub const DEFAULT_CONFIDENCE: f32 = 0.25;

/// Detector settings. Thresholds can only tighten what the model's graph already applied.
///
/// Build them with [`Detector::builder`], or start from `DetectorOptions::default()` and set
/// fields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DetectorOptions {
    /// Minimum score (default [`DEFAULT_CONFIDENCE`]); `None` keeps everything the graph returns
    /// (it already drops scores below its own `score_thresh`).
    pub score_threshold: Option<f32>,
    /// Extra per-class NMS at this IoU; only useful below the graph's `nms_thresh`.
    pub iou_threshold: Option<f32>,
    /// Keep at most this many detections per image.
    pub max_detections: Option<usize>,
    /// Keep only these class indices (`None`: all).
    pub classes: Option<Vec<usize>>,
    /// ONNX Runtime intra-op threads per session (`None`: ONNX Runtime's default, all cores).
    pub threads: Option<usize>,
    /// Sessions in the pool (default 1). Concurrent callers use different sessions, so with N
    /// sessions of `threads / N` threads a batch runs N inferences at once (throughput mode).
    pub sessions: usize,
    /// Where inference runs (default CPU).
    pub device: Device,
    /// Fail instead of falling back to CPU, and treat image warnings (truncated JPEG) as errors.
    pub strict: bool,
    /// Decode limits for images given as files or bytes.
    pub limits: DecodeLimits,
    /// Decode a JPEG file or buffer of at least 3 megapixels and twice the network input at a
    /// reduced DCT scale (1/2, 1/4, 1/8; default true): 1.8x faster decode and letterbox of a
    /// 4000x3000 photo for a 320x320 model; boxes still come back
    /// in the full image's pixels, and the pixels the network sees differ slightly from those of
    /// a full decode (see [`crate::image_io::decode_image_fit`]). Tiled detection always decodes
    /// at full resolution.
    pub reduced_decode: bool,
    /// Let ONNX Runtime's worker threads spin between operators (default true: the lowest latency
    /// when nothing else runs). Turn it off when other threads share the cores, as in
    /// [`crate::Detector::detect_pipelined`] (decoding ahead) or several sessions: spinning
    /// threads take the CPU those need (on 2 cores, a run next to a decoding thread took 32 ms
    /// spinning against 17.7 ms not spinning; alone, 15.2 against 16.8 ms).
    pub spinning: bool,
    /// Test-time augmentation (default [`Tta::None`]): see [`Tta`].
    pub tta: Tta,
}

/// Test-time augmentation: the network also sees the image under symmetries of the square
/// ([`Symmetry`]) and the boxes of every view are mapped back and merged by weighted box fusion
/// ([`detnas_core::detector::boxes::weighted_box_fusion`] at [`Thresholds::iou`]). A box's score becomes
/// its mean score over the views times the share of views that found it; fused boxes scoring
/// under the graph's own `score_thresh` are dropped and at most its `detections_per_img` are
/// kept, as for one view. It costs one network run per view. Aerial and microscopy images, which
/// have no "up", gain most. With a non-square network input the quarter-turned views are
/// letterboxed at another scale than the upright ones ([`Tta::Flips`] keeps the scale).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Tta {
    /// One view: the image as it is.
    #[default]
    None,
    /// Four views: as it is, mirrored left-right, mirrored top-bottom, turned half way.
    Flips,
    /// Eight views: every rotation by quarter turns, each also mirrored.
    Dihedral,
}

impl Tta {
    /// The views, identity first.
    pub fn symmetries(self) -> Vec<Symmetry> {
        match self {
            Tta::None => vec![Symmetry::IDENTITY],
            Tta::Flips => Symmetry::flips().to_vec(),
            Tta::Dihedral => Symmetry::all().to_vec(),
        }
    }
}

impl std::str::FromStr for Tta {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Tta::None),
            "flips" => Ok(Tta::Flips),
            "dihedral" => Ok(Tta::Dihedral),
            other => Err(format!("unknown test-time augmentation `{other}` (none, flips, dihedral)")),
        }
    }
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            score_threshold: Some(DEFAULT_CONFIDENCE),
            iou_threshold: None,
            max_detections: None,
            classes: None,
            threads: None,
            sessions: 1,
            device: Device::Cpu,
            strict: false,
            limits: DecodeLimits::default(),
            reduced_decode: true,
            spinning: true,
            tta: Tta::None,
        }
    }
}

/// The thresholds a detector applies in the end: the graph's own, tightened by the options.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Thresholds {
    /// Minimum score of a returned detection.
    pub confidence: f32,
    /// Per-class NMS IoU.
    pub iou: f32,
    /// Most detections per image.
    pub max_detections: usize,
}

/// Fills [`DetectorOptions`] step by step and loads the model; from [`Detector::builder`].
///
/// ```no_run
/// use detnas_infer::Detector;
/// let detector = Detector::builder()
///     .confidence(0.3)
///     .classes(["tree"])
///     .threads(2)
///     .load("models/neon-trees.onnx")?;
/// # Ok::<(), detnas_infer::InferError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "call `load` or `load_bytes` to get a detector"]
pub struct DetectorBuilder {
    options: DetectorOptions,
    class_names: Option<Vec<String>>,
    library: Option<PathBuf>,
}

impl DetectorBuilder {
    /// Starts from these options.
    pub fn with_options(options: DetectorOptions) -> Self {
        DetectorBuilder { options, ..Default::default() }
    }

    /// Minimum score of a returned detection (default [`DEFAULT_CONFIDENCE`]).
    pub fn confidence(mut self, threshold: f32) -> Self {
        self.options.score_threshold = Some(threshold);
        self
    }

    /// Returns every detection the graph gives (scores from its own `score_thresh`, 0.05), as AP
    /// evaluation needs.
    pub fn all_scores(mut self) -> Self {
        self.options.score_threshold = None;
        self
    }

    /// Extra per-class NMS at this IoU (only tighter than the graph's has an effect).
    pub fn iou(mut self, threshold: f32) -> Self {
        self.options.iou_threshold = Some(threshold);
        self
    }

    /// Keep at most `n` detections per image.
    pub fn max_detections(mut self, n: usize) -> Self {
        self.options.max_detections = Some(n);
        self
    }

    /// Keep only the classes with these names; an unknown name fails [`DetectorBuilder::load`]
    /// with [`crate::InferError::UnknownClass`], listing the model's classes.
    pub fn classes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.class_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Keep only these class indices.
    pub fn class_ids(mut self, ids: impl IntoIterator<Item = usize>) -> Self {
        self.options.classes = Some(ids.into_iter().collect());
        self
    }

    /// ONNX Runtime intra-op threads per session.
    pub fn threads(mut self, n: usize) -> Self {
        self.options.threads = Some(n);
        self
    }

    /// Sessions in the pool (throughput mode; see [`DetectorOptions::sessions`]).
    pub fn sessions(mut self, n: usize) -> Self {
        self.options.sessions = n.max(1);
        self
    }

    /// Where inference runs.
    pub fn device(mut self, device: Device) -> Self {
        self.options.device = device;
        self
    }

    /// Fail instead of falling back to CPU; image warnings become errors.
    pub fn strict(mut self, strict: bool) -> Self {
        self.options.strict = strict;
        self
    }

    /// Decode limits for images given as files or bytes.
    pub fn decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.options.limits = limits;
        self
    }

    /// Whether ONNX Runtime's threads spin between operators ([`DetectorOptions::spinning`]).
    pub fn spinning(mut self, on: bool) -> Self {
        self.options.spinning = on;
        self
    }

    /// Whether large JPEGs are decoded at a reduced DCT scale ([`DetectorOptions::reduced_decode`]).
    pub fn reduced_decode(mut self, on: bool) -> Self {
        self.options.reduced_decode = on;
        self
    }

    /// Test-time augmentation ([`Tta`]).
    pub fn tta(mut self, tta: Tta) -> Self {
        self.options.tta = tta;
        self
    }

    /// Loads ONNX Runtime from this file or folder (see [`crate::runtime`]), if it is not loaded
    /// yet.
    pub fn ort_library(mut self, path: impl Into<PathBuf>) -> Self {
        self.library = Some(path.into());
        self
    }

    /// The options as set so far (class names are resolved only by `load`).
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// Loads a model file.
    pub fn load(self, path: impl AsRef<Path>) -> Result<Detector> {
        self.init_runtime()?;
        let detector = Detector::from_file(path, self.options)?;
        Self::filter(detector, self.class_names)
    }

    /// Loads a model from bytes; `name` identifies it in errors.
    pub fn load_bytes(self, bytes: &[u8], name: &str) -> Result<Detector> {
        self.init_runtime()?;
        let detector = Detector::from_memory(bytes, name, self.options)?;
        Self::filter(detector, self.class_names)
    }

    fn init_runtime(&self) -> Result<()> {
        if let Some(library) = &self.library {
            crate::runtime::builder().library_path(library).init()?;
        }
        Ok(())
    }

    fn filter(mut detector: Detector, names: Option<Vec<String>>) -> Result<Detector> {
        if let Some(names) = names {
            let ids = detector.class_ids(&names)?;
            detector.set_class_filter(Some(ids));
        }
        Ok(detector)
    }
}

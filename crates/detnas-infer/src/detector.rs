//! [`Detector`]: an exported DetNAS model on ONNX Runtime.
//!
//! The model's metadata carries its contract (input size, pre-processing, class names, thresholds);
//! [`Detector::from_file`] reads and validates it, then `detect*` runs decode -> letterbox ->
//! inference -> filtering and returns boxes in original-image pixels with per-stage timings.
//!
//! Thread safety: `Detector` is `Send + Sync`. Decoding, pre- and post-processing of concurrent calls
//! run in parallel; each ONNX Runtime session is behind a mutex, so a detector with one session
//! serialises inferences (each already uses `threads` cores) and one with N sessions runs up to N at
//! once. Results do not depend on concurrency.

pub use crate::contract::ModelInfo;
use crate::contract::{check_outputs, read_contract};
pub use crate::device::Device;
use crate::error::{InferError, Result};
use crate::image_io::{DecodeLimits, ImageWarning, LoadedImage, decode_image, load_image};
use crate::preprocess::letterbox_into;
use detnas_core::boxes::{BBox, batched_nms};
use detnas_core::contract::tensors;
use image::RgbImage;
use ort::session::Session;
use ort::session::builder::SessionBuilder;
use ort::value::TensorRef;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Detector settings. Thresholds can only tighten what the model's graph already applied.
#[derive(Clone, Debug)]
pub struct DetectorOptions {
    /// Minimum score (the graph already drops scores below its own `score_thresh`).
    pub score_threshold: Option<f32>,
    /// Extra per-class NMS at this IoU; only useful below the graph's `nms_thresh`.
    pub iou_threshold: Option<f32>,
    /// Keep at most this many detections per image.
    pub max_detections: Option<usize>,
    /// Keep only these class indices.
    pub classes: Option<Vec<usize>>,
    /// ONNX Runtime intra-op threads per session (`None`: ONNX Runtime's default, all cores).
    pub threads: Option<usize>,
    /// Sessions in the pool (default 1). Concurrent callers use different sessions, so with N
    /// sessions of `threads / N` threads a batch runs N inferences at once (throughput mode).
    pub sessions: usize,
    pub device: Device,
    /// Fail instead of falling back to CPU, and treat image warnings (truncated JPEG) as errors.
    pub strict: bool,
    pub limits: DecodeLimits,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            score_threshold: None,
            iou_threshold: None,
            max_detections: None,
            classes: None,
            threads: None,
            sessions: 1,
            device: Device::Cpu,
            strict: false,
            limits: DecodeLimits::default(),
        }
    }
}

/// One detected object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in original-image pixels (after EXIF orientation).
    pub bbox: BBox,
    pub score: f32,
    pub class_id: usize,
    pub class_name: String,
}

/// Wall time of each stage of one detection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageTimings {
    pub decode: Duration,
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

impl StageTimings {
    pub fn total(&self) -> Duration {
        self.decode + self.preprocess + self.inference + self.postprocess
    }
}

/// Detections of one image.
#[derive(Clone, Debug, Serialize)]
pub struct Detections {
    pub detections: Vec<Detection>,
    pub width: u32,
    pub height: u32,
    pub timings: StageTimings,
    /// Non-fatal problems of the image (e.g. a truncated JPEG).
    pub warnings: Vec<ImageWarning>,
}

/// Raw model outputs in network-input pixels: boxes, scores, labels.
pub type RawOutputs = (Vec<BBox>, Vec<f32>, Vec<i64>);

/// An exported DetNAS model ready to detect.
pub struct Detector {
    sessions: Vec<Mutex<Session>>,
    next_session: std::sync::atomic::AtomicUsize,
    info: ModelInfo,
    options: DetectorOptions,
    source: String,
}

impl Detector {
    /// Loads a model file. External data (`m.onnx` + `m.onnx.data`) is resolved relative to the
    /// model's folder, whatever the working directory.
    pub fn from_file(path: impl AsRef<Path>, options: DetectorOptions) -> Result<Self> {
        let path = path.as_ref();
        let model_err = |reason: String| InferError::Model { path: path.into(), reason };
        let meta = std::fs::metadata(path).map_err(|e| model_err(e.to_string()))?;
        if meta.is_dir() {
            return Err(model_err("is a directory, not an ONNX file".into()));
        }
        if meta.len() == 0 {
            return Err(model_err("empty file".into()));
        }
        Self::build(&path.display().to_string(), options, |b| b.commit_from_file(path))
    }

    /// Loads a model from bytes; `name` identifies it in errors. A model with external data
    /// needs [`Detector::from_file`].
    pub fn from_memory(bytes: &[u8], name: &str, options: DetectorOptions) -> Result<Self> {
        if bytes.is_empty() {
            return Err(InferError::Model { path: PathBuf::from(name), reason: "empty file".into() });
        }
        Self::build(name, options, |b| b.commit_from_memory(bytes))
    }

    /// Creates the session pool with `commit`, then reads and validates the model's contract.
    fn build(
        name: &str,
        options: DetectorOptions,
        commit: impl Fn(&mut SessionBuilder) -> ort::Result<Session>,
    ) -> Result<Self> {
        let model_err = |reason: String| InferError::Model { path: PathBuf::from(name), reason };
        let (mut builder, choice) =
            crate::runtime::session_builder(options.threads, options.device, options.strict, name)?;
        let mut sessions = Vec::with_capacity(options.sessions.max(1));
        for _ in 0..options.sessions.max(1) {
            let session = commit(&mut builder).map_err(|e| model_err(format!("not a loadable ONNX model: {e}")))?;
            sessions.push(session);
        }
        let mut info = read_contract(&sessions[0], name)?;
        info.provider = choice.provider;
        info.device_warning = choice.warning;
        Ok(Detector {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next_session: Default::default(),
            info,
            options,
            source: name.to_string(),
        })
    }

    /// One line to show the user when the requested device was unavailable and the CPU runs
    /// instead (`None` when the requested device runs). Under `strict` that case is an error.
    pub fn device_warning(&self) -> Option<&str> {
        self.info.device_warning.as_deref()
    }

    /// The model's contract and the provider in use.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The options this detector was built with.
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// Keeps only these class indices from now on (`None`: all classes). Class names are known only
    /// once the model is loaded, so the filter can be set afterwards without loading it again.
    pub fn set_class_filter(&mut self, classes: Option<Vec<usize>>) {
        self.options.classes = classes;
    }

    /// Decodes `path` (any format, colour type, bit depth; EXIF orientation applied) and detects.
    pub fn detect_path(&self, path: &Path) -> Result<Detections> {
        let t0 = Instant::now();
        let loaded = load_image(path, &self.options.limits)?;
        self.detect_loaded(loaded, &path.display().to_string(), t0.elapsed())
    }

    /// Like [`Detector::detect_path`] for encoded bytes.
    pub fn detect_bytes(&self, bytes: &[u8], name: &str) -> Result<Detections> {
        let t0 = Instant::now();
        let loaded = decode_image(bytes, name, &self.options.limits)?;
        self.detect_loaded(loaded, name, t0.elapsed())
    }

    fn detect_loaded(&self, loaded: LoadedImage, name: &str, decode: Duration) -> Result<Detections> {
        let loaded = if self.options.strict { loaded.deny_warnings(name)? } else { loaded };
        let mut d = self.detect(&loaded.rgb)?;
        d.timings.decode = decode;
        d.warnings = loaded.warnings;
        Ok(d)
    }

    /// Detects objects in an RGB image; boxes come back in its pixels.
    pub fn detect(&self, image: &RgbImage) -> Result<Detections> {
        let cfg = &self.info.config;
        let (w, h) = (cfg.input.width as u32, cfg.input.height as u32);
        let t0 = Instant::now();
        let mut input = vec![0f32; 3 * (w * h) as usize];
        let lb = letterbox_into(image, w, h, cfg.preprocess.pad_value, &mut input);
        let t1 = Instant::now();
        let (boxes, scores, labels) = self.run(&input)?;
        let t2 = Instant::now();
        let detections = self.postprocess(boxes, scores, labels, |b| lb.to_source(b));
        let t3 = Instant::now();
        Ok(Detections {
            detections,
            width: image.width(),
            height: image.height(),
            timings: StageTimings {
                decode: Duration::ZERO,
                preprocess: t1 - t0,
                inference: t2 - t1,
                postprocess: t3 - t2,
            },
            warnings: Vec::new(),
        })
    }

    /// Detects in every image; one bad item never stops the others.
    pub fn detect_batch(&self, paths: &[PathBuf]) -> Vec<Result<Detections>> {
        paths.iter().map(|p| self.detect_path(p)).collect()
    }

    /// Runs the network on a prepared input (`3 x H x W` RGB 0-255 planes); returns raw outputs in
    /// network-input pixels. This is the bare inference step, used by benchmarks.
    pub fn run(&self, input: &[f32]) -> Result<RawOutputs> {
        self.run_timed(input).map(|(out, _)| out)
    }

    /// [`Detector::run`] and the time spent in it once a session was free (waiting is excluded).
    fn run_timed(&self, input: &[f32]) -> Result<(RawOutputs, Duration)> {
        let cfg = &self.info.config;
        let shape = (1, 3, cfg.input.height as usize, cfg.input.width as usize);
        let view = ndarray::ArrayView4::from_shape(shape, input).map_err(|e| InferError::Config(e.to_string()))?;
        let tensor = TensorRef::from_array_view(view)?;
        let mut session = self.acquire_session();
        let start = Instant::now();
        let out = session.run(ort::inputs![tensors::IMAGES => tensor])?;
        let (_, b) = out[tensors::BOXES].try_extract_tensor::<f32>()?;
        let (_, s) = out[tensors::SCORES].try_extract_tensor::<f32>()?;
        let (_, l) = out[tensors::LABELS].try_extract_tensor::<i64>()?;
        let elapsed = start.elapsed();
        if b.len() != 4 * s.len() {
            let reason = format!("{} box values for {} scores (expected 4 per score)", b.len(), s.len());
            return Err(InferError::BadOutput { path: self.source.clone().into(), reason });
        }
        let boxes: Vec<BBox> = b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        check_outputs(&boxes, s, l, cfg.num_classes(), &self.source)?;
        Ok(((boxes, s.to_vec(), l.to_vec()), elapsed))
    }

    /// A free session if there is one, else waits for the next in turn.
    fn acquire_session(&self) -> std::sync::MutexGuard<'_, Session> {
        let n = self.sessions.len();
        let first = self.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        for k in 0..n {
            if let Ok(guard) = self.sessions[(first + k) % n].try_lock() {
                return guard;
            }
        }
        self.sessions[first].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn postprocess(
        &self,
        boxes: Vec<BBox>,
        scores: Vec<f32>,
        labels: Vec<i64>,
        to_source: impl Fn(&BBox) -> BBox,
    ) -> Vec<Detection> {
        let o = &self.options;
        let min_score = o.score_threshold.unwrap_or(0.0);
        let mut keep: Vec<usize> = (0..scores.len())
            .filter(|&i| scores[i] >= min_score)
            .filter(|&i| o.classes.as_ref().is_none_or(|c| c.contains(&(labels[i] as usize))))
            .collect();
        if let Some(iou) = o.iou_threshold.filter(|t| *t < self.info.config.nms_thresh) {
            let b: Vec<BBox> = keep.iter().map(|&i| boxes[i]).collect();
            let s: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
            let l: Vec<i64> = keep.iter().map(|&i| labels[i]).collect();
            keep = batched_nms(&b, &s, &l, iou).into_iter().map(|k| keep[k]).collect();
        }
        keep.truncate(o.max_detections.unwrap_or(usize::MAX));
        keep.into_iter()
            .map(|i| {
                let class_id = labels[i] as usize; // checked by `check_outputs`
                Detection {
                    bbox: to_source(&boxes[i]),
                    score: scores[i],
                    class_id,
                    class_name: self
                        .info
                        .config
                        .class_names
                        .get(class_id)
                        .cloned()
                        .unwrap_or_else(|| class_id.to_string()),
                }
            })
            .collect()
    }

    /// Name the model was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

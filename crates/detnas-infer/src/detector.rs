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

use crate::error::{InferError, Result};
use crate::image_io::{DecodeLimits, ImageWarning, LoadedImage, decode_image, load_image};
use crate::preprocess::letterbox_into;
use crate::runtime::environment;
use detnas_core::boxes::{BBox, batched_nms};
use detnas_core::detector::DetectorConfig;
use image::RgbImage;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA execution provider on GPU `n` (requires the `cuda` feature and a CUDA build of ONNX Runtime).
    Cuda(i32),
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| InferError::Config(format!("invalid device `{s}`: expected cpu, cuda or cuda:N"))),
        }
    }
}

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

/// What the model says about itself (from its metadata).
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub space: String,
    pub arch: String,
    pub config: DetectorConfig,
    /// Metadata entries as stored.
    pub metadata: Vec<(String, String)>,
    /// The execution provider actually running the model.
    pub provider: String,
}

/// An exported DetNAS model ready to detect.
pub struct Detector {
    sessions: Vec<Mutex<Session>>,
    next_session: std::sync::atomic::AtomicUsize,
    info: ModelInfo,
    options: DetectorOptions,
    source: String,
}

const OUTPUTS: [(&str, &str); 3] = [("boxes", "float32 [N, 4]"), ("scores", "float32 [N]"), ("labels", "int64 [N]")];

impl Detector {
    /// Loads a model file.
    pub fn from_file(path: impl AsRef<Path>, options: DetectorOptions) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| InferError::Model { path: path.into(), reason: e.to_string() })?;
        Self::from_memory(&bytes, &path.display().to_string(), options)
    }

    /// Loads a model from bytes; `name` identifies it in errors.
    pub fn from_memory(bytes: &[u8], name: &str, options: DetectorOptions) -> Result<Self> {
        let model_err = |reason: String| InferError::Model { path: PathBuf::from(name), reason };
        if bytes.is_empty() {
            return Err(model_err("empty file".into()));
        }
        let env = environment()?;
        let mut builder = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| model_err(e.to_string()))?;
        if let Some(t) = options.threads {
            builder = builder.with_intra_threads(t.max(1)).map_err(|e| model_err(e.to_string()))?;
        }
        let provider = match options.device {
            Device::Cpu => "CPUExecutionProvider".to_string(),
            Device::Cuda(id) => register_cuda(&mut builder, id, options.strict)?,
        };
        let mut sessions = Vec::with_capacity(options.sessions.max(1));
        for _ in 0..options.sessions.max(1) {
            let session =
                builder.commit_from_memory(bytes).map_err(|e| model_err(format!("not a loadable ONNX model: {e}")))?;
            sessions.push(session);
        }
        let info = read_contract(&sessions[0], name, provider)?;
        Ok(Detector {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next_session: Default::default(),
            info,
            options,
            source: name.to_string(),
        })
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
        let out = session.run(ort::inputs!["images" => tensor])?;
        let (_, b) = out["boxes"].try_extract_tensor::<f32>()?;
        let (_, s) = out["scores"].try_extract_tensor::<f32>()?;
        let (_, l) = out["labels"].try_extract_tensor::<i64>()?;
        let boxes = b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        let result = (boxes, s.to_vec(), l.to_vec());
        Ok((result, start.elapsed()))
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
                let class_id = labels[i].max(0) as usize;
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

#[cfg(feature = "cuda")]
fn register_cuda(builder: &mut ort::session::builder::SessionBuilder, id: i32, strict: bool) -> Result<String> {
    use ort::ep::ExecutionProvider;
    let ep = ort::ep::CUDA::default().with_device_id(id);
    match ep.register(builder) {
        Ok(()) => Ok(format!("CUDAExecutionProvider:{id}")),
        Err(e) if strict => Err(InferError::Provider { requested: format!("cuda:{id}"), reason: e.to_string() }),
        Err(_) => Ok("CPUExecutionProvider (CUDA unavailable, fell back)".to_string()),
    }
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(_: &mut ort::session::builder::SessionBuilder, id: i32, strict: bool) -> Result<String> {
    if strict {
        return Err(InferError::Provider {
            requested: format!("cuda:{id}"),
            reason: "this build has no CUDA support (build with the `cuda` feature)".into(),
        });
    }
    Ok("CPUExecutionProvider (built without CUDA, fell back)".to_string())
}

/// Reads the metadata contract and checks the graph's inputs and outputs against it.
fn read_contract(session: &Session, name: &str, provider: String) -> Result<ModelInfo> {
    let invalid = |expected: String, actual: String| InferError::ModelContract { path: name.into(), expected, actual };
    let meta = session.metadata().map_err(|e| InferError::Model { path: name.into(), reason: e.to_string() })?;
    let mut metadata = Vec::new();
    let keys = meta.custom_keys().unwrap_or_default();
    for k in keys {
        if let Some(v) = meta.custom(&k) {
            metadata.push((k, v));
        }
    }
    let get = |k: &str| metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let config_json = get("detnas.config").ok_or_else(|| {
        invalid("metadata entry `detnas.config` (a model exported by detnas)".into(), "no such entry".into())
    })?;
    let config: DetectorConfig = serde_json::from_str(&config_json)
        .map_err(|e| invalid("a valid detector configuration in `detnas.config`".into(), e.to_string()))?;

    let inputs = session.inputs();
    let expected_input = format!("one input `images` float32 [1, 3, {}, {}]", config.input.height, config.input.width);
    let describe = |o: &ort::value::Outlet| format!("`{}` {:?}", o.name(), o.dtype());
    if inputs.len() != 1 || inputs[0].name() != "images" {
        let actual = inputs.iter().map(describe).collect::<Vec<_>>().join(", ");
        return Err(invalid(expected_input, if actual.is_empty() { "no inputs".into() } else { actual }));
    }
    let dims = inputs[0].dtype().tensor_shape().map(|s| s.to_vec());
    let ty = inputs[0].dtype().tensor_type();
    let want = vec![1, 3, config.input.height as i64, config.input.width as i64];
    if dims.as_ref() != Some(&want) || ty != Some(ort::value::TensorElementType::Float32) {
        return Err(invalid(expected_input, describe(&inputs[0])));
    }
    for (out_name, shape) in OUTPUTS {
        let found = session.outputs().iter().find(|o| o.name() == out_name);
        let want_ty = if out_name == "labels" {
            ort::value::TensorElementType::Int64
        } else {
            ort::value::TensorElementType::Float32
        };
        match found {
            Some(o) if o.dtype().tensor_type() == Some(want_ty) => {}
            Some(o) => return Err(invalid(format!("output `{out_name}` {shape}"), describe(o))),
            None => {
                let actual = session.outputs().iter().map(describe).collect::<Vec<_>>().join(", ");
                return Err(invalid(format!("output `{out_name}` {shape}"), format!("outputs {actual}")));
            }
        }
    }
    Ok(ModelInfo {
        space: get("detnas.space").unwrap_or_default(),
        arch: get("detnas.arch").unwrap_or_default(),
        config,
        metadata,
        provider,
    })
}

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
use crate::image_io::{ImageWarning, LoadedImage, decode_image_fit, load_image_fit};
use crate::options::{DetectorBuilder, DetectorOptions, Thresholds};
use crate::preprocess::letterbox_into;
use crate::results::{Detection, Detections, StageTimings};
use detnas_core::detector::boxes::{BBox, Letterbox, batched_nms, weighted_box_fusion};
use detnas_core::detector::contract::tensors;
use detnas_core::space::shape::InputSize;
use detnas_data::symmetry::Symmetry;
use image::RgbImage;
use ort::session::Session;
use ort::session::builder::SessionBuilder;
use ort::value::TensorRef;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An image read, decoded and letterboxed into the network input ([`Detector::prepare_path`]),
/// waiting for [`Detector::detect_prepared`].
#[derive(Debug)]
pub struct Prepared {
    /// One network input per view of the test-time augmentation (one without it).
    views: Vec<View>,
    /// Size of the image as decoded (before any symmetry).
    decoded: (u32, u32),
    full_size: (u32, u32),
    timings: StageTimings,
    warnings: Vec<ImageWarning>,
}

impl Prepared {
    /// The network input of the image (its first view: the image itself): `3 x H x W` RGB 0-255
    /// planes, as [`Detector::run`] takes them.
    pub fn network_input(&self) -> &[f32] {
        &self.views[0].input
    }
}

/// One view of an image: a symmetry of it letterboxed into the network input.
#[derive(Debug)]
struct View {
    input: Vec<f32>,
    letterbox: Letterbox,
    symmetry: Symmetry,
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

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("source", &self.source)
            .field("arch", &self.info.arch)
            .field("input", &self.info.config.input)
            .field("classes", &self.info.config.class_names)
            .field("provider", &self.info.provider)
            .field("sessions", &self.sessions.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Options step by step, then `load(path)`; see [`DetectorBuilder`].
    pub fn builder() -> DetectorBuilder {
        DetectorBuilder::default()
    }

    /// Loads a model file. External data (`m.onnx` + `m.onnx.data`) is resolved relative to the
    /// model's folder, whatever the working directory.
    pub fn from_file(path: impl AsRef<Path>, options: DetectorOptions) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| InferError::Model {
            path: path.into(),
            reason: "cannot read the model file".into(),
            source: Some(Box::new(e)),
        })?;
        if meta.is_dir() {
            return Err(InferError::model(path, "is a directory, not an ONNX file"));
        }
        if meta.len() == 0 {
            return Err(InferError::model(path, "empty file"));
        }
        Self::build(&path.display().to_string(), options, |b| b.commit_from_file(path))
    }

    /// Loads a model from bytes; `name` identifies it in errors. A model with external data
    /// needs [`Detector::from_file`].
    pub fn from_memory(bytes: &[u8], name: &str, options: DetectorOptions) -> Result<Self> {
        if bytes.is_empty() {
            return Err(InferError::model(name, "empty file"));
        }
        Self::build(name, options, |b| b.commit_from_memory(bytes))
    }

    /// Creates the session pool with `commit`, then reads and validates the model's contract.
    fn build(
        name: &str,
        options: DetectorOptions,
        commit: impl Fn(&mut SessionBuilder) -> ort::Result<Session>,
    ) -> Result<Self> {
        let (builder, choice) = crate::runtime::session_builder(options.threads, options.device, options.strict, name)?;
        let mut builder = builder
            .with_intra_op_spinning(options.spinning)
            .map_err(|e| InferError::ModelLoad { path: name.into(), source: e.into() })?;
        let mut sessions = Vec::with_capacity(options.sessions.max(1));
        for _ in 0..options.sessions.max(1) {
            let session = commit(&mut builder).map_err(|e| InferError::ModelLoad { path: name.into(), source: e })?;
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

    /// The model's contract, the provider in use and the ONNX Runtime library.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The options this detector was built with.
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// The model's class names; a detection's `class_id` indexes them.
    pub fn class_names(&self) -> &[String] {
        &self.info.config.class_names
    }

    /// The network input (images are letterboxed into it).
    pub fn input_size(&self) -> InputSize {
        self.info.config.input
    }

    /// The thresholds applied in the end: the graph's, tightened by the options.
    pub fn thresholds(&self) -> Thresholds {
        let cfg = &self.info.config;
        let o = &self.options;
        Thresholds {
            confidence: o.score_threshold.unwrap_or(0.0).max(cfg.score_thresh),
            iou: o.iou_threshold.unwrap_or(cfg.nms_thresh).min(cfg.nms_thresh),
            max_detections: o.max_detections.unwrap_or(usize::MAX).min(cfg.detections_per_img),
        }
    }

    /// The indices of these class names; an unknown name is [`InferError::UnknownClass`].
    pub fn class_ids<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<usize>> {
        let classes = self.class_names();
        names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                classes.iter().position(|c| c == name).ok_or_else(|| InferError::UnknownClass {
                    model: self.source.clone(),
                    name: name.to_string(),
                    available: classes.to_vec(),
                })
            })
            .collect()
    }

    /// Keeps only these class indices from now on (`None`: all classes). Class names are known only
    /// once the model is loaded, so the filter can be set afterwards without loading it again.
    pub fn set_class_filter(&mut self, classes: Option<Vec<usize>>) {
        self.options.classes = classes;
    }

    /// Reads and decodes the image at `path` (any supported format, colour type, bit depth; EXIF
    /// orientation applied) and detects.
    pub fn detect_path(&self, path: impl AsRef<Path>) -> Result<Detections> {
        Ok(self.detect_path_keeping(path.as_ref(), false)?.0)
    }

    /// Like [`Detector::detect_path`] for encoded bytes; `name` identifies them in errors.
    pub fn detect_bytes(&self, bytes: &[u8], name: &str) -> Result<Detections> {
        self.detect_prepared(self.prepare_bytes(bytes, name)?)
    }

    /// The first half of [`Detector::detect_path`]: reads, decodes and letterboxes the image into
    /// the network input. [`Detector::detect_prepared`] finishes it; a pipeline prepares the next
    /// images while the sessions run the current ones.
    pub fn prepare_path(&self, path: impl AsRef<Path>) -> Result<Prepared> {
        Ok(self.prepare_path_keeping(path.as_ref(), false)?.0)
    }

    /// [`Detector::prepare_path`], also handing back the decoded image when `keep` is set and the
    /// image was decoded at full resolution: a caller that draws on it (`detect --save-img`) then
    /// does not decode it again. `None` when the JPEG was decoded at a reduced DCT scale
    /// ([`DetectorOptions::reduced_decode`]): the detection is made on that smaller image, as
    /// always, and a caller that needs the full image decodes the file again.
    pub(crate) fn prepare_path_keeping(&self, path: &Path, keep: bool) -> Result<(Prepared, Option<RgbImage>)> {
        let t0 = Instant::now();
        let loaded = load_image_fit(path, &self.options.limits, self.decode_fit())?;
        let (prepared, image) = self.prepare_loaded(loaded, &path.display().to_string(), t0.elapsed())?;
        let full = prepared.decoded == prepared.full_size;
        Ok((prepared, (keep && full).then_some(image)))
    }

    /// [`Detector::detect_path`] with the decoded image of [`Detector::prepare_path_keeping`].
    pub(crate) fn detect_path_keeping(&self, path: &Path, keep: bool) -> Result<(Detections, Option<RgbImage>)> {
        let (prepared, image) = self.prepare_path_keeping(path, keep)?;
        Ok((self.detect_prepared(prepared)?, image))
    }

    /// [`Detector::prepare_path`] for encoded bytes; `name` identifies them in errors.
    pub fn prepare_bytes(&self, bytes: &[u8], name: &str) -> Result<Prepared> {
        let t0 = Instant::now();
        let loaded = decode_image_fit(bytes, name, &self.options.limits, self.decode_fit())?;
        Ok(self.prepare_loaded(loaded, name, t0.elapsed())?.0)
    }

    /// The size images are shrunk into, for reduced JPEG decoding ([`DetectorOptions::reduced_decode`]).
    fn decode_fit(&self) -> Option<(u32, u32)> {
        let input = self.info.config.input;
        self.options.reduced_decode.then_some((input.width as u32, input.height as u32))
    }

    /// The image letterboxed, and the decoded image itself.
    fn prepare_loaded(&self, loaded: LoadedImage, name: &str, decode: Duration) -> Result<(Prepared, RgbImage)> {
        let loaded = if self.options.strict { loaded.deny_warnings(name)? } else { loaded };
        let mut p = self.prepare_image(&loaded.rgb);
        p.full_size = loaded.full_size;
        p.timings.decode = decode;
        p.warnings = loaded.warnings;
        Ok((p, loaded.rgb))
    }

    fn prepare_image(&self, image: &RgbImage) -> Prepared {
        let cfg = &self.info.config;
        let (w, h) = (cfg.input.width as u32, cfg.input.height as u32);
        let t0 = Instant::now();
        let views = (self.options.tta.symmetries().into_iter())
            .map(|symmetry| {
                let mut input = vec![0f32; 3 * (w * h) as usize];
                let letterbox = if symmetry == Symmetry::IDENTITY {
                    letterbox_into(image, w, h, cfg.preprocess.pad_value, &mut input)
                } else {
                    letterbox_into(&symmetry.image(image), w, h, cfg.preprocess.pad_value, &mut input)
                };
                View { input, letterbox, symmetry }
            })
            .collect();
        Prepared {
            views,
            decoded: image.dimensions(),
            full_size: image.dimensions(),
            timings: StageTimings { preprocess: t0.elapsed(), ..StageTimings::default() },
            warnings: Vec::new(),
        }
    }

    /// Runs the network on a [`Prepared`] image and maps the boxes back to its pixels (at full
    /// resolution when it was decoded at a reduced scale).
    pub fn detect_prepared(&self, prepared: Prepared) -> Result<Detections> {
        self.run_prepared(prepared, true)
    }

    fn run_prepared(&self, p: Prepared, cap: bool) -> Result<Detections> {
        let (mut boxes, mut scores, mut labels, mut view) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut inference = Duration::ZERO;
        let (src_w, src_h) = p.decoded;
        for (k, v) in p.views.iter().enumerate() {
            let ((b, s, l), t) = self.run_timed(&v.input)?;
            inference += t;
            boxes.extend(b.iter().map(|b| v.symmetry.unmap_bbox(&v.letterbox.to_source(b), src_w, src_h)));
            view.extend(std::iter::repeat_n(k, s.len()));
            scores.extend(s);
            labels.extend(l);
        }
        let t2 = Instant::now();
        if p.views.len() > 1 {
            let cfg = &self.info.config;
            let iou = self.thresholds().iou;
            (boxes, scores, labels) = weighted_box_fusion(&boxes, &scores, &labels, &view, p.views.len(), iou);
            // what one view may return: fused scores from the graph's own floor up, at most the
            // graph's cap of them (taken before any class filter, as the graph does)
            let mut n = scores.iter().take_while(|&&s| s >= cfg.score_thresh).count();
            if cap {
                n = n.min(cfg.detections_per_img);
            }
            boxes.truncate(n);
            scores.truncate(n);
            labels.truncate(n);
        }
        let (full_w, full_h) = p.full_size;
        // decoded at a reduced scale: boxes back to the full image's pixels
        let sx = full_w as f32 / src_w as f32;
        let sy = full_h as f32 / src_h as f32;
        let scaled = (full_w, full_h) != (src_w, src_h);
        let detections = self.postprocess(boxes, scores, labels, cap, |b| {
            if !scaled {
                return *b;
            }
            let (w, h) = (full_w as f32, full_h as f32);
            [(b[0] * sx).min(w), (b[1] * sy).min(h), (b[2] * sx).min(w), (b[3] * sy).min(h)]
        });
        Ok(Detections {
            detections,
            width: full_w,
            height: full_h,
            timings: StageTimings { inference, postprocess: t2.elapsed(), ..p.timings },
            warnings: p.warnings,
        })
    }

    /// Detects objects in an RGB image; boxes come back in its pixels.
    pub fn detect(&self, image: &RgbImage) -> Result<Detections> {
        self.run_prepared(self.prepare_image(image), true)
    }

    /// [`Detector::detect`] without the options' `max_detections` (a window of a tiled detection:
    /// the cap applies to the merged result).
    pub(crate) fn detect_uncapped(&self, image: &RgbImage) -> Result<Detections> {
        self.run_prepared(self.prepare_image(image), false)
    }

    /// Detects in every image file with decoding ahead of inference: one thread reads, decodes
    /// and letterboxes into a queue of at most `depth` prepared inputs (memory: `depth` network
    /// inputs, times the views of [`DetectorOptions::tta`], plus one image being decoded), while one worker per session runs the network and
    /// calls `handle(index, result)`; the calling thread gets each handled value in `collect`, in
    /// completion order. One bad item never stops the others.
    pub fn detect_pipelined<P, R, H, C>(&self, paths: &[P], depth: usize, handle: H, collect: C)
    where
        P: AsRef<Path> + Sync,
        R: Send,
        H: Fn(usize, Result<Detections>) -> R + Sync,
        C: FnMut(R),
    {
        self.detect_pipelined_keeping(paths, depth, false, |i, found| handle(i, found.map(|(d, _)| d)), collect);
    }

    /// [`Detector::detect_pipelined`], handing `handle` the decoded images of
    /// [`Detector::prepare_path_keeping`] with `keep` (each queued input then holds its image too).
    pub(crate) fn detect_pipelined_keeping<P, R, H, C>(
        &self,
        paths: &[P],
        depth: usize,
        keep: bool,
        handle: H,
        mut collect: C,
    ) where
        P: AsRef<Path> + Sync,
        R: Send,
        H: Fn(usize, Result<(Detections, Option<RgbImage>)>) -> R + Sync,
        C: FnMut(R),
    {
        type Queued = (usize, Result<(Prepared, Option<RgbImage>)>);
        let (prepared_tx, prepared_rx) = std::sync::mpsc::sync_channel::<Queued>(depth.max(1));
        let prepared_rx = Mutex::new(prepared_rx);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<R>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (i, p) in paths.iter().enumerate() {
                    if prepared_tx.send((i, self.prepare_path_keeping(p.as_ref(), keep))).is_err() {
                        break;
                    }
                }
            });
            for _ in 0..self.sessions.len().min(paths.len()) {
                let (rx, tx, handle) = (&prepared_rx, done_tx.clone(), &handle);
                scope.spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((i, prepared)) = next else { break };
                        let result = prepared.and_then(|(p, image)| Ok((self.detect_prepared(p)?, image)));
                        if tx.send(handle(i, result)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            for r in done_rx {
                collect(r);
            }
        });
    }

    /// Detects in every image file, in parallel over the session pool (one worker per session,
    /// plus one that decodes ahead). Results come back in input order; one bad item never stops
    /// the others.
    pub fn detect_batch<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Detections>> {
        self.parallel(paths, |p| self.detect_path(p))
    }

    /// [`Detector::detect_batch`] for decoded images.
    pub fn detect_images(&self, images: &[RgbImage]) -> Vec<Result<Detections>> {
        self.parallel(images, |image| self.detect(image))
    }

    /// [`Detector::detect_batch`] for encoded images in memory; item `i` is named `#i` in errors.
    pub fn detect_bytes_batch<B: AsRef<[u8]> + Sync>(&self, buffers: &[B]) -> Vec<Result<Detections>> {
        let items: Vec<(usize, &[u8])> = buffers.iter().map(AsRef::as_ref).enumerate().collect();
        self.parallel(&items, |(i, bytes)| self.detect_bytes(bytes, &format!("#{i}")))
    }

    /// `detect` over `items` with `sessions + 1` scoped workers taking the next item in turn.
    fn parallel<T: Sync>(
        &self,
        items: &[T],
        detect: impl Fn(&T) -> Result<Detections> + Sync,
    ) -> Vec<Result<Detections>> {
        let workers = (self.sessions.len() + 1).min(items.len());
        if workers <= 1 {
            return items.iter().map(&detect).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut results: Vec<Option<Result<Detections>>> = (0..items.len()).map(|_| None).collect();
        let done = Mutex::new(&mut results);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= items.len() {
                            break;
                        }
                        let result = detect(&items[i]);
                        done.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                    }
                });
            }
        });
        results.into_iter().map(|r| r.expect("every item was processed")).collect()
    }

    /// Runs the network on a prepared input (`3 x H x W` RGB 0-255 planes); returns raw outputs in
    /// network-input pixels. This is the bare inference step, used by benchmarks.
    pub fn run(&self, input: &[f32]) -> Result<RawOutputs> {
        self.run_timed(input).map(|(out, _)| out)
    }

    /// [`Detector::run`] and the time spent in it once a session was free (waiting is excluded).
    fn run_timed(&self, input: &[f32]) -> Result<(RawOutputs, Duration)> {
        let cfg = &self.info.config;
        let shape = [1, 3, cfg.input.height as usize, cfg.input.width as usize];
        if input.len() != shape.iter().product::<usize>() {
            let (h, w) = (shape[2], shape[3]);
            return Err(InferError::Config(format!("input has {} values; the model takes 3x{h}x{w}", input.len())));
        }
        let tensor = TensorRef::from_array_view((shape, input))?;
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
        cap: bool,
        to_source: impl Fn(&BBox) -> BBox,
    ) -> Vec<Detection> {
        let o = &self.options;
        let cfg = &self.info.config;
        let min_score = o.score_threshold.unwrap_or(0.0);
        let mut keep: Vec<usize> = (0..scores.len())
            .filter(|&i| scores[i] >= min_score)
            .filter(|&i| o.classes.as_ref().is_none_or(|c| c.contains(&(labels[i] as usize))))
            .collect();
        if let Some(iou) = o.iou_threshold.filter(|t| *t < cfg.nms_thresh) {
            let b: Vec<BBox> = keep.iter().map(|&i| boxes[i]).collect();
            let s: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
            let l: Vec<i64> = keep.iter().map(|&i| labels[i]).collect();
            keep = batched_nms(&b, &s, &l, iou).into_iter().map(|k| keep[k]).collect();
        }
        if cap {
            keep.truncate(o.max_detections.unwrap_or(usize::MAX));
        }
        keep.into_iter()
            .map(|i| {
                let class_id = labels[i] as usize; // checked by `check_outputs`
                Detection {
                    bbox: to_source(&boxes[i]),
                    score: scores[i],
                    class_id,
                    class_name: cfg.class_names.get(class_id).cloned().unwrap_or_else(|| class_id.to_string()),
                    category_id: cfg.category_id(class_id),
                }
            })
            .collect()
    }

    /// Name the model was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

//! Batch detection of image files, folders (walked recursively) and globs into an output folder:
//! what `detnas detect` runs, as a library (feature `folder`).
//!
//! ```no_run
//! use detnas_infer::folder::{FolderEvent, FolderOptions, detect_folder};
//!
//! let mut options = FolderOptions::new("models/neon-trees.onnx", ["photos/"], "runs/photos");
//! options.conf = Some(0.3);
//! options.save_img = true;
//! let outcome = detect_folder(&options, &mut |event| {
//!     if let FolderEvent::ImageFailed { record, .. } = event {
//!         eprintln!("{}", record.error.as_deref().unwrap_or_default());
//!     }
//! })?;
//! println!("{} image(s), {} detection(s)", outcome.images, outcome.detections);
//! # Ok::<(), detnas_infer::InferError>(())
//! ```
//!
//! # Contract
//! - **Before any work** every number of the [`FolderOptions`] is bounded ([`FolderOptions::validate`]:
//!   scores and IoU in `[0, 1]`, counts from 1 to their stated maxima, the tiling's window and
//!   overlap): an out-of-range value is an [`InferError::Config`] and nothing is created.
//! - **The output folder** is checked next, before the model is loaded: it is owned
//!   ([`detnas_core::owner`]), so a folder of another command or of the user's own files is refused,
//!   and a folder holding an earlier run's results is refused, replaced (only the files that run
//!   wrote are removed) or resumed as [`FolderOptions::existing`] says. It is never walked for inputs.
//! - **Inputs**: every real file is detected once however it is reached; an input or entry that
//!   cannot be used (missing, unreadable, not a regular file, a glob matching nothing) is a failure
//!   of its own ([`FolderEvent::Skipped`]), and so is an image that cannot be decoded or detected
//!   ([`FolderEvent::ImageFailed`]): the batch goes on. See [`inputs`].
//! - **Files written** (see [`OutputFiles`]): `run.json` (the settings and planned work) before the
//!   first image; `results.jsonl`, one record appended as each image finishes (after its label and
//!   annotated files), so a killed run loses nothing it finished; at the end `detections.json`
//!   (COCO results), `images.json`, `errors.json` (only when something failed), each atomically.
//!   A resumed run ([`Existing::Resume`]: same model, inputs and settings, or it is refused) does
//!   not redo finished images, detects again inputs changed since, and ends with exactly the files
//!   of an uninterrupted run.
//! - **Errors** are [`InferError`]s; their messages name options by the `detnas detect` flag that
//!   sets them (`--out`, `--resume`, `--exist-ok`, `--ids-from`).
//! - **Events** come on the calling thread, in order: notices and [`FolderEvent::Skipped`] while
//!   planning, warnings while loading the model, [`FolderEvent::Started`] once, one
//!   [`FolderEvent::ImageDone`] or [`FolderEvent::ImageFailed`] per image (in completion order, each
//!   already recorded in `results.jsonl`), then [`FolderEvent::Finished`] once the result files are
//!   written.

mod dataset;
pub mod draw;
pub mod inputs;
mod journal;
mod names;
mod outdir;
mod run;

use crate::device::Device;
use crate::error::{InferError, Result, Source};
use crate::options::Tta;
use crate::results::StageTimings;
use crate::tiles::Tiling;
pub use dataset::DatasetDetections;
pub use detnas_core::owner::Existing;
pub use journal::{BoxRecord, ImageRecord};
pub use names::category_ids_by_name;
pub use outdir::RESULT_FILES;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The window overlap of tiled detection when none is given (`detect --tile` without `--overlap`).
pub const DEFAULT_OVERLAP: f32 = 0.25;

pub use detnas_core::limits::{MAX_DETECTIONS, MAX_THREADS, MAX_TILE_OVERLAP, MIN_TILE};

/// Everything that decides a folder run; the fields mirror the flags of `detnas detect`.
///
/// Build it with [`FolderOptions::new`] and set fields; [`detect_folder`] validates it first.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FolderOptions {
    /// The exported model (`.onnx`).
    pub model: PathBuf,
    /// Image files, folders (searched recursively, symbolic links followed once) or glob patterns.
    pub inputs: Vec<String>,
    /// Output folder (`--out`); never searched for inputs.
    pub out: PathBuf,
    /// What to do with an earlier run's results in [`FolderOptions::out`]: refuse them (default),
    /// replace them (`--exist-ok`) or continue that run (`--resume`).
    pub existing: Existing,
    /// Minimum score from 0 to 1 (`--conf`); `None` keeps everything the graph returns (what COCO
    /// evaluation needs).
    pub conf: Option<f32>,
    /// Extra per-class NMS IoU from 0 to 1 (`--iou`); only stricter than the model's own has an effect.
    pub iou: Option<f32>,
    /// Keep at most this many detections per image, 1 to [`MAX_DETECTIONS`] (`--max-det`).
    pub max_det: Option<usize>,
    /// Keep only these classes: names or 0-based indices (`--classes`).
    pub classes: Option<Vec<String>>,
    /// Inference device (`--device`).
    pub device: Device,
    /// ONNX Runtime threads in all, shared among the workers' sessions (`--threads`; `None`: all
    /// cores), 1 to [`MAX_THREADS`].
    pub threads: Option<usize>,
    /// Images in flight at once, each worker with its own session (`--workers`, default 2), 1 to
    /// [`MAX_THREADS`]; at most the cores are used.
    pub workers: usize,
    /// Fail on image warnings (truncated JPEG) and on an unavailable device (`--strict`).
    pub strict: bool,
    /// Detect window by window (`--tile`, `--overlap`): see [`Tiling`]; the window side is
    /// [`MIN_TILE`] to the widest decodable image, the overlap 0 to [`MAX_TILE_OVERLAP`].
    pub tiling: Option<Tiling>,
    /// Decode every JPEG at full resolution (`--full-decode`; default: large ones at a reduced DCT
    /// scale, see [`crate::DetectorOptions::reduced_decode`]).
    pub full_decode: bool,
    /// Test-time augmentation (`--tta`).
    pub tta: Tta,
    /// Write YOLO label files to `<out>/labels/` (`--save-txt`).
    pub save_txt: bool,
    /// Write annotated JPEG copies to `<out>/images/` (`--save-img`).
    pub save_img: bool,
    /// Take image ids (and category ids, by class name) from this COCO instances JSON (`--ids-from`).
    pub ids_from: Option<PathBuf>,
}

impl FolderOptions {
    /// Detection of `inputs` with `model` into `out`, with the defaults of `detnas detect`.
    pub fn new<S: Into<String>>(
        model: impl Into<PathBuf>,
        inputs: impl IntoIterator<Item = S>,
        out: impl Into<PathBuf>,
    ) -> Self {
        FolderOptions {
            model: model.into(),
            inputs: inputs.into_iter().map(Into::into).collect(),
            out: out.into(),
            existing: Existing::Refuse,
            conf: None,
            iou: None,
            max_det: None,
            classes: None,
            device: Device::Cpu,
            threads: None,
            workers: 2,
            strict: false,
            tiling: None,
            full_decode: false,
            tta: Tta::None,
            save_txt: false,
            save_img: false,
            ids_from: None,
        }
    }

    /// Checks every number against its bounds (and that there is an input), as the command line
    /// does when it parses the flags: an [`InferError::Config`] naming the option and its range.
    pub fn validate(&self) -> Result<()> {
        let config = |m: String| Err(InferError::Config(m));
        if self.inputs.is_empty() {
            return config("no inputs: name image files, folders or glob patterns".into());
        }
        for (name, value) in [("conf", self.conf), ("iou", self.iou)] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && (0.0..=1.0).contains(v))) {
                return config(format!("{name} {v} is out of range: expected a number from 0 to 1"));
            }
        }
        if let Some(n) = self.max_det.filter(|n| !(1..=MAX_DETECTIONS).contains(n)) {
            return config(format!("max_det {n} is not a whole number from 1 to {MAX_DETECTIONS}"));
        }
        for (name, value) in [("threads", self.threads), ("workers", Some(self.workers))] {
            if let Some(n) = value.filter(|n| !(1..=MAX_THREADS).contains(n)) {
                return config(format!("{name} {n} is not a whole number from 1 to {MAX_THREADS}"));
            }
        }
        if let Some(t) = &self.tiling {
            let limits = crate::DecodeLimits::default();
            let widest = limits.max_width.max(limits.max_height);
            if !(MIN_TILE..=widest).contains(&t.size) {
                return config(format!("tile {} is not a whole number from {MIN_TILE} to {widest}", t.size));
            }
            if !(t.overlap.is_finite() && (0.0..=MAX_TILE_OVERLAP).contains(&t.overlap)) {
                return config(format!(
                    "overlap {} is out of range: expected a number from 0 to {MAX_TILE_OVERLAP}",
                    t.overlap
                ));
            }
        }
        Ok(())
    }
}

/// An input or image that could not be processed (one entry of `errors.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The input or image, as spelled.
    pub file: String,
    /// Why, in one line naming it.
    pub error: String,
}

impl Failure {
    /// The failure of `file` with `error`.
    pub fn new(file: String, error: String) -> Self {
        Failure { file, error }
    }
}

/// What [`detect_folder`] reports as it goes (see the module's contract for the order).
#[derive(Debug)]
#[non_exhaustive]
pub enum FolderEvent<'a> {
    /// A line for the user: a folder skipped on purpose, an earlier run's folder adopted, files
    /// kept when replacing results, inputs changed since a resumed run planned them.
    Notice(String),
    /// A warning, without a `warning: ` prefix: an unavailable device (the CPU runs instead), an
    /// IoU looser than the model's, more workers or threads than cores.
    Warning(String),
    /// An input that could not be collected; it is among the outcome's failures too.
    Skipped(&'a Failure),
    /// Detection starts.
    Started {
        /// The output folder.
        out: &'a Path,
        /// Images of the run (every collected file).
        images: usize,
        /// Images already recorded by the run being resumed.
        done: usize,
        /// Images to detect now.
        pending: usize,
        /// Workers detecting at once.
        workers: usize,
        /// Whether an earlier run is being continued.
        resumed: bool,
    },
    /// An image was detected and recorded; its label and annotated files are written, or
    /// `record.output_error` says why not.
    ImageDone {
        /// Its record, as appended to `results.jsonl`.
        record: &'a ImageRecord,
        /// Images recorded so far, a resumed run's included.
        recorded: usize,
    },
    /// An image could not be decoded or detected (`record.error` says why); the batch goes on.
    ImageFailed {
        /// Its record, as appended to `results.jsonl`.
        record: &'a ImageRecord,
        /// Images recorded so far, a resumed run's included.
        recorded: usize,
    },
    /// The result files are written. [`detect_folder`] then returns this outcome, or
    /// [`InferError::NothingProcessed`] when no image could be processed.
    Finished(&'a FolderOutcome),
}

impl FolderEvent<'_> {
    /// The line `detnas detect` prints on stderr for this event, if any.
    pub fn line(&self) -> Option<String> {
        match self {
            FolderEvent::Notice(line) => Some(line.clone()),
            FolderEvent::Warning(w) => Some(format!("warning: {w}")),
            FolderEvent::Skipped(f) => Some(format!("skipped: {}", f.error)),
            FolderEvent::Started { out, done, pending, resumed: true, .. } => {
                Some(format!("resuming {}: {done} image(s) done, {pending} to go", out.display()))
            }
            _ => None,
        }
    }
}

/// The files of a finished run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputFiles {
    /// `detections.json`: COCO results (`image_id`, `category_id`, `bbox` as `[x, y, w, h]`, `score`).
    pub detections: PathBuf,
    /// `images.json`: every processed image (id, file, size, detections, label and annotated files),
    /// the categories and the image warnings.
    pub images: PathBuf,
    /// `errors.json`: every failure, when any.
    pub errors: Option<PathBuf>,
    /// `results.jsonl`: one [`ImageRecord`] per image, in input order.
    pub results: PathBuf,
    /// `run.json`: the settings and the planned work (what a resumed run checks).
    pub run: PathBuf,
    /// `labels/`, with [`FolderOptions::save_txt`].
    pub labels: Option<PathBuf>,
    /// `images/`, with [`FolderOptions::save_img`].
    pub annotated: Option<PathBuf>,
}

/// What a folder run did; its files hold the same.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FolderOutcome {
    /// The output folder.
    pub out: PathBuf,
    /// Its result files.
    pub files: OutputFiles,
    /// Every image's record in input order (a resumed run's included).
    pub records: Vec<ImageRecord>,
    /// Every failure, as in `errors.json`: inputs that could not be collected, then images that
    /// could not be detected and output files that could not be written.
    pub failures: Vec<Failure>,
    /// Images processed (records without an error).
    pub images: usize,
    /// Detections of the processed images.
    pub detections: usize,
    /// Images detected by this call (not by the run it resumed).
    pub detected_now: usize,
    /// Stage timings summed over the images detected now.
    pub timings: StageTimings,
    /// Wall time of the detection step.
    pub wall: Duration,
}

impl FolderOutcome {
    /// Images detected now per second of [`FolderOutcome::wall`].
    pub fn images_per_second(&self) -> f64 {
        self.detected_now as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Mean milliseconds per image detected now of each stage: decode, preprocess, inference,
    /// postprocess (zeros when none was).
    pub fn mean_ms(&self) -> [f64; 4] {
        let n = self.detected_now;
        let mean = |d: Duration| if n > 0 { d.as_secs_f64() * 1e3 / n as f64 } else { 0.0 };
        let t = &self.timings;
        [mean(t.decode), mean(t.preprocess), mean(t.inference), mean(t.postprocess)]
    }
}

/// Detects every image `options` names into its output folder, calling `on_event` as it goes (on
/// the calling thread); see the module's contract. Returns the outcome once the result files are
/// written; an input or image that fails is in its `failures`, not an error. Errors: invalid
/// options (before anything is created), a refused output folder or resume, an unreadable model
/// or ground truth, no image found ([`InferError::NoImages`], `errors.json` written), a journal
/// that cannot be written, and no image processed at all ([`InferError::NothingProcessed`], after
/// [`FolderEvent::Finished`]).
pub fn detect_folder(options: &FolderOptions, on_event: &mut dyn FnMut(FolderEvent<'_>)) -> Result<FolderOutcome> {
    options.validate()?;
    run::run(options, on_event)
}

/// An error of `what` (`writing out/run.json`) caused by `source`.
fn file_error(what: String, source: impl Into<Source>) -> InferError {
    InferError::File { what, source: source.into() }
}

/// `value` as JSON (pretty or compact), for the file `path`.
fn to_json<T: Serialize + ?Sized>(value: &T, pretty: bool, path: &Path) -> Result<Vec<u8>> {
    let bytes = if pretty { serde_json::to_vec_pretty(value) } else { serde_json::to_vec(value) };
    bytes.map_err(|e| file_error(format!("writing {}", path.display()), e))
}

/// Cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `e` and its causes, as anyhow's `{:#}` shows them (`outer: inner: innermost`).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

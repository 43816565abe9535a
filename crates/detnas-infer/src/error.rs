//! The error type of `detnas-infer`.
//!
//! Every message is one line without a trailing newline and names the file or value concerned.
//! Underlying errors (ONNX Runtime, I/O, image decoding) are kept as [`std::error::Error::source`]
//! and not repeated in the message: print the chain (`anyhow`'s `{:#}`, or walk `source()`) to see
//! them.

use std::path::PathBuf;
use std::sync::Arc;

/// Result with [`InferError`] as the default error.
pub type Result<T, E = InferError> = std::result::Result<T, E>;

/// A boxed underlying error.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Inference failures; each names the file or value concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// No ONNX Runtime library was found; `searched` lists each place looked at and what was there.
    #[error(
        "ONNX Runtime not found: this program needs {} (ONNX Runtime 1.{} or newer). Searched: {}. \
         Get it from https://github.com/microsoft/onnxruntime/releases (the `lib/` folder of the \
         archive for your platform) or from PyPI (`pip download --no-deps onnxruntime`, file in \
         `onnxruntime/capi/`), then put it beside the executable, or point LD_LIBRARY_PATH or \
         ORT_DYLIB_PATH (file or folder) at it (in the detnas repository: tools/setup-native.sh)",
        crate::runtime::library_file_name(), crate::runtime::MIN_MINOR_VERSION, searched.join("; ")
    )]
    RuntimeNotFound {
        /// Each place looked at, with what was found there.
        searched: Vec<String>,
    },
    /// A library file was found (or given) but is not a usable ONNX Runtime.
    #[error(
        "ONNX Runtime at {} (from {source_kind}) could not be loaded; this build needs ONNX Runtime 1.{} or newer",
        path.display(), crate::runtime::MIN_MINOR_VERSION
    )]
    RuntimeLoad {
        /// The library file.
        path: PathBuf,
        /// How it was found.
        source_kind: crate::runtime::LibrarySource,
        /// Why it did not load.
        #[source]
        error: Arc<crate::runtime::LoadFailure>,
    },
    /// ONNX Runtime is already loaded from another file (one library per process).
    #[error("ONNX Runtime is already loaded from {}; cannot switch to {} in the same process", loaded.display(), requested.display())]
    RuntimeConflict {
        /// The library in use.
        loaded: PathBuf,
        /// The library asked for.
        requested: PathBuf,
    },
    /// An ONNX Runtime call failed.
    #[error(transparent)]
    Ort(#[from] ort::Error),
    /// A file could not be read or written.
    #[error("{}: input/output error", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime refused the model (not ONNX, truncated, unsupported operator or opset).
    #[error("model {}: not a loadable ONNX model", path.display())]
    ModelLoad {
        /// The model file (or the name given to [`crate::Detector::from_memory`]).
        path: PathBuf,
        /// ONNX Runtime's reason.
        #[source]
        source: ort::Error,
    },
    /// The model file itself is unusable (missing, a folder, empty).
    #[error("model {}: {reason}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
    /// The model's graph does not have the interface a detnas model has.
    #[error("model {}: expected {expected}, found {actual}", path.display())]
    ModelContract {
        /// The model file.
        path: PathBuf,
        /// What a detnas model has.
        expected: String,
        /// What this model has.
        actual: String,
    },
    /// The model's metadata is missing, malformed or inconsistent.
    #[error("model {}: invalid metadata: {reason}", path.display())]
    Metadata {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// One run produced outputs that break the contract (labels out of range, inverted or
    /// non-finite boxes, non-finite scores).
    #[error("model {} produced invalid output: {reason}", path.display())]
    BadOutput {
        /// The model file.
        path: PathBuf,
        /// The first offending detection.
        reason: String,
    },
    /// The requested execution provider is unavailable (under `strict`).
    #[error("execution provider {requested} unavailable: {reason}")]
    Provider {
        /// The device asked for (`cuda:0`).
        requested: String,
        /// Why it is unavailable.
        reason: String,
    },
    /// An invalid option value.
    #[error("{0}")]
    Config(String),
    /// A class name the model does not have (class filters by name).
    #[error("model {model} has no class {name:?}; its classes are {available:?}")]
    UnknownClass {
        /// The model.
        model: String,
        /// The name asked for.
        name: String,
        /// The model's class names.
        available: Vec<String>,
    },
    /// A latency table is unreadable, malformed or edited.
    #[error("latency table {path}: {reason}")]
    LatencyTable {
        /// The table file.
        path: String,
        /// What is wrong.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
    /// A latency server (`detnas latency serve`) could not be reached, refused a request or
    /// answered something unreadable.
    #[error("latency server {url}: {reason}")]
    Remote {
        /// The server's address.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A latency table lacks an entry a prediction needs.
    #[error("latency table {path} has no {what} (it holds {holds})")]
    NotInTable {
        /// The table file.
        path: String,
        /// The missing entry.
        what: String,
        /// What the table holds instead.
        holds: String,
    },
    /// Exporting a part for latency measurement, or rewriting a model for quantization, failed.
    #[cfg(feature = "quantize")]
    #[error(transparent)]
    Export(#[from] detnas_onnx::OnnxError),
    /// A detector configuration problem.
    #[error(transparent)]
    Core(#[from] detnas_core::CoreError),
    /// An image could not be loaded (names the file and the problem).
    #[error(transparent)]
    Image(#[from] crate::image_io::ImageError),
    /// (`folder`) The output folder was refused (another command's, the user's own files, an
    /// earlier run not to be replaced), or its ownership record could not be read or written.
    #[cfg(feature = "folder")]
    #[error(transparent)]
    Owner(#[from] detnas_core::owner::OwnerError),
    /// (`folder`) The COCO ground truth of [`crate::folder::FolderOptions::ids_from`] could not be
    /// read or is inconsistent.
    #[cfg(feature = "folder")]
    #[error(transparent)]
    Coco(#[from] detnas_core::coco::CocoError),
    /// (`folder`) A file of a folder run could not be read or written: `what` says how and which
    /// (`reading model m.onnx`, `writing out/results.jsonl`).
    #[cfg(feature = "folder")]
    #[error("{what}")]
    File {
        /// What was being done, naming the file.
        what: String,
        /// The underlying error.
        #[source]
        source: Source,
    },
    /// (`folder`) The output folder cannot take the run's files (a file there that detnas did not
    /// write, a symbolic link where it writes, no run to resume).
    #[cfg(feature = "folder")]
    #[error("{0}")]
    OutDir(String),
    /// (`folder`) A resumed run was refused: other settings or inputs than the run it continues,
    /// or no readable run record.
    #[cfg(feature = "folder")]
    #[error("{reason}")]
    Resume {
        /// Why, naming the folder and what differs.
        reason: String,
        /// The underlying error, if any (the run record's parse error).
        #[source]
        source: Option<Source>,
    },
    /// (`folder`) The ground truth of [`crate::folder::FolderOptions::ids_from`] does not fit
    /// the inputs (one id for two files, two ids for one file) or the model (a class it lacks).
    #[cfg(feature = "folder")]
    #[error("{0}")]
    GroundTruth(String),
    /// (`folder`) A class of [`crate::folder::FolderOptions::classes`] is neither a name nor an
    /// index of the model's classes.
    #[cfg(feature = "folder")]
    #[error("unknown class `{name}` (model classes: {})", classes.join(", "))]
    ClassFilter {
        /// The class as given.
        name: String,
        /// The model's class names.
        classes: Vec<String>,
    },
    /// (`folder`) The inputs name no image at all (`errors.json` in the output folder says why
    /// each input gave none).
    #[cfg(feature = "folder")]
    #[error("no images found in {inputs}")]
    NoImages {
        /// The inputs as given, space separated.
        inputs: String,
    },
    /// (`folder`) Not one image could be detected; the run's result files are written all the
    /// same (`errors.json` lists why each failed).
    #[cfg(feature = "folder")]
    #[error("no image could be processed ({failed} failed)")]
    NothingProcessed {
        /// Inputs and images that failed.
        failed: usize,
    },
}

impl InferError {
    /// A model problem with no underlying error.
    pub(crate) fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        InferError::Model { path: path.into(), reason: reason.into(), source: None }
    }
}

impl From<ort::Error<ort::session::builder::SessionBuilder>> for InferError {
    fn from(e: ort::Error<ort::session::builder::SessionBuilder>) -> Self {
        InferError::Ort(e.into())
    }
}

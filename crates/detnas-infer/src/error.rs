//! The error type of `detnas-infer`.

use std::path::PathBuf;

/// Result with [`InferError`] as the default error.
pub type Result<T, E = InferError> = std::result::Result<T, E>;

/// Inference failures; each names the file or value concerned.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("ONNX Runtime library not found at {path}: run tools/setup-native.sh or set ORT_DYLIB_PATH")]
    RuntimeMissing { path: PathBuf },
    #[error("ONNX Runtime could not be loaded from {path}: {reason}")]
    RuntimeLoad { path: PathBuf, reason: String },
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("model {path}: expected {expected}, found {actual}")]
    ModelContract { path: PathBuf, expected: String, actual: String },
    #[error("model {path}: invalid metadata: {reason}")]
    Metadata { path: PathBuf, reason: String },
    #[error("model {path} produced invalid output: {reason}")]
    BadOutput { path: PathBuf, reason: String },
    #[error("execution provider {requested} unavailable: {reason}")]
    Provider { requested: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("latency table {path}: {reason}")]
    LatencyTable { path: String, reason: String },
    #[error("latency table {path} has no {what} (it holds {holds})")]
    NotInTable { path: String, what: String, holds: String },
    #[error("export: {0}")]
    Export(#[from] detnas_onnx::OnnxError),
    #[error(transparent)]
    Core(#[from] detnas_core::CoreError),
    #[error(transparent)]
    Image(#[from] crate::image_io::ImageError),
}

impl From<ort::Error> for InferError {
    fn from(e: ort::Error) -> Self {
        InferError::Ort(e.to_string())
    }
}

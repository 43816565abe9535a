//! The error type of `detnas-onnx`.

/// Result with [`OnnxError`] as the default error.
pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

/// Export failures; each names the value or tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("value name `{0}` is already used in the graph")]
    DuplicateName(String),
    #[error("initializer `{name}`: shape {dims:?} needs {expected} values, got {got}")]
    InitializerSize { name: String, dims: Vec<i64>, expected: usize, got: usize },
    #[error("graph output `{0}` is not produced by any node, input or initializer")]
    UnknownValue(String),
    #[error("cannot encode the model: {0}")]
    Encode(String),
    #[error("weights {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error("tensor `{name}` is missing from {origin}")]
    MissingTensor { name: String, origin: String },
    #[error("tensor `{name}` in {origin}: expected shape {expected:?}, got {got:?}")]
    TensorShape { name: String, expected: Vec<usize>, got: Vec<usize>, origin: String },
    #[error("{0}")]
    Options(String),
    #[error("quantization: {0}")]
    Quantize(String),
    #[error(transparent)]
    Core(#[from] detnas_core::CoreError),
}

//! The error type of `detnas-onnx`.

/// Result with [`OnnxError`] as the default error.
pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

/// Export failures; each names the value or tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// A value name given twice to the graph builder.
    #[error("value name `{0}` is already used in the graph")]
    DuplicateName(String),
    /// Initializer values that do not match its shape.
    #[error("initializer `{name}`: shape {dims:?} needs {expected} values, got {got}")]
    InitializerSize {
        /// The initializer.
        name: String,
        /// Its shape.
        dims: Vec<i64>,
        /// Values the shape needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A graph output that nothing produces.
    #[error("graph output `{0}` is not produced by any node, input or initializer")]
    UnknownValue(String),
    /// The model cannot be serialized (protobuf's message).
    #[error("cannot encode the model: {0}")]
    Encode(String),
    /// A weights file that cannot be read or parsed.
    #[error("weights {path}: {reason}")]
    Weights {
        /// The file (or the weights' source).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the exporter needs is not in the weights.
    #[error("tensor `{name}` is missing from {origin}")]
    MissingTensor {
        /// The tensor's name.
        name: String,
        /// Where the weights come from.
        origin: String,
    },
    /// A tensor of the weights has another shape than the exporter needs.
    #[error("tensor `{name}` in {origin}: expected shape {expected:?}, got {got:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape needed.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
        /// Where the weights come from.
        origin: String,
    },
    /// Export options out of range (the message says which).
    #[error("{0}")]
    Options(String),
    /// A model that cannot be quantized or converted (the message says why).
    #[error("quantization: {0}")]
    Quantize(String),
    /// An invalid space, architecture or detector configuration.
    #[error(transparent)]
    Core(#[from] detnas_core::CoreError),
    /// A checkpoint folder that cannot be exported from (its state, its architecture).
    #[error(transparent)]
    Checkpoint(#[from] detnas_core::checkpoint::CheckpointError),
}

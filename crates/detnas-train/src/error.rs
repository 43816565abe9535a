//! The error type of `detnas-train`.

/// Result with [`TrainError`] as the default error.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Training failures; each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid device `{0}`: expected cpu, cuda or cuda:N")]
    BadDevice(String),
    #[error("device `{requested}` is not available: {reason}")]
    DeviceUnavailable { requested: String, reason: String },
    #[error("architecture {arch}: layer {layer} choice {choice} is not part of this network")]
    PathNotBuilt { layer: usize, choice: u8, arch: String },
    #[error("detector genes {genes}: {reason}")]
    GenesNotBuilt { genes: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: std::path::PathBuf, reason: String },
    #[error(
        "{path} already holds a checkpoint (step {step}): pass --resume to continue it or --overwrite to replace it"
    )]
    CheckpointExists { path: std::path::PathBuf, step: usize },
    #[error("non-finite values in {0}")]
    NonFinite(String),
    #[error("{path}: {reason}")]
    Data { path: std::path::PathBuf, reason: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Core(#[from] detnas_core::CoreError),
    #[error(transparent)]
    Owner(#[from] detnas_core::owner::OwnerError),
}

impl From<detnas_core::checkpoint::CheckpointError> for TrainError {
    fn from(e: detnas_core::checkpoint::CheckpointError) -> Self {
        TrainError::Checkpoint { path: e.path, reason: e.reason }
    }
}

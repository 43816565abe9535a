//! The error type of `detnas-train`.

/// Result with [`TrainError`] as the default error.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Training failures; each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A device name that does not parse.
    #[error("invalid device `{0}`: expected cpu, cuda or cuda:N")]
    BadDevice(String),
    /// A device this machine or libtorch build does not have.
    #[error("device `{requested}` is not available: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        requested: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A path with a choice the network was not built with.
    #[error("architecture {arch}: layer {layer} choice {choice} is not part of this network")]
    PathNotBuilt {
        /// The layer (0-based).
        layer: usize,
        /// The choice asked for.
        choice: u8,
        /// The architecture.
        arch: String,
    },
    /// Detector genes the network was not built for.
    #[error("detector genes {genes}: {reason}")]
    GenesNotBuilt {
        /// The genes.
        genes: String,
        /// Why the network cannot run them.
        reason: String,
    },
    /// An invalid training configuration (the message says what).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A checkpoint that cannot be read, written or used.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A fresh run asked for a folder that already holds a checkpoint.
    #[error(
        "{path} already holds a checkpoint (step {step}): pass --resume to continue it or --overwrite to replace it"
    )]
    CheckpointExists {
        /// The folder.
        path: std::path::PathBuf,
        /// Completed steps of the checkpoint there.
        step: usize,
    },
    /// Non-finite values where finite ones are needed (the message says where).
    #[error("non-finite values in {0}")]
    NonFinite(String),
    /// A data or configuration file that cannot be read or used.
    #[error("{path}: {reason}")]
    Data {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A libtorch error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// An invalid space, architecture or detector configuration.
    #[error(transparent)]
    Core(#[from] detnas_core::CoreError),
    /// An output folder that cannot be used.
    #[error(transparent)]
    Owner(#[from] detnas_core::owner::OwnerError),
}

impl From<detnas_core::checkpoint::CheckpointError> for TrainError {
    fn from(e: detnas_core::checkpoint::CheckpointError) -> Self {
        TrainError::Checkpoint { path: e.path, reason: e.reason }
    }
}

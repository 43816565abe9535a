//! The error type of `detnas-core`.

use crate::size::format_count;
use std::path::PathBuf;

/// Result with [`CoreError`] as the default error.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the pure core; every variant names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown search space `{name}` (known: {known})")]
    UnknownSpace { name: String, known: String },
    #[error("unknown preset `{name}` (known: {known})")]
    UnknownPreset { name: String, known: String },
    #[error("empty architecture: expected {expected} choices such as `2,1,2,0,...`")]
    EmptyArch { expected: usize },
    #[error("architecture token {position} is `{token}`: expected a single digit 0-3")]
    BadArchToken { position: usize, token: String },
    #[error("architecture has {got} choices but space `{space}` has {expected} layers")]
    ArchLength { space: String, expected: usize, got: usize },
    #[error("layer {layer} has choice {value}, but space `{space}` allows only {allowed}")]
    ChoiceNotAllowed { space: String, layer: usize, value: u8, allowed: String },
    #[error("preset `{preset}` belongs to space `{preset_space}`, not `{space}`")]
    PresetSpaceMismatch { preset: String, preset_space: String, space: String },
    #[error("invalid input size `{input}`: {reason}")]
    BadInputSize { input: String, reason: String },
    #[error("invalid size `{input}`: {reason}")]
    BadSize { input: String, reason: String },
    #[error("input {height}x{width} is too small for space `{space}`: a feature map would be empty")]
    InputTooSmall { space: String, height: u64, width: u64 },
    #[error(
        "no architecture of {space} fits under {} FLOPs: the smallest needs {}",
        format_count(*budget),
        format_count(*smallest)
    )]
    BudgetBelowMinimum { space: String, budget: u64, smallest: u64 },
    #[error(
        "no architecture of {space} reaches {} FLOPs: the largest needs {}",
        format_count(*floor),
        format_count(*largest)
    )]
    FloorAboveMaximum { space: String, floor: u64, largest: u64 },
    #[error("no architecture satisfies the constraints after {tries} tries: {detail}")]
    Unsatisfiable { tries: usize, detail: String },
    #[error("invalid detector configuration: {field}: {reason}")]
    BadDetectorConfig { field: &'static str, reason: String },
    #[error("invalid genome `{text}`: {reason}")]
    BadGenome { text: String, reason: String },
    #[error("invalid gene space: {0}")]
    BadGeneSpace(String),
    #[error("invalid evolution config: {0}")]
    BadConfig(String),
    #[error("search state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("fitness oracle failed on {arch}: {reason}")]
    Fitness { arch: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what} needs about {} of memory, over the {} limit ({name})", gib(*needed), gib(*limit))]
    TooLarge { what: String, needed: u64, limit: u64, name: &'static str },
}

/// Bytes in GiB with one decimal (`12.5 GiB`).
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl CoreError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io { path: path.into(), source }
    }
}

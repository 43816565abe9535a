//! The error type of `detnas-core`.

use crate::size::format_count;
use std::path::PathBuf;

/// Result with [`CoreError`] as the default error.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the pure core; every variant names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// No built-in search space has this name.
    #[error("unknown search space `{name}` (known: {known})")]
    UnknownSpace {
        /// The name asked for.
        name: String,
        /// The built-in names, comma separated.
        known: String,
    },
    /// No preset architecture has this name.
    #[error("unknown preset `{name}` (known: {known})")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The preset names, comma separated.
        known: String,
    },
    /// An architecture encoding without any choice.
    #[error("empty architecture: expected {expected} choices such as `2,1,2,0,...`")]
    EmptyArch {
        /// Choices the space needs (one per layer).
        expected: usize,
    },
    /// An architecture token that is not a single digit 0-3.
    #[error("architecture token {position} is `{token}`: expected a single digit 0-3")]
    BadArchToken {
        /// Position of the token (0-based).
        position: usize,
        /// The token as written.
        token: String,
    },
    /// An architecture with another number of choices than the space has layers.
    #[error("architecture has {got} choices but space `{space}` has {expected} layers")]
    ArchLength {
        /// The space's name.
        space: String,
        /// Layers of the space.
        expected: usize,
        /// Choices given.
        got: usize,
    },
    /// A choice the space does not allow.
    #[error("layer {layer} has choice {value}, but space `{space}` allows only {allowed}")]
    ChoiceNotAllowed {
        /// The space's name.
        space: String,
        /// The layer (0-based).
        layer: usize,
        /// The choice given.
        value: u8,
        /// The allowed choices, as text.
        allowed: String,
    },
    /// A preset used with a space other than its own.
    #[error("preset `{preset}` belongs to space `{preset_space}`, not `{space}`")]
    PresetSpaceMismatch {
        /// The preset's name.
        preset: String,
        /// The space the preset belongs to.
        preset_space: String,
        /// The space asked for.
        space: String,
    },
    /// An input size that does not parse or is not usable (`HxW`, multiples of 32).
    #[error("invalid input size `{input}`: {reason}")]
    BadInputSize {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A count (FLOPs budget and the like) that does not parse ([`crate::size::parse_count`]).
    #[error("invalid size `{input}`: {reason}")]
    BadSize {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An input so small that a feature map of the space would be empty.
    #[error("input {height}x{width} is too small for space `{space}`: a feature map would be empty")]
    InputTooSmall {
        /// The space's name.
        space: String,
        /// Input height in pixels.
        height: u64,
        /// Input width in pixels.
        width: u64,
    },
    /// A FLOPs budget below the smallest architecture of the space.
    #[error(
        "no architecture of {space} fits under {} FLOPs: the smallest needs {}",
        format_count(*budget),
        format_count(*smallest)
    )]
    BudgetBelowMinimum {
        /// The space's name.
        space: String,
        /// The budget asked for.
        budget: u64,
        /// FLOPs of the smallest architecture.
        smallest: u64,
    },
    /// A FLOPs floor above the largest architecture of the space.
    #[error(
        "no architecture of {space} reaches {} FLOPs: the largest needs {}",
        format_count(*floor),
        format_count(*largest)
    )]
    FloorAboveMaximum {
        /// The space's name.
        space: String,
        /// The floor asked for.
        floor: u64,
        /// FLOPs of the largest architecture.
        largest: u64,
    },
    /// Sampling found no architecture within the constraints.
    #[error("no architecture satisfies the constraints after {tries} tries: {detail}")]
    Unsatisfiable {
        /// Samples drawn.
        tries: usize,
        /// The constraints, as text.
        detail: String,
    },
    /// A detector configuration field out of its range.
    #[error("invalid detector configuration: {field}: {reason}")]
    BadDetectorConfig {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A genome (architecture plus detector genes) that does not parse or does not fit its space.
    #[error("invalid genome `{text}`: {reason}")]
    BadGenome {
        /// The genome as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A gene space (the detector genes a supernet samples) that is empty or out of range.
    #[error("invalid gene space: {0}")]
    BadGeneSpace(String),
    /// Invalid settings of a search, a sampler or a request (the message says what).
    #[error("invalid evolution config: {0}")]
    BadConfig(String),
    /// A saved state (search state, finalists file) that cannot be used.
    #[error("search state {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The fitness oracle of a search failed on an architecture.
    #[error("fitness oracle failed on {arch}: {reason}")]
    Fitness {
        /// The architecture evaluated.
        arch: String,
        /// The oracle's error, as text.
        reason: String,
    },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A request over one of the memory limits of [`crate::limits`].
    #[error("{what} needs about {} of memory, over the {} limit ({name})", gib(*needed), gib(*limit))]
    TooLarge {
        /// The request.
        what: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes the limit allows.
        limit: u64,
        /// The limit's name.
        name: &'static str,
    },
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

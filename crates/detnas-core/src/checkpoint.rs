//! The JSON part of a training checkpoint (`state.json`): its typed schema, reading and
//! validation, the configuration hash, and the file layout of a checkpoint folder. No tensor
//! library is needed here, so tools that only read checkpoints (ONNX export) stay libtorch-free.
//!
//! A checkpoint folder holds `state.json` (this schema), `weights-<step>.safetensors` and
//! `optimizer-<step>.safetensors`, the two files `state.json` names.

use crate::detector::DetectorConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the checkpoint layout.
pub const FORMAT: u32 = 1;

/// Name of the state file inside a checkpoint folder.
pub const STATE_FILE: &str = "state.json";

/// A checkpoint file that could not be read, written or used: the file and what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {reason}")]
pub struct CheckpointError {
    /// The checkpoint folder or file.
    pub path: PathBuf,
    /// What was wrong.
    pub reason: String,
}

impl CheckpointError {
    /// An error about `path` with `reason` as its text.
    pub fn new(path: &Path, reason: impl std::fmt::Display) -> Self {
        CheckpointError { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

/// One named component of the logged loss (`cls`, `box`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "(String, f64)", into = "(String, f64)")]
pub struct LossPart {
    /// The component's name.
    pub name: String,
    /// Its mean over the window.
    pub value: f64,
}

impl From<(String, f64)> for LossPart {
    fn from((name, value): (String, f64)) -> Self {
        LossPart { name, value }
    }
}

impl From<LossPart> for (String, f64) {
    fn from(p: LossPart) -> Self {
        (p.name, p.value)
    }
}

/// One line of the training log: means over the steps since the previous entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Completed steps when the entry was written.
    pub step: usize,
    /// Mean total loss of the window's finite steps.
    pub loss: f64,
    /// Mean of each loss component (serialized as `[name, value]` pairs).
    pub parts: Vec<LossPart>,
    /// Learning rate of the last step of the window.
    pub lr: f64,
    /// Training images per second over the window.
    pub images_per_s: f64,
    /// Mean time per step the trainer waited for its batch.
    pub data_wait_ms: f64,
}

/// What a checkpoint holds (written as `retinanet`, `faster-rcnn` or `classifier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointKind {
    /// A RetinaNet detector (or its supernet).
    Retinanet,
    /// An FPN Faster R-CNN detector (or its supernet).
    FasterRcnn,
    /// A classification supernet or network.
    Classifier,
}

impl CheckpointKind {
    /// The detector family of a detection checkpoint; `None` for a classifier.
    pub fn detector(self) -> Option<crate::detector::DetectorKind> {
        match self {
            CheckpointKind::Retinanet => Some(crate::detector::DetectorKind::Retinanet),
            CheckpointKind::FasterRcnn => Some(crate::detector::DetectorKind::FasterRcnn),
            CheckpointKind::Classifier => None,
        }
    }

    /// The checkpoint kind of a detector family.
    pub fn of_detector(kind: crate::detector::DetectorKind) -> Self {
        match kind {
            crate::detector::DetectorKind::Retinanet => CheckpointKind::Retinanet,
            crate::detector::DetectorKind::FasterRcnn => CheckpointKind::FasterRcnn,
        }
    }
}

impl std::fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.detector() {
            Some(d) => write!(f, "{d}"),
            None => f.write_str("classifier"),
        }
    }
}

/// The JSON part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// Version of the state format (a reader refuses any other).
    pub format: u32,
    /// What the checkpoint holds.
    pub kind: CheckpointKind,
    /// Name of the search space.
    pub space: String,
    /// The trained path, or `None` for a supernet (every choice).
    pub arch: Option<String>,
    /// The full training configuration (TOML-equivalent JSON) and its hash.
    pub config: serde_json::Value,
    /// Hash of `config` ([`config_hash`]): a resumed run must have the same.
    pub config_hash: String,
    /// Completed optimisation steps.
    pub step: usize,
    /// File names (inside the checkpoint folder) of the weights and optimizer buffers.
    pub weights: String,
    /// File name of the optimizer buffers (see `weights`).
    pub optimizer: String,
    /// Steps skipped for a non-finite loss.
    pub skipped_steps: usize,
    /// The training log, one entry per log interval.
    pub history: Vec<LogEntry>,
    /// The program that wrote the checkpoint (`detnas <version>`).
    pub producer: String,
    /// Training images that could not be decoded and were skipped (`path: reason`), each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bad_images: Vec<String>,
}

/// Hash of a run configuration: everything but how long the run lasts and how often it logs and
/// saves, so a finished run can be extended while any other change is refused on resume.
pub fn config_hash(config: &serde_json::Value) -> String {
    let mut v = config.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("iterations");
        o.remove("log_every");
        o.remove("checkpoint_every");
    }
    format!("{:016x}", crate::search::evolution::fnv1a64(v.to_string().as_bytes()))
}

impl CheckpointState {
    /// The state of a new run of `kind` with configuration `config`.
    pub fn new(kind: CheckpointKind, space: &str, arch: Option<String>, config: &impl Serialize) -> Self {
        let config = serde_json::to_value(config).expect("config serializes");
        CheckpointState {
            format: FORMAT,
            kind,
            space: space.into(),
            arch,
            config_hash: config_hash(&config),
            config,
            step: 0,
            weights: String::new(),
            optimizer: String::new(),
            skipped_steps: 0,
            history: Vec::new(),
            producer: format!("detnas {}", env!("CARGO_PKG_VERSION")),
            bad_images: Vec::new(),
        }
    }

    /// The detector configuration of a detection checkpoint (`config.detector`), with the class
    /// names and ids of its training data. A classifier checkpoint, or one whose detector section
    /// does not parse, is an error naming `dir`'s state file.
    pub fn detector_config(&self, dir: &Path) -> Result<DetectorConfig, CheckpointError> {
        let path = dir.join(STATE_FILE);
        let detector = self.config.get("detector").ok_or_else(|| {
            CheckpointError::new(&path, format!("a `{}` checkpoint has no detector configuration", self.kind))
        })?;
        serde_json::from_value(detector.clone())
            .map_err(|e| CheckpointError::new(&path, format!("invalid detector configuration: {e}")))
    }

    /// The path to use: `arch` when given, else the trained one; a supernet checkpoint without
    /// `arch` is an error naming `dir`.
    pub fn arch_or(&self, dir: &Path, arch: Option<&str>) -> Result<String, CheckpointError> {
        match (arch, &self.arch) {
            (Some(a), _) => Ok(a.to_string()),
            (None, Some(a)) => Ok(a.clone()),
            (None, None) => {
                Err(CheckpointError::new(dir, "is a supernet checkpoint: choose the path with --arch".to_string()))
            }
        }
    }

    /// Records a skipped training image once.
    pub fn note_bad_image(&mut self, what: String) {
        if !self.bad_images.contains(&what) {
            self.bad_images.push(what);
        }
    }
}

/// Reads and validates `state.json` of the checkpoint folder `dir`: JSON of this schema, a known
/// [`FORMAT`], named weight files present. Errors name the state file.
pub fn load_state(dir: &Path) -> Result<CheckpointState, CheckpointError> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| CheckpointError::new(&path, e))?;
    let state: CheckpointState = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::new(&path, format!("not a detnas checkpoint state: {e}")))?;
    if state.format != FORMAT {
        return Err(CheckpointError::new(
            &path,
            format!("checkpoint format {} is not supported (expected {FORMAT})", state.format),
        ));
    }
    for name in [&state.weights, &state.optimizer].into_iter().filter(|n| !n.is_empty()) {
        if Path::new(name.as_str()).file_name().is_none_or(|f| f != name.as_str()) {
            return Err(CheckpointError::new(
                &path,
                format!("names `{name}`, which is not a file of the checkpoint folder"),
            ));
        }
    }
    if state.weights.is_empty() || !dir.join(&state.weights).is_file() {
        return Err(CheckpointError::new(&path, format!("names weights `{}`, which do not exist", state.weights)));
    }
    Ok(state)
}

/// Whether `dir` holds a checkpoint (a `state.json`).
pub fn exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).exists()
}

/// Whether `name` is one of the files a checkpoint writes (state, weights, optimizer buffers).
pub fn is_checkpoint_file(name: &str) -> bool {
    name == STATE_FILE
        || ((name.starts_with("weights-") || name.starts_with("optimizer-")) && name.contains(".safetensors"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &Path, state: &mut CheckpointState) {
        state.weights = "weights-0000003.safetensors".into();
        state.optimizer = "optimizer-0000003.safetensors".into();
        std::fs::write(dir.join(&state.weights), b"w").unwrap();
        std::fs::write(dir.join(&state.optimizer), b"o").unwrap();
        std::fs::write(dir.join(STATE_FILE), serde_json::to_vec(state).unwrap()).unwrap();
    }

    #[test]
    fn state_round_trips_and_gives_a_typed_detector_config() {
        let dir = tempfile::tempdir().unwrap();
        let det = DetectorConfig { class_names: vec!["tree".into()], ..DetectorConfig::default() };
        let config = serde_json::json!({ "detector": det, "iterations": 5 });
        let mut state = CheckpointState::new(CheckpointKind::Retinanet, "detnas-300m", Some("0,1".into()), &config);
        state.history.push(LogEntry {
            step: 1,
            loss: 2.0,
            parts: vec![LossPart { name: "cls".into(), value: 1.5 }],
            lr: 0.1,
            images_per_s: 3.0,
            data_wait_ms: 0.0,
        });
        saved(dir.path(), &mut state);
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains(r#"["cls",1.5]"#), "loss parts keep their pair form: {text}");
        assert!(!text.contains("bad_images"), "empty lists are not written: {text}");
        let back = load_state(dir.path()).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.detector_config(dir.path()).unwrap(), det);
        assert_eq!(back.arch_or(dir.path(), None).unwrap(), "0,1");
        assert_eq!(back.arch_or(dir.path(), Some("2")).unwrap(), "2");
    }

    #[test]
    fn hash_ignores_run_length_only() {
        let a = serde_json::json!({ "seed": 1, "iterations": 5, "log_every": 1 });
        let b = serde_json::json!({ "seed": 1, "iterations": 9, "checkpoint_every": 3 });
        let c = serde_json::json!({ "seed": 2, "iterations": 5 });
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_ne!(config_hash(&a), config_hash(&c));
    }

    #[test]
    fn bad_states_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_state(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
        std::fs::write(dir.path().join(STATE_FILE), b"{\"format\": 1}").unwrap();
        let err = load_state(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("not a detnas checkpoint"), "{err}");
        let mut state = CheckpointState::new(CheckpointKind::Classifier, "detnas-300m", None, &serde_json::json!({}));
        saved(dir.path(), &mut state);
        let err = state.detector_config(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("classifier"), "{err}");
        assert!(state.arch_or(dir.path(), None).unwrap_err().to_string().contains("--arch"));
        let mut escaping = state.clone();
        escaping.optimizer = "../other-run/optimizer-0000003.safetensors".into();
        std::fs::write(dir.path().join(STATE_FILE), serde_json::to_vec(&escaping).unwrap()).unwrap();
        let err = load_state(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a file of the checkpoint folder"), "{err}");
        std::fs::write(dir.path().join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
        std::fs::remove_file(dir.path().join(&state.weights)).unwrap();
        let err = load_state(dir.path()).unwrap_err().to_string();
        assert!(err.contains("weights-0000003"), "{err}");
        state.format = 7;
        std::fs::write(dir.path().join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
        assert!(load_state(dir.path()).unwrap_err().to_string().contains("format 7"));
    }
}

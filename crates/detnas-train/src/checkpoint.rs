//! Checkpoints: `weights-<step>.safetensors` (every network tensor, names from the plan),
//! `optimizer-<step>.safetensors` (momentum buffers) and `state.json` (step, configuration, its hash,
//! history). Each file is written to a temporary name, fsynced and renamed; `state.json` is written
//! last and names the weight files, so a crash at any moment leaves the previous checkpoint intact.
//! Non-finite weights are never saved.

use crate::error::{Result, TrainError};
use crate::optim::PathSgd;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Tensor, nn};

/// Version of the checkpoint layout.
pub const FORMAT: u32 = 1;

/// One line of the training log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub step: usize,
    pub loss: f64,
    pub parts: Vec<(String, f64)>,
    pub lr: f64,
    pub images_per_s: f64,
    pub data_wait_ms: f64,
}

/// The JSON part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    pub format: u32,
    /// `retinanet` or `classifier`.
    pub kind: String,
    pub space: String,
    /// The trained path, or `None` for a supernet (every choice).
    pub arch: Option<String>,
    /// The full training configuration (TOML-equivalent JSON) and its hash.
    pub config: serde_json::Value,
    pub config_hash: String,
    /// Completed optimisation steps.
    pub step: usize,
    pub weights: String,
    pub optimizer: String,
    pub skipped_steps: usize,
    pub history: Vec<LogEntry>,
    pub producer: String,
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
    format!("{:016x}", detnas_core::evolution::fnv1a64(v.to_string().as_bytes()))
}

impl CheckpointState {
    /// The state of a new run of `kind` (`retinanet`, `classifier`) with configuration `config`.
    pub fn new(kind: &str, space: &str, arch: Option<String>, config: &impl Serialize) -> Self {
        let config = serde_json::to_value(config).expect("config serializes");
        CheckpointState {
            format: FORMAT,
            kind: kind.into(),
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
        }
    }
}

/// Continues `state` from the checkpoint in `dir`, if there is one: loads weights and optimizer
/// buffers and takes over step, skipped steps and history. A checkpoint of another configuration is
/// refused. Returns whether a checkpoint was resumed.
pub fn resume(dir: &Path, vs: &mut nn::VarStore, opt: &mut PathSgd, state: &mut CheckpointState) -> Result<bool> {
    if !dir.join("state.json").exists() {
        return Ok(false);
    }
    let saved = load_state(dir)?;
    if saved.config_hash != state.config_hash {
        return Err(io(
            &dir.join("state.json"),
            format!(
                "was written by a different configuration (hash {}, this run {}); use the original config or a new --out",
                saved.config_hash, state.config_hash
            ),
        ));
    }
    let restored = restore(dir, vs, opt)?;
    state.step = restored.step;
    state.skipped_steps = restored.skipped_steps;
    state.history = restored.history;
    Ok(true)
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

/// Writes named tensors as safetensors atomically.
fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, &tmp).map_err(|e| io(&tmp, e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Fails when any tensor holds NaN or infinity.
pub fn check_finite(named: &[(String, Tensor)]) -> Result<()> {
    for (name, t) in named {
        if t.isfinite().logical_not().any().int64_value(&[]) != 0 {
            return Err(TrainError::NonFinite(format!("tensor `{name}`")));
        }
    }
    Ok(())
}

/// Saves a checkpoint into `dir` (created if needed) and removes older weight files.
pub fn save(dir: &Path, vs: &nn::VarStore, opt: &PathSgd, state: &mut CheckpointState) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    check_finite(&weights)?;
    let mut buffers: Vec<(String, Tensor)> =
        opt.buffers().iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
    buffers.sort_by(|a, b| a.0.cmp(&b.0));
    state.weights = format!("weights-{:07}.safetensors", state.step);
    state.optimizer = format!("optimizer-{:07}.safetensors", state.step);
    write_tensors(&dir.join(&state.weights), &weights)?;
    write_tensors(&dir.join(&state.optimizer), &buffers)?;
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    detnas_core::fsutil::write_atomic(&dir.join("state.json"), &json).map_err(|e| io(dir, e))?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("weights-") || name.starts_with("optimizer-");
            if ours && name != state.weights && name != state.optimizer {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Reads `state.json` of a checkpoint folder.
pub fn load_state(dir: &Path) -> Result<CheckpointState> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let state: CheckpointState =
        serde_json::from_slice(&bytes).map_err(|e| io(&path, format!("not a detnas checkpoint state: {e}")))?;
    if state.format != FORMAT {
        return Err(io(&path, format!("checkpoint format {} is not supported (expected {FORMAT})", state.format)));
    }
    Ok(state)
}

/// Path of the weights of a checkpoint folder.
pub fn weights_path(dir: &Path) -> Result<PathBuf> {
    Ok(dir.join(load_state(dir)?.weights))
}

/// Loads weights and optimizer buffers of the checkpoint in `dir`.
pub fn restore(dir: &Path, vs: &mut nn::VarStore, opt: &mut PathSgd) -> Result<CheckpointState> {
    let state = load_state(dir)?;
    let w = dir.join(&state.weights);
    vs.load(&w).map_err(|e| io(&w, e))?;
    let o = dir.join(&state.optimizer);
    let buffers = Tensor::read_safetensors(&o).map_err(|e| io(&o, e))?;
    let device = vs.device();
    opt.set_buffers(buffers.into_iter().map(|(k, v)| (k, v.to_device(device))).collect::<HashMap<_, _>>());
    Ok(state)
}

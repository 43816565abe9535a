//! Checkpoints: `weights-<step>.safetensors` (every network tensor, names from the plan),
//! `optimizer-<step>.safetensors` (momentum buffers) and `state.json` (step, configuration, its hash,
//! history). Each file is written to a temporary name, fsynced and renamed; `state.json` is written
//! last and names the weight files, so a crash at any moment leaves the previous checkpoint intact.
//! Non-finite weights are never saved. The JSON schema lives in [`detnas_core::checkpoint`]
//! (libtorch-free) and is re-exported here; [`open`] loads a detection checkpoint for use.

pub use detnas_core::checkpoint::{
    CheckpointError, CheckpointKind, CheckpointState, FORMAT, LogEntry, LossPart, config_hash, exists,
};

use crate::config::{DataSource, DetTrainConfig};
use crate::detector::DetectionNet;
use crate::error::{Result, TrainError};
use crate::optim::PathSgd;
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::plan::Paths;
use detnas_core::search::genome::{DetectorGenes, Genome};
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use detnas_data::detection::DetectionDataset;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Tensor, nn};

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
    state.bad_images = restored.bad_images;
    Ok(true)
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

/// Reads and validates `state.json` of a checkpoint folder (see [`detnas_core::checkpoint::load_state`]).
pub fn load_state(dir: &Path) -> Result<CheckpointState> {
    Ok(detnas_core::checkpoint::load_state(dir)?)
}

/// Writes named tensors as safetensors atomically (temporary file of
/// [`detnas_core::fsutil::temp_path`], fsync, rename), listing `path` in its folder's ownership
/// record first (when the folder has one).
pub fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Some(name) = path.file_name() {
        detnas_core::owner::note(dir, &[name.to_string_lossy().into_owned()]).map_err(|e| io(dir, e))?;
    }
    let tmp = detnas_core::fsutil::temp_path(dir);
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

/// Saves a checkpoint into `dir` (created if needed) and removes the weight and optimizer files
/// of the checkpoint it replaces (those its `state.json` named; no other file).
pub fn save(dir: &Path, vs: &nn::VarStore, opt: &PathSgd, state: &mut CheckpointState) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let previous = load_state(dir).ok().map(|s| [s.weights, s.optimizer]);
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
    detnas_core::owner::note(dir, &["state.json".into()]).map_err(|e| io(dir, e))?;
    detnas_core::fsutil::write_atomic(&dir.join("state.json"), &json).map_err(|e| io(dir, e))?;
    // Only files of this folder named as checkpoints write them (a hand-edited state may name
    // anything, even another run's weights).
    for name in previous.into_iter().flatten() {
        let bare = Path::new(&name).file_name().is_some_and(|f| f == name.as_str());
        if bare
            && detnas_core::checkpoint::is_checkpoint_file(&name)
            && name != state.weights
            && name != state.optimizer
        {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    Ok(())
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

/// A detection checkpoint opened for use: its state, typed configuration, search space, the path
/// to run, and the network with the saved weights loaded.
pub struct OpenCheckpoint {
    /// The checkpoint folder.
    pub dir: PathBuf,
    /// Its state file's content.
    pub state: CheckpointState,
    /// The training configuration, with the class names and ids of its training data.
    pub config: DetTrainConfig,
    /// The search space it was trained on.
    pub space: SearchSpace,
    /// The path to run: the caller's override, else the trained path; `None` for a supernet
    /// opened without an override.
    pub arch: Option<Arch>,
    /// The detector genes to run: the caller's genome over the trained detector configuration.
    pub genes: DetectorGenes,
    /// Every choice for a supernet, the trained path otherwise.
    pub net: DetectionNet,
    /// The variables of `net`, holding the saved weights.
    pub vs: nn::VarStore,
}

impl OpenCheckpoint {
    /// Whether the checkpoint holds every choice of every layer.
    pub fn is_supernet(&self) -> bool {
        self.state.arch.is_none()
    }

    /// Whether the checkpoint is a genes supernet (elastic FPN and head, `genes` in its config).
    pub fn has_genes(&self) -> bool {
        self.config.genes.is_some()
    }

    /// The detector configuration of the genome to run ([`OpenCheckpoint::genes`] over the
    /// trained configuration).
    pub fn detector(&self) -> DetectorConfig {
        self.genes.apply(&self.config.detector)
    }

    /// The path to run; a supernet opened without one is an error naming the folder.
    pub fn arch(&self) -> Result<&Arch> {
        self.arch.as_ref().ok_or_else(|| io(&self.dir, "is a supernet checkpoint: choose the path with --arch"))
    }

    /// The training set and the held-out set of the run: `val` replaces the configured held-out
    /// data; without either, an error.
    pub fn datasets(&self, val: Option<DataSource>) -> Result<(DetectionDataset, DetectionDataset)> {
        let mut cfg = self.config.clone();
        if val.is_some() {
            cfg.val = val;
        }
        let (train, held_out) = crate::trainer::datasets(&cfg)?;
        let held_out = held_out
            .ok_or_else(|| TrainError::Config(format!("{} has no held-out data: pass --coco", self.dir.display())))?;
        Ok((train, held_out))
    }
}

/// Opens the detection checkpoint in `dir` on `device`: reads and validates `state.json`, parses
/// its configuration, resolves `arch` (a path or a full genome; else the trained path), builds the
/// network (every choice for a supernet, the elastic FPN and head of a genes supernet) and loads
/// the weights. Errors name the file: a missing or invalid state, a classifier checkpoint, weights
/// that do not fit the network, genes the network does not hold (a checkpoint without `genes` only
/// lets the input resolution change).
pub fn open(dir: &Path, arch: Option<&str>, device: tch::Device) -> Result<OpenCheckpoint> {
    let state = load_state(dir)?;
    let path = dir.join(detnas_core::checkpoint::STATE_FILE);
    if state.kind.detector().is_none() {
        return Err(io(&path, format!("is a `{}` checkpoint, not a detector", state.kind)));
    }
    let config: DetTrainConfig = serde_json::from_value(state.config.clone())
        .map_err(|e| io(&path, format!("invalid training configuration: {e}")))?;
    let space = config.search_space()?;
    let resolve = |a: &str| detnas_core::space::arch::resolve(Some(&state.space), a).map(|(_, arch)| arch);
    let trained = state.arch.as_deref().map(resolve).transpose()?;
    let genome = arch.map(|a| Genome::parse(Some(&state.space), a)).transpose()?;
    let trained_genes = DetectorGenes::of(&config.detector);
    let genes = genome.as_ref().map_or(trained_genes, |g| g.genes.over(&config.detector));
    let arch = genome.map(|g| g.arch).or_else(|| trained.clone());
    let same_network = DetectorGenes { input: trained_genes.input, ..genes } == trained_genes;
    if config.genes.is_none() && !same_network {
        return Err(io(
            dir,
            format!(
                "was trained with the fixed detector {trained_genes}: only the input resolution may change (asked for {genes})"
            ),
        ));
    }
    let mut vs = nn::VarStore::new(device);
    let paths = match &trained {
        Some(a) => Paths::Single(a),
        None => Paths::All,
    };
    let mut net = DetectionNet::build(&vs, &space, paths, &config.detector, config.genes.as_ref(), config.seed)?;
    net.backbone_mut().crippled = config.supernet.crippled.clone();
    match &net {
        DetectionNet::Retinanet(r) => r.holds(&genes)?,
        DetectionNet::FasterRcnn(_) if genes != trained_genes => {
            let reason = format!(
                "is a faster-rcnn trained at {trained_genes}: it runs with those genes only (asked for {genes})"
            );
            return Err(io(dir, reason));
        }
        DetectionNet::FasterRcnn(_) => {}
    }
    genes.apply(&config.detector).validate()?;
    let weights = dir.join(&state.weights);
    vs.load(&weights).map_err(|e| io(&weights, e))?;
    Ok(OpenCheckpoint { dir: dir.to_path_buf(), state, config, space, arch, genes, net, vs })
}

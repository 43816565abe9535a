//! DetNAS step 1: classification pretraining of the supernet on an image folder, with a random path
//! per step (uniform, or SPOS FLOPs bins), label smoothing, linear-decay learning rate, weight decay
//! on weights only, random-resized-crop + flip augmentation. The backbone tensors keep the plan's
//! names, so a detection run loads them with `init = ".../weights-N.safetensors"`.

use crate::checkpoint::{self, CheckpointState, LogEntry};
use crate::data::{batch_indices, step_seed};
use crate::error::{Result, TrainError};
use crate::net::Classifier;
use crate::optim::{LrSchedule, PathSgd, clip_grad_norm};
use detnas_core::contract::seeds;
use detnas_core::cost::{Convention, FlopsTable};
use detnas_core::detector::Preprocess;
use detnas_core::plan::Paths;
use detnas_core::rng::Rng;
use detnas_core::sample::{FlopsBinnedSampler, uniform};
use detnas_core::{InputSize, SearchSpace};
use detnas_data::folder::ImageFolder;
use detnas_data::image_io::{DecodeLimits, load_image};
use detnas_data::preprocess::resize_rgb;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// How each step's path is drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PathSampler {
    Uniform,
    /// One architecture (stand-alone retraining of a found path).
    Fixed {
        arch: String,
    },
    /// SPOS: a uniformly chosen FLOPs bin (classifier convention at 224x224), then rejection sampling.
    FlopsBinned {
        bins: usize,
    },
}

/// Classification pretraining settings (defaults: the authors', scaled by the caller).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClsTrainConfig {
    pub space: String,
    /// Image folder: one sub-folder per class.
    pub data: Option<PathBuf>,
    /// Square input side.
    pub input: u32,
    pub batch_size: usize,
    pub iterations: usize,
    pub lr: LrSchedule,
    pub momentum: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub sampler: PathSampler,
    /// Smallest crop area fraction of RandomResizedCrop.
    pub crop_scale_min: f64,
    /// Clip the global gradient norm (fresh paths of a supernet give very large gradients).
    pub clip_grad_norm: Option<f64>,
    pub seed: u64,
    pub log_every: usize,
    pub checkpoint_every: usize,
}

impl Default for ClsTrainConfig {
    fn default() -> Self {
        ClsTrainConfig {
            space: "detnas-300m".into(),
            data: None,
            input: 224,
            batch_size: 32,
            iterations: 1000,
            lr: LrSchedule::Linear { base: 0.5, total: 1000 },
            momentum: 0.9,
            weight_decay: 4e-5,
            label_smoothing: 0.1,
            sampler: PathSampler::Uniform,
            crop_scale_min: 0.08,
            clip_grad_norm: Some(10.0),
            seed: 0,
            log_every: 20,
            checkpoint_every: 200,
        }
    }
}

impl ClsTrainConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| TrainError::Data { path: path.into(), reason: e.to_string() })?;
        toml::from_str(&text)
            .map_err(|e| TrainError::Data { path: path.into(), reason: format!("invalid config: {e}") })
    }
}

/// RandomResizedCrop (area fraction in `[scale_min, 1]`, aspect ratio in `[3/4, 4/3]`, 10 tries, then
/// the central square) to `side x side`, random horizontal flip, normalised CHW planes.
fn augment(img: &image::RgbImage, side: u32, scale_min: f64, rng: &mut Rng, pre: &Preprocess) -> Vec<f32> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let mut crop = None;
    for _ in 0..10 {
        let area = w * h * (scale_min + (1.0 - scale_min) * rng.unit());
        let log_r = (3.0f64 / 4.0).ln() + rng.unit() * ((4.0f64 / 3.0).ln() - (3.0f64 / 4.0).ln());
        let r = log_r.exp();
        let (cw, ch) = ((area * r).sqrt().round(), (area / r).sqrt().round());
        if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
            let x = (rng.unit() * (w - cw + 1.0)).floor();
            let y = (rng.unit() * (h - ch + 1.0)).floor();
            crop = Some((x as u32, y as u32, cw as u32, ch as u32));
            break;
        }
    }
    let (x, y, cw, ch) = crop.unwrap_or_else(|| {
        let s = w.min(h) as u32;
        ((img.width() - s) / 2, (img.height() - s) / 2, s, s)
    });
    let cropped = image::imageops::crop_imm(img, x, y, cw, ch).to_image();
    let resized = resize_rgb(&cropped, side, side);
    let flip = rng.below(2) == 1;
    let n = (side * side) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in resized.buffer().chunks_exact(3).enumerate() {
        let (row, col) = (i / side as usize, i % side as usize);
        let col = if flip { side as usize - 1 - col } else { col };
        for c in 0..3 {
            out[c * n + row * side as usize + col] = (px[c] as f32 / 255.0 - pre.mean[c]) / pre.std[c];
        }
    }
    out
}

/// Trains the classification supernet; checkpoints into `out` (kind `classifier`).
pub fn train_classifier(
    cfg: &ClsTrainConfig,
    out: &Path,
    resume: bool,
    device: Device,
    on_log: &mut dyn FnMut(&LogEntry),
) -> Result<CheckpointState> {
    let root = cfg.data.as_ref().ok_or_else(|| TrainError::Config("`data` (an image folder) is required".into()))?;
    let folder = ImageFolder::open(root).map_err(|e| TrainError::Data { path: root.clone(), reason: e.to_string() })?;
    let space = SearchSpace::by_name(&cfg.space)?;
    let mut vs = nn::VarStore::new(device);
    let net = Classifier::new(&vs, &space, Paths::All, folder.class_names.len(), cfg.seed);
    let mut opt = PathSgd::new(cfg.momentum, cfg.weight_decay, false);
    let mut state = CheckpointState::new("classifier", &space.name, None, cfg);
    if resume {
        checkpoint::resume(out, &mut vs, &mut opt, &mut state)?;
    }
    let binned = match &cfg.sampler {
        PathSampler::FlopsBinned { bins } => Some(FlopsBinnedSampler::new(
            FlopsTable::new(&space, InputSize::IMAGENET)?,
            Convention::Classifier,
            *bins,
            None,
        )?),
        _ => None,
    };
    let fixed = match &cfg.sampler {
        PathSampler::Fixed { arch } => Some(detnas_core::arch::resolve(Some(&cfg.space), arch)?.1),
        _ => None,
    };
    let pre = Preprocess::default();
    let side = cfg.input as i64;
    let classes = folder.class_names.len() as i64;
    let mut window = (Instant::now(), 0.0f64, 0usize);
    while state.step < cfg.iterations {
        let step = state.step;
        let mut rng = Rng::seed(step_seed(cfg.seed, seeds::CLASSIFY_AUGMENT, step as u64));
        let mut flat = Vec::with_capacity(cfg.batch_size * 3 * (side * side) as usize);
        let mut labels = Vec::with_capacity(cfg.batch_size);
        for i in batch_indices(folder.samples.len(), cfg.batch_size, cfg.seed, step) {
            let (path, label) = &folder.samples[i];
            let img = load_image(path, &DecodeLimits::default())
                .map_err(|e| TrainError::Data { path: path.clone(), reason: e.to_string() })?;
            flat.extend(augment(&img.rgb, cfg.input, cfg.crop_scale_min, &mut rng, &pre));
            labels.push(*label as i64);
        }
        let mut path_rng = Rng::seed(step_seed(cfg.seed, seeds::PATH_SAMPLING, step as u64));
        let arch = match (&fixed, &binned) {
            (Some(a), _) => a.clone(),
            (None, Some(s)) => s.sample(&space, &mut path_rng).unwrap_or_else(|_| uniform(&space, &mut path_rng)),
            (None, None) => uniform(&space, &mut path_rng),
        };
        let x = Tensor::from_slice(&flat).view([labels.len() as i64, 3, side, side]).to_device(device);
        let y = Tensor::from_slice(&labels).to_device(device);
        let params = net.path_parameters(&arch)?;
        PathSgd::zero_grad(&params);
        let logits = net.forward(&x, &arch, true)?;
        let logp = logits.log_softmax(-1, Kind::Float);
        let nll = -logp.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
        let smooth = -logp.mean_dim([1i64].as_slice(), false, Kind::Float);
        let eps = cfg.label_smoothing;
        let loss = (nll * (1.0 - eps) + smooth * eps).mean(Kind::Float);
        let value = loss.double_value(&[]);
        state.step = step + 1;
        if !value.is_finite() {
            state.skipped_steps += 1;
            continue;
        }
        loss.backward();
        if let Some(max) = cfg.clip_grad_norm {
            clip_grad_norm(&params, max);
        }
        let lr = cfg.lr.at(step);
        opt.step(&params, lr);
        window.1 += value;
        window.2 += labels.len();
        if state.step.is_multiple_of(cfg.log_every.max(1)) || state.step == cfg.iterations {
            let n = ((state.step - 1) % cfg.log_every.max(1) + 1) as f64;
            let e = LogEntry {
                step: state.step,
                loss: window.1 / n,
                parts: vec![("classes".into(), classes as f64)],
                lr,
                images_per_s: window.2 as f64 / window.0.elapsed().as_secs_f64().max(1e-9),
                data_wait_ms: 0.0,
            };
            on_log(&e);
            state.history.push(e);
            window = (Instant::now(), 0.0, 0);
        }
        if state.step.is_multiple_of(cfg.checkpoint_every.max(1)) || state.step == cfg.iterations {
            checkpoint::save(out, &vs, &opt, &mut state)?;
        }
    }
    if state.weights.is_empty() {
        checkpoint::save(out, &vs, &opt, &mut state)?;
    }
    Ok(state)
}

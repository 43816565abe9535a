//! DetNAS step 1: classification pretraining of the supernet on an image folder, with a random path
//! per step (uniform, or SPOS FLOPs bins), label smoothing, linear-decay learning rate, weight decay
//! on weights only, random-resized-crop + flip augmentation. The backbone tensors keep the plan's
//! names, so a detection run loads them with `init = ".../weights-N.safetensors"`.

use crate::checkpoint::{CheckpointKind, CheckpointState, LogEntry, LossPart};
use crate::data::{BadImage, batch_indices, step_seed};
use crate::error::{Result, TrainError};
use crate::net::Classifier;
use crate::optim::{LrSchedule, PathSgd};
use crate::run::{Schedule, Start, StepLoop, StepLoss};
use detnas_core::detector::Preprocess;
use detnas_core::detector::contract::seeds;
use detnas_core::detector::plan::Paths;
use detnas_core::rng::Rng;
use detnas_core::space::cost::{Convention, FlopsTable};
use detnas_core::space::sample::{FlopsBinnedSampler, uniform};
use detnas_core::{InputSize, SearchSpace};
use detnas_data::folder::ImageFolder;
use detnas_data::image_io::{DecodeLimits, load_image};
use detnas_data::preprocess::resize_rgb;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::{Device, Kind, Tensor, nn};

/// How each step's path is drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PathSampler {
    /// A uniformly random path per step (SPOS).
    Uniform,
    /// One architecture (stand-alone retraining of a found path).
    Fixed {
        /// The architecture (encoding or preset).
        arch: String,
    },
    /// SPOS: a uniformly chosen FLOPs bin (classifier convention at 224x224), then rejection sampling.
    FlopsBinned {
        /// Number of equal FLOPs bins.
        bins: usize,
    },
}

/// Classification pretraining settings (defaults: the authors', scaled by the caller).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClsTrainConfig {
    /// Search space name.
    pub space: String,
    /// Image folder: one sub-folder per class.
    pub data: Option<PathBuf>,
    /// Square input side.
    pub input: u32,
    /// Images per step.
    pub batch_size: usize,
    /// Optimisation steps.
    pub iterations: usize,
    /// Learning rate schedule.
    pub lr: LrSchedule,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay (not on 1-D tensors).
    pub weight_decay: f64,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// How each step's path is drawn.
    pub sampler: PathSampler,
    /// Smallest crop area fraction of RandomResizedCrop.
    pub crop_scale_min: f64,
    /// Clip the global gradient norm (fresh paths of a supernet give very large gradients).
    pub clip_grad_norm: Option<f64>,
    /// Seed of the data order, augmentation and path sampling.
    pub seed: u64,
    /// Steps between log entries.
    pub log_every: usize,
    /// Steps between checkpoints.
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

/// Trains the classification supernet; checkpoints into `out` (kind `classifier`). `start` says
/// what happens to a checkpoint already in `out` (see [`Start`]). An image that cannot be decoded
/// is left out of its batch and recorded once in the state's `bad_images`; it never stops the run.
pub fn train_classifier(
    cfg: &ClsTrainConfig,
    out: &Path,
    start: Start,
    device: Device,
    on_log: &mut dyn FnMut(&LogEntry),
) -> Result<CheckpointState> {
    start.check(out)?;
    let root = cfg.data.as_ref().ok_or_else(|| TrainError::Config("`data` (an image folder) is required".into()))?;
    let folder = ImageFolder::open(root).map_err(|e| TrainError::Data { path: root.clone(), reason: e.to_string() })?;
    let space = SearchSpace::by_name(&cfg.space)?;
    let mut vs = nn::VarStore::new(device);
    let net = Classifier::new(&vs, &space, Paths::All, folder.class_names.len(), cfg.seed);
    let opt = PathSgd::new(cfg.momentum, cfg.weight_decay, false);
    let state = CheckpointState::new(CheckpointKind::Classifier, &space.name, None, cfg);
    let schedule = Schedule {
        iterations: cfg.iterations,
        log_every: cfg.log_every,
        checkpoint_every: cfg.checkpoint_every,
        lr: cfg.lr.clone(),
        clip_grad_norm: cfg.clip_grad_norm,
        max_bad_steps: None,
    };
    let classes = folder.class_names.len();
    let mut run = StepLoop::start(start, out, &mut vs, opt, state, schedule)?
        .with_fixed_parts(vec![LossPart { name: "classes".into(), value: classes as f64 }]);
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
        PathSampler::Fixed { arch } => Some(detnas_core::space::arch::resolve(Some(&cfg.space), arch)?.1),
        _ => None,
    };
    let side = cfg.input as i64;
    let mut bad = HashSet::new();
    while !run.done() {
        let step = run.next_step();
        let batch = load_batch(cfg, &folder, step, &mut bad);
        for b in &batch.bad_images {
            run.state.note_bad_image(b.to_string());
        }
        let mut path_rng = Rng::seed(step_seed(cfg.seed, seeds::PATH_SAMPLING, step as u64));
        let arch = match (&fixed, &binned) {
            (Some(a), _) => a.clone(),
            (None, Some(s)) => s.sample(&space, &mut path_rng).unwrap_or_else(|_| uniform(&space, &mut path_rng)),
            (None, None) => uniform(&space, &mut path_rng),
        };
        if batch.labels.is_empty() {
            run.skip(step, Duration::ZERO);
            continue;
        }
        let n = batch.labels.len();
        let x = Tensor::from_slice(&batch.pixels).view([n as i64, 3, side, side]).to_device(device);
        let y = Tensor::from_slice(&batch.labels).to_device(device);
        let params = net.path_parameters(&arch)?;
        let entry = run.step(&vs, step, &params, n, Duration::ZERO, || {
            let logits = net.forward(&x, &arch, true)?;
            Ok(StepLoss { total: smoothed_cross_entropy(&logits, &y, cfg.label_smoothing), parts: Vec::new() })
        })?;
        if let Some(e) = entry {
            on_log(&e);
        }
    }
    run.finish(&vs)
}

/// Mean cross-entropy of `logits` `[N, K]` against `labels` `[N]` with label smoothing `eps`.
fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Tensor {
    let logp = logits.log_softmax(-1, Kind::Float);
    let nll = -logp.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    let smooth = -logp.mean_dim([1i64].as_slice(), false, Kind::Float);
    (nll * (1.0 - eps) + smooth * eps).mean(Kind::Float)
}

/// The augmented images of one classification step.
struct ClsBatch {
    /// `[N, 3, side, side]` planes.
    pixels: Vec<f32>,
    labels: Vec<i64>,
    /// Images found undecodable for the first time in this batch.
    bad_images: Vec<BadImage>,
}

/// The batch of `step`: seeded sample indices and augmentation; images in `bad` (indices) or
/// failing to load (added to `bad`) are left out.
fn load_batch(cfg: &ClsTrainConfig, folder: &ImageFolder, step: usize, bad: &mut HashSet<usize>) -> ClsBatch {
    let pre = Preprocess::default();
    let side = cfg.input as usize;
    let mut rng = Rng::seed(step_seed(cfg.seed, seeds::CLASSIFY_AUGMENT, step as u64));
    let mut batch = ClsBatch {
        pixels: Vec::with_capacity(cfg.batch_size * 3 * side * side),
        labels: Vec::with_capacity(cfg.batch_size),
        bad_images: Vec::new(),
    };
    for i in batch_indices(folder.samples.len(), cfg.batch_size, cfg.seed, step) {
        if bad.contains(&i) {
            continue;
        }
        let (path, label) = &folder.samples[i];
        match load_image(path, &DecodeLimits::default()) {
            Ok(img) => {
                batch.pixels.extend(augment(&img.rgb, cfg.input, cfg.crop_scale_min, &mut rng, &pre));
                batch.labels.push(*label as i64);
            }
            Err(e) => {
                bad.insert(i);
                batch.bad_images.push(BadImage { path: path.clone(), error: e.to_string() });
            }
        }
    }
    batch
}

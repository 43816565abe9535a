//! The detection training loop (supernet fine-tuning or stand-alone retraining), evaluation on
//! held-out data with the COCO evaluator of `detnas eval`, and BN recalibration batches.

use crate::checkpoint::{self, CheckpointState, LogEntry};
use crate::config::{DataSource, DetTrainConfig};
use crate::data::{Augment, Loader, prepare, step_seed};
use crate::error::{Result, TrainError};
use crate::loss::{Targets, retinanet_loss};
use crate::modules::BnUpdate;
use crate::net::RetinaNet;
use crate::optim::{PathSgd, clip_grad_norm};
use detnas_core::arch::{Arch, resolve};
use detnas_core::coco::{CocoStats, Detection as CocoDetection, Detections, EvalParams, GroundTruth, evaluate};
use detnas_core::contract::seeds;
use detnas_core::detector::{DetectorConfig, LevelShape, all_anchors, postprocess, pyramid_levels};
use detnas_core::plan::Paths;
use detnas_core::rng::Rng;
use detnas_core::sample::uniform;
use detnas_core::space::SearchSpace;
use detnas_data::detection::{DetectionDataset, ValidationPolicy, ValidationReport, VocOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// Loads a data source.
pub fn load_dataset(src: &DataSource) -> Result<DetectionDataset> {
    let policy = ValidationPolicy::default();
    let ds = match (&src.coco, &src.voc) {
        (Some(json), None) => {
            let dir = src.images.clone().unwrap_or_else(|| json.parent().unwrap_or(Path::new(".")).to_path_buf());
            DetectionDataset::from_coco(json, &dir, &policy)
        }
        (None, Some(root)) => DetectionDataset::from_voc_dir(root, None, &VocOptions::default(), &policy),
        _ => return Err(TrainError::Config("a data source needs exactly one of `coco` or `voc`".into())),
    };
    let ds = ds.map_err(|e| TrainError::Data {
        path: src.coco.clone().or(src.voc.clone()).unwrap_or_default(),
        reason: e.to_string(),
    })?;
    if ds.samples.is_empty() {
        return Err(TrainError::Config("the data set has no usable image".into()));
    }
    Ok(ds)
}

/// What a training run reports while it runs.
pub enum TrainEvent<'a> {
    /// The data sets were loaded: validation reports of the training and held-out sets.
    Data { train: &'a ValidationReport, val: Option<&'a ValidationReport>, train_images: usize, val_images: usize },
    /// One entry per log interval.
    Log(&'a LogEntry),
}

/// Progress callback.
pub type OnLog<'a> = &'a mut dyn FnMut(TrainEvent<'_>);

/// What a training run produced.
pub struct TrainOutcome {
    pub state: CheckpointState,
    pub eval: Option<CocoStats>,
}

/// The train and held-out sets of a configuration.
pub fn datasets(cfg: &DetTrainConfig) -> Result<(DetectionDataset, Option<DetectionDataset>)> {
    let data = cfg.data.as_ref().ok_or_else(|| TrainError::Config("`data` is required".into()))?;
    let full = load_dataset(data)?;
    match &cfg.val {
        Some(v) => Ok((full, Some(load_dataset(v)?))),
        None if cfg.holdout > 0.0 => {
            let (train, val) = full
                .split_holdout(cfg.holdout, cfg.seed)
                .map_err(|e| TrainError::Config(format!("held-out split: {e}")))?;
            Ok((train, Some(val)))
        }
        None => Ok((full, None)),
    }
}

/// Copies the class names and ids of the data into the detector configuration.
fn with_classes(mut det: DetectorConfig, ds: &DetectionDataset) -> DetectorConfig {
    det.class_names = ds.class_names.clone();
    det.category_ids = ds.category_ids.clone();
    det
}

/// Trains a RetinaNet (supernet when `cfg.arch` is absent) and checkpoints into `out`. With
/// `resume`, continues from `out/state.json` exactly (same batches, same paths), refusing a
/// different configuration.
pub fn train_detection(
    cfg: &DetTrainConfig,
    out: &Path,
    resume: bool,
    device: Device,
    on_log: OnLog<'_>,
) -> Result<TrainOutcome> {
    let space = SearchSpace::by_name(&cfg.space)?;
    let fixed: Option<Arch> =
        cfg.arch.as_deref().map(|a| resolve(Some(&cfg.space), a).map(|(_, arch)| arch)).transpose()?;
    let (train, val) = datasets(cfg)?;
    on_log(TrainEvent::Data {
        train: &train.report,
        val: val.as_ref().map(|v| &v.report),
        train_images: train.samples.len(),
        val_images: val.as_ref().map_or(0, |v| v.samples.len()),
    });
    let det = with_classes(cfg.detector.clone(), &train);
    det.validate()?;
    let mut run_cfg = cfg.clone();
    run_cfg.detector = det.clone();

    let mut vs = nn::VarStore::new(device);
    let paths = match &fixed {
        Some(a) => Paths::Single(a),
        None => Paths::All,
    };
    let net = RetinaNet::new(&vs, &space, paths, &det, cfg.seed)?;
    if let Some(init) = &cfg.init {
        load_partial(&mut vs, init)?;
    }
    let mut opt = PathSgd::new(cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.decay_1d);
    let mut state = CheckpointState::new("retinanet", &space.name, fixed.as_ref().map(Arch::to_string), &run_cfg);
    if resume {
        checkpoint::resume(out, &mut vs, &mut opt, &mut state)?;
    }

    let any_arch = fixed.clone().unwrap_or_else(|| Arch::uniform(&space, space.allowed[0]));
    let levels = pyramid_levels(&space, &any_arch, &det)?;
    let anchors = Arc::new(all_anchors(&levels, &det));
    let train = Arc::new(train);
    let mut loader = Loader::spawn(
        Arc::clone(&train),
        det.clone(),
        Arc::clone(&anchors),
        cfg.augment.clone(),
        cfg.batch_size,
        cfg.seed,
        state.step..cfg.iterations,
    );
    let (h, w) = (det.input.height as i64, det.input.width as i64);
    let mut window = (Instant::now(), 0usize, 0.0f64, 0.0f64, 0.0f64, loader.waited);
    let mut bad_in_a_row = 0;
    while let Some(batch) = loader.next_batch() {
        let batch = batch?;
        let step = batch.step;
        let arch = match &fixed {
            Some(a) => a.clone(),
            None => uniform(&space, &mut Rng::seed(step_seed(cfg.seed, seeds::PATH_SAMPLING, step as u64))),
        };
        let images = Tensor::from_slice(&batch.images).view([batch.size as i64, 3, h, w]).to_device(device);
        let targets = Targets::new(&batch.targets, device);
        let params = net.path_parameters(&arch)?;
        PathSgd::zero_grad(&params);
        let (cls, reg) = net.forward(&images, &arch, true)?;
        let (lc, lb) = retinanet_loss(&cls, &reg, &targets);
        let loss = &lc + &lb;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            state.skipped_steps += 1;
            bad_in_a_row += 1;
            if bad_in_a_row >= cfg.max_bad_steps {
                return Err(TrainError::NonFinite(format!(
                    "the loss of {bad_in_a_row} consecutive steps (last: {step})"
                )));
            }
            state.step = step + 1;
            continue;
        }
        bad_in_a_row = 0;
        loss.backward();
        if let Some(max) = cfg.optim.clip_grad_norm {
            clip_grad_norm(&params, max);
        }
        let lr = cfg.optim.lr.at(step);
        opt.step(&params, lr);
        state.step = step + 1;
        window.1 += batch.size;
        window.2 += value;
        window.3 += lc.double_value(&[]);
        window.4 += lb.double_value(&[]);
        let steps_in_window = (state.step - 1) % cfg.log_every.max(1) + 1;
        if state.step.is_multiple_of(cfg.log_every.max(1)) || state.step == cfg.iterations {
            let secs = window.0.elapsed().as_secs_f64();
            let n = steps_in_window as f64;
            let entry = LogEntry {
                step: state.step,
                loss: window.2 / n,
                parts: vec![("cls".into(), window.3 / n), ("box".into(), window.4 / n)],
                lr,
                images_per_s: window.1 as f64 / secs.max(1e-9),
                data_wait_ms: (loader.waited - window.5).as_secs_f64() * 1e3 / n,
            };
            on_log(TrainEvent::Log(&entry));
            state.history.push(entry);
            window = (Instant::now(), 0, 0.0, 0.0, 0.0, loader.waited);
        }
        if state.step.is_multiple_of(cfg.checkpoint_every.max(1)) || state.step == cfg.iterations {
            checkpoint::save(out, &vs, &opt, &mut state)?;
        }
    }
    if state.weights.is_empty() || state.step == cfg.iterations {
        checkpoint::save(out, &vs, &opt, &mut state)?;
    }
    let eval = match (&val, &fixed) {
        (Some(v), Some(a)) => Some(evaluate_dataset(&net, a, v, 4)?.0),
        _ => None,
    };
    Ok(TrainOutcome { state, eval })
}

/// Loads the tensors of `path` that exist in `vs` (by name, same shape); others keep their values.
pub fn load_partial(vs: &mut nn::VarStore, path: &Path) -> Result<usize> {
    let named =
        Tensor::read_safetensors(path).map_err(|e| TrainError::Data { path: path.into(), reason: e.to_string() })?;
    let vars = vs.variables();
    let mut loaded = 0;
    tch::no_grad(|| {
        for (name, t) in named {
            if let Some(v) = vars.get(&name)
                && v.size() == t.size()
            {
                v.shallow_clone().copy_(&t);
                loaded += 1;
            }
        }
    });
    Ok(loaded)
}

/// Detections of `arch` on every image of `ds` (letterboxed, no augmentation), in COCO results
/// form (original pixels, dataset category ids), and the COCO statistics against `ds`.
pub fn evaluate_dataset(
    net: &RetinaNet,
    arch: &Arch,
    ds: &DetectionDataset,
    batch: usize,
) -> Result<(CocoStats, Vec<CocoDetection>)> {
    let det = &net.cfg;
    let levels: Vec<LevelShape> = pyramid_levels(&net.backbone.space, arch, det)?;
    let (h, w) = (det.input.height as i64, det.input.width as i64);
    let device = net.device();
    let mut results = Vec::new();
    for chunk in (0..ds.samples.len()).collect::<Vec<_>>().chunks(batch.max(1)) {
        let prepared: Vec<_> = chunk.iter().map(|&i| prepare(ds, i, det, None)).collect::<Result<_>>()?;
        let flat: Vec<f32> = prepared.iter().flat_map(|p| p.input.iter().copied()).collect();
        let x = Tensor::from_slice(&flat).view([prepared.len() as i64, 3, h, w]).to_device(device);
        let (cls, reg) = tch::no_grad(|| net.forward(&x, arch, false))?;
        let cls: Vec<f32> = Vec::try_from(cls.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        let reg: Vec<f32> = Vec::try_from(reg.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        let per_cls = cls.len() / prepared.len();
        let per_reg = reg.len() / prepared.len();
        for (j, (&i, p)) in chunk.iter().zip(&prepared).enumerate() {
            let dets =
                postprocess(&cls[j * per_cls..(j + 1) * per_cls], &reg[j * per_reg..(j + 1) * per_reg], &levels, det);
            for d in dets {
                let b = p.letterbox.to_source(&d.bbox);
                results.push(CocoDetection {
                    image_id: ds.samples[i].image_id as i64,
                    category_id: det.category_id(d.label) as i64,
                    bbox: [b[0] as f64, b[1] as f64, (b[2] - b[0]) as f64, (b[3] - b[1]) as f64],
                    score: d.score as f64,
                });
            }
        }
    }
    let gt_data = ds.to_coco(Path::new(".")).map_err(|e| TrainError::Config(format!("ground truth: {e}")))?;
    let gt = GroundTruth::new(gt_data).map_err(|e| TrainError::Config(format!("ground truth: {e}")))?;
    let dt = Detections::new(results.clone(), &gt).map_err(|e| TrainError::Config(format!("detections: {e}")))?;
    Ok((evaluate(&gt, &dt, &EvalParams::default()), results))
}

/// `count` fixed batches for BN recalibration: images of a seeded subset, augmented like training.
pub fn recalibration_batches(
    ds: &DetectionDataset,
    det: &DetectorConfig,
    count: usize,
    batch: usize,
    seed: u64,
    device: Device,
) -> Result<Vec<Tensor>> {
    let (h, w) = (det.input.height as i64, det.input.width as i64);
    let aug = Augment::default();
    (0..count)
        .map(|k| {
            let mut rng = Rng::seed(step_seed(seed, seeds::RECALIBRATION_AUGMENT, k as u64));
            let mut flat = Vec::new();
            for i in crate::data::batch_indices(ds.samples.len(), batch, seed ^ seeds::RECALIBRATION_ORDER_SALT, k) {
                flat.extend(prepare(ds, i, det, Some((&aug, &mut rng)))?.input);
            }
            Ok(Tensor::from_slice(&flat).view([batch as i64, 3, h, w]).to_device(device))
        })
        .collect()
}

/// Recalibrates `arch`'s BNs on `batches` and returns its held-out statistics: the fitness of the
/// evolutionary search.
pub fn score_candidate(
    net: &RetinaNet,
    arch: &Arch,
    batches: &[Tensor],
    val: &DetectionDataset,
    update: BnUpdate,
) -> Result<CocoStats> {
    crate::recal::recalibrate_retinanet(net, arch, batches, update)?;
    Ok(evaluate_dataset(net, arch, val, 4)?.0)
}

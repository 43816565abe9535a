//! The detection training loop (supernet fine-tuning or stand-alone retraining), evaluation on
//! held-out data with the COCO evaluator of `detnas eval`, and BN recalibration batches.

use crate::checkpoint::{CheckpointKind, CheckpointState, LogEntry};
use crate::config::{DataSource, DetTrainConfig, Sampling};
use crate::data::{Augment, BadImage, Loader, prepare, step_seed};
use crate::detector::DetectionNet;
use crate::error::{Result, TrainError};
use crate::genes::{fair_step_archs, geometry, resolve_genome, sandwich_genes, step_arch, step_genes};
use crate::modules::BnUpdate;
use crate::optim::{PathParam, PathSgd};
use crate::run::{Schedule, Start, StepLoop, StepLoss};
use detnas_core::coco::{CocoStats, Detection as CocoDetection, Detections, EvalParams, GroundTruth, evaluate};
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::contract::seeds;
use detnas_core::detector::plan::Paths;
use detnas_core::rng::Rng;
use detnas_core::search::genome::DetectorGenes;
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use detnas_data::detection::{DetectionDataset, ValidationPolicy, ValidationReport, VocOptions};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Tensor, nn};

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
    Data {
        /// Report of the training set.
        train: &'a ValidationReport,
        /// Report of the held-out set, if any.
        val: Option<&'a ValidationReport>,
        /// Usable training images.
        train_images: usize,
        /// Usable held-out images (0 without).
        val_images: usize,
    },
    /// One entry per log interval.
    Log(&'a LogEntry),
    /// A training image could not be decoded and was skipped (reported once per image).
    BadImage(&'a BadImage),
}

/// Progress callback.
pub type OnLog<'a> = &'a mut dyn FnMut(TrainEvent<'_>);

/// What a training run produced.
pub struct TrainOutcome {
    /// The final checkpoint state.
    pub state: CheckpointState,
    /// Evaluation on the held-out data (single-path runs with held-out data only).
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

/// Checks the augmentation and that `cfg` does not both fix an architecture and sample genes,
/// then loads the train and held-out sets ([`datasets`]) and reports them to `on_log`.
fn training_data(cfg: &DetTrainConfig, on_log: OnLog<'_>) -> Result<(DetectionDataset, Option<DetectionDataset>)> {
    cfg.augment.validate()?;
    if cfg.arch.is_some() && cfg.genes.is_some() {
        return Err(TrainError::Config(
            "`genes` is sampled by the supernet: remove `arch` (or `[genes]` to train one genome)".into(),
        ));
    }
    let (train, val) = datasets(cfg)?;
    on_log(TrainEvent::Data {
        train: &train.report,
        val: val.as_ref().map(|v| &v.report),
        train_images: train.samples.len(),
        val_images: val.as_ref().map_or(0, |v| v.samples.len()),
    });
    Ok((train, val))
}

/// The trained architecture (from the genome in `cfg.arch`; `None` trains the supernet) and the
/// validated detector configuration, with the classes of `train` and the genome's detector genes.
fn training_detector(cfg: &DetTrainConfig, train: &DetectionDataset) -> Result<(Option<Arch>, DetectorConfig)> {
    let base = with_classes(cfg.detector.clone(), train);
    let (fixed, det) = match cfg.arch.as_deref() {
        Some(text) => {
            let (arch, det) = resolve_genome(&cfg.space, text, &base)?;
            (Some(arch), det)
        }
        None => (None, base),
    };
    det.validate()?;
    Ok((fixed, det))
}

/// Trains a RetinaNet (supernet when `cfg.arch` is absent) and checkpoints into `out`. A genome
/// in `cfg.arch` sets the detector genes of the trained network; `cfg.genes` makes a genes
/// supernet, whose every step samples detector genes too (letterbox size and anchors of the
/// sampled input; only the sampled FPN / head blocks updated). `start`
/// says what happens to a checkpoint already in `out`: refused ([`Start::Fresh`]), continued
/// exactly with the same batches and paths ([`Start::Resume`], a different configuration is
/// refused) or replaced ([`Start::Overwrite`]). A training image that cannot be decoded is skipped
/// and recorded in the state's `bad_images` ([`TrainEvent::BadImage`]); it never stops the run.
pub fn train_detection(
    cfg: &DetTrainConfig,
    out: &Path,
    start: Start,
    device: Device,
    on_log: OnLog<'_>,
) -> Result<TrainOutcome> {
    start.check(out)?;
    let space = cfg.search_space()?;
    let (train, val) = training_data(cfg, on_log)?;
    let (fixed, det) = training_detector(cfg, &train)?;
    let mut run_cfg = cfg.clone();
    run_cfg.detector = det.clone();

    let mut vs = nn::VarStore::new(device);
    let paths = match &fixed {
        Some(a) => Paths::Single(a),
        None => Paths::All,
    };
    let mut net = DetectionNet::build(&vs, &space, paths, &det, cfg.genes.as_ref(), cfg.seed)?;
    net.backbone_mut().crippled = cfg.supernet.crippled.clone();
    if let Some(init) = &cfg.init {
        load_partial(&mut vs, init)?;
    }
    let opt = PathSgd::new(cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.decay_1d);
    let state = CheckpointState::new(
        CheckpointKind::of_detector(run_cfg.detector.kind()),
        &space.name,
        fixed.as_ref().map(Arch::to_string),
        &run_cfg,
    );
    let mut run = StepLoop::start(start, out, &mut vs, opt, state, schedule(cfg))?;

    let mut loader = Loader::spawn(
        Arc::new(train),
        geometry(&space, &det, cfg.genes.as_ref(), cfg.seed)?,
        cfg.augment.clone(),
        cfg.batch_size,
        cfg.seed,
        run.next_step()..cfg.iterations,
    );
    while let Some((batch, waited)) = loader.next_batch() {
        for bad in &batch.bad_images {
            on_log(TrainEvent::BadImage(bad));
            run.state.note_bad_image(bad.to_string());
        }
        let step = batch.step;
        if batch.size == 0 {
            run.skip(step, waited);
            continue;
        }
        let archs = step_paths(cfg, &space, fixed.as_ref(), step);
        let genes = match &cfg.genes {
            Some(g) => step_genes(g, cfg.seed, step),
            None => net.default_genes(),
        };
        let (h, w) = (batch.input.height as i64, batch.input.width as i64);
        let images = Tensor::from_slice(&batch.images).view([batch.size as i64, 3, h, w]).to_device(device);
        // the sandwich rule: the largest genome teaches, the smallest and the sampled one learn
        let sandwich = match (&cfg.genes, cfg.supernet.sandwich) {
            (Some(space), true) => {
                let (largest, smallest) = sandwich_genes(space, genes.input);
                Some((largest, vec![smallest, genes]))
            }
            _ => None,
        };
        let trained: Vec<(&Arch, &DetectorGenes)> = match &sandwich {
            Some((largest, students)) => std::iter::once(largest).chain(students).map(|g| (&archs[0], g)).collect(),
            None => archs.iter().map(|a| (a, &genes)).collect(),
        };
        let params = trained_parameters(cfg, &net, &trained)?;
        let entry = run.step(&vs, step, &params, batch.size, waited, || match &sandwich {
            Some((largest, students)) => net.sandwich_loss(&images, &archs[0], (largest, students), &batch.targets),
            None => {
                accumulated_loss(&archs, |arch| net.step_loss(&images, arch, &genes, &batch.targets, step, cfg.seed))
            }
        })?;
        if let Some(e) = entry {
            on_log(TrainEvent::Log(&e));
        }
    }
    let state = run.finish(&vs)?;
    let eval = match (&val, &fixed) {
        (Some(v), Some(a)) => Some(evaluate_dataset(&net, a, v, 4)?.0),
        _ => None,
    };
    Ok(TrainOutcome { state, eval })
}

/// The paths step `step` trains: the fixed one, or the supernet's sample (one uniform path, or
/// one path per choice under strict fairness).
fn step_paths(cfg: &DetTrainConfig, space: &SearchSpace, fixed: Option<&Arch>, step: usize) -> Vec<Arch> {
    match (fixed, cfg.supernet.sampling) {
        (Some(a), _) => vec![a.clone()],
        (None, Sampling::Uniform) => vec![step_arch(space, cfg.seed, step)],
        (None, Sampling::Fair) => fair_step_archs(space, cfg.seed, step),
    }
}

/// The tensors a step on the `(path, genes)` pairs `trained` updates: every pair's (each tensor
/// once), less the choice blocks' BN scale and shift under `[supernet] block_bn_affine = false`.
fn trained_parameters(
    cfg: &DetTrainConfig,
    net: &DetectionNet,
    trained: &[(&Arch, &DetectorGenes)],
) -> Result<Vec<PathParam>> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for (arch, genes) in trained {
        all.extend(net.path_parameters(arch, genes)?.into_iter().filter(|p| seen.insert(p.name.clone())));
    }
    if !cfg.supernet.block_bn_affine {
        // the choice blocks' BN scale and shift are their only 1-dimensional tensors
        all.retain(|p| !(p.name.starts_with("backbone.features.") && p.tensor.dim() == 1));
    }
    Ok(all)
}

/// The mean loss of the paths `archs` on one batch, gradients accumulated: every path but the
/// last is back-propagated here (scaled by 1/m); the returned total carries the last path's graph
/// (the step loop back-propagates it) plus the others' detached values, so its value is the mean.
fn accumulated_loss(archs: &[Arch], mut loss: impl FnMut(&Arch) -> Result<StepLoss>) -> Result<StepLoss> {
    let m = archs.len() as f64;
    let (last, rest) = archs.split_last().expect("a step trains at least one path");
    if rest.is_empty() {
        return loss(last);
    }
    let mut done: Option<StepLoss> = None;
    for arch in rest {
        let l = loss(arch)?;
        (&l.total / m).backward();
        done = Some(match done {
            None => StepLoss {
                total: l.total.detach() / m,
                parts: l.parts.iter().map(|(n, t)| (*n, t.detach() / m)).collect(),
            },
            Some(d) => StepLoss {
                total: d.total + l.total.detach() / m,
                parts: d.parts.iter().zip(&l.parts).map(|((n, a), (_, b))| (*n, a + b.detach() / m)).collect(),
            },
        });
    }
    let l = loss(last)?;
    let d = done.expect("at least one earlier path");
    Ok(StepLoss {
        total: d.total + &l.total / m,
        parts: d.parts.iter().zip(&l.parts).map(|((n, a), (_, b))| (*n, a + b.detach() / m)).collect(),
    })
}

/// The step-loop settings of a detection configuration.
fn schedule(cfg: &DetTrainConfig) -> Schedule {
    Schedule {
        iterations: cfg.iterations,
        log_every: cfg.log_every,
        checkpoint_every: cfg.checkpoint_every,
        lr: cfg.optim.lr.clone(),
        clip_grad_norm: cfg.optim.clip_grad_norm,
        max_bad_steps: Some(cfg.max_bad_steps),
    }
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
/// form (original pixels, dataset category ids), and the COCO statistics against `ds`. An image
/// that cannot be decoded is left out of both the detections and the ground truth.
pub fn evaluate_dataset(
    net: &DetectionNet,
    arch: &Arch,
    ds: &DetectionDataset,
    batch: usize,
) -> Result<(CocoStats, Vec<CocoDetection>)> {
    evaluate_genome_dataset(net, arch, &net.default_genes(), ds, batch)
}

/// [`evaluate_dataset`] for the sub-network `genes` of `net`: images letterboxed to the genes'
/// input, anchors and post-processing of that input.
pub fn evaluate_genome_dataset(
    net: &DetectionNet,
    arch: &Arch,
    genes: &DetectorGenes,
    ds: &DetectionDataset,
    batch: usize,
) -> Result<(CocoStats, Vec<CocoDetection>)> {
    let det = &genes.apply(net.cfg());
    let (h, w) = (genes.input.height as i64, genes.input.width as i64);
    let mut results = Vec::new();
    let mut unreadable = Vec::new();
    for chunk in (0..ds.samples.len()).collect::<Vec<_>>().chunks(batch.max(1)) {
        let mut prepared = Vec::with_capacity(chunk.len());
        for &i in chunk {
            match prepare(ds, i, det, None) {
                Ok(p) => prepared.push((i, p)),
                Err(_) => unreadable.push(ds.samples[i].image_id),
            }
        }
        if prepared.is_empty() {
            continue;
        }
        let flat: Vec<f32> = prepared.iter().flat_map(|(_, p)| p.input.iter().copied()).collect();
        let x = Tensor::from_slice(&flat).view([prepared.len() as i64, 3, h, w]).to_device(net.device());
        for ((i, p), dets) in prepared.iter().zip(net.detect(&x, arch, genes)?) {
            for d in dets {
                let b = p.letterbox.to_source(&d.bbox);
                results.push(CocoDetection {
                    image_id: ds.samples[*i].image_id as i64,
                    category_id: det.category_id(d.label) as i64,
                    bbox: [b[0] as f64, b[1] as f64, (b[2] - b[0]) as f64, (b[3] - b[1]) as f64],
                    score: d.score as f64,
                });
            }
        }
    }
    let readable;
    let ds = if unreadable.is_empty() {
        ds
    } else {
        let mut kept = ds.clone();
        kept.samples.retain(|s| !unreadable.contains(&s.image_id));
        readable = kept;
        &readable
    };
    let gt_data = ds.to_coco(Path::new(".")).map_err(|e| TrainError::Config(format!("ground truth: {e}")))?;
    let gt = GroundTruth::new(gt_data).map_err(|e| TrainError::Config(format!("ground truth: {e}")))?;
    let dt = Detections::new(results.clone(), &gt).map_err(|e| TrainError::Config(format!("detections: {e}")))?;
    Ok((evaluate(&gt, &dt, &EvalParams::default()), results))
}

/// `count` fixed batches for BN recalibration: images of a seeded subset, augmented like training.
/// Images that cannot be decoded are left out (a batch of none is dropped).
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
    let mut batches = Vec::with_capacity(count);
    for k in 0..count {
        let mut rng = Rng::seed(step_seed(seed, seeds::RECALIBRATION_AUGMENT, k as u64));
        let mut flat = Vec::new();
        let mut n = 0i64;
        for i in crate::data::batch_indices(ds.samples.len(), batch, seed ^ seeds::RECALIBRATION_ORDER_SALT, k) {
            if let Ok(p) = prepare(ds, i, det, Some((&aug, &mut rng))) {
                flat.extend(p.input);
                n += 1;
            }
        }
        if n > 0 {
            batches.push(Tensor::from_slice(&flat).view([n, 3, h, w]).to_device(device));
        }
    }
    Ok(batches)
}

/// Recalibrates `arch`'s BNs on `batches` and returns its held-out statistics: the fitness of the
/// evolutionary search.
pub fn score_candidate(
    net: &DetectionNet,
    arch: &Arch,
    batches: &[Tensor],
    val: &DetectionDataset,
    update: BnUpdate,
) -> Result<CocoStats> {
    crate::recal::recalibrate_genome(net, arch, &net.default_genes(), batches, update)?;
    Ok(evaluate_dataset(net, arch, val, 4)?.0)
}

/// [`score_candidate`] for a genome: recalibrates on `batches` (letterboxed to `genes.input`, see
/// [`recalibration_batches`]) with the sub-network `genes`, then scores it at that input.
pub fn score_genome(
    net: &DetectionNet,
    arch: &Arch,
    genes: &DetectorGenes,
    batches: &[Tensor],
    val: &DetectionDataset,
    update: BnUpdate,
) -> Result<CocoStats> {
    crate::recal::recalibrate_genome(net, arch, genes, batches, update)?;
    Ok(evaluate_genome_dataset(net, arch, genes, val, 4)?.0)
}

/// What [`evaluate_checkpoint`] evaluates on.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// Held-out data replacing the checkpoint's own (its `val`, or its seeded hold-out split).
    pub val: Option<DataSource>,
    /// BN recalibration batches from the training data before scoring (0: none); for supernet
    /// paths, whose BN statistics are shared by every path during training.
    pub recalibrate: usize,
}

/// Statistics and detections of a checkpoint on held-out data.
pub struct Evaluation {
    /// COCO statistics.
    pub stats: CocoStats,
    /// COCO results (original pixels, data set category ids).
    pub detections: Vec<CocoDetection>,
}

/// Evaluates the genome of an opened checkpoint ([`crate::checkpoint::open`]: its path and
/// detector genes) on held-out data with the COCO evaluator at the genome's input, after
/// `recalibrate` BN recalibration batches (exact average, letterboxed to that input) drawn with
/// the run's seed and batch size. The network's BN statistics are changed by recalibration.
pub fn evaluate_checkpoint(ck: &crate::checkpoint::OpenCheckpoint, opts: &EvalOptions) -> Result<Evaluation> {
    let arch = ck.arch()?;
    let (train, val) = ck.datasets(opts.val.clone())?;
    let cfg = &ck.config;
    if opts.recalibrate > 0 {
        let det = ck.detector();
        let batches = recalibration_batches(&train, &det, opts.recalibrate, cfg.batch_size, cfg.seed, ck.vs.device())?;
        crate::recal::recalibrate_genome(&ck.net, arch, &ck.genes, &batches, BnUpdate::Cumulative)?;
    }
    let (stats, detections) = evaluate_genome_dataset(&ck.net, arch, &ck.genes, &val, cfg.batch_size)?;
    Ok(Evaluation { stats, detections })
}

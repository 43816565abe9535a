//! What the study (and `detnas demo`) set up before they measure anything: the schedule, a
//! synthetic data set, a genes supernet, this machine's latency table, random genomes under a
//! budget, and searches; each step a library call recorded as its equivalent `detnas` command.

use crate::pipeline::{Pipeline, Steps};
use crate::{FitnessChoice, LatencyBudget, Metric, SearchOptions};
use anyhow::Result;
use detnas_core::InputSize;
use detnas_core::detector::{DetectorHead, HeadConv};
use detnas_core::fsutil::write_atomic;
use detnas_core::search::evolution::EvolutionConfig;
use detnas_core::search::genome::{GeneSpace, Genome};
use detnas_core::space::ChannelShuffle;
use detnas_data::synthetic::{self, SyntheticSpec};
use detnas_infer::latency::{
    BuildOptions, LatencyTable, Protocol, Runner, base_config, build_table as build_latency_table, protocol::Drift,
    sample_genomes,
};
use detnas_infer::{Device, Precision, TimingPlan};
use detnas_train::config::{DataSource, DetTrainConfig, SupernetSettings};
use detnas_train::data::Augment;
use detnas_train::optim::LrSchedule;
use detnas_train::run::Start;
use detnas_train::{device, trainer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Sizes of one demo or study run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Training images of the synthetic set.
    pub train_images: usize,
    /// Held-out images of the synthetic set.
    pub val_images: usize,
    /// Side of the square synthetic images.
    pub image_size: u32,
    /// Object classes.
    pub classes: usize,
    /// Square input resolutions of the gene space.
    pub inputs: Vec<u64>,
    /// Supernet training iterations.
    pub supernet_iterations: usize,
    /// Stand-alone retraining iterations.
    pub retrain_iterations: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Random genomes whose median sets the budget.
    pub random_genomes: usize,
    /// Search population.
    pub population: usize,
    /// Search generations.
    pub generations: usize,
    /// BN recalibration batches per candidate.
    pub recal_batches: usize,
    /// A shortened run (also a quick latency table).
    pub quick: bool,
    /// The user's training and held-out COCO JSON instead of the synthetic set (images relative
    /// to each JSON's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<[PathBuf; 2]>,
    /// Objects, sizes and clutter of the synthetic set (the study's is harder).
    #[serde(default)]
    pub clutter: Clutter,
    /// How the genes supernet is trained (`[supernet]`: path sampling, sandwich rule, BN affine).
    #[serde(default, skip_serializing_if = "SupernetSettings::is_default")]
    pub supernet: SupernetSettings,
}

/// Object counts, sizes and clutter of a synthetic set ([`SyntheticSpec`]'s by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clutter {
    /// Objects per image, least and most.
    pub objects: (usize, usize),
    /// Object sides in pixels, least and most.
    pub sizes: (u32, u32),
    /// Most unlabelled clutter shapes per image.
    pub distractors: usize,
    /// How much of an earlier object a later one may cover (percent).
    pub occlusion_percent: u32,
}

impl Default for Clutter {
    fn default() -> Self {
        let s = SyntheticSpec::default();
        Clutter {
            objects: (s.min_objects, s.max_objects),
            sizes: (s.min_size, s.max_size),
            distractors: s.distractors,
            occlusion_percent: s.occlusion_percent,
        }
    }
}

impl Schedule {
    /// The demo's schedule (minutes to an hour on 2 cores).
    pub fn full() -> Self {
        Schedule {
            train_images: 96,
            val_images: 32,
            image_size: 128,
            classes: 2,
            inputs: vec![96, 128],
            supernet_iterations: 2000,
            retrain_iterations: 2000,
            batch_size: 4,
            random_genomes: 25,
            population: 12,
            generations: 4,
            recal_batches: 5,
            quick: false,
            data: None,
            clutter: Clutter::default(),
            supernet: SupernetSettings::default(),
        }
    }

    /// A schedule of a minute or two whose numbers mean nothing.
    pub fn quick() -> Self {
        Schedule {
            train_images: 8,
            val_images: 4,
            image_size: 96,
            classes: 2,
            inputs: vec![64, 96],
            supernet_iterations: 20,
            retrain_iterations: 10,
            batch_size: 2,
            random_genomes: 9,
            population: 4,
            generations: 2,
            recal_batches: 2,
            quick: true,
            data: None,
            clutter: Clutter::default(),
            supernet: SupernetSettings::default(),
        }
    }

    /// The detector genes searched: FPN/head widths 24/32/48, 1-2 convs, dense or separable, the schedule's inputs.
    pub fn gene_space(&self) -> GeneSpace {
        GeneSpace {
            fpn_channels: vec![24, 32, 48],
            head_channels: vec![24, 32, 48],
            head_convs: vec![1, 2],
            head_conv: vec![HeadConv::Separable, HeadConv::Dense],
            input: self.inputs.iter().map(|&s| InputSize::new(s, s)).collect(),
        }
    }
}

/// A pipeline with the schedule and seed it runs (the demo's and the study's context).
pub struct Ctx<S> {
    /// The pipeline.
    pub p: Pipeline<S>,
    /// Its sizes.
    pub schedule: Schedule,
    /// Seed of data, training, sampling and searches.
    pub seed: u64,
}

impl<S: Record> Steps for Ctx<S> {
    type Data = S;
    fn pipeline(&mut self) -> &mut Pipeline<S> {
        &mut self.p
    }
}

/// What a pipeline's results must be to be recorded.
pub trait Record: Serialize + serde::de::DeserializeOwned + Default {}
impl<T: Serialize + serde::de::DeserializeOwned + Default> Record for T {}

/// The search space of the demo and the study (the DetNAS 300M backbone space).
pub const SPACE: &str = "detnas-300m";

/// Writes the synthetic training and held-out sets (or checks the user's COCO files exist).
pub fn make_data<S: Record>(d: &mut Ctx<S>) -> Result<()> {
    let s = d.schedule.clone();
    if let Some(files) = &s.data {
        for f in files {
            anyhow::ensure!(f.is_file(), "{}: no such COCO file", f.display());
        }
        return Ok(());
    }
    let c = &s.clutter;
    for (dir, images, seed) in
        [("data/train", s.train_images, d.seed), ("data/val", s.val_images, d.seed.wrapping_add(1))]
    {
        let spec = SyntheticSpec {
            images,
            width: s.image_size,
            height: s.image_size,
            classes: s.classes,
            seed,
            min_objects: c.objects.0,
            max_objects: c.objects.1,
            min_size: c.sizes.0,
            max_size: c.sizes.1,
            distractors: c.distractors,
            occlusion_percent: c.occlusion_percent,
        };
        let out = d.p.path(dir);
        let args: Vec<String> = ["data".to_string(), "synthetic".to_string()]
            .into_iter()
            .chain(synthetic::command_line(&out, &spec))
            .collect();
        // replace: a set left half-written by a killed run is its own to replace.
        d.p.call(&args, || Ok(synthetic::write_set(&out, &spec, true).map(drop)?))?;
    }
    Ok(())
}

/// Base learning rate of every training the demo and the study run (warm-up, then 10x lower at
/// three quarters of the iterations).
pub const BASE_LR: f64 = 0.02;

/// The training configuration of the supernet (`genes`) or of a stand-alone genome.
pub fn train_config<S>(d: &Ctx<S>, genes: bool) -> DetTrainConfig {
    let s = &d.schedule;
    let mut cfg = DetTrainConfig::default();
    let largest = *s.inputs.iter().max().expect("inputs");
    let [train, val] = s
        .data
        .clone()
        .unwrap_or_else(|| [d.p.path("data/train/annotations.json"), d.p.path("data/val/annotations.json")]);
    cfg.data = Some(DataSource { coco: Some(train), images: None, voc: None });
    cfg.val = Some(DataSource { coco: Some(val), images: None, voc: None });
    cfg.detector.input = InputSize::new(largest, largest);
    cfg.detector.class_names = (1..=s.classes).map(|i| format!("shape{i}")).collect();
    if let DetectorHead::Retinanet(r) = &mut cfg.detector.head {
        r.anchor_sizes = vec![8.0, 16.0, 32.0, 64.0, 128.0];
    }
    cfg.batch_size = s.batch_size;
    cfg.iterations = if genes { s.supernet_iterations } else { s.retrain_iterations };
    let milestone = cfg.iterations * 3 / 4;
    cfg.optim.lr = LrSchedule::WarmupStep {
        base: BASE_LR,
        warmup_iters: (cfg.iterations / 10).max(1),
        warmup_factor: 1.0 / 3.0,
        milestones: vec![milestone.max(1)],
        gamma: 0.1,
    };
    cfg.augment = Augment { scale_min: 0.8, ..Augment::default() };
    cfg.seed = d.seed;
    cfg.log_every = (cfg.iterations / 10).max(1);
    cfg.checkpoint_every = (cfg.iterations / 4).max(1);
    if genes {
        let g = s.gene_space();
        cfg.detector.fpn_channels = *g.fpn_channels.iter().max().expect("widths");
        cfg.detector.head_channels = *g.head_channels.iter().max().expect("widths");
        cfg.detector.head_convs = *g.head_convs.iter().max().expect("depths");
        cfg.genes = Some(g);
        cfg.supernet = s.supernet.clone();
    }
    cfg
}

/// Writes `value` as TOML to `path`, atomically.
pub fn write_toml(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomic(path, toml::to_string(value)?.as_bytes())?;
    Ok(())
}

/// Trains (or resumes) the genes supernet into `supernet/`.
pub fn train_supernet<S: Record>(d: &mut Ctx<S>) -> Result<()> {
    let cfg = train_config(d, true);
    write_toml(&d.p.path("supernet.toml"), &cfg)?;
    // Resume: a demo stopped during this step continues its checkpoint exactly, and a folder
    // with no checkpoint yet (stopped before or during the first save) starts afresh.
    train(d, &cfg, ("supernet.toml", "supernet"), Start::Resume, "det-supernet", &["--resume".to_string()])
}

/// Trains `cfg` (written to the file `config`) into the folder `dir` from `start` through the
/// library, recording the equivalent `detnas train SUBCOMMAND --config .. --out .. FLAGS`.
pub fn train<S: Record>(
    d: &mut Ctx<S>,
    cfg: &DetTrainConfig,
    (config, dir): (&str, &str),
    start: Start,
    subcommand: &str,
    flags: &[String],
) -> Result<()> {
    let (config, out) = (d.p.path(config), d.p.path(dir));
    let mut args: Vec<String> = ["train", subcommand, "--config"].map(String::from).to_vec();
    args.extend([config.display().to_string(), "--out".into(), out.display().to_string()]);
    args.extend(flags.iter().cloned());
    d.p.call(&args, || {
        start.check(&out)?;
        trainer::train_detection(cfg, &out, start, device::parse("cpu")?, &mut detnas_train::progress::print_event)?;
        Ok(())
    })
}

/// The detector genes of the search space, as `latency build --genes` and `search --genes` read them.
fn write_genes<S>(d: &Ctx<S>) -> Result<()> {
    write_toml(&d.p.path("genes.toml"), &d.schedule.gene_space())
}

/// Builds this machine's latency table of the gene space into `latency.json`.
pub fn build_table<S: Record>(d: &mut Ctx<S>) -> Result<()> {
    write_genes(d)?;
    let inputs: Vec<String> = d.schedule.inputs.iter().map(|s| format!("{s}x{s}")).collect();
    let (genes, out) = (d.p.path("genes.toml"), d.p.path("latency.json"));
    let mut args: Vec<String> = ["latency", "build", "--input"].map(String::from).to_vec();
    args.extend([inputs.join(","), "--genes".into(), genes.display().to_string()]);
    args.extend(["--classes".into(), d.schedule.classes.to_string(), "--out".into(), out.display().to_string()]);
    // `latency build`'s defaults: 20 calibration genomes, 3 warm-up runs, at least 10 runs and 0.2 s
    let (calibration, timing, repetitions) = if d.schedule.quick {
        let quick =
            ["--calibration", "3", "--warmup", "1", "--min-iters", "3", "--min-seconds", "0", "--repetitions", "1"];
        args.extend(quick.map(String::from));
        (3, TimingPlan { warmup: 1, min_iters: 3, min_seconds: 0.0, ..TimingPlan::default() }, 1)
    } else {
        (20, TimingPlan::default(), Protocol::default().repetitions)
    };
    let opts = BuildOptions {
        space: detnas_core::SearchSpace::by_name(SPACE)?,
        genes: d.schedule.gene_space(),
        classes: d.schedule.classes,
        shuffle: ChannelShuffle::default(),
        runner: Runner {
            device: Device::Cpu,
            threads: None,
            strict: true,
            timing,
            precision: Precision::Fp32,
            remote: None,
            // `latency build`'s default: post-processing at the detection cap
            detections: detnas_onnx::DetectionLoad::Cap,
            layout: detnas_onnx::Layout::Shuffle,
        },
        repetitions,
        drift_tolerance_pct: Drift::TOLERANCE_PCT,
        strict_drift: false,
        calibration,
        calibration_seed: 1,
    };
    d.p.call(&args, || Ok(build_latency_table(&opts, &mut |l| eprintln!("{l}"))?.save(&out)?))
}

/// `count` random genomes of the schedule's space (seeded) with their predicted latency on this
/// machine's table, fastest first.
pub fn random_genomes<S>(d: &Ctx<S>, count: usize, seed: u64) -> Result<Vec<(f64, String)>> {
    let table = LatencyTable::load(&d.p.path("latency.json"))?;
    let space = detnas_core::SearchSpace::by_name(SPACE)?;
    let base = base_config(d.schedule.classes, ChannelShuffle::default());
    let mut predicted = Vec::new();
    for g in sample_genomes(&space, &d.schedule.gene_space(), count, seed) {
        let cfg = g.detector_config(&base)?;
        predicted.push((table.predict(&space, &g.arch, &cfg)?.latency_ms, g.to_string()));
    }
    predicted.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(predicted)
}

/// The latency table's prediction for `genome` on this machine.
pub fn predicted_ms<S>(d: &Ctx<S>, genome: &str) -> Result<f64> {
    let table = LatencyTable::load(&d.p.path("latency.json"))?;
    let g = Genome::parse(Some(SPACE), genome)?;
    let base = base_config(d.schedule.classes, ChannelShuffle::default());
    Ok(table.predict(&g.space, &g.arch, &g.detector_config(&base)?)?.latency_ms)
}

/// `opts` with the latency budget `budget_ms` on this machine's table and an evolution of
/// `population` x `generations` (a third of the population as parents, half as children of each
/// operator), seeded by the demo's or study's seed.
pub fn under_budget<S>(
    d: &Ctx<S>,
    mut opts: SearchOptions,
    budget_ms: f64,
    (population, generations): (usize, usize),
) -> Result<SearchOptions> {
    // The budget holds on the table's prediction; finalists are not re-timed here (`measure`),
    // as sub-millisecond timings on a busy machine would drop them on noise. The retrained
    // models are timed at the end instead.
    let max_ms = format!("{budget_ms:.3}").parse()?;
    let table = d.p.path("latency.json");
    opts.latency = Some(LatencyBudget { table, max_ms, precision: None, measure: false, strict: false, remote: None });
    let (top_k, children) = ((population / 3).max(2), (population / 2).max(1));
    opts.evolution = EvolutionConfig {
        population,
        generations,
        top_k,
        mutations: children,
        crossovers: children,
        seed: d.seed,
        ..EvolutionConfig::default()
    };
    Ok(opts)
}

/// Searches the supernet checkpoint in folder `checkpoint` under `budget_ms` into `dir` with
/// `population` x `generations` and `recal` BN batches (`ema`: moving average); returns the best
/// finalist and its fitness.
pub fn run_search<S: Record>(
    d: &mut Ctx<S>,
    (checkpoint, dir): (&str, &str),
    budget_ms: f64,
    (population, generations): (usize, usize),
    recal: usize,
    ema: bool,
) -> Result<(String, f64)> {
    let opts = SearchOptions::new(d.p.path(checkpoint), d.p.path(dir));
    let mut opts = under_budget(d, opts, budget_ms, (population, generations))?;
    opts.fitness = FitnessChoice::Supernet { metric: Metric::Ap50, recal_batches: recal, ema };
    let selected = d.p.search(&opts)?.selected.finalist;
    Ok((selected.candidate, selected.fitness))
}

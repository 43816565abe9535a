//! `detnas train ...`: supernet fine-tuning, stand-alone RetinaNet training and evaluation (libtorch).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use detnas_core::detector::DetectorKind;
use detnas_train::bench::{StepBench, time_step};
use detnas_train::checkpoint::{self, CheckpointState};
use detnas_train::classify::{ClsTrainConfig, train_classifier};
use detnas_train::config::{DataSource, DetTrainConfig};
use detnas_train::device;
use detnas_train::run::Start;
use detnas_train::trainer::{self, EvalOptions};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// Train a RetinaNet on one architecture (the stand-alone retraining step).
    Retinanet(DetArgs),
    /// Train an FPN Faster R-CNN on one architecture (the config's `[detector]` has
    /// `kind = "faster-rcnn"`; `[detector.rpn]` / `[detector.roi_heads]` tune it).
    FasterRcnn(DetArgs),
    /// Fine-tune the detection supernet (the config's detector family) with a uniform random path
    /// per iteration (DetNAS step 2);
    /// with a `[genes]` section in the config, also uniform detector genes (FPN / head width, head
    /// depth, conv type, input resolution) on an elastic FPN and head.
    DetSupernet(DetArgs),
    /// ImageNet-style classification pretraining of the supernet (DetNAS step 1).
    ClsSupernet(ClsArgs),
    /// Evaluate a checkpoint on held-out data (COCO AP), recalibrating BN for supernet paths.
    Eval(EvalArgs),
    /// Time one optimisation step (forward, loss, backward, SGD) on a fixed synthetic batch; compare
    /// with tools/bench_train_step.py (PyTorch) at the same configuration and thread count.
    BenchStep(BenchStepArgs),
}

#[derive(Args, Debug)]
pub struct BenchStepArgs {
    /// Training configuration (space, arch, detector).
    #[arg(long)]
    config: PathBuf,
    /// Hold every choice of every layer (the supernet) instead of the one path.
    #[arg(long)]
    supernet: bool,
    /// Images per step.
    #[arg(long, default_value_t = 4, value_parser = super::values::batch_size)]
    batch_size: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20, value_parser = super::values::iterations)]
    steps: usize,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 3, value_parser = super::values::warmup)]
    warmup: usize,
    /// libtorch intra-op threads (at most the cores of this machine).
    #[arg(long, default_value_t = 2, value_parser = super::values::Threads)]
    threads: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// What to do with a checkpoint already in --out.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Continue from --out/state.json (same configuration required).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Replace a checkpoint already in --out (removes its state.json, weights-* and optimizer-*
    /// files only) and start over.
    #[arg(long)]
    overwrite: bool,
}

impl StartArgs {
    fn start(&self) -> Start {
        Start::from_flags(self.resume, self.overwrite)
    }
}

#[derive(Args, Debug)]
pub struct DetArgs {
    /// Training configuration (TOML; fields of DetTrainConfig, unknown fields rejected).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Architecture (encoding, preset or full genome such as
    /// `23113213311133203333:fpn96:head96x3:sep:320x320`, whose genes set the detector); overrides
    /// the config.
    #[arg(long, value_parser = super::values::genome)]
    arch: Option<String>,
    /// COCO instances JSON of the training data (overrides the config).
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Image folder of --coco (default: the JSON's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Checkpoint folder (refused if it already holds a checkpoint, unless --resume or --overwrite).
    #[arg(long)]
    out: PathBuf,
    /// Total optimisation steps (overrides the config).
    #[arg(long, value_parser = super::values::iterations)]
    iterations: Option<usize>,
    /// Images per step (overrides the config).
    #[arg(long, value_parser = super::values::batch_size)]
    batch_size: Option<usize>,
    /// Seed of initialisation, data order, augmentation and path sampling (overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Args, Debug)]
pub struct ClsArgs {
    /// Configuration (TOML; fields of ClsTrainConfig).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Image folder (one sub-folder per class); overrides the config.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Checkpoint folder (refused if it already holds a checkpoint, unless --resume or --overwrite).
    #[arg(long)]
    out: PathBuf,
    /// Total optimisation steps (overrides the config).
    #[arg(long, value_parser = super::values::iterations)]
    iterations: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Detection checkpoint folder (`detnas train retinanet` or `det-supernet`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Path or full genome to evaluate (required for a supernet checkpoint); a genes supernet is
    /// evaluated at the genome's input resolution. A checkpoint trained without `[genes]` only
    /// accepts a different input gene.
    #[arg(long, value_parser = super::values::genome)]
    arch: Option<String>,
    /// Held-out COCO JSON (default: the checkpoint's held-out data).
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Image folder of --coco (default: the JSON's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// BN recalibration batches before scoring, letterboxed to the genome's input (0 = none;
    /// default: 20 for a genes supernet, whose BN statistics mix every resolution, else 0).
    #[arg(long, value_parser = super::values::recal_batches_or_none)]
    recalibrate: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the detections (COCO results) here.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Print the statistics as JSON.
    #[arg(long)]
    json: bool,
}

fn det_config(args: &DetArgs, supernet: bool) -> Result<DetTrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => DetTrainConfig::load(p)?,
        None => DetTrainConfig::default(),
    };
    if let Some(a) = &args.arch {
        cfg.arch = Some(a.clone());
    }
    if supernet {
        if cfg.arch.is_some() {
            bail!("det-supernet trains every path: remove `arch` (use `train retinanet` for one architecture)");
        }
    } else if cfg.arch.is_none() {
        bail!("train retinanet needs an architecture: --arch or `arch` in the config");
    }
    if let Some(c) = &args.coco {
        cfg.data = Some(DataSource { coco: Some(c.clone()), images: args.images.clone(), voc: None });
    }
    if let Some(n) = args.iterations {
        cfg.iterations = n;
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    Ok(cfg)
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    match cmd {
        TrainCommand::Retinanet(a) => train_det(a, false, Some(DetectorKind::Retinanet)),
        TrainCommand::FasterRcnn(a) => train_det(a, false, Some(DetectorKind::FasterRcnn)),
        TrainCommand::DetSupernet(a) => train_det(a, true, None),
        TrainCommand::ClsSupernet(a) => train_cls(a),
        TrainCommand::Eval(a) => eval(a),
        TrainCommand::BenchStep(a) => bench_step(a),
    }
}

fn train_det(args: DetArgs, supernet: bool, kind: Option<DetectorKind>) -> Result<()> {
    let cfg = det_config(&args, supernet)?;
    if let Some(kind) = kind.filter(|k| *k != cfg.detector.kind()) {
        let found = cfg.detector.kind();
        bail!(
            "the configuration's [detector] is a {found}, not a {kind}: set `kind = \"{kind}\"` there or use `train {found}`"
        );
    }
    let dev = device::parse(&args.device)?;
    args.start.start().check(&args.out)?;
    eprintln!(
        "training {} on {} ({} iterations, batch {}, {}) -> {}",
        match (&cfg.arch, &cfg.genes) {
            (Some(a), _) => format!("{} {a}", cfg.detector.kind()),
            (None, Some(_)) => "the genes supernet (elastic FPN and head)".to_string(),
            (None, None) => "the supernet".to_string(),
        },
        args.device,
        cfg.iterations,
        cfg.batch_size,
        trained_inputs(&cfg)?,
        args.out.display()
    );
    let outcome =
        trainer::train_detection(&cfg, &args.out, args.start.start(), dev, &mut detnas_train::progress::print_event)?;
    report_skips(&outcome.state);
    if let Some(stats) = outcome.eval {
        println!("held-out evaluation ({} images):", stats.images);
        for line in stats.summary_lines() {
            println!("{line}");
        }
    }
    println!("checkpoint: {} (step {})", args.out.display(), outcome.state.step);
    note_kept(&args.out, args.start.start());
    Ok(())
}

/// The input resolution(s) that actually train: a genome's own (`arch` may set it), the inputs a
/// genes supernet samples, else the configuration's.
fn trained_inputs(cfg: &DetTrainConfig) -> Result<String> {
    Ok(match (&cfg.arch, &cfg.genes) {
        (Some(a), _) => {
            let genome = detnas_core::search::genome::Genome::parse(Some(&cfg.space), a)?;
            format!("input {}", genome.genes.over(&cfg.detector).input)
        }
        (None, Some(g)) => {
            let inputs: Vec<String> = g.input.iter().map(|i| i.to_string()).collect();
            format!("inputs {}", inputs.join(", "))
        }
        (None, None) => format!("input {}", cfg.detector.input),
    })
}

/// After `--overwrite`: says which files of the folder stay because detnas did not write them.
fn note_kept(out: &std::path::Path, start: Start) {
    if start == Start::Overwrite
        && let Some(note) = detnas_core::owner::kept_note(out, &detnas_core::owner::unlisted(out))
    {
        eprintln!("{note}");
    }
}

/// Warnings for skipped steps and images recorded in a checkpoint state.
fn report_skips(state: &CheckpointState) {
    if state.skipped_steps > 0 {
        eprintln!("warning: {} step(s) skipped for a non-finite loss", state.skipped_steps);
    }
    if !state.bad_images.is_empty() {
        eprintln!("warning: {} undecodable training image(s) skipped (listed in state.json)", state.bad_images.len());
    }
}

fn train_cls(args: ClsArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => ClsTrainConfig::load(p)?,
        None => Default::default(),
    };
    if let Some(d) = args.data {
        cfg.data = Some(d);
    }
    if let Some(n) = args.iterations {
        cfg.iterations = n;
    }
    let dev = device::parse(&args.device)?;
    let state = train_classifier(&cfg, &args.out, args.start.start(), dev, &mut |e| {
        eprintln!("step {:>6}  loss {:.4}  lr {:.5}  {:.1} images/s", e.step, e.loss, e.lr, e.images_per_s)
    })?;
    report_skips(&state);
    println!("checkpoint: {} (step {}); use its weights as `init` of a detection run", args.out.display(), state.step);
    note_kept(&args.out, args.start.start());
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    if let Some(p) = &args.results {
        let state = args.checkpoint.join(detnas_core::checkpoint::STATE_FILE);
        super::paths::check_output("--results", p, super::paths::Artefact::Results, &[("the checkpoint's", &state)])?;
    }
    let ck = checkpoint::open(&args.checkpoint, args.arch.as_deref(), device::parse(&args.device)?)?;
    let recalibrate = args.recalibrate.unwrap_or(if ck.has_genes() { 20 } else { 0 });
    let opts = EvalOptions { val: coco_source(args.coco, args.images), recalibrate };
    let evaluation = trainer::evaluate_checkpoint(&ck, &opts)?;
    if let Some(p) = &args.results {
        detnas_core::fsutil::write_atomic(p, serde_json::to_string(&evaluation.detections)?.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation.stats)?);
    } else {
        for line in evaluation.stats.summary_lines() {
            println!("{line}");
        }
    }
    Ok(())
}

/// A COCO data source from `--coco` / `--images`.
pub fn coco_source(coco: Option<PathBuf>, images: Option<PathBuf>) -> Option<DataSource> {
    coco.map(|c| DataSource { coco: Some(c), images, voc: None })
}

fn bench_step(args: BenchStepArgs) -> Result<()> {
    let cfg = DetTrainConfig::load(&args.config)?;
    // At most the cores of this machine (values::Threads), so within an i32.
    detnas_train::tch::set_num_threads(i32::try_from(args.threads).unwrap_or(i32::MAX));
    let opts = StepBench {
        supernet: args.supernet,
        batch_size: args.batch_size,
        steps: args.steps,
        warmup: args.warmup,
        device: device::parse(&args.device)?,
    };
    let timing = time_step(&cfg, &opts)?;
    let mut report = serde_json::to_value(&timing)?;
    report["framework"] = serde_json::json!("detnas (tch 0.24 / libtorch 2.11)");
    report["threads"] = serde_json::json!(args.threads);
    println!("{report}");
    Ok(())
}

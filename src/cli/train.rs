//! `detnas train ...`: supernet fine-tuning, stand-alone RetinaNet training and evaluation (libtorch).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use detnas_core::arch::resolve;
use detnas_core::plan::Paths;
use detnas_train::config::{DataSource, DetTrainConfig};
use detnas_train::modules::BnUpdate;
use detnas_train::net::RetinaNet;
use detnas_train::tch::nn;
use detnas_train::{checkpoint, device, trainer};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// Train a RetinaNet on one architecture (the stand-alone retraining step).
    Retinanet(DetArgs),
    /// Fine-tune the detection supernet with a uniform random path per iteration (DetNAS step 2).
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
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args, Debug)]
pub struct DetArgs {
    /// Training configuration (TOML; fields of DetTrainConfig, unknown fields rejected).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Architecture (encoding or preset); overrides the config.
    #[arg(long)]
    arch: Option<String>,
    /// COCO instances JSON of the training data (overrides the config).
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Image folder of --coco (default: the JSON's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Checkpoint folder.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    iterations: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue from --out/state.json (same configuration required).
    #[arg(long)]
    resume: bool,
}

#[derive(Args, Debug)]
pub struct ClsArgs {
    /// Configuration (TOML; fields of ClsTrainConfig).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Image folder (one sub-folder per class); overrides the config.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    iterations: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    resume: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Path to evaluate (required for a supernet checkpoint).
    #[arg(long)]
    arch: Option<String>,
    /// Held-out COCO JSON (default: the checkpoint's held-out data).
    #[arg(long)]
    coco: Option<PathBuf>,
    #[arg(long)]
    images: Option<PathBuf>,
    /// BN recalibration batches before scoring (supernet paths; 0 = none).
    #[arg(long, default_value_t = 0)]
    recalibrate: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the detections (COCO results) here.
    #[arg(long)]
    results: Option<PathBuf>,
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
        TrainCommand::Retinanet(a) => train_det(a, false),
        TrainCommand::DetSupernet(a) => train_det(a, true),
        TrainCommand::ClsSupernet(a) => train_cls(a),
        TrainCommand::Eval(a) => eval(a),
        TrainCommand::BenchStep(a) => bench_step(a),
    }
}

fn train_det(args: DetArgs, supernet: bool) -> Result<()> {
    let cfg = det_config(&args, supernet)?;
    let dev = device::parse(&args.device)?;
    eprintln!(
        "training {} on {} ({} iterations, batch {}, input {}) -> {}",
        cfg.arch.as_deref().map_or("the supernet".to_string(), |a| format!("RetinaNet {a}")),
        args.device,
        cfg.iterations,
        cfg.batch_size,
        cfg.detector.input,
        args.out.display()
    );
    let outcome = trainer::train_detection(&cfg, &args.out, args.resume, dev, &mut |event| {
        let e = match event {
            trainer::TrainEvent::Data { train, val, train_images, val_images } => {
                eprintln!("data: {train_images} training images, {val_images} held-out images");
                for (what, report) in [("training", Some(train)), ("held-out", val)] {
                    if let Some(r) = report.filter(|r| r.problems() > 0) {
                        eprintln!("{what} data problems ({}):", r.source);
                        for line in r.to_string().lines() {
                            eprintln!("  {line}");
                        }
                    }
                }
                return;
            }
            trainer::TrainEvent::Log(e) => e,
        };
        let parts: Vec<String> = e.parts.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        eprintln!(
            "step {:>6}  loss {:.4} ({})  lr {:.5}  {:.1} images/s  data wait {:.1} ms/step",
            e.step,
            e.loss,
            parts.join(", "),
            e.lr,
            e.images_per_s,
            e.data_wait_ms
        );
    })?;
    if outcome.state.skipped_steps > 0 {
        eprintln!("warning: {} step(s) skipped for a non-finite loss", outcome.state.skipped_steps);
    }
    if let Some(stats) = outcome.eval {
        println!("held-out evaluation ({} images):", stats.images);
        for line in stats.summary_lines() {
            println!("{line}");
        }
    }
    println!("checkpoint: {} (step {})", args.out.display(), outcome.state.step);
    Ok(())
}

fn train_cls(args: ClsArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => detnas_train::classify::ClsTrainConfig::load(p)?,
        None => Default::default(),
    };
    if let Some(d) = args.data {
        cfg.data = Some(d);
    }
    if let Some(n) = args.iterations {
        cfg.iterations = n;
    }
    let dev = device::parse(&args.device)?;
    let state = detnas_train::classify::train_classifier(&cfg, &args.out, args.resume, dev, &mut |e| {
        eprintln!("step {:>6}  loss {:.4}  lr {:.5}  {:.1} images/s", e.step, e.loss, e.lr, e.images_per_s)
    })?;
    println!("checkpoint: {} (step {}); use its weights as `init` of a detection run", args.out.display(), state.step);
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let state = checkpoint::load_state(&args.checkpoint)?;
    let mut cfg: DetTrainConfig =
        serde_json::from_value(state.config.clone()).context("reading the checkpoint's configuration")?;
    let arch_text = args.arch.clone().or(state.arch.clone()).context("a supernet checkpoint needs --arch")?;
    let (space, arch) = resolve(Some(&state.space), &arch_text)?;
    if let Some(c) = &args.coco {
        cfg.val = Some(DataSource { coco: Some(c.clone()), images: args.images.clone(), voc: None });
    }
    let (train, val) = trainer::datasets(&cfg)?;
    let val = val.context("no held-out data: pass --coco")?;
    let dev = device::parse(&args.device)?;
    let mut vs = nn::VarStore::new(dev);
    let paths = if state.arch.is_some() { Paths::Single(&arch) } else { Paths::All };
    let net = RetinaNet::new(&vs, &space, paths, &cfg.detector, cfg.seed)?;
    vs.load(args.checkpoint.join(&state.weights)).context("loading the checkpoint weights")?;
    if args.recalibrate > 0 {
        let batches =
            trainer::recalibration_batches(&train, &cfg.detector, args.recalibrate, cfg.batch_size, cfg.seed, dev)?;
        detnas_train::recal::recalibrate_retinanet(&net, &arch, &batches, BnUpdate::Cumulative)?;
    }
    let (stats, results) = trainer::evaluate_dataset(&net, &arch, &val, cfg.batch_size)?;
    if let Some(p) = &args.results {
        detnas_core::fsutil::write_atomic(p, serde_json::to_string(&results)?.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        for line in stats.summary_lines() {
            println!("{line}");
        }
    }
    Ok(())
}

fn bench_step(args: BenchStepArgs) -> Result<()> {
    use detnas_core::rng::Rng;
    use detnas_train::loss::{IGNORE, ImageTargets, Targets, retinanet_loss};
    use detnas_train::optim::PathSgd;
    use detnas_train::tch::{self, Kind, Tensor};
    let cfg = DetTrainConfig::load(&args.config)?;
    let arch_text = cfg.arch.clone().context("the config needs an `arch` (the path to time)")?;
    let (space, arch) = resolve(Some(&cfg.space), &arch_text)?;
    tch::set_num_threads(args.threads);
    let dev = device::parse(&args.device)?;
    let vs = nn::VarStore::new(dev);
    let paths = if args.supernet { Paths::All } else { Paths::Single(&arch) };
    let net = RetinaNet::new(&vs, &space, paths, &cfg.detector, 0)?;
    let (h, w) = (cfg.detector.input.height as i64, cfg.detector.input.width as i64);
    let b = args.batch_size as i64;
    let x = (Tensor::rand([b, 3, h, w], (Kind::Float, dev)) * 255.0).detach();
    let (cls, _) = tch::no_grad(|| net.forward(&x, &arch, false))?;
    let (anchors, k) = (cls.size()[1] as usize, cls.size()[2] as usize);
    // fixed targets like the PyTorch script: ~1% foreground, ~5% ignored
    let mut rng = Rng::seed(0);
    let images: Vec<ImageTargets> = (0..args.batch_size)
        .map(|_| {
            let mut t = ImageTargets { labels: vec![-1; anchors], deltas: vec![0.0; anchors * 4], num_foreground: 0 };
            for a in 0..anchors {
                let r = rng.unit();
                if r < 0.01 {
                    t.labels[a] = rng.below(k as u64) as i64;
                    t.num_foreground += 1;
                } else if r < 0.06 {
                    t.labels[a] = IGNORE;
                }
                for d in 0..4 {
                    t.deltas[a * 4 + d] = detnas_core::plan::normal(&mut rng) * 0.1;
                }
            }
            t
        })
        .collect();
    let targets = Targets::new(&images, dev);
    let mut opt = PathSgd::new(0.9, 1e-4, true);
    let mut step = || -> Result<()> {
        let params = net.path_parameters(&arch)?;
        PathSgd::zero_grad(&params);
        let (c, r) = net.forward(&x, &arch, true)?;
        let (lc, lb) = retinanet_loss(&c, &r, &targets);
        (lc + lb).backward();
        opt.step(&params, 0.01);
        Ok(())
    };
    for _ in 0..args.warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let t = std::time::Instant::now();
        step()?;
        if dev != tch::Device::Cpu {
            tch::Cuda::synchronize(0);
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "framework": "detnas (tch 0.24 / libtorch 2.11)",
        "supernet": args.supernet,
        "batch": args.batch_size,
        "input": [h, w],
        "threads": args.threads,
        "ms_per_step_p50": times[times.len() / 2],
        "ms_per_step_mean": times.iter().sum::<f64>() / times.len() as f64,
    });
    println!("{report}");
    Ok(())
}

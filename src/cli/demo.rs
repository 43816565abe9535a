//! `detnas demo`: the whole DetNAS pipeline in miniature, into one folder. Each step is the
//! `detnas` command a user would type, run in this process and written to `commands.sh`:
//!
//! 1. a seeded synthetic detection set (training and held-out images);
//! 2. detection fine-tuning of a genes supernet (backbone paths plus FPN / head width, depth,
//!    conv type and input resolution);
//! 3. a latency table of this machine;
//! 4. a budget: the predicted latency of the median of random genomes (that genome is the baseline);
//! 5. the evolutionary search under that budget, finalists measured for real;
//! 6. stand-alone retraining of the searched genome and of the baseline, on the same schedule;
//! 7. export of both, detection of the held-out folder, COCO evaluation and timing;
//! 8. `report.md` with the numbers and `pareto.png`.
//!
//! The state (`demo.json`) is written after every step: `--resume` skips finished steps.

use super::plot::pareto_png;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser};
use detnas_core::InputSize;
use detnas_core::coco::{Detections, EvalParams, GroundTruth, evaluate};
use detnas_core::detector::{DetectorHead, HeadConv, detector_flops};
use detnas_core::genome::Genome;
use detnas_core::fsutil::write_atomic;
use detnas_core::genome::GeneSpace;
use detnas_core::pareto::CandidateRow;
use detnas_core::space::ChannelShuffle;
use detnas_infer::fingerprint::cpu_model;
use detnas_infer::latency::{LatencyTable, base_config, sample_genomes};
use detnas_infer::timing::{Latency, TimingPlan, time_pair};
use detnas_infer::{Detector, DetectorOptions};
use detnas_train::config::{DataSource, DetTrainConfig};
use detnas_train::data::Augment;
use detnas_train::optim::LrSchedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder (data, checkpoints, search, models, detections, report.md).
    #[arg(long, default_value = "runs/nas-demo")]
    out: PathBuf,
    /// A shortened run (a minute or two) that goes through every step; its numbers mean nothing.
    #[arg(long)]
    quick: bool,
    /// Seed of the data, training, sampling and search.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue the demo in --out, skipping the steps it finished.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Remove the folder --out first (it must hold a demo) and start over.
    #[arg(long)]
    overwrite: bool,
}

/// Sizes of one demo run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Schedule {
    train_images: usize,
    val_images: usize,
    image_size: u32,
    classes: usize,
    inputs: Vec<u64>,
    supernet_iterations: usize,
    retrain_iterations: usize,
    batch_size: usize,
    random_genomes: usize,
    population: usize,
    generations: usize,
    recal_batches: usize,
}

impl Schedule {
    fn full() -> Self {
        Schedule {
            train_images: 96,
            val_images: 32,
            image_size: 128,
            classes: 2,
            inputs: vec![96, 128],
            supernet_iterations: 1200,
            retrain_iterations: 600,
            batch_size: 4,
            random_genomes: 25,
            population: 12,
            generations: 4,
            recal_batches: 5,
        }
    }

    fn quick() -> Self {
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
        }
    }

    fn gene_space(&self) -> GeneSpace {
        GeneSpace {
            fpn_channels: vec![24, 32, 48],
            head_channels: vec![24, 32, 48],
            head_convs: vec![1, 2],
            head_conv: vec![HeadConv::Separable, HeadConv::Dense],
            input: self.inputs.iter().map(|&s| InputSize::new(s, s)).collect(),
        }
    }
}

/// One evaluated, retrained model.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Outcome {
    genome: String,
    ap: f64,
    ap50: f64,
    ar100: f64,
    model_run_ms: f64,
    detect_ms: f64,
    detector_gflops: f64,
}

/// What `demo.json` records: the schedule, finished steps with their times, and the results so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DemoState {
    seed: u64,
    schedule: Option<Schedule>,
    /// Finished steps and their seconds, in order.
    steps: Vec<(String, f64)>,
    budget_ms: Option<f64>,
    baseline: Option<String>,
    searched: Option<String>,
    searched_inherited_ap50: Option<f64>,
    outcomes: Vec<Outcome>,
    commands: Vec<String>,
}

struct Demo {
    out: PathBuf,
    state: DemoState,
    schedule: Schedule,
}

const STATE: &str = "demo.json";
/// The search space of the demo (the DetNAS 300M backbone space).
const SPACE: &str = "detnas-300m";

impl Demo {
    fn path(&self, p: &str) -> PathBuf {
        self.out.join(p)
    }

    fn arg(&self, p: &str) -> String {
        self.path(p).display().to_string()
    }

    fn save(&self) -> Result<()> {
        write_atomic(&self.path(STATE), serde_json::to_string_pretty(&self.state)?.as_bytes())?;
        Ok(())
    }

    fn done(&self, name: &str) -> bool {
        self.state.steps.iter().any(|(n, _)| n == name)
    }

    /// Runs step `name` unless it is finished, then records it.
    fn step(&mut self, index: usize, name: &str, f: impl FnOnce(&mut Demo) -> Result<()>) -> Result<()> {
        if self.done(name) {
            eprintln!("== {index}/8 {name}: done before, skipped");
            return Ok(());
        }
        eprintln!("== {index}/8 {name}");
        let t = Instant::now();
        f(self).with_context(|| format!("demo step `{name}`"))?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!("== {name}: {secs:.0} s");
        self.state.steps.push((name.to_string(), secs));
        self.save()
    }

    /// Runs `detnas ARGS` in this process, recording the command line.
    fn detnas(&mut self, args: &[String]) -> Result<()> {
        let line = format!("detnas {}", args.join(" "));
        eprintln!("$ {line}");
        self.state.commands.push(line.clone());
        let cli = super::Cli::try_parse_from(std::iter::once("detnas".to_string()).chain(args.iter().cloned()))
            .with_context(|| format!("the demo built an invalid command: {line}"))?;
        let code = super::run(cli)?;
        if code != 0 {
            bail!("`{line}` exited with {code}");
        }
        Ok(())
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Opens or starts the demo folder as the flags ask.
fn open(args: &DemoArgs, schedule: &Schedule) -> Result<DemoState> {
    let state_path = args.out.join(STATE);
    let exists = args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some();
    if args.resume && state_path.is_file() {
        let state: DemoState = serde_json::from_slice(&std::fs::read(&state_path)?)
            .with_context(|| format!("{}: not a demo state", state_path.display()))?;
        if state.seed != args.seed || state.schedule.as_ref() != Some(schedule) {
            bail!(
                "{}: that demo ran with another seed or schedule (--quick); use another --out or --overwrite",
                args.out.display()
            );
        }
        return Ok(state);
    }
    if exists && !args.resume {
        if !args.overwrite {
            bail!(
                "{} already holds files: --resume to continue the demo there, --overwrite to start over, or another --out",
                args.out.display()
            );
        }
        if !state_path.is_file() {
            bail!("{} holds no demo ({STATE} missing): refusing to remove it with --overwrite", args.out.display());
        }
        std::fs::remove_dir_all(&args.out).with_context(|| format!("removing {}", args.out.display()))?;
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    Ok(DemoState { seed: args.seed, schedule: Some(schedule.clone()), ..Default::default() })
}

pub fn run(args: DemoArgs) -> Result<()> {
    let schedule = if args.quick { Schedule::quick() } else { Schedule::full() };
    let state = open(&args, &schedule)?;
    let mut demo = Demo { out: args.out.clone(), state, schedule };
    let started = Instant::now();
    demo.step(1, "data", make_data)?;
    demo.step(2, "supernet", train_supernet)?;
    demo.step(3, "latency table", build_table)?;
    demo.step(4, "budget", derive_budget)?;
    demo.step(5, "search", search)?;
    demo.step(6, "retrain", retrain)?;
    demo.step(7, "export and detect", export_and_detect)?;
    demo.step(8, "report", write_report)?;
    eprintln!("demo finished in {:.0} s: {}", started.elapsed().as_secs_f64(), demo.path("report.md").display());
    Ok(())
}

fn make_data(d: &mut Demo) -> Result<()> {
    let s = d.schedule.clone();
    let size = format!("{0}x{0}", s.image_size);
    for (dir, n, seed) in [("data/train", s.train_images, d.state.seed), ("data/val", s.val_images, d.state.seed + 1)] {
        let args = ["data", "synthetic", "--out", &d.arg(dir), "--images", &n.to_string(), "--size", &size];
        let mut args = strings(&args);
        args.extend(strings(&["--classes", &s.classes.to_string(), "--seed", &seed.to_string()]));
        d.detnas(&args)?;
    }
    Ok(())
}

/// The training configuration of the supernet (`genes`) or of a stand-alone genome.
fn train_config(d: &Demo, genes: bool) -> DetTrainConfig {
    let s = &d.schedule;
    let mut cfg = DetTrainConfig::default();
    let largest = *s.inputs.iter().max().expect("inputs");
    cfg.data = Some(DataSource { coco: Some(d.path("data/train/annotations.json")), images: None, voc: None });
    cfg.val = Some(DataSource { coco: Some(d.path("data/val/annotations.json")), images: None, voc: None });
    cfg.detector.input = InputSize::new(largest, largest);
    cfg.detector.class_names = (1..=s.classes).map(|i| format!("shape{i}")).collect();
    if let DetectorHead::Retinanet(r) = &mut cfg.detector.head {
        r.anchor_sizes = vec![8.0, 16.0, 32.0, 64.0, 128.0];
    }
    cfg.batch_size = s.batch_size;
    cfg.iterations = if genes { s.supernet_iterations } else { s.retrain_iterations };
    let milestone = cfg.iterations * 3 / 4;
    cfg.optim.lr = LrSchedule::WarmupStep {
        base: 0.02,
        warmup_iters: (cfg.iterations / 10).max(1),
        warmup_factor: 1.0 / 3.0,
        milestones: vec![milestone.max(1)],
        gamma: 0.1,
    };
    cfg.augment = Augment { scale_min: 0.8, ..Augment::default() };
    cfg.seed = d.state.seed;
    cfg.log_every = (cfg.iterations / 10).max(1);
    cfg.checkpoint_every = (cfg.iterations / 4).max(1);
    if genes {
        let g = s.gene_space();
        cfg.detector.fpn_channels = *g.fpn_channels.iter().max().expect("widths");
        cfg.detector.head_channels = *g.head_channels.iter().max().expect("widths");
        cfg.detector.head_convs = *g.head_convs.iter().max().expect("depths");
        cfg.genes = Some(g);
    }
    cfg
}

fn write_toml(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomic(path, toml::to_string(value)?.as_bytes())?;
    Ok(())
}

fn train_supernet(d: &mut Demo) -> Result<()> {
    write_toml(&d.path("supernet.toml"), &train_config(d, true))?;
    let mut args = strings(&["train", "det-supernet", "--config", &d.arg("supernet.toml"), "--out", &d.arg("supernet")]);
    if d.path("supernet/state.json").is_file() {
        // a demo stopped during this step: the checkpoint continues exactly
        args.push("--resume".into());
    }
    d.detnas(&args)
}

/// The detector genes of the search space, as `latency build --genes` and `search --genes` read them.
fn write_genes(d: &Demo) -> Result<()> {
    write_toml(&d.path("genes.toml"), &d.schedule.gene_space())
}

fn build_table(d: &mut Demo) -> Result<()> {
    write_genes(d)?;
    let inputs: Vec<String> = d.schedule.inputs.iter().map(|s| format!("{s}x{s}")).collect();
    let mut args = strings(&["latency", "build", "--input", &inputs.join(","), "--genes", &d.arg("genes.toml")]);
    args.extend(strings(&["--classes", &d.schedule.classes.to_string(), "--out", &d.arg("latency.json")]));
    if d.schedule == Schedule::quick() {
        args.extend(strings(&["--calibration", "3", "--warmup", "1", "--min-iters", "3", "--min-seconds", "0"]));
    }
    d.detnas(&args)
}

/// The budget: the predicted latency of the median of `random_genomes` random genomes.
fn derive_budget(d: &mut Demo) -> Result<()> {
    let table = LatencyTable::load(&d.path("latency.json"))?;
    let space = detnas_core::SearchSpace::by_name(SPACE)?;
    let base = base_config(d.schedule.classes, ChannelShuffle::default());
    let mut predicted = Vec::new();
    for g in sample_genomes(&space, &d.schedule.gene_space(), d.schedule.random_genomes, d.state.seed) {
        let cfg = g.detector_config(&base)?;
        predicted.push((table.predict(&space, &g.arch, &cfg)?.latency_ms, g.to_string()));
    }
    predicted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ms, genome) = predicted[predicted.len() / 2].clone();
    eprintln!(
        "{} random genomes predict {:.2}..{:.2} ms; the median, {genome}, sets the budget: {ms:.2} ms",
        predicted.len(),
        predicted[0].0,
        predicted[predicted.len() - 1].0
    );
    d.state.budget_ms = Some(ms);
    d.state.baseline = Some(genome);
    Ok(())
}

fn search(d: &mut Demo) -> Result<()> {
    let s = d.schedule.clone();
    let budget = format!("{:.3}ms", d.state.budget_ms.context("no budget")?);
    let mut args = strings(&["search", "--checkpoint", &d.arg("supernet"), "--out", &d.arg("search")]);
    args.extend(strings(&["--lut", &d.arg("latency.json"), "--latency-max", &budget, "--measure"]));
    args.extend(strings(&["--population", &s.population.to_string(), "--generations", &s.generations.to_string()]));
    let (top, children) = ((s.population / 3).max(2), (s.population / 2).max(1));
    args.extend(strings(&["--top-k", &top.to_string(), "--mutations", &children.to_string()]));
    args.extend(strings(&["--crossovers", &children.to_string(), "--recal-batches", &s.recal_batches.to_string()]));
    args.extend(strings(&["--metric", "ap50", "--seed", &d.state.seed.to_string()]));
    d.detnas(&args)?;
    let best: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path("search/best.json"))?)?;
    let finalists = detnas_core::pareto::Finalists::read(&d.path("search"))?;
    let first = finalists.finalists.first().context("the search kept no finalist within the budget")?;
    d.state.searched = Some(first.candidate.clone());
    d.state.searched_inherited_ap50 = Some(first.fitness);
    eprintln!("searched genome: {} (best.json: {})", first.candidate, best["candidate"]);
    Ok(())
}

/// The two retrained models: (folder name, genome).
fn contenders(d: &Demo) -> Result<[(&'static str, String); 2]> {
    Ok([
        ("searched", d.state.searched.clone().context("no searched genome")?),
        ("baseline", d.state.baseline.clone().context("no baseline genome")?),
    ])
}

fn retrain(d: &mut Demo) -> Result<()> {
    write_toml(&d.path("retrain.toml"), &train_config(d, false))?;
    for (name, genome) in contenders(d)? {
        let dir = format!("retrain/{name}");
        let mut args = strings(&["train", "retinanet", "--config", &d.arg("retrain.toml"), "--arch", &genome]);
        args.extend(strings(&["--out", &d.arg(&dir), "--overwrite"]));
        d.detnas(&args)?;
    }
    Ok(())
}

fn export_and_detect(d: &mut Demo) -> Result<()> {
    let gt_path = d.path("data/val/annotations.json");
    let gt = GroundTruth::load(&gt_path)?;
    d.state.outcomes.clear();
    for (name, genome) in contenders(d)? {
        let model = d.arg(&format!("{name}.onnx"));
        d.detnas(&strings(&["export", "--checkpoint", &d.arg(&format!("retrain/{name}")), "--out", &model]))?;
        let out = d.arg(&format!("detect/{name}"));
        let mut args = strings(&["detect", &model, &d.arg("data/val/images"), "--out", &out, "--exist-ok"]);
        args.extend(strings(&["--ids-from", &gt_path.display().to_string(), "--save-img", "--conf", "0.3"]));
        d.detnas(&args)?;
        // AP is evaluated over every detection the model returns, as COCO does: without --conf
        let all = d.arg(&format!("detect/{name}-all"));
        let mut args = strings(&["detect", &model, &d.arg("data/val/images"), "--out", &all, "--exist-ok"]);
        args.extend(strings(&["--ids-from", &gt_path.display().to_string()]));
        d.detnas(&args)?;
        let dt = Detections::load(&Path::new(&all).join("detections.json"), &gt)?;
        let stats = evaluate(&gt, &dt, &EvalParams::default());
        let detector = Detector::from_file(&model, DetectorOptions::default())?;
        let (run, full) = time_model(&detector, &d.path("data/val/images/000001.png"))?;
        let g = Genome::parse(Some(SPACE), &genome)?;
        let gflops = detector_flops(&g.space, &g.arch, &detector.info().config)?.total as f64 / 1e9;
        d.state.outcomes.push(Outcome {
            genome,
            ap: stats.stats[0],
            ap50: stats.stats[1],
            ar100: stats.stats[8],
            model_run_ms: run.p50_ms,
            detect_ms: full.p50_ms,
            detector_gflops: gflops,
        });
    }
    Ok(())
}

/// p50 latency of the model run and of the full detect path of one image, interleaved.
fn time_model(detector: &Detector, image: &Path) -> Result<(Latency, Latency)> {
    let bytes = std::fs::read(image).with_context(|| image.display().to_string())?;
    let input = detector.info().config.input;
    let blank = vec![114.0f32; 3 * (input.height * input.width) as usize];
    let plan = TimingPlan { warmup: 5, min_iters: 20, min_seconds: 1.0, max_iters: 2000 };
    Ok(time_pair(&plan, || detector.run(&blank).map(drop), || detector.detect_bytes(&bytes, "demo image").map(drop))?)
}

fn write_report(d: &mut Demo) -> Result<()> {
    let rows: Vec<CandidateRow> = serde_json::from_slice(&std::fs::read(d.path("search/candidates.json"))?)?;
    let references: Vec<(String, f64, f64)> = d
        .state
        .outcomes
        .iter()
        .zip(["searched, retrained", "median random, retrained"])
        .map(|(o, label)| (label.to_string(), o.model_run_ms, o.ap50))
        .collect();
    pareto_png(&d.path("pareto.png"), "demo search: held-out AP50 against latency", &rows, &references)?;
    write_atomic(&d.path("commands.sh"), commands_script(&d.state).as_bytes())?;
    let report = report_text(d, rows.len());
    write_atomic(&d.path("report.md"), report.as_bytes())?;
    println!("{report}");
    Ok(())
}

fn commands_script(state: &DemoState) -> String {
    let mut s = String::from("#!/bin/sh\n# The commands `detnas demo` ran, in order.\nset -e\n");
    for c in &state.commands {
        s.push_str(c);
        s.push('\n');
    }
    s
}

fn report_text(d: &Demo, candidates: usize) -> String {
    let (s, st) = (&d.schedule, &d.state);
    let mut r = String::from("# detnas demo\n\n");
    if s == &Schedule::quick() {
        r.push_str("**A `--quick` run: every step ran, on sizes too small for the numbers to mean anything.**\n\n");
    }
    r.push_str(&format!(
        "Machine: {} ({} logical CPUs). Seed {}. Every command is in `commands.sh`.\n\n",
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        st.seed
    ));
    r.push_str("| step | what | seconds |\n|---|---|---|\n");
    let what = |name: &str| match name {
        "data" => format!(
            "{} training and {} held-out synthetic images of {}x{}, {} classes",
            s.train_images, s.val_images, s.image_size, s.image_size, s.classes
        ),
        "supernet" => format!(
            "genes supernet, {} iterations of batch {} (inputs {:?}, FPN/head widths 24/32/48, 1-2 convs, dense or separable)",
            s.supernet_iterations, s.batch_size, s.inputs
        ),
        "latency table" => "`latency.json`: every block and head part measured on this machine".into(),
        "budget" => format!("median predicted latency of {} random genomes", s.random_genomes),
        "search" => format!(
            "{candidates} candidates ({} generations of {}), BN recalibration, held-out AP50, finalists measured",
            s.generations, s.population
        ),
        "retrain" => format!("searched genome and baseline, {} iterations each from scratch", s.retrain_iterations),
        "export and detect" => "ONNX export, detection of the held-out folder, COCO evaluation, timing".into(),
        _ => String::new(),
    };
    for (name, secs) in &st.steps {
        r.push_str(&format!("| {name} | {} | {secs:.0} |\n", what(name)));
    }
    r.push_str(&format!(
        "\nBudget: **{:.2} ms** predicted (the median random genome, `{}`).\n",
        st.budget_ms.unwrap_or(f64::NAN),
        st.baseline.as_deref().unwrap_or("?")
    ));
    r.push_str(&format!(
        "Searched: `{}`, inherited (supernet, recalibrated) AP50 {:.3}.\n\n",
        st.searched.as_deref().unwrap_or("?"),
        st.searched_inherited_ap50.unwrap_or(f64::NAN)
    ));
    r.push_str("Retrained stand-alone on the same schedule, held-out set (ONNX Runtime, this machine):\n\n");
    r.push_str("| model | genome | AP | AP50 | AR100 | model run p50 | detect p50 | GFLOPs |\n");
    r.push_str("|---|---|---|---|---|---|---|---|\n");
    for (o, name) in st.outcomes.iter().zip(["searched", "median random"]) {
        r.push_str(&format!(
            "| {name} | `{}` | {:.3} | {:.3} | {:.3} | {:.2} ms | {:.2} ms | {:.3} |\n",
            o.genome, o.ap, o.ap50, o.ar100, o.model_run_ms, o.detect_ms, o.detector_gflops
        ));
    }
    r.push_str(
        "\n![Pareto plot](pareto.png)\n\n`pareto.png`: every searched candidate (supernet AP50 against predicted, or for \
         finalists measured, latency), the Pareto front, and the two retrained models (stand-alone AP50 against \
         measured model-run latency). The search's own files are in `search/`, the models in `searched.onnx` and \
         `baseline.onnx`, annotated detections in `detect/*/images/`.\n\nOne seed on a small synthetic set: the \
         difference between the two models is within seed noise unless it is large; `detnas study` (not yet \
         available) is where the question is asked properly.\n",
    );
    r
}

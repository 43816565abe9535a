//! `detnas demo`: the whole DetNAS pipeline in miniature, into one folder. Each step is the
//! `detnas` command a user would type, run in this process and written to `commands.sh`:
//!
//! 1. a seeded synthetic detection set (training and held-out images);
//! 2. detection fine-tuning of a genes supernet (backbone paths plus FPN / head width, depth,
//!    conv type and input resolution);
//! 3. a latency table of this machine;
//! 4. a budget: the predicted latency of the median of random genomes (that genome is the baseline);
//! 5. the evolutionary search under that budget (on the table's predictions);
//! 6. stand-alone retraining of the searched genome and of the baseline, on the same schedule;
//! 7. export of both, detection of the held-out folder, COCO evaluation and timing;
//! 8. `report.md` with the numbers and `pareto.png`.
//!
//! The state (`demo.json`) is written after every step: `--resume` skips finished steps.

use super::pipeline::{Pipeline, Steps, run_steps, strings};
use anyhow::{Context, Result};
use clap::Args;
use detnas_core::InputSize;
use detnas_core::coco::{Detections, EvalParams, GroundTruth, evaluate};
use detnas_core::detector::{DetectorHead, HeadConv, detector_flops};
use detnas_core::evolution::EvolutionConfig;
use detnas_core::fsutil::write_atomic;
use detnas_core::genome::GeneSpace;
use detnas_core::genome::Genome;
use detnas_core::pareto::CandidateRow;
use detnas_core::space::ChannelShuffle;
use detnas_data::synthetic::{self, SyntheticSpec};
use detnas_infer::Device;
use detnas_infer::Precision;
use detnas_infer::fingerprint::cpu_model;
use detnas_infer::latency::{BuildOptions, Runner, build_table as build_latency_table};
use detnas_infer::latency::{LatencyTable, base_config, sample_genomes};
use detnas_infer::timing::{Latency, TimingPlan, time_pair};
use detnas_infer::{Detector, DetectorOptions};
use detnas_search::plot::pareto_png;
use detnas_search::{FitnessChoice, LatencyBudget, Metric, SearchOptions};
use detnas_train::config::{DataSource, DetTrainConfig};
use detnas_train::data::Augment;
use detnas_train::optim::LrSchedule;
use detnas_train::run::Start;
use detnas_train::{device, trainer};
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
pub struct Schedule {
    pub train_images: usize,
    pub val_images: usize,
    pub image_size: u32,
    pub classes: usize,
    pub inputs: Vec<u64>,
    pub supernet_iterations: usize,
    pub retrain_iterations: usize,
    pub batch_size: usize,
    pub random_genomes: usize,
    pub population: usize,
    pub generations: usize,
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
}

/// Object counts, sizes and clutter of a synthetic set ([`SyntheticSpec`]'s by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clutter {
    pub objects: (usize, usize),
    pub sizes: (u32, u32),
    pub distractors: usize,
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
        }
    }

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
        }
    }

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

/// One evaluated, retrained model.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Outcome {
    genome: String,
    predicted_ms: f64,
    ap: f64,
    ap50: f64,
    ar100: f64,
    model_run_ms: f64,
    detect_ms: f64,
    detector_gflops: f64,
}

/// The demo's results, recorded in `demo.json` after every step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DemoData {
    budget_ms: Option<f64>,
    baseline: Option<String>,
    searched: Option<String>,
    searched_inherited_ap50: Option<f64>,
    outcomes: Vec<Outcome>,
}

/// A pipeline with the schedule and seed it runs (the demo's and the study's context).
pub struct Ctx<S> {
    pub p: Pipeline<S>,
    pub schedule: Schedule,
    pub seed: u64,
}

type Demo = Ctx<DemoData>;

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

pub fn run(args: DemoArgs) -> Result<()> {
    let schedule = if args.quick { Schedule::quick() } else { Schedule::full() };
    let settings = serde_json::json!({ "seed": args.seed, "schedule": schedule });
    let p = Pipeline::open(&args.out, "demo.json", settings, args.resume, args.overwrite)?;
    let mut demo = Demo { p, schedule, seed: args.seed };
    let started = Instant::now();
    run_steps(
        &mut demo,
        &[
            ("data", make_data),
            ("supernet", train_supernet),
            ("latency table", build_table),
            ("budget", derive_budget),
            ("search", search),
            ("retrain", retrain),
            ("export and detect", export_and_detect),
            ("report", write_report),
        ],
    )?;
    eprintln!("demo finished in {:.0} s: {}", started.elapsed().as_secs_f64(), demo.p.path("report.md").display());
    Ok(())
}

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
        let line = format!("detnas data synthetic {}", synthetic::command_line(&out, &spec).join(" "));
        // replace: a set left half-written by a killed run is its own to replace.
        d.p.call(line, || Ok(synthetic::write_set(&out, &spec, true).map(drop)?))?;
    }
    Ok(())
}

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
        base: 0.02,
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
    }
    cfg
}

pub fn write_toml(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomic(path, toml::to_string(value)?.as_bytes())?;
    Ok(())
}

pub fn train_supernet<S: Record>(d: &mut Ctx<S>) -> Result<()> {
    let cfg = train_config(d, true);
    write_toml(&d.p.path("supernet.toml"), &cfg)?;
    // Resume: a demo stopped during this step continues its checkpoint exactly, and a folder
    // with no checkpoint yet (stopped before or during the first save) starts afresh.
    train(d, &cfg, "supernet.toml", "supernet", Start::Resume, "det-supernet --resume")
}

/// Trains `cfg` (written to `config`) into `dir` from `start` through the library, recording the
/// equivalent `detnas train` command (`how`: its subcommand and flags beyond config and out).
pub fn train<S: Record>(
    d: &mut Ctx<S>,
    cfg: &DetTrainConfig,
    config: &str,
    dir: &str,
    start: Start,
    how: &str,
) -> Result<()> {
    let (config, out) = (d.p.path(config), d.p.path(dir));
    let (sub, flags) = how.split_once(' ').unwrap_or((how, ""));
    let line = format!("detnas train {sub} --config {} --out {} {flags}", config.display(), out.display());
    d.p.call(line.trim_end().to_string(), || {
        start.check(&out)?;
        trainer::train_detection(cfg, &out, start, device::parse("cpu")?, &mut super::train::print_event)?;
        Ok(())
    })
}

/// The detector genes of the search space, as `latency build --genes` and `search --genes` read them.
fn write_genes<S>(d: &Ctx<S>) -> Result<()> {
    write_toml(&d.p.path("genes.toml"), &d.schedule.gene_space())
}

pub fn build_table<S: Record>(d: &mut Ctx<S>) -> Result<()> {
    write_genes(d)?;
    let inputs: Vec<String> = d.schedule.inputs.iter().map(|s| format!("{s}x{s}")).collect();
    let (genes, out) = (d.p.path("genes.toml"), d.p.path("latency.json"));
    let mut line = format!("detnas latency build --input {} --genes {}", inputs.join(","), genes.display());
    line.push_str(&format!(" --classes {} --out {}", d.schedule.classes, out.display()));
    // `latency build`'s defaults: 20 calibration genomes, 3 warm-up runs, at least 10 runs and 0.2 s
    let (calibration, timing) = if d.schedule.quick {
        line.push_str(" --calibration 3 --warmup 1 --min-iters 3 --min-seconds 0");
        (3, TimingPlan { warmup: 1, min_iters: 3, min_seconds: 0.0, ..TimingPlan::default() })
    } else {
        (20, TimingPlan::default())
    };
    let opts = BuildOptions {
        space: detnas_core::SearchSpace::by_name(SPACE)?,
        genes: d.schedule.gene_space(),
        classes: d.schedule.classes,
        shuffle: ChannelShuffle::default(),
        runner: Runner { device: Device::Cpu, threads: None, strict: true, timing, precision: Precision::Fp32 },
        calibration,
        calibration_seed: 1,
    };
    d.p.call(line, || Ok(build_latency_table(&opts, &mut |l| eprintln!("{l}"))?.save(&out)?))
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

/// The budget: the predicted latency of the median of `random_genomes` random genomes.
fn derive_budget(d: &mut Demo) -> Result<()> {
    let predicted = random_genomes(d, d.schedule.random_genomes, d.seed)?;
    let (ms, genome) = predicted[predicted.len() / 2].clone();
    eprintln!(
        "{} random genomes predict {:.2}..{:.2} ms; the median, {genome}, sets the budget: {ms:.2} ms",
        predicted.len(),
        predicted[0].0,
        predicted[predicted.len() - 1].0
    );
    d.p.rec.data.budget_ms = Some(ms);
    d.p.rec.data.baseline = Some(genome);
    Ok(())
}

/// Searches the supernet under `budget_ms` into `dir` with `population` x `generations` and
/// `recal` BN batches (`ema`: moving average); returns the best finalist and its fitness.
pub fn run_search<S: Record>(
    d: &mut Ctx<S>,
    dir: &str,
    budget_ms: f64,
    (population, generations): (usize, usize),
    recal: usize,
    ema: bool,
) -> Result<(String, f64)> {
    let mut opts = SearchOptions::new(d.p.path("supernet"), d.p.path(dir));
    // The budget holds on the table's prediction; finalists are not re-timed here (`measure`),
    // as sub-millisecond timings on a busy machine would drop them on noise. The retrained
    // models are timed at the end instead.
    let max_ms = format!("{budget_ms:.3}").parse()?;
    let table = d.p.path("latency.json");
    opts.latency = Some(LatencyBudget { table, max_ms, precision: None, measure: false, strict: false });
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
    opts.fitness = FitnessChoice::Supernet { metric: Metric::Ap50, recal_batches: recal, ema };
    let selected = d.p.search(&opts)?.selected.finalist;
    Ok((selected.candidate, selected.fitness))
}

fn search(d: &mut Demo) -> Result<()> {
    let s = d.schedule.clone();
    let budget = d.p.rec.data.budget_ms.context("no budget")?;
    let (genome, fitness) = run_search(d, "search", budget, (s.population, s.generations), s.recal_batches, false)?;
    eprintln!("searched genome: {genome}");
    d.p.rec.data.searched = Some(genome);
    d.p.rec.data.searched_inherited_ap50 = Some(fitness);
    Ok(())
}

/// The two retrained models: (folder name, genome).
fn contenders(d: &Demo) -> Result<[(&'static str, String); 2]> {
    Ok([
        ("searched", d.p.rec.data.searched.clone().context("no searched genome")?),
        ("baseline", d.p.rec.data.baseline.clone().context("no baseline genome")?),
    ])
}

fn retrain(d: &mut Demo) -> Result<()> {
    let mut cfg = train_config(d, false);
    write_toml(&d.p.path("retrain.toml"), &cfg)?;
    for (name, genome) in contenders(d)? {
        cfg.arch = Some(genome.clone());
        let how = format!("retinanet --arch {genome} --overwrite");
        train(d, &cfg, "retrain.toml", &format!("retrain/{name}"), Start::Overwrite, &how)?;
    }
    Ok(())
}

fn export_and_detect(d: &mut Demo) -> Result<()> {
    let gt_path = d.p.path("data/val/annotations.json");
    let gt = GroundTruth::load(&gt_path)?;
    d.p.rec.data.outcomes.clear();
    for (name, genome) in contenders(d)? {
        let model = d.p.arg(&format!("{name}.onnx"));
        d.p.detnas(&strings(&["export", "--checkpoint", &d.p.arg(&format!("retrain/{name}")), "--out", &model]))?;
        let out = d.p.arg(&format!("detect/{name}"));
        let mut args = strings(&["detect", &model, &d.p.arg("data/val/images"), "--out", &out, "--exist-ok"]);
        args.extend(strings(&["--ids-from", &gt_path.display().to_string(), "--save-img", "--conf", "0.3"]));
        d.p.detnas(&args)?;
        // AP is evaluated over every detection the model returns, as COCO does: without --conf
        let all = d.p.arg(&format!("detect/{name}-all"));
        let mut args = strings(&["detect", &model, &d.p.arg("data/val/images"), "--out", &all, "--exist-ok"]);
        args.extend(strings(&["--ids-from", &gt_path.display().to_string()]));
        d.p.detnas(&args)?;
        let dt = Detections::load(&Path::new(&all).join("detections.json"), &gt)?;
        let stats = evaluate(&gt, &dt, &EvalParams::default());
        let detector = Detector::from_file(&model, DetectorOptions::default())?;
        let (run, full) = time_model(&detector, &d.p.path("data/val/images/000001.png"))?;
        let g = Genome::parse(Some(SPACE), &genome)?;
        let gflops = detector_flops(&g.space, &g.arch, &detector.info().config)?.total as f64 / 1e9;
        let predicted_ms = predicted_ms(d, &genome)?;
        d.p.rec.data.outcomes.push(Outcome {
            genome,
            predicted_ms,
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
pub fn time_model(detector: &Detector, image: &Path) -> Result<(Latency, Latency)> {
    let bytes = std::fs::read(image).with_context(|| image.display().to_string())?;
    let input = detector.info().config.input;
    let blank = vec![114.0f32; 3 * (input.height * input.width) as usize];
    let plan = TimingPlan { warmup: 5, min_iters: 20, min_seconds: 1.0, max_iters: 2000 };
    Ok(time_pair(&plan, || detector.run(&blank).map(drop), || detector.detect_bytes(&bytes, "demo image").map(drop))?)
}

fn write_report(d: &mut Demo) -> Result<()> {
    let rows: Vec<CandidateRow> = serde_json::from_slice(&std::fs::read(d.p.path("search/candidates.json"))?)?;
    let references: Vec<(String, f64, f64)> =
        d.p.rec
            .data
            .outcomes
            .iter()
            .zip(["searched, retrained", "median random, retrained"])
            .map(|(o, label)| (label.to_string(), o.predicted_ms, o.ap50))
            .collect();
    pareto_png(&d.p.path("pareto.png"), "demo search: held-out AP50 against latency", &rows, &references)?;
    d.p.write_commands("demo")?;
    let report = report_text(d, rows.len());
    write_atomic(&d.p.path("report.md"), report.as_bytes())?;
    println!("{report}");
    Ok(())
}

fn report_text(d: &Demo, candidates: usize) -> String {
    let (s, st, rec) = (&d.schedule, &d.p.rec.data, &d.p.rec);
    let mut r = String::from("# detnas demo\n\n");
    if s.quick {
        r.push_str("**A `--quick` run: every step ran, on sizes too small for the numbers to mean anything.**\n\n");
    }
    r.push_str(&format!(
        "Machine: {} ({} logical CPUs). Seed {}. Every command is in `commands.sh`.\n\n",
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        d.seed
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
            "{candidates} candidates ({} generations of {}), BN recalibration, held-out AP50 under the predicted budget",
            s.generations, s.population
        ),
        "retrain" => format!("searched genome and baseline, {} iterations each from scratch", s.retrain_iterations),
        "export and detect" => "ONNX export, detection of the held-out folder, COCO evaluation, timing".into(),
        _ => String::new(),
    };
    for (name, secs) in &rec.steps {
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
    r.push_str("| model | genome | AP | AP50 | AR100 | predicted | model run p50 | detect p50 | GFLOPs |\n");
    r.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (o, name) in st.outcomes.iter().zip(["searched", "median random"]) {
        r.push_str(&format!(
            "| {name} | `{}` | {:.3} | {:.3} | {:.3} | {:.2} ms | {:.2} ms | {:.2} ms | {:.3} |\n",
            o.genome, o.ap, o.ap50, o.ar100, o.predicted_ms, o.model_run_ms, o.detect_ms, o.detector_gflops
        ));
    }
    r.push_str(
        "\n\"predicted\" is the latency table's prediction (the search's budget is on it); the model run is \
         timed here with the trained weights and every ONNX Runtime thread, post-processing of real detections \
         included.\n\n![Pareto plot](pareto.png)\n\n`pareto.png`: every searched candidate (supernet AP50 \
         against predicted latency), the Pareto front, and the two retrained models \
         (stand-alone AP50 against predicted latency). The search's own files are in `search/`, the models in \
         `searched.onnx` and `baseline.onnx`, annotated detections in `detect/*/images/`.\n\nOne seed on a \
         small synthetic set: the difference between the two models is within seed noise unless it is large; \
         `detnas study` asks the question with several genomes and seeds.\n",
    );
    r
}

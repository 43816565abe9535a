//! `detnas demo`: the whole DetNAS pipeline in miniature, into one folder. Each step is a library
//! call ([`crate::setup`], [`detnas_onnx::source`], [`detnas_infer::folder`]), written to
//! `commands.sh` as the `detnas` command a user would type:
//!
//! 1. a seeded synthetic detection set (training and held-out images);
//! 2. detection fine-tuning of a genes supernet (backbone paths plus FPN / head width, depth,
//!    conv type and input resolution) — only for `--fitness supernet`;
//! 3. a latency table of this machine;
//! 4. a budget: the predicted latency of the median of random genomes (that genome is the baseline);
//! 5. the evolutionary search under that budget (on the table's predictions), scored by the
//!    demo's fitness: by default the parameter count ([`DEFAULT_FITNESS`]), which `detnas study`
//!    found ranks same-budget genomes no worse than the supernet or any training-free proxy;
//! 6. stand-alone retraining of the searched genome and of the baseline, on the same schedule;
//! 7. export of both, detection of the held-out folder, COCO evaluation and timing;
//! 8. `report.md` with the numbers and `pareto.png`.
//!
//! The state (`demo.json`) is written after every step: `--resume` skips finished steps.

use crate::options::{FitnessChoice, SearchOptions};
use crate::pipeline::Step;
use crate::pipeline::{Pipeline, run_steps};
use crate::plot::pareto_png;
use crate::setup::{
    Ctx, Record, SPACE, Schedule, build_table, make_data, predicted_ms, random_genomes, run_search, train,
    train_config, train_supernet, under_budget, write_toml,
};
use anyhow::{Context, Result};
use detnas_core::coco::{Detections, EvalParams, GroundTruth, evaluate};
use detnas_core::detector::detector_flops;
use detnas_core::fsutil::write_atomic;
use detnas_core::search::genome::Genome;
use detnas_core::search::pareto::CandidateRow;
use detnas_infer::fingerprint::cpu_model;
use detnas_infer::folder::{Existing, FolderOptions, detect_folder};
use detnas_infer::timing::{Latency, TimingPlan};
use detnas_infer::{Detector, DetectorOptions};
use detnas_onnx::source::{ExportRequest, Source};
use detnas_train::run::Start;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

type Demo = Ctx<DemoData>;

/// The demo's fitness unless told otherwise: the evidence of `detnas study` (see
/// `docs/fidelity-study.md`) is that no fitness, the supernet's included, ranks same-budget
/// genomes better than the parameter count, which costs nothing.
pub const DEFAULT_FITNESS: FitnessChoice = FitnessChoice::Params;

/// What a demo runs: the flags of `detnas demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Output folder (data, checkpoints, search, models, detections, report.md).
    pub out: PathBuf,
    /// A shortened run (a minute or two) that goes through every step; its numbers mean nothing.
    pub quick: bool,
    /// Seed of the data, training, sampling and search.
    pub seed: u64,
    /// Continue the demo in `out`, skipping the steps it finished.
    pub resume: bool,
    /// Remove the demo's own files from `out` first and start over.
    pub overwrite: bool,
    /// What scores the search's candidates: the supernet (trained first, a step of its own) or a
    /// training-free fitness (no supernet is trained). A supernet fitness's own settings are
    /// replaced by the schedule's: AP50 after the schedule's recalibration batches.
    pub fitness: FitnessChoice,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            out: PathBuf::new(),
            quick: false,
            seed: 0,
            resume: false,
            overwrite: false,
            fitness: DEFAULT_FITNESS,
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
    /// The searched genome's fitness (inherited AP50 for the supernet).
    #[serde(alias = "searched_inherited_ap50")]
    searched_score: Option<f64>,
    /// What scored the search (`supernet`, `params`, ...).
    #[serde(default)]
    fitness: String,
    outcomes: Vec<Outcome>,
}

/// Runs (or resumes) the demo into `args.out`; see the module documentation.
pub fn run(args: &DemoOptions) -> Result<()> {
    let schedule = if args.quick { Schedule::quick() } else { Schedule::full() };
    let fitness = args.fitness.name();
    let settings = serde_json::json!({ "seed": args.seed, "schedule": schedule, "fitness": fitness });
    let p = Pipeline::open(&args.out, "demo.json", settings, args.resume, args.overwrite)?;
    let mut demo = Demo { p, schedule, seed: args.seed };
    demo.p.rec.data.fitness = fitness.into();
    let started = Instant::now();
    let mut steps: Vec<Step<Demo>> = vec![("data", make_data)];
    if args.fitness.needs_checkpoint() {
        steps.push(("supernet", train_supernet));
    }
    steps.extend::<[Step<Demo>; 6]>([
        ("latency table", build_table),
        ("budget", derive_budget),
        ("search", search),
        ("retrain", retrain),
        ("export and detect", export_and_detect),
        ("report", write_report),
    ]);
    run_steps(&mut demo, &steps)?;
    eprintln!("demo finished in {:.0} s: {}", started.elapsed().as_secs_f64(), demo.p.path("report.md").display());
    Ok(())
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

fn search(d: &mut Demo) -> Result<()> {
    let s = d.schedule.clone();
    let budget = d.p.rec.data.budget_ms.context("no budget")?;
    let size = (s.population, s.generations);
    let (genome, score) = match FitnessChoice::training_free(&d.p.rec.data.fitness) {
        Ok(free) => {
            let opts = under_budget(d, SearchOptions::training_free(free, d.p.path("search")), budget, size)?;
            let selected = d.p.search(&opts)?.selected.finalist;
            (selected.candidate, selected.fitness)
        }
        Err(_) => run_search(d, ("supernet", "search"), budget, size, s.recal_batches, false)?,
    };
    eprintln!("searched genome: {genome} ({} {score:.4})", d.p.rec.data.fitness);
    d.p.rec.data.searched = Some(genome);
    d.p.rec.data.searched_score = Some(score);
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
        let flags = ["--arch".to_string(), genome.clone(), "--overwrite".to_string()];
        train(d, &cfg, ("retrain.toml", &format!("retrain/{name}")), Start::Overwrite, "retinanet", &flags)?;
    }
    Ok(())
}

fn export_and_detect(d: &mut Demo) -> Result<()> {
    let gt_path = d.p.path("data/val/annotations.json");
    let gt = GroundTruth::load(&gt_path)?;
    d.p.rec.data.outcomes.clear();
    for (name, genome) in contenders(d)? {
        let model = d.p.arg(&format!("{name}.onnx"));
        let checkpoint = d.p.path(&format!("retrain/{name}"));
        export_checkpoint(&mut d.p, &checkpoint, Path::new(&model))?;
        detect_images(&mut d.p, Path::new(&model), &format!("detect/{name}"), &gt_path, Some(0.3))?;
        // AP is evaluated over every detection the model returns, as COCO does: without a threshold
        let all = detect_images(&mut d.p, Path::new(&model), &format!("detect/{name}-all"), &gt_path, None)?;
        let dt = Detections::load(&all.join("detections.json"), &gt)?;
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
    let plan = TimingPlan { warmup: 5, min_iters: 20, min_seconds: 1.0, max_iters: 2000 };
    let l = detector.bench(&bytes, &plan)?;
    Ok((l.model_run, l.detect))
}

fn write_report(d: &mut Demo) -> Result<()> {
    let rows: Vec<CandidateRow> = serde_json::from_slice(&std::fs::read(d.p.path("search/candidates.json"))?)?;
    // retrained AP50 shares the axis of the supernet's AP50 only
    let supernet = d.p.rec.data.fitness == "supernet";
    let references: Vec<(String, f64, f64)> =
        d.p.rec
            .data
            .outcomes
            .iter()
            .zip(["searched, retrained", "median random, retrained"])
            .filter(|_| supernet)
            .map(|(o, label)| (label.to_string(), o.predicted_ms, o.ap50))
            .collect();
    let title = format!("demo search: {} against latency", if supernet { "held-out AP50" } else { "fitness" });
    pareto_png(&d.p.path("pareto.png"), &title, &rows, &references)?;
    d.p.write_commands("demo")?;
    let report = report_text(d, rows.len());
    write_atomic(&d.p.path("report.md"), report.as_bytes())?;
    println!("{report}");
    Ok(())
}

fn report_text(d: &Demo, candidates: usize) -> String {
    let (s, st, rec) = (&d.schedule, &d.p.rec.data, &d.p.rec);
    let supernet = st.fitness == "supernet";
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
        "search" if supernet => format!(
            "{candidates} candidates ({} generations of {}), BN recalibration, held-out AP50 under the predicted budget",
            s.generations, s.population
        ),
        "search" => format!(
            "{candidates} candidates ({} generations of {}) scored by `{}` (no training) under the predicted budget",
            s.generations, s.population, st.fitness
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
    let score = st.searched_score.unwrap_or(f64::NAN);
    let scored = if supernet {
        format!("inherited (supernet, recalibrated) AP50 {score:.3}")
    } else {
        format!(
            "`{}` {score:.4e}. The fitness follows `detnas study`: no fitness, the supernet's included, ranked \
             same-budget genomes better than chance or than the parameter count there (`--fitness supernet` runs \
             the paper's method)",
            st.fitness
        )
    };
    r.push_str(&format!("Searched: `{}`, {scored}.\n\n", st.searched.as_deref().unwrap_or("?")));
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
         included.\n\n![Pareto plot](pareto.png)\n\n",
    );
    r.push_str(&format!(
        "`pareto.png`: every searched candidate ({} against predicted latency) and the Pareto front{}. \
         The search's own files are in `search/`, the models in `searched.onnx` and `baseline.onnx`, annotated \
         detections in `detect/*/images/`.\n\nOne seed on a small synthetic set: the difference between the two \
         models is within seed noise unless it is large; `detnas study` asks the question with several genomes \
         and seeds.\n",
        if supernet { "supernet AP50" } else { st.fitness.as_str() },
        if supernet { ", and the two retrained models (stand-alone AP50 against predicted latency)" } else { "" }
    ));
    r
}

/// Exports the checkpoint folder `dir` to `model` through the library, recording the command.
fn export_checkpoint<S: Record>(p: &mut Pipeline<S>, dir: &Path, model: &Path) -> Result<()> {
    let args = ["export", "--checkpoint", &dir.display().to_string(), "--out", &model.display().to_string()];
    p.call(&args.map(String::from), || {
        let source = Source::Checkpoint { dir: dir.to_path_buf(), arch: None };
        let exported = ExportRequest::new(source).prepare()?.export()?;
        write_atomic(model, &detnas_onnx::graph::encode(&exported.model)?)?;
        Ok(())
    })
}

/// Detects the held-out images with `model` into `dir` (replacing an earlier run's files), ids
/// from `gt`, annotated copies when a `conf` threshold is given, through the library; records the
/// command and returns the folder.
fn detect_images<S: Record>(
    p: &mut Pipeline<S>,
    model: &Path,
    dir: &str,
    gt: &Path,
    conf: Option<f32>,
) -> Result<PathBuf> {
    let (images, out) = (p.path("data/val/images"), p.path(dir));
    let mut args: Vec<String> = vec!["detect".into(), model.display().to_string(), images.display().to_string()];
    args.extend(["--out".into(), out.display().to_string(), "--exist-ok".into()]);
    args.extend(["--ids-from".into(), gt.display().to_string()]);
    if let Some(c) = conf {
        args.extend(["--save-img".into(), "--conf".into(), c.to_string()]);
    }
    p.call(&args, || {
        let mut opts = FolderOptions::new(model, [images.display().to_string()], &out);
        opts.existing = Existing::Replace;
        opts.ids_from = Some(gt.to_path_buf());
        opts.conf = conf;
        opts.save_img = conf.is_some();
        let outcome = detect_folder(&opts, &mut |e| {
            if let Some(line) = e.line() {
                eprintln!("{line}");
            }
        })?;
        anyhow::ensure!(outcome.failures.is_empty(), "{} image(s) failed", outcome.failures.len());
        Ok(())
    })?;
    Ok(out)
}

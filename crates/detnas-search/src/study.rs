//! `detnas study`: does the search find better detectors? A seeded, resumable fidelity report on
//! a harder synthetic detection set (several classes, a wide range of object sizes, clutter and
//! occlusion), into one folder:
//!
//! - **the yardstick**: random genomes under one latency budget, each retrained stand-alone with
//!   two seeds; their seed-to-seed agreement (Kendall τ, mean |ΔAP50|) is the ceiling of any
//!   ranking measured against them;
//! - **(a) ranking fidelity**: every fitness — the supernet (BN-recalibrated, inherited weights)
//!   and the training-free `madnas`, `zen`, `params`, `flops` — against the yardstick (the mean of
//!   the seeds): Kendall τ and Spearman ρ with bootstrap confidence intervals;
//! - **(b) does the search win**: the genome each fitness's search found against the
//!   all-`shufflenet_3x3` backbone at the same detector genes and the median random genome, each
//!   retrained with several seeds;
//! - **(c) what matters**: ranking fidelity against the recalibration (batches, exact or EMA), and
//!   the stand-alone AP of the genome found under smaller and larger search budgets;
//! - **(d) the sanity ladder**: a one-choice supernet against its path stand-alone, and the
//!   uniform paths of a supernet with a crippled choice.
//!
//! Outputs: `report.md`, `fidelity.csv`, `contenders.csv`, `search_budget.csv`, `scatter.png`,
//! `pareto.png`, and every command in `commands.sh`.

use crate::pipeline::{Pipeline, Steps, run_steps};
use crate::plot::{pareto_png, scatter_png};
use crate::setup::{
    BASE_LR, Clutter, Ctx, SPACE, Schedule, build_table, make_data, predicted_ms, random_genomes, run_search, train,
    train_config, train_supernet, write_toml,
};
use crate::study_ablation::{
    self, AblationRun, AblationSearch, AblationSpec, Row, inherited_scores, mean_spread, training_log,
    versus_median_line,
};
use crate::study_steps::{FREE, FreeRun, Ladder, RUNGS, Rung, ladder, rung, training_free};
use anyhow::{Context, Result};
use detnas_core::search::pareto::CandidateRow;
use detnas_core::search::stats::{Interval, bootstrap, kendall_tau, spearman};
use detnas_core::space::Choice;
use detnas_core::space::arch::Arch;
use detnas_train::config::{Sampling, SupernetSettings};
use detnas_train::run::Start;
use detnas_train::trainer::{self, EvalOptions};
use detnas_train::{checkpoint, device};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::PathBuf;

/// What a study runs: the flags of `detnas study`.
#[derive(Clone, Debug, Default)]
pub struct StudyOptions {
    /// Output folder (data, supernet, searches, retrained genomes, report.md, CSVs, plots).
    pub out: PathBuf,
    /// A shortened run that goes through every step in a few minutes; its numbers mean nothing.
    pub quick: bool,
    /// Random genomes under the budget for the ranking fidelity (a), 4 to 500 (default 20; 4 when
    /// quick); one more is scored, the median that sets the budget.
    pub genomes: Option<u64>,
    /// Seeds of each stand-alone retraining in (b), 1 to 20.
    pub seeds: u64,
    /// Iterations of the genes supernet (default: the schedule's), 10 to 100000.
    pub supernet_iterations: Option<usize>,
    /// Iterations of every stand-alone retraining (default: the schedule's), 10 to 100000.
    pub retrain_iterations: Option<usize>,
    /// Seed of the data, training, sampling and searches.
    pub seed: u64,
    /// Training and held-out COCO instances JSON instead of the synthetic set (images relative
    /// to each JSON).
    pub data: Option<[PathBuf; 2]>,
    /// Square input resolutions of the search space (multiples of 32 up to 2048; default 96,128,
    /// or 64,96 when quick).
    pub inputs: Option<Vec<u64>>,
    /// Continue the study in `out`, skipping the steps (and retrainings) it finished.
    pub resume: bool,
    /// Remove the study's own files from `out` first and start over.
    pub overwrite: bool,
    /// How the genes supernet is trained ([`supernet_method`]; default: uniform single-path).
    pub supernet: SupernetSettings,
    /// More supernets to train and score against the same yardstick, `METHOD[:ITERATIONS[:LR]]`
    /// each ([`AblationSpec::parse`]); each also runs the main search in its supernet and retrains
    /// the genome found with every seed. Runs already in the study are not repeated, so a finished
    /// study takes more with `resume`.
    pub ablate: Vec<String>,
}

pub use crate::study_ablation::supernet_method;

/// The method of `s` in words, for the report.
fn method_words(s: &SupernetSettings) -> String {
    let mut words = vec![match s.sampling {
        Sampling::Uniform => "uniform single-path sampling",
        Sampling::Fair => "strict fairness",
    }];
    if s.sandwich {
        words.push("the sandwich rule with in-place distillation");
    }
    if !s.block_bn_affine {
        words.push("choice-block BN without affine parameters");
    }
    words.join(", ")
}

/// Held-out AP and AP50 of one model.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Score {
    ap: f64,
    ap50: f64,
}

/// One recalibration setting of (a) / (c) and the inherited scores of the pool under it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RecalRow {
    batches: usize,
    ema: bool,
    inherited: Vec<Score>,
}

/// A retrained genome of (b) or (c).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Retrained {
    role: String,
    genome: String,
    seed: u64,
    predicted_ms: f64,
    score: Score,
}

/// A search of (c) and its found genome.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SearchRun {
    population: usize,
    generations: usize,
    genome: String,
    inherited_ap50: f64,
}

/// The study's results, recorded in `study.json` as they come.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StudyData {
    budget_ms: f64,
    median_genome: String,
    /// Random genomes at or under the budget, with their predicted latency.
    pool: Vec<(String, f64)>,
    standalone: Vec<Score>,
    /// Stand-alone scores of the pool with the yardstick's second seed.
    #[serde(default)]
    standalone_again: Vec<Score>,
    recal: Vec<RecalRow>,
    /// Training-free fitness of the pool and the genome each one's search found.
    #[serde(default)]
    free: Vec<FreeRun>,
    /// The sanity ladder.
    #[serde(default)]
    ladder: Option<Ladder>,
    /// The supernet ablation's runs, in the order they were asked for.
    #[serde(default)]
    ablation: Vec<AblationRun>,
    /// The ladder's middle rungs, in [`RUNGS`] order.
    #[serde(default)]
    rungs: Vec<Rung>,
    searches: Vec<SearchRun>,
    retrained: Vec<Retrained>,
}

/// The study's pipeline and what it runs.
struct Study {
    c: Ctx<StudyData>,
    plan: Plan,
}

impl Steps for Study {
    type Data = StudyData;
    fn pipeline(&mut self) -> &mut Pipeline<StudyData> {
        &mut self.c.p
    }
}

/// Recalibration settings of (c): (batches, EMA); the first exact one with the schedule's batch
/// count is the one the searches use.
const RECAL: [(usize, bool); 5] = [(0, false), (1, false), (5, false), (20, false), (20, true)];

struct Plan {
    genomes: usize,
    seeds: u64,
    budgets: Vec<(usize, usize)>,
}

fn schedule(quick: bool) -> Schedule {
    let mut s = if quick { Schedule::quick() } else { Schedule::full() };
    s.classes = 3;
    s.clutter = Clutter { objects: (2, 8), sizes: (8, 56), distractors: 4, occlusion_percent: 30 };
    if !quick {
        s.train_images = 160;
        s.val_images = 48;
        // The supernet trains 4x the stand-alone schedule: shorter, its box regression has not
        // passed the knee where inherited accuracy starts to mean something.
        s.supernet_iterations = 6000;
        s.retrain_iterations = 1500;
        // A larger held-out set is free and quiets the yardstick.
        s.val_images = 100;
    } else {
        s.clutter = Clutter { objects: (2, 4), sizes: (8, 40), distractors: 2, occlusion_percent: 30 };
    }
    s
}

/// Runs (or resumes) the study into `opts.out`; see the module documentation.
pub fn run(args: &StudyOptions) -> Result<()> {
    let mut schedule = schedule(args.quick);
    anyhow::ensure!((1..=20).contains(&args.seeds), "--seeds: 1 to 20 (got {})", args.seeds);
    anyhow::ensure!(args.genomes.is_none_or(|g| (4..=500).contains(&g)), "--genomes: 4 to 500");
    for (flag, n, field) in [
        ("--supernet-iterations", args.supernet_iterations, &mut schedule.supernet_iterations),
        ("--retrain-iterations", args.retrain_iterations, &mut schedule.retrain_iterations),
    ] {
        if let Some(n) = n {
            anyhow::ensure!(study_ablation::ITERATIONS.contains(&n), "{flag}: 10 to 100000 (got {n})");
            *field = n;
        }
    }
    if let Some([train, val]) = &args.data {
        let gt = detnas_core::coco::GroundTruth::load(train)?;
        schedule.classes = gt.category_ids().len();
        anyhow::ensure!(schedule.classes > 0, "{}: no categories: nothing to detect", train.display());
        schedule.data = Some([train.clone(), val.clone()]);
        schedule.clutter = Clutter::default();
    }
    schedule.supernet = args.supernet.clone();
    if let Some(inputs) = &args.inputs {
        anyhow::ensure!(
            !inputs.is_empty() && inputs.iter().all(|s| (32..=2048).contains(s) && s % 32 == 0),
            "--inputs: square sizes, multiples of 32 from 32 to 2048 (got {inputs:?})"
        );
        schedule.inputs = inputs.clone();
    }
    let specs = args
        .ablate
        .iter()
        .map(|t| AblationSpec::parse(t, (schedule.supernet_iterations, BASE_LR)))
        .collect::<Result<Vec<_>>>()?;
    let plan = Plan {
        genomes: args.genomes.unwrap_or(if args.quick { 4 } else { 20 }) as usize,
        seeds: args.seeds,
        budgets: if args.quick { vec![(3, 1), (4, 2)] } else { vec![(6, 2), (12, 4), (24, 6)] },
    };
    let settings = serde_json::json!({
        "seed": args.seed, "schedule": schedule, "genomes": plan.genomes, "seeds": plan.seeds, "budgets": plan.budgets,
    });
    let p = Pipeline::open(&args.out, "study.json", settings, args.resume, args.overwrite)?;
    let mut study = Study { c: Ctx { p, schedule, seed: args.seed }, plan };
    run_steps(
        &mut study,
        &[
            ("data", |d| make_data(&mut d.c)),
            ("supernet", |d| train_supernet(&mut d.c)),
            ("latency table", |d| build_table(&mut d.c)),
            ("pool", pool),
            ("inherited", inherited),
            ("stand-alone", standalone),
            ("searches", searches),
            ("training-free", free_fitness),
            ("contenders", contenders),
            ("ladder", sanity_ladder),
            ("ladder rungs", ladder_rungs),
        ],
    )?;
    ablation(&mut study, &specs)?;
    report(&mut study)?;
    eprintln!("study finished: {}", study.c.p.path("report.md").display());
    Ok(())
}

/// The budget (median predicted latency of 2n+1 random genomes) and the n+1 at or under it.
fn pool(d: &mut Study) -> Result<()> {
    let n = d.plan.genomes;
    let predicted = random_genomes(&d.c, 2 * n + 1, d.c.seed)?;
    let (budget, median) = predicted[n].clone();
    let data = &mut d.c.p.rec.data;
    data.budget_ms = budget;
    data.median_genome = median;
    data.pool = predicted[..=n].iter().map(|(ms, g)| (g.clone(), *ms)).collect();
    eprintln!("budget {budget:.2} ms (median of {} random genomes); {} genomes at or under it", 2 * n + 1, n + 1);
    Ok(())
}

/// Inherited scores of the pool under every recalibration setting.
fn inherited(d: &mut Study) -> Result<()> {
    let pool: Vec<String> = d.c.p.rec.data.pool.iter().map(|(g, _)| g.clone()).collect();
    let mut rows = Vec::new();
    for (batches, ema) in RECAL {
        let scores = inherited_scores(&d.c.p.path("supernet"), &pool, batches, ema, d.c.seed)?;
        let inherited = scores.into_iter().map(|(ap, ap50)| Score { ap, ap50 }).collect();
        eprintln!("recalibration {batches} batches{}: scored {} genomes", if ema { " (EMA)" } else { "" }, pool.len());
        rows.push(RecalRow { batches, ema, inherited });
    }
    d.c.p.rec.data.recal = rows;
    Ok(())
}

/// The ablation's supernets not yet in the study, each trained and scored in turn, then the search
/// in every run of the study that has not had it (resumable run by run and seed by seed; not a
/// step: a finished study takes more runs).
fn ablation(d: &mut Study, specs: &[AblationSpec]) -> Result<()> {
    let pool: Vec<String> = d.c.p.rec.data.pool.iter().map(|(g, _)| g.clone()).collect();
    let recal = d.c.schedule.recal_batches;
    for spec in specs {
        if d.c.p.rec.data.ablation.iter().any(|r| &r.spec == spec) {
            continue;
        }
        eprintln!("== ablation {}", spec.slug());
        let run = study_ablation::ablate(&mut d.c, spec, &pool, recal)?;
        d.c.p.rec.data.ablation.push(run);
        d.c.p.save()?;
    }
    // every run of the study, so records from before searches were part of the ablation get theirs
    let runs: Vec<AblationSpec> = d.c.p.rec.data.ablation.iter().map(|r| r.spec.clone()).collect();
    for spec in &runs {
        ablation_search(d, spec)?;
    }
    Ok(())
}

/// The study's main search in the ablation supernet `spec` (same budget, size and recalibration)
/// and its genome retrained stand-alone with every seed of the study (resumable seed by seed).
fn ablation_search(d: &mut Study, spec: &AblationSpec) -> Result<()> {
    let i = d.c.p.rec.data.ablation.iter().position(|r| &r.spec == spec).context("an ablation run")?;
    if d.c.p.rec.data.ablation[i].search.is_none() {
        let main = main_search(&d.c.p.rec.data);
        let (size, budget, recal) =
            ((main.population, main.generations), d.c.p.rec.data.budget_ms, d.c.schedule.recal_batches);
        eprintln!("== ablation {}: search", spec.slug());
        let (checkpoint, dir) = (spec.folder(), spec.search_folder());
        let (genome, inherited_ap50) = run_search(&mut d.c, (&checkpoint, &dir), budget, size, recal, false)?;
        d.c.p.rec.data.ablation[i].search =
            Some(AblationSearch { genome, inherited_ap50, standalone_ap50: Vec::new() });
        d.c.p.save()?;
    }
    loop {
        let found = d.c.p.rec.data.ablation[i].search.as_ref().context("searched above")?;
        let (genome, seed) = (found.genome.clone(), found.standalone_ap50.len() as u64);
        if seed >= d.plan.seeds {
            return Ok(());
        }
        eprintln!("== ablation {}: searched genome, seed {seed}", spec.slug());
        let score = retrain(d, &genome, &spec.retrain_folder(seed), d.c.seed.wrapping_add(seed))?;
        if let Some(s) = d.c.p.rec.data.ablation[i].search.as_mut() {
            s.standalone_ap50.push(score.ap50);
        }
        d.c.p.save()?;
    }
}

/// Retrains `genome` stand-alone into `dir` with `seed` and scores it on the held-out set.
fn retrain(d: &mut Study, genome: &str, dir: &str, seed: u64) -> Result<Score> {
    let mut cfg = train_config(&d.c, false);
    if !d.c.p.path("retrain.toml").is_file() {
        write_toml(&d.c.p.path("retrain.toml"), &cfg)?;
    }
    (cfg.arch, cfg.seed) = (Some(genome.to_string()), seed);
    let flags = ["--arch", genome, "--seed", &seed.to_string(), "--overwrite"].map(String::from);
    train(&mut d.c, &cfg, ("retrain.toml", dir), Start::Overwrite, "retinanet", &flags)?;
    let ck = checkpoint::open(&d.c.p.path(dir), None, device::parse("cpu")?)?;
    let stats = trainer::evaluate_checkpoint(&ck, &EvalOptions { val: None, recalibrate: 0 })?.stats;
    Ok(Score { ap: stats.stats[0].max(0.0), ap50: stats.stats[1].max(0.0) })
}

/// Stand-alone scores of the pool with the yardstick's two seeds (resumable genome by genome).
fn standalone(d: &mut Study) -> Result<()> {
    let pool = d.c.p.rec.data.pool.clone();
    for (i, (g, _)) in pool.iter().enumerate().skip(d.c.p.rec.data.standalone.len()) {
        let score = retrain(d, g, &format!("pool/{i:02}"), d.c.seed)?;
        d.c.p.rec.data.standalone.push(score);
        d.c.p.save()?;
    }
    for (i, (g, _)) in pool.iter().enumerate().skip(d.c.p.rec.data.standalone_again.len()) {
        let score = retrain(d, g, &format!("pool/{i:02}-seed2"), d.c.seed.wrapping_add(1))?;
        d.c.p.rec.data.standalone_again.push(score);
        d.c.p.save()?;
    }
    Ok(())
}

/// Training-free scores of the pool and a search with each training-free fitness under the
/// budget, at the main search's size.
fn free_fitness(d: &mut Study) -> Result<()> {
    let pool: Vec<String> = d.c.p.rec.data.pool.iter().map(|(g, _)| g.clone()).collect();
    let budget = d.c.p.rec.data.budget_ms;
    let size = d.plan.budgets[d.plan.budgets.len() / 2];
    for fitness in FREE.iter().skip(d.c.p.rec.data.free.len()) {
        let run = training_free(&mut d.c, *fitness, &pool, budget, size)?;
        d.c.p.rec.data.free.push(run);
        d.c.p.save()?;
    }
    Ok(())
}

/// (d) the sanity ladder.
fn sanity_ladder(d: &mut Study) -> Result<()> {
    let median = d.c.p.rec.data.median_genome.clone();
    let recal = d.c.schedule.recal_batches;
    let l = ladder(&mut d.c, &median, recal)?;
    d.c.p.rec.data.ladder = Some(l);
    d.c.p.save()
}

/// (d) the ladder's middle rungs, one dimension at a time (resumable rung by rung).
fn ladder_rungs(d: &mut Study) -> Result<()> {
    let genome = d.c.p.rec.data.ladder.as_ref().context("the ladder's first rung")?.genome.clone();
    let recal = d.c.schedule.recal_batches;
    // a quick run checks the machinery on two rungs: the backbone's choices and a detector gene
    let rungs = if d.c.schedule.quick { &RUNGS[..2] } else { &RUNGS[..] };
    for dimension in rungs {
        if d.c.p.rec.data.rungs.iter().any(|r| r.dimension == *dimension) {
            continue;
        }
        let r = rung(&mut d.c, &genome, dimension, recal)?;
        d.c.p.rec.data.rungs.push(r);
        d.c.p.save()?;
    }
    Ok(())
}

/// The yardstick: each pool genome's stand-alone AP50, the mean over the seeds.
fn yardstick(data: &StudyData) -> Vec<f64> {
    let again = |i: usize| data.standalone_again.get(i).map(|s| s.ap50);
    data.standalone.iter().enumerate().map(|(i, s)| again(i).map_or(s.ap50, |b| (s.ap50 + b) / 2.0)).collect()
}

/// The searches of (c) under the same budget; the middle one is the study's search.
fn searches(d: &mut Study) -> Result<()> {
    let budgets = d.plan.budgets.clone();
    let recal = d.c.schedule.recal_batches;
    for &(population, generations) in budgets.iter().skip(d.c.p.rec.data.searches.len()) {
        let dir = format!("search-{population}x{generations}");
        let budget = d.c.p.rec.data.budget_ms;
        let (genome, fitness) =
            run_search(&mut d.c, ("supernet", &dir), budget, (population, generations), recal, false)?;
        d.c.p.rec.data.searches.push(SearchRun { population, generations, genome, inherited_ap50: fitness });
        d.c.p.save()?;
    }
    Ok(())
}

/// The main search: the middle of the search budgets.
fn main_search(data: &StudyData) -> &SearchRun {
    &data.searches[data.searches.len() / 2]
}

/// The genome with every layer `shufflenet_3x3` and the detector genes of `genome`.
fn all_3x3(genome: &str) -> Result<String> {
    let space = detnas_core::SearchSpace::by_name(SPACE)?;
    let genes = genome.split_once(':').map(|(_, g)| g).context("a full genome")?;
    Ok(format!("{}:{genes}", Arch::uniform(&space, Choice::Shufflenet3x3).compact()))
}

/// (b) the searched genome and the two baselines with every seed, and (c) the genome of every
/// other search budget with the first seed (resumable run by run).
fn contenders(d: &mut Study) -> Result<()> {
    let data = &d.c.p.rec.data;
    let searched = main_search(data).genome.clone();
    let mut runs: Vec<(String, String, u64)> = Vec::new();
    for seed in 0..d.plan.seeds {
        runs.push(("searched".into(), searched.clone(), seed));
        runs.push(("all shufflenet_3x3".into(), all_3x3(&searched)?, seed));
        runs.push(("median random".into(), data.median_genome.clone(), seed));
    }
    for s in &data.searches {
        if s.genome != searched {
            runs.push((format!("search {}x{}", s.population, s.generations), s.genome.clone(), 0));
        }
    }
    for f in &data.free {
        for seed in 0..d.plan.seeds {
            runs.push((format!("searched by {}", f.fitness), f.genome.clone(), seed));
        }
    }
    for (k, (role, genome, seed)) in runs.into_iter().enumerate().skip(d.c.p.rec.data.retrained.len()) {
        let score = retrain(d, &genome, &format!("contenders/{k:02}"), d.c.seed.wrapping_add(seed))?;
        let predicted_ms = predicted_ms(&d.c, &genome)?;
        d.c.p.rec.data.retrained.push(Retrained { role, genome, seed, predicted_ms, score });
        d.c.p.save()?;
    }
    Ok(())
}

/// Kendall τ and Spearman ρ of `a` against `b`, each with a bootstrap 95% interval.
fn fidelity(a: &[f64], b: &[f64], seed: u64) -> (f64, Interval, f64, Interval) {
    let tau = kendall_tau(a, b);
    let rho = spearman(a, b);
    (tau, bootstrap(a, b, kendall_tau, 2000, seed), rho, bootstrap(a, b, spearman, 2000, seed))
}

fn report(d: &mut Study) -> Result<()> {
    let data = d.c.p.rec.data.clone();
    let stand50 = yardstick(&data);
    let main_recal = RECAL.iter().position(|&(b, e)| b == d.c.schedule.recal_batches && !e);
    let main_recal = main_recal.unwrap_or(2);

    // fidelity.csv: one row per pool genome
    let mut csv = String::from("genome,predicted_ms,standalone_ap,standalone_ap50,standalone_ap50_seed2");
    for r in &data.recal {
        let _ = write!(csv, ",inherited_ap50_recal{}{}", r.batches, if r.ema { "_ema" } else { "" });
    }
    for f in &data.free {
        let _ = write!(csv, ",{}", f.fitness);
    }
    csv.push('\n');
    for (i, ((g, ms), s)) in data.pool.iter().zip(&data.standalone).enumerate() {
        let again = data.standalone_again.get(i).map_or(String::new(), |a| format!("{:.5}", a.ap50));
        let _ = write!(csv, "{g},{ms:.4},{:.5},{:.5},{again}", s.ap, s.ap50);
        for r in &data.recal {
            let _ = write!(csv, ",{:.5}", r.inherited[i].ap50);
        }
        for f in &data.free {
            let _ = write!(csv, ",{:.6}", f.scores[i]);
        }
        csv.push('\n');
    }
    detnas_core::fsutil::write_atomic(&d.c.p.path("fidelity.csv"), csv.as_bytes())?;
    let mut csv = String::from("role,genome,seed,predicted_ms,ap,ap50\n");
    for r in &data.retrained {
        let _ = writeln!(
            csv,
            "{},{},{},{:.4},{:.5},{:.5}",
            r.role, r.genome, r.seed, r.predicted_ms, r.score.ap, r.score.ap50
        );
    }
    detnas_core::fsutil::write_atomic(&d.c.p.path("contenders.csv"), csv.as_bytes())?;
    let mut csv = String::from("population,generations,genome,inherited_ap50,standalone_ap50_seed0\n");
    let standalone_of =
        |genome: &str| data.retrained.iter().find(|r| r.genome == genome && r.seed == 0).map(|r| r.score.ap50);
    for s in &data.searches {
        let sa = standalone_of(&s.genome).map_or("".into(), |v| format!("{v:.5}"));
        let _ = writeln!(csv, "{},{},{},{:.5},{sa}", s.population, s.generations, s.genome, s.inherited_ap50);
    }
    detnas_core::fsutil::write_atomic(&d.c.p.path("search_budget.csv"), csv.as_bytes())?;

    // plots
    let inh50: Vec<f64> = data.recal[main_recal].inherited.iter().map(|s| s.ap50).collect();
    let points: Vec<(f64, f64)> = inh50.iter().copied().zip(stand50.iter().copied()).collect();
    scatter_png(
        &d.c.p.path("scatter.png"),
        "inherited (supernet) against stand-alone held-out AP50",
        ("inherited AP50 (supernet, recalibrated)", "stand-alone AP50 (retrained)"),
        &points,
    )?;
    let main = main_search(&data);
    let dir = format!("search-{}x{}", main.population, main.generations);
    let rows: Vec<CandidateRow> = serde_json::from_slice(&std::fs::read(d.c.p.path(&dir).join("candidates.json"))?)?;
    let mut refs = Vec::new();
    for role in ["searched", "all shufflenet_3x3", "median random"] {
        let runs: Vec<&Retrained> = data.retrained.iter().filter(|r| r.role == role).collect();
        if let Some(first) = runs.first() {
            let (mean, _) = mean_spread(&runs.iter().map(|r| r.score.ap50).collect::<Vec<_>>());
            refs.push((format!("{role} (retrained)"), first.predicted_ms, mean));
        }
    }
    pareto_png(&d.c.p.path("pareto.png"), "search candidates (supernet AP50) and retrained contenders", &rows, &refs)?;
    d.c.p.write_commands("study")?;

    let text = report_text(d, &data, main_recal);
    detnas_core::fsutil::write_atomic(&d.c.p.path("report.md"), text.as_bytes())?;
    println!("{text}");
    Ok(())
}

fn report_text(d: &Study, data: &StudyData, main_recal: usize) -> String {
    let s = &d.c.schedule;
    let mut r = String::from("# detnas study: does the search find better detectors?\n\n");
    if s.quick {
        r.push_str("**A `--quick` run: every step ran, on sizes too small for the numbers to mean anything.**\n\n");
    }
    let secs: f64 = d.c.p.rec.steps.iter().map(|(_, t)| t).sum();
    let _ = writeln!(
        r,
        "Data: {}. \
         Genes supernet: {} iterations of batch {} (inputs {:?}; {}). Stand-alone retraining: {} iterations from \
         scratch. Metric: held-out AP50. Seed {}. {:.0} minutes for the steps on {} ({} logical CPUs; the ablation's own in (e)); every command is \
         in `commands.sh`.\n",
        match &s.data {
            Some([train, val]) =>
                format!("`{}` (training), `{}` (held out), {} classes", train.display(), val.display(), s.classes),
            None => format!(
                "harder synthetic set, {} training / {} held-out images of {}x{}, {} classes, {} to {} objects of {} to {} \
                 pixels, up to {} distractors, {}% occlusion",
                s.train_images,
                s.val_images,
                s.image_size,
                s.image_size,
                s.classes,
                s.clutter.objects.0,
                s.clutter.objects.1,
                s.clutter.sizes.0,
                s.clutter.sizes.1,
                s.clutter.distractors,
                s.clutter.occlusion_percent
            ),
        },
        s.supernet_iterations,
        s.batch_size,
        s.inputs,
        method_words(&s.supernet),
        s.retrain_iterations,
        d.c.seed,
        secs / 60.0,
        detnas_infer::fingerprint::cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    let _ = writeln!(
        r,
        "Latency budget: **{:.3} ms** predicted on this machine's table (the median of {} random genomes, `{}`).\n",
        data.budget_ms,
        2 * data.pool.len() - 1,
        data.median_genome
    );

    ceiling_section(&mut r, d, data);
    fidelity_section(&mut r, d, data, main_recal);
    contenders_section(&mut r, d, data);
    budget_section(&mut r, data);
    ladder_section(&mut r, data);
    ablation_section(&mut r, d, data, main_recal);
    r
}

/// (e): the study's supernet and every ablation run against the yardstick.
fn ablation_section(r: &mut String, d: &Study, data: &StudyData, main_recal: usize) {
    let Some(main) = data.recal.get(main_recal) else { return };
    let main: Vec<f64> = main.inherited.iter().map(|s| s.ap50).collect();
    let (searched, main_search) = (ap50_of(data, "searched"), main_search(data));
    let s = &d.c.schedule;
    let log = training_log(&d.c.p.path("supernet")).unwrap_or((f64::NAN, (f64::NAN, f64::NAN)));
    let choices = detnas_core::SearchSpace::by_name(SPACE).map_or(1, |sp| sp.allowed.len());
    let mut rows = vec![Row {
        name: format!("the study's ({}), base learning rate {BASE_LR}", method_words(&s.supernet)),
        iterations: s.supernet_iterations,
        paths_per_step: study_ablation::paths_per_step(&s.supernet, choices),
        log,
        inherited: &main,
        searched: Some((main_search.genome.as_str(), main_search.inherited_ap50, &searched)),
    }];
    rows.extend(data.ablation.iter().map(|run| Row::of(run, &d.c.p.path(&run.spec.folder()))));
    let ceiling = ceiling(data).map(|c| c.0);
    study_ablation::section(r, &rows, &yardstick(data), ceiling, &ap50_of(data, "median random"), d.c.seed);
}

/// The stand-alone AP50 of the contender `role` of (b), one per seed.
fn ap50_of(data: &StudyData, role: &str) -> Vec<f64> {
    data.retrained.iter().filter(|x| x.role == role).map(|x| x.score.ap50).collect()
}

/// The yardstick's own reliability: its two seeds against each other.
fn ceiling(data: &StudyData) -> Option<(f64, f64)> {
    let n = data.standalone_again.len().min(data.standalone.len());
    (n >= 2).then(|| {
        let a: Vec<f64> = data.standalone[..n].iter().map(|s| s.ap50).collect();
        let b: Vec<f64> = data.standalone_again[..n].iter().map(|s| s.ap50).collect();
        let mean_abs = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>() / n as f64;
        (kendall_tau(&a, &b), mean_abs)
    })
}

fn ceiling_section(r: &mut String, d: &Study, data: &StudyData) {
    let _ = writeln!(r, "## The yardstick\n");
    let y = yardstick(data);
    let (mean, _) = mean_spread(&y);
    let between = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (y.len().max(2) - 1) as f64).sqrt();
    let _ = write!(
        r,
        "{} random genomes at or under the budget, each retrained stand-alone with 2 seeds ({} iterations); the \
         yardstick is the mean of the seeds' held-out AP50: mean {mean:.3}, standard deviation **{between:.3} between \
         genomes**. ",
        data.standalone.len(),
        d.c.schedule.retrain_iterations
    );
    match ceiling(data) {
        Some((tau, mean_abs)) => {
            let a: Vec<f64> = data.standalone.iter().map(|s| s.ap50).collect();
            let b: Vec<f64> = data.standalone_again.iter().map(|s| s.ap50).collect();
            let n = a.len().min(b.len());
            // one retraining's seed noise: the difference of two seeds has twice its variance
            let seed_sd = (a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / (2 * n) as f64).sqrt();
            let (_, ti, _, _) = fidelity(&a[..n], &b[..n], d.c.seed);
            let _ = writeln!(
                r,
                "One retraining's seed noise is a standard deviation of **{seed_sd:.3}** (mean |ΔAP50| {mean_abs:.3} \
                 between the seeds; the two-seed mean halves its variance). **Seed-to-seed ceiling: Kendall τ {tau:.2} \
                 [{:.2}, {:.2}]** between the two seeds: no fitness can rank the genomes more faithfully than the \
                 yardstick agrees with itself.\n",
                ti.lo, ti.hi
            );
        }
        None => r.push_str("(Too few genomes for a seed-to-seed ceiling.)\n\n"),
    }
}

/// (d): the sanity ladder.
fn ladder_section(r: &mut String, data: &StudyData) {
    let Some(l) = &data.ladder else { return };
    let _ = writeln!(r, "## (d) Sanity ladder\n");
    let _ = writeln!(
        r,
        "- One choice per layer and fixed genes (`{}`): the supernet's path scores AP50 {:.3}, the same genome \
         stand-alone on the same schedule and seed {:.3} (the test suite checks that the two train identically, \
         tensor by tensor).",
        l.genome, l.one_choice_inherited, l.standalone
    );
    let names = ["shufflenet_3x3", "shufflenet_5x5", "shufflenet_7x7", "xception_3x3 (crippled)"];
    let cells: Vec<String> = names.iter().zip(&l.crippled_supernet).map(|(n, v)| format!("{n} {v:.3}")).collect();
    let last = l.crippled_supernet.last().copied().unwrap_or(0.0);
    let below = l.crippled_supernet.iter().rev().skip(1).all(|&v| v > last);
    let _ = writeln!(
        r,
        "- A genes supernet whose `xception_3x3` branch outputs zeros, uniform paths' inherited AP50: {}. The \
         crippled path is ranked {}.\n",
        cells.join(", "),
        if below { "last" } else { "**not** last: the ranking signal does not see it" }
    );
    if data.rungs.is_empty() {
        return;
    }
    let _ = writeln!(
        r,
        "The rungs between: the same genome in a supernet where one dimension of the search space is elastic \
         (every other fixed at the genome's value), trained on the stand-alone schedule with the same seed; the \
         rung where its AP50 falls below the stand-alone {:.3} is where weight sharing breaks:\n",
        l.standalone
    );
    r.push_str(
        "| elastic dimension | AP50, running BN | AP50, recalibrated | recalibrated, of stand-alone |\n|---|---|---|---|\n",
    );
    let _ = writeln!(
        r,
        "| none (one choice, fixed genes) | {:.3} | - | {:.0}% |",
        l.one_choice_inherited,
        percent(l.one_choice_inherited, l.standalone)
    );
    for g in &data.rungs {
        let _ = writeln!(
            r,
            "| {} | {:.3} | {:.3} | {:.0}% |",
            g.dimension,
            g.running_ap50,
            g.recal_ap50,
            percent(g.recal_ap50, l.standalone)
        );
    }
    r.push('\n');
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { 100.0 * part / whole } else { 0.0 }
}

/// (a): Kendall τ and Spearman ρ of every fitness against the yardstick; the supernet's per
/// recalibration.
fn fidelity_section(r: &mut String, d: &Study, data: &StudyData, main_recal: usize) {
    let stand50 = yardstick(data);
    let _ = writeln!(r, "## (a) Ranking fidelity\n");
    let ceiling = ceiling(data).map_or("-".to_string(), |(t, _)| format!("{t:.2}"));
    let _ = writeln!(
        r,
        "Each fitness against the yardstick over the same {} genomes (95% bootstrap intervals over genomes, 2000 \
         resamples); the seed-to-seed ceiling is τ {ceiling}:\n",
        data.pool.len(),
    );
    r.push_str("| fitness | Kendall τ | Spearman ρ |\n|---|---|---|\n");
    let mut row = |name: String, scores: &[f64], bold: bool| {
        let (tau, ti, rho, ri) = fidelity(scores, &stand50, d.c.seed);
        let b = if bold { "**" } else { "" };
        let _ = writeln!(
            r,
            "| {b}{name}{b} | {tau:.2} [{:.2}, {:.2}] | {rho:.2} [{:.2}, {:.2}] |",
            ti.lo, ti.hi, ri.lo, ri.hi
        );
    };
    for (i, rc) in data.recal.iter().enumerate() {
        let inh: Vec<f64> = rc.inherited.iter().map(|s| s.ap50).collect();
        let name = match (rc.batches, rc.ema) {
            (0, _) => "supernet, no recalibration (its running statistics)".to_string(),
            (b, true) => format!("supernet, {b} batches, EMA 0.1"),
            (b, false) => format!("supernet, {b} batches, exact"),
        };
        row(name, &inh, i == main_recal);
    }
    for f in &data.free {
        let secs =
            if f.seconds_per_candidate < 0.01 { "< 0.01".into() } else { format!("{:.2}", f.seconds_per_candidate) };
        row(format!("{} ({secs} s per genome)", f.fitness), &f.scores, false);
    }
    r.push_str("\n![inherited against stand-alone](scatter.png)\n\nPer genome: `fidelity.csv`.\n\n");
}

/// (b): the searched genome against the baselines, over seeds.
fn contenders_section(r: &mut String, d: &Study, data: &StudyData) {
    let _ = writeln!(r, "## (b) Does the search win?\n");
    let main = main_search(data);
    let _ = writeln!(
        r,
        "The search ({} x {} generations, BN recalibration on {} batches) found `{}` (inherited AP50 {:.3}). \
         Each contender retrained stand-alone with {} seeds (mean ± largest deviation):\n",
        main.population, main.generations, d.c.schedule.recal_batches, main.genome, main.inherited_ap50, d.plan.seeds
    );
    r.push_str("| contender | genome | predicted latency | AP50 | AP |\n|---|---|---|---|---|\n");
    let mut roles: Vec<String> = ["searched", "all shufflenet_3x3", "median random"].map(String::from).to_vec();
    roles.extend(data.free.iter().map(|f| format!("searched by {}", f.fitness)));
    for role in &roles {
        let runs: Vec<&Retrained> = data.retrained.iter().filter(|x| &x.role == role).collect();
        let Some(first) = runs.first() else { continue };
        let (m50, s50) = mean_spread(&runs.iter().map(|x| x.score.ap50).collect::<Vec<_>>());
        let (m, sp) = mean_spread(&runs.iter().map(|x| x.score.ap).collect::<Vec<_>>());
        let _ = writeln!(
            r,
            "| {role} | `{}` | {:.3} ms | {m50:.3} ± {s50:.3} | {m:.3} ± {sp:.3} |",
            first.genome, first.predicted_ms
        );
    }
    r.push('\n');
    let median = ap50_of(data, "median random");
    for role in roles[..1].iter().chain(&roles[3..]) {
        let runs = ap50_of(data, role);
        if runs.is_empty() || median.is_empty() {
            continue;
        }
        let _ = writeln!(r, "- {role}: {}.", versus_median_line(&runs, &median));
    }
    r.push_str(study_ablation::WELCH);
    r.push_str("![Pareto plot](pareto.png)\n\n");
}

/// (c): the genome found under each search budget.
fn budget_section(r: &mut String, data: &StudyData) {
    let _ = writeln!(r, "## (c) Search budget\n");
    r.push_str(
        "| population x generations | found genome | inherited AP50 | stand-alone AP50 (seed 0) |\n|---|---|---|---|\n",
    );
    for s in &data.searches {
        let sa = data.retrained.iter().find(|x| x.genome == s.genome && x.seed == 0).map(|x| x.score.ap50);
        let _ = writeln!(
            r,
            "| {} x {} | `{}` | {:.3} | {} |",
            s.population,
            s.generations,
            s.genome,
            s.inherited_ap50,
            sa.map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
    r.push_str(
        "\nRecalibration's effect on the ranking is the table of (a). The numbers are what this run measured; \
         with a handful of genomes and seeds, intervals are wide and differences within the seed spread are noise.\n\n",
    );
}

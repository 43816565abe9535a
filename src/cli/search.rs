//! `detnas search`: evolutionary search on a trained detection supernet (DetNAS step 3), over
//! backbone paths or, on a supernet trained with `[genes]`, whole genomes (backbone + FPN/head
//! widths, depth, conv type, input resolution), under FLOPs and latency budgets.
//!
//! The search folder (`--out`) holds the resumable state, every evaluated candidate
//! (`candidates.csv`/`.json`), the Pareto front (`pareto.csv`, `pareto.png`), `best.json`, and the
//! finalists (`finalists.json`) with their recalibrated BN statistics (`bn/rank-N.safetensors`),
//! which `detnas export --search DIR` folds into the exported model.

use super::search_latency;
use super::search_report;
use super::values;
use anyhow::{Context, Result, bail};
use clap::Args;
use detnas_core::InputSize;
use detnas_core::cost::{Convention, FlopsTable};
use detnas_core::detector::DetectorConfig;
use detnas_core::evolution::{Constraint, Evolution, EvolutionConfig, Fitness, FlopsConstraint, Progress, Scored};
use detnas_core::fsutil::same_file;
use detnas_core::genome::{Candidate, DetectorGenes, GeneSpace};
use detnas_core::owner::{Existing, Flags, OwnedDir};
use detnas_core::pareto::{Finalist, Finalists, REPORT_FILES};
use detnas_core::plan::{Paths, detector_params};
use detnas_core::size::{format_count, parse_count};
use detnas_data::detection::DetectionDataset;
use detnas_infer::LatencyTable;
use detnas_train::detector::DetectionNet;
use detnas_train::modules::BnUpdate;
use detnas_train::search::{Metric, SupernetFitness};
use detnas_train::tch::Tensor;
use detnas_train::{checkpoint, device, trainer};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::train::coco_source;

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// A supernet checkpoint (`detnas train det-supernet`); one trained with `[genes]` is searched
    /// jointly over backbone and detector genes.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Held-out COCO JSON (default: the checkpoint's held-out data).
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Image folder of --coco (default: the JSON's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Backbone FLOPs budget at 224x224 (DetNAS convention), e.g. 300M.
    #[arg(long, value_parser = values::flops)]
    flops_max: Option<String>,
    /// Input size of the FLOPs budget.
    #[arg(long, default_value = "224x224", value_parser = values::input_size)]
    flops_input: String,
    /// Latency budget, predicted by --lut: `20ms`, `0.02s` or a number of milliseconds.
    #[arg(long, requires = "lut", value_parser = values::milliseconds)]
    latency_max: Option<f64>,
    /// Latency table of the target device (`detnas latency build`); its hash and fingerprint enter
    /// the search's configuration, so a resume under another table is refused.
    #[arg(long)]
    lut: Option<PathBuf>,
    /// Precision the latency budget is for (fp32 or int8); the --lut table must have been built
    /// for it (`detnas latency build --precision`). Default: the table's.
    #[arg(long, requires = "lut", value_parser = ["fp32", "int8"])]
    precision: Option<String>,
    /// Export the finalists and time them for real on the table's device (never falling back to
    /// another); finalists over the latency budget when measured are dropped.
    #[arg(long, requires = "latency_max")]
    measure: bool,
    /// Restrict the detector genes searched (TOML of the gene space's fields, each value one the
    /// supernet was trained with); one value per gene searches backbone paths at that detector.
    #[arg(long)]
    genes: Option<PathBuf>,
    /// Fail when the latency table was measured on another machine (default: one warning line).
    #[arg(long)]
    strict: bool,
    /// Candidates per generation.
    #[arg(long, default_value_t = 50, value_parser = values::genomes)]
    population: usize,
    /// Generations to run.
    #[arg(long, default_value_t = 20, value_parser = values::generations)]
    generations: usize,
    /// Best candidates kept as parents of the next generation (and the finalists).
    #[arg(long, default_value_t = 10, value_parser = values::genomes)]
    top_k: usize,
    /// Children made by mutation per generation.
    #[arg(long, default_value_t = 20, value_parser = values::genomes_or_none)]
    mutations: usize,
    /// Children made by crossover per generation.
    #[arg(long, default_value_t = 20, value_parser = values::genomes_or_none)]
    crossovers: usize,
    /// Probability that mutation changes each gene (each layer's choice, each detector gene).
    #[arg(long, default_value_t = 0.1, value_parser = values::probability)]
    mutation_prob: f64,
    /// BN recalibration batches per candidate.
    #[arg(long, default_value_t = 20, value_parser = values::recal_batches)]
    recal_batches: usize,
    /// Exponential moving average instead of the exact average for recalibration.
    #[arg(long)]
    ema: bool,
    /// Fitness: AP (0.50:0.95) or AP50.
    #[arg(long, default_value = "ap")]
    metric: String,
    /// Seed of the search (initial population, mutation, crossover, recalibration batches).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Search folder: state, candidates, Pareto front, best and finalists (default: the folder of
    /// --state).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Search state, written atomically after every evaluation; an existing one is resumed
    /// (default: <out>/state.json).
    #[arg(long)]
    state: Option<PathBuf>,
    /// cpu, cuda or cuda:N (the supernet's device).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Scores candidates: backbone paths with the checkpoint's detector, or whole genomes of a genes
/// supernet (recalibration batches cached per input resolution).
struct Scorer<'a> {
    paths: SupernetFitness<'a>,
    net: &'a DetectionNet,
    train: &'a DetectionDataset,
    batch_size: usize,
    batches: usize,
    seed: u64,
    by_input: HashMap<InputSize, Vec<Tensor>>,
}

impl Scorer<'_> {
    /// Builds the fixed recalibration batches at `genes`' input, once per input.
    fn prepare(&mut self, genes: &DetectorGenes) -> Result<()> {
        if !self.by_input.contains_key(&genes.input) {
            let det = genes.apply(self.net.cfg());
            let b = trainer::recalibration_batches(
                self.train,
                &det,
                self.batches,
                self.batch_size,
                self.seed,
                self.net.device(),
            )?;
            self.by_input.insert(genes.input, b);
        }
        Ok(())
    }
}

impl Fitness for Scorer<'_> {
    type Error = anyhow::Error;

    fn evaluate(&mut self, arch: &detnas_core::Arch) -> Result<f64> {
        Ok(self.paths.evaluate(arch)?)
    }

    fn evaluate_candidate(&mut self, c: &Candidate) -> Result<f64> {
        let Some(genes) = c.detector_genes() else { return self.evaluate(&c.arch) };
        let t = Instant::now();
        self.prepare(&genes)?;
        let (val, update, metric) = (self.paths.val, self.paths.update, self.paths.metric);
        let stats = trainer::score_genome(self.net, &c.arch, &genes, &self.by_input[&genes.input], val, update)?;
        self.paths.evaluations += 1;
        self.paths.time += t.elapsed();
        let v = match metric {
            Metric::Ap => stats.stats[0],
            Metric::Ap50 => stats.stats[1],
        };
        Ok(v.max(0.0))
    }
}

/// The command that owns search folders.
const COMMAND: &str = "search";

/// Files and folders of a search folder besides the report ([`REPORT_FILES`]) and the state.
const OUTPUT_FILES: [&str; 3] = ["pareto.png", "finalists.json", "bn/"];

/// The search folder and state file from `--out` / `--state`.
fn locations(args: &SearchArgs) -> Result<(PathBuf, PathBuf)> {
    match (&args.out, &args.state) {
        (Some(out), Some(state)) => Ok((out.clone(), state.clone())),
        (Some(out), None) => Ok((out.clone(), out.join("state.json"))),
        (None, Some(state)) => {
            let dir = state.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Ok((dir.to_path_buf(), state.clone()))
        }
        (None, None) => bail!("give the search folder with --out (or the state file with --state)"),
    }
}

fn progress_bar(total: usize, done: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total as u64);
    b.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} candidates, {per_sec}, eta {eta}").expect("valid template"),
    );
    b.set_position(done as u64);
    b
}

pub fn run(args: SearchArgs) -> Result<()> {
    let metric = match args.metric.as_str() {
        "ap" => Metric::Ap,
        "ap50" => Metric::Ap50,
        other => bail!("unknown metric `{other}` (ap or ap50)"),
    };
    let (out, state_path) = locations(&args)?;
    // An existing search of this folder is continued; a folder of another command or of the
    // user's own files is refused.
    let out_flag = if args.out.is_some() { "--out" } else { "--out (or --state in a folder of its own)" };
    let flags = Flags { out: out_flag, replace: "--out", resume: None };
    let owned = OwnedDir::open(&out, COMMAND, Existing::Resume, flags)?.dir;
    let checkpoint_state = args.checkpoint.join(detnas_core::checkpoint::STATE_FILE);
    if same_file(&state_path, &checkpoint_state) {
        bail!("--state {}: that is the checkpoint's own state file; choose another --state", state_path.display());
    }
    let mut ours: Vec<String> = OUTPUT_FILES.iter().map(|f| f.to_string()).collect();
    ours.extend(REPORT_FILES.map(String::from));
    if let Some(name) = state_path.file_name().filter(|_| same_file(state_path.parent().unwrap_or(&out), &out)) {
        ours.push(name.to_string_lossy().into_owned());
    }
    owned.note(&ours)?;
    let table = args.lut.as_deref().map(LatencyTable::load).transpose()?;
    let dev = device::parse(&args.device)?;
    let ck = checkpoint::open(&args.checkpoint, None, dev)?;
    if !ck.is_supernet() {
        bail!(
            "{} holds a single path; search needs a supernet checkpoint (`detnas train det-supernet`)",
            args.checkpoint.display()
        );
    }
    let (train, val) = ck.datasets(coco_source(args.coco.clone(), args.images.clone()))?;
    let cfg = &ck.config;
    let space = ck.space.clone();
    let base: DetectorConfig = ck.net.cfg().clone();
    let genes = match (&args.genes, ck.net.gene_space()) {
        (None, trained) => trained.cloned(),
        (Some(_), None) => bail!("--genes: {} was trained without [genes]", args.checkpoint.display()),
        (Some(path), Some(trained)) => Some(restricted_genes(path, trained)?),
    };
    // The recalibration batches stay in memory for the whole search, a set at each input searched.
    let recal_inputs = genes.as_ref().map_or_else(|| vec![cfg.detector.input], |g| g.input.clone());
    let what = "search --recal-batches";
    detnas_core::limits::check_batches_memory(what, args.recal_batches, cfg.batch_size, &recal_inputs)?;

    let mut constraints: Vec<Box<dyn Constraint + '_>> = Vec::new();
    if let Some(max) = &args.flops_max {
        let input = InputSize::parse(&args.flops_input)?;
        constraints.push(Box::new(FlopsConstraint {
            table: FlopsTable::new(&space, input)?,
            convention: Convention::Backbone,
            max: parse_count(max)?,
            context: format!("{} {input}", space.name),
        }));
    }
    if let (Some(t), Some(max_ms)) = (&table, args.latency_max) {
        if args.measure {
            // The finalists are timed on the table's device, never on another: check it now, not
            // after the search.
            let what = format!("measuring on {} for {}", t.fingerprint.device, t.source);
            detnas_infer::runtime::session_builder(t.fingerprint.threads, t.device()?, true, &what)?;
        }
        if let Some(p) = args.precision.as_deref().filter(|p| *p != t.fingerprint.precision) {
            bail!(
                "--precision {p}: latency table {} was measured at {} (build one with `detnas latency build --precision {p}`)",
                t.source,
                t.fingerprint.precision
            );
        }
        if let Some(warning) = t.check_here(args.strict)? {
            eprintln!("{warning}");
        }
        search_latency::check_feasible(t, &space, genes.as_ref(), &base, max_ms)?;
        constraints.push(Box::new(search_latency::constraint(t, &space, &base, max_ms)));
    }
    let config = EvolutionConfig {
        population: args.population,
        generations: args.generations,
        top_k: args.top_k,
        mutations: args.mutations,
        crossovers: args.crossovers,
        mutation_prob: args.mutation_prob,
        seed: args.seed,
        ..EvolutionConfig::default()
    };
    let mut engine =
        Evolution::joint(space.clone(), genes.clone(), config, constraints)?.with_state_file(&state_path)?;
    let update = if args.ema { BnUpdate::Ema(0.1) } else { BnUpdate::Cumulative };
    // A joint search recalibrates at each candidate's own input (Scorer::prepare).
    let batches = match genes {
        Some(_) => Vec::new(),
        None => {
            trainer::recalibration_batches(&train, &cfg.detector, args.recal_batches, cfg.batch_size, args.seed, dev)?
        }
    };
    let mut scorer = Scorer {
        paths: SupernetFitness {
            net: &ck.net,
            batches,
            val: &val,
            update,
            metric,
            evaluations: 0,
            time: Duration::ZERO,
        },
        net: &ck.net,
        train: &train,
        batch_size: cfg.batch_size,
        batches: args.recal_batches,
        seed: args.seed,
        by_input: HashMap::new(),
    };
    let flops = FlopsTable::new(&space, InputSize::IMAGENET)?;
    let bar = progress_bar(args.generations * args.population, engine.state().log.len());
    let outcome = engine.run(&mut scorer, |p| match p {
        Progress::Evaluated { generation, arch, fitness, done, total } => {
            bar.inc(1);
            bar.suspend(|| {
                eprintln!(
                    "gen {generation:>2} [{done:>3}/{total}] {arch}  {}  fitness {fitness:.4}",
                    format_count(flops.flops(arch, Convention::Backbone))
                )
            })
        }
        Progress::Generation(s) => bar.suspend(|| {
            eprintln!(
                "generation {} done: best {:.4} ({}), mean {:.4}, shortfall {}",
                s.generation, s.best.fitness, s.best.arch, s.mean_fitness, s.shortfall
            )
        }),
    })?;
    bar.finish_and_clear();
    let per_candidate = scorer.paths.mean_time();

    let predict_ms = |c: &Candidate| -> Result<f64> {
        let t = table.as_ref().context("no latency table")?;
        search_latency::predict(t, &space, &base, c)
    };
    let predict: Option<search_report::Predict<'_>> = table.as_ref().map(|_| &predict_ms as _);
    let measured = match (&table, args.measure, args.latency_max) {
        (Some(t), true, Some(max_ms)) => measure_finalists(t, &space, &base, &outcome.top_k, max_ms)?,
        _ => BTreeMap::new(),
    };
    let finalists: Vec<&Scored> = outcome
        .top_k
        .iter()
        .filter(|s| !args.measure || measured.get(&s.arch.key()).is_some_and(|ms| Some(*ms) <= args.latency_max))
        .collect();
    // The report is written whatever the finalists' fate, so a search is never lost.
    save_finalists(&out, &args.checkpoint, &ck, &scorer, &finalists, predict, &measured)?;
    let rows = search_report::rows(engine.state(), &space, &base, predict, &measured)?;
    let title = format!("{} search on {}", space.name, args.checkpoint.display());
    let best_text = finalists.first().map(|b| b.arch.to_string());
    let front = search_report::write(&out, &title, &rows, best_text.as_deref(), &[])?;
    let Some(best) = finalists.first().copied() else {
        bail!(
            "every finalist was over the {} ms budget when measured (see {}): the table predicts too low for these \
             candidates; lower --latency-max or rebuild the table",
            args.latency_max.unwrap_or_default(),
            out.join("candidates.csv").display()
        );
    };
    if args.json {
        let mut v = serde_json::to_value(&outcome)?;
        v["seconds_per_candidate"] = serde_json::json!(per_candidate.as_secs_f64());
        v["selected"] = serde_json::json!(best.arch.to_string());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let latency = predict.map(|p| p(&best.arch)).transpose()?.map(|ms| format!(", {ms:.2} ms predicted"));
        let measured_ms = measured.get(&best.arch.key()).map(|ms| format!(", {ms:.2} ms measured"));
        println!(
            "best {} fitness {:.4} ({} backbone FLOPs at 224x224{}{}) after {} evaluations; {:.2} s per candidate; \
             {} on the Pareto front; results in {}",
            best.arch,
            best.fitness,
            format_count(flops.flops(&best.arch, Convention::Backbone)),
            latency.unwrap_or_default(),
            measured_ms.unwrap_or_default(),
            outcome.evaluations,
            per_candidate.as_secs_f64(),
            front,
            out.display()
        );
    }
    Ok(())
}

/// A gene space read from `path` (genes left out keep the supernet's values) whose every value is
/// one the supernet was trained with.
fn restricted_genes(path: &Path, trained: &GeneSpace) -> Result<GeneSpace> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let invalid = || format!("invalid gene space {}", path.display());
    let given: toml::Table = toml::from_str(&text).with_context(invalid)?;
    let mut merged = toml::Table::try_from(trained).context("a gene space serializes")?;
    merged.extend(given);
    let g: GeneSpace = merged.try_into().with_context(invalid)?;
    let outside = |what: &str, ok: bool| if ok { None } else { Some(what.to_string()) };
    let bad: Vec<String> = [
        outside("fpn_channels", g.fpn_channels.iter().all(|v| trained.fpn_channels.contains(v))),
        outside("head_channels", g.head_channels.iter().all(|v| trained.head_channels.contains(v))),
        outside("head_convs", g.head_convs.iter().all(|v| trained.head_convs.contains(v))),
        outside("head_conv", g.head_conv.iter().all(|v| trained.head_conv.contains(v))),
        outside("input", g.input.iter().all(|v| trained.input.contains(v))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !bad.is_empty() {
        bail!("{}: values of {} were not trained in the supernet", path.display(), bad.join(", "));
    }
    Ok(g)
}

/// Builds each finalist (random weights) and times its model run on the table's device and thread
/// count, strictly (no fallback); returns the p50 milliseconds by candidate key.
fn measure_finalists(
    t: &LatencyTable,
    space: &detnas_core::SearchSpace,
    base: &DetectorConfig,
    top: &[Scored],
    max_ms: f64,
) -> Result<BTreeMap<String, f64>> {
    let runner = t.runner(true)?;
    let mut out = BTreeMap::new();
    for s in top {
        let ms = runner.detector(space, &s.arch.arch, &s.arch.detector_config(base))?.p50_ms;
        let verdict = if ms <= max_ms { "within" } else { "over" };
        let dropped = if ms <= max_ms { "" } else { ", dropped" };
        eprintln!("measured {}: {ms:.2} ms, {verdict} the {max_ms} ms budget{dropped}", s.arch);
        out.insert(s.arch.key(), ms);
    }
    Ok(out)
}

/// Recalibrates each finalist's path as its scoring did, saves its BN statistics and writes
/// `finalists.json`.
fn save_finalists(
    out: &Path,
    checkpoint: &Path,
    ck: &checkpoint::OpenCheckpoint,
    scorer: &Scorer<'_>,
    finalists: &[&Scored],
    predict: Option<search_report::Predict<'_>>,
    measured: &BTreeMap<String, f64>,
) -> Result<()> {
    let bn_dir = out.join("bn");
    if detnas_core::fsutil::is_symlink(&bn_dir) {
        bail!("{}: a symbolic link; the search writes only into folders it made", bn_dir.display());
    }
    std::fs::create_dir_all(&bn_dir).with_context(|| format!("creating {}", bn_dir.display()))?;
    let variables = ck.vs.variables();
    let mut list = Vec::new();
    for (i, s) in finalists.iter().enumerate() {
        let rank = i + 1;
        let genes = s.arch.detector_genes().unwrap_or_else(|| ck.net.default_genes());
        let batches = match s.arch.detector_genes() {
            Some(g) => scorer.by_input.get(&g.input).context("the finalist's batches were built while scoring")?,
            None => &scorer.paths.batches,
        };
        detnas_train::recal::recalibrate_genome(&ck.net, &s.arch.arch, &genes, batches, scorer.paths.update)?;
        let cfg = genes.apply(ck.net.cfg());
        let named: Vec<(String, Tensor)> = detector_params(&ck.space, Paths::Single(&s.arch.arch), &cfg)
            .into_iter()
            .filter(|p| p.buffer)
            .map(|p| {
                let t = variables
                    .get(&p.name)
                    .with_context(|| format!("BN statistics `{}` not in the supernet", p.name))?;
                Ok((p.name, t.shallow_clone()))
            })
            .collect::<Result<_>>()?;
        let rel = format!("bn/rank-{rank}.safetensors");
        detnas_core::owner::note(out, std::slice::from_ref(&rel))?;
        checkpoint::write_tensors(&out.join(&rel), &named)?;
        list.push(Finalist {
            rank,
            candidate: s.arch.to_string(),
            fitness: s.fitness,
            predicted_ms: predict.map(|p| p(&s.arch)).transpose()?,
            measured_ms: measured.get(&s.arch.key()).copied(),
            bn: rel,
        });
    }
    let f = Finalists {
        checkpoint: std::fs::canonicalize(checkpoint).with_context(|| checkpoint.display().to_string())?,
        space: ck.space.name.clone(),
        finalists: list,
    };
    f.write(out)?;
    Ok(())
}

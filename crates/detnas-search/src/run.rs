//! [`run`]: one search from options to report files, as `detnas search` runs it.

use crate::finalists::{measure_finalists, save_finalists};
use crate::fitness::{Recalibration, SearchFitness, SupernetScorer, TrainingFree};
use crate::options::{FitnessChoice, LatencyBudget, SearchOptions};
use crate::{latency, report};
use anyhow::{Context, Result, bail};
use detnas_core::detector::DetectorConfig;
use detnas_core::fsutil::same_file;
use detnas_core::owner::{Existing, Flags, OwnedDir};
use detnas_core::search::evolution::{
    self, Constraint, Evolution, Fitness, FlopsConstraint, GenerationSummary, Progress, Scored,
};
use detnas_core::search::genome::{Candidate, GeneSpace};
use detnas_core::search::pareto::{CandidateRow, Finalist, REPORT_FILES};
use detnas_core::size::format_count;
use detnas_core::space::cost::{Convention, FlopsTable};
use detnas_core::{InputSize, SearchSpace};
use detnas_infer::LatencyTable;
use detnas_train::checkpoint::{self, OpenCheckpoint};
use detnas_train::config::{DataSource, DetTrainConfig};
use detnas_train::device;
use detnas_train::modules::BnUpdate;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a running search reports, in order: [`Event::Started`] once, then evaluations and
/// generation summaries, with notices (warnings, measurements) where they happen.
#[derive(Debug)]
pub enum Event<'a> {
    /// The search starts with `done` of `total` evaluations already in its (resumed) state.
    Started {
        /// Evaluations of the whole search.
        total: usize,
        /// Evaluations found in the state.
        done: usize,
    },
    /// One candidate was scored.
    Evaluated {
        /// Generation (0-based).
        generation: usize,
        /// The candidate.
        candidate: &'a Candidate,
        /// Its backbone FLOPs at 224x224 (DetNAS convention).
        backbone_flops: u64,
        /// Its fitness.
        fitness: f64,
        /// Evaluations so far.
        done: usize,
        /// Evaluations of the whole search.
        total: usize,
    },
    /// A generation finished.
    Generation(&'a GenerationSummary),
    /// A line for the user: a table measured elsewhere, a finalist timed.
    Notice(String),
}

impl Event<'_> {
    /// The line `detnas search` prints for this event (`None` for [`Event::Started`]).
    pub fn line(&self) -> Option<String> {
        match self {
            Event::Started { .. } => None,
            Event::Evaluated { generation, candidate, backbone_flops, fitness, done, total } => Some(format!(
                "gen {generation:>2} [{done:>3}/{total}] {candidate}  {}  fitness {fitness:.4}",
                format_count(*backbone_flops)
            )),
            Event::Generation(s) => Some(format!(
                "generation {} done: best {:.4} ({}), mean {:.4}, shortfall {}",
                s.generation, s.best.fitness, s.best.arch, s.mean_fitness, s.shortfall
            )),
            Event::Notice(line) => Some(line.clone()),
        }
    }
}

/// Prints each event's [`Event::line`] to stderr.
pub fn print_event(event: Event<'_>) {
    if let Some(line) = event.line() {
        eprintln!("{line}");
    }
}

/// The selected candidate (the best finalist kept) with its costs.
#[derive(Clone, Debug)]
pub struct Selected {
    /// The finalist record (rank 1).
    pub finalist: Finalist,
    /// Backbone FLOPs at 224x224 (DetNAS convention).
    pub backbone_flops: u64,
}

/// What a search leaves: its folder's report files hold the same, this is for a program.
#[derive(Clone, Debug)]
pub struct SearchOutcome {
    /// The search folder.
    pub out: PathBuf,
    /// The engine's outcome: best, top-k, evaluations, per-generation history, rejections.
    pub evolution: evolution::SearchOutcome,
    /// Every evaluation, with FLOPs and predicted / measured latency.
    pub candidates: Vec<CandidateRow>,
    /// The Pareto front (indices into `candidates`).
    pub pareto_front: Vec<usize>,
    /// The finalists kept (all of the top-k, or those within the budget when measured).
    pub finalists: Vec<Finalist>,
    /// The first finalist.
    pub selected: Selected,
    /// Mean wall time of one evaluation.
    pub seconds_per_candidate: f64,
}

/// The command that owns search folders.
const COMMAND: &str = "search";

/// Files and folders of a search folder besides the report ([`REPORT_FILES`]) and the state.
const OUTPUT_FILES: [&str; 3] = ["pareto.png", "finalists.json", "bn/"];

/// Runs the search `opts` describes (quietly): see [`run_with`].
pub fn run(opts: &SearchOptions) -> Result<SearchOutcome> {
    run_with(opts, &mut |_| {})
}

/// Runs the search `opts` describes into its folder, calling `on_event` as it goes: opens (or
/// resumes) the owned search folder, checks every constraint before the first evaluation (an
/// impossible latency budget names the fastest candidate), evolves, measures the finalists when
/// asked, saves their BN statistics and writes the report files. The report is written even when
/// every finalist is then over a measured budget, which is an error naming `candidates.csv`.
pub fn run_with(opts: &SearchOptions, on_event: &mut dyn FnMut(Event<'_>)) -> Result<SearchOutcome> {
    opts.validate()?;
    let (out, state_path) = locations(opts);
    open_folder(opts, &out, &state_path)?;
    let table = opts.latency.as_ref().map(|l| LatencyTable::load(&l.table)).transpose()?;
    let latency = match (&opts.latency, &table) {
        (Some(budget), Some(t)) => Some((budget, t)),
        _ => None,
    };
    let place = Place { opts, out: &out, state: &state_path, latency };
    let FitnessChoice::Supernet { metric, recal_batches, ema } = opts.fitness else {
        let subject = training_free_subject(opts, table.as_ref())?;
        if opts.fitness == FitnessChoice::Zen {
            // the Zen-score holds two random image batches at each searched input
            let inputs = subject.genes.as_ref().map_or_else(|| vec![subject.base.input], |g| g.input.clone());
            let batch = detnas_train::zen::ZenOptions::default().batch;
            detnas_core::limits::check_batches_memory("search --fitness zen", 2, batch, &inputs)?;
        }
        let mut scorer =
            TrainingFree::new(opts.fitness, subject.space.clone(), subject.base.clone(), opts.evolution.seed)?;
        return place.search(&subject, &mut scorer, on_event);
    };
    let checkpoint = opts.checkpoint.as_deref().expect("SearchOptions::validate: the supernet needs a checkpoint");
    let ck = checkpoint::open(checkpoint, None, device::parse(&opts.device)?)?;
    if !ck.is_supernet() {
        bail!(
            "{} holds a single path; search needs a supernet checkpoint (`detnas train det-supernet`)",
            checkpoint.display()
        );
    }
    let source = opts.coco.clone().map(|c| DataSource { coco: Some(c), images: opts.images.clone(), voc: None });
    let (train, val) = ck.datasets(source)?;
    let genes = searched_genes(opts, &ck)?;
    // The recalibration batches stay in memory for the whole search, a set at each input searched.
    let recal_inputs = genes.as_ref().map_or_else(|| vec![ck.config.detector.input], |g| g.input.clone());
    detnas_core::limits::check_batches_memory(
        "search --recal-batches",
        recal_batches,
        ck.config.batch_size,
        &recal_inputs,
    )?;
    let subject = Subject { space: ck.space.clone(), base: ck.net.cfg().clone(), genes, checkpoint: Some(checkpoint) };
    let update = if ema { BnUpdate::Ema(0.1) } else { BnUpdate::Cumulative };
    let recal = Recalibration { batches: recal_batches, update, seed: opts.evolution.seed };
    let mut scorer = SupernetScorer::new(&ck, (&train, &val), metric, recal, subject.genes.is_some())?;
    place.search(&subject, &mut scorer, on_event)
}

/// What a search ranks: candidates of `space` whose detector genes (`genes`; `None`: the backbone
/// only) apply to `base`, from the supernet `checkpoint` if any.
struct Subject<'a> {
    space: SearchSpace,
    base: DetectorConfig,
    genes: Option<GeneSpace>,
    checkpoint: Option<&'a Path>,
}

/// The subject of a training-free search: a checkpoint's space, detector and genes; or those of
/// `--config` (`space`, `[detector]`, `[genes]`), the latency table's (space, classes, shuffle and
/// measured genes) or the defaults, with `--space` and `--genes` over them.
fn training_free_subject<'a>(opts: &'a SearchOptions, table: Option<&LatencyTable>) -> Result<Subject<'a>> {
    if let Some(dir) = opts.checkpoint.as_deref() {
        let ck = checkpoint::open(dir, None, device::parse("cpu")?)?;
        let genes = searched_genes(opts, &ck)?;
        return Ok(Subject { space: ck.space.clone(), base: ck.net.cfg().clone(), genes, checkpoint: Some(dir) });
    }
    let config = opts.config.as_deref().map(DetTrainConfig::load).transpose()?;
    let name = match (&opts.space, &config, table) {
        (Some(s), ..) => s.clone(),
        (None, Some(c), _) => c.space.clone(),
        (None, None, Some(t)) => t.space.clone(),
        (None, None, None) => DetTrainConfig::default().space,
    };
    let space = SearchSpace::by_name(&name)?;
    if let Some(t) = table.filter(|t| t.space != space.name) {
        bail!("--space {}: latency table {} was measured on {}", space.name, t.source, t.space);
    }
    let base = match (&config, table) {
        (Some(c), _) => c.detector.clone(),
        (None, Some(t)) => detnas_infer::latency::base_config(t.classes, t.shuffle),
        (None, None) => DetectorConfig::default(),
    };
    let measured = config.as_ref().and_then(|c| c.genes.clone()).or_else(|| table.map(|t| t.genes.clone()));
    let genes = match (&opts.genes, measured) {
        (Some(path), Some(known)) => Some(restricted_genes(path, &known)?),
        (Some(path), None) => Some(gene_space_file(path, &base)?),
        (None, known) => known,
    };
    Ok(Subject { space, base, genes, checkpoint: None })
}

/// A gene space from `path` (genes left out keep their defaults) that `base` accepts.
fn gene_space_file(path: &Path, base: &DetectorConfig) -> Result<GeneSpace> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let g: GeneSpace = toml::from_str(&text).with_context(|| format!("invalid gene space {}", path.display()))?;
    g.validate(base).with_context(|| path.display().to_string())?;
    Ok(g)
}

/// Where a search runs and against what budget.
struct Place<'a> {
    opts: &'a SearchOptions,
    out: &'a Path,
    state: &'a Path,
    latency: Option<(&'a LatencyBudget, &'a LatencyTable)>,
}

impl Place<'_> {
    /// Checks the constraints, evolves with `scorer` and writes the report.
    fn search(
        &self,
        subject: &Subject<'_>,
        scorer: &mut dyn SearchFitness,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<SearchOutcome> {
        let (opts, space, base) = (self.opts, &subject.space, &subject.base);
        let constraints = constraints(opts, space, subject.genes.as_ref(), base, self.latency, on_event)?;
        let mut engine = Evolution::joint(space.clone(), subject.genes.clone(), opts.evolution.clone(), constraints)?;
        if !opts.fitness.needs_checkpoint() {
            engine = engine.scored_by(opts.fitness.name());
        }
        let mut engine = engine.with_state_file(self.state)?;
        let evolution = evolve(&mut engine, scorer, space, opts, on_event)?;
        let seconds_per_candidate = scorer.mean_time().as_secs_f64();
        let finish = Finish { opts, out: self.out, subject, latency: self.latency };
        finish.write(engine.state(), evolution, scorer, seconds_per_candidate, on_event)
    }
}

/// The search folder and state file from `out` / `state`.
fn locations(opts: &SearchOptions) -> (PathBuf, PathBuf) {
    match (&opts.out, &opts.state) {
        (Some(out), Some(state)) => (out.clone(), state.clone()),
        (Some(out), None) => (out.clone(), out.join("state.json")),
        (None, Some(state)) => {
            let dir = state.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            (dir.to_path_buf(), state.clone())
        }
        (None, None) => unreachable!("SearchOptions::validate requires out or state"),
    }
}

/// Opens the owned search folder: an existing search of it is continued; a folder of another
/// command or of the user's own files is refused. Lists every file the search writes.
fn open_folder(opts: &SearchOptions, out: &Path, state_path: &Path) -> Result<()> {
    let out_flag = if opts.out.is_some() { "--out" } else { "--out (or --state in a folder of its own)" };
    let flags = Flags { out: out_flag, replace: "--out", resume: None };
    let owned = OwnedDir::open(out, COMMAND, Existing::Resume, flags)?.dir;
    let checkpoint_state = opts.checkpoint.as_ref().map(|c| c.join(detnas_core::checkpoint::STATE_FILE));
    if checkpoint_state.is_some_and(|c| same_file(state_path, &c)) {
        bail!("--state {}: that is the checkpoint's own state file; choose another --state", state_path.display());
    }
    let mut ours: Vec<String> = OUTPUT_FILES.iter().map(|f| f.to_string()).collect();
    ours.extend(REPORT_FILES.map(String::from));
    if let Some(name) = state_path.file_name().filter(|_| same_file(state_path.parent().unwrap_or(out), out)) {
        ours.push(name.to_string_lossy().into_owned());
    }
    owned.note(&ours)?;
    Ok(())
}

/// The detector genes searched: the supernet's, restricted by `opts.genes`; `None` for a
/// backbone-only supernet.
fn searched_genes(opts: &SearchOptions, ck: &OpenCheckpoint) -> Result<Option<GeneSpace>> {
    match (&opts.genes, ck.net.gene_space()) {
        (None, trained) => Ok(trained.cloned()),
        (Some(_), None) => bail!("--genes: {} was trained without [genes]", ck.dir.display()),
        (Some(path), Some(trained)) => Ok(Some(restricted_genes(path, trained)?)),
    }
}

/// A gene space read from `path` (genes left out keep the supernet's values) whose every value is
/// one the supernet was trained with.
pub fn restricted_genes(path: &Path, trained: &GeneSpace) -> Result<GeneSpace> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let invalid = || format!("invalid gene space {}", path.display());
    let given: toml::Table = toml::from_str(&text).with_context(invalid)?;
    let mut merged = toml::Table::try_from(trained).context("a gene space serializes")?;
    merged.extend(given);
    let g: GeneSpace = merged.try_into().with_context(invalid)?;
    let bad = g.outside(trained);
    if !bad.is_empty() {
        bail!("{}: values of {} were not trained in the supernet", path.display(), bad.join(", "));
    }
    Ok(g)
}

/// The hard constraints of the search: FLOPs, and latency on the table (checked here: device
/// available when measuring, precision, fingerprint, a reachable budget).
fn constraints<'a>(
    opts: &SearchOptions,
    space: &'a SearchSpace,
    genes: Option<&GeneSpace>,
    base: &'a DetectorConfig,
    latency: Option<(&LatencyBudget, &'a LatencyTable)>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Box<dyn Constraint + 'a>>> {
    let mut constraints: Vec<Box<dyn Constraint + 'a>> = Vec::new();
    if let Some(max) = opts.flops_max {
        let input = opts.flops_input;
        constraints.push(Box::new(FlopsConstraint {
            table: FlopsTable::new(space, input)?,
            convention: Convention::Backbone,
            max,
            context: format!("{} {input}", space.name),
        }));
    }
    if let Some((budget, t)) = latency {
        // The finalists are timed on the table's device (here or on the latency server), never
        // on another: check it now, not after the search (asking the server checks it answers).
        let remote = budget.remote.as_ref().filter(|_| budget.measure);
        if budget.measure && remote.is_none() {
            let what = format!("measuring on {} for {}", t.fingerprint.device, t.source);
            detnas_infer::runtime::session_builder(t.fingerprint.threads, t.device()?, true, &what)?;
        }
        if let Some(p) = budget.precision.as_deref().filter(|p| *p != t.fingerprint.precision) {
            bail!(
                "--precision {p}: latency table {} was measured at {} (build one with `detnas latency build --precision {p}`)",
                t.source,
                t.fingerprint.precision
            );
        }
        if let Some(warning) = t.check_on(remote, budget.strict)? {
            on_event(Event::Notice(warning));
        }
        latency::check_feasible(t, space, genes, base, budget.max_ms)?;
        constraints.push(Box::new(latency::constraint(t, space, base, budget.max_ms)));
    }
    Ok(constraints)
}

/// Runs the evolution, reporting every evaluation with its backbone FLOPs.
fn evolve(
    engine: &mut Evolution<'_>,
    fitness: &mut dyn SearchFitness,
    space: &SearchSpace,
    opts: &SearchOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<evolution::SearchOutcome> {
    let flops = FlopsTable::new(space, InputSize::IMAGENET)?;
    let total = opts.evolution.generations * opts.evolution.population;
    on_event(Event::Started { total, done: engine.state().log.len() });
    let outcome = engine.run(&mut FitnessRef(fitness), |p| match p {
        Progress::Evaluated { generation, arch, fitness, done, total } => on_event(Event::Evaluated {
            generation,
            candidate: arch,
            backbone_flops: flops.flops(arch, Convention::Backbone),
            fitness,
            done,
            total,
        }),
        Progress::Generation(s) => on_event(Event::Generation(s)),
    })?;
    Ok(outcome)
}

/// The end of a search: measurement, finalists, report.
struct Finish<'a> {
    opts: &'a SearchOptions,
    out: &'a Path,
    subject: &'a Subject<'a>,
    latency: Option<(&'a LatencyBudget, &'a LatencyTable)>,
}

impl Finish<'_> {
    /// Predicted milliseconds of `c` on the table, if there is one.
    fn predict(&self, c: &Candidate) -> Result<Option<f64>> {
        self.latency.map(|(_, t)| latency::predict(t, &self.subject.space, &self.subject.base, c)).transpose()
    }

    /// Measures (when asked), keeps the finalists within the budget, saves them and writes the
    /// report files.
    fn write(
        &self,
        state: &evolution::EvolutionState,
        evolution: evolution::SearchOutcome,
        fitness: &mut dyn SearchFitness,
        seconds_per_candidate: f64,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<SearchOutcome> {
        let (measure, max_ms) = match self.latency {
            Some((b, _)) => (b.measure, Some(b.max_ms)),
            None => (false, None),
        };
        let (space, base) = (&self.subject.space, &self.subject.base);
        let mut failed = None;
        let measured = match (self.latency, max_ms) {
            (Some((b, t)), Some(max)) if measure => {
                match measure_finalists(t, b.remote.as_ref(), (space, base), &evolution.top_k, max, on_event) {
                    Ok(m) => m,
                    // Nothing is lost: the finalists and the report are written with their
                    // predictions, and the error is returned after them.
                    Err(e) => {
                        on_event(Event::Notice(format!("measuring the finalists failed: {e:#}")));
                        failed = Some(e);
                        BTreeMap::new()
                    }
                }
            }
            _ => BTreeMap::new(),
        };
        let measure = measure && failed.is_none();
        let kept: Vec<&Scored> = evolution
            .top_k
            .iter()
            .filter(|s| !measure || measured.get(&s.arch.key()).is_some_and(|ms| Some(*ms) <= max_ms))
            .collect();
        // The report is written whatever the finalists' fate, so a search is never lost.
        let predict_ms = |c: &Candidate| -> Result<f64> { Ok(self.predict(c)?.unwrap_or_default()) };
        let predict: Option<report::Predict<'_>> = self.latency.map(|_| &predict_ms as _);
        let source = (self.subject.checkpoint, space);
        let finalists = save_finalists(self.out, source, fitness, &kept, predict, &measured)?;
        let scored_by = self.opts.fitness.name();
        let rows = report::rows(state, (space, base), predict, &measured, scored_by)?;
        let title = match self.subject.checkpoint {
            Some(c) => format!("{} search on {}", space.name, c.display()),
            None => format!("{} search by {scored_by}", space.name),
        };
        let best_text = kept.first().map(|b| b.arch.to_string());
        let front = report::write(self.out, &title, &rows, best_text.as_deref(), &[])?;
        if let Some(e) = failed {
            return Err(e.context(format!(
                "the finalists were not measured ({} and the report are written with predicted latencies; the same \
                 command again resumes the finished search and measures them)",
                self.out.join("finalists.json").display()
            )));
        }
        let (Some(best), Some(first)) = (kept.first(), finalists.first()) else {
            bail!(
                "every finalist was over the {} ms budget when measured (see {}): the table predicts too low for these \
                 candidates; lower --latency-max or rebuild the table",
                max_ms.unwrap_or_default(),
                self.out.join("candidates.csv").display()
            );
        };
        let flops = FlopsTable::new(space, InputSize::IMAGENET)?.flops(&best.arch, Convention::Backbone);
        Ok(SearchOutcome {
            out: self.out.to_path_buf(),
            selected: Selected { finalist: first.clone(), backbone_flops: flops },
            evolution,
            candidates: rows,
            pareto_front: front,
            finalists,
            seconds_per_candidate,
        })
    }
}

/// A `dyn SearchFitness` as the engine's [`Fitness`] (the engine takes a sized fitness).
struct FitnessRef<'a, 'b>(&'a mut (dyn SearchFitness + 'b));

impl Fitness for FitnessRef<'_, '_> {
    type Error = anyhow::Error;

    fn evaluate(&mut self, arch: &detnas_core::Arch) -> Result<f64> {
        self.0.evaluate(arch)
    }

    fn evaluate_candidate(&mut self, c: &Candidate) -> Result<f64> {
        self.0.evaluate_candidate(c)
    }
}

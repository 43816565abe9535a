//! What a search is asked to do: [`SearchOptions`], with the defaults of `detnas search` and the
//! equivalent command line ([`SearchOptions::command_line`]).

use anyhow::{Result, bail};
use detnas_core::InputSize;
use detnas_core::search::evolution::EvolutionConfig;
use detnas_train::search::Metric;
use std::path::PathBuf;

/// A latency budget predicted by a latency table of the target device.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyBudget {
    /// The table (`detnas latency build`); its hash and fingerprint enter the search's
    /// configuration, so a resume under another table is refused.
    pub table: PathBuf,
    /// Budget in milliseconds (finite, > 0).
    pub max_ms: f64,
    /// Precision the budget is for (`fp32` or `int8`); the table must have been built for it.
    /// `None`: the table's.
    pub precision: Option<String>,
    /// Export the finalists and time them for real on the table's device (never another);
    /// finalists over the budget when measured are dropped.
    pub measure: bool,
    /// Fail when the table was measured on another machine (otherwise one warning notice).
    pub strict: bool,
    /// Time the finalists (`measure`) on this latency server, the target machine, instead of here.
    pub remote: Option<detnas_infer::latency::Remote>,
}

/// How a candidate is ranked: the supernet's inherited accuracy, or a training-free score
/// ([`detnas_core::search::training_free`], [`detnas_train::zen`]) that needs no checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FitnessChoice {
    /// Held-out COCO accuracy of the candidate's path in the supernet, after BN recalibration on
    /// fixed training batches at the candidate's input.
    Supernet {
        /// AP (0.50:0.95) or AP50.
        metric: Metric,
        /// Recalibration batches per candidate (≥ 1).
        recal_batches: usize,
        /// Exponential moving average instead of the exact average for recalibration.
        ema: bool,
    },
    /// The MAE-DET maximum-entropy score, analytic from the layer shapes.
    Madnas,
    /// The Zen-score: random Gaussian weights and images, output change under a small perturbation.
    Zen,
    /// Trainable parameters of the whole detector (a baseline every proxy must beat).
    Params,
    /// Multiply-adds of the whole detector at its input (the other baseline).
    Flops,
}

impl Default for FitnessChoice {
    fn default() -> Self {
        FitnessChoice::Supernet { metric: Metric::Ap, recal_batches: 20, ema: false }
    }
}

impl FitnessChoice {
    /// The names `--fitness` takes.
    pub const NAMES: [&'static str; 5] = ["supernet", "madnas", "zen", "params", "flops"];

    /// The training-free fitness named `name` (`supernet` needs its settings: see [`Self::default`]).
    pub fn training_free(name: &str) -> Result<FitnessChoice> {
        Ok(match name {
            "madnas" => FitnessChoice::Madnas,
            "zen" => FitnessChoice::Zen,
            "params" => FitnessChoice::Params,
            "flops" => FitnessChoice::Flops,
            other => bail!("--fitness {other}: one of madnas, zen, params, flops (or supernet)"),
        })
    }

    /// The fitness named `name`, the supernet's with its default settings.
    pub fn by_name(name: &str) -> Result<FitnessChoice> {
        match name {
            "supernet" => Ok(FitnessChoice::default()),
            other => FitnessChoice::training_free(other),
        }
    }

    /// The name `--fitness` takes for this choice; what `candidates.csv` records as `scored_by`.
    pub fn name(&self) -> &'static str {
        match self {
            FitnessChoice::Supernet { .. } => "supernet",
            FitnessChoice::Madnas => "madnas",
            FitnessChoice::Zen => "zen",
            FitnessChoice::Params => "params",
            FitnessChoice::Flops => "flops",
        }
    }

    /// Whether the fitness needs a trained supernet.
    pub fn needs_checkpoint(&self) -> bool {
        matches!(self, FitnessChoice::Supernet { .. })
    }
}

/// Everything a search runs on. Construct with [`SearchOptions::new`] (the defaults of
/// `detnas search`) and set fields; [`crate::run`] validates every value before any work.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchOptions {
    /// A supernet checkpoint (`detnas train det-supernet`); one trained with `[genes]` is searched
    /// jointly over backbone and detector genes. Required by the supernet fitness; a training-free
    /// search takes its space, detector and genes from it when given.
    pub checkpoint: Option<PathBuf>,
    /// The search space of a training-free search without a checkpoint (default: `config`'s, else
    /// the latency table's, else `detnas-300m`).
    pub space: Option<String>,
    /// A training configuration (TOML, as `detnas train det`) whose `space`, `[detector]` and
    /// `[genes]` a training-free search without a checkpoint searches (default: the latency
    /// table's detector and gene space, else the default RetinaNet with fixed genes).
    pub config: Option<PathBuf>,
    /// Held-out COCO JSON (default: the checkpoint's held-out data).
    pub coco: Option<PathBuf>,
    /// Image folder of `coco` (default: the JSON's folder).
    pub images: Option<PathBuf>,
    /// Search folder: state, candidates, Pareto front, best and finalists (default: the folder of
    /// `state`; one of the two is required).
    pub out: Option<PathBuf>,
    /// Search state, written atomically after every evaluation; an existing one is resumed
    /// (default: `<out>/state.json`).
    pub state: Option<PathBuf>,
    /// Backbone FLOPs budget (DetNAS convention) at `flops_input`.
    pub flops_max: Option<u64>,
    /// Input size of the FLOPs budget.
    pub flops_input: InputSize,
    /// Latency budget on a latency table.
    pub latency: Option<LatencyBudget>,
    /// Restricts the detector genes searched: a TOML file of the gene space's fields (genes left
    /// out keep the supernet's, configuration's or table's values), each value one the supernet
    /// was trained with (or the table measured).
    pub genes: Option<PathBuf>,
    /// Population, generations, parents, mutation and crossover counts, seed.
    pub evolution: EvolutionConfig,
    /// How candidates are ranked.
    pub fitness: FitnessChoice,
    /// `cpu`, `cuda` or `cuda:N`: the supernet's device.
    pub device: String,
}

impl SearchOptions {
    /// The options of `detnas search --checkpoint CHECKPOINT --out OUT` with every other flag at
    /// its default.
    pub fn new(checkpoint: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        SearchOptions {
            checkpoint: Some(checkpoint.into()),
            space: None,
            config: None,
            coco: None,
            images: None,
            out: Some(out.into()),
            state: None,
            flops_max: None,
            flops_input: InputSize::IMAGENET,
            latency: None,
            genes: None,
            evolution: EvolutionConfig::default(),
            fitness: FitnessChoice::default(),
            device: "cpu".into(),
        }
    }

    /// The options of `detnas search --fitness FITNESS --out OUT` (a training-free search: no
    /// checkpoint; set `space`, `config` or a latency table for what it searches).
    pub fn training_free(fitness: FitnessChoice, out: impl Into<PathBuf>) -> Self {
        let mut o = SearchOptions::new("", out);
        o.checkpoint = None;
        o.fitness = fitness;
        o
    }

    /// Refuses values no search can run with (the command line's bounds apply to the numbers it
    /// parses; a program gets the same checks here).
    pub fn validate(&self) -> Result<()> {
        self.evolution.validate()?;
        if self.out.is_none() && self.state.is_none() {
            bail!("give the search folder with --out (or the state file with --state)");
        }
        if let FitnessChoice::Supernet { recal_batches, .. } = self.fitness {
            if recal_batches == 0 {
                bail!("--recal-batches: at least 1 batch recalibrates BN");
            }
            if self.checkpoint.is_none() {
                bail!("--fitness supernet ranks with a supernet: give --checkpoint (or a training-free --fitness)");
            }
            if self.space.is_some() || self.config.is_some() {
                bail!("--space and --config are for a training-free search; the supernet's checkpoint sets both");
            }
        } else if self.checkpoint.is_some() && (self.space.is_some() || self.config.is_some()) {
            bail!("--space and --config: the checkpoint already sets the space and detector; give one or the other");
        }
        if self.coco.is_some() && !self.fitness.needs_checkpoint() {
            bail!("--coco: a training-free fitness uses no data");
        }
        if let Some(l) = &self.latency {
            if !(l.max_ms.is_finite() && l.max_ms > 0.0) {
                bail!("--latency-max: {} is not a positive, finite number of milliseconds", l.max_ms);
            }
            if let Some(p) = l.precision.as_deref().filter(|p| !["fp32", "int8"].contains(p)) {
                bail!("--precision {p}: fp32 or int8");
            }
        }
        Ok(())
    }

    /// The `detnas search` arguments (after `detnas search`) that run this search: what
    /// `commands.sh` of a demo or study records.
    pub fn command_line(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut flag = |name: &str, value: String| {
            a.push(format!("--{name}"));
            a.push(value);
        };
        let path = |p: &PathBuf| p.display().to_string();
        let optional = [
            ("checkpoint", &self.checkpoint),
            ("config", &self.config),
            ("coco", &self.coco),
            ("images", &self.images),
            ("out", &self.out),
            ("state", &self.state),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                flag(name, path(v));
            }
        }
        if let Some(s) = &self.space {
            flag("space", s.clone());
        }
        if let Some(f) = self.flops_max {
            flag("flops-max", f.to_string());
            flag("flops-input", self.flops_input.to_string());
        }
        if let Some(l) = &self.latency {
            flag("lut", path(&l.table));
            flag("latency-max", format!("{}ms", l.max_ms));
            if let Some(p) = &l.precision {
                flag("precision", p.clone());
            }
            if let Some(r) = &l.remote {
                // never the token: it stays in the environment (DETNAS_REMOTE_TOKEN)
                flag("remote", r.url().to_string());
            }
        }
        if let Some(g) = &self.genes {
            flag("genes", path(g));
        }
        let e = &self.evolution;
        flag("population", e.population.to_string());
        flag("generations", e.generations.to_string());
        flag("top-k", e.top_k.to_string());
        flag("mutations", e.mutations.to_string());
        flag("crossovers", e.crossovers.to_string());
        flag("mutation-prob", e.mutation_prob.to_string());
        let mut ema = false;
        match self.fitness {
            FitnessChoice::Supernet { metric, recal_batches, ema: on } => {
                flag("recal-batches", recal_batches.to_string());
                flag("metric", if metric == Metric::Ap { "ap" } else { "ap50" }.to_string());
                ema = on;
            }
            other => flag("fitness", other.name().to_string()),
        }
        flag("seed", e.seed.to_string());
        flag("device", self.device.clone());
        let switches = [
            ("--measure", self.latency.as_ref().is_some_and(|l| l.measure)),
            ("--strict", self.latency.as_ref().is_some_and(|l| l.strict)),
            ("--ema", ema),
        ];
        a.extend(switches.iter().filter(|(_, on)| *on).map(|(s, _)| s.to_string()));
        a
    }
}

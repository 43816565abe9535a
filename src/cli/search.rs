//! `detnas search`: evolutionary search on a trained detection supernet (DetNAS step 3), over
//! backbone paths or, on a supernet trained with `[genes]`, whole genomes (backbone + FPN/head
//! widths, depth, conv type, input resolution), under FLOPs and latency budgets; or, with a
//! training-free `--fitness`, without any trained weights. The search itself
//! is [`detnas_search::run_with`]; this module maps flags to [`SearchOptions`] and draws progress.

use super::values;
use anyhow::{Result, bail};
use clap::Args;
use detnas_core::InputSize;
use detnas_core::search::evolution::EvolutionConfig;
use detnas_core::size::{format_count, parse_count};
use detnas_search::{Event, FitnessChoice, LatencyBudget, Metric, SearchOptions, SearchOutcome};
use indicatif::ProgressBar;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// A supernet checkpoint (`detnas train det-supernet`); one trained with `[genes]` is searched
    /// jointly over backbone and detector genes. Required by `--fitness supernet`.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// How candidates are ranked: `supernet` (held-out accuracy inherited from --checkpoint), or a
    /// training-free score needing no checkpoint nor data: `madnas` (MAE-DET entropy), `zen`
    /// (Zen-score), `params`, `flops` (the baselines).
    #[arg(long, default_value = "supernet", value_parser = FitnessChoice::NAMES)]
    fitness: String,
    /// Search space of a training-free search (default: --config's, else the --lut table's, else
    /// detnas-300m).
    #[arg(long, conflicts_with = "checkpoint", value_parser = detnas_core::space::SPACE_NAMES)]
    space: Option<String>,
    /// Training configuration (TOML) whose space, `[detector]` and `[genes]` a training-free search
    /// searches (default: the --lut table's detector and genes).
    #[arg(long, conflicts_with = "checkpoint")]
    config: Option<PathBuf>,
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
    /// With --measure: time the finalists on this latency server (`detnas latency serve` on the
    /// target machine) instead of here.
    #[command(flatten)]
    remote: super::latency::RemoteArgs,
    /// Restrict the detector genes searched (TOML of the gene space's fields, each value one the
    /// supernet was trained with or the --lut table measured); one value per gene searches backbone
    /// paths at that detector.
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
    /// BN recalibration batches per candidate (`--fitness supernet`; default 20).
    #[arg(long, value_parser = values::recal_batches)]
    recal_batches: Option<usize>,
    /// Exponential moving average instead of the exact average for recalibration (`--fitness
    /// supernet`).
    #[arg(long)]
    ema: bool,
    /// Supernet fitness: AP (0.50:0.95) or AP50 (`--fitness supernet`; default ap).
    #[arg(long)]
    metric: Option<String>,
    /// Seed of the search (initial population, mutation, crossover, recalibration batches).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Search folder: state, candidates, Pareto front, best and finalists (default: the folder of
    /// --state).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Search state, written atomically after every evaluation; an existing one is resumed
    /// (default: state.json in --out).
    #[arg(long)]
    state: Option<PathBuf>,
    /// cpu, cuda or cuda:N (the supernet's device).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

impl SearchArgs {
    /// The library's options for these flags.
    fn options(&self) -> Result<SearchOptions> {
        let metric = match self.metric.as_deref().unwrap_or("ap") {
            "ap" => Metric::Ap,
            "ap50" => Metric::Ap50,
            other => bail!("unknown metric `{other}` (ap or ap50)"),
        };
        if self.remote.given() && !self.measure {
            bail!("--remote times the finalists on the target: give --measure with it");
        }
        let latency = match (&self.lut, self.latency_max) {
            (Some(table), Some(max_ms)) => Some(LatencyBudget {
                table: table.clone(),
                max_ms,
                precision: self.precision.clone(),
                measure: self.measure,
                strict: self.strict,
                remote: self.remote.open()?,
            }),
            _ => None,
        };
        let recal_batches = self.recal_batches.unwrap_or(20);
        let fitness = match self.fitness.as_str() {
            "supernet" => FitnessChoice::Supernet { metric, recal_batches, ema: self.ema },
            other => {
                if self.metric.is_some() || self.recal_batches.is_some() || self.ema {
                    bail!("--metric, --recal-batches and --ema set the supernet fitness, not --fitness {other}");
                }
                FitnessChoice::training_free(other)?
            }
        };
        Ok(SearchOptions {
            checkpoint: self.checkpoint.clone(),
            space: self.space.clone(),
            config: self.config.clone(),
            coco: self.coco.clone(),
            images: self.images.clone(),
            out: self.out.clone(),
            state: self.state.clone(),
            flops_max: self.flops_max.as_deref().map(parse_count).transpose()?,
            flops_input: InputSize::parse(&self.flops_input)?,
            latency,
            genes: self.genes.clone(),
            evolution: EvolutionConfig {
                population: self.population,
                generations: self.generations,
                top_k: self.top_k,
                mutations: self.mutations,
                crossovers: self.crossovers,
                mutation_prob: self.mutation_prob,
                seed: self.seed,
                ..EvolutionConfig::default()
            },
            fitness,
            device: self.device.clone(),
        })
    }
}

/// Prints a search's events to stderr, under a progress bar on a terminal.
pub fn print_event(bar: &mut ProgressBar, event: Event<'_>) {
    match event {
        Event::Started { total, done } => {
            *bar = super::progress_bar(total, done, "{bar:40} {pos}/{len} candidates, {per_sec}, eta {eta}")
        }
        e => {
            if matches!(e, Event::Evaluated { .. }) {
                bar.inc(1);
            }
            if let Some(line) = e.line() {
                bar.suspend(|| eprintln!("{line}"));
            }
        }
    }
}

pub fn run(args: SearchArgs) -> Result<()> {
    let opts = args.options()?;
    let mut bar = ProgressBar::hidden();
    let outcome = detnas_search::run_with(&opts, &mut |e| print_event(&mut bar, e));
    bar.finish_and_clear();
    let outcome = outcome?;
    if args.json {
        let mut v = serde_json::to_value(&outcome.evolution)?;
        v["seconds_per_candidate"] = serde_json::json!(outcome.seconds_per_candidate);
        v["selected"] = serde_json::json!(outcome.selected.finalist.candidate);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", summary(&outcome));
    }
    Ok(())
}

/// The one-line outcome.
fn summary(o: &SearchOutcome) -> String {
    let best = &o.selected.finalist;
    let latency = best.predicted_ms.map(|ms| format!(", {ms:.2} ms predicted"));
    let measured_ms = best.measured_ms.map(|ms| format!(", {ms:.2} ms measured"));
    format!(
        "best {} fitness {:.4} ({} backbone FLOPs at 224x224{}{}) after {} evaluations; {:.2} s per candidate; \
         {} on the Pareto front; results in {}",
        best.candidate,
        best.fitness,
        format_count(o.selected.backbone_flops),
        latency.unwrap_or_default(),
        measured_ms.unwrap_or_default(),
        o.evolution.evaluations,
        o.seconds_per_candidate,
        o.pareto_front.len(),
        o.out.display()
    )
}

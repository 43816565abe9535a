//! `detnas search`: evolutionary architecture search on a trained detection supernet (DetNAS step 3).

use anyhow::{Result, bail};
use clap::Args;
use detnas_core::InputSize;
use detnas_core::cost::{Convention, FlopsTable};
use detnas_core::evolution::{Constraint, Evolution, EvolutionConfig, FlopsConstraint, Progress};
use detnas_core::size::{format_count, parse_count};
use detnas_train::modules::BnUpdate;
use detnas_train::search::{Metric, SupernetFitness};
use detnas_train::{checkpoint, device, trainer};
use std::path::PathBuf;

use super::train::coco_source;

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// A supernet checkpoint (`detnas train det-supernet`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Held-out COCO JSON (default: the checkpoint's held-out data).
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Image folder of --coco (default: the JSON's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Backbone FLOPs budget at 224x224 (DetNAS convention), e.g. 300M.
    #[arg(long)]
    flops_max: Option<String>,
    /// Input size of the FLOPs budget.
    #[arg(long, default_value = "224x224")]
    flops_input: String,
    /// Candidates per generation.
    #[arg(long, default_value_t = 50)]
    population: usize,
    /// Generations to run.
    #[arg(long, default_value_t = 20)]
    generations: usize,
    /// Best candidates kept as parents of the next generation.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Children made by mutation per generation.
    #[arg(long, default_value_t = 20)]
    mutations: usize,
    /// Children made by crossover per generation.
    #[arg(long, default_value_t = 20)]
    crossovers: usize,
    /// Probability that mutation changes each layer's choice.
    #[arg(long, default_value_t = 0.1)]
    mutation_prob: f64,
    /// BN recalibration batches per candidate.
    #[arg(long, default_value_t = 20)]
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
    /// Search state (written atomically after every evaluation; an existing file is resumed).
    #[arg(long)]
    state: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SearchArgs) -> Result<()> {
    let metric = match args.metric.as_str() {
        "ap" => Metric::Ap,
        "ap50" => Metric::Ap50,
        other => bail!("unknown metric `{other}` (ap or ap50)"),
    };
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
    let batches =
        trainer::recalibration_batches(&train, &cfg.detector, args.recal_batches, cfg.batch_size, args.seed, dev)?;
    let space = ck.space.clone();
    let net = &ck.net;

    let mut constraints: Vec<Box<dyn Constraint>> = Vec::new();
    if let Some(max) = &args.flops_max {
        let input = InputSize::parse(&args.flops_input)?;
        constraints.push(Box::new(FlopsConstraint {
            table: FlopsTable::new(&space, input)?,
            convention: Convention::Backbone,
            max: parse_count(max)?,
            context: format!("{} {input}", space.name),
        }));
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
    let mut engine = Evolution::new(space.clone(), config, constraints)?.with_state_file(&args.state)?;
    let mut fitness = SupernetFitness {
        net,
        batches,
        val: &val,
        update: if args.ema { BnUpdate::Ema(0.1) } else { BnUpdate::Cumulative },
        metric,
        evaluations: 0,
        time: Default::default(),
    };
    let table = FlopsTable::new(&space, InputSize::IMAGENET)?;
    let outcome = engine.run(&mut fitness, |p| match p {
        Progress::Evaluated { generation, arch, fitness, done, total } => eprintln!(
            "gen {generation:>2} [{done:>3}/{total}] {arch}  {}  fitness {fitness:.4}",
            format_count(table.flops(arch, Convention::Backbone))
        ),
        Progress::Generation(s) => eprintln!(
            "generation {} done: best {:.4} ({}), mean {:.4}, shortfall {}",
            s.generation, s.best.fitness, s.best.arch, s.mean_fitness, s.shortfall
        ),
    })?;
    let per_candidate = fitness.mean_time();
    if args.json {
        let mut v = serde_json::to_value(&outcome)?;
        v["seconds_per_candidate"] = serde_json::json!(per_candidate.as_secs_f64());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "best {} fitness {:.4} ({} backbone FLOPs at 224x224) after {} evaluations; {:.2} s per candidate (recalibration + held-out AP)",
            outcome.best.arch,
            outcome.best.fitness,
            format_count(table.flops(&outcome.best.arch, Convention::Backbone)),
            outcome.evaluations,
            per_candidate.as_secs_f64()
        );
    }
    Ok(())
}

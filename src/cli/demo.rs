//! `detnas demo`: the whole DetNAS pipeline in miniature ([`detnas_search::demo`]); this module
//! maps its flags.

use anyhow::Result;
use clap::Args;
use detnas_search::demo::DemoOptions;
use detnas_search::options::FitnessChoice;
use std::path::PathBuf;

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
    /// What scores the search: `supernet` (trains the supernet first: the paper's method) or a
    /// training-free fitness. The default, `params`, follows `detnas study`: no fitness ranked
    /// same-budget genomes better than the parameter count there.
    #[arg(long, default_value = "params", value_parser = FitnessChoice::NAMES)]
    fitness: String,
}

pub fn run(args: DemoArgs) -> Result<()> {
    detnas_search::demo::run(&DemoOptions {
        out: args.out,
        quick: args.quick,
        seed: args.seed,
        resume: args.resume,
        overwrite: args.overwrite,
        fitness: FitnessChoice::by_name(&args.fitness)?,
    })
}

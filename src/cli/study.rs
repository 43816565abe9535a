//! `detnas study`: does the search find better detectors? The study itself is
//! [`detnas_search::study`]; this module maps its flags.

use anyhow::Result;
use clap::Args;
use detnas_search::study::StudyOptions;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct StudyArgs {
    /// Output folder (data, supernet, searches, retrained genomes, report.md, CSVs, plots).
    #[arg(long, default_value = "runs/study")]
    out: PathBuf,
    /// A shortened run that goes through every step in a few minutes; its numbers mean nothing.
    #[arg(long)]
    quick: bool,
    /// Random genomes under the budget for the ranking fidelity (a), 4 to 500 (default 20;
    /// 4 with --quick); one more is scored, the median that sets the budget. Each is retrained
    /// with two seeds: the yardstick and its seed-to-seed ceiling.
    #[arg(long, value_parser = clap::value_parser!(u64).range(4..=500))]
    genomes: Option<u64>,
    /// Seeds of each contender's stand-alone retraining in (b), 1 to 20.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    seeds: u64,
    /// Iterations of the genes supernet (default: 3000; 20 with --quick), 10 to 100000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    supernet_iterations: Option<u64>,
    /// Iterations of every stand-alone retraining (default: 1500; 10 with --quick), 10 to 100000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    retrain_iterations: Option<u64>,
    /// Seed of the data, training, sampling and searches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Study on this training set (COCO instances JSON, images relative to it) instead of the
    /// synthetic one; needs --val.
    #[arg(long, requires = "val")]
    coco: Option<PathBuf>,
    /// Held-out COCO instances JSON of --coco.
    #[arg(long, requires = "coco")]
    val: Option<PathBuf>,
    /// Square input resolutions of the search space, e.g. `256,320` (multiples of 32 up to 2048; default
    /// 96,128, or 64,96 with --quick).
    #[arg(long, value_delimiter = ',', value_parser = super::values::study_input)]
    inputs: Option<Vec<u64>>,
    /// How the genes supernet trains (the method ablation): uniform single-path sampling, fair
    /// (strict fairness), sandwich (the sandwich rule with in-place distillation for the detector
    /// genes) or no-affine (choice-block BN without scale and shift).
    #[arg(long, default_value = "uniform", value_parser = ["uniform", "fair", "sandwich", "no-affine"])]
    supernet_method: String,
    /// More supernets for the method ablation, scored against the same yardstick:
    /// `METHOD[:ITERATIONS[:LR]]` each, comma-separated (e.g. `fair:800,uniform:6400:0.005`;
    /// iterations 10 to 100000, default the study's; base learning rate 0.00001 to 1, default
    /// 0.02). Each run also searches its supernet under the study's budget and retrains the genome
    /// found with every seed. Runs already in the study are kept: `--resume --ablate ...` adds to a
    /// finished study.
    #[arg(long, value_delimiter = ',', value_parser = super::values::ablation)]
    ablate: Vec<String>,
    /// Continue the study in --out, skipping the steps (and retrainings) it finished.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Remove the folder --out first (it must hold a study) and start over.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: StudyArgs) -> Result<()> {
    let data = args.coco.zip(args.val).map(|(train, val)| [train, val]);
    detnas_search::study::run(&StudyOptions {
        out: args.out,
        quick: args.quick,
        genomes: args.genomes,
        seeds: args.seeds,
        supernet_iterations: args.supernet_iterations.map(|n| n as usize),
        retrain_iterations: args.retrain_iterations.map(|n| n as usize),
        seed: args.seed,
        data,
        inputs: args.inputs,
        resume: args.resume,
        overwrite: args.overwrite,
        supernet: detnas_search::study::supernet_method(&args.supernet_method)?,
        ablate: args.ablate,
    })
}

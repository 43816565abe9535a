//! `detnas eval`: COCO bbox evaluation with pycocotools' semantics.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Ground truth (COCO instances JSON).
    #[arg(long)]
    gt: PathBuf,
    /// Detections (COCO results JSON; `[]` is valid).
    #[arg(long)]
    dt: PathBuf,
    /// Print one JSON object whose `stats` are the 12 pycocotools numbers.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let stats = detnas_core::coco::evaluate_files(&args.gt, &args.dt)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        for line in stats.summary_lines() {
            println!("{line}");
        }
    }
    Ok(())
}

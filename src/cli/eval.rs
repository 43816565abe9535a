//! `detnas eval`: COCO bbox evaluation with pycocotools' semantics.

use anyhow::{Result, bail};
use clap::Args;
use detnas_core::coco::{Detections, EvalParams, GroundTruth, evaluate, recall_precision};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Ground truth (COCO instances JSON, with at least one annotation).
    #[arg(long)]
    gt: PathBuf,
    /// Detections (COCO results JSON; `[]` is valid).
    #[arg(long)]
    dt: PathBuf,
    /// Print one JSON object whose `stats` are the 12 pycocotools numbers.
    #[arg(long)]
    json: bool,
    /// Also recall and precision at this IoU (one-to-one matching; DeepForest's tree-crown
    /// benchmark uses 0.4), over detections scoring at least --min-score.
    #[arg(long, value_parser = super::values::probability)]
    match_iou: Option<f64>,
    /// Score threshold of --match-iou.
    #[arg(long, default_value_t = 0.1, requires = "match_iou", value_parser = super::values::probability)]
    min_score: f64,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let gt = GroundTruth::load(&args.gt)?;
    if gt.dataset().annotations.is_empty() {
        bail!("{}: the ground truth has no annotations: there is nothing to evaluate against", args.gt.display());
    }
    let dt = Detections::load(&args.dt, &gt)?;
    let known: HashSet<i64> = gt.category_ids().iter().copied().collect();
    let mut unknown: BTreeMap<i64, usize> = BTreeMap::new();
    for d in dt.as_slice().iter().filter(|d| !known.contains(&d.category_id)) {
        *unknown.entry(d.category_id).or_default() += 1;
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|(id, n)| format!("{id} ({n})")).collect();
        eprintln!(
            "warning: {}: detections with category ids not in {} are not evaluated: {}",
            args.dt.display(),
            args.gt.display(),
            list.join(", ")
        );
    }
    if args.match_iou == Some(0.0) {
        bail!("--match-iou 0 would match boxes that do not overlap: give an IoU above 0");
    }
    let stats = evaluate(&gt, &dt, &EvalParams::default());
    let matched = args.match_iou.map(|iou| recall_precision(&gt, &dt, iou, args.min_score));
    if args.json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(m) = &matched {
            v["match"] = serde_json::to_value(m)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for line in stats.summary_lines() {
            println!("{line}");
        }
        if let Some(m) = matched {
            println!(
                " Recall {:.3}  Precision {:.3}  at IoU {} (score >= {}: {} of {} boxes found, {} detections)",
                m.recall, m.precision, m.iou, m.min_score, m.matched, m.ground_truth, m.detections
            );
        }
    }
    Ok(())
}

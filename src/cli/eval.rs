//! `detnas eval`: COCO bbox evaluation with pycocotools' semantics, of a results file or of an
//! exported model run on the ground truth's images.

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
    /// Detections (COCO results JSON; `[]` is valid); or give --model.
    #[cfg_attr(feature = "infer", arg(long, required_unless_present = "model"))]
    #[cfg_attr(not(feature = "infer"), arg(long, required = true))]
    dt: Option<PathBuf>,
    /// Detect with this exported model in every ground-truth image (file names relative to the
    /// --gt file's folder, or to --images), keeping every score, and evaluate what it finds.
    #[cfg(feature = "infer")]
    #[arg(long, conflicts_with = "dt")]
    model: Option<PathBuf>,
    /// Folder the ground truth's image file names are relative to (default: the --gt file's).
    #[cfg(feature = "infer")]
    #[arg(long, requires = "model")]
    images: Option<PathBuf>,
    /// Test-time augmentation of --model, as `detect --tta`.
    #[cfg(feature = "infer")]
    #[arg(long, requires = "model", value_name = "none|flips|dihedral")]
    tta: Option<detnas_infer::Tta>,
    /// ONNX Runtime threads of --model (default: all cores).
    #[cfg(feature = "infer")]
    #[arg(long, requires = "model", value_parser = super::values::Threads)]
    threads: Option<usize>,
    /// Also write --model's detections to this COCO results file (atomically).
    #[cfg(feature = "infer")]
    #[arg(long, requires = "model")]
    save_dt: Option<PathBuf>,
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
    #[cfg(feature = "infer")]
    if let Some(out) = &args.save_dt {
        let mut inputs = vec![("--gt", args.gt.as_path())];
        inputs.extend(args.model.as_deref().map(|m| ("--model", m)));
        inputs.extend(args.dt.as_deref().map(|d| ("--dt", d)));
        super::paths::check_output("--save-dt", out, super::paths::Artefact::Results, &inputs)?;
    }
    let gt = GroundTruth::load(&args.gt)?;
    if gt.dataset().annotations.is_empty() {
        bail!("{}: the ground truth has no annotations: there is nothing to evaluate against", args.gt.display());
    }
    let (dt, dt_name) = match &args.dt {
        Some(path) => (Detections::load(path, &gt)?, path.display().to_string()),
        None => detect_ground_truth(&args, &gt)?,
    };
    let known: HashSet<i64> = gt.category_ids().iter().copied().collect();
    let mut unknown: BTreeMap<i64, usize> = BTreeMap::new();
    for d in dt.as_slice().iter().filter(|d| !known.contains(&d.category_id)) {
        *unknown.entry(d.category_id).or_default() += 1;
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|(id, n)| format!("{id} ({n})")).collect();
        eprintln!(
            "warning: {}: detections with category ids not in {} are not evaluated: {}",
            dt_name,
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

/// The detector of `model` keeping every score, with `--threads` and `--tta`.
#[cfg(feature = "infer")]
fn load_eval_detector(args: &EvalArgs, model: &std::path::Path) -> Result<detnas_infer::Detector> {
    let mut builder = detnas_infer::Detector::builder().all_scores();
    if let Some(threads) = args.threads {
        builder = builder.threads(threads);
    }
    if let Some(tta) = args.tta {
        builder = builder.tta(tta);
    }
    Ok(builder.load(model)?)
}

/// The detections of `--model` on every image of the ground truth
/// ([`detnas_infer::Detector::detect_dataset`]), and a name for them; `--save-dt` written.
#[cfg(feature = "infer")]
fn detect_ground_truth(args: &EvalArgs, gt: &GroundTruth) -> Result<(Detections, String)> {
    use anyhow::Context;
    let Some(model) = &args.model else {
        bail!("give --dt results.json, or --model model.onnx to detect in the ground truth's images first");
    };
    let detector = load_eval_detector(args, model)?;
    let start = std::time::Instant::now();
    let found = detector.detect_dataset(gt, &args.gt, args.images.as_deref())?;
    for w in &found.warnings {
        eprintln!("{w}");
    }
    eprintln!(
        "{}: {} detections in {} images ({:.1} s)",
        model.display(),
        found.detections.len(),
        found.images,
        start.elapsed().as_secs_f64()
    );
    if let Some(out) = &args.save_dt {
        let bytes = serde_json::to_vec(&found.detections)?;
        detnas_core::fsutil::write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok((Detections::new(found.detections, gt)?, model.display().to_string()))
}

/// Without ONNX Runtime, detections come from a file only.
#[cfg(not(feature = "infer"))]
fn detect_ground_truth(_: &EvalArgs, _: &GroundTruth) -> Result<(Detections, String)> {
    bail!("give --dt results.json (this build has no ONNX Runtime to run a model)")
}

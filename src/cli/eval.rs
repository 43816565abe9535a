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

/// The images of a ground truth as `--model` reads them: ids, paths and recorded sizes, in the
/// ground truth's order.
#[cfg(feature = "infer")]
struct GtImages {
    ids: Vec<i64>,
    paths: Vec<PathBuf>,
    /// `(width, height)` when the ground truth records both.
    sizes: Vec<Option<(u32, u32)>>,
}

#[cfg(feature = "infer")]
impl GtImages {
    /// The images of `gt`, file names relative to `--images` (default: the `--gt` file's folder);
    /// an error naming the first image without a file name.
    fn of(args: &EvalArgs, gt: &GroundTruth) -> Result<Self> {
        let root = match &args.images {
            Some(dir) => dir.clone(),
            None => args.gt.parent().map(PathBuf::from).unwrap_or_default(),
        };
        let mut images = GtImages { ids: Vec::new(), paths: Vec::new(), sizes: Vec::new() };
        for image in &gt.dataset().images {
            let Some(name) = image.file_name.as_deref() else {
                bail!(
                    "{}: image {} has no file_name, so --model cannot find it: give --dt",
                    args.gt.display(),
                    image.id
                );
            };
            images.ids.push(image.id);
            images.paths.push(root.join(name));
            images.sizes.push(image.width.zip(image.height));
        }
        Ok(images)
    }
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

/// The ground truth's category id of each of the model's classes, matched by name; `None` (and a
/// warning on stderr) where the names differ, so that the model's own ids are kept.
#[cfg(feature = "infer")]
fn ground_truth_category_ids(args: &EvalArgs, gt: &GroundTruth, class_names: &[String]) -> Option<Vec<i64>> {
    let by_name = detnas_infer::folder::category_ids_by_name(&args.gt, &gt.dataset().categories, class_names);
    match by_name {
        Ok(ids) => Some(ids),
        Err(e) => {
            eprintln!("warning: {e}; the model's own category ids are used");
            None
        }
    }
}

/// The detections of `--model` on every image of the ground truth, and a name for them.
#[cfg(feature = "infer")]
fn detect_ground_truth(args: &EvalArgs, gt: &GroundTruth) -> Result<(Detections, String)> {
    use anyhow::Context;
    use detnas_core::coco::Detection;
    let Some(model) = &args.model else {
        bail!("give --dt results.json, or --model model.onnx to detect in the ground truth's images first");
    };
    let GtImages { ids, paths, sizes } = GtImages::of(args, gt)?;
    let detector = load_eval_detector(args, model)?;
    // The model's classes take the ground truth's ids by name; where the names differ, its own
    // ids are kept and the user told.
    let by_name = ground_truth_category_ids(args, gt, &detector.info().config.class_names);
    let start = std::time::Instant::now();
    let mut found = Vec::new();
    let mut failed = Vec::new();
    let mut resized = Vec::new();
    for (k, result) in detector.detect_batch(&paths).into_iter().enumerate() {
        let found_in = match result {
            Ok(d) => d,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        if sizes[k].is_some_and(|size| size != (found_in.width, found_in.height)) {
            resized.push(paths[k].display().to_string());
        }
        found.extend(found_in.detections.iter().map(|d| {
            let [x, y, w, h] = d.xywh().map(f64::from);
            let category_id = by_name.as_ref().map_or(d.category_id as i64, |c| c[d.class_id]);
            Detection { image_id: ids[k], category_id, bbox: [x, y, w, h], score: d.score.into() }
        }));
    }
    if !resized.is_empty() {
        // boxes in other pixels than the annotations': the numbers would be silently wrong
        eprintln!(
            "warning: {} image(s) are not the size {} gives them (resized after annotation, or an EXIF \
             rotation?): {}",
            resized.len(),
            args.gt.display(),
            resized.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !failed.is_empty() {
        let shown = failed.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        bail!(
            "{} of {} ground-truth images could not be detected in (every one counts in the evaluation): {shown}",
            failed.len(),
            paths.len()
        );
    }
    eprintln!(
        "{}: {} detections in {} images ({:.1} s)",
        model.display(),
        found.len(),
        paths.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(out) = &args.save_dt {
        let bytes = serde_json::to_vec(&found)?;
        detnas_core::fsutil::write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok((Detections::new(found, gt)?, model.display().to_string()))
}

/// Without ONNX Runtime, detections come from a file only.
#[cfg(not(feature = "infer"))]
fn detect_ground_truth(_: &EvalArgs, _: &GroundTruth) -> Result<(Detections, String)> {
    bail!("give --dt results.json (this build has no ONNX Runtime to run a model)")
}

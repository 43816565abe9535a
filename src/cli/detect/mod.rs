//! `detnas detect`: batch detection over files, folders (recursive) and globs.
//!
//! A run has three steps: [`plan`] (check `--out`, collect the inputs, give each its id and output
//! name), [`process`] (workers detect, write label and annotated files, and the main thread appends
//! each image's record to `results.jsonl` as it finishes) and [`finish`] (the COCO files, written
//! atomically). See [`journal`] for the files and [`outdir`] for how earlier results are treated.
//!
//! Exit codes: 0 when every image was processed, or some failed without `--strict`; 1 when nothing
//! could be processed or on a fatal error; 3 when some images failed under `--strict`.

pub(super) mod inputs;
mod journal;
pub(super) mod names;
mod outdir;

use super::draw::draw_detection;
use super::values;
use anyhow::{Context, Result, bail};
use clap::Args;
use detnas_core::fsutil::write_atomic;
use detnas_infer::{Detections, Detector, DetectorOptions, Device, StageTimings, Tta};
use indicatif::{ProgressBar, ProgressStyle};
use journal::{BoxRecord, ImageRecord, Journal, Manifest, Settings};
use outdir::{Existing, OutDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Exit code for "some images failed under --strict".
pub const EXIT_PARTIAL: i32 = 3;

/// Test hook: abort the process (as a kill would) after this many images were recorded.
const ABORT_AFTER_ENV: &str = "DETNAS_TEST_ABORT_AFTER";

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Exported model (.onnx).
    model: PathBuf,
    /// Image files, folders (searched recursively, symbolic links followed once) or glob patterns.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Output folder. It must not hold results of an earlier run (see --exist-ok, --resume); it is
    /// never searched for inputs.
    #[arg(long)]
    out: PathBuf,
    /// Replace the results of an earlier run in --out (only the files detect writes are removed).
    #[arg(long, conflicts_with = "resume")]
    exist_ok: bool,
    /// Continue a killed or interrupted run in --out (same model, inputs and options): finished
    /// images are not redone, and the run ends with the files an uninterrupted run writes.
    #[arg(long)]
    resume: bool,
    /// Minimum score, from 0 to 1 (the model's own threshold applies first).
    #[arg(long, value_parser = values::fraction)]
    conf: Option<f32>,
    /// Extra per-class NMS IoU, from 0 to 1 (only stricter than the model's own has an effect).
    #[arg(long, value_parser = values::fraction)]
    iou: Option<f32>,
    /// Keep at most this many detections per image.
    #[arg(long, value_parser = values::detections)]
    max_det: Option<usize>,
    /// Keep only these classes (names or 0-based indices, comma separated).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// Inference device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// ONNX Runtime threads in all (default: all cores), shared among the workers' sessions.
    #[arg(long, value_parser = values::Threads)]
    threads: Option<usize>,
    /// Images in flight at once, each worker with its own ONNX Runtime session of
    /// `threads / workers` threads; at most the number of cores. Two workers of one thread each
    /// beat one session of two threads on a folder (throughput); use 1 for the lowest per-image latency.
    #[arg(long, default_value_t = 2, value_parser = values::Threads)]
    workers: usize,
    /// Fail on warnings (truncated JPEG) and on an unavailable device; exit 3 if any image failed.
    #[arg(long)]
    strict: bool,
    /// Detect large images (orthophotos) window by window: windows of SIZE x SIZE image pixels at
    /// native resolution, each letterboxed into the network input, boxes merged across windows
    /// (a box cut by a window edge yields to the whole one a neighbouring window saw).
    #[arg(long, value_name = "SIZE", value_parser = values::tile)]
    tile: Option<u32>,
    /// Fraction of a window shared with its neighbours with --tile (0 to 0.9); it should exceed
    /// the largest object's share of a window so every object is whole in some window.
    #[arg(long, value_name = "FRACTION", requires = "tile", value_parser = overlap_fraction)]
    overlap: Option<f32>,
    /// Decode every JPEG at full resolution (default: one at least twice the network input is
    /// decoded at a reduced DCT scale, 1/2 to 1/8, which is faster; boxes are in full-image
    /// pixels either way).
    #[arg(long)]
    full_decode: bool,
    /// Test-time augmentation: `flips` (4 views) or `dihedral` (8: every quarter turn, each
    /// mirrored), boxes of all views merged by weighted box fusion; one network run per view.
    /// For images with no "up" (aerial, microscopy).
    #[arg(long, default_value = "none", value_name = "none|flips|dihedral")]
    tta: Tta,
    /// Write YOLO label files (`class cx cy w h score`, normalised) to <out>/labels/.
    #[arg(long)]
    save_txt: bool,
    /// Write annotated copies to <out>/images/.
    #[arg(long)]
    save_img: bool,
    /// Take image ids from this COCO instances JSON (matched by file name, or by the folders the
    /// ground truth names), so that `detnas eval --gt` can score detections.json directly.
    #[arg(long)]
    ids_from: Option<PathBuf>,
}

/// An input or image that could not be processed (one entry of `errors.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub file: String,
    pub error: String,
}

impl Failure {
    pub fn new(file: String, error: String) -> Self {
        Failure { file, error }
    }
}

fn parse_classes(spec: &[String], names: &[String]) -> Result<Vec<usize>> {
    spec.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<usize>()
                .ok()
                .filter(|i| *i < names.len())
                .or_else(|| names.iter().position(|n| n == s))
                .ok_or_else(|| anyhow::anyhow!("unknown class `{s}` (model classes: {})", names.join(", ")))
        })
        .collect()
}

/// The settings recorded in `run.json`.
fn settings(args: &DetectArgs) -> Result<Settings> {
    let bytes = std::fs::read(&args.model).with_context(|| format!("reading model {}", args.model.display()))?;
    Ok(Settings {
        model: args.model.display().to_string(),
        model_bytes: bytes.len() as u64,
        model_hash: format!("{:016x}", detnas_core::evolution::fnv1a64(&bytes)),
        inputs: args.inputs.clone(),
        conf: args.conf,
        iou: args.iou,
        max_det: args.max_det,
        classes: args.classes.clone(),
        save_txt: args.save_txt,
        save_img: args.save_img,
        // Canonical, so that a resume from another folder or spelling compares equal.
        ids_from: args
            .ids_from
            .as_ref()
            .map(|p| detnas_core::fsutil::identity(p).unwrap_or_else(|| p.clone()).display().to_string()),
        tile: args.tile,
        overlap: args.tile.map(|_| args.overlap.unwrap_or(DEFAULT_OVERLAP)),
        full_decode: args.full_decode,
        tta: args.tta,
    })
}

/// The window overlap of `--tile` without `--overlap`.
const DEFAULT_OVERLAP: f32 = 0.25;

fn overlap_fraction(s: &str) -> Result<f32, String> {
    let v = values::fraction(s)?;
    if v > 0.9 { Err(format!("{v} is over 0.9 (windows would barely move)")) } else { Ok(v) }
}

/// Step 1: the checked output folder, the run's manifest (new, or read back for `--resume`) and,
/// on resume, the inputs changed since the run planned them (to be detected again).
fn plan(args: &DetectArgs) -> Result<(OutDir, Manifest, Vec<usize>)> {
    let existing = match (args.resume, args.exist_ok) {
        (true, _) => Existing::Resume,
        (false, true) => Existing::Replace,
        (false, false) => Existing::Refuse,
    };
    let out = OutDir::open(&args.out, existing)?;
    let settings = settings(args)?;
    let collected = inputs::collect_inputs(&args.inputs, Some(&out.canonical));
    for note in &collected.notes {
        eprintln!("{note}");
    }
    if args.resume {
        let mut manifest = Manifest::read_for_resume(&out.path, &settings)?;
        let changed = manifest.reconcile(&collected.files)?;
        out.claim(&manifest.names, settings.save_txt, settings.save_img)?;
        if !changed.is_empty() {
            eprintln!(
                "{} input(s) changed since the run planned them: detected again ({})",
                changed.len(),
                changed.iter().take(3).map(|&i| manifest.files[i].display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        // run.json takes the new stamps only once results.jsonl has dropped the changed inputs'
        // records (in `run`): a resume that stops before then still sees them as changed.
        return Ok((out, manifest, changed));
    }
    for f in &collected.failures {
        eprintln!("skipped: {}", f.error);
    }
    let ids = match &args.ids_from {
        Some(gt) => names::ids_from_ground_truth(gt, &collected.files)?,
        None => (1..=collected.files.len() as i64).map(Some).collect(),
    };
    let names = names::output_names(&collected.files);
    let mut failures = collected.failures;
    for (file, id) in collected.files.iter().zip(&ids) {
        if id.is_none() {
            let gt = args.ids_from.as_deref().unwrap_or(Path::new("")).display();
            failures.push(Failure::new(
                file.display().to_string(),
                format!("{}: not in the --ids-from ground truth {gt}", file.display()),
            ));
        }
    }
    out.claim(&names, args.save_txt, args.save_img)?;
    let mut manifest = Manifest::new(settings, collected.files, ids, names);
    manifest.failures = failures;
    Ok((out, manifest, Vec::new()))
}

/// Whether images are decoded on a thread of their own, ahead of inference: for one untiled
/// worker. Several workers already overlap decoding and inference with each other (2 workers x 1
/// thread on 2 cores: 64-65 images/s pipelined against 65-68 each decoding its own).
fn pipelined(tile: Option<u32>, workers: usize) -> bool {
    tile.is_none() && workers == 1
}

/// Loads the model with the command's options, `workers` sessions.
fn load_detector(args: &DetectArgs, workers: usize) -> Result<Detector> {
    let threads = args.threads.unwrap_or_else(values::cores);
    // Without --conf, everything the graph returns (its own score_thresh): COCO results for `eval`.
    let mut options = DetectorOptions::default();
    options.score_threshold = args.conf;
    options.iou_threshold = args.iou;
    options.max_detections = args.max_det;
    options.threads = Some((threads / workers).max(1));
    options.sessions = workers;
    options.device = Device::parse(&args.device)?;
    options.strict = args.strict;
    options.reduced_decode = !args.full_decode;
    options.tta = args.tta;
    // One untiled worker is pipelined: a decoding thread shares the cores with the session's
    // threads, which must not spin while it works.
    options.spinning = !pipelined(args.tile, workers);
    let mut detector = Detector::from_file(&args.model, options)?;
    if let Some(w) = detector.device_warning() {
        eprintln!("warning: {w}");
    }
    if let Some(spec) = &args.classes {
        let classes = parse_classes(spec, &detector.info().config.class_names)?;
        detector.set_class_filter(Some(classes));
    }
    let nms = detector.info().config.nms_thresh;
    if let Some(iou) = args.iou.filter(|t| *t > nms) {
        eprintln!("warning: --iou {iou} is looser than the model's NMS threshold {nms}: no effect");
    }
    Ok(detector)
}

/// Workers actually started: at most the cores of this machine (said when fewer than asked) and
/// the images left.
fn worker_count(requested: usize, pending: usize) -> usize {
    let cores = values::cores();
    if requested > cores {
        eprintln!("warning: --workers {requested} is more than the {cores} core(s) of this machine: using {cores}");
    }
    requested.min(cores).min(pending).max(1)
}

pub fn run(args: DetectArgs) -> Result<i32> {
    let (out, mut manifest, changed) = plan(&args)?;
    let mut records = if args.resume { Journal::read(&out.path, manifest.files.len())? } else { BTreeMap::new() };
    for i in &changed {
        records.remove(i);
    }
    let pending = (0..manifest.files.len()).filter(|i| manifest.ids[*i].is_some() && !records.contains_key(i)).count();
    let start_afresh = |out: &OutDir| -> Result<()> {
        if out.has_results {
            out.clear()?;
            out.claim(&manifest.names, args.save_txt, args.save_img)?;
        }
        Ok(())
    };
    if manifest.files.is_empty() {
        start_afresh(&out)?;
        write_atomic(&out.path.join("errors.json"), &serde_json::to_vec_pretty(&manifest.failures)?)?;
        bail!("no images found in {}", args.inputs.join(" "));
    }
    let workers = worker_count(args.workers, pending);
    let detector = load_detector(&args, workers)?;
    if let (Some(gt), false) = (&args.ids_from, args.resume) {
        let categories = detnas_core::coco::CocoDataset::load(gt)?.categories;
        manifest.category_ids =
            Some(names::category_ids_by_name(gt, &categories, &detector.info().config.class_names)?);
    }
    if !args.resume {
        start_afresh(&out)?;
        manifest.write(&out.path)?;
    }
    for (wanted, dir) in [(args.save_txt, "labels"), (args.save_img, "images")] {
        if wanted {
            let d = out.path.join(dir);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    let mut journal = Journal::start(&out.path, &records)?;
    if args.resume {
        manifest.write(&out.path)?;
    }
    if args.resume {
        eprintln!("resuming {}: {} image(s) done, {pending} to go", out.path.display(), records.len());
    }
    let start = Instant::now();
    let (sums, now) = process(&detector, &out.path, &manifest, workers, &mut journal, &mut records)?;
    let wall = start.elapsed();
    journal.finish(&records)?;
    let failures = journal::all_failures(&manifest.failures, &records);
    journal::write_results(&out.path, &manifest, &detector.info().config, &records, &failures)?;
    report(&out.path, &records, &failures, &sums, now, wall);
    if records.values().all(|r| r.error.is_some()) {
        bail!("no image could be processed ({} failed)", failures.len());
    }
    Ok(if args.strict && !failures.is_empty() { EXIT_PARTIAL } else { 0 })
}

/// Prints the failures (processing ones; collection ones were printed as found) and the summary.
fn report(
    out: &Path,
    records: &BTreeMap<usize, ImageRecord>,
    failures: &[Failure],
    sums: &StageTimings,
    now: usize,
    wall: std::time::Duration,
) {
    if !failures.is_empty() {
        eprintln!("{} input(s) failed (see {}):", failures.len(), out.join("errors.json").display());
        for f in failures.iter().take(20) {
            eprintln!("  {}", f.error);
        }
    }
    let ok = records.values().filter(|r| r.error.is_none());
    let detections: usize = ok.clone().map(|r| r.detections.len()).sum();
    let mean = |d: std::time::Duration| if now > 0 { d.as_secs_f64() * 1e3 / now as f64 } else { 0.0 };
    println!(
        "{} image(s), {detections} detection(s) -> {} | {:.2} images/s | mean ms: decode {:.1}, preprocess {:.1}, inference {:.1}, postprocess {:.1}",
        ok.count(),
        out.display(),
        now as f64 / wall.as_secs_f64().max(1e-9),
        mean(sums.decode),
        mean(sums.preprocess),
        mean(sums.inference),
        mean(sums.postprocess)
    );
}

/// Step 2: detects every image of `manifest` without a record, in parallel, recording each one as
/// it finishes. Returns the summed stage timings and the count of images detected now.
fn process(
    detector: &Detector,
    out: &Path,
    manifest: &Manifest,
    workers: usize,
    journal: &mut Journal,
    records: &mut BTreeMap<usize, ImageRecord>,
) -> Result<(StageTimings, usize)> {
    let pending: Vec<usize> =
        (0..manifest.files.len()).filter(|i| manifest.ids[*i].is_some() && !records.contains_key(i)).collect();
    let bar = progress_bar(pending.len());
    let abort_after: Option<usize> = std::env::var(ABORT_AFTER_ENV).ok().and_then(|v| v.parse().ok());
    let mut sums = StageTimings::default();
    let mut done = 0usize;
    let mut failed: Option<anyhow::Error> = None;
    let mut absorb = |(record, timings): (ImageRecord, StageTimings)| {
        if failed.is_some() {
            return;
        }
        if let Err(e) = journal.append(&record) {
            failed = Some(e);
            return;
        }
        if record.error.is_none() {
            sums.decode += timings.decode;
            sums.preprocess += timings.preprocess;
            sums.inference += timings.inference;
            sums.postprocess += timings.postprocess;
            done += 1;
        }
        records.insert(record.index, record);
        bar.inc(1);
        if abort_after.is_some_and(|n| records.len() >= n) {
            std::process::abort();
        }
    };
    if pipelined(manifest.settings.tile, workers) {
        // Decoding runs ahead of inference through a bounded queue (two images per worker).
        let paths: Vec<&PathBuf> = pending.iter().map(|&i| &manifest.files[i]).collect();
        let handle = |k: usize, found| finish_one(detector, out, manifest, pending[k], found);
        detector.detect_pipelined(&paths, 2 * workers, handle, &mut absorb);
    } else {
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<(ImageRecord, StageTimings)>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, pending) = (&next, &pending);
                scope.spawn(move || {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = pending.get(k) else { break };
                        if tx.send(detect_one(detector, out, manifest, i)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            rx.into_iter().for_each(&mut absorb);
        });
    }
    if let Some(e) = failed {
        return Err(e);
    }
    bar.finish_and_clear();
    Ok((sums, done))
}

fn progress_bar(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    b.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
    b
}

/// Detects image `i` of the manifest (window by window with `--tile`), then [`finish_one`].
fn detect_one(detector: &Detector, out: &Path, manifest: &Manifest, i: usize) -> (ImageRecord, StageTimings) {
    let path = &manifest.files[i];
    let found = match manifest.settings.tile {
        Some(size) => {
            let tiling = detnas_infer::Tiling::new(size, manifest.settings.overlap.unwrap_or(DEFAULT_OVERLAP))
                .expect("--tile and --overlap are checked by the parser");
            detector.detect_path_tiled(path, tiling)
        }
        None => detector.detect_path(path),
    };
    finish_one(detector, out, manifest, i, found)
}

/// The record of image `i` of the manifest from what was `found`; writes its label and annotated files.
fn finish_one(
    detector: &Detector,
    out: &Path,
    manifest: &Manifest,
    i: usize,
    found: detnas_infer::Result<detnas_infer::Detections>,
) -> (ImageRecord, StageTimings) {
    let path = &manifest.files[i];
    let file = path.display().to_string();
    let id = manifest.ids[i].expect("only images with an id are processed");
    let d = match found {
        Ok(d) => d,
        Err(e) => return (ImageRecord::failed(i, file, id, e.to_string()), StageTimings::default()),
    };
    let cfg = &detector.info().config;
    let mut record = ImageRecord::new(i, file, id);
    record.width = d.width;
    record.height = d.height;
    record.warnings = d.warnings.iter().map(|w| w.to_string()).collect();
    record.detections = d
        .detections
        .iter()
        .map(|det| {
            let [x1, y1, x2, y2] = det.bbox;
            BoxRecord {
                category_id: manifest.category_id(cfg, det.class_id),
                bbox: [round3(x1), round3(y1), round3(x2 - x1), round3(y2 - y1)],
                score: round5(det.score),
            }
        })
        .collect();
    let name = &manifest.names[i];
    let settings = &manifest.settings;
    if settings.save_txt {
        let rel = format!("labels/{name}.txt");
        match write_yolo(&out.join(&rel), &d) {
            Ok(()) => record.label_file = Some(rel),
            Err(e) => record.output_error = Some(format!("{}: label file: {e:#}", path.display())),
        }
    }
    if settings.save_img {
        let rel = format!("images/{name}.jpg");
        match save_annotated(path, &out.join(&rel), &d, detector) {
            Ok(()) => record.image_file = Some(rel),
            Err(e) => record.output_error = Some(format!("{}: annotated copy: {e:#}", path.display())),
        }
    }
    (record, d.timings)
}

fn round3(v: f32) -> f64 {
    (v as f64 * 1e3).round() / 1e3
}

fn round5(v: f32) -> f64 {
    (v as f64 * 1e5).round() / 1e5
}

fn write_yolo(path: &Path, d: &Detections) -> Result<()> {
    let (w, h) = (d.width as f32, d.height as f32);
    let mut text = String::new();
    for det in &d.detections {
        let [x1, y1, x2, y2] = det.bbox;
        text.push_str(&format!(
            "{} {:.6} {:.6} {:.6} {:.6} {:.5}\n",
            det.class_id,
            (x1 + x2) / 2.0 / w,
            (y1 + y2) / 2.0 / h,
            (x2 - x1) / w,
            (y2 - y1) / h,
            det.score
        ));
    }
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

fn save_annotated(path: &Path, dest: &Path, d: &Detections, detector: &Detector) -> Result<()> {
    let mut img = detnas_infer::image_io::load_image(path, &detector.options().limits)?.rgb;
    for det in &d.detections {
        draw_detection(&mut img, det.bbox, &format!("{} {:.2}", det.class_name, det.score), det.class_id);
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Jpeg)?;
    write_atomic(dest, bytes.get_ref())?;
    Ok(())
}

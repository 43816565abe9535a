//! `detnas detect`: batch detection over files, folders (recursive) and globs, run by
//! [`detnas_infer::folder::detect_folder`]; this module maps the flags to its options, draws the
//! progress bar from its events and prints the summary.
//!
//! Exit codes: 0 when every image was processed, or some failed without `--strict`; 1 when nothing
//! could be processed or on a fatal error; 3 when some images failed under `--strict`.

use super::values;
use anyhow::Result;
use clap::Args;
use detnas_infer::folder::{DEFAULT_OVERLAP, Existing, FolderEvent, FolderOptions, FolderOutcome, detect_folder};
use detnas_infer::{Device, Tiling, Tta};
use indicatif::ProgressBar;
use std::path::PathBuf;

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
    /// Write YOLO label files (`class cx cy w h score`, normalised) to labels/ in --out.
    #[arg(long)]
    save_txt: bool,
    /// Write annotated copies to images/ in --out.
    #[arg(long)]
    save_img: bool,
    /// Take image ids from this COCO instances JSON (matched by file name, or by the folders the
    /// ground truth names), so that `detnas eval --gt` can score detections.json directly.
    #[arg(long)]
    ids_from: Option<PathBuf>,
}

fn overlap_fraction(s: &str) -> Result<f32, String> {
    let v = values::fraction(s)?;
    if v > detnas_infer::folder::MAX_TILE_OVERLAP {
        Err(format!("{v} is over 0.9 (windows would barely move)"))
    } else {
        Ok(v)
    }
}

/// The library's options for these flags.
fn options(args: DetectArgs) -> Result<FolderOptions> {
    let mut o = FolderOptions::new(args.model, args.inputs, args.out);
    o.existing = match (args.resume, args.exist_ok) {
        (true, _) => Existing::Resume,
        (false, true) => Existing::Replace,
        (false, false) => Existing::Refuse,
    };
    o.conf = args.conf;
    o.iou = args.iou;
    o.max_det = args.max_det;
    o.classes = args.classes;
    o.device = Device::parse(&args.device)?;
    o.threads = args.threads;
    o.workers = args.workers;
    o.strict = args.strict;
    o.tiling = args.tile.map(|size| Tiling::new(size, args.overlap.unwrap_or(DEFAULT_OVERLAP))).transpose()?;
    o.full_decode = args.full_decode;
    o.tta = args.tta;
    o.save_txt = args.save_txt;
    o.save_img = args.save_img;
    o.ids_from = args.ids_from;
    Ok(o)
}

pub fn run(args: DetectArgs) -> Result<i32> {
    let strict = args.strict;
    let options = options(args)?;
    let abort_after: Option<usize> = std::env::var(ABORT_AFTER_ENV).ok().and_then(|v| v.parse().ok());
    let mut bar: Option<ProgressBar> = None;
    let outcome = detect_folder(&options, &mut |event| {
        if let Some(line) = event.line() {
            eprintln!("{line}");
        }
        match event {
            FolderEvent::Started { pending, .. } => {
                bar = Some(super::progress_bar(pending, 0, "{bar:40} {pos}/{len} {per_sec} eta {eta}"))
            }
            FolderEvent::ImageDone { recorded, .. } | FolderEvent::ImageFailed { recorded, .. } => {
                if let Some(b) = &bar {
                    b.inc(1);
                }
                if abort_after.is_some_and(|n| recorded >= n) {
                    std::process::abort();
                }
            }
            FolderEvent::Finished(outcome) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                report(outcome);
            }
            _ => {}
        }
    })?;
    Ok(if strict && !outcome.failures.is_empty() { EXIT_PARTIAL } else { 0 })
}

/// Prints the failures (processing ones; collection ones were printed as found) and the summary.
fn report(outcome: &FolderOutcome) {
    let failures = &outcome.failures;
    if !failures.is_empty() {
        eprintln!("{} input(s) failed (see {}):", failures.len(), outcome.out.join("errors.json").display());
        for f in failures.iter().take(20) {
            eprintln!("  {}", f.error);
        }
    }
    let [decode, preprocess, inference, postprocess] = outcome.mean_ms();
    println!(
        "{} image(s), {} detection(s) -> {} | {:.2} images/s | mean ms: decode {decode:.1}, preprocess {preprocess:.1}, inference {inference:.1}, postprocess {postprocess:.1}",
        outcome.images,
        outcome.detections,
        outcome.out.display(),
        outcome.images_per_second(),
    );
}

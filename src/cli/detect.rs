//! `detnas detect`: batch detection over files, folders (recursive) and globs.
//!
//! Writes `<out>/detections.json` (COCO results: `image_id`, `category_id`, `bbox` `[x, y, w, h]` in
//! original pixels, `score`), `<out>/images.json` (image ids -> paths, sizes; categories) and, when
//! any input failed, `<out>/errors.json`; optionally YOLO label files and annotated images.
//!
//! Exit codes: 0 when every image was processed, or some failed without `--strict`; 1 when nothing
//! could be processed or on a fatal error; 3 when some images failed under `--strict`.

use super::draw::draw_detection;
use anyhow::{Context, Result, bail};
use clap::Args;
use detnas_core::fsutil::write_atomic;
use detnas_infer::{Detections, Detector, DetectorOptions, Device, StageTimings};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Extensions picked up when walking folders (files given explicitly are always tried).
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "jpe", "jfif"];

/// Exit code for "some images failed under --strict".
pub const EXIT_PARTIAL: i32 = 3;

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Exported model (.onnx).
    model: PathBuf,
    /// Image files, folders (searched recursively) or glob patterns.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Minimum score.
    #[arg(long)]
    conf: Option<f32>,
    /// Extra per-class NMS IoU (stricter than the model's own).
    #[arg(long)]
    iou: Option<f32>,
    #[arg(long)]
    max_det: Option<usize>,
    /// Keep only these classes (names or 0-based indices, comma separated).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// ONNX Runtime threads in all (default: all cores), shared among the workers' sessions.
    #[arg(long)]
    threads: Option<usize>,
    /// Images in flight at once, each worker with its own ONNX Runtime session of
    /// `threads / workers` threads. Two workers of one thread each beat one session of two threads
    /// on a folder (throughput); use 1 for the lowest per-image latency.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Fail on warnings (truncated JPEG) and on an unavailable device; exit 3 if any image failed.
    #[arg(long)]
    strict: bool,
    /// Write YOLO label files (`class cx cy w h score`, normalised) to <out>/labels/.
    #[arg(long)]
    save_txt: bool,
    /// Write annotated copies to <out>/images/.
    #[arg(long)]
    save_img: bool,
    /// Take image ids from this COCO instances JSON (matched by file name), so that
    /// `detnas eval --gt` can score detections.json directly.
    #[arg(long)]
    ids_from: Option<PathBuf>,
}

/// Image ids of a COCO instances JSON by file base name.
fn ids_by_name(gt: &Path) -> Result<std::collections::HashMap<String, u64>> {
    let text = std::fs::read_to_string(gt).with_context(|| format!("reading {}", gt.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", gt.display()))?;
    let mut map = std::collections::HashMap::new();
    for img in v["images"].as_array().with_context(|| format!("{}: no `images` list", gt.display()))? {
        let (Some(id), Some(name)) = (img["id"].as_u64(), img["file_name"].as_str()) else { continue };
        let base = Path::new(name).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if map.insert(base.clone(), id).is_some() {
            bail!("{}: file name `{base}` appears twice; ids cannot be matched by name", gt.display());
        }
    }
    Ok(map)
}

/// `(input, message)` of an input that could not be processed.
type Failure = (String, String);

/// Expands files, folders and globs into a sorted, de-duplicated list; reports inputs matching nothing.
pub fn collect_inputs(inputs: &[String]) -> Result<(Vec<PathBuf>, Vec<Failure>)> {
    let mut files = BTreeSet::new();
    let mut missing = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            walk(path, &mut files).with_context(|| format!("reading folder {input}"))?;
        } else if path.exists() {
            files.insert(path.to_path_buf());
        } else if input.contains(['*', '?', '[']) {
            let mut any = false;
            for entry in glob::glob(input).with_context(|| format!("invalid glob {input}"))?.flatten() {
                any = true;
                if entry.is_dir() {
                    walk(&entry, &mut files)?;
                } else {
                    files.insert(entry);
                }
            }
            if !any {
                missing.push((input.clone(), format!("{input}: glob matched no file")));
            }
        } else {
            missing.push((input.clone(), format!("{input}: no such file or folder")));
        }
    }
    Ok((files.into_iter().collect(), missing))
}

fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.insert(p);
        }
    }
    Ok(())
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

/// Output file name for an image, unique within the run.
fn output_stem(path: &Path, id: u64, taken: &mut BTreeSet<String>) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| format!("image{id}"));
    let name = if taken.contains(&stem) { format!("{stem}_{id}") } else { stem };
    taken.insert(name.clone());
    name
}

pub fn run(args: DetectArgs) -> Result<i32> {
    let (files, mut failures) = collect_inputs(&args.inputs)?;
    let gt_ids = args.ids_from.as_deref().map(ids_by_name).transpose()?;
    let options = DetectorOptions {
        score_threshold: args.conf,
        iou_threshold: args.iou,
        max_detections: args.max_det,
        threads: Some(
            (args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                / args.workers.max(1))
            .max(1),
        ),
        sessions: args.workers.max(1),
        device: Device::parse(&args.device)?,
        strict: args.strict,
        ..Default::default()
    };
    let mut detector = Detector::from_file(&args.model, options)?;
    if let Some(spec) = &args.classes {
        let classes = parse_classes(spec, &detector.info().config.class_names)?;
        detector.set_class_filter(Some(classes));
    }
    let cfg = detector.info().config.clone();
    if let Some(iou) = args.iou.filter(|t| *t > cfg.nms_thresh) {
        eprintln!("warning: --iou {iou} is looser than the model's NMS threshold {}: no effect", cfg.nms_thresh);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    if files.is_empty() {
        write_errors(&args.out, &failures)?;
        bail!("no images found in {}", args.inputs.join(" "));
    }
    if args.save_txt {
        std::fs::create_dir_all(args.out.join("labels"))?;
    }
    if args.save_img {
        std::fs::create_dir_all(args.out.join("images"))?;
    }

    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(files.len() as u64);
        b.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
        b
    } else {
        ProgressBar::hidden()
    };
    let results: Vec<Mutex<Option<Result<Detections, String>>>> = files.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.workers.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files.len() {
                        break;
                    }
                    let r = detector.detect_path(&files[i]).map_err(|e| e.to_string());
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let wall = start.elapsed();

    let mut coco = Vec::new();
    let mut images = Vec::new();
    let mut sums = StageTimings::default();
    let mut ok = 0usize;
    let mut taken = BTreeSet::new();
    let mut warnings = Vec::new();
    for (i, (path, slot)) in files.iter().zip(results).enumerate() {
        let id = match &gt_ids {
            None => i as u64 + 1,
            Some(map) => {
                let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                match map.get(&base) {
                    Some(&id) => id,
                    None => {
                        failures.push((
                            path.display().to_string(),
                            format!("{}: not in the --ids-from ground truth", path.display()),
                        ));
                        continue;
                    }
                }
            }
        };
        let result =
            slot.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| Err("not processed".into()));
        let d = match result {
            Ok(d) => d,
            Err(e) => {
                failures.push((path.display().to_string(), e));
                continue;
            }
        };
        ok += 1;
        sums.decode += d.timings.decode;
        sums.preprocess += d.timings.preprocess;
        sums.inference += d.timings.inference;
        sums.postprocess += d.timings.postprocess;
        for w in &d.warnings {
            warnings.push(json!({"file": path.display().to_string(), "warning": w}));
        }
        images.push(json!({"id": id, "file_name": path.display().to_string(), "width": d.width, "height": d.height, "detections": d.detections.len()}));
        for det in &d.detections {
            let [x1, y1, x2, y2] = det.bbox;
            coco.push(json!({
                "image_id": id,
                "category_id": cfg.category_id(det.class_id),
                "bbox": [round3(x1), round3(y1), round3(x2 - x1), round3(y2 - y1)],
                "score": round5(det.score),
            }));
        }
        if args.save_txt || args.save_img {
            let stem = output_stem(path, id, &mut taken);
            if args.save_txt {
                write_yolo(&args.out.join("labels").join(format!("{stem}.txt")), &d)?;
            }
            if args.save_img
                && let Err(e) = save_annotated(path, &args.out.join("images"), &stem, &d, &detector)
            {
                failures.push((path.display().to_string(), format!("{}: annotated copy: {e}", path.display())));
            }
        }
    }
    let categories: Vec<_> =
        cfg.class_names.iter().enumerate().map(|(i, n)| json!({"id": cfg.category_id(i), "name": n})).collect();
    write_atomic(&args.out.join("detections.json"), serde_json::to_string(&coco)?.as_bytes())?;
    let index = json!({"model": args.model.display().to_string(), "images": images, "categories": categories, "warnings": warnings});
    write_atomic(&args.out.join("images.json"), serde_json::to_string_pretty(&index)?.as_bytes())?;
    write_errors(&args.out, &failures)?;

    let mean = |d: Duration| if ok > 0 { d.as_secs_f64() * 1e3 / ok as f64 } else { 0.0 };
    if !failures.is_empty() {
        eprintln!("{} input(s) failed (see {}):", failures.len(), args.out.join("errors.json").display());
        for (_, e) in failures.iter().take(20) {
            eprintln!("  {e}");
        }
    }
    println!(
        "{ok} image(s), {} detection(s) -> {} | {:.2} images/s | mean ms: decode {:.1}, preprocess {:.1}, inference {:.1}, postprocess {:.1}",
        coco.len(),
        args.out.display(),
        ok as f64 / wall.as_secs_f64().max(1e-9),
        mean(sums.decode),
        mean(sums.preprocess),
        mean(sums.inference),
        mean(sums.postprocess)
    );
    if ok == 0 {
        bail!("no image could be processed ({} failed)", failures.len());
    }
    Ok(if args.strict && !failures.is_empty() { EXIT_PARTIAL } else { 0 })
}

fn round3(v: f32) -> f64 {
    (v as f64 * 1e3).round() / 1e3
}

fn round5(v: f32) -> f64 {
    (v as f64 * 1e5).round() / 1e5
}

fn write_errors(out: &Path, failures: &[Failure]) -> Result<()> {
    let path = out.join("errors.json");
    if failures.is_empty() {
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        return Ok(());
    }
    let list: Vec<_> = failures.iter().map(|(f, e)| json!({"file": f, "error": e})).collect();
    write_atomic(&path, serde_json::to_string_pretty(&list)?.as_bytes())?;
    Ok(())
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

fn save_annotated(path: &Path, dir: &Path, stem: &str, d: &Detections, detector: &Detector) -> Result<()> {
    let mut img = detnas_infer::image_io::load_image(path, &detector.options().limits)?.rgb;
    for det in &d.detections {
        draw_detection(&mut img, det.bbox, &format!("{} {:.2}", det.class_name, det.score), det.class_id);
    }
    let out = dir.join(format!("{stem}.jpg"));
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Jpeg)?;
    write_atomic(&out, bytes.get_ref())?;
    Ok(())
}

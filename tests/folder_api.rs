//! Batch detection as a library: `detnas_infer::folder::detect_folder` run directly (no binary) on
//! a folder of the shipped samples and a broken image: its files, its events, a failure that does
//! not stop the batch, a resume that skips finished images, and options refused before any work.

use detnas_infer::InferError;
use detnas_infer::folder::{Existing, FolderEvent, FolderOptions, FolderOutcome, detect_folder};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// What the events of one run said, in order.
#[derive(Debug, Default)]
struct Seen {
    /// `started`, `done <file name>`, `failed <file name>`, `finished`, in order.
    order: Vec<String>,
    /// `(done, pending, resumed)` of the start.
    started: Option<(usize, usize, bool)>,
    /// Printed lines (notices, warnings, skipped inputs, the resume line).
    lines: Vec<String>,
    /// The failure messages of failed images.
    errors: Vec<String>,
    /// Images processed, as the finished event's outcome says.
    finished_images: Option<usize>,
}

fn name(file: &str) -> String {
    Path::new(file).file_name().unwrap().to_string_lossy().into_owned()
}

/// Runs `options`, recording its events.
fn run(options: &FolderOptions) -> (Result<FolderOutcome, InferError>, Seen) {
    let mut seen = Seen::default();
    let result = detect_folder(options, &mut |event| {
        seen.lines.extend(event.line());
        match event {
            FolderEvent::Started { done, pending, resumed, .. } => {
                seen.started = Some((done, pending, resumed));
                seen.order.push("started".into());
            }
            FolderEvent::ImageDone { record, .. } => seen.order.push(format!("done {}", name(&record.file))),
            FolderEvent::ImageFailed { record, .. } => {
                seen.order.push(format!("failed {}", name(&record.file)));
                seen.errors.push(record.error.clone().unwrap_or_default());
            }
            FolderEvent::Finished(outcome) => {
                seen.finished_images = Some(outcome.images);
                seen.order.push("finished".into());
            }
            _ => {}
        }
    });
    (result, seen)
}

/// A folder with the two shipped samples and `broken.jpg` (not an image).
fn samples(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for n in ["neon-yell-1.jpg", "neon-yell-2.jpg"] {
        std::fs::copy(root().join("models/samples").join(n), images.join(n)).unwrap();
    }
    std::fs::write(images.join("broken.jpg"), b"this is not a JPEG").unwrap();
    images
}

fn options(images: &Path, out: &Path) -> FolderOptions {
    let mut o = FolderOptions::new(root().join("models/neon-trees.onnx"), [images.display().to_string()], out);
    o.conf = Some(0.3);
    o.save_img = true;
    o.save_txt = true;
    o.workers = 1;
    o
}

#[test]
fn a_folder_is_detected_with_its_files_and_events_and_a_bad_image_does_not_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let images = samples(dir.path());
    let out = dir.path().join("out");
    let (result, seen) = run(&options(&images, &out));
    let outcome = result.expect("two of three images detect");

    // Events: the start, one per image in input order (one worker), then the end.
    assert_eq!(
        seen.order,
        ["started", "failed broken.jpg", "done neon-yell-1.jpg", "done neon-yell-2.jpg", "finished"],
        "{seen:?}"
    );
    assert_eq!(seen.started, Some((0, 3, false)));
    assert_eq!(seen.finished_images, Some(2));
    assert!(seen.errors[0].contains("broken.jpg"), "the failure names the file: {:?}", seen.errors);

    // The outcome: counts, the failure with its reason, the files.
    assert_eq!((outcome.images, outcome.detected_now, outcome.records.len()), (2, 2, 3));
    assert_eq!(outcome.failures.len(), 1);
    assert!(outcome.failures[0].file.ends_with("broken.jpg") && outcome.failures[0].error == seen.errors[0]);
    assert!(outcome.detections > 0, "the shipped model finds trees in its samples");
    assert!(outcome.mean_ms()[2] > 0.0 && outcome.images_per_second() > 0.0);
    assert_eq!(outcome.files.errors.as_deref(), Some(out.join("errors.json").as_path()));

    // detections.json: COCO results of the two good images, as many as the outcome counts.
    let dets = read_json(&outcome.files.detections);
    assert_eq!(dets.as_array().unwrap().len(), outcome.detections);
    let ids: std::collections::BTreeSet<u64> =
        dets.as_array().unwrap().iter().map(|d| d["image_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 3].into(), "ids in input order, none for the broken image");
    for d in dets.as_array().unwrap() {
        assert!(d["score"].as_f64().unwrap() >= 0.3, "{d}");
    }
    let errors = read_json(&out.join("errors.json"));
    assert_eq!(errors.as_array().unwrap().len(), 1);
    assert_eq!(read_json(&outcome.files.images)["images"].as_array().unwrap().len(), 2);

    // Annotated copies: the image's size, boxes drawn on it.
    let annotated_dir = outcome.files.annotated.as_ref().expect("save_img");
    for n in ["neon-yell-1", "neon-yell-2"] {
        let original = image::open(images.join(format!("{n}.jpg"))).unwrap().to_rgb8();
        let annotated = image::open(annotated_dir.join(format!("{n}.jpg"))).unwrap().to_rgb8();
        assert_eq!(annotated.dimensions(), original.dimensions());
        let red = detnas_infer::folder::draw::class_colour(0);
        let near = |p: &image::Rgb<u8>| p.0.iter().zip(red.0).all(|(a, b)| a.abs_diff(b) < 40);
        assert!(annotated.pixels().filter(|p| near(p)).count() > original.pixels().filter(|p| near(p)).count() + 100);
        assert!(outcome.files.labels.as_ref().unwrap().join(format!("{n}.txt")).is_file());
    }
    assert!(!annotated_dir.join("broken.jpg").exists());

    // The same folder again is refused (an earlier run's results), before anything is changed.
    let before = std::fs::read(&outcome.files.detections).unwrap();
    let err = run(&options(&images, &out)).0.unwrap_err();
    assert!(matches!(err, InferError::Owner(_)), "{err}");
    assert!(err.to_string().contains("--exist-ok"), "{err}");
    assert_eq!(std::fs::read(&outcome.files.detections).unwrap(), before);
}

#[test]
fn a_resumed_run_skips_finished_images_and_ends_with_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let images = samples(dir.path());
    let out = dir.path().join("out");
    let full = run(&options(&images, &out)).0.expect("first run");
    let tree = crate::util::tree(&out);

    // As a kill after two images would leave it: the journal's first two records, no results.
    let journal = std::fs::read_to_string(&full.files.results).unwrap();
    let kept: String = journal.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&full.files.results, kept).unwrap();
    for f in ["detections.json", "images.json", "errors.json"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    std::fs::remove_file(out.join("labels/neon-yell-2.txt")).unwrap();

    let mut resume = options(&images, &out);
    resume.existing = Existing::Resume;
    let (result, seen) = run(&resume);
    let outcome = result.expect("resumed run");
    assert_eq!(seen.started, Some((2, 1, true)));
    assert_eq!(seen.order, ["started", "done neon-yell-2.jpg", "finished"], "finished images are not redone");
    assert!(seen.lines.iter().any(|l| l.starts_with("resuming ") && l.ends_with("2 image(s) done, 1 to go")));
    assert_eq!((outcome.detected_now, outcome.images, outcome.failures.len()), (1, 2, 1));
    let resumed = crate::util::tree(&out);
    assert_eq!(tree.keys().collect::<Vec<_>>(), resumed.keys().collect::<Vec<_>>());
    for (file, bytes) in &tree {
        assert!(bytes == &resumed[file], "{file} differs after the resume");
    }

    // Other settings are not continued: the run is refused, naming the setting.
    let mut other = resume.clone();
    other.conf = Some(0.5);
    let err = run(&other).0.unwrap_err();
    assert!(matches!(err, InferError::Resume { .. }) && err.to_string().contains("conf"), "{err}");
}

#[test]
fn options_are_bounded_before_any_work_and_a_batch_of_bad_images_is_an_error_after_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let images = samples(dir.path());
    let out = dir.path().join("never");
    let bad: [fn(&mut FolderOptions); 7] = [
        |o| o.conf = Some(f32::NAN),
        |o| o.iou = Some(1.5),
        |o| o.max_det = Some(0),
        |o| o.workers = 0,
        |o| o.threads = Some(0),
        |o| o.inputs.clear(),
        |o| {
            let mut tiling = detnas_infer::Tiling::new(64, 0.2).unwrap();
            tiling.overlap = f32::INFINITY;
            o.tiling = Some(tiling);
        },
    ];
    for (k, set) in bad.iter().enumerate() {
        let mut o = options(&images, &out);
        set(&mut o);
        let (result, seen) = run(&o);
        let err = result.unwrap_err();
        assert!(matches!(err, InferError::Config(_)), "case {k}: {err}");
        assert!(seen.order.is_empty() && !out.exists(), "case {k}: nothing happens before the options are checked");
    }

    // Only bad images: an error, after the result files and the finished event.
    let only_bad = dir.path().join("bad");
    std::fs::create_dir_all(&only_bad).unwrap();
    std::fs::write(only_bad.join("x.jpg"), b"nope").unwrap();
    let bad_out = dir.path().join("bad-out");
    let (result, seen) = run(&options(&only_bad, &bad_out));
    let err = result.unwrap_err();
    assert!(matches!(err, InferError::NothingProcessed { failed: 1 }), "{err}");
    assert_eq!(err.to_string(), "no image could be processed (1 failed)");
    assert_eq!(seen.order, ["started", "failed x.jpg", "finished"]);
    assert_eq!(read_json(&bad_out.join("errors.json")).as_array().unwrap().len(), 1);
}

/// A ground truth of the two shipped samples (their recorded sizes; the second one wrong) whose
/// only category is the model's class under another id.
fn sample_ground_truth(dir: &Path) -> PathBuf {
    let images = samples(dir);
    std::fs::remove_file(images.join("broken.jpg")).unwrap();
    let size = |n: &str| image::image_dimensions(images.join(n)).unwrap();
    let (w1, h1) = size("neon-yell-1.jpg");
    let gt = serde_json::json!({
        "images": [{"id": 21, "file_name": "neon-yell-1.jpg", "width": w1, "height": h1},
                   {"id": 22, "file_name": "neon-yell-2.jpg", "width": 1, "height": 1}],
        "annotations": [{"id": 1, "image_id": 21, "category_id": 5, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}],
        "categories": [{"id": 5, "name": "tree"}],
    });
    let path = images.join("gt.json");
    std::fs::write(&path, gt.to_string()).unwrap();
    path
}

#[test]
fn a_ground_truths_images_are_detected_with_its_ids_as_a_folder_run_gives_them() {
    let dir = tempfile::tempdir().unwrap();
    let gt_path = sample_ground_truth(dir.path());
    let gt = detnas_core::coco::GroundTruth::load(&gt_path).unwrap();
    let detector =
        detnas_infer::Detector::builder().confidence(0.3).load(root().join("models/neon-trees.onnx")).unwrap();
    let found = detector.detect_dataset(&gt, &gt_path, None).unwrap();
    assert_eq!(found.images, 2);
    assert!(!found.detections.is_empty());
    assert!(found.detections.iter().all(|d| d.category_id == 5 && [21, 22].contains(&d.image_id)));
    assert!(found.warnings.iter().any(|w| w.contains("1 image(s) are not the size")), "{:?}", found.warnings);

    // the folder run with the same ground truth writes the same results
    let mut o = options(gt_path.parent().unwrap(), &dir.path().join("out"));
    (o.save_img, o.save_txt, o.ids_from) = (false, false, Some(gt_path.clone()));
    o.inputs = ["neon-yell-1.jpg", "neon-yell-2.jpg"].map(|n| gt_path.with_file_name(n).display().to_string()).to_vec();
    let outcome = run(&o).0.unwrap();
    let written = read_json(&outcome.files.detections);
    // the folder's files round scores to 5 decimals
    let mut from_folder: Vec<(i64, f64)> = written
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["image_id"].as_i64().unwrap(), d["score"].as_f64().unwrap()))
        .collect();
    let mut from_dataset: Vec<(i64, f64)> = found.detections.iter().map(|d| (d.image_id, d.score)).collect();
    from_folder.sort_by(|a, b| a.partial_cmp(b).unwrap());
    from_dataset.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(from_folder.len(), from_dataset.len());
    for (a, b) in from_folder.iter().zip(&from_dataset) {
        assert!(a.0 == b.0 && (a.1 - b.1).abs() < 1e-4, "{a:?} vs {b:?}");
    }

    // an image the ground truth names but that is not there is an error, not a smaller data set
    std::fs::remove_file(gt_path.with_file_name("neon-yell-2.jpg")).unwrap();
    let e = detector.detect_dataset(&gt, &gt_path, None).unwrap_err().to_string();
    assert!(e.contains("1 of 2 ground-truth images could not be detected in"), "{e}");
}

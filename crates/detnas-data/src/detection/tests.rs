//! Tests of COCO loading and validation, the hold-out split and COCO output. VOC: `tests_voc.rs`.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

/// Writes a real `w` x `h` PNG (so its header can be read).
pub(super) fn write_png(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::new(w, h).save(path).unwrap();
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

fn lenient() -> ValidationPolicy {
    ValidationPolicy::default()
}

/// A COCO file with every kind of problem; images in `dir/img`.
fn troubled_coco(dir: &Path) -> PathBuf {
    let img = dir.join("img");
    write_png(&img.join("a.png"), 100, 80);
    write_png(&img.join("b.png"), 100, 80);
    write_png(&img.join("e.png"), 50, 40);
    write_png(&img.join("h.png"), 30, 30);
    std::fs::write(img.join("not-an-image.png"), b"hello").unwrap();
    let json = dir.join("instances.json");
    write_json(
        &json,
        &json!({
            "info": {"description": "ignored"},
            "categories": [
                {"id": 7, "name": "dog"},
                {"id": 3, "name": "cat"},
                {"id": 3, "name": "cat again"},
                {"id": -1, "name": "negative"}
            ],
            "images": [
                {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
                {"id": 2, "file_name": "b.png", "width": 100.0, "height": 80},
                {"id": 1, "file_name": "b.png", "width": 100, "height": 80},
                {"id": 3, "file_name": "missing.png", "width": 100, "height": 80},
                {"id": 4, "width": 100, "height": 80},
                {"id": 5, "file_name": "e.png"},
                {"id": 6, "file_name": "not-an-image.png"},
                {"id": -2, "file_name": "a.png", "width": 100, "height": 80},
                {"id": 8, "file_name": "h.png", "width": 30, "height": 30}
            ],
            "annotations": [
                {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                {"id": 11, "image_id": 1, "category_id": 7, "bbox": [90, 70, 20, 20], "area": 400},
                {"id": 12, "image_id": 1, "category_id": 7, "bbox": [200, 10, 5, 5], "area": 25},
                {"id": 13, "image_id": 1, "category_id": 7, "bbox": [10, 10, 0, 5], "area": 0},
                {"id": 14, "image_id": 1, "category_id": 7, "bbox": [10, 10, 5, -3], "area": 0},
                {"id": 15, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3], "area": 0},
                {"id": 16, "image_id": 1, "category_id": 7, "bbox": ["a", 2, 3, 4], "area": 0},
                {"id": 17, "image_id": 1, "category_id": 99, "bbox": [1, 2, 3, 4], "area": 12},
                {"id": 18, "image_id": 42, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12},
                {"id": 19, "image_id": 3, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12},
                {"id": 10, "image_id": 2, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12},
                {"id": 20, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 1},
                {"id": 21, "image_id": 2, "category_id": -1, "bbox": [1, 2, 3, 4], "area": 12},
                {"id": 22, "image_id": 5, "category_id": 3, "bbox": [0, 0, 50, 40], "area": 2000},
                {"image_id": 1, "category_id": 3, "bbox": [1.5, 1, 2.25, 2], "area": 4.5}
            ]
        }),
    );
    json
}

#[test]
fn coco_every_problem_is_counted_and_the_rest_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let json = troubled_coco(dir.path());
    let data = DetectionDataset::from_coco(&json, &dir.path().join("img"), &lenient()).unwrap();

    assert_eq!(data.class_names, ["cat", "dog"]);
    assert_eq!(data.category_ids, [3, 7]);
    let ids: Vec<u64> = data.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(ids, [1, 2, 5, 8]);
    let a = &data.samples[0];
    assert_eq!(a.image, dir.path().join("img/a.png"));
    assert_eq!((a.width, a.height), (100, 80));
    assert_eq!(a.boxes, vec![[10.0, 10.0, 30.0, 30.0], [90.0, 70.0, 100.0, 80.0], [1.5, 1.0, 3.75, 3.0]]);
    assert_eq!(a.labels, [0, 1, 0]);
    assert!(data.samples[1].boxes.is_empty());
    let e = &data.samples[2];
    assert_eq!((e.width, e.height), (50, 40), "size read from the PNG header");
    assert_eq!(e.boxes, vec![[0.0, 0.0, 50.0, 40.0]]);

    let r = &data.report;
    let expected = [
        (Issue::BadCategory, 2),
        (Issue::DuplicateImageId, 1),
        (Issue::MissingImageFile, 1),
        (Issue::BadImageRecord, 2),
        (Issue::UnreadableImage, 1),
        (Issue::BoxClipped, 1),
        (Issue::BoxOutside, 1),
        (Issue::BoxEmpty, 2),
        (Issue::BoxInvalid, 2),
        (Issue::UnknownCategory, 2),
        (Issue::UnknownImage, 1),
        (Issue::DuplicateAnnotationId, 1),
        (Issue::CrowdSkipped, 1),
        (Issue::ImageWithoutBoxes, 2),
    ];
    for (issue, n) in expected {
        assert_eq!(r.count(issue), n, "{issue:?} in\n{r}");
    }
    assert_eq!(r.counts.len(), expected.len(), "{r}");
    assert_eq!(r.problems(), 17);
    assert_eq!((r.images_read, r.annotations_read, r.samples, r.boxes), (9, 15, 4, 4));
    assert_eq!(r.source, json.display().to_string());

    let clipped = r.examples.iter().find(|e| e.issue == Issue::BoxClipped).unwrap();
    assert_eq!(clipped.file, json.display().to_string());
    assert_eq!(clipped.record, "annotation id 11");
    assert!(clipped.detail.contains("[90, 70, 20, 20]") && clipped.detail.contains("100x80"), "{clipped:?}");
    let missing = r.examples.iter().find(|e| e.issue == Issue::MissingImageFile).unwrap();
    assert_eq!(missing.record, "image id 3");
    assert!(missing.detail.contains("missing.png"), "{missing:?}");

    let text = r.to_string();
    assert_eq!(text.lines().count(), expected.len(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("1 boxes partly outside the image (clipped), e.g. ")), "{text}");
    assert!(text.contains("2 boxes with zero or negative size (dropped)"), "{text}");
    let value = serde_json::to_value(r).unwrap();
    assert_eq!(value["counts"]["box_clipped"], 1);
    assert_eq!(value["counts"]["missing_image_file"], 1);
    assert_eq!(value["examples"][0]["issue"], "bad_category");
    assert!(r.summary().contains("4 samples, 4 boxes kept (of 9 images, 15 annotations read)"));
}

#[test]
fn coco_policy_switches() {
    let dir = tempfile::tempdir().unwrap();
    let json = troubled_coco(dir.path());
    let img = dir.path().join("img");

    let no_clip = ValidationPolicy { clip_boxes: false, max_examples: 1, ..lenient() };
    let data = DetectionDataset::from_coco(&json, &img, &no_clip).unwrap();
    assert_eq!(data.report.count(Issue::BoxClipped), 0);
    assert_eq!(data.report.count(Issue::BoxPartlyOutside), 1);
    assert_eq!(data.samples[0].boxes.len(), 2);
    for issue in Issue::ALL {
        assert!(data.report.examples.iter().filter(|e| e.issue == issue).count() <= 1);
    }
    assert_eq!(data.report.examples.iter().filter(|e| e.issue == Issue::BadImageRecord).count(), 1);
    assert_eq!(data.report.examples.iter().filter(|e| e.issue == Issue::UnreadableImage).count(), 1);

    let trusting = ValidationPolicy { check_files: false, ..lenient() };
    let data = DetectionDataset::from_coco(&json, &img, &trusting).unwrap();
    assert_eq!(data.report.count(Issue::MissingImageFile), 0);
    let three = data.samples.iter().find(|s| s.image_id == 3).expect("kept without the file check");
    assert_eq!(three.boxes, vec![[1.0, 2.0, 4.0, 6.0]]);
}

#[test]
fn coco_strict_policy_fails_on_the_first_problem_naming_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let json = troubled_coco(dir.path());
    let err = DetectionDataset::from_coco(&json, &dir.path().join("img"), &ValidationPolicy::strict()).unwrap_err();
    assert!(matches!(err, DataError::Strict { issue: Issue::BadCategory, .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with(&json.display().to_string()), "{text}");
    assert!(text.contains("category id 3") && text.contains("strict"), "{text}");

    // One clipped box and notes only: the box is the error, the notes never are.
    write_png(&dir.path().join("img/c.png"), 100, 80);
    let one = dir.path().join("one.json");
    let mut value = json!({
        "categories": [{"id": 1, "name": "x"}],
        "images": [
            {"id": 1, "file_name": "c.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "c.png", "width": 100, "height": 80}
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [95, 1, 10, 5], "area": 50}
        ]
    });
    write_json(&one, &value);
    let err = DetectionDataset::from_coco(&one, &dir.path().join("img"), &ValidationPolicy::strict()).unwrap_err();
    assert!(matches!(err, DataError::Strict { issue: Issue::BoxClipped, .. }), "{err}");
    assert!(err.to_string().contains("annotation id 2"), "{err}");

    value["annotations"][1]["bbox"] = json!([90, 1, 10, 5]);
    write_json(&one, &value);
    let data = DetectionDataset::from_coco(&one, &dir.path().join("img"), &ValidationPolicy::strict()).unwrap();
    assert_eq!(data.report.count(Issue::CrowdSkipped), 1);
    assert_eq!(data.report.count(Issue::ImageWithoutBoxes), 1);
    assert_eq!(data.report.problems(), 0);
}

#[test]
fn coco_unusable_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, b"{\"images\": [").unwrap();
    let err = DetectionDataset::from_coco(&path, dir.path(), &lenient()).unwrap_err();
    assert!(matches!(err, DataError::Json { .. }), "{err}");
    assert!(err.to_string().contains("bad.json") && err.to_string().contains("line 1"), "{err}");

    write_json(&path, &json!({"images": [], "categories": [{"id": -4}]}));
    let err = DetectionDataset::from_coco(&path, dir.path(), &lenient()).unwrap_err();
    assert!(matches!(err, DataError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("bad.json: no usable category"), "{err}");

    let err = DetectionDataset::from_coco(&dir.path().join("absent.json"), dir.path(), &lenient()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("absent.json"), "{err}");
}

#[test]
fn box_check_edges() {
    let ok = |b| check_box(b, 10, 10, true);
    assert_eq!(ok([0.0, 0.0, 10.0, 10.0]), Ok(([0.0, 0.0, 10.0, 10.0], None)));
    assert_eq!(ok([-0.0005, 0.0, 10.0005, 10.0]), Ok(([0.0, 0.0, 10.0, 10.0], None)), "noise is not counted");
    assert_eq!(ok([-1.0, 2.0, 3.0, 4.0]), Ok(([0.0, 2.0, 3.0, 4.0], Some(Issue::BoxClipped))));
    assert_eq!(ok([10.0, 2.0, 13.0, 4.0]), Err(Issue::BoxOutside), "touching the right edge from outside");
    assert_eq!(ok([-3.0, 2.0, 0.0, 4.0]), Err(Issue::BoxOutside));
    assert_eq!(ok([2.0, 2.0, 2.0, 4.0]), Err(Issue::BoxEmpty));
    assert_eq!(ok([f64::INFINITY, 2.0, 3.0, 4.0]), Err(Issue::BoxInvalid));
    assert_eq!(ok([1.0, f64::NAN, 3.0, 4.0]), Err(Issue::BoxInvalid));
    assert_eq!(ok([1.0, 1.0, 1.0 + 1e-9, 4.0]), Err(Issue::BoxEmpty), "collapses in f32");
    assert_eq!(check_box([-1.0, 2.0, 3.0, 4.0], 10, 10, false), Err(Issue::BoxPartlyOutside));
}

fn dataset(ids: impl IntoIterator<Item = u64>) -> DetectionDataset {
    let samples = ids
        .into_iter()
        .map(|id| DetectionSample {
            image: PathBuf::from(format!("/data/{id}.png")),
            width: 64,
            height: 48,
            boxes: vec![[1.0, 2.0, 10.5, 20.25]],
            labels: vec![(id % 2) as usize],
            image_id: id,
        })
        .collect();
    DetectionDataset {
        class_names: vec!["a".into(), "b".into()],
        category_ids: vec![1, 5],
        samples,
        report: ValidationReport::default(),
    }
}

fn ids(data: &DetectionDataset) -> Vec<u64> {
    data.samples.iter().map(|s| s.image_id).collect()
}

#[test]
fn split_is_deterministic_disjoint_and_order_independent() {
    let data = dataset((0..200).map(|i| i * 7 + 3));
    let (rest, held) = data.split_holdout(0.2, 42).unwrap();
    assert_eq!(held.samples.len(), 40);
    assert_eq!(rest.samples.len(), 160);
    let (rest_ids, held_ids) = (ids(&rest), ids(&held));
    assert!(held_ids.iter().all(|id| !rest_ids.contains(id)));
    let mut all: Vec<u64> = rest_ids.iter().chain(&held_ids).copied().collect();
    all.sort_unstable();
    assert_eq!(all, ids(&data));
    assert!(rest_ids.is_sorted() && held_ids.is_sorted(), "source order kept");
    assert_eq!(held.class_names, data.class_names);
    assert_eq!(held.category_ids, data.category_ids);

    let (rest2, held2) = data.split_holdout(0.2, 42).unwrap();
    assert_eq!((ids(&rest2), ids(&held2)), (rest_ids.clone(), held_ids.clone()));

    let mut reversed = data.clone();
    reversed.samples.reverse();
    let (_, held_rev) = reversed.split_holdout(0.2, 42).unwrap();
    let mut got = ids(&held_rev);
    got.sort_unstable();
    assert_eq!(got, held_ids, "independent of sample order");

    let (_, other_seed) = data.split_holdout(0.2, 43).unwrap();
    assert_ne!(ids(&other_seed), held_ids);

    let (_, larger) = data.split_holdout(0.5, 42).unwrap();
    assert!(held_ids.iter().all(|id| ids(&larger).contains(id)), "nested in the fraction");
    // Not a prefix of the sorted ids: the hash mixes them.
    assert_ne!(held_ids, ids(&data)[..40].to_vec());
}

#[test]
fn split_bounds() {
    let data = dataset(1..=10);
    let (rest, held) = data.split_holdout(0.0, 1).unwrap();
    assert_eq!((rest.samples.len(), held.samples.len()), (10, 0));
    let (rest, held) = data.split_holdout(1.0, 1).unwrap();
    assert_eq!((rest.samples.len(), held.samples.len()), (0, 10));
    let (rest, held) = data.split_holdout(0.01, 1).unwrap();
    assert_eq!((rest.samples.len(), held.samples.len()), (9, 1), "at least one held out");
    let (rest, held) = data.split_holdout(0.99, 1).unwrap();
    assert_eq!((rest.samples.len(), held.samples.len()), (1, 9), "at least one kept");
    for bad in [-0.1, 1.5, f64::NAN] {
        let err = data.split_holdout(bad, 1).unwrap_err();
        assert!(matches!(err, DataError::Argument(_)) && err.to_string().contains("fraction"), "{err}");
    }
    // Samples sharing an id (built by hand) stay together.
    let mut twice = dataset([1, 2, 3, 4]);
    twice.samples.push(twice.samples[0].clone());
    let (rest, held) = twice.split_holdout(0.5, 9).unwrap();
    assert_eq!(rest.samples.len() + held.samples.len(), 5);
    assert!(ids(&rest).iter().all(|id| !ids(&held).contains(id)));
}

#[test]
fn write_coco_round_trips_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let json = troubled_coco(dir.path());
    let data = DetectionDataset::from_coco(&json, &dir.path().join("img"), &lenient()).unwrap();
    let out = dir.path().join("gt.json");
    data.write_coco(&out).unwrap();

    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(raw["images"][0]["file_name"], "img/a.png");
    assert_eq!(raw["categories"], json!([{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]));
    assert_eq!(raw["annotations"][2]["bbox"], json!([1.5, 1.0, 2.25, 2.0]));
    assert_eq!(raw["annotations"][2]["area"], json!(4.5));
    assert_eq!(raw["annotations"][2]["iscrowd"], json!(0));
    assert_eq!(raw["annotations"][1]["category_id"], json!(7));

    let back = DetectionDataset::from_coco(&out, dir.path(), &ValidationPolicy::strict()).unwrap();
    assert_eq!(back.samples, data.samples);
    assert_eq!(back.class_names, data.class_names);
    assert_eq!(back.category_ids, data.category_ids);

    let gt = detnas_core::coco::GroundTruth::load(&out).unwrap();
    let perfect: Vec<detnas_core::coco::Detection> = gt
        .dataset()
        .annotations
        .iter()
        .map(|a| detnas_core::coco::Detection {
            image_id: a.image_id,
            category_id: a.category_id,
            bbox: a.bbox,
            score: 0.9,
        })
        .collect();
    let dt = detnas_core::coco::Detections::new(perfect, &gt).unwrap();
    let stats = detnas_core::coco::evaluate(&gt, &dt, &detnas_core::coco::EvalParams::default());
    assert_eq!(stats.ap50(), 1.0);
}

#[test]
fn write_coco_paths_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset([4, 9]);
    let out = dir.path().join("sub/gt.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    data.write_coco(&out).unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(raw["images"][0]["file_name"], "/data/4.png", "outside the folder: absolute");
    assert_eq!(raw["annotations"][1]["bbox"], json!([1.0, 2.0, 9.5, 18.25]));

    let mut bad = data.clone();
    bad.samples[1].labels[0] = 5;
    let err = bad.write_coco(&out).unwrap_err();
    assert!(err.to_string().contains("gt.json") && err.to_string().contains("label 5"), "{err}");
    let mut bad = data.clone();
    bad.category_ids.pop();
    assert!(bad.write_coco(&out).unwrap_err().to_string().contains("2 class names but 1 category ids"));
    let mut bad = data.clone();
    bad.samples[1].image_id = 4;
    let err = bad.write_coco(&out).unwrap_err();
    assert!(err.to_string().contains("image id 4"), "{err}");
    let err = data.write_coco(&dir.path().join("missing/gt.json")).unwrap_err();
    assert!(err.to_string().contains("missing/gt.json"), "{err}");
}

/// The real data set, once prepared:
/// `.venv/bin/python tools/prepare_neon_trees.py && cargo test -p detnas-data -- --ignored neon`.
#[test]
#[ignore = "needs data/neon-trees from tools/prepare_neon_trees.py"]
fn prepared_neon_trees_load_strictly_and_decode() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/neon-trees");
    let mut ids = Vec::new();
    for (split, tiles, boxes) in [("train", 66, 1173), ("val", 12, 289)] {
        let json = root.join(format!("{split}.json"));
        let data = DetectionDataset::from_coco(&json, &root, &ValidationPolicy::strict())
            .unwrap_or_else(|e| panic!("{e} (run tools/prepare_neon_trees.py first)"));
        assert_eq!((data.samples.len(), data.num_boxes()), (tiles, boxes), "{split}");
        assert_eq!(data.class_names, ["tree"]);
        assert_eq!(data.category_ids, [1]);
        for sample in &data.samples {
            let image = crate::image_io::load_image(&sample.image, &Default::default()).unwrap();
            assert_eq!(image.rgb.dimensions(), (sample.width, sample.height), "{}", sample.image.display());
            ids.push(sample.image_id);
        }
    }
    let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "image ids unique across train and val");
}

/// A COCO set of `a.png` (40x30, recorded right), `garbage.jpg` (text), `truncated.png` (its first
/// half), `wrong.png` (recorded 10x10, really 40x30) and `turned.png` (recorded transposed).
fn image_trouble(dir: &Path) -> PathBuf {
    write_png(&dir.join("a.png"), 40, 30);
    write_png(&dir.join("wrong.png"), 40, 30);
    write_png(&dir.join("turned.png"), 30, 40);
    std::fs::write(dir.join("garbage.jpg"), b"this is not an image, only text\n").unwrap();
    let noisy = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 37 + y * 11) as u8, (x ^ y) as u8, 7]));
    let mut png = Vec::new();
    noisy.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    std::fs::write(dir.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    let json = dir.join("instances.json");
    let names = ["a.png", "garbage.jpg", "truncated.png", "wrong.png", "turned.png"];
    let sizes = [(40, 30), (40, 30), (64, 64), (10, 10), (40, 30)];
    let images: Vec<_> = names
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (n, (w, h)))| json!({"id": i + 1, "file_name": n, "width": w, "height": h}))
        .collect();
    let annotations: Vec<_> =
        (1..=5).map(|i| json!({"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25})).collect();
    write_json(&json, &json!({"categories": [{"id": 1, "name": "x"}], "images": images, "annotations": annotations}));
    json
}

#[test]
fn undecodable_and_mismatched_images_are_counted_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let json = image_trouble(dir.path());
    let headers = DetectionDataset::from_coco(&json, dir.path(), &lenient()).unwrap();
    let ids: Vec<u64> = headers.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(ids, [1, 3, 5], "the truncated PNG's header is intact; the turned one may be EXIF-rotated");
    let r = &headers.report;
    assert_eq!((r.count(Issue::UnreadableImage), r.count(Issue::ImageSizeMismatch)), (1, 1), "{r}");
    let text = r.to_string();
    assert!(
        text.contains("1 images whose file cannot be decoded (dropped), e.g. ") && text.contains("garbage.jpg"),
        "{text}"
    );
    assert!(text.contains("recorded 10x10") && text.contains("40x30"), "{text}");

    let decoding = ValidationPolicy { decode_images: true, ..lenient() };
    let full = DetectionDataset::from_coco(&json, dir.path(), &decoding).unwrap();
    let ids: Vec<u64> = full.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(ids, [1, 5], "a full decode also finds the truncated pixel data");
    assert_eq!(full.report.count(Issue::UnreadableImage), 2, "{}", full.report);
    let truncated = full.report.examples.iter().filter(|e| e.issue == Issue::UnreadableImage).nth(1).unwrap();
    assert!(truncated.detail.contains("truncated.png"), "{truncated:?}");

    let strict = ValidationPolicy::strict();
    let err = DetectionDataset::from_coco(&json, dir.path(), &strict).unwrap_err().to_string();
    assert!(err.contains("garbage.jpg"), "{err}");

    let trusting = ValidationPolicy { check_files: false, ..lenient() };
    assert_eq!(DetectionDataset::from_coco(&json, dir.path(), &trusting).unwrap().samples.len(), 5);
}

#[test]
fn a_truncated_jpeg_decodes_with_a_counted_warning() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(48, 32, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 90]));
    let mut jpeg = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    std::fs::write(dir.path().join("cut.jpg"), &jpeg[..jpeg.len() - 40]).unwrap();
    let json = dir.path().join("instances.json");
    write_json(
        &json,
        &json!({
            "categories": [{"id": 1, "name": "x"}],
            "images": [{"id": 1, "file_name": "cut.jpg", "width": 48, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25}]
        }),
    );
    let decoding = ValidationPolicy { decode_images: true, ..lenient() };
    let data = DetectionDataset::from_coco(&json, dir.path(), &decoding).unwrap();
    assert_eq!(data.samples.len(), 1, "kept: the decoder filled the missing rows");
    assert_eq!(data.report.count(Issue::ImageDecodeWarning), 1, "{}", data.report);
    assert!(data.report.problems() >= 1);
}

//! Tests of the COCO evaluation: golden fixtures from pycocotools (`tools/coco_fixtures.py`),
//! IoU and crowd semantics, numpy-exact helpers, and error reporting.

use super::eval::{box_iou, linspace, numpy_mean, pairwise_sum};
use super::*;
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/coco")
}

/// Every fixture case: the 12 numbers within 1e-6 of pycocotools' (and in fact bit-identical),
/// and the summary table line for line.
#[test]
fn golden_fixtures_match_pycocotools() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/data/coco exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "expected the generated fixture cases, found {cases:?}");
    for case in &cases {
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
        let want: Vec<f64> = serde_json::from_value(expected["stats"].clone()).unwrap();
        let lines: Vec<String> = serde_json::from_value(expected["summary"].clone()).unwrap();
        let got = evaluate_files(&case.join("gt.json"), &case.join("dt.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        for (i, (g, w)) in got.stats.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6,
                "{}: stat {} ({}) is {g}, pycocotools {w}",
                case.display(),
                i,
                STAT_NAMES[i]
            );
            assert_eq!(g.to_bits(), w.to_bits(), "{}: stat {} not bit-identical: {g} vs {w}", case.display(), i);
        }
        assert_eq!(got.summary_lines(), lines, "{}", case.display());
        assert_eq!(got.to_string(), lines.join("\n"));
    }
}

#[test]
fn json_form_has_stats_and_named_fields() {
    let case = fixtures_dir().join("basic");
    let stats = evaluate_files(&case.join("gt.json"), &case.join("dt.json")).unwrap();
    let json = serde_json::to_value(&stats).unwrap();
    let array: Vec<f64> = serde_json::from_value(json["stats"].clone()).unwrap();
    assert_eq!(array, stats.stats.to_vec());
    for (i, name) in STAT_NAMES.iter().enumerate() {
        assert_eq!(json[name].as_f64(), Some(stats.stats[i]), "{name}");
    }
    assert_eq!(json["max_dets"], serde_json::json!([1, 10, 100]));
    assert_eq!(json["images"], 7);
    assert_eq!(json["categories"], 3);
    assert_eq!(stats.ap(), stats.stats[0]);
    assert_eq!(stats.ap50(), stats.stats[1]);
}

#[test]
fn default_thresholds_are_numpy_linspace() {
    let p = EvalParams::default();
    let iou: Vec<f64> = ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.8999999999999999", "0.95"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(p.iou_thrs, iou);
    assert_eq!(p.rec_thrs.len(), 101);
    // numpy's values where i * 0.01 is not the nearest double to the decimal.
    for (i, s) in [(35, "0.35000000000000003"), (57, "0.5700000000000001"), (95, "0.9500000000000001"), (100, "1.0")] {
        assert_eq!(p.rec_thrs[i], s.parse::<f64>().unwrap(), "rec_thrs[{i}]");
    }
    assert_eq!(linspace(0.0, 1.0, 1), vec![0.0]);
}

#[test]
fn mean_is_numpy_pairwise() {
    // Reference values: np.add.reduce / np.mean of the same arrays (numpy 2.3.5).
    let data = |n: usize| -> Vec<f64> { (0..n).map(|i| 1.0 / (i + 1) as f64 + (i % 7) as f64 * 0.1).collect() };
    for (n, sum, mean) in [
        (5, "3.2833333333333337", "0.6566666666666667"),
        (100, "34.687377517639625", "0.3468737751763962"),
        (1000, "307.18547086055037", "0.30718547086055037"),
        (80800, "24251.57695409752", "0.30014327913487027"),
    ] {
        let values = data(n);
        assert_eq!(pairwise_sum(&values), sum.parse::<f64>().unwrap(), "sum of {n}");
        assert_eq!(numpy_mean(&values), mean.parse::<f64>().unwrap(), "mean of {n}");
    }
}

#[test]
fn iou_has_no_plus_one_and_crowd_divides_by_detection_area() {
    let a = [0.0, 0.0, 10.0, 10.0];
    assert_eq!(box_iou(&a, &a, false), 1.0);
    // Half overlap: 50 / (100 + 100 - 50).
    assert_eq!(box_iou(&[5.0, 0.0, 10.0, 10.0], &a, false), 50.0 / 150.0);
    // Touching edges and disjoint boxes: 0.
    assert_eq!(box_iou(&[10.0, 0.0, 10.0, 10.0], &a, false), 0.0);
    assert_eq!(box_iou(&[30.0, 30.0, 1.0, 1.0], &a, false), 0.0);
    // Crowd: a detection inside the region has IoU 1 whatever its size; half inside, 0.5.
    let crowd = [0.0, 0.0, 100.0, 100.0];
    assert_eq!(box_iou(&[10.0, 10.0, 5.0, 5.0], &crowd, true), 1.0);
    assert_eq!(box_iou(&[-5.0, 10.0, 10.0, 10.0], &crowd, true), 0.5);
    assert_eq!(box_iou(&[10.0, 10.0, 5.0, 5.0], &crowd, false), 25.0 / 10000.0);
    // Zero-size detection.
    assert_eq!(box_iou(&[1.0, 1.0, 0.0, 5.0], &a, false), 0.0);
}

fn gt_with(annotations: Vec<CocoAnnotation>, images: &[i64], categories: &[i64]) -> GroundTruth {
    GroundTruth::new(CocoDataset {
        images: images.iter().map(|&id| CocoImage { id, ..Default::default() }).collect(),
        annotations,
        categories: categories.iter().map(|&id| CocoCategory { id, ..Default::default() }).collect(),
    })
    .unwrap()
}

fn ann(id: i64, image_id: i64, bbox: [f64; 4], iscrowd: bool) -> CocoAnnotation {
    CocoAnnotation { id, image_id, category_id: 1, bbox, area: bbox[2] * bbox[3], iscrowd }
}

fn det(image_id: i64, bbox: [f64; 4], score: f64) -> Detection {
    Detection { image_id, category_id: 1, bbox, score }
}

#[test]
fn perfect_detections_score_one() {
    let gt = gt_with(
        vec![ann(1, 1, [0.0, 0.0, 50.0, 50.0], false), ann(2, 2, [10.0, 10.0, 200.0, 100.0], false)],
        &[1, 2],
        &[1],
    );
    let dt = Detections::new(vec![det(1, [0.0, 0.0, 50.0, 50.0], 0.9), det(2, [10.0, 10.0, 200.0, 100.0], 0.8)], &gt)
        .unwrap();
    let s = evaluate(&gt, &dt, &EvalParams::default());
    // No small objects: -1 there; everything else perfect up to pycocotools' `tp / (tp + fp + eps)`
    // (values from pycocotools 2.0.11 on the same data).
    let one = 0.9999999999999998;
    assert_eq!(s.stats, [1.0, 1.0, 1.0, -1.0, one, one, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0]);
    assert_eq!((s.images, s.categories, s.detections), (2, 1, 2));
}

#[test]
fn crowd_matches_many_detections_which_are_ignored() {
    // One regular object inside a crowd region; many detections inside the crowd.
    let mut anns = vec![ann(1, 1, [0.0, 0.0, 400.0, 400.0], true), ann(2, 1, [10.0, 10.0, 100.0, 100.0], false)];
    anns[0].area = 1.0; // a crowd is ignored whatever its area
    let gt = gt_with(anns, &[1], &[1]);
    let mut dets = vec![det(1, [10.0, 10.0, 100.0, 100.0], 0.5)];
    for i in 0..20 {
        dets.push(det(1, [200.0 + i as f64, 200.0, 50.0, 50.0], 0.9 - 0.01 * i as f64));
    }
    let s = evaluate(&gt, &Detections::new(dets, &gt).unwrap(), &EvalParams::default());
    // The 20 higher-scored detections all match the crowd and are ignored: precision stays 1; with
    // maxDets 1 and 10 only crowd matches are kept: recall 0 (values from pycocotools 2.0.11).
    let (a, b) = (0.9999999999999998, 0.9999999999999999);
    assert_eq!(s.stats, [a, b, b, -1.0, -1.0, a, 0.0, 0.0, 1.0, -1.0, -1.0, 1.0]);

    // Without the crowd those 20 detections are false positives ranked first.
    let gt = gt_with(vec![ann(2, 1, [10.0, 10.0, 100.0, 100.0], false)], &[1], &[1]);
    let mut dets = vec![det(1, [10.0, 10.0, 100.0, 100.0], 0.5)];
    for i in 0..20 {
        dets.push(det(1, [200.0 + i as f64, 200.0, 50.0, 50.0], 0.9 - 0.01 * i as f64));
    }
    let s = evaluate(&gt, &Detections::new(dets, &gt).unwrap(), &EvalParams::default());
    let (a, b) = (0.04761904761904762, 0.04761904761904761);
    assert_eq!(s.stats, [a, b, b, -1.0, -1.0, 0.9999999999999998, 0.0, 0.0, 1.0, -1.0, -1.0, 1.0]);
}

#[test]
fn crowd_only_category_and_missing_gt_are_minus_one() {
    let gt = gt_with(vec![ann(1, 1, [0.0, 0.0, 50.0, 50.0], true)], &[1], &[1, 2]);
    let dt = Detections::new(vec![det(1, [0.0, 0.0, 50.0, 50.0], 0.9)], &gt).unwrap();
    let s = evaluate(&gt, &dt, &EvalParams::default());
    assert_eq!(s.stats, [-1.0; 12]);
}

#[test]
fn empty_results_give_zero_where_gt_exists() {
    let gt = gt_with(vec![ann(1, 1, [0.0, 0.0, 50.0, 50.0], false)], &[1, 2], &[1]);
    let s = evaluate(&gt, &Detections::new(vec![], &gt).unwrap(), &EvalParams::default());
    assert_eq!(s.stats, [0.0, 0.0, 0.0, -1.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0, -1.0]);

    let dir = tempfile::tempdir().unwrap();
    let dt_path = dir.path().join("dt.json");
    std::fs::write(&dt_path, "[]").unwrap();
    let case = fixtures_dir().join("basic");
    let s = evaluate_files(&case.join("gt.json"), &dt_path).unwrap();
    assert!(s.stats.iter().all(|&v| v == 0.0 || v == -1.0));
    assert_eq!(s.detections, 0);
}

#[test]
fn summary_rounds_like_python() {
    // Python's '{:0.3f}' rounds exact ties to even: 0.0625 -> 0.062, 0.1875 -> 0.188.
    let mut stats =
        evaluate_files(&fixtures_dir().join("gt_id_zero/gt.json"), &fixtures_dir().join("gt_id_zero/dt.json")).unwrap();
    stats.stats[0] = 0.0625;
    stats.stats[1] = 0.1875;
    stats.stats[2] = 0.5625;
    let lines = stats.summary_lines();
    assert!(lines[0].ends_with("] = 0.062"), "{}", lines[0]);
    assert!(lines[1].ends_with("] = 0.188"), "{}", lines[1]);
    assert!(lines[2].ends_with("] = 0.562"), "{}", lines[2]);
    assert!(lines[3].ends_with("] = -1.000"), "{}", lines[3]);
}

// ---- errors ------------------------------------------------------------------------------------

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GT: &str = r#"{"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "a"}],
  "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}]}"#;

fn gt_error(text: &str) -> CocoError {
    let dir = tempfile::tempdir().unwrap();
    let gt = write(&dir, "gt.json", text);
    let dt = write(&dir, "dt.json", "[]");
    let err = evaluate_files(&gt, &dt).unwrap_err();
    assert_eq!(err.path(), gt, "{err}");
    assert!(err.to_string().contains("gt.json"), "{err}");
    err
}

fn dt_error(text: &str) -> CocoError {
    let dir = tempfile::tempdir().unwrap();
    let gt = write(&dir, "gt.json", GT);
    let dt = write(&dir, "dt.json", text);
    let err = evaluate_files(&gt, &dt).unwrap_err();
    assert_eq!(err.path(), dt, "{err}");
    assert!(err.to_string().contains("dt.json"), "{err}");
    err
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let gt = write(&dir, "gt.json", GT);
    let missing = dir.path().join("nope.json");
    let err = evaluate_files(&gt, &missing).unwrap_err();
    assert!(matches!(err, CocoError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.json"), "{err}");
    let err = evaluate_files(&missing, &gt).unwrap_err();
    assert!(matches!(err, CocoError::Io { .. }) && err.path() == missing, "{err:?}");
}

#[test]
fn malformed_json_names_the_path_and_position() {
    let err = gt_error(r#"{"images": [}"#);
    assert!(matches!(err, CocoError::Json { .. }), "{err:?}");
    assert!(err.to_string().contains("line 1"), "{err}");
    // A results file must be a list.
    let err = dt_error(r#"{"image_id": 1}"#);
    assert!(matches!(err, CocoError::Json { .. }), "{err:?}");
    // Missing required field.
    let err = dt_error(r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]"#);
    assert!(err.to_string().contains("score"), "{err}");
}

#[test]
fn results_problems_are_typed() {
    let err = dt_error(
        r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
                          {"image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]"#,
    );
    assert_eq!(err.problem(), Some(&CocoProblem::UnknownImage { index: 1, image_id: 9 }));
    assert!(err.to_string().contains("image id 9"), "{err}");

    let err = dt_error(r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5], "score": 0.5}]"#);
    assert!(
        matches!(err.problem(), Some(CocoProblem::MalformedBbox { entry: Entry::Result { index: 0 }, .. })),
        "{err}"
    );
    assert!(err.to_string().contains("malformed bbox"), "{err}");

    let err = dt_error(r#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, -5, 5], "score": 0.5}]"#);
    assert!(matches!(err.problem(), Some(CocoProblem::MalformedBbox { .. })), "{err}");

    // Results of unknown categories are accepted and skipped, as in pycocotools.
    let dir = tempfile::tempdir().unwrap();
    let gt = write(&dir, "gt.json", GT);
    let dt = write(&dir, "dt.json", r#"[{"image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10], "score": 0.5}]"#);
    let s = evaluate_files(&gt, &dt).unwrap();
    assert_eq!((s.stats[0], s.detections), (0.0, 0));
}

#[test]
fn in_memory_problems_name_a_label() {
    let gt = gt_with(vec![ann(1, 1, [0.0, 0.0, 10.0, 10.0], false)], &[1], &[1]);
    let err = Detections::new(vec![det(1, [0.0, 0.0, 10.0, 10.0], f64::NAN)], &gt).unwrap_err();
    assert!(matches!(err.problem(), Some(CocoProblem::NonFiniteScore { index: 0, .. })), "{err}");
    assert!(err.to_string().starts_with("<results>: result #0: score NaN"), "{err}");
    let err = Detections::new(vec![det(1, [0.0, f64::INFINITY, 10.0, 10.0], 0.5)], &gt).unwrap_err();
    assert!(matches!(err.problem(), Some(CocoProblem::MalformedBbox { .. })), "{err}");

    let mut dataset = gt.dataset().clone();
    dataset.annotations.push(ann(1, 1, [0.0, 0.0, 1.0, 1.0], false));
    let err = GroundTruth::new(dataset).unwrap_err();
    assert_eq!(err.problem(), Some(&CocoProblem::DuplicateAnnotationId { id: 1 }));
    assert!(err.to_string().starts_with("<ground truth>:"), "{err}");
}

#[test]
fn ground_truth_problems_are_typed() {
    let cases: [(&str, CocoProblem); 5] = [
        (
            r#"{"images": [{"id": 1}, {"id": 1}], "categories": [], "annotations": []}"#,
            CocoProblem::DuplicateImageId { id: 1 },
        ),
        (
            r#"{"images": [{"id": 1}], "categories": [{"id": 1}],
               "annotations": [{"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1}]}"#,
            CocoProblem::AnnotationUnknownImage { id: 4, image_id: 2 },
        ),
        (
            r#"{"images": [{"id": 1}], "categories": [{"id": 1}],
               "annotations": [{"id": 4, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 1}]}"#,
            CocoProblem::AnnotationUnknownCategory { id: 4, category_id: 3 },
        ),
        (
            r#"{"images": [{"id": 1}], "categories": [{"id": 1}],
               "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 2}]}"#,
            CocoProblem::BadCrowdFlag { id: 4, value: 2 },
        ),
        (
            r#"{"images": [{"id": 1}], "categories": [{"id": 1}],
               "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": -1}]}"#,
            CocoProblem::BadArea { id: 4, area: -1.0 },
        ),
    ];
    for (text, problem) in cases {
        let err = gt_error(text);
        assert_eq!(err.problem(), Some(&problem), "{err}");
    }
    let err = gt_error(
        r#"{"images": [{"id": 1}], "categories": [{"id": 1}],
            "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1, 2], "area": 1}]}"#,
    );
    assert!(
        matches!(err.problem(), Some(CocoProblem::MalformedBbox { entry: Entry::Annotation { id: 4 }, .. })),
        "{err}"
    );
    // `iscrowd` may be a boolean or missing (0).
    let dir = tempfile::tempdir().unwrap();
    let gt = write(
        &dir,
        "gt.json",
        r#"{"images": [{"id": 1}], "categories": [{"id": 1}],
            "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": true},
                            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1}]}"#,
    );
    let gt = GroundTruth::load(&gt).unwrap();
    let crowd: Vec<bool> = gt.dataset().annotations.iter().map(|a| a.iscrowd).collect();
    assert_eq!(crowd, [true, false]);
}

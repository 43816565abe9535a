//! INT8 quantization end to end: `detnas quantize` on the shipped model calibrated on real aerial
//! tiles, determinism, the SDK on the result (parity of detections with the float model),
//! `export --int8`, and the errors of bad inputs.

use crate::util::{assert_one_line_failure, detnas, sample_tiles, stderr, textured};
use detnas_core::detector::boxes::iou;
use detnas_infer::{Detector, DetectorOptions};
use detnas_onnx::ModelProto;
use detnas_onnx::onnx_protobuf::Message;
use detnas_onnx::quantize::{QUANTIZATION_KEY, count_ops, metadata};
use std::path::Path;

const SHIPPED: &str = "models/neon-trees.onnx";
const SAMPLES: &str = "models/samples";

/// `detnas quantize` of the shipped model on the two samples, with a sensitivity pass on
/// `sensitivity` images.
fn quantize(out: &Path, sensitivity: &str, extra: &[&str]) {
    let mut args = vec!["quantize", SHIPPED, "--calibrate", SAMPLES, "--out", out.to_str().unwrap()];
    args.extend(["--sensitivity-images", sensitivity, "--calib-threads", "2"]);
    args.extend(extra);
    let o = detnas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("calibrating on 2 images"), "{err}");
    assert_eq!(err.contains("most sensitive convolutions"), sensitivity != "0", "{err}");
}

fn model(path: &Path) -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

/// Over the sample images: the float model's detections scoring at least 0.3 (`total`) and how
/// many of them `other` finds with IoU at least `min_iou` and a score within `score_tol`.
fn kept_by(other: &Detector, min_iou: f32, score_tol: f32) -> (usize, usize) {
    let float = Detector::from_file(SHIPPED, DetectorOptions::default()).unwrap();
    let (mut matched, mut total) = (0, 0);
    for path in sample_tiles() {
        let f = float.detect_path(&path).unwrap();
        let o = other.detect_path(&path).unwrap();
        for d in f.detections.iter().filter(|d| d.score >= 0.3) {
            total += 1;
            let hit =
                o.detections.iter().any(|e| iou(&d.bbox, &e.bbox) >= min_iou && (d.score - e.score).abs() <= score_tol);
            matched += usize::from(hit);
        }
    }
    (matched, total)
}

#[test]
fn quantize_is_deterministic_records_its_calibration_and_keeps_detections() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    quantize(&a, "1", &[]);
    quantize(&b, "1", &[]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same images and options, same bytes");

    let m = model(&a);
    let record: serde_json::Value = serde_json::from_str(&metadata(&m, QUANTIZATION_KEY).unwrap()).unwrap();
    assert_eq!(record["method"], "percentile");
    assert_eq!(record["calibration_images"], 2);
    assert_eq!(record["format"], "qdq");
    let float_layers = record["float_layers"].as_array().unwrap();
    assert_eq!(float_layers.len(), 3, "the stem and the 2 most sensitive convolutions");
    assert_eq!(float_layers[0], "backbone.first_conv.0/Conv", "the input stem stays float");
    let (convs, quantized) = (record["convolutions"].as_u64().unwrap(), record["quantized"].as_u64().unwrap());
    assert_eq!(quantized + 3, convs);
    assert!(count_ops(&m, "QuantizeLinear") > 100 && count_ops(&m, "NonMaxSuppression") == 1, "post-processing kept");
    assert!(record["head_error"].as_f64().unwrap() < 0.05, "{record}");
    let (fsize, qsize) = (std::fs::metadata(SHIPPED).unwrap().len(), std::fs::metadata(&a).unwrap().len());
    assert!(qsize * 2 < fsize, "int8 weights: {qsize} vs {fsize} bytes");

    // Another method gives another model; minmax needs no histogram.
    let c = dir.path().join("c.onnx");
    quantize(&c, "0", &["--calib-method", "minmax"]);
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    let rc: serde_json::Value = serde_json::from_str(&metadata(&model(&c), QUANTIZATION_KEY).unwrap()).unwrap();
    assert_eq!((rc["method"].as_str(), rc["float_layers"].as_array().unwrap().len()), (Some("minmax"), 1));

    // The SDK runs the INT8 model unchanged; its confident detections match the float model's.
    let float = Detector::from_file(SHIPPED, DetectorOptions::default()).unwrap();
    let int8 = Detector::from_file(&a, DetectorOptions::default()).unwrap();
    assert_eq!(int8.class_names(), float.class_names());
    let (matched, total) = kept_by(&int8, 0.7, 0.1);
    assert!(total >= 10, "the samples hold confident detections ({total})");
    assert!(matched * 10 >= total * 9, "{matched} of {total} confident float detections kept by INT8");
}

#[test]
fn export_int8_from_an_architecture_and_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib");
    std::fs::create_dir(&calib).unwrap();
    for i in 0..3 {
        textured(160, 120, i).save(calib.join(format!("{i}.png"))).unwrap();
    }
    std::fs::write(calib.join("broken.png"), b"not a png").unwrap();
    let out = dir.path().join("q.onnx");
    let args = ["export", "--arch", "coco-retinanet-300m", "--input", "128x128", "--int8", "--calibrate"];
    let mut args = args.to_vec();
    args.extend([calib.to_str().unwrap(), "--sensitivity-images", "0", "--out", out.to_str().unwrap()]);
    let o = detnas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped calibration image") && stderr(&o).contains("broken.png"), "{}", stderr(&o));
    let m = model(&out);
    let record: serde_json::Value = serde_json::from_str(&metadata(&m, QUANTIZATION_KEY).unwrap()).unwrap();
    assert_eq!(record["calibration_images"], 3);
    assert_eq!(record["sensitivity"].as_array().map(Vec::len), Some(0), "no sensitivity pass");
    let convs = record["convolutions"].as_u64().unwrap();
    assert_eq!(record["quantized"].as_u64(), Some(convs - 1), "all but the stem without the pass");
    Detector::from_file(&out, DetectorOptions::default()).expect("the SDK loads it");

    // Quantizing twice, an empty folder, a file that is not ONNX, --int8 without --calibrate.
    let o = detnas(&["quantize", out.to_str().unwrap(), "--calibrate", calib.to_str().unwrap()]);
    assert_one_line_failure(&o, &["q.onnx", "already quantized"]);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = detnas(&[
        "quantize",
        SHIPPED,
        "--calibrate",
        empty.to_str().unwrap(),
        "--out",
        empty.join("x.onnx").to_str().unwrap(),
    ]);
    assert_one_line_failure(&o, &["no images found", "empty"]);
    assert!(!empty.join("x.onnx").exists());
    let o = detnas(&["quantize", calib.join("0.png").to_str().unwrap(), "--calibrate", calib.to_str().unwrap()]);
    assert_one_line_failure(&o, &["0.png", "not an ONNX model"]);
    let o = detnas(&["export", "--arch", "coco-retinanet-300m", "--int8", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("--calibrate"), "{}", stderr(&o));
}

#[test]
fn fp16_conversion_keeps_float_interfaces_and_detections() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("half.onnx");
    let o = detnas(&["quantize", SHIPPED, "--fp16", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = model(&out);
    assert_eq!(metadata(&m, detnas_onnx::half::PRECISION_KEY).as_deref(), Some("fp16"));
    let g = m.graph.as_ref().unwrap();
    let half = g.initializer.iter().filter(|t| t.data_type == 10).count(); // FLOAT16
    assert!(half > 100, "{half} float16 initializers");
    assert!(std::fs::metadata(&out).unwrap().len() * 10 < std::fs::metadata(SHIPPED).unwrap().len() * 6);

    let fp16 = Detector::from_file(&out, DetectorOptions::default()).unwrap();
    let (matched, total) = kept_by(&fp16, 0.95, 0.01);
    assert!(total >= 10 && matched * 100 >= total * 98, "{matched} of {total} float detections kept by fp16");
    let o =
        detnas(&["quantize", out.to_str().unwrap(), "--fp16", "--out", dir.path().join("x.onnx").to_str().unwrap()]);
    assert_one_line_failure(&o, &["half.onnx", "already converted"]);
}

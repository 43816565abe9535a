//! Exported RetinaNet vs an independent NumPy reference (tools/reference_retinanet.py), the official
//! ONNX checker, and Python onnxruntime.

use crate::util::{python, read_f32, read_i64, write_f32};
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::detector::{DetectorConfig, HeadConv};
use detnas_core::rng::Rng;
use detnas_core::space::ChannelShuffle;
use detnas_core::{Arch, InputSize, SearchSpace};
use detnas_infer::ort::session::Session;
use detnas_infer::ort::value::TensorRef;
use detnas_onnx::graph::encode;
use detnas_onnx::{ExportOptions, Weights, export_retinanet};
use std::path::Path;

struct Outputs {
    cls: Vec<f32>,
    reg: Vec<f32>,
    boxes: Vec<f32>,
    scores: Vec<f32>,
    labels: Vec<i64>,
}

fn small_config(shuffle: ChannelShuffle, head_conv: HeadConv) -> DetectorConfig {
    DetectorConfig {
        class_names: vec!["a".into(), "b".into(), "c".into()],
        input: InputSize::new(128, 160),
        fpn_channels: 32,
        head_channels: 32,
        head_convs: 2,
        head_conv,
        shuffle,
        score_thresh: 0.3,
        ..DetectorConfig::default()
    }
}

fn run_ort(model: &[u8], input: &[f32], cfg: &DetectorConfig) -> Outputs {
    let env = detnas_infer::runtime::environment().unwrap();
    let mut session = Session::builder(env).unwrap().commit_from_memory(model).unwrap();
    let (h, w) = (cfg.input.height as usize, cfg.input.width as usize);
    let x = ndarray::ArrayView4::from_shape((1, 3, h, w), input).unwrap();
    let out = session.run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(x).unwrap()]).unwrap();
    let f = |n: &str| out[n].try_extract_tensor::<f32>().unwrap().1.to_vec();
    Outputs {
        cls: f("cls_logits"),
        reg: f("bbox_regression"),
        boxes: f("boxes"),
        scores: f("scores"),
        labels: out["labels"].try_extract_tensor::<i64>().unwrap().1.to_vec(),
    }
}

fn run_reference(dir: &Path, space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Outputs {
    let out = dir.join("reference");
    python(&[
        "tools/reference_retinanet.py",
        "--weights",
        dir.join("w.safetensors").to_str().unwrap(),
        "--config",
        dir.join("cfg.json").to_str().unwrap(),
        "--space",
        &space.name,
        "--arch",
        &arch.to_string(),
        "--input",
        dir.join("input.f32").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let _ = cfg;
    Outputs {
        cls: read_f32(&out.join("cls_logits.f32")),
        reg: read_f32(&out.join("bbox_regression.f32")),
        boxes: read_f32(&out.join("boxes.f32")),
        scores: read_f32(&out.join("scores.f32")),
        labels: read_i64(&out.join("labels.i64")),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_case(shuffle: ChannelShuffle, head_conv: HeadConv, arch: &str, seed: u64) {
    let space = SearchSpace::detnas_300m();
    let arch = Arch::parse_for(arch, &space).unwrap();
    let cfg = small_config(shuffle, head_conv);
    let weights = Weights::random_varied(&detector_params(&space, Paths::Single(&arch), &cfg), seed);
    let model =
        export_retinanet(&space, &arch, &cfg, &weights, &ExportOptions { raw_outputs: true, ..Default::default() })
            .unwrap();
    let bytes = encode(&model).unwrap();

    let dir = tempfile::tempdir().unwrap();
    weights.save(&dir.path().join("w.safetensors")).unwrap();
    std::fs::write(dir.path().join("cfg.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let model_path = dir.path().join("model.onnx");
    std::fs::write(&model_path, &bytes).unwrap();
    let mut rng = Rng::seed(seed + 100);
    let n = 3 * (cfg.input.height * cfg.input.width) as usize;
    let input: Vec<f32> = (0..n).map(|_| (rng.unit() * 255.0) as f32).collect();
    write_f32(&dir.path().join("input.f32"), &input);

    python(&["tools/check_onnx.py", model_path.to_str().unwrap()]);

    let ours = run_ort(&bytes, &input, &cfg);
    let reference = run_reference(dir.path(), &space, &arch, &cfg);
    let cls = max_abs_diff(&ours.cls, &reference.cls);
    let reg = max_abs_diff(&ours.reg, &reference.reg);
    let scale = reference.cls.iter().fold(0f32, |m, v| m.max(v.abs()));
    let first: Vec<(f32, f32)> = ours.cls.iter().zip(&reference.cls).take(6).map(|(a, b)| (*a, *b)).collect();
    assert!(cls <= 1e-4 && reg <= 1e-4, "raw head outputs differ: cls {cls}, reg {reg} (max |cls| {scale}) {first:?}");
    assert!(!ours.scores.is_empty(), "the case should produce detections");
    assert_eq!(ours.labels, reference.labels, "labels differ");
    assert!(max_abs_diff(&ours.scores, &reference.scores) <= 1e-5);
    // boxes are up to ~160 px decoded from the raw regression through anchors of up to 128 px: raw
    // differences of ~2e-5 between CPU kernels (AVX2 vs AVX-512) move them by ~1.3e-3 px
    let boxes = max_abs_diff(&ours.boxes, &reference.boxes);
    assert!(boxes <= 5e-3, "boxes differ by {boxes} px (raw reg {reg})");

    // Python onnxruntime on the same model and input gives the same detections
    let json_path = dir.path().join("py.json");
    python(&[
        "tools/ort_detect.py",
        model_path.to_str().unwrap(),
        dir.path().join("input.f32").to_str().unwrap(),
        json_path.to_str().unwrap(),
    ]);
    let py: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let py_scores: Vec<f32> = py["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let py_labels: Vec<i64> = py["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(py_labels, ours.labels);
    assert!(max_abs_diff(&py_scores, &ours.scores) <= 1e-6);
}

#[test]
fn even_odd_dense_head_matches_reference() {
    // every choice at stride 2 and stride 1
    check_case(ChannelShuffle::EvenOdd, HeadConv::Dense, "0,1,2,3, 1,2,3,0, 2,3,0,1,2,3,0,1, 3,0,1,2", 1);
}

#[test]
fn half_interleave_separable_head_matches_reference() {
    check_case(ChannelShuffle::HalfInterleave, HeadConv::Separable, "3,2,1,0, 2,1,0,3, 1,0,3,2,1,0,3,2, 0,3,2,1", 2);
}

/// A batch-3 export gives, image by image, the detections and raw outputs of the batch-1 export
/// (post-processing per image in the graph, `batch_index` grouping them); fp16 of the batch model
/// still runs on CPU; the SDK refuses it with a clear message.
#[test]
fn batch_export_matches_single_image_runs() {
    let space = SearchSpace::detnas_300m();
    let arch = Arch::parse_for("2,3,1,1,3,2,1,3,3,1,1,1,3,3,2,0,3,3,3,3", &space).unwrap();
    let cfg = small_config(ChannelShuffle::EvenOdd, HeadConv::Separable);
    let weights = Weights::random_varied(&detector_params(&space, Paths::Single(&arch), &cfg), 7);
    let one = encode(
        &export_retinanet(
            &space,
            &arch,
            &cfg,
            &weights,
            &ExportOptions { raw_outputs: true, batch: 1, ..Default::default() },
        )
        .unwrap(),
    )
    .unwrap();
    let batch_model = export_retinanet(
        &space,
        &arch,
        &cfg,
        &weights,
        &ExportOptions { raw_outputs: true, batch: 3, ..Default::default() },
    )
    .unwrap();
    let three = encode(&batch_model).unwrap();
    let huge = ExportOptions { raw_outputs: false, batch: 100_000, ..Default::default() };
    let err = export_retinanet(&space, &arch, &cfg, &weights, &huge).unwrap_err().to_string();
    assert!(err.contains("100000") && err.contains("from 1 to 256"), "{err}");
    let (h, w) = (cfg.input.height as usize, cfg.input.width as usize);
    let n = 3 * h * w;
    let mut rng = Rng::seed(11);
    let images: Vec<Vec<f32>> = (0..3).map(|_| (0..n).map(|_| (rng.unit() * 255.0) as f32).collect()).collect();

    let env = detnas_infer::runtime::environment().unwrap();
    let mut session = Session::builder(env).unwrap().commit_from_memory(&three).unwrap();
    let stacked: Vec<f32> = images.concat();
    let x = ndarray::ArrayView4::from_shape((3, 3, h, w), &stacked[..]).unwrap();
    let out = session.run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(x).unwrap()]).unwrap();
    let f = |n: &str| out[n].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let (boxes, scores, cls) = (f("boxes"), f("scores"), f("cls_logits"));
    let labels = out["labels"].try_extract_tensor::<i64>().unwrap().1.to_vec();
    let index = out["batch_index"].try_extract_tensor::<i64>().unwrap().1.to_vec();
    assert_eq!(index.len(), scores.len());
    assert!(index.windows(2).all(|p| p[0] <= p[1]), "detections grouped by image");
    let per_image_cls = cls.len() / 3;
    let mut found = 0;
    for (b, img) in images.iter().enumerate() {
        let single = run_ort(&one, img, &cfg);
        let rows: Vec<usize> = (0..index.len()).filter(|&i| index[i] == b as i64).collect();
        found += rows.len();
        assert_eq!(rows.len(), single.scores.len(), "image {b}: detection count");
        let s: Vec<f32> = rows.iter().map(|&i| scores[i]).collect();
        let l: Vec<i64> = rows.iter().map(|&i| labels[i]).collect();
        let bx: Vec<f32> = rows.iter().flat_map(|&i| boxes[4 * i..4 * i + 4].to_vec()).collect();
        assert_eq!(l, single.labels, "image {b}");
        assert!(max_abs_diff(&s, &single.scores) <= 1e-5 && max_abs_diff(&bx, &single.boxes) <= 1e-3, "image {b}");
        assert!(max_abs_diff(&cls[b * per_image_cls..(b + 1) * per_image_cls], &single.cls) <= 1e-4, "image {b}");
    }
    assert!(found > 0, "the case should produce detections");

    let half = encode(&detnas_onnx::half::to_fp16(&batch_model).unwrap()).unwrap();
    let mut session = Session::builder(env).unwrap().commit_from_memory(&half).unwrap();
    let x = ndarray::ArrayView4::from_shape((3, 3, h, w), &stacked[..]).unwrap();
    let out = session.run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(x).unwrap()]).unwrap();
    let half_index = out["batch_index"].try_extract_tensor::<i64>().unwrap().1.to_vec();
    assert!(!half_index.is_empty() && half_index.iter().all(|&b| (0..3).contains(&b)));

    let err = detnas_infer::Detector::from_memory(&three, "batch3.onnx", Default::default()).err().unwrap().to_string();
    assert!(err.contains("batch3.onnx") && err.contains("batch-3") && err.contains("--batch"), "{err}");
}

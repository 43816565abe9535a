//! Exported FPN Faster R-CNN (both stages in the graph) vs an independent float64 NumPy reference
//! (tools/reference_faster_rcnn.py), the official ONNX checker, the SDK, Python onnxruntime and the
//! command line.

use crate::util::{detnas, python, read_f32, read_i64, stderr, stdout, textured, write_f32};
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::detector::{DetectorConfig, DetectorKind, HeadConv};
use detnas_core::space::ChannelShuffle;
use detnas_core::{Arch, InputSize, SearchSpace};
use detnas_infer::Detector;
use detnas_infer::ort::session::Session;
use detnas_infer::ort::value::TensorRef;
use detnas_onnx::graph::encode;
use detnas_onnx::{ExportOptions, PROPOSAL_SCORES, PROPOSALS, Weights, export_detector, export_faster_rcnn};
use serde_json::Value;
use std::path::Path;

/// The `coco-fpn-300m` preset's backbone.
const COCO_FPN_300M: &str = "2,1,2,0,2,1,1,2,3,3,1,3,0,0,3,1,3,1,3,2";

#[derive(Debug)]
struct Outputs {
    proposals: Vec<f32>,
    proposal_scores: Vec<f32>,
    boxes: Vec<f32>,
    scores: Vec<f32>,
    labels: Vec<i64>,
}

/// Two classes, FPN 32, fc 64, 300 proposals per level before NMS (P2 and P3 have more anchors,
/// P4..P6 fewer) and 50 after.
fn small_config(shuffle: ChannelShuffle, head_convs: usize, head_conv: HeadConv, input: InputSize) -> DetectorConfig {
    let mut cfg = DetectorConfig {
        class_names: vec!["a".into(), "b".into()],
        input,
        fpn_channels: 32,
        head_channels: 32,
        head_convs,
        head_conv,
        shuffle,
        ..DetectorConfig::new(DetectorKind::FasterRcnn)
    };
    let f = cfg.faster_rcnn_mut().unwrap();
    f.rpn.pre_nms_top_n_test = 300;
    f.rpn.post_nms_top_n_test = 50;
    f.roi_heads.representation_size = 64;
    cfg
}

fn run_ort(model: &[u8], input: &[f32], cfg: &DetectorConfig) -> Outputs {
    let env = detnas_infer::runtime::environment().unwrap();
    let mut session = Session::builder(env).unwrap().commit_from_memory(model).unwrap();
    let (h, w) = (cfg.input.height as usize, cfg.input.width as usize);
    let x = ndarray::ArrayView4::from_shape((1, 3, h, w), input).unwrap();
    let out = session.run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(x).unwrap()]).unwrap();
    let f = |n: &str| out[n].try_extract_tensor::<f32>().unwrap().1.to_vec();
    Outputs {
        proposals: f(PROPOSALS),
        proposal_scores: f(PROPOSAL_SCORES),
        boxes: f("boxes"),
        scores: f("scores"),
        labels: out["labels"].try_extract_tensor::<i64>().unwrap().1.to_vec(),
    }
}

fn run_reference(dir: &Path, space: &SearchSpace, arch: &Arch) -> (Outputs, Value) {
    let out = dir.join("reference");
    let arg = |p: &str| dir.join(p).to_str().unwrap().to_string();
    python(&[
        "tools/reference_faster_rcnn.py",
        "--weights",
        &arg("w.safetensors"),
        "--config",
        &arg("cfg.json"),
        "--space",
        &space.name,
        "--arch",
        &arch.to_string(),
        "--input",
        &arg("input.f32"),
        "--out",
        out.to_str().unwrap(),
    ]);
    let summary = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let outputs = Outputs {
        proposals: read_f32(&out.join("proposals.f32")),
        proposal_scores: read_f32(&out.join("proposal_scores.f32")),
        boxes: read_f32(&out.join("boxes.f32")),
        scores: read_f32(&out.join("scores.f32")),
        labels: read_i64(&out.join("labels.i64")),
    };
    (outputs, summary)
}

/// Largest `|a - b| / max(1, |b|)`: absolute for values up to 1, relative above.
fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The letterboxed textured image: `(image, input tensor)`.
fn letterboxed(cfg: &DetectorConfig, seed: u32) -> (image::RgbImage, Vec<f32>) {
    let (w, h) = (cfg.input.width as u32, cfg.input.height as u32);
    // wider than the input's aspect: padded at the bottom
    let img = textured(w * 3 / 2, h, seed);
    let mut input = vec![0f32; 3 * (w * h) as usize];
    detnas_data::preprocess::letterbox_into(&img, w, h, cfg.preprocess.pad_value, &mut input);
    (img, input)
}

/// [`Weights::random_varied`] with the heads scaled as in a trained detector: fully connected
/// layers variance-preserving (`N(0, 2 / fan_in)` before a ReLU, `N(0, 1 / fan_in)` for the
/// predictors), RPN objectness logits of a few units and box deltas well under one. (Deltas of ten
/// or more would stretch boxes `e^10` times and turn float32 rounding into pixels.)
fn trained_like(mut w: Weights, params: &[detnas_core::detector::plan::ParamSpec]) -> Weights {
    let mut scale = |name: &str, factor: f32| {
        w.get_mut(name).unwrap().data.iter_mut().for_each(|v| *v *= factor);
    };
    // random_varied's FPN grows towards P2 (gain 2 per conv and the top-down sums): P2..P5 come
    // out about 8, 4, 2 and 1 times as large; the output convs bring them to one scale
    for (i, factor) in [0.125, 0.25, 0.5, 1.0].into_iter().enumerate() {
        scale(&format!("fpn.layer_blocks.{i}.0.weight"), factor);
        scale(&format!("fpn.layer_blocks.{i}.0.bias"), factor);
    }
    scale("rpn.head.bbox_pred.weight", 0.1);
    scale("rpn.head.bbox_pred.bias", 0.1);
    for p in params.iter().filter(|p| p.name.starts_with("roi_heads.") && p.shape.len() == 2) {
        let gain = if p.name.contains("box_predictor") { 1.0 } else { 2.0 };
        // random_varied draws these N(0, 0.1)
        scale(&p.name, (gain / p.shape[1] as f32).sqrt() / 0.1);
    }
    w
}

/// An exported model, its files in a temporary folder (`model.onnx`, `w.safetensors`, `cfg.json`,
/// `input.f32`) and its input.
struct Case {
    dir: tempfile::TempDir,
    space: SearchSpace,
    arch: Arch,
    cfg: DetectorConfig,
    bytes: Vec<u8>,
    image: image::RgbImage,
    input: Vec<f32>,
}

impl Case {
    fn new(cfg: DetectorConfig, arch: &str, seed: u64) -> Case {
        let space = SearchSpace::detnas_300m();
        let arch = Arch::parse_for(arch, &space).unwrap();
        let params = detector_params(&space, Paths::Single(&arch), &cfg);
        let weights = trained_like(Weights::random_varied(&params, seed), &params);
        let model = export_faster_rcnn(
            &space,
            &arch,
            &cfg,
            &weights,
            &ExportOptions { raw_outputs: true, ..Default::default() },
        )
        .unwrap();
        let bytes = encode(&model).unwrap();
        let dir = tempfile::tempdir().unwrap();
        weights.save(&dir.path().join("w.safetensors")).unwrap();
        std::fs::write(dir.path().join("cfg.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
        std::fs::write(dir.path().join("model.onnx"), &bytes).unwrap();
        let (image, input) = letterboxed(&cfg, seed as u32);
        write_f32(&dir.path().join("input.f32"), &input);
        Case { dir, space, arch, cfg, bytes, image, input }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

fn check_parity(case: &Case) {
    python(&["tools/check_onnx.py", &case.path("model.onnx")]);
    let ours = run_ort(&case.bytes, &case.input, &case.cfg);
    let (reference, summary) = run_reference(case.dir.path(), &case.space, &case.arch);
    let context = format!("reference summary {summary}");
    assert_eq!(ours.proposal_scores.len(), reference.proposal_scores.len(), "proposal count; {context}");
    // DETNAS_KEEP_CASE=DIR keeps the model, weights, config and input for tools/*.py
    if let Some(keep) = std::env::var_os("DETNAS_KEEP_CASE") {
        std::fs::create_dir_all(&keep).unwrap();
        for f in ["model.onnx", "w.safetensors", "cfg.json", "input.f32"] {
            std::fs::copy(case.dir.path().join(f), Path::new(&keep).join(f)).unwrap();
        }
    }
    let proposals = max_rel_diff(&ours.proposals, &reference.proposals);
    let proposal_scores = max_abs_diff(&ours.proposal_scores, &reference.proposal_scores);
    assert!(proposals <= 1e-4, "proposals differ by {proposals}; {context}");
    assert!(proposal_scores <= 1e-4, "proposal scores differ by {proposal_scores}; {context}");
    assert!(!ours.scores.is_empty(), "the case should produce detections; {context}");
    assert_eq!(ours.labels, reference.labels, "labels differ; {context}");
    let boxes = max_rel_diff(&ours.boxes, &reference.boxes);
    let scores = max_abs_diff(&ours.scores, &reference.scores);
    assert!(boxes <= 1e-4, "boxes differ by {boxes}; {context}");
    assert!(scores <= 1e-4, "scores differ by {scores}; {context}");
    eprintln!(
        "parity {:?} head_convs {} {:?} input {}: {} proposals (max rel. error {proposals:.2e}, scores \
         {proposal_scores:.2e}), {} detections (boxes {boxes:.2e}, scores {scores:.2e}); {context}",
        case.cfg.shuffle,
        case.cfg.head_convs,
        case.cfg.head_conv,
        case.cfg.input,
        ours.proposal_scores.len(),
        ours.scores.len(),
    );

    // the SDK loads the model, knows it for a Faster R-CNN and gives the same detections
    let detector = Detector::builder().all_scores().load(case.path("model.onnx")).unwrap();
    let info = detector.info();
    assert_eq!(info.config.kind(), DetectorKind::FasterRcnn);
    let meta = |k: &str| info.metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(meta("detnas.detector").as_deref(), Some("faster-rcnn"));
    let flops: Value = serde_json::from_str(&meta("detnas.flops").unwrap()).unwrap();
    assert!(flops["rpn"].as_u64().unwrap() > 0 && flops["roi_head"].as_u64().unwrap() > 0, "{flops}");
    let sdk = detector.detect(&case.image).unwrap();
    assert_eq!(sdk.detections.len(), ours.scores.len());
    let lb = detnas_core::detector::boxes::Letterbox::fit(
        case.image.width(),
        case.image.height(),
        case.cfg.input.width as u32,
        case.cfg.input.height as u32,
    );
    for (i, d) in sdk.detections.iter().enumerate() {
        assert_eq!(d.class_id as i64, ours.labels[i]);
        assert_eq!(d.score, ours.scores[i]);
        let b: [f32; 4] = ours.boxes[4 * i..4 * i + 4].try_into().unwrap();
        assert_eq!(d.bbox, lb.to_source(&b));
    }

    // Python onnxruntime on the same model and input gives the same detections
    let json_path = case.path("py.json");
    python(&["tools/ort_detect.py", &case.path("model.onnx"), &case.path("input.f32"), &json_path]);
    let py: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let floats = |v: &Value| -> Vec<f32> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect() };
    let py_boxes: Vec<f32> = py["boxes"].as_array().unwrap().iter().flat_map(floats).collect();
    let py_labels: Vec<i64> = py["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(py_labels, ours.labels);
    assert!(max_abs_diff(&floats(&py["scores"]), &ours.scores) <= 1e-6);
    assert!(max_abs_diff(&py_boxes, &ours.boxes) <= 1e-4);
}

#[test]
fn even_odd_two_fc_head_matches_reference() {
    let cfg = small_config(ChannelShuffle::EvenOdd, 0, HeadConv::Dense, InputSize::new(128, 160));
    // every choice at stride 2 and stride 1
    check_parity(&Case::new(cfg, "0,1,2,3, 1,2,3,0, 2,3,0,1,2,3,0,1, 3,0,1,2", 1));
}

#[test]
fn half_interleave_separable_conv_head_matches_reference() {
    let cfg = small_config(ChannelShuffle::HalfInterleave, 2, HeadConv::Separable, InputSize::new(160, 160));
    check_parity(&Case::new(cfg, "3,2,1,0, 2,1,0,3, 1,0,3,2,1,0,3,2, 0,3,2,1", 2));
}

#[test]
fn large_input_pools_on_every_level_and_matches_reference() {
    // 512x512: proposals reach the LevelMapper's levels 4 (side >= 224) and 5 (>= 448) too
    let mut cfg = small_config(ChannelShuffle::EvenOdd, 1, HeadConv::Dense, InputSize::new(512, 512));
    cfg.faster_rcnn_mut().unwrap().rpn.post_nms_top_n_test = 300;
    check_parity(&Case::new(cfg, COCO_FPN_300M, 5));
}

#[test]
fn empty_proposals_and_empty_detections_are_safe() {
    let arch = COCO_FPN_300M;
    let input = InputSize::new(128, 128);
    // no proposal reaches an objectness of 1.0: nothing is pooled, nothing is detected
    let mut cfg = small_config(ChannelShuffle::EvenOdd, 0, HeadConv::Dense, input);
    cfg.faster_rcnn_mut().unwrap().rpn.score_thresh = 1.0;
    let no_proposals = Case::new(cfg, arch, 3);
    // proposals, but no class score above 1.0
    let cfg = DetectorConfig { score_thresh: 1.0, ..small_config(ChannelShuffle::EvenOdd, 2, HeadConv::Dense, input) };
    let no_detections = Case::new(cfg, arch, 4);
    for (case, proposals) in [(&no_proposals, false), (&no_detections, true)] {
        let ours = run_ort(&case.bytes, &case.input, &case.cfg);
        assert_eq!(!ours.proposal_scores.is_empty(), proposals);
        assert_eq!(ours.proposals.len(), 4 * ours.proposal_scores.len());
        assert!(ours.scores.is_empty() && ours.boxes.is_empty() && ours.labels.is_empty());
        let (reference, _) = run_reference(case.dir.path(), &case.space, &case.arch);
        assert_eq!(reference.proposal_scores.len(), ours.proposal_scores.len());
        assert!(reference.scores.is_empty());
        let detector = Detector::builder().all_scores().load(case.path("model.onnx")).unwrap();
        assert!(detector.detect(&case.image).unwrap().detections.is_empty());
    }
}

#[test]
fn exporters_refuse_the_other_family_and_dispatch_by_kind() {
    let space = SearchSpace::detnas_300m();
    let arch = detnas_core::space::arch::Preset::by_name("coco-fpn-300m").unwrap().resolve().1;
    let retina = DetectorConfig { input: InputSize::new(64, 64), ..DetectorConfig::default() };
    let frcnn = small_config(ChannelShuffle::EvenOdd, 0, HeadConv::Dense, InputSize::new(64, 64));
    let w = |cfg: &DetectorConfig| Weights::random(&detector_params(&space, Paths::Single(&arch), cfg), 0);
    let opts = ExportOptions::default();
    let e = export_faster_rcnn(&space, &arch, &retina, &w(&retina), &opts).unwrap_err().to_string();
    assert!(e.contains("faster-rcnn") && e.contains("retinanet"), "{e}");
    let e = detnas_onnx::export_retinanet(&space, &arch, &frcnn, &w(&frcnn), &opts).unwrap_err().to_string();
    assert!(e.contains("faster-rcnn"), "{e}");
    let model = export_detector(&space, &arch, &frcnn, &w(&frcnn), &opts).unwrap();
    assert!(model.graph.node.iter().any(|n| n.op_type == "RoiAlign"));
    let ops: std::collections::BTreeSet<&str> = model.graph.node.iter().map(|n| n.op_type.as_str()).collect();
    eprintln!("faster r-cnn graph: {} nodes, ops {ops:?}", model.graph.node.len());
    let meta = |k: &str| model.metadata_props.iter().find(|p| p.key == k).map(|p| p.value.clone());
    assert_eq!(meta("detnas.detector").as_deref(), Some("faster-rcnn"));
    let cfg: DetectorConfig = serde_json::from_str(&meta("detnas.config").unwrap()).unwrap();
    assert_eq!(cfg, frcnn);
    let model = export_detector(&space, &arch, &retina, &w(&retina), &opts).unwrap();
    assert!(!model.graph.node.iter().any(|n| n.op_type == "RoiAlign"));
}

#[test]
fn cli_exports_inspects_and_detects_a_512_faster_rcnn() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    let m = model.to_str().unwrap();
    let args = ["export", "--detector", "faster-rcnn", "--arch", "coco-fpn-300m", "--classes", "a,b"];
    let o = detnas(&[&args[..], &["--input", "512x512", "--out", m]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("faster-rcnn"), "{}", stderr(&o));

    let o = detnas(&["inspect", m, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 3, 512, 512]));
    let outs: Vec<&str> = v["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(outs, vec!["boxes", "scores", "labels"]);
    assert_eq!(v["metadata"]["detnas.detector"], "faster-rcnn");
    assert_eq!(v["metadata"]["detnas.classes"], r#"["a","b"]"#);

    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    textured(640, 480, 5).save(images.join("one.png")).unwrap();
    let out = dir.path().join("out");
    let o = detnas(&["detect", m, images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());
}

//! Shuffle-free exports (`--layout shuffle-free`, the channel shuffle folded into the weights):
//! the outputs of the shuffled export for every space, block choice (stride 1 and 2), shuffle
//! variant and detector family; deterministic bytes; no strided copy left; and the CLI's
//! conversions of an exported (trained) model.

use crate::util::{assert_one_line_failure, detnas, sample_tiles, stderr};
use detnas_core::detector::contract::keys;
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::detector::{DetectorConfig, DetectorKind};
use detnas_core::rng::Rng;
use detnas_core::space::{ChannelShuffle, Choice};
use detnas_core::{Arch, InputSize, SearchSpace};
use detnas_infer::ort::session::Session;
use detnas_infer::ort::value::TensorRef;
use detnas_infer::{Detector, DetectorOptions};
use detnas_onnx::graph::encode;
use detnas_onnx::onnx_protobuf::Message;
use detnas_onnx::{ExportOptions, Layout, ModelProto, Weights, export_detector};
use std::collections::BTreeMap;
use std::path::Path;

const SHIPPED: &str = "models/neon-trees.onnx";
const SAMPLES: &str = "models/samples";

/// Every choice at every stride: layer `b` of stage `s` takes choice `(b + s) % 4`, so the
/// stride-2 blocks take all four and every stage's stride-1 blocks cycle through them.
fn every_choice(space: &SearchSpace) -> Arch {
    let mut text = Vec::new();
    for (s, stage) in space.stages.iter().enumerate() {
        for b in 0..stage.blocks {
            text.push(((b + s) % Choice::ALL.len()).to_string());
        }
    }
    Arch::parse_for(&text.join(""), space).unwrap()
}

fn config(kind: DetectorKind, shuffle: ChannelShuffle) -> DetectorConfig {
    DetectorConfig {
        class_names: vec!["a".into(), "b".into()],
        input: InputSize::new(64, 96),
        fpn_channels: 16,
        head_channels: 16,
        head_convs: 1,
        shuffle,
        score_thresh: 0.05,
        ..DetectorConfig::new(kind)
    }
}

/// Every float output of `model` on `input`, by name.
fn run(model: &[u8], input: &[f32], cfg: &DetectorConfig) -> BTreeMap<String, Vec<f32>> {
    let env = detnas_infer::runtime::environment().unwrap();
    let mut session = Session::builder(env).unwrap().commit_from_memory(model).unwrap();
    let names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
    let (h, w) = (cfg.input.height as usize, cfg.input.width as usize);
    let x = ndarray::ArrayView4::from_shape((1, 3, h, w), input).unwrap();
    let out = session.run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(x).unwrap()]).unwrap();
    names
        .iter()
        .map(|n| {
            let v = match out[n.as_str()].try_extract_tensor::<f32>() {
                Ok((_, v)) => v.to_vec(),
                Err(_) => out[n.as_str()].try_extract_tensor::<i64>().unwrap().1.iter().map(|&l| l as f32).collect(),
            };
            (n.clone(), v)
        })
        .collect()
}

fn ops(model: &ModelProto, prefix: &str) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for n in model.graph.node.iter().filter(|n| n.name.starts_with(prefix)) {
        *count.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    count
}

fn metadata<'m>(model: &'m ModelProto, key: &str) -> Option<&'m str> {
    model.metadata_props.iter().find(|e| e.key == key).map(|e| e.value.as_str())
}

/// The shuffle-free export of `space` / `kind` / `shuffle` (every choice, random weights of
/// trained-like scale) gives the shuffled export's outputs, raw head outputs included.
fn check(space: &SearchSpace, kind: DetectorKind, shuffle: ChannelShuffle, seed: u64) {
    let arch = every_choice(space);
    let cfg = config(kind, shuffle);
    let weights = Weights::random_varied(&detector_params(space, Paths::Single(&arch), &cfg), seed);
    let export = |layout| {
        let opts = ExportOptions { raw_outputs: true, layout, ..Default::default() };
        export_detector(space, &arch, &cfg, &weights, &opts).unwrap()
    };
    let (shuffled, free) = (export(Layout::Shuffle), export(Layout::ShuffleFree));
    let case = format!("{} {kind} {shuffle:?}", space.name);
    // the layouts' graphs: the shuffle's strided slices (even / odd) or gathers (half-interleave)
    // are gone, one Split per stride-1 block instead
    let (a, b) = (ops(&shuffled, "backbone."), ops(&free, "backbone."));
    let stride1 = space.layers().iter().filter(|l| l.stride == 1).count();
    let strided = a.get("Slice").or(a.get("Gather")).copied().unwrap_or(0);
    assert_eq!(strided, 2 * stride1, "{case}: {a:?}");
    assert_eq!(b.get("Split"), Some(&stride1), "{case}: {b:?}");
    for op in ["Slice", "Gather", "Reshape", "Transpose"] {
        assert!(!b.contains_key(op), "{case}: a {op} is left: {b:?}");
    }
    assert_eq!(a.get("Conv"), b.get("Conv"), "{case}");
    assert_eq!(metadata(&free, keys::LAYOUT), Some("shuffle-free"));
    assert_eq!(metadata(&shuffled, keys::LAYOUT), None, "the default records nothing");
    let free_bytes = encode(&free).unwrap();
    assert_eq!(free_bytes, encode(&export(Layout::ShuffleFree)).unwrap(), "{case}: deterministic bytes");

    let mut rng = Rng::seed(seed + 7);
    let input: Vec<f32> = (0..3 * cfg.input.height * cfg.input.width).map(|_| (rng.unit() * 255.0) as f32).collect();
    let (x, y) = (run(&encode(&shuffled).unwrap(), &input, &cfg), run(&free_bytes, &input, &cfg));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    for (name, u) in &x {
        let v = &y[name];
        assert_eq!(u.len(), v.len(), "{case}: {name} sizes");
        let scale = u.iter().fold(1f32, |m, x| m.max(x.abs()));
        let diff = u.iter().zip(v).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4 * scale, "{case}: {name} differs by {diff} (scale {scale})");
    }
    assert!(!x["scores"].is_empty(), "{case}: the case should produce detections");
}

#[test]
fn every_space_choice_and_shuffle_gives_the_shuffled_outputs() {
    // the largest space with one shuffle variant: the planner's symbolic tests cover every space
    // and variant, and this one is the slowest case to export and run
    let both = [ChannelShuffle::EvenOdd, ChannelShuffle::HalfInterleave];
    for (i, (space, shuffles)) in
        [("detnas-300m", &both[..]), ("detnas-1.3g", &both[..]), ("detnas-3.8g", &both[1..])].into_iter().enumerate()
    {
        let space = SearchSpace::by_name(space).unwrap();
        for (j, shuffle) in shuffles.iter().enumerate() {
            check(&space, DetectorKind::Retinanet, *shuffle, (10 * i + j) as u64);
        }
    }
}

#[test]
fn faster_rcnn_gives_the_shuffled_outputs() {
    let space = SearchSpace::detnas_300m();
    check(&space, DetectorKind::FasterRcnn, ChannelShuffle::EvenOdd, 3);
    check(&space, DetectorKind::FasterRcnn, ChannelShuffle::HalfInterleave, 4);
}

/// Every detection of `model` on the sample tiles: (box, score, label) per image.
fn detections(model: &Path) -> Vec<Vec<([f32; 4], f32, usize)>> {
    let detector = Detector::from_file(model, DetectorOptions::default()).unwrap();
    sample_tiles()
        .iter()
        .map(|p| {
            let r = detector.detect_path(p).unwrap();
            r.detections.iter().map(|d| (d.bbox, d.score, d.class_id)).collect()
        })
        .collect()
}

fn read(path: &Path) -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

/// The shipped (trained) model converted by `export --model`: the same detections on the sample
/// tiles, its provenance kept; back again; INT8 of it by `quantize --layout` keeps the float
/// model's detections; and what cannot be converted is refused.
#[test]
fn cli_converts_a_trained_model_and_refuses_what_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let free = path("free.onnx");
    let o = detnas(&["export", "--model", SHIPPED, "--layout", "shuffle-free", "--out", &free]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (before, after) = (read(Path::new(SHIPPED)), read(Path::new(&free)));
    for key in [keys::GENOME, keys::CONFIG, keys::WEIGHTS, keys::PARAMS, keys::FLOPS] {
        assert_eq!(metadata(&before, key), metadata(&after, key), "{key}");
    }
    assert_eq!(metadata(&after, keys::LAYOUT), Some("shuffle-free"));
    assert!(ops(&after, "backbone.").contains_key("Split"));
    let float = detections(Path::new(SHIPPED));
    assert!(float.iter().all(|d| !d.is_empty()));
    let converted = detections(Path::new(&free));
    for (a, b) in float.iter().zip(&converted) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.2, y.2);
            assert!(
                (x.1 - y.1).abs() <= 1e-5 && x.0.iter().zip(&y.0).all(|(p, q)| (p - q).abs() <= 1e-3),
                "{x:?} {y:?}"
            );
        }
    }

    // a shuffle-free model is already shuffle-free (the same bytes back); back to the shuffle is
    // refused: its weights are stored permuted
    let same = path("same.onnx");
    let o = detnas(&["export", "--layout", "shuffle-free", "--model", &free, "--out", &same]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&same).unwrap(), std::fs::read(&free).unwrap());
    let o = detnas(&["export", "--layout", "shuffle", "--model", &free, "--out", &path("back.onnx")]);
    assert_one_line_failure(&o, &["free.onnx", "shuffle-free", "made from"]);
    assert!(!dir.path().join("back.onnx").exists());

    // INT8 of the shuffle-free form in one step: the float model's confident detections kept
    let int8 = path("free.int8.onnx");
    let args = ["quantize", SHIPPED, "--layout", "shuffle-free", "--calibrate", SAMPLES, "--out", &int8];
    let o = detnas(&[&args[..], &["--sensitivity-images", "0", "--calib-threads", "2"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let q = read(Path::new(&int8));
    assert_eq!(metadata(&q, keys::LAYOUT), Some("shuffle-free"));
    assert!(ops(&q, "backbone.").contains_key("Split") && ops(&q, "backbone.").contains_key("QuantizeLinear"));
    let quantized = detections(Path::new(&int8));
    let (mut kept, mut total) = (0, 0);
    for (f, q) in float.iter().zip(&quantized) {
        for d in f.iter().filter(|d| d.1 >= 0.3) {
            total += 1;
            kept += usize::from(q.iter().any(|e| e.2 == d.2 && (e.1 - d.1).abs() <= 0.1 && iou(&d.0, &e.0) >= 0.7));
        }
    }
    assert!(total > 0 && kept * 10 >= total * 9, "INT8 kept {kept} of {total}");

    // a quantized model cannot be converted: one line naming it, nothing written
    let o = detnas(&["export", "--layout", "shuffle-free", "--model", &int8, "--out", &path("x.onnx")]);
    assert_one_line_failure(&o, &["free.int8.onnx", "quantize"]);
    assert!(!dir.path().join("x.onnx").exists());
    // --model excludes the flags that describe another model
    let o = detnas(&["export", "--model", SHIPPED, "--arch", "0", "--out", &path("y.onnx")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'--model <MODEL>' cannot be used with '--arch <ARCH>'"), "{}", stderr(&o));
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

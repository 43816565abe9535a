//! `detnas latency build / predict / check` and `detnas bench --arch` end to end: a tiny table
//! (128x128, two FPN widths, one head width, depths 1-2, both conv types, few repeats).

use crate::util::{assert_one_line_failure, detnas, stderr, stdout};
use detnas_infer::latency::LatencyTable;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const GENES: &str =
    "fpn_channels = [32, 48]\nhead_channels = [32]\nhead_convs = [1, 2]\nhead_conv = [\"separable\", \"dense\"]\n";
const FAST: [&str; 8] = ["--warmup", "1", "--min-iters", "2", "--min-seconds", "0", "--repetitions", "2"];

/// The table built once per test run, in its own folder.
fn table() -> &'static PathBuf {
    static TABLE: OnceLock<PathBuf> = OnceLock::new();
    TABLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let genes = dir.join("genes.toml");
        std::fs::write(&genes, GENES).unwrap();
        let out = dir.join("lut.json");
        let mut args = vec!["latency", "build", "--input", "128x128", "--genes", genes.to_str().unwrap()];
        args.extend(["--threads", "1", "--calibration", "3", "--out", out.to_str().unwrap()]);
        args.extend(FAST);
        let o = detnas(&args);
        assert!(o.status.success(), "build failed: {}", stderr(&o));
        assert!(stdout(&o).contains("wrote"), "{}", stdout(&o));
        out
    })
}

fn json(args: &[&str]) -> Value {
    let o = detnas(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

fn predict(lut: &Path, arch: &str) -> Value {
    json(&["latency", "predict", "--lut", lut.to_str().unwrap(), "--arch", arch, "--json"])
}

#[test]
fn build_predict_check_round_trip() {
    let lut = table();
    let t = LatencyTable::load(lut).unwrap();
    assert_eq!((t.space.as_str(), t.classes, t.version, t.repetitions), ("detnas-300m", 1, 2, 2));
    assert_eq!(t.hash, t.content_hash());
    assert_eq!(t.fingerprint.threads, Some(1));
    assert_eq!(t.fingerprint.precision, "fp32");
    assert_eq!(t.detections, detnas_onnx::DetectionLoad::Cap, "post-processing at the cap by default");
    assert!(std::fs::read_to_string(lut).unwrap().contains("\"detections\": \"cap\""));
    let at = &t.entries["128x128"];
    for key in ["stem", "fpn 32", "fpn 48", "head sep 32->32", "head dense 48->32", "predictors+post 32"] {
        assert!(at.contains_key(key), "{key} missing from {:?}", at.keys().collect::<Vec<_>>());
    }
    // every layer shape with each of the 4 choices: 4 stages x (stride 2, stride 1) shapes
    assert_eq!(at.keys().filter(|k| k.starts_with("block ")).count(), 8 * 4);
    assert!(at.values().all(|l| l.p50_ms > 0.0 && l.p90_ms >= l.p50_ms && l.iterations >= 2));
    // each entry keeps its repetitions (both, or the quiet one where the other was still taken in a
    // slow spell of the machine), and its time is their median (their mean, for two)
    for l in at.values() {
        let r = &l.repetitions_ms;
        assert!((1..=2).contains(&r.len()), "{l:?}");
        assert!((l.mean_ms - r.iter().sum::<f64>() / r.len() as f64).abs() < 1e-12, "{l:?}");
    }
    // the drift reference was timed throughout: around every 8 measurements of both rounds (and
    // of any re-measurement pass)
    let drift = t.drift.as_ref().expect("drift recorded");
    assert!(drift.times_ms.len() > (2 * at.len()).div_ceil(8), "{drift:?}");
    assert!(drift.drift_pct >= 0.0 && drift.reference == "stem 128x128", "{drift:?}");
    assert!(drift.disturbed <= drift.remeasured && drift.tolerance_pct == 20.0, "{drift:?}");
    assert!(t.calibration_drift.is_some());
    assert_eq!(t.calibration.len(), 3);
    // a correction is stored only when it predicts held-out calibration points better
    let correct = |additive: f64| t.correction.as_ref().map_or(additive, |c| c.apply(additive));

    let p = predict(lut, "coco-retinanet-300m:fpn32:head32x2:sep:128");
    assert_eq!(p["genome"], "23113213311133203333:fpn32:head32x2:sep:128x128");
    let parts: f64 =
        ["stem", "backbone", "fpn", "head", "predictors"].iter().map(|k| p["parts"][k].as_f64().unwrap()).sum();
    let additive = p["additive_ms"].as_f64().unwrap();
    assert!((parts - additive).abs() < 1e-9 * additive, "{p}");
    assert_eq!(p["blocks_ms"].as_array().unwrap().len(), 20);
    let head = 2.0 * 2.0 * at["head sep 32->32"].mean_ms;
    assert!((p["parts"]["head"].as_f64().unwrap() - head).abs() < 1e-9, "{p}");
    assert!((p["latency_ms"].as_f64().unwrap() - correct(additive)).abs() < 1e-9, "{p}");
    assert_eq!(p["table"]["hash"], t.hash.as_str());

    let mut args = vec!["latency", "check", "--lut", lut.to_str().unwrap(), "--samples", "3", "--seed", "7"];
    args.extend(FAST);
    args.extend(["--budget", "1000ms", "--json"]);
    let r = json(&args);
    // the ceiling: the same metrics between the two repetitions of the same models
    assert_eq!(r["repetitions"], 2, "{r}");
    for key in ["repeat_within_10pct", "repeat_mape", "repeat_cv_pct", "perfect_within_10pct", "bias_pct"] {
        assert!(r[key].is_number(), "{key} missing: {r}");
    }
    assert_eq!(r["budget"]["budget_ms"], 1000.0, "{r}");
    assert_eq!(r["budget"]["near"], 0, "no 128x128 model takes a second: {r}");
    assert!(r["drift"]["times_ms"].as_array().unwrap().len() >= 2, "{r}");
    // `corrected` is reported when the table holds a correction, and is then the headline
    let t = LatencyTable::load(lut).unwrap();
    let headline = if t.correction.is_some() { &r["corrected"] } else { &r["additive"] };
    assert_eq!(r["corrected"].is_null(), t.correction.is_none(), "{r}");
    for key in ["within_10pct", "mape", "kendall_tau"] {
        for m in [&r, &r["additive"]] {
            assert!(m[key].is_number(), "{key} missing: {r}");
        }
        assert_eq!(r[key], headline[key], "{key}: {r}");
    }
    let share = r["within_10pct"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share) && r["mape"].as_f64().unwrap() >= 0.0, "{r}");
    assert!(r["kendall_tau"].as_f64().unwrap().abs() <= 1.0, "{r}");
    let genomes = r["genomes"].as_array().unwrap();
    assert_eq!(genomes.len(), 3);
    // the check predicts exactly what `predict` does for the same genome
    for g in genomes {
        let reps: Vec<f64> = g["repetitions_ms"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!((1..=2).contains(&reps.len()), "{g}");
        let mean = reps.iter().sum::<f64>() / reps.len() as f64;
        assert!((g["measured_ms"].as_f64().unwrap() - mean).abs() < 1e-9, "scored against the mean: {g}");
        let alone = predict(lut, g["genome"].as_str().unwrap());
        assert_eq!(alone["latency_ms"], g["predicted_ms"], "{g}");
    }
}

#[test]
fn values_outside_the_table_are_named() {
    let lut = table().to_str().unwrap();
    for (arch, needles) in [
        ("coco-retinanet-300m:fpn32:head32x1:sep:256", &["resolution 256x256", "128x128"][..]),
        ("coco-retinanet-300m:fpn64:head32x1:sep:128", &["FPN width 64", "32, 48"]),
        ("coco-retinanet-300m:fpn32:head32x3:sep:128", &["head depth 3", "1, 2"]),
        ("coco-retinanet-300m:fpn32:head64x1:sep:128", &["head width 64", "head width 32"]),
    ] {
        let o = detnas(&["latency", "predict", "--lut", lut, "--arch", arch]);
        let mut all = vec!["lut.json"];
        all.extend(needles);
        assert_one_line_failure(&o, &all);
    }
}

#[test]
fn another_fingerprint_warns_and_fails_under_strict() {
    let mut t = LatencyTable::load(table()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.json");
    t.fingerprint.cpu = "Imaginary CPU 9000".into();
    t.save(&other).unwrap();
    let arch = "coco-retinanet-300m:fpn32:head32x1:dense:128";
    let o = detnas(&["latency", "predict", "--lut", other.to_str().unwrap(), "--arch", arch]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("warning:") && err.contains("Imaginary CPU 9000"), "{err}");
    assert!(stdout(&o).contains("latency"));
    let strict = detnas(&["latency", "predict", "--lut", other.to_str().unwrap(), "--arch", arch, "--strict"]);
    assert_one_line_failure(&strict, &["other.json", "Imaginary CPU 9000"]);
    // the table's own machine: no warning
    let o = detnas(&["latency", "predict", "--lut", table().to_str().unwrap(), "--arch", arch, "--strict"]);
    assert!(o.status.success() && stderr(&o).is_empty(), "{}", stderr(&o));

    // a hand edit that leaves the hash behind is refused, naming the file
    let text = std::fs::read_to_string(&other).unwrap().replace("Imaginary CPU 9000", "Edited CPU");
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, text).unwrap();
    let o = detnas(&["latency", "predict", "--lut", edited.to_str().unwrap(), "--arch", arch]);
    assert_one_line_failure(&o, &["edited.json", "hash"]);
}

#[test]
fn bench_builds_a_genome_in_memory() {
    let arch = "coco-retinanet-300m:fpn32:head32x1:sep:128";
    let r = json(&["bench", "--arch", arch, "--iters", "2", "--warmup", "1", "--threads", "1", "--json"]);
    assert_eq!(r["model"], "23113213311133203333:fpn32:head32x1:sep:128x128");
    assert_eq!(r["input"], "128x128");
    assert_eq!(r["model_run"]["iterations"], 2);
    assert_eq!(r["detect"]["iterations"], 2);
    let both = detnas(&["bench", "m.onnx", "--arch", arch]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    let neither = detnas(&["bench"]);
    assert_eq!(neither.status.code(), Some(2), "{}", stderr(&neither));
    let bad = detnas(&["bench", "--arch", "coco-retinanet-300m:fpn32:100"]);
    assert_one_line_failure(&bad, &["100x100", "multiple of 32"]);
}

#[test]
fn timed_models_fill_the_detection_cap_or_detect_nothing() {
    use detnas_core::search::genome::Genome;
    use detnas_infer::latency::{base_config, random_detector};
    use detnas_infer::{Detector, DetectorOptions};
    use detnas_onnx::DetectionLoad;
    let genome = Genome::parse(None, "coco-retinanet-300m:fpn32:head32x1:sep:128").unwrap();
    let cfg = genome.detector_config(&base_config(1, Default::default())).unwrap();
    let detections = |load: DetectionLoad| {
        let bytes = random_detector(&genome.space, &genome.arch, &cfg, 0, load, Default::default()).unwrap();
        let mut options = DetectorOptions::default();
        options.threads = Some(1);
        let detector = Detector::from_memory(&bytes, "timed", options);
        let (boxes, scores, _) = detector.unwrap().run(&vec![114.0; 3 * 128 * 128]).unwrap();
        assert_eq!(boxes.len(), scores.len());
        boxes
    };
    // at the cap every anchor is a candidate whose box is the anchor: the cap is filled
    let boxes = detections(DetectionLoad::Cap);
    assert_eq!(boxes.len(), cfg.detections_per_img, "the detection cap is filled");
    assert!(boxes.iter().all(|b| b[2] > b[0] && b[3] > b[1]), "anchor boxes");
    assert!(detections(DetectionLoad::None).is_empty(), "no candidate at all without detections");
}

#[test]
fn a_table_adapts_to_another_thread_count_from_a_few_genomes() {
    let base = LatencyTable::load(table()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("two-threads.json");
    let mut args = vec!["latency", "adapt", "--lut", table().to_str().unwrap(), "--threads", "2", "--samples", "3"];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(FAST);
    let o = detnas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = LatencyTable::load(&out).unwrap();
    assert_eq!((base.fingerprint.threads, t.fingerprint.threads), (Some(1), Some(2)));
    let adapted = t.adapted.as_ref().expect("the base is named");
    assert_eq!((adapted.base_hash.as_str(), adapted.samples), (base.hash.as_str(), 3));
    assert_eq!(t.entries, base.entries, "the base's parts are kept");
    assert_eq!(t.calibration.len(), 3);
    // the prediction is the base's sum through the refitted correction
    let arch = "coco-retinanet-300m:fpn32:head32x2:sep:128";
    let (p, b) = (predict(&out, arch), predict(table(), arch));
    assert_eq!(p["additive_ms"], b["additive_ms"]);
    let c = t.correction.as_ref().unwrap();
    assert!((p["latency_ms"].as_f64().unwrap() - c.apply(b["additive_ms"].as_f64().unwrap())).abs() < 1e-9, "{p}");
    // too few genomes to fit, and the base as its own output, are refused before any measurement
    let few =
        ["latency", "adapt", "--lut", table().to_str().unwrap(), "--samples", "2", "--out", out.to_str().unwrap()];
    let o = detnas(&few);
    assert!(!o.status.success() && stderr(&o).contains("from 3 to"), "{}", stderr(&o));
    let lut = table().to_str().unwrap();
    assert_one_line_failure(&detnas(&["latency", "adapt", "--lut", lut, "--out", lut]), &["--out", "--lut"]);
}

/// A table of shuffle-free INT8 models: its blocks keyed by their split's pieces (which depend on
/// the block's place in its stage), the layout recorded, predictions for any genome, and `bench
/// --arch` timing the same kind of model.
#[test]
fn a_shuffle_free_int8_table_keys_blocks_by_their_split() {
    let dir = tempfile::tempdir().unwrap();
    let genes = dir.path().join("genes.toml");
    std::fs::write(
        &genes,
        "fpn_channels = [32]\nhead_channels = [32]\nhead_convs = [1]\nhead_conv = [\"separable\"]\n",
    )
    .unwrap();
    let out = dir.path().join("lut.json");
    let (g, o) = (genes.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["latency", "build", "--input", "64x64", "--genes", g, "--threads", "1", "--out", o];
    args.extend(["--layout", "shuffle-free", "--precision", "int8", "--calibration", "3"]);
    args.extend(FAST);
    let b = detnas(&args);
    assert!(b.status.success(), "{}", stderr(&b));
    let t = LatencyTable::load(&out).unwrap();
    assert_eq!(t.layout, detnas_onnx::Layout::ShuffleFree);
    assert!(std::fs::read_to_string(&out).unwrap().contains("\"layout\": \"shuffle-free\""));
    let keys: Vec<&String> = t.entries["64x64"].keys().filter(|k| k.starts_with("block ")).collect();
    // stride-2 blocks: one key per stage; stride-1 blocks: one per place in the stage (4, 4, 8, 4
    // blocks: 3 + 3 + 7 + 3 places), each with the 4 choices
    assert_eq!(keys.iter().filter(|k| k.contains(" s2 ")).count(), 4 * 4, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k.contains(" s1 ") && k.contains(" split")).count(), 16 * 4, "{keys:?}");
    let p = predict(&out, "23113213311133203333:fpn32:head32x1:sep:64");
    assert!(p["latency_ms"].as_f64().unwrap() > 0.0, "{p}");
    let arch = "coco-retinanet-300m:fpn32:head32x1:sep:64";
    let mut bench = vec!["bench", "--arch", arch, "--layout", "shuffle-free", "--precision", "int8"];
    bench.extend(["--iters", "2", "--warmup", "1", "--threads", "1", "--json"]);
    let r = json(&bench);
    assert_eq!(r["model_run"]["iterations"], 2);
    // the table is for shuffle-free INT8 models: a check measures those
    let mut check = vec!["latency", "check", "--lut", o, "--samples", "3", "--seed", "7"];
    check.extend(FAST);
    check.push("--json");
    let c = json(&check);
    assert!(c["additive"]["mape"].is_number(), "{c}");
}

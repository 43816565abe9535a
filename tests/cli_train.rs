//! The whole command-line workflow: synthetic data -> train -> export from the checkpoint -> detect.

use crate::util::{assert_failure_ending_with, assert_one_line_failure, detnas, stderr, stdout};
use std::path::Path;

const CONFIG: &str = r#"
space = "detnas-300m"
arch = "coco-retinanet-300m"
holdout = 0.25
batch_size = 2
iterations = 6
log_every = 2
checkpoint_every = 3

[detector]
input = { height = 96, width = 96 }
fpn_channels = 16
head_channels = 16
head_convs = 1
head_conv = "separable"
anchor_sizes = [16.0, 32.0, 64.0, 128.0, 256.0]
"#;

#[test]
fn synthetic_train_export_detect() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let o = detnas(&["data", "synthetic", "--out", &d("data"), "--images", "8", "--size", "96x96", "--classes", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = stdout(&o).trim().to_string();
    assert!(Path::new(&json).exists());
    std::fs::write(d("cfg.toml"), CONFIG).unwrap();

    let o = detnas(&["train", "retinanet", "--config", &d("cfg.toml"), "--coco", &json, "--out", &d("run")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(log.contains("step      2") && log.contains("images/s") && log.contains("data wait"), "{log}");
    assert!(stdout(&o).contains("Average Precision"), "held-out evaluation printed: {}", stdout(&o));

    let o = detnas(&["export", "--checkpoint", &d("run"), "--out", &d("m.onnx")]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Another class list would take the wrong logit channels: refused, naming both.
    let o = detnas(&["export", "--checkpoint", &d("run"), "--classes", "x", "--out", &d("x.onnx")]);
    assert_one_line_failure(&o, &["trained for the classes", "[x]"]);
    assert!(!Path::new(&d("x.onnx")).exists());
    let o = detnas(&["detect", &d("m.onnx"), &d("data/images"), "--out", &d("det")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(d("det/images.json")).unwrap()).unwrap();
    assert_eq!(index["images"].as_array().unwrap().len(), 8);
    let cats: Vec<&str> = index["categories"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cats.len(), 2, "class names come from the training data: {cats:?}");

    let o = detnas(&["train", "eval", "--checkpoint", &d("run"), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["stats"].as_array().unwrap().len(), 12);

    let o = detnas(&["train", "bench-step", "--config", &d("cfg.toml"), "--steps", "2", "--warmup", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let timing: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(timing["ms_per_step_p50"].as_f64().unwrap() > 0.0, "{timing}");
    assert_eq!(timing["input"], serde_json::json!([96, 96]));
    // the first step starts from the seeded CPU generator: the same loss every run (and on CUDA,
    // up to its kernels' rounding: tools/gpu-check.sh compares the two)
    let loss = timing["loss_first"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{timing}");
    let again = detnas(&["train", "bench-step", "--config", &d("cfg.toml"), "--steps", "1", "--warmup", "1"]);
    let again: serde_json::Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(again["loss_first"].as_f64(), Some(loss), "{again}");

    // resume past the end with more iterations, and refusals
    let o = detnas(&[
        "train",
        "retinanet",
        "--config",
        &d("cfg.toml"),
        "--coco",
        &json,
        "--out",
        &d("run"),
        "--resume",
        "--iterations",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("step 8"), "{}", stdout(&o));
    let o = detnas(&[
        "train",
        "retinanet",
        "--config",
        &d("cfg.toml"),
        "--coco",
        &json,
        "--out",
        &d("run"),
        "--resume",
        "--seed",
        "3",
    ]);
    assert_failure_ending_with(&o, &["different configuration"]);
    std::fs::write(d("bad.toml"), "iterations = 3\nbogus = 1\n").unwrap();
    let o = detnas(&["train", "retinanet", "--config", &d("bad.toml"), "--out", &d("x")]);
    assert_one_line_failure(&o, &["bad.toml", "bogus"]);
    let o = detnas(&["train", "det-supernet", "--config", &d("cfg.toml"), "--out", &d("x")]);
    assert_one_line_failure(&o, &["remove `arch`"]);
}

#[test]
fn supernet_training_then_evolutionary_search() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let o = detnas(&["data", "synthetic", "--out", &d("data"), "--images", "8", "--size", "96x96", "--classes", "2"]);
    let json = stdout(&o).trim().to_string();
    std::fs::write(d("cfg.toml"), CONFIG.replace("arch = \"coco-retinanet-300m\"\n", "")).unwrap();
    let o = detnas(&["train", "det-supernet", "--config", &d("cfg.toml"), "--coco", &json, "--out", &d("super")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let search = |state: &str| {
        detnas(&[
            "search",
            "--checkpoint",
            &d("super"),
            "--flops-max",
            "300M",
            "--population",
            "4",
            "--generations",
            "2",
            "--top-k",
            "2",
            "--mutations",
            "1",
            "--crossovers",
            "1",
            "--recal-batches",
            "2",
            "--state",
            state,
            "--json",
        ])
    };
    let o = search(&d("search/state.json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["evaluations"], 8);
    assert!(v["seconds_per_candidate"].as_f64().unwrap() > 0.0);
    let best = v["best"]["arch"].as_str().unwrap().to_string();
    // a path of the supernet evaluates after BN recalibration; without --arch it is refused
    let o = detnas(&["train", "eval", "--checkpoint", &d("super"), "--arch", &best, "--recalibrate", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["stats"].as_array().unwrap().len(), 12);
    let o = detnas(&["train", "eval", "--checkpoint", &d("super")]);
    assert_one_line_failure(&o, &["supernet checkpoint", "--arch"]);
    let o = detnas(&["arch", "info", "--arch", &best, "--json"]);
    let info: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(info["backbone_flops"].as_u64().unwrap() <= 300_000_000);
    // the finished state resumes to the same result without evaluating anything
    let again = search(&d("search/state.json"));
    let w: serde_json::Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(w["best"], v["best"]);
    // a single-path checkpoint is refused
    let o = detnas(&["search", "--checkpoint", &d("nope"), "--state", &d("s2/state.json")]);
    assert_one_line_failure(&o, &["nope"]);
}

const FASTER_RCNN: &str = r#"
space = "detnas-300m"
arch = "coco-fpn-300m"
holdout = 0.25
batch_size = 2
iterations = 4
log_every = 2
checkpoint_every = 2

[detector]
kind = "faster-rcnn"
input = { height = 96, width = 96 }
fpn_channels = 16

[detector.rpn]
anchor_sizes = [12.0, 24.0, 48.0, 96.0, 192.0]
post_nms_top_n_train = 100
post_nms_top_n_test = 50

[detector.roi_heads]
batch_size_per_image = 32
representation_size = 32
"#;

#[test]
fn faster_rcnn_trains_evaluates_and_benchmarks_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let o = detnas(&["data", "synthetic", "--out", &d("data"), "--images", "6", "--size", "96x96", "--classes", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = stdout(&o).trim().to_string();
    std::fs::write(d("frcnn.toml"), FASTER_RCNN).unwrap();

    // the family must match the command
    let o = detnas(&["train", "retinanet", "--config", &d("frcnn.toml"), "--coco", &json, "--out", &d("x")]);
    assert_one_line_failure(&o, &["is a faster-rcnn, not a retinanet", "train faster-rcnn"]);

    let o = detnas(&["train", "faster-rcnn", "--config", &d("frcnn.toml"), "--coco", &json, "--out", &d("run")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(log.contains("training faster-rcnn coco-fpn-300m") && log.contains("objectness"), "{log}");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(d("run/state.json")).unwrap()).unwrap();
    assert_eq!(state["kind"], "faster-rcnn");

    let o = detnas(&["train", "eval", "--checkpoint", &d("run"), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["stats"].as_array().unwrap().len(), 12);

    let o = detnas(&["train", "bench-step", "--config", &d("frcnn.toml"), "--steps", "1", "--warmup", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let timing: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(timing["ms_per_step_p50"].as_f64().unwrap() > 0.0, "{timing}");

    // export from the checkpoint, then detect with the SDK's command
    let o = detnas(&["export", "--checkpoint", &d("run"), "--detector", "retinanet", "--out", &d("x.onnx")]);
    assert_one_line_failure(&o, &["contradicts", "faster-rcnn"]);
    let o = detnas(&["export", "--checkpoint", &d("run"), "--out", &d("m.onnx")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("faster-rcnn"), "{}", stderr(&o));
    let o = detnas(&["detect", &d("m.onnx"), &d("data/images"), "--out", &d("det")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(d("det/images.json")).unwrap()).unwrap();
    assert_eq!(index["images"].as_array().unwrap().len(), 6);
}

/// DetNAS with the paper's detector: a Faster R-CNN supernet fine-tuned with one random path per
/// step, searched with BN recalibration and held-out AP, and its best path exported from the
/// search with its recalibrated statistics.
#[test]
fn faster_rcnn_supernet_search_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let o = detnas(&["data", "synthetic", "--out", &d("data"), "--images", "6", "--size", "96x96", "--classes", "2"]);
    let json = stdout(&o).trim().to_string();
    std::fs::write(d("cfg.toml"), FASTER_RCNN.replace("arch = \"coco-fpn-300m\"\n", "")).unwrap();
    let o = detnas(&["train", "det-supernet", "--config", &d("cfg.toml"), "--coco", &json, "--out", &d("super")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = detnas(&[
        "search",
        "--checkpoint",
        &d("super"),
        "--flops-max",
        "300M",
        "--population",
        "3",
        "--generations",
        "1",
        "--top-k",
        "2",
        "--mutations",
        "1",
        "--crossovers",
        "1",
        "--recal-batches",
        "1",
        "--out",
        &d("search"),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["evaluations"], 3);
    let o = detnas(&["export", "--search", &d("search"), "--out", &d("best.onnx")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = detnas(&["inspect", &d("best.onnx"), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(info["metadata"]["detnas.detector"], "faster-rcnn");
    assert_eq!(info["metadata"]["detnas.arch"], v["best"]["arch"]);
}

#[test]
fn the_training_line_names_the_input_that_trains() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let o = detnas(&["data", "synthetic", "--out", &d("data"), "--images", "4", "--size", "96x96", "--classes", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = stdout(&o).trim().to_string();
    std::fs::write(d("cfg.toml"), CONFIG).unwrap();
    // the configuration says 96x96; the genome's own resolution is what trains
    let args = ["--config", &d("cfg.toml"), "--coco", &json, "--arch", "coco-retinanet-300m:64", "--iterations", "1"];
    let o = detnas(&[&["train", "retinanet"][..], &args, &["--out", &d("run")]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stderr(&o).lines().find(|l| l.starts_with("training ")).unwrap_or_default().to_string();
    assert!(line.contains("input 64x64") && !line.contains("96x96"), "{line}");
}

//! Nothing silently lost in training: an existing checkpoint is never replaced without being asked,
//! and undecodable images are reported by `data check` and skipped (and counted) by training.

use crate::util::{assert_one_line_failure, detnas, stderr, stdout};
use std::path::Path;

const CONFIG: &str = r#"
space = "detnas-300m"
arch = "coco-retinanet-300m"
holdout = 0.0
batch_size = 2
iterations = 4
log_every = 2
checkpoint_every = 2

[detector]
input = { height = 64, width = 64 }
fpn_channels = 16
head_channels = 16
head_convs = 1
head_conv = "separable"
anchor_sizes = [16.0, 32.0, 64.0, 128.0, 256.0]
"#;

/// A synthetic COCO set of `images` 64x64 images in `dir/data`; returns the JSON path.
fn synthetic(dir: &Path, images: usize) -> String {
    let out = dir.join("data");
    let n = images.to_string();
    let o = detnas(&["data", "synthetic", "--out", out.to_str().unwrap(), "--images", &n, "--size", "64x64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn state(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("state.json")).unwrap()).unwrap()
}

#[test]
fn an_existing_checkpoint_is_refused_unless_resumed_or_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let json = synthetic(dir.path(), 4);
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let run = dir.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "retinanet", "--config", cfg.to_str().unwrap(), "--coco", &json];
        args.extend(["--out", run.to_str().unwrap()]);
        args.extend(extra);
        detnas(&args)
    };
    let o = train(&["--iterations", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = state(&run);
    let weights = run.join(first["weights"].as_str().unwrap());
    std::fs::write(run.join("notes.txt"), "mine").unwrap();

    // a plain rerun is refused before anything is touched
    let o = train(&[]);
    assert_one_line_failure(&o, &[run.to_str().unwrap(), "step 2", "--resume", "--overwrite"]);
    assert_eq!(state(&run), first, "state unchanged");
    assert!(weights.exists(), "old weights kept");

    let o = train(&["--resume", "--overwrite"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));

    // --overwrite starts at step 1 and removes only checkpoint files
    let o = train(&["--overwrite", "--iterations", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = state(&run);
    assert_eq!(fresh["step"], 1);
    assert_eq!(fresh["history"].as_array().unwrap()[0]["step"], 1, "a new history, not the old one");
    assert!(!weights.exists(), "the old step-2 weights are gone");
    assert_eq!(std::fs::read_to_string(run.join("notes.txt")).unwrap(), "mine");
    let mut files: Vec<String> =
        std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(
        files,
        [
            ".detnas-owner.json",
            "notes.txt",
            "optimizer-0000001.safetensors",
            "state.json",
            "weights-0000001.safetensors"
        ]
    );

    // --resume continues
    let o = train(&["--resume", "--iterations", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&run)["step"], 2);
}

#[test]
fn classification_pretraining_refuses_an_existing_checkpoint_too() {
    use detnas_train::classify::{ClsTrainConfig, train_classifier};
    use detnas_train::run::Start;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cls");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("state.json"), "{}").unwrap();
    let cfg = ClsTrainConfig { data: Some(dir.path().join("no-such-folder")), ..ClsTrainConfig::default() };
    let train = |start| {
        train_classifier(&cfg, &out, start, detnas_train::tch::Device::Cpu, &mut |_| {}).err().unwrap().to_string()
    };
    // A state.json this command did not write (no ownership record) is never replaced.
    for start in [Start::Fresh, Start::Overwrite] {
        let err = train(start);
        assert!(err.contains("files detnas did not write (state.json)"), "{err}");
    }
    assert_eq!(std::fs::read(out.join("state.json")).unwrap(), b"{}");
    // One the command wrote is refused unless resumed or overwritten.
    std::fs::remove_file(out.join("state.json")).unwrap();
    Start::Fresh.check(&out).unwrap();
    std::fs::write(out.join("state.json"), "{}").unwrap();
    let err = train(Start::Fresh);
    assert!(err.contains("already holds a checkpoint") && err.contains("--overwrite"), "{err}");
    assert!(out.join("state.json").exists());
}

#[test]
fn undecodable_training_images_are_reported_and_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let json = synthetic(dir.path(), 6);
    let images = Path::new(&json).parent().unwrap().join("images");
    std::fs::write(images.join("garbage.jpg"), "not an image at all\n").unwrap();
    let good = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"));
    let png = std::fs::read(good.unwrap()).unwrap();
    std::fs::write(images.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    let mut coco: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ann = coco["annotations"][0].clone();
    for (id, name) in [(101, "images/garbage.jpg"), (102, "images/truncated.png")] {
        coco["images"].as_array_mut().unwrap().push(serde_json::json!({
            "id": id, "file_name": name, "width": 64, "height": 64
        }));
        let mut a = ann.clone();
        a["id"] = (id * 10).into();
        a["image_id"] = id.into();
        coco["annotations"].as_array_mut().unwrap().push(a);
    }
    std::fs::write(&json, serde_json::to_vec(&coco).unwrap()).unwrap();

    // `data check` decodes every image: both are reported, by name
    let o = detnas(&["data", "check", "--coco", &json]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("6 images"), "{out}");
    assert!(out.contains("2 images whose file cannot be decoded (dropped)"), "{out}");
    // the header-only check finds the garbage file only
    let o = detnas(&["data", "check", "--coco", &json, "--headers-only"]);
    assert!(stdout(&o).contains("1 images whose file cannot be decoded"), "{}", stdout(&o));

    // training: the garbage file is dropped at load (reported at start), the truncated one is
    // skipped by the loader, counted in the state, and the run finishes
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let run = dir.path().join("run");
    let o = detnas(&[
        "train",
        "retinanet",
        "--config",
        cfg.to_str().unwrap(),
        "--coco",
        &json,
        "--out",
        run.to_str().unwrap(),
    ]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("data: 7 training images"), "{log}");
    assert!(log.contains("1 images whose file cannot be decoded (dropped)") && log.contains("garbage.jpg"), "{log}");
    assert!(log.contains("skipped an undecodable training image") && log.contains("truncated.png"), "{log}");
    assert!(log.contains("1 undecodable training image(s) skipped"), "{log}");
    let st = state(&run);
    assert_eq!(st["step"], 4);
    let bad = st["bad_images"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].as_str().unwrap().contains("truncated.png"));
}

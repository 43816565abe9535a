//! What detnas promises about the user's files: a command writes only folders it owns (new,
//! empty, or stamped by itself), `--exist-ok` / `--overwrite` remove exactly the files it wrote,
//! outputs are never inputs however spelled, and `detect --resume` notices what changed.

use crate::util::{assert_one_line_failure, detnas, detnas_env, encoded, small_model, stderr, textured, tree};
use image::ImageFormat;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn model() -> &'static str {
    small_model().0.to_str().unwrap()
}

fn write_image(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, encoded(&textured(96, 64, seed), ImageFormat::Png)).unwrap();
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
}

fn detnas_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detnas")).args(args).current_dir(dir).output().expect("detnas runs")
}

/// A folder of the user's own files, some named like detnas outputs.
#[cfg(feature = "train")]
fn user_folder(dir: &Path) {
    write_image(&dir.join("images/x.png"), 9);
    for name in ["readme.md", "detections.json", "state.json", "demo.json", "annotations.json"] {
        std::fs::write(dir.join(name), format!("the user's {name}")).unwrap();
    }
}

#[test]
#[cfg(feature = "train")]
fn every_command_refuses_folders_it_does_not_own_and_keeps_the_users_files_in_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let (images, coco) = (d("ds/images"), d("ds/annotations.json"));
    let synthetic = ["data", "synthetic", "--images", "3", "--size", "64x64", "--out"];
    let detect = ["detect", model(), &images, "--out"];
    let train = [
        "train",
        "retinanet",
        "--arch",
        "coco-retinanet-300m",
        "--coco",
        &coco,
        "--iterations",
        "1",
        "--batch-size",
        "1",
        "--out",
    ];
    ok(&detnas(&[&synthetic[..], &[&d("ds")]].concat()));
    ok(&detnas(&[&detect[..], &[&d("det"), "--save-img", "--save-txt"]].concat()));
    ok(&detnas(&[&train[..], &[&d("tr")]].concat()));
    user_folder(&dir.path().join("user"));
    // Each command with the flag that replaces earlier results.
    let search = ["search", "--checkpoint", &d("tr"), "--out"];
    let commands: Vec<(&str, Vec<&str>, &str)> = vec![
        ("data synthetic", synthetic.to_vec(), "--overwrite"),
        ("detect", detect.to_vec(), "--exist-ok"),
        ("train", train.to_vec(), "--overwrite"),
        ("search", search.to_vec(), "--json"),
        ("demo", vec!["demo", "--quick", "--out"], "--overwrite"),
        ("study", vec!["study", "--quick", "--out"], "--overwrite"),
    ];
    for (folder, owner) in
        [("ds", Some("data synthetic")), ("det", Some("detect")), ("tr", Some("train")), ("user", None)]
    {
        let before = tree(&dir.path().join(folder));
        for (command, args, replace) in &commands {
            if owner == Some(*command) {
                continue;
            }
            let target = d(folder);
            let o = detnas(&[&args[..], &[&target, replace]].concat());
            assert!(!o.status.success(), "`{command}` wrote into {folder}: {}", stderr(&o));
            let err = stderr(&o);
            let expected =
                owner.map_or("files detnas did not write".to_string(), |c| format!("output of `detnas {c}`"));
            assert!(err.contains(&expected), "`{command}` into {folder}: {err}");
            assert!(tree(&dir.path().join(folder)) == before, "`{command}` changed {folder}");
        }
    }
    // In its own folder, a command's replacement keeps the files the user added there.
    for (folder, command) in [("ds", 0), ("det", 1), ("tr", 2)] {
        std::fs::write(dir.path().join(folder).join("mine.txt"), b"the user's").unwrap();
        let (name, args, replace) = &commands[command];
        let o = detnas(&[&args[..], &[&d(folder), replace]].concat());
        ok(&o);
        assert!(stderr(&o).contains("detnas did not write: mine.txt"), "`{name}`: {}", stderr(&o));
        assert_eq!(std::fs::read(dir.path().join(folder).join("mine.txt")).unwrap(), b"the user's");
    }
}

#[test]
fn exist_ok_removes_only_the_files_detect_wrote() {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..2 {
        write_image(&dir.path().join(format!("in/p{k}.png")), k);
    }
    let out = dir.path().join("out");
    let (i, o) = (dir.path().join("in").display().to_string(), out.display().to_string());
    ok(&detnas(&["detect", model(), &i, "--out", &o, "--save-img", "--save-txt"]));
    write_image(&out.join("images/my-photo.jpg"), 7);
    write_image(&out.join("images/deep/x.jpg"), 8);
    std::fs::write(out.join("readme.md"), b"notes").unwrap();
    let mine: BTreeMap<String, Vec<u8>> = tree(&out)
        .into_iter()
        .filter(|(k, _)| k.contains("my-photo") || k.contains("deep") || k == "readme.md")
        .collect();
    assert_eq!(mine.len(), 3);
    let one = dir.path().join("in/p1.png").display().to_string();
    let again = detnas(&["detect", model(), &one, "--out", &o, "--save-txt", "--exist-ok"]);
    ok(&again);
    assert!(stderr(&again).contains("keeps 3 file(s) detnas did not write"), "{}", stderr(&again));
    let after = tree(&out);
    for (name, bytes) in &mine {
        assert!(after.get(name) == Some(bytes), "{name} was touched");
    }
    assert!(
        !out.join("images/p0.jpg").exists() && !out.join("labels/p0.txt").exists(),
        "the first run's files are gone"
    );
    assert!(out.join("labels/p1.txt").exists());

    // A folder an earlier detnas wrote (no record yet) is adopted by its run.json: its own files only.
    std::fs::remove_file(out.join(".detnas-owner.json")).unwrap();
    let again = detnas(&["detect", model(), &one, "--out", &o, "--save-txt", "--exist-ok"]);
    ok(&again);
    assert!(stderr(&again).contains("written by an earlier detnas"), "{}", stderr(&again));
    let after = tree(&out);
    for (name, bytes) in &mine {
        assert!(after.get(name) == Some(bytes), "{name} was touched");
    }
}

#[test]
fn an_output_is_never_one_of_the_inputs_however_spelled() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.onnx");
    std::fs::copy(model(), &a).unwrap();
    std::os::unix::fs::symlink(&a, dir.path().join("link.onnx")).unwrap();
    let before = std::fs::read(&a).unwrap();
    let absolute = a.display().to_string();
    for out in ["./a.onnx", absolute.as_str(), "link.onnx", "sub/../a.onnx"] {
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        let o = detnas_in(dir.path(), &["quantize", "a.onnx", "--fp16", "--out", out]);
        assert_one_line_failure(&o, &["the same file", "choose another --out"]);
    }
    assert_eq!(std::fs::read(&a).unwrap(), before, "the float model is intact");
    let gt = dir.path().join("gt.json");
    std::fs::write(&gt, br#"{"images": [], "annotations": [], "categories": [{"id": 1, "name": "tree"}]}"#).unwrap();
    let o = detnas_in(dir.path(), &["eval", "--gt", "./gt.json", "--model", "a.onnx", "--save-dt", "gt.json"]);
    assert_one_line_failure(&o, &["--save-dt", "the same file"]);
    assert!(std::fs::read(&gt).unwrap().starts_with(b"{\"images\""));
    let o = detnas_in(dir.path(), &["export", "--arch", "coco-retinanet-300m", "--out", "missing/m.onnx"]);
    assert_one_line_failure(&o, &["missing", "does not exist"]);
    // An existing file of another kind is never replaced; a model detnas wrote is.
    write_image(&dir.path().join("photo.png"), 3);
    let photo = std::fs::read(dir.path().join("photo.png")).unwrap();
    let o = detnas_in(dir.path(), &["quantize", "a.onnx", "--fp16", "--out", "photo.png"]);
    assert_one_line_failure(&o, &["photo.png", "is not a detnas model", "never replaced"]);
    let o = detnas_in(dir.path(), &["eval", "--gt", "gt.json", "--model", "a.onnx", "--save-dt", "photo.png"]);
    assert_one_line_failure(&o, &["photo.png", "is not COCO results"]);
    assert_eq!(std::fs::read(dir.path().join("photo.png")).unwrap(), photo);
    for _ in 0..2 {
        ok(&detnas_in(dir.path(), &["quantize", "a.onnx", "--fp16", "--out", "a.fp16.onnx"]));
    }
}

#[test]
fn resume_takes_other_spellings_redoes_changed_inputs_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for k in 0..4 {
        write_image(&root.join(format!("in/s{k}.png")), k);
    }
    let copy = root.join("copy.onnx");
    std::fs::copy(model(), &copy).unwrap();
    let out = root.join("out").display().to_string();
    let i = root.join("in").display().to_string();
    let args = ["detect", model(), &i, "--out", &out, "--save-img", "--workers", "1"];
    let killed = detnas_env(&args, &[("DETNAS_TEST_ABORT_AFTER", "2")]);
    assert!(!killed.status.success());
    // What a kill leaves: a temporary file among the results.
    let temp = root.join("out/images/.detnas-tmp-999999-0");
    std::fs::write(&temp, b"partial").unwrap();
    // An input replaced after it was detected.
    write_image(&root.join("in/s0.png"), 40);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(root.join("in/s0.png")).unwrap().set_modified(later).unwrap();
    // Another spelling of the inputs, another working folder, an identical copy of the model.
    let o =
        detnas_in(root, &["detect", "copy.onnx", "./in/", "--out", "out", "--save-img", "--workers", "1", "--resume"]);
    ok(&o);
    assert!(stderr(&o).contains("1 input(s) changed"), "{}", stderr(&o));
    assert!(!temp.exists(), "temporaries of the killed run are swept");
    let fresh = root.join("fresh").display().to_string();
    ok(&detnas(&["detect", model(), &i, "--out", &fresh, "--save-img", "--workers", "1"]));
    let read = |d: &str| std::fs::read(Path::new(d).join("detections.json")).unwrap();
    assert_eq!(read(&out), read(&fresh), "the changed input's results are those of its new content");
    assert_eq!(
        std::fs::read(root.join("out/images/s0.jpg")).unwrap(),
        std::fs::read(root.join("fresh/images/s0.jpg")).unwrap()
    );
    write_image(&root.join("in/s9.png"), 9);
    let o = detnas(&[&args[..], &["--resume"]].concat());
    assert_one_line_failure(&o, &["--resume", "1 added", "s9.png", "--exist-ok"]);
    let o = detnas(&[&args[..], &["--resume", "--conf", "0.7"]].concat());
    assert_one_line_failure(&o, &["conf (recorded none, now 0.7)"]);
}

#[test]
fn long_names_and_earlier_outputs_among_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let long = format!("{}.png", "n".repeat(246));
    write_image(&root.join("in").join(&long), 1);
    write_image(&root.join("in/b.png"), 2);
    let i = root.join("in").display().to_string();
    let first = root.join("in/runs/a").display().to_string();
    ok(&detnas(&["detect", model(), &i, "--out", &first, "--save-img", "--save-txt"]));
    assert!(root.join("in/runs/a/labels").join(format!("{}.txt", "n".repeat(246))).is_file());
    let second = root.join("second").display().to_string();
    let o = detnas(&["detect", model(), &i, "--out", &second]);
    ok(&o);
    assert!(stderr(&o).contains("note: skipped") && stderr(&o).contains("runs/a"), "{}", stderr(&o));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("second/images.json")).unwrap()).unwrap();
    assert_eq!(index["images"].as_array().unwrap().len(), 2, "the annotated copies are not inputs");
}

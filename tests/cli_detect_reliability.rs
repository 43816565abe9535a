//! `detnas detect` under hostile folders and reused output folders: nothing lost, overwritten or
//! silently mixed; every other command ends quietly on a closed pipe and refuses runaway numbers.

use crate::util::{assert_one_line_failure, detnas, detnas_env, encoded, small_model, stderr, stdout, textured, tree};
use image::ImageFormat;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn model() -> &'static str {
    small_model().0.to_str().unwrap()
}

fn write_image(path: &Path, seed: u32, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, encoded(&textured(96, 64, seed), format)).unwrap();
}

fn images(out: &Path) -> Vec<Value> {
    read_json(&out.join("images.json"))["images"].as_array().unwrap().clone()
}

/// Runs detnas, failing the test instead of hanging past `limit`.
fn detnas_within(args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("detnas {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn colliding_stems_get_unique_output_names_recorded_in_images_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_image(&input.join("a/img.png"), 1, ImageFormat::Png);
    write_image(&input.join("b/img.jpg"), 2, ImageFormat::Jpeg);
    write_image(&input.join("c/img_3.png"), 3, ImageFormat::Png);
    write_image(&input.join("d/IMG.png"), 4, ImageFormat::Png);
    write_image(&input.join("img.png"), 5, ImageFormat::Png);
    let out = dir.path().join("out");
    let o = detnas(&[
        "detect",
        model(),
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-txt",
        "--save-img",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed = images(&out);
    assert_eq!(listed.len(), 5);
    assert_eq!(std::fs::read_dir(out.join("labels")).unwrap().count(), 5);
    assert_eq!(std::fs::read_dir(out.join("images")).unwrap().count(), 5);
    let mut seen = std::collections::HashSet::new();
    for img in &listed {
        for key in ["label_file", "image_file"] {
            let f = img[key].as_str().unwrap_or_else(|| panic!("{key} missing in {img}"));
            assert!(out.join(f).is_file(), "{f}");
            assert!(seen.insert(f.to_lowercase()), "{f} given twice");
        }
    }
}

#[test]
fn ids_from_refuses_one_ground_truth_image_matching_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_image(&input.join("a/img.jpg"), 1, ImageFormat::Jpeg);
    write_image(&input.join("b/img.jpg"), 2, ImageFormat::Jpeg);
    let gt = |names: &[&str]| {
        let imgs: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"id": 7 + i, "file_name": n, "width": 96, "height": 64}))
            .collect();
        let p = dir.path().join("gt.json");
        let cats = serde_json::json!([{"id": 1, "name": "tree"}, {"id": 2, "name": "bush"}]);
        std::fs::write(&p, serde_json::json!({"images": imgs, "annotations": [], "categories": cats}).to_string())
            .unwrap();
        p
    };
    let g = gt(&["img.jpg"]);
    let out = dir.path().join("out");
    let args = ["detect", model(), input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--ids-from"];
    let o = detnas(&[&args[..], &[g.to_str().unwrap()]].concat());
    assert_one_line_failure(&o, &["image id 7 matches both", "a/img.jpg", "b/img.jpg"]);
    assert!(!out.join("detections.json").exists());

    let g = gt(&["b/img.jpg", "a/img.jpg"]);
    let o = detnas(&[&args[..], &[g.to_str().unwrap(), "--exist-ok"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ids: BTreeMap<String, u64> = images(&out)
        .iter()
        .map(|i| (i["file_name"].as_str().unwrap().rsplit('/').nth(1).unwrap().to_string(), i["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(ids, BTreeMap::from([("a".to_string(), 8), ("b".to_string(), 7)]));
}

#[test]
fn folder_walk_visits_each_real_file_once_and_reports_bad_entries() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_image(&input.join("x.png"), 1, ImageFormat::Png);
    write_image(&input.join("d/y.jpg"), 2, ImageFormat::Jpeg);
    write_image(&input.join("locked/z.png"), 3, ImageFormat::Png);
    std::os::unix::fs::symlink(".", input.join("self")).unwrap();
    std::os::unix::fs::symlink("..", input.join("d/up")).unwrap();
    std::os::unix::fs::symlink("../d", input.join("d/again")).unwrap();
    let fifo = input.join("pipe.jpg");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(input.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // root reads any folder: then the locked folder is simply walked
    let locked_unreadable = std::fs::read_dir(input.join("locked")).is_err();

    let i = input.to_str().unwrap();
    let (x, x_dot, x_up) = (format!("{i}/x.png"), format!("{i}/./x.png"), format!("{i}/d/../x.png"));
    let out = dir.path().join("out");
    let o = detnas_within(
        &["detect", model(), i, &x, &x_dot, &x_up, "--out", out.to_str().unwrap()],
        Duration::from_secs(120),
    );
    std::fs::set_permissions(input.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let names: Vec<String> = images(&out).iter().map(|i| i["file_name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), if locked_unreadable { 2 } else { 3 }, "{names:?}");
    let errors = read_json(&out.join("errors.json"));
    let errors: Vec<&str> = errors.as_array().unwrap().iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains("pipe.jpg: not a regular file")), "{errors:?}");
    if locked_unreadable {
        assert!(errors.iter().any(|e| e.contains("locked: cannot read folder")), "{errors:?}");
    }
    assert!(stderr(&o).contains("pipe.jpg: not a regular file"), "said on the console: {}", stderr(&o));
}

#[test]
fn a_missing_input_is_named_on_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    write_image(&good, 1, ImageFormat::Png);
    let missing = dir.path().join("missing.png");
    let out = dir.path().join("out");
    let o =
        detnas(&["detect", model(), missing.to_str().unwrap(), good.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.png: no such file or folder"), "{}", stderr(&o));
    let out2 = dir.path().join("out2");
    let o = detnas(&["detect", model(), missing.to_str().unwrap(), "--out", out2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.png: no such file or folder"), "{}", stderr(&o));
}

#[test]
fn reused_or_misplaced_out_never_mixes_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    for k in 0..3 {
        write_image(&input.join(format!("p{k}.png")), k, ImageFormat::Png);
    }
    let out = input.join("runs/out");
    let o = out.to_str().unwrap();
    let i = input.to_str().unwrap();
    let first = detnas(&["detect", model(), i, "--out", o, "--save-txt", "--save-img"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(images(&out).len(), 3, "the output folder inside the input is not walked");

    let again = detnas(&["detect", model(), i, "--out", o]);
    assert_one_line_failure(&again, &["holds results of an earlier", "--exist-ok", "--resume"]);
    assert_eq!(std::fs::read_dir(out.join("labels")).unwrap().count(), 3, "a refused run changes nothing");

    let one = input.join("p1.png");
    let replaced = detnas(&["detect", model(), one.to_str().unwrap(), "--out", o, "--save-txt", "--exist-ok"]);
    assert_eq!(replaced.status.code(), Some(0), "{}", stderr(&replaced));
    assert_eq!(images(&out).len(), 1);
    let labels: Vec<_> = std::fs::read_dir(out.join("labels")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(labels, ["p1.txt"], "no stale label files of the first run");
    assert!(!out.join("images").exists(), "no stale annotated copies of the first run");

    // an unwritable --out is refused before the model is even loaded
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let bad_out = blocker.join("out");
    let o = detnas(&["detect", "/nonexistent/model.onnx", i, "--out", bad_out.to_str().unwrap()]);
    assert_one_line_failure(&o, &["--out", "cannot create the folder"]);
}

#[test]
fn a_killed_run_resumes_to_exactly_the_files_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    for k in 0..6 {
        write_image(&input.join(format!("s{k}.jpg")), k, ImageFormat::Jpeg);
    }
    std::fs::write(input.join("broken.jpg"), b"not an image").unwrap();
    let i = input.to_str().unwrap();
    let full = dir.path().join("full");
    let o =
        detnas(&["detect", model(), i, "--out", full.to_str().unwrap(), "--save-txt", "--save-img", "--workers", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let killed = dir.path().join("killed");
    let k = killed.to_str().unwrap();
    let args = ["detect", model(), i, "--out", k, "--save-txt", "--save-img", "--workers", "1"];
    let o = detnas_env(&args, &[("DETNAS_TEST_ABORT_AFTER", "3")]);
    assert!(!o.status.success(), "the run was meant to die: {}", stderr(&o));
    let journal = std::fs::read_to_string(killed.join("results.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 3, "finished images are on disk at once");
    assert!(!killed.join("detections.json").exists());

    let other = detnas(&[&args[..], &["--resume", "--conf", "0.5"]].concat());
    assert_one_line_failure(&other, &["--resume", "other settings", "conf"]);

    let o = detnas(&[&args[..], &["--resume"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 image(s) done, 4 to go"), "{}", stderr(&o));
    let (a, b) = (tree(&full), tree(&killed));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs after resume");
    }
    let coco = read_json(&killed.join("detections.json"));
    assert!(!coco.as_array().unwrap().is_empty());
}

#[test]
fn runaway_numbers_are_refused_and_workers_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.png");
    write_image(&img, 1, ImageFormat::Png);
    let out = dir.path().join("out");
    let (m, i, o) = (model(), img.to_str().unwrap(), out.to_str().unwrap());
    for (flag, value) in [("--conf", "nan"), ("--iou", "inf"), ("--conf", "1.5"), ("--workers", "0")] {
        let r = detnas_within(&["detect", m, i, "--out", o, flag, value], Duration::from_secs(30));
        assert_eq!(r.status.code(), Some(2), "{flag} {value}: {}", stderr(&r));
        assert!(stderr(&r).contains(flag), "{}", stderr(&r));
    }
    for value in ["nan", "inf", "0", "-1"] {
        let r = detnas_within(&["bench", m, "--seconds", value], Duration::from_secs(30));
        assert_eq!(r.status.code(), Some(2), "--seconds {value}: {}", stderr(&r));
    }
    let r = detnas_within(&["detect", m, i, "--out", o, "--workers", "1000"], Duration::from_secs(60));
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert!(stderr(&r).contains("--workers 1000 is more than the"), "{}", stderr(&r));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(["arch", "sample", "--space", "detnas-300m", "--count", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then the reader goes away
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_ne!(o.status.code(), Some(101), "{err}");
}

#[test]
fn eval_refuses_a_ground_truth_without_annotations_and_warns_on_unknown_categories() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    let dt = dir.path().join("dt.json");
    let images = serde_json::json!([{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}]);
    let cats = serde_json::json!([{"id": 1, "name": "tree"}]);
    std::fs::write(&gt, serde_json::json!({"images": images, "annotations": [], "categories": cats}).to_string())
        .unwrap();
    std::fs::write(&dt, r#"[{"image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2], "score": 0.9}]"#).unwrap();
    let (g, d) = (gt.to_str().unwrap(), dt.to_str().unwrap());
    assert_one_line_failure(&detnas(&["eval", "--gt", g, "--dt", d]), &["gt.json", "no annotations"]);

    let anns = serde_json::json!([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4}]);
    std::fs::write(&gt, serde_json::json!({"images": images, "annotations": anns, "categories": cats}).to_string())
        .unwrap();
    let o = detnas(&["eval", "--gt", g, "--dt", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("category ids not in") && stderr(&o).contains("9 (1)"), "{}", stderr(&o));
    assert!(stdout(&o).contains("Average Precision"), "{}", stdout(&o));
}

#[test]
fn an_unavailable_device_is_one_warning_line_or_a_strict_failure() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.png");
    write_image(&img, 1, ImageFormat::Png);
    let out = dir.path().join("out");
    let (m, i, o) = (model(), img.to_str().unwrap(), out.to_str().unwrap());
    let r = detnas(&["detect", m, i, "--out", o, "--device", "cuda:0"]);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let err = stderr(&r);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("cuda:0")).map(str::trim).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].starts_with("warning: device cuda:0 unavailable"), "{}", warnings[0]);
    let r = detnas(&["bench", m, "--device", "cuda:0", "--iters", "1", "--warmup", "0"]);
    assert_eq!(stderr(&r).lines().filter(|l| l.starts_with("warning: device cuda:0")).count(), 1, "{}", stderr(&r));
    let r = detnas(&["detect", m, i, "--out", o, "--exist-ok", "--device", "cuda:0", "--strict"]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
}

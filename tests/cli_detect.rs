//! `detnas detect / export / inspect / bench / eval` end to end on real files.

use crate::util::{assert_one_line_failure, detnas, encoded, png_bomb, small_model, stderr, stdout, textured};
use detnas_infer::Detector;
use image::ImageFormat;
use serde_json::Value;
use std::path::Path;

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// `detnas detect MODEL INPUT --out OUT` with `extra` flags.
fn detect_into(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let base = ["detect", model.to_str().unwrap(), input.to_str().unwrap(), "--out", out.to_str().unwrap()];
    detnas(&[&base[..], extra].concat())
}

/// A folder mixing good images (nested, several formats) and hostile files.
fn mixed_folder(dir: &Path) -> (usize, Vec<&'static str>) {
    std::fs::create_dir_all(dir.join("nested/deeper")).unwrap();
    let good: Vec<(&str, Vec<u8>)> = vec![
        ("a.jpg", encoded(&textured(640, 480, 1), ImageFormat::Jpeg)),
        ("nested/b.png", encoded(&textured(300, 500, 2), ImageFormat::Png)),
        ("nested/deeper/c.bmp", encoded(&textured(1, 1, 3), ImageFormat::Bmp)),
        ("png_named.jpg", encoded(&textured(200, 100, 4), ImageFormat::Png)),
        ("gray16.png", {
            let img = image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(64, 48, |x, y| {
                image::Luma([(x * 900 + y * 300) as u16])
            }));
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, ImageFormat::Png).unwrap();
            buf.into_inner()
        }),
    ];
    for (name, bytes) in &good {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("empty.jpg"), b"").unwrap();
    std::fs::write(dir.join("text.jpg"), b"this is not an image\n").unwrap();
    std::fs::write(dir.join("bomb.png"), png_bomb()).unwrap();
    std::fs::write(dir.join("zero.png"), {
        let mut p = png_bomb();
        p[16..24].copy_from_slice(&[0; 8]);
        p
    })
    .unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored: not an image extension").unwrap();
    (good.len(), vec!["empty.jpg", "text.jpg", "bomb.png", "zero.png"])
}

#[test]
fn folder_with_hostile_files_finishes_with_all_good_results() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let (good, bad) = mixed_folder(&images);
    let out = dir.path().join("out");
    let model = small_model().0.to_str().unwrap();
    let o = detnas(&[
        "detect",
        model,
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-txt",
        "--save-img",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("images/s") && stdout(&o).contains("inference"), "{}", stdout(&o));

    let index = read_json(&out.join("images.json"));
    let listed = index["images"].as_array().unwrap();
    assert_eq!(listed.len(), good);
    let errors = read_json(&out.join("errors.json"));
    let failed: Vec<String> =
        errors.as_array().unwrap().iter().map(|e| e["file"].as_str().unwrap().to_string()).collect();
    assert_eq!(failed.len(), bad.len(), "{failed:?}");
    for b in &bad {
        assert!(failed.iter().any(|f| f.ends_with(b)), "{b} missing from errors.json");
    }
    let err_text = stderr(&o);
    assert!(err_text.contains("bomb.png") && err_text.contains("text.jpg"), "{err_text}");

    // COCO results: ids from images.json, xywh inside the original image, scores sorted per image
    let dets = read_json(&out.join("detections.json"));
    let ids: std::collections::HashMap<u64, (f64, f64)> = listed
        .iter()
        .map(|i| (i["id"].as_u64().unwrap(), (i["width"].as_f64().unwrap(), i["height"].as_f64().unwrap())))
        .collect();
    assert!(!dets.as_array().unwrap().is_empty());
    for d in dets.as_array().unwrap() {
        let (w, h) = ids[&d["image_id"].as_u64().unwrap()];
        let b: Vec<f64> = d["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[0] + b[2] <= w + 1e-3 && b[1] + b[3] <= h + 1e-3, "{b:?} in {w}x{h}");
        assert!([1, 2].contains(&d["category_id"].as_u64().unwrap()));
    }
    assert_eq!(std::fs::read_dir(out.join("labels")).unwrap().count(), good);
    assert_eq!(std::fs::read_dir(out.join("images")).unwrap().count(), good);
    let label = std::fs::read_to_string(out.join("labels/a.txt")).unwrap();
    for line in label.lines() {
        let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 6);
        assert!(v[1..5].iter().all(|x| (0.0..=1.0).contains(x)), "{line}");
    }
    let annotated = image::open(out.join("images/a.jpg")).unwrap();
    assert_eq!((annotated.width(), annotated.height()), (640, 480));

    // strict: same run exits 3 (some inputs failed); results of the good ones are still written
    let out2 = dir.path().join("out2");
    let o = detnas(&["detect", model, images.to_str().unwrap(), "--out", out2.to_str().unwrap(), "--strict"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    assert_eq!(read_json(&out2.join("images.json"))["images"].as_array().unwrap().len(), good);
}

#[test]
fn globs_classes_and_nothing_to_process() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    mixed_folder(&images);
    let model = small_model().0.to_str().unwrap();
    let out = dir.path().join("out");
    let pattern = format!("{}/*.jpg", images.display());
    let o = detnas(&["detect", model, &pattern, "--out", out.to_str().unwrap(), "--classes", "bush", "--conf", "0.1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let index = read_json(&out.join("images.json"));
    assert_eq!(index["images"].as_array().unwrap().len(), 2, "a.jpg and png_named.jpg");
    for d in read_json(&out.join("detections.json")).as_array().unwrap() {
        assert_eq!(d["category_id"].as_u64(), Some(2));
        assert!(d["score"].as_f64().unwrap() >= 0.1);
    }
    let o = detnas(&["detect", model, &pattern, "--out", out.to_str().unwrap(), "--classes", "cat", "--exist-ok"]);
    assert_one_line_failure(&o, &["unknown class `cat`"]);

    let only_bad = dir.path().join("bad");
    std::fs::create_dir_all(&only_bad).unwrap();
    std::fs::write(only_bad.join("x.jpg"), b"nope").unwrap();
    let o = detnas(&["detect", model, only_bad.to_str().unwrap(), "--out", dir.path().join("o3").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no image could be processed"), "{}", stderr(&o));
    let o = detnas(&["detect", model, "/nonexistent/*.png", "--out", dir.path().join("o4").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn export_inspect_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    let o = detnas(&[
        "export",
        "--arch",
        "coco-fpn-300m",
        "--out",
        model.to_str().unwrap(),
        "--input",
        "128x128",
        "--classes",
        "a,b,c",
        "--head-conv",
        "separable",
        "--fpn-channels",
        "32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = detnas(&["inspect", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 3, 128, 128]));
    let outs: Vec<&str> = v["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(outs, vec!["boxes", "scores", "labels"]);
    assert_eq!(v["metadata"]["detnas.arch"], "2,1,2,0,2,1,1,2,3,3,1,3,0,0,3,1,3,1,3,2");
    assert_eq!(v["metadata"]["detnas.classes"], r#"["a","b","c"]"#);
    assert!(v["flops"]["total"].as_u64().unwrap() > v["flops"]["backbone"].as_u64().unwrap());

    let o = detnas(&["bench", model.to_str().unwrap(), "--warmup", "1", "--iters", "3", "--threads", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(b["model_run"]["iterations"], 3);
    assert!(b["detect"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(b["device"]["onnxruntime"].as_str().unwrap().starts_with("1."));
    assert_eq!(b["device"]["provider"], "CPUExecutionProvider");
    assert_eq!(b["tta"], "none");
    let args =
        [model.to_str().unwrap(), "--warmup", "1", "--iters", "3", "--threads", "1", "--json", "--tta", "dihedral"];
    let o = detnas(&[&["bench"], &args[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let b: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(b["tta"], "dihedral");
    // eight model runs in the detect path
    assert!(b["detect_over_model_run_p50"].as_f64().unwrap() > 3.0, "{b}");

    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"").unwrap();
    assert_one_line_failure(&detnas(&["inspect", bad.to_str().unwrap()]), &["bad.onnx", "empty"]);
    assert_one_line_failure(&detnas(&["bench", bad.to_str().unwrap()]), &["bad.onnx", "empty"]);
    let o = detnas(&[
        "export",
        "--arch",
        "coco-fpn-300m",
        "--out",
        model.to_str().unwrap(),
        "--weights",
        bad.to_str().unwrap(),
    ]);
    assert_one_line_failure(&o, &["bad.onnx"]);
    let o = detnas(&["export", "--arch", "coco-fpn-300m", "--out", model.to_str().unwrap(), "--input", "16x16"]);
    assert_one_line_failure(&o, &["smaller than 32x32"]);
}

#[test]
fn eval_matches_pycocotools_fixtures_and_handles_empty_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/coco");
    for case in ["basic", "crowd", "empty_results"] {
        let dir = root.join(case);
        let o = detnas(&[
            "eval",
            "--gt",
            dir.join("gt.json").to_str().unwrap(),
            "--dt",
            dir.join("dt.json").to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
        let want = read_json(&dir.join("expected.json"));
        for (g, w) in got["stats"].as_array().unwrap().iter().zip(want["stats"].as_array().unwrap()) {
            assert!((g.as_f64().unwrap() - w.as_f64().unwrap()).abs() <= 1e-6, "{case}: {g} vs {w}");
        }
    }
    let o = detnas(&["eval", "--gt", "/nonexistent/gt.json", "--dt", "/nonexistent/dt.json"]);
    assert_one_line_failure(&o, &["/nonexistent/gt.json"]);
    // Recall and precision at one IoU: in [0, 1], recall falls as the IoU asked for rises.
    let dir = root.join("basic");
    let (gt, dt) = (dir.join("gt.json"), dir.join("dt.json"));
    let matched = |iou: &str| -> Value {
        let args = ["eval", "--gt", gt.to_str().unwrap(), "--dt", dt.to_str().unwrap(), "--json", "--match-iou", iou];
        let o = detnas(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()["match"].clone()
    };
    let (loose, strict) = (matched("0.1"), matched("0.9"));
    let recall = |v: &Value| v["recall"].as_f64().unwrap();
    assert!(recall(&loose) > recall(&strict) && recall(&loose) <= 1.0, "{loose} {strict}");
    assert!(loose["matched"].as_u64() <= loose["detections"].as_u64());
    let o = detnas(&["eval", "--gt", gt.to_str().unwrap(), "--dt", dt.to_str().unwrap(), "--match-iou", "1.5"]);
    assert!(!o.status.success() && stderr(&o).contains("--match-iou"), "{}", stderr(&o));
    let o = detnas(&["eval", "--gt", gt.to_str().unwrap(), "--dt", dt.to_str().unwrap(), "--match-iou", "0"]);
    assert_one_line_failure(&o, &["--match-iou 0", "above 0"]);
}

#[test]
fn tiled_detection_of_a_large_image_and_its_settings_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tile = image::open(root.join("models/samples/neon-yell-1.jpg")).unwrap().to_rgb8();
    // a 3x2 mosaic of one sample: a 939x690 "orthophoto"
    let (w, h) = tile.dimensions();
    let mut big = image::RgbImage::new(3 * w, 2 * h);
    for (x, y) in [(0, 0), (w, 0), (2 * w, 0), (0, h), (w, h), (2 * w, h)] {
        image::imageops::replace(&mut big, &tile, x as i64, y as i64);
    }
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    big.save(images.join("ortho.png")).unwrap();
    let model = root.join("models/neon-trees.onnx");
    let out = dir.path().join("out");
    let run = |extra: &[&str]| detect_into(&model, &images, &out, extra);
    let o = run(&["--tile", "416", "--overlap", "0.25", "--conf", "0.3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dets = read_json(&out.join("detections.json"));
    let n = dets.as_array().unwrap().len();
    let single = Detector::builder().confidence(0.3).load(&model).unwrap().detect(&tile).unwrap().detections.len();
    // six copies of the tile: about six times its crowns (the windows see the tile at its own scale
    // where the single detection enlarges it, and windows across the copies' seams differ);
    // boxes not merged across the overlaps would give well over ten times
    assert!(n >= 4 * single && n <= 10 * single, "{n} detections on the mosaic, {single} on one tile");
    let run_json = read_json(&out.join("run.json"));
    assert_eq!(run_json["settings"]["tile"], 416);
    // resuming with another tiling is refused, naming the setting
    let o = run(&["--tile", "320", "--conf", "0.3", "--resume"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tile"), "{}", stderr(&o));
    // --overlap needs --tile; a tile under 32 pixels is refused by the parser
    let o = run(&["--overlap", "0.2", "--exist-ok"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["--tile", "16", "--exist-ok"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn test_time_augmentation_from_the_command_line_is_recorded_and_checked_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/neon-trees.onnx");
    let samples = root.join("models/samples");
    let out = dir.path().join("out");
    let run = |extra: &[&str]| detect_into(&model, &samples, &out, extra);
    let o = run(&["--tta", "flips", "--conf", "0.3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_json(&out.join("run.json"))["settings"]["tta"], "flips");
    // what the SDK gives with the same views, not what it gives without them
    let count = |tta| {
        let d = Detector::builder().confidence(0.3).tta(tta).load(&model).unwrap();
        ["neon-yell-1.jpg", "neon-yell-2.jpg"]
            .iter()
            .map(|n| d.detect_path(samples.join(n)).unwrap().detections.len())
            .sum::<usize>()
    };
    let written = read_json(&out.join("detections.json")).as_array().unwrap().len();
    assert_eq!(written, count(detnas_infer::Tta::Flips));
    assert_ne!(written, count(detnas_infer::Tta::None));
    let o = run(&["--conf", "0.3", "--resume"]);
    assert!(!o.status.success() && stderr(&o).contains("tta"), "{}", stderr(&o));
    // and the other way: a run without views is not continued with them
    let o = run(&["--conf", "0.3", "--exist-ok"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["--conf", "0.3", "--tta", "dihedral", "--resume"]);
    assert!(!o.status.success() && stderr(&o).contains("tta"), "{}", stderr(&o));
    let o = run(&["--tta", "sideways", "--exist-ok"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("none, flips, dihedral"), "{}", stderr(&o));
}

#[test]
fn eval_runs_a_model_on_the_ground_truths_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/neon-trees.onnx");
    std::fs::create_dir(dir.path().join("imgs")).unwrap();
    // ground truth: the model's own confident boxes on the two samples
    let confident = Detector::builder().confidence(0.5).load(&model).unwrap();
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (i, name) in ["neon-yell-1.jpg", "neon-yell-2.jpg"].iter().enumerate() {
        let path = dir.path().join("imgs").join(name);
        std::fs::copy(root.join("models/samples").join(name), &path).unwrap();
        let found = confident.detect_path(&path).unwrap();
        assert!(!found.detections.is_empty());
        let id = 10 + i;
        images.push(serde_json::json!({"id": id, "file_name": format!("imgs/{name}"), "width": found.width, "height": found.height}));
        for d in &found.detections {
            let [x, y, w, h] = d.xywh();
            let n = annotations.len() + 1;
            annotations.push(serde_json::json!({"id": n, "image_id": id, "category_id": 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}));
        }
    }
    let gt = dir.path().join("gt.json");
    let categories = serde_json::json!([{"id": 1, "name": "tree"}]);
    let dataset = serde_json::json!({"images": images, "annotations": annotations, "categories": categories});
    std::fs::write(&gt, dataset.to_string()).unwrap();
    let (gt_arg, model_arg) = (gt.to_str().unwrap(), model.to_str().unwrap());
    let saved = dir.path().join("dt.json");
    let eval = |extra: &[&str]| {
        let o = detnas(&[&["eval", "--gt", gt_arg, "--json"], extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()["stats"].clone()
    };
    let stats = eval(&["--model", model_arg, "--save-dt", saved.to_str().unwrap()]);
    // every ground-truth box is the model's own, ranked above everything else it finds
    assert!(stats[0].as_f64().unwrap() > 0.99 && stats[1].as_f64().unwrap() > 0.99, "{stats}");
    assert_eq!(eval(&["--dt", saved.to_str().unwrap()]), stats, "the saved results give the same numbers");
    assert_ne!(eval(&["--model", model_arg, "--tta", "flips"]), stats, "fused views are other boxes");
    // the results never overwrite an input
    let o = detnas(&["eval", "--gt", gt_arg, "--model", model_arg, "--save-dt", gt_arg]);
    assert_one_line_failure(&o, &["--save-dt", "the same file"]);
    assert!(read_json(&gt)["annotations"].as_array().is_some_and(|a| !a.is_empty()), "ground truth intact");
    // an image of another size than the ground truth says is named in a warning
    let mut shrunk = dataset.clone();
    shrunk["images"][0]["width"] = serde_json::json!(100);
    let shrunk_gt = dir.path().join("shrunk.json");
    std::fs::write(&shrunk_gt, shrunk.to_string()).unwrap();
    let o = detnas(&["eval", "--gt", shrunk_gt.to_str().unwrap(), "--model", model_arg]);
    assert!(o.status.success() && stderr(&o).contains("warning: 1 image(s)"), "{}", stderr(&o));
    assert!(stderr(&o).contains("neon-yell-1.jpg"), "{}", stderr(&o));
    // every image counts: a missing one fails the evaluation, naming it
    std::fs::remove_file(dir.path().join("imgs/neon-yell-2.jpg")).unwrap();
    let o = detnas(&["eval", "--gt", gt_arg, "--model", model_arg]);
    assert_one_line_failure(&o, &["1 of 2", "neon-yell-2.jpg"]);
    let o = detnas(&["eval", "--gt", gt_arg]);
    assert!(o.status.code() == Some(2) && stderr(&o).contains("--dt"), "{}", stderr(&o));
    let o = detnas(&["eval", "--gt", gt_arg, "--dt", saved.to_str().unwrap(), "--model", model_arg]);
    assert_eq!(o.status.code(), Some(2), "--dt and --model exclude each other");
}

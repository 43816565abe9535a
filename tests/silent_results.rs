//! Results that used to be silently wrong: category ids from the ground truth by name, an
//! untrained model quantized into noise, a latency table of a device that is not there.

use crate::util::{assert_one_line_failure, detnas, encoded, small_model, stderr, textured};
use image::ImageFormat;
use serde_json::{Value, json};
use std::path::Path;

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Two images and a ground truth naming the model's classes `tree` and `bush` with ids 7 and 9
/// (`categories` replaced when given).
fn ground_truth(dir: &Path, categories: Option<Value>) -> String {
    for (k, name) in ["a.png", "b.png"].iter().enumerate() {
        std::fs::write(dir.join(name), encoded(&textured(160, 128, k as u32 + 3), ImageFormat::Png)).unwrap();
    }
    let gt = json!({
        "images": [{"id": 11, "file_name": "a.png", "width": 160, "height": 128},
                   {"id": 12, "file_name": "b.png", "width": 160, "height": 128}],
        "annotations": [{"id": 1, "image_id": 11, "category_id": 7, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}],
        "categories": categories.unwrap_or(json!([{"id": 7, "name": "tree"}, {"id": 9, "name": "bush"}])),
    });
    let path = dir.join("gt.json");
    std::fs::write(&path, gt.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn ids_from_maps_classes_to_the_ground_truths_category_ids_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let gt = ground_truth(dir.path(), None);
    let (model, input, out) =
        (small_model().0.to_str().unwrap(), dir.path().display().to_string(), dir.path().join("out"));
    let o = detnas(&["detect", model, &input, "--out", out.to_str().unwrap(), "--ids-from", &gt]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dets = read_json(&out.join("detections.json"));
    let ids: std::collections::BTreeSet<i64> =
        dets.as_array().unwrap().iter().map(|d| d["category_id"].as_i64().unwrap()).collect();
    assert!(!ids.is_empty() && ids.iter().all(|i| [7, 9].contains(i)), "{ids:?}");
    let cats = &read_json(&out.join("images.json"))["categories"];
    assert_eq!(cats, &json!([{"id": 7, "name": "tree"}, {"id": 9, "name": "bush"}]));
    // eval --model scores the same ids: no warning about unknown categories.
    let o = detnas(&["eval", "--gt", &gt, "--model", model]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));

    let other = tempfile::tempdir().unwrap();
    let gt = ground_truth(other.path(), Some(json!([{"id": 7, "name": "tree"}])));
    let out = other.path().join("out");
    let o = detnas(&[
        "detect",
        model,
        &other.path().display().to_string(),
        "--out",
        out.to_str().unwrap(),
        "--ids-from",
        &gt,
    ]);
    assert_one_line_failure(&o, &["bush", "tree (id 7)", "model: tree, bush"]);
    let o = detnas(&["eval", "--gt", &gt, "--model", model]);
    assert!(stderr(&o).contains("warning") && stderr(&o).contains("bush"), "{}", stderr(&o));
}

#[test]
fn an_untrained_model_is_not_quantized_into_noise() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let o = detnas(&["export", "--arch", "coco-retinanet-300m", "--input", "64x64", "--out", &d("r.onnx")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::create_dir_all(d("calib")).unwrap();
    for k in 0..2 {
        std::fs::write(dir.path().join(format!("calib/{k}.png")), encoded(&textured(64, 64, k), ImageFormat::Png))
            .unwrap();
    }
    let args =
        ["quantize", &d("r.onnx"), "--calibrate", &d("calib"), "--calib-images", "2", "--sensitivity-images", "1"];
    let o = detnas(&[&args[..], &["--out", &d("r.int8.onnx")]].concat());
    assert!(!o.status.success());
    let last = stderr(&o).trim_end().lines().last().unwrap_or_default().to_string();
    assert!(last.contains("quantization error of the head outputs") && last.contains("noise"), "{}", stderr(&o));
    assert!(!dir.path().join("r.int8.onnx").exists());
}

#[test]
fn a_latency_table_is_never_measured_on_another_device_than_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let o = detnas(&["latency", "build", "--device", "cuda:0", "--input", "64x64", "--out", out.to_str().unwrap()]);
    if Path::new("/dev/nvidia0").exists() {
        return; // a machine with a GPU may measure there
    }
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("cuda:0"), "{}", stderr(&o));
    assert!(!out.exists());
}

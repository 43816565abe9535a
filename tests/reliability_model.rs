//! Issue 9, models: nothing silently lost or mixed. External data loads from any working
//! directory and `inspect` lists it; bad metadata is a load error naming the model; bad outputs
//! are per-image errors; an unavailable device gives one warning line; export refuses inputs the
//! strides do not divide and empty or duplicate class names.

use crate::util::{assert_one_line_failure, detnas, small_model, stderr, stdout, textured};
use detnas_core::detector::contract::{keys, tensors};
use detnas_infer::{Detector, DetectorOptions, Device, InferError};
use detnas_onnx::graph::encode;
use detnas_onnx::onnx_protobuf::Message;
use detnas_onnx::{Dim, ElemType, GraphBuilder, ModelProto};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn small_model_proto() -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(&small_model().0).unwrap()).unwrap()
}

/// Writes the small model as `folder/m.onnx` with its weights in `data_location` (relative to
/// `folder`); returns the data file's size.
fn write_external(folder: &Path, data_location: &str) -> usize {
    let mut model = small_model_proto();
    let data = detnas_onnx::external::externalize(&mut model, data_location, 1024);
    std::fs::create_dir_all(folder).unwrap();
    let data_path = folder.join(data_location);
    std::fs::create_dir_all(data_path.parent().unwrap()).unwrap();
    std::fs::write(&data_path, &data).unwrap();
    std::fs::write(folder.join("m.onnx"), encode(&model).unwrap()).unwrap();
    data.len()
}

/// The small model with one metadata entry replaced (or added).
fn with_metadata(entries: &[(&str, String)]) -> Vec<u8> {
    let mut model = small_model_proto();
    for (key, value) in entries {
        match model.metadata_props.iter_mut().find(|e| e.key == *key) {
            Some(e) => e.value = value.clone(),
            None => {
                let mut e = detnas_onnx::onnx_protobuf::StringStringEntryProto::new();
                e.key = key.to_string();
                e.value = value.clone();
                model.metadata_props.push(e);
            }
        }
    }
    encode(&model).unwrap()
}

/// A model with the detector interface whose outputs are the given constants.
fn constant_model(boxes: Vec<f32>, scores: Vec<f32>, labels: Vec<i64>) -> Vec<u8> {
    let cfg = &small_model().1;
    let (h, w) = (cfg.input.height as i64, cfg.input.width as i64);
    let n = scores.len() as i64;
    let mut g = GraphBuilder::new("constant");
    g.input(tensors::IMAGES, ElemType::F32, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)]).unwrap();
    let b = g.const_f32("b", &[n, 4], boxes).unwrap();
    let s = g.const_f32("s", &[n], scores).unwrap();
    let l = g.const_i64("l", &[n], labels).unwrap();
    g.op_as("Identity", tensors::BOXES, &[&b], vec![]).unwrap();
    g.op_as("Identity", tensors::SCORES, &[&s], vec![]).unwrap();
    g.op_as("Identity", tensors::LABELS, &[&l], vec![]).unwrap();
    let det = Dim::Symbolic("detections".into());
    g.output(tensors::BOXES, ElemType::F32, &[det.clone(), Dim::Fixed(4)]).unwrap();
    g.output(tensors::SCORES, ElemType::F32, std::slice::from_ref(&det)).unwrap();
    g.output(tensors::LABELS, ElemType::I64, &[det]).unwrap();
    g.metadata(keys::CONFIG, serde_json::to_string(cfg).unwrap());
    g.metadata(keys::CLASSES, serde_json::to_string(&cfg.class_names).unwrap());
    encode(&g.build()).unwrap()
}

fn save_png(path: &Path) {
    textured(200, 150, 4).save(path).unwrap();
}

#[test]
fn external_data_model_loads_from_any_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let data_len = write_external(&models, "m.onnx.data");
    let model = models.join("m.onnx");
    let model_len = std::fs::metadata(&model).unwrap().len() as usize;
    assert!(model_len * 4 < data_len, "weights moved out: model {model_len} bytes, data {data_len} bytes");

    // In process: the test's working directory is not the model's folder.
    assert_ne!(std::env::current_dir().unwrap(), models);
    let img = textured(200, 150, 4);
    let reference = Detector::builder().all_scores().load(&small_model().0).unwrap().detect(&img).unwrap();
    let external = Detector::builder().all_scores().load(&model).expect("external data resolves");
    // Loaded from bytes (the former `from_file`), the data file is looked for in the working
    // directory and not found.
    let bytes = std::fs::read(&model).unwrap();
    assert!(Detector::from_memory(&bytes, "m.onnx", DetectorOptions::default()).is_err());
    assert_eq!(external.detect(&img).unwrap().detections, reference.detections);

    // The CLI, with a relative model path from another folder.
    save_png(&dir.path().join("a.png"));
    let o = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(["detect", "models/m.onnx", "a.png", "--out", "out"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // `inspect` lists the file and its size.
    let o = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(["inspect", "models/m.onnx", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ext = &v["external_data"][0];
    assert_eq!(ext["file"], "m.onnx.data");
    assert_eq!(ext["bytes"].as_u64(), Some(data_len as u64));
    assert_eq!(ext["file_bytes"].as_u64(), Some(data_len as u64));
    assert!(ext["tensors"].as_u64().unwrap() > 10);
    assert_eq!(ext["leaves_model_folder"], false);

    // `quantize` reads the weights beside the model too, and writes a self-contained model.
    let o = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(["quantize", "models/m.onnx", "--fp16", "--out", "m.fp16.onnx"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let half = ModelProto::parse_from_bytes(&std::fs::read(dir.path().join("m.fp16.onnx")).unwrap()).unwrap();
    assert!(detnas_onnx::external::external_refs(&half).is_empty());
    assert!(half.graph.initializer.iter().map(|t| t.raw_data.len()).sum::<usize>() * 3 > data_len);
}

#[test]
fn inspect_flags_external_data_outside_the_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sub");
    write_external(&folder, "../outside.data");
    let model = folder.join("m.onnx");
    let o = detnas(&["inspect", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o).lines().find(|l| l.starts_with("external")).unwrap_or_default().to_string();
    assert!(line.contains("../outside.data") && line.contains("leaves the model's folder"), "{}", stdout(&o));
    let o = detnas(&["inspect", model.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["external_data"][0]["leaves_model_folder"], true);
    // A plain model has no external data.
    let o = detnas(&["inspect", small_model().0.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["external_data"], serde_json::json!([]));
}

#[test]
fn bad_metadata_is_a_load_error_naming_the_model_and_the_problem() {
    let cfg = &small_model().1;
    let config_with = |f: &dyn Fn(&mut detnas_core::detector::DetectorConfig)| {
        let mut c = cfg.clone();
        f(&mut c);
        let classes = serde_json::to_string(&c.class_names).unwrap();
        vec![(keys::CONFIG, serde_json::to_string(&c).unwrap()), (keys::CLASSES, classes)]
    };
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (config_with(&|c| c.class_names = vec!["tree".into(), "".into()]), "class 1 has an empty name"),
        (config_with(&|c| c.class_names = vec!["tree".into(), "tree".into()]), "`tree` is given twice"),
        (config_with(&|c| c.category_ids = vec![7]), "1 entries for 2 classes"),
        (vec![(keys::CLASSES, r#"["tree","shrub"]"#.into())], "detnas.classes"),
        (vec![(keys::FORMAT, "99".into())], "detnas.format"),
        (vec![(keys::DETECTOR, "faster-rcnn".into())], "detnas.detector"),
    ];
    for (entries, needle) in cases {
        let bytes = with_metadata(&entries);
        let err = Detector::from_memory(&bytes, "edited.onnx", DetectorOptions::default()).expect_err(needle);
        assert!(matches!(err, InferError::Metadata { .. }), "{needle}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("edited.onnx") && msg.contains(needle), "{needle}: {msg}");
    }
}

#[test]
fn bad_outputs_are_per_image_errors_naming_the_problem() {
    let load = |bytes: &[u8]| Detector::from_memory(bytes, "const.onnx", DetectorOptions::default()).unwrap();
    let img = textured(320, 256, 1);
    // Valid constants come through, in image pixels (scale 2 from the 128x160 input).
    let good = load(&constant_model(vec![10.0, 20.0, 30.0, 40.0], vec![0.9], vec![1]));
    let d = good.detect(&img).unwrap().detections;
    assert_eq!((d.len(), d[0].class_name.as_str(), d[0].bbox), (1, "bush", [20.0, 40.0, 60.0, 80.0]));

    let cases = [
        (vec![10.0, 20.0, 30.0, 40.0], vec![0.9], vec![5], "label 5, outside the 2 classes"),
        (vec![10.0, 20.0, 30.0, 40.0], vec![0.9], vec![-1], "label -1"),
        (vec![30.0, 20.0, 10.0, 40.0], vec![0.9], vec![0], "inverted box"),
        (vec![10.0, f32::NAN, 30.0, 40.0], vec![0.9], vec![0], "non-finite box"),
        (vec![10.0, 20.0, 30.0, 40.0], vec![f32::NAN], vec![0], "score NaN"),
    ];
    for (boxes, scores, labels, needle) in cases {
        let det = load(&constant_model(boxes, scores, labels));
        let err = det.detect(&img).expect_err(needle);
        assert!(matches!(err, InferError::BadOutput { .. }), "{needle}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("const.onnx") && msg.contains(needle), "{needle}: {msg}");
        // In a batch every image gets its own error; nothing panics or stops the batch.
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..2).map(|i| dir.path().join(format!("{i}.png"))).collect();
        paths.iter().for_each(|p| save_png(p));
        let results = det.detect_batch(&paths);
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| matches!(r, Err(InferError::BadOutput { .. }))));
    }
}

#[test]
fn cli_batch_lists_bad_output_images_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bad-labels.onnx");
    std::fs::write(&model, constant_model(vec![10.0, 20.0, 30.0, 40.0], vec![0.9], vec![5])).unwrap();
    let images: Vec<_> = (0..2).map(|i| dir.path().join(format!("{i}.png"))).collect();
    images.iter().for_each(|p| save_png(p));
    let out = dir.path().join("out");
    let o = detnas(&[
        "detect",
        model.to_str().unwrap(),
        images[0].to_str().unwrap(),
        images[1].to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("label 5, outside the 2 classes").count(), 2, "both images listed: {err}");
}

#[test]
fn unavailable_cuda_is_one_warning_line_or_a_strict_error() {
    let model = &small_model().0;
    let cpu = Detector::from_file(model, DetectorOptions::default()).unwrap();
    assert_eq!(cpu.device_warning(), None);
    let cuda = Detector::builder().device(Device::Cuda(0)).load(model).unwrap();
    let Some(warning) = cuda.device_warning() else {
        // a CUDA build on a machine with a GPU: no fallback, no warning
        assert!(cuda.info().provider.starts_with("CUDAExecutionProvider"), "{}", cuda.info().provider);
        return;
    };
    assert_eq!(cuda.info().provider, "CPUExecutionProvider");
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(warning.contains("cuda:0") && warning.contains("running on CPU"), "{warning}");
    if cfg!(not(feature = "cuda")) {
        assert!(warning.contains("rebuild with the `cuda` feature"), "{warning}");
    }
    assert_eq!(cuda.info().device_warning.as_deref(), Some(warning));
    let err =
        Detector::builder().device(Device::Cuda(0)).strict(true).load(model).expect_err("strict refuses the fallback");
    assert!(matches!(err, InferError::Provider { .. }), "{err}");
}

#[test]
fn export_refuses_undividable_inputs_and_bad_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let export = |extra: &[&str]| {
        let mut args = vec!["export", "--arch", "coco-retinanet-300m", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        detnas(&args)
    };
    let o = export(&["--input", "500x500"]);
    assert_one_line_failure(&o, &["500x500", "not a multiple of 32", "nearest valid sizes: 480x480 or 512x512"]);
    let o = export(&["--input", "320x330"]);
    assert_one_line_failure(&o, &["320x320 or 320x352"]);
    let o = export(&["--classes", "a,,b"]);
    assert_one_line_failure(&o, &["class_names", "class 1 has an empty name"]);
    let o = export(&["--classes", "a,b,a"]);
    assert_one_line_failure(&o, &["`a` is given twice (classes 0 and 2)"]);
    assert!(!out.exists(), "nothing written");
}

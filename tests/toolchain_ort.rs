//! ONNX Runtime works from a clean clone: a model written with onnx-protobuf, run by ort.

use crate::util::{assert_one_line_failure, detnas_env};
use detnas_infer::ort::session::Session;
use detnas_infer::ort::value::TensorRef;
use detnas_onnx::graph::encode;
use detnas_onnx::{Dim, ElemType, GraphBuilder};

#[test]
fn tiny_model_written_with_onnx_protobuf_runs_in_ort() {
    // y = relu(x @ w + b), x: [batch, 3], w: [3, 2]
    let w = vec![1.0f32, -1.0, 0.5, 2.0, -0.25, 0.0];
    let b = vec![0.1f32, -0.2];
    let mut g = GraphBuilder::new("smoke");
    let x = g.input("x", ElemType::F32, &[Dim::Symbolic("batch".into()), Dim::Fixed(3)]).unwrap();
    let wn = g.weight("fc.weight", &[3, 2], w.clone()).unwrap();
    let bn = g.weight("fc.bias", &[2], b.clone()).unwrap();
    let mm = g.op("MatMul", "fc", &[&x, &wn], vec![]);
    let add = g.op("Add", "fc", &[&mm, &bn], vec![]);
    let y = g.op("Relu", "y", &[&add], vec![]);
    g.output(&y, ElemType::F32, &[Dim::Symbolic("batch".into()), Dim::Fixed(2)]).unwrap();
    let bytes = encode(&g.build()).unwrap();

    let env = detnas_infer::runtime::environment().expect("ONNX Runtime loads");
    let mut session = Session::builder(env).unwrap().commit_from_memory(&bytes).unwrap();
    let input = ndarray::arr2(&[[1.0f32, 2.0, 3.0], [-1.0, 0.0, 0.5]]);
    let outputs = session.run(detnas_infer::ort::inputs!["x" => TensorRef::from_array_view(&input).unwrap()]).unwrap();
    let (shape, data) = outputs["y"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(shape.to_vec(), vec![2, 2]);
    for r in 0..2 {
        for c in 0..2 {
            let expected = ((0..3).map(|k| input[[r, k]] * w[k * 2 + c]).sum::<f32>() + b[c]).max(0.0);
            assert!((data[r * 2 + c] - expected).abs() < 1e-6, "[{r},{c}] {} vs {expected}", data[r * 2 + c]);
        }
    }
    assert!(detnas_infer::runtime::version().unwrap().starts_with("1.3"));
}

#[test]
fn missing_runtime_is_a_one_line_error_naming_the_file_version_and_source() {
    let o = detnas_env(&["env"], &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")]);
    let needles = ["/nonexistent/libonnxruntime.so does not exist", "libonnxruntime.so.1", "ONNX Runtime 1.31"];
    assert_one_line_failure(&o, &[&needles[..], &["releases", "PyPI", "tools/setup-native.sh"]].concat());
}

/// `detnas env --json` with these variables (and none of the caller's ORT settings).
fn runtime_report(vars: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_detnas"));
    cmd.args(["env", "--json"]).env_remove("ORT_DYLIB_PATH").env_remove("LD_LIBRARY_PATH").envs(vars.iter().copied());
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn runtime_is_found_in_a_folder_the_loader_path_or_by_the_build_default_and_says_how() {
    let lib = crate::util::ort_library();
    let folder = lib.parent().unwrap().to_str().unwrap();
    // ORT_DYLIB_PATH may name the folder: the newest library in it is used.
    let r = runtime_report(&[("ORT_DYLIB_PATH", folder)]);
    assert_eq!(r["onnxruntime_found_by"], "ORT_DYLIB_PATH");
    assert!(r["onnxruntime_path"].as_str().unwrap().ends_with("libonnxruntime.so.1.31.1"), "{r}");
    // LD_LIBRARY_PATH comes before the default this workspace bakes into its own binaries; a
    // folder with only the versioned file (as in the PyPI wheel) is enough.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&lib, dir.path().join("libonnxruntime.so.1.31.1")).unwrap();
    let r = runtime_report(&[("LD_LIBRARY_PATH", dir.path().to_str().unwrap())]);
    assert_eq!(r["onnxruntime_found_by"], "system loader search", "{r}");
    assert!(r["onnxruntime_path"].as_str().unwrap().starts_with(dir.path().to_str().unwrap()), "{r}");
    // With nothing set, this workspace's binary falls back to the default it was built with.
    let r = runtime_report(&[]);
    assert_eq!(r["onnxruntime_found_by"], "build-time default", "{r}");
    assert_eq!(r["onnxruntime_version"], "1.31.1");
}

#[test]
fn copy_runtime_places_the_library_where_an_app_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app/bin");
    let o = detnas_env(&["env", "--copy-runtime", app.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let copied = app.join("libonnxruntime.so.1.31.1");
    assert_eq!(std::fs::metadata(&copied).unwrap().len(), std::fs::metadata(crate::util::ort_library()).unwrap().len());
    let names: Vec<_> = std::fs::read_dir(&app).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no partial file is left: {names:?}");
    let r = runtime_report(&[("ORT_DYLIB_PATH", app.to_str().unwrap())]);
    assert_eq!(r["onnxruntime_version"], "1.31.1");
}

#[test]
fn a_file_that_is_not_onnx_runtime_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let o = detnas_env(&["env"], &[("ORT_DYLIB_PATH", fake.to_str().unwrap())]);
    assert_one_line_failure(&o, &["could not be loaded", "libonnxruntime.so"]);
}

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
fn missing_runtime_is_a_one_line_error_naming_the_setup_script() {
    let o = detnas_env(&["env"], &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")]);
    assert_one_line_failure(&o, &["/nonexistent/libonnxruntime.so", "tools/setup-native.sh"]);
}

#[test]
fn a_file_that_is_not_onnx_runtime_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let o = detnas_env(&["env"], &[("ORT_DYLIB_PATH", fake.to_str().unwrap())]);
    assert_one_line_failure(&o, &["could not be loaded", "libonnxruntime.so"]);
}

//! CUDA as a machine without a GPU sees it: `detnas env` says what it found (and why libtorch's
//! CUDA library did not load, when it did not), `--device cuda:0` fails with one clear line where a
//! silent CPU fallback would mislead (training, `--strict` inference), and `tools/gpu-check.sh`
//! says there is no GPU and exits with its own status, 3.

use crate::util::{assert_one_line_failure, detnas, stderr, stdout};
use std::process::Command;

/// Whether this machine has a GPU (then the no-GPU assertions do not apply).
fn has_gpu() -> bool {
    Command::new("nvidia-smi").arg("-L").output().is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

#[test]
fn env_reports_the_cuda_state_and_why() {
    let o = detnas(&["env", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let env: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let loaded = env["libtorch_cuda_loaded"].as_bool().expect("a boolean");
    if loaded {
        assert!(env.get("libtorch_cuda_error").is_none(), "{env}");
    } else {
        // the loader's reason names the library it could not open
        let why = env["libtorch_cuda_error"].as_str().expect("a reason when not loaded");
        assert!(why.contains(".so"), "{why}");
    }
    assert!(env["cuda_devices"].as_i64().is_some() && env["cudnn_available"].is_boolean(), "{env}");
    let providers: Vec<&str> =
        env["onnxruntime_providers"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(providers.contains(&"CPUExecutionProvider"), "{providers:?}");
    if !has_gpu() {
        assert_eq!(env["cuda_devices"], 0, "{env}");
        assert_eq!(env["gpus"], serde_json::json!([]), "{env}");
    } else {
        assert!(!env["gpus"].as_array().unwrap().is_empty(), "nvidia-smi lists a GPU: {env}");
    }
}

#[test]
fn cuda_without_a_gpu_fails_with_one_line_where_a_fallback_would_mislead() {
    if has_gpu() {
        return;
    }
    let step = detnas(&["train", "bench-step", "--config", "models/neon-trees.toml", "--device", "cuda:0"]);
    assert_one_line_failure(&step, &["cuda:0", "0 CUDA device"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let detect = detnas(&[
        "detect",
        "models/neon-trees.onnx",
        "models/samples",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cuda:0",
        "--strict",
    ]);
    assert!(!detect.status.success());
    assert!(stderr(&detect).contains("cuda:0"), "{}", stderr(&detect));
}

#[test]
fn gpu_check_says_there_is_no_gpu_and_exits_3() {
    if has_gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("tools/gpu-check.sh")
        .arg(dir.path().join("check"))
        .env("DETNAS", env!("CARGO_BIN_EXE_detnas"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no usable GPU") && err.lines().count() == 1, "{err}");
    assert!(stdout(&o).is_empty(), "nothing was run: {}", stdout(&o));
    let bad = Command::new("tools/gpu-check.sh").args(["a", "b"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

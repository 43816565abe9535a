//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `detnas` binary built for these tests.
pub fn detnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detnas")).args(args).output().expect("detnas binary runs")
}

/// Runs `detnas` with extra environment variables.
pub fn detnas_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_detnas"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("detnas binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure with exactly one line of error output containing every `needle`.
pub fn assert_one_line_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
}

/// The project's Python (`.venv`, made by tools/setup-python.sh).
pub fn python(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = root.join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run tools/setup-python.sh", py.display());
    let out = Command::new(&py).args(args).current_dir(root).output().expect("python runs");
    assert!(out.status.success(), "python {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn write_f32(path: &Path, data: &[f32]) {
    std::fs::write(path, data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn read_i64(path: &Path) -> Vec<i64> {
    std::fs::read(path).unwrap().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

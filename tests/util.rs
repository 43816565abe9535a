//! Helpers shared by the integration tests.

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

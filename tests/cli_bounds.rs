//! Huge, negative and non-finite numbers end the `detnas` binary within seconds with exit 0, 1 or 2
//! and one line, never a panic (101) or an abort (134); threads are capped at the cores. The
//! parse-time refusal of every numeric flag is `src/cli/bounds_tests.rs`; these run the binary.

use crate::util::{assert_one_line_failure, assert_usage_error, stderr, stdout};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a refused or tiny run may take (debug build, 2 cores).
const LIMIT: Duration = Duration::from_secs(20);

const U64_MAX: &str = "18446744073709551615";

/// Runs `detnas` and fails if it is still running after [`LIMIT`] or ends by a panic or an abort.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("detnas binary runs");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("detnas {args:?} still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let code = o.status.code();
    assert!(matches!(code, Some(0..=2)), "detnas {args:?} ended with {code:?}: {}", stderr(&o));
    o
}

#[test]
fn huge_counts_and_genes_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let o = out.to_str().unwrap();
    for (args, needles) in [
        (vec!["arch", "sample", "--count", U64_MAX], ["--count", "from 1 to 100000"]),
        (vec!["arch", "sample", "--sampler", "binned", "--bins", U64_MAX], ["--bins", "from 1 to 10000"]),
        (vec!["arch", "info", "--arch", "coco-fpn-300m:fpn96", "--classes", "4294967296"], ["--classes", "to 10000"]),
        (vec!["arch", "info", "--arch", "coco-fpn-300m:head16x1000000000"], ["--arch", "head depth"]),
        (vec!["arch", "info", "--arch", "coco-fpn-300m:fpn100000"], ["--arch", "FPN width 100000"]),
        (vec!["export", "--arch", "coco-fpn-300m:fpn100000", "--out", o], ["--arch", "over the most, 1024"]),
        (vec!["export", "--arch", "coco-fpn-300m", "--out", o, "--fpn-channels", "4294967296"], ["--fpn-channels", ""]),
        (vec!["export", "--arch", "coco-fpn-300m", "--out", o, "--head-convs", "100000"], ["--head-convs", "to 16"]),
        (vec!["export", "--arch", "coco-fpn-300m", "--out", o, "--batch", "257"], ["--batch", "to 256"]),
        (vec!["export", "--arch", "coco-fpn-300m", "--out", o, "--input", "65536"], ["--input", "4096"]),
        (vec!["data", "synthetic", "--out", o, "--images", U64_MAX], ["--images", "to 100000"]),
        (vec!["data", "synthetic", "--out", o, "--objects", "1..4294967296"], ["--objects", "to 256"]),
        (vec!["arch", "sample", "--flops-max", "nan"], ["--flops-max", "nan"]),
        (vec!["arch", "sample", "--flops-min", "18446744073709552K"], ["--flops-min", "too large"]),
        (vec!["arch", "sample", "--seed=-1"], ["--seed", "-1"]),
    ] {
        assert_usage_error(&run(&args), &needles);
    }
    assert!(!out.exists(), "nothing written");
}

#[test]
#[cfg(feature = "search")]
fn search_population_and_recalibration_batches_are_bounded() {
    for (flag, value, range) in [
        ("--population", U64_MAX, "from 1 to 100000"),
        ("--recal-batches", "4294967296", "from 1 to 1000"),
        ("--generations", "0", "from 1 to 10000"),
        ("--latency-max", "inf", "at most 3600000 ms"),
    ] {
        let o = run(&["search", "--checkpoint", "none", "--lut", "none.json", flag, value]);
        assert_usage_error(&o, &[flag, range]);
    }
}

#[test]
#[cfg(feature = "infer")]
fn latency_samples_and_calibration_are_bounded() {
    let o = run(&["latency", "check", "--lut", "none.json", "--samples", U64_MAX]);
    assert_usage_error(&o, &["--samples", "from 1 to 100000"]);
    let o = run(&["latency", "build", "--out", "none.json", "--calibration", "4294967296"]);
    assert_usage_error(&o, &["--calibration", "from 0 to 100000"]);
}

#[test]
fn detectors_too_large_for_memory_are_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let classes: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let classes = classes.join(",");
    let genome = "coco-fpn-300m:fpn1024:head1024x16";
    let o = run(&["export", "--arch", genome, "--classes", &classes, "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_one_line_failure(&o, &["export", "GiB", "MAX_WEIGHT_BYTES"]);
    assert!(!out.exists());
}

#[test]
#[cfg(feature = "infer")]
fn bench_of_a_detector_too_large_to_run_is_refused() {
    let o = run(&["bench", "--arch", "coco-fpn-300m:fpn1024:head1024x16:4096"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_one_line_failure(&o, &["bench --arch", "4096x4096", "8.0 GiB limit (MAX_MODEL_BYTES)"]);
}

#[test]
#[cfg(feature = "infer")]
fn threads_are_capped_at_the_cores_and_never_wrap() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tiny = "coco-fpn-300m:fpn32:head32x1:sep:64";
    let o = run(&["bench", "--arch", tiny, "--threads", "1000", "--iters", "1", "--warmup", "0", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let warning = format!("warning: --threads 1000 is more than the {cores} core(s) of this machine: using {cores}");
    assert!(stderr(&o).contains(&warning), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["device"]["threads"], serde_json::json!(cores.to_string()), "{report}");
    for value in ["4294967297", "4294967296", "0", "-1", "nan"] {
        let o = run(&["bench", "--arch", tiny, &format!("--threads={value}"), "--iters", "1"]);
        assert_usage_error(&o, &["--threads", "from 1 to 4294967295"]);
    }
}

#[test]
fn seeds_and_budgets_take_the_whole_u64_range() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["arch", "sample", "--count", "2", "--seed", U64_MAX, "--flops-max", U64_MAX]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2);
    let data = dir.path().join("d");
    let args = ["data", "synthetic", "--out", data.to_str().unwrap(), "--images", "1", "--size", "64x64"];
    let o = run(&[&args[..], &["--sizes", "12..20", "--seed", U64_MAX]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let model = dir.path().join("m.onnx");
    let args = ["export", "--arch", "coco-fpn-300m:fpn32:head32x1:sep:64", "--seed", U64_MAX];
    let o = run(&[&args[..], &["--out", model.to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn bare_numbers_as_genomes_fail_with_one_line() {
    for value in ["0", "-1", "nan", "inf", "4294967296", U64_MAX] {
        let o = run(&["arch", "info", &format!("--arch={value}")]);
        assert_eq!(o.status.code(), Some(1), "{value}: {}", stderr(&o));
        assert_one_line_failure(&o, &[]);
    }
}

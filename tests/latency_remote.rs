//! `detnas latency serve` and `--remote` end to end on localhost: the server's answers (token, size
//! limit, bad requests, overload), tables built, checked and adapted and a model benched on it, and
//! a server killed in the middle of a build.

use crate::serve::http;
use crate::util::{assert_failure_ending_with, assert_one_line_failure, detnas_env, stderr, stdout};
use detnas_core::search::genome::Genome;
use detnas_core::space::ChannelShuffle;
use detnas_infer::latency::{LatencyTable, ModelKind, Remote, base_config, random_detector};
use detnas_infer::timing::TimingPlan;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "t0ken-for-tests";
const GENES: &str = "fpn_channels = [16]\nhead_channels = [16]\nhead_convs = [1]\nhead_conv = [\"separable\"]\n";
const FAST: [&str; 8] = ["--warmup", "1", "--min-iters", "2", "--min-seconds", "0", "--repetitions", "1"];

/// A `detnas latency serve` on a free port of localhost (1 thread), killed when dropped.
pub(crate) struct LatencyServer {
    child: Child,
    addr: String,
    stderr: tempfile::NamedTempFile,
}

impl LatencyServer {
    pub fn start(extra: &[&str]) -> LatencyServer {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_detnas"))
            .args(["latency", "serve", "--addr", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .env_remove("DETNAS_REMOTE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("detnas latency serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let mut server = LatencyServer { child, addr: String::new(), stderr };
        match line.trim_end().strip_prefix("listening on http://") {
            Some(addr) if !addr.ends_with(":0") => server.addr = addr.to_string(),
            _ => panic!("expected `listening on http://ADDR`, got {line:?}; stderr: {}", server.log()),
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LatencyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small random-weight detector (64x64, narrow FPN and head), as `--remote` sends them.
fn tiny_detector() -> Vec<u8> {
    let genome = Genome::parse(None, "coco-fpn-300m:fpn16:head16x1:sep:64").unwrap();
    let cfg = genome.detector_config(&base_config(1, ChannelShuffle::default())).unwrap();
    random_detector(&genome.space, &genome.arch, &cfg, 0, Default::default(), Default::default()).unwrap()
}

/// A usage error (exit 2) whose first line names every `needle`.
fn assert_conflict(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: ") && needles.iter().all(|n| first.contains(n)), "{err}");
}

fn plan_header(min_seconds: f64) -> String {
    format!(
        r#"{{"model":{{"kind":"detector"}},"plan":{{"warmup":1,"min_iters":2,"min_seconds":{min_seconds},"max_iters":100000}}}}"#
    )
}

#[test]
fn the_server_checks_its_token_bounds_requests_and_measures_one_model_at_a_time() {
    let server = LatencyServer::start(&["--token", TOKEN]);
    let auth = format!("Bearer {TOKEN}");
    let auth = ("Authorization", auth.as_str());
    http(&server.addr, "GET", "/v1/info", &[], b"").assert_error(401, "no token");
    http(&server.addr, "GET", "/v1/info", &[("Authorization", "Bearer nope")], b"").assert_error(401, "wrong token");
    let info = http(&server.addr, "GET", "/v1/info", &[auth], b"").json();
    assert_eq!(info["service"], "detnas latency server", "{info}");
    assert_eq!(info["fingerprint"]["threads"], 1, "{info}");
    assert_eq!(info["max_model_bytes"], 256u64 << 20, "{info}");

    let model = tiny_detector();
    let quick = plan_header(0.0);
    let m = http(&server.addr, "POST", "/v1/measure", &[auth], &model).assert_error(400, "no request header");
    assert!(m.contains("x-detnas-measure"), "{m}");
    let greedy = r#"{"model":{"kind":"detector"},"plan":{"warmup":5000,"min_iters":2,"min_seconds":0,"max_iters":2}}"#;
    let m = http(&server.addr, "POST", "/v1/measure", &[auth, ("x-detnas-measure", greedy)], &model)
        .assert_error(400, "a plan over the bounds");
    assert!(m.contains("bounds"), "{m}");
    let m = http(&server.addr, "POST", "/v1/measure", &[auth, ("x-detnas-measure", &quick)], b"not an onnx model")
        .assert_error(422, "not a model");
    assert!(m.contains("sent model"), "{m}");
    http(&server.addr, "GET", "/v2/anything", &[auth], b"").assert_error(404, "unknown route");

    // One measurement at a time: while a long one runs, another request gets 503 at once ...
    let long = {
        let (addr, model, auth) = (server.addr.clone(), model.clone(), format!("Bearer {TOKEN}"));
        std::thread::spawn(move || {
            let plan = plan_header(3.0);
            http(&addr, "POST", "/v1/measure", &[("Authorization", &auth), ("x-detnas-measure", &plan)], &model)
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let busy = http(&server.addr, "POST", "/v1/measure", &[auth, ("x-detnas-measure", &quick)], &model);
    busy.assert_error(503, "busy");
    assert_eq!(busy.header("retry-after"), Some("1"));
    // ... and the client waits for its turn instead of failing
    let remote = Remote::new(&server.url(), Some(TOKEN.into())).unwrap();
    let waited = remote.measure(&model, ModelKind::Detector, &TimingPlan::iterations(1, 2)).unwrap();
    assert_eq!(waited.latency.iterations, 2);
    assert!(waited.latency.p50_ms > 0.0 && waited.provider == "CPUExecutionProvider", "{waited:?}");
    let long = long.join().unwrap();
    assert_eq!(long.status, 200, "{}", String::from_utf8_lossy(&long.body));
    let long = long.json();
    let runs = long["latency"]["iterations"].as_u64().unwrap();
    let mean = long["latency"]["mean_ms"].as_f64().unwrap();
    assert!(runs >= 2 && runs as f64 * mean >= 2900.0, "3 s of timed runs: {long}");
    let log = server.log();
    assert_eq!(log.matches("measured a detector").count(), 2, "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged: {log}");

    // A model over the size limit is refused before it is read, here and by bench
    let small = LatencyServer::start(&["--max-model-mib", "1"]);
    let m = http(&small.addr, "POST", "/v1/measure", &[("x-detnas-measure", &quick)], &vec![0u8; 2 << 20])
        .assert_error(413, "over the size limit");
    assert!(m.contains("at most 1048576"), "{m}");
    let o = detnas_env(&["bench", "--arch", "coco-fpn-300m:fpn16:head16x1:sep:64", "--remote", &small.url()], &[]);
    assert_failure_ending_with(&o, &["latency server", "413"]);
}

#[test]
fn tables_built_checked_and_adapted_and_models_benched_on_a_server_are_measured_there() {
    let server = LatencyServer::start(&["--token", TOKEN]);
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let genes = dir.path().join("genes.toml");
    std::fs::write(&genes, GENES).unwrap();
    let lut = dir.path().join("lut.json");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let (genes_arg, lut_arg) = (p(&genes), p(&lut));
    let env = [("DETNAS_REMOTE_TOKEN", TOKEN)];

    // without the token: one line naming the server and the missing token
    let build: Vec<&str> = vec!["latency", "build", "--input", "64x64", "--genes", &genes_arg, "--calibration", "3"];
    let mut no_token = build.clone();
    no_token.extend(["--remote", &url, "--out", &lut_arg]);
    let o = Command::new(env!("CARGO_BIN_EXE_detnas")).args(&no_token).env_remove("DETNAS_REMOTE_TOKEN").output();
    assert_one_line_failure(&o.unwrap(), &["latency server", "401", "--remote-token"]);
    assert!(!lut.exists());
    // the server's device and threads apply: giving them here is a usage error
    let mut both = no_token.clone();
    both.extend(["--threads", "1"]);
    assert_conflict(&detnas_env(&both, &env), &["--threads", "--remote"]);

    let mut args = no_token.clone();
    args.extend(FAST);
    let o = detnas_env(&args, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("measuring on latency server {url}")), "{}", stderr(&o));
    let table = LatencyTable::load(&lut).unwrap();
    let info = Remote::new(&url, Some(TOKEN.into())).unwrap().info().unwrap();
    assert_eq!(table.fingerprint, info.fingerprint, "the table names the server's device and threads");
    let entries: usize = table.entries.values().map(|e| e.len()).sum();
    let log = server.log();
    assert!(log.matches("measured a graph").count() >= entries, "every part timed on the server: {log}");
    assert!(log.matches("measured a detector").count() >= 3, "calibration genomes timed on the server: {log}");

    // check on the server: the predictor scored against the repetition mean, with its ceiling
    let mut check = vec!["latency", "check", "--lut", &lut_arg, "--samples", "3", "--remote", &url, "--json"];
    check.extend(["--warmup", "1", "--min-iters", "2", "--min-seconds", "0", "--repetitions", "2"]);
    let o = detnas_env(&check, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["samples"], 3, "{report}");
    assert!(report["repeat_within_10pct"].is_number() && report["repeat_cv_pct"].is_number(), "{report}");
    assert!(report["genomes"].as_array().unwrap().iter().all(|g| g["repetitions_ms"].as_array().unwrap().len() == 2));

    // adapt on the server
    let adapted = p(&dir.path().join("adapted.json"));
    let mut adapt = vec!["latency", "adapt", "--lut", &lut_arg, "--samples", "3", "--remote", &url, "--out", &adapted];
    adapt.extend(FAST);
    let o = detnas_env(&adapt, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("measured on {url}")), "{}", stdout(&o));
    assert_eq!(LatencyTable::load(Path::new(&adapted)).unwrap().fingerprint, info.fingerprint);

    // bench: the model run timed there; the detect path is not
    let before = server.log().matches("measured a detector").count();
    let bench = ["bench", "--arch", "coco-fpn-300m:fpn16:head16x1:sep:64", "--iters", "3", "--remote", &url, "--json"];
    let o = detnas_env(&bench, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["model_run"]["iterations"], 3, "{report}");
    assert!(report["detect"].is_null(), "{report}");
    assert_eq!(server.log().matches("measured a detector").count(), before + 1);
    assert_conflict(&detnas_env(&[&bench[..], &["--tta", "flips"]].concat(), &env), &["--tta", "--remote"]);
}

#[test]
fn a_server_killed_in_the_middle_of_a_build_fails_it_cleanly() {
    let mut server = LatencyServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let genes = dir.path().join("genes.toml");
    std::fs::write(&genes, GENES).unwrap();
    let lut = dir.path().join("lut.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(["latency", "build", "--input", "64x64", "--genes", genes.to_str().unwrap(), "--remote", &server.url()])
        .args(["--warmup", "1", "--min-iters", "2", "--min-seconds", "0.05", "--repetitions", "3"])
        .args(["--out", lut.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.starts_with("round 1/3 [3/");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.starts_with("round 1/3 [3/")), "the build never got going: {seen:?}");
    server.kill();
    seen.extend(lines.map(Result::unwrap));
    let status = child.wait().unwrap();
    assert!(!status.success(), "{seen:?}");
    let last = seen.last().unwrap();
    assert!(last.starts_with(&format!("error: latency server {}: no answer", server.url())), "{seen:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing but the genes file: no table, no temporary");
}

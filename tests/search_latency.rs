//! `detnas search` under a latency budget on a genes supernet: the report files, the budget held
//! (predicted for every candidate, measured for the finalists), the impossible-budget error, the
//! fingerprint warning / strict failure, same seed same result, kill -9 + resume, and
//! `detnas export --search` reproducing the searched fitness.

use crate::latency_remote::LatencyServer;
use crate::util::{assert_failure_ending_with, assert_one_line_failure, detnas, stderr, stdout};
use detnas_infer::latency::LatencyTable;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A genes supernet trained long enough on 4 synthetic images to score above zero (AP50 of a few
/// percent on those images, which the searches here use as held-out data).
const CONFIG: &str = r#"
space = "detnas-300m"
batch_size = 2
iterations = 200
log_every = 50
checkpoint_every = 200

[detector]
input = { height = 96, width = 96 }
fpn_channels = 24
head_channels = 24
head_convs = 2
anchor_sizes = [12.0, 24.0, 48.0, 96.0, 192.0]

[optim]
lr = { kind = "warmup-step", base = 0.02, warmup_iters = 50, warmup_factor = 0.3333333333333333, milestones = [150], gamma = 0.1 }

[augment]
hflip = false
scale_min = 1.0

[genes]
fpn_channels = [16, 24]
head_channels = [16, 24]
head_convs = [1, 2]
head_conv = ["separable", "dense"]
input = [{ height = 64, width = 64 }, { height = 96, width = 96 }]
"#;

const GENES: &str =
    "fpn_channels = [16, 24]\nhead_channels = [16, 24]\nhead_convs = [1, 2]\nhead_conv = [\"separable\", \"dense\"]\n";

/// Training and held-out data, a trained genes supernet and a latency table, made once.
pub struct Setup {
    pub dir: PathBuf,
    pub val: String,
    pub lut: String,
    /// Fastest and slowest predicted genomes of the table (ms).
    pub range: (f64, f64),
}

pub fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
        let synth = |out: &str, n: &str, seed: &str| {
            let o = detnas(&[
                "data",
                "synthetic",
                "--out",
                &d(out),
                "--images",
                n,
                "--size",
                "96x96",
                "--classes",
                "1",
                "--seed",
                seed,
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
            stdout(&o).trim().to_string()
        };
        let train = synth("data", "4", "1");
        let val = train.clone();
        std::fs::write(d("cfg.toml"), CONFIG).unwrap();
        let o = detnas(&["train", "det-supernet", "--config", &d("cfg.toml"), "--coco", &train, "--out", &d("super")]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(d("genes.toml"), GENES).unwrap();
        let o = detnas(&[
            "latency",
            "build",
            "--input",
            "64x64,96x96",
            "--genes",
            &d("genes.toml"),
            "--classes",
            "1",
            "--threads",
            "1",
            "--calibration",
            "3",
            "--repetitions",
            "1",
            "--warmup",
            "1",
            "--min-iters",
            "3",
            "--min-seconds",
            "0",
            "--out",
            &d("lut.json"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let predict = |genome: &str| -> f64 {
            let o = detnas(&["latency", "predict", "--lut", &d("lut.json"), "--arch", genome, "--json"]);
            assert!(o.status.success(), "{}", stderr(&o));
            serde_json::from_str::<Value>(&stdout(&o)).unwrap()["latency_ms"].as_f64().unwrap()
        };
        let fast = predict("00000000000000000000:fpn16:head16x1:sep:64");
        let slow = predict("33333333333333333333:fpn24:head24x2:dense:96");
        // under load the two predictions may come out in either order
        Setup { val, lut: d("lut.json"), range: (fast.min(slow), fast.max(slow)), dir }
    })
}

/// Arguments of a small search (6 x `generations`) into `out` under `budget` with table `lut`.
fn search_args(s: &Setup, out: &Path, budget: &str, lut: &str, generations: &str) -> Vec<String> {
    let supernet = s.dir.join("super");
    let mut v: Vec<&str> = vec!["search", "--checkpoint", supernet.to_str().unwrap(), "--coco", &s.val];
    v.extend(["--lut", lut, "--latency-max", budget, "--out", out.to_str().unwrap(), "--generations", generations]);
    v.extend(["--population", "6", "--top-k", "3", "--mutations", "2", "--crossovers", "2"]);
    v.extend(["--recal-batches", "2", "--seed", "5", "--metric", "ap50"]);
    v.into_iter().map(String::from).collect()
}

fn run(args: &[String], extra: &[&str]) -> std::process::Output {
    let all: Vec<&str> = args.iter().map(String::as_str).chain(extra.iter().copied()).collect();
    detnas(&all)
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// Candidates and fitness of a search folder, without measured latencies.
fn outcome(dir: &Path) -> Vec<(String, String)> {
    read(&dir.join("candidates.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["candidate"].as_str().unwrap().to_string(), r["fitness"].to_string()))
        .collect()
}

#[test]
fn a_latency_budgeted_joint_search_reports_holds_its_budget_and_exports_what_it_scored() {
    let s = setup();
    let budget = s.range.0 + 0.8 * (s.range.1 - s.range.0);
    let budget_text = format!("{budget:.3}ms");
    let out = s.dir.join("s1");
    let o = run(&search_args(s, &out, &budget_text, &s.lut, "2"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ms predicted") && stdout(&o).contains("Pareto front"), "{}", stdout(&o));

    for f in
        ["state.json", "candidates.csv", "candidates.json", "pareto.csv", "pareto.png", "best.json", "finalists.json"]
    {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let rows = read(&out.join("candidates.json"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 12, "2 generations of 6");
    let mut inputs = std::collections::BTreeSet::new();
    for r in rows {
        let c = r["candidate"].as_str().unwrap();
        assert_eq!(c.split(':').count(), 5, "a joint candidate: {c}");
        inputs.insert(c.rsplit(':').next().unwrap().to_string());
        assert!(r["predicted_ms"].as_f64().unwrap() <= budget, "{r}");
        assert!(r["detector_flops"].as_u64().unwrap() > r["backbone_flops"].as_u64().unwrap());
    }
    assert!(!inputs.is_empty());
    let csv = std::fs::read_to_string(out.join("candidates.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);
    let finalists = read(&out.join("finalists.json"));
    let list = finalists["finalists"].as_array().unwrap();
    assert_eq!(list.len(), 3, "the top-k");
    for f in list {
        assert!(f["predicted_ms"].as_f64().unwrap() <= budget, "{f}");
        assert!(out.join(f["bn"].as_str().unwrap()).is_file());
    }
    let png = image::open(out.join("pareto.png")).unwrap();
    assert!(png.width() > 400);

    // the best finalist exports with its recalibrated BN and scores what the search scored
    let model = s.dir.join("best.onnx");
    let o = detnas(&["export", "--search", out.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("with BN statistics"), "{}", stderr(&o));
    let best = &list[0];
    let o = detnas(&["inspect", model.to_str().unwrap(), "--json"]);
    let meta = serde_json::from_str::<Value>(&stdout(&o)).unwrap()["metadata"].clone();
    assert_eq!(meta["detnas.genome"], best["candidate"], "the export records its genome");

    // the trained export checked against the table on real images: its genome's prediction (what
    // the search used) beside its model run measured there, under the check's protocol
    let images = s.dir.join("data/images");
    let mut check = vec!["latency", "check", "--lut", &s.lut, "--samples", "3", "--json"];
    check.extend(["--warmup", "1", "--min-iters", "2", "--min-seconds", "0", "--repetitions", "2"]);
    check.extend(["--model", model.to_str().unwrap(), "--images", images.to_str().unwrap()]);
    let o = detnas(&check);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = serde_json::from_str::<Value>(&stdout(&o)).unwrap();
    let trained = &report["trained"]["models"][0];
    assert_eq!(trained["genome"], best["candidate"], "{report}");
    let predicted = trained["predicted_ms"].as_f64().unwrap();
    assert!((predicted - best["predicted_ms"].as_f64().unwrap()).abs() < 1e-6, "{trained} vs {best}");
    assert!(trained["measured_ms"].as_f64().unwrap() > 0.0 && trained["repetitions_ms"].as_array().unwrap().len() == 2);
    assert_eq!(report["samples"], 3, "the random genomes are checked beside it");
    let o = detnas(&["latency", "check", "--lut", &s.lut, "--model", model.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "--model needs --images: {}", stderr(&o));
    let again = format!("{}/./{}", s.dir.display(), model.file_name().unwrap().to_str().unwrap());
    let (m, i) = (model.to_str().unwrap(), images.to_str().unwrap());
    let o = detnas(&["latency", "check", "--lut", &s.lut, "--model", m, "--model", &again, "--images", i]);
    assert_one_line_failure(&o, &["are the same file"]);
    let plain = s.dir.join("plain.onnx");
    let arch = best["candidate"].as_str().unwrap();
    let supernet = s.dir.join("super");
    let o = detnas(&[
        "export",
        "--checkpoint",
        supernet.to_str().unwrap(),
        "--arch",
        arch,
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(&model).unwrap(), std::fs::read(&plain).unwrap(), "the recalibrated BN is in the export");
    let ap50 = |model: &Path, name: &str| -> f64 {
        let det = s.dir.join(name);
        let images = s.dir.join("data/images");
        let (m, i, d) = (model.to_str().unwrap(), images.to_str().unwrap(), det.to_str().unwrap());
        let o = detnas(&["detect", m, i, "--out", d, "--ids-from", &s.val]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = detnas(&["eval", "--gt", &s.val, "--dt", det.join("detections.json").to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()["stats"][1].as_f64().unwrap().max(0.0)
    };
    let fitness = best["fitness"].as_f64().unwrap();
    assert!(fitness > 0.0, "the supernet must score above zero for this check to mean anything");
    let exported = ap50(&model, "det-best");
    assert!((exported - fitness).abs() <= 1e-3, "exported AP50 {exported} vs searched fitness {fitness}");
    assert_ne!(ap50(&plain, "det-plain"), exported, "without the recalibrated BN the model is another one");
    assert_eq!(read(&out.join("best.json"))["candidate"], best["candidate"], "best.json is the selected finalist");
    let o = detnas(&["export", "--search", out.to_str().unwrap(), "--rank", "9", "--out", model.to_str().unwrap()]);
    assert_one_line_failure(&o, &["no finalist of rank 9"]);

    // --measure: finalists built and timed for real; only those within budget are kept (a generous
    // budget here: timings on a loaded test machine are noisy)
    let generous = format!("{:.3}ms", s.range.1 * 3.0);
    let measured = s.dir.join("s1-measured");
    let o = run(&search_args(s, &measured, &generous, &s.lut, "1"), &["--measure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("measured ") && stdout(&o).contains("ms measured"), "{}", stderr(&o));
    let limit = s.range.1 * 3.0 + 1e-3;
    let kept = read(&measured.join("finalists.json"));
    let kept = kept["finalists"].as_array().unwrap();
    assert!(!kept.is_empty());
    assert!(kept.iter().all(|f| f["measured_ms"].as_f64().unwrap() <= limit), "{kept:?}");
}

#[test]
fn finalists_measured_on_a_latency_server_and_a_failed_measurement_loses_nothing() {
    let s = setup();
    let budget = format!("{:.3}ms", s.range.1 * 3.0);
    let out = s.dir.join("remote");
    let args = search_args(s, &out, &budget, &s.lut, "1");
    // a server that refuses every finalist (its size limit is under a model's): the search reports
    // the failure, writes its finalists and report with predicted latencies, then fails
    let refusing = LatencyServer::start(&["--max-model-mib", "1"]);
    let o = run(&args, &["--measure", "--remote", &refusing.url()]);
    assert_failure_ending_with(&o, &["the finalists were not measured", "same command again", "413"]);
    let finalists = read(&out.join("finalists.json"));
    let finalists = finalists["finalists"].as_array().unwrap();
    assert!(!finalists.is_empty());
    assert!(finalists.iter().all(|f| f["measured_ms"].is_null() && f["predicted_ms"].is_number()), "{finalists:?}");
    assert!(out.join("candidates.csv").exists());
    let evaluations = || read(&out.join("state.json"))["log"].as_array().unwrap().len();
    let before = evaluations();
    // the same command against a server that measures: resumed, nothing evaluated again, measured there
    let server = LatencyServer::start(&[]);
    let o = run(&args, &["--measure", "--remote", &server.url()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let measured = read(&out.join("finalists.json"));
    let measured = measured["finalists"].as_array().unwrap();
    assert!(!measured.is_empty() && measured.iter().all(|f| f["measured_ms"].is_number()), "{measured:?}");
    let log = server.log();
    assert!(log.matches("measured a detector").count() >= finalists.len(), "{log}");
    assert_eq!(evaluations(), before, "nothing evaluated again");
}

#[test]
fn same_seed_same_search_and_a_killed_search_resumes_to_it() {
    let s = setup();
    let budget = format!("{:.3}ms", s.range.1 * 2.0);
    let a = s.dir.join("seed-a");
    let b = s.dir.join("seed-b");
    for out in [&a, &b] {
        let o = run(&search_args(s, out, &budget, &s.lut, "2"), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(outcome(&a), outcome(&b));

    let killed = s.dir.join("killed");
    let args = search_args(s, &killed, &budget, &s.lut, "2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_detnas"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let evaluated = || {
        std::fs::read(killed.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map_or(0, |v| v["log"].as_array().map_or(0, Vec::len))
    };
    while evaluated() < 3 && start.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = evaluated();
    assert!((3..12).contains(&at_kill), "killed after {at_kill} evaluations");
    let o = run(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outcome(&killed), outcome(&a));
}

#[test]
fn impossible_budget_and_foreign_table_are_explained() {
    let s = setup();
    let out = s.dir.join("impossible");
    let o = run(&search_args(s, &out, "0.001ms", &s.lut, "1"), &[]);
    assert_one_line_failure(&o, &["within 0.001 ms", "the fastest", "predicted at"]);

    let mut t = LatencyTable::load(Path::new(&s.lut)).unwrap();
    t.fingerprint.cpu = "Another CPU 9000".into();
    let foreign = s.dir.join("foreign.json");
    t.save(&foreign).unwrap();
    let budget = format!("{:.3}ms", s.range.1 * 2.0);
    let o = run(&search_args(s, &s.dir.join("foreign"), &budget, foreign.to_str().unwrap(), "1"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().filter(|l| l.contains("another machine")).count(), 1, "{err}");
    let o = run(&search_args(s, &s.dir.join("strict"), &budget, foreign.to_str().unwrap(), "1"), &["--strict"]);
    assert_one_line_failure(&o, &["another machine", "Another CPU 9000"]);

    // --genes restricts the detector genes: one value each is a backbone-only search at that detector
    let fixed = s.dir.join("fixed.toml");
    std::fs::write(
        &fixed,
        "fpn_channels = [16]\nhead_channels = [16]\nhead_convs = [1]\nhead_conv = [\"separable\"]\n",
    )
    .unwrap();
    let out = s.dir.join("fixed");
    let o = run(&search_args(s, &out, &budget, &s.lut, "1"), &["--genes", fixed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = read(&out.join("candidates.json"));
    for r in rows.as_array().unwrap() {
        let c = r["candidate"].as_str().unwrap();
        assert!(c.contains(":fpn16:head16x1:sep:"), "{c}");
    }
    std::fs::write(&fixed, "fpn_channels = [32]\n").unwrap();
    let o = run(&search_args(s, &s.dir.join("fixed2"), &budget, &s.lut, "1"), &["--genes", fixed.to_str().unwrap()]);
    assert_one_line_failure(&o, &["fixed.toml", "fpn_channels were not trained"]);

    // finalists are timed on the table's device or not at all (no silent CPU fallback)
    let mut t = LatencyTable::load(Path::new(&s.lut)).unwrap();
    t.fingerprint.device = "cuda:0".into();
    let gpu = s.dir.join("gpu.json");
    t.save(&gpu).unwrap();
    let started = Instant::now();
    let o = run(&search_args(s, &s.dir.join("gpu"), &budget, gpu.to_str().unwrap(), "1"), &["--measure"]);
    assert_one_line_failure(&o, &["cuda:0"]);
    assert!(!s.dir.join("gpu/state.json").exists(), "refused before searching ({:?})", started.elapsed());
}

#[test]
fn an_int8_budget_search_runs_on_an_int8_table_and_refuses_a_float_one() {
    let s = setup();
    let d = |p: &str| s.dir.join(p).to_str().unwrap().to_string();
    let (genes, lut8) = (d("genes.toml"), d("lut-int8.json"));
    let mut args = vec!["latency", "build", "--input", "64x64,96x96", "--genes", &genes];
    args.extend(["--classes", "1", "--threads", "1", "--calibration", "3", "--precision", "int8"]);
    args.extend(["--warmup", "1", "--min-iters", "3", "--min-seconds", "0", "--repetitions", "1", "--out", &lut8]);
    let o = detnas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let t8 = LatencyTable::load(Path::new(&lut8)).unwrap();
    let t32 = LatencyTable::load(Path::new(&s.lut)).unwrap();
    assert_eq!((t8.fingerprint.precision.as_str(), t32.fingerprint.precision.as_str()), ("int8", "fp32"));
    assert_eq!(t8.entries["96x96"].len(), t32.entries["96x96"].len(), "the same parts at both precisions");
    assert_ne!(t8.hash, t32.hash);

    let budget = format!("{:.3}ms", s.range.1 * 2.0);
    let o = run(&search_args(s, &s.dir.join("p32"), &budget, &s.lut, "1"), &["--precision", "int8"]);
    assert_one_line_failure(&o, &["--precision int8", "fp32", "latency build --precision int8"]);
    let out = s.dir.join("p8");
    let o = run(&search_args(s, &out, &budget, &lut8, "1"), &["--precision", "int8", "--measure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("measured"), "finalists timed as INT8 models: {}", stderr(&o));
    assert!(!read(&out.join("candidates.json")).as_array().unwrap().is_empty());
}

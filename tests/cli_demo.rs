//! `detnas demo --quick`: every step end to end into one folder, the report and its files, a
//! resume that skips finished steps, and the folder guards (foreign files, another seed or
//! fitness). The default fitness is training-free (no supernet step); the supernet's search is
//! the study's (`cli_study`).

use crate::util::{assert_one_line_failure, detnas, stderr};
use serde_json::Value;

#[test]
fn a_quick_demo_runs_every_step_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = out.to_str().unwrap();
    let run = detnas(&["demo", "--quick", "--out", o]);
    assert!(run.status.success(), "{}", stderr(&run));
    for f in ["report.md", "pareto.png", "commands.sh", "searched.onnx", "baseline.onnx", "latency.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let state: Value = serde_json::from_slice(&std::fs::read(out.join("demo.json")).unwrap()).unwrap();
    let steps: Vec<&str> = state["steps"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(steps, ["data", "latency table", "budget", "search", "retrain", "export and detect", "report"]);
    let data = &state["data"];
    let budget = data["budget_ms"].as_f64().unwrap();
    assert!(budget > 0.0);
    let outcomes = data["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0]["genome"], data["searched"]);
    assert_eq!(outcomes[1]["genome"], data["baseline"]);
    for o in outcomes {
        assert!(o["predicted_ms"].as_f64().unwrap() <= budget + 1e-9, "within the budget: {o}");
        assert!(o["model_run_ms"].as_f64().unwrap() > 0.0 && (0.0..=1.0).contains(&o["ap50"].as_f64().unwrap()));
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("--quick") && report.contains(data["searched"].as_str().unwrap()), "{report}");
    assert!(report.contains("scored by `params`"), "the fitness is named: {report}");
    let commands = std::fs::read_to_string(out.join("commands.sh")).unwrap();
    for c in ["detnas latency build", "detnas search", "--fitness params", "detnas export", "detnas detect"] {
        assert!(commands.contains(c), "{c} not in commands.sh");
    }
    assert!(!commands.contains("det-supernet"), "no supernet is trained for a training-free fitness");
    let detected = std::fs::read_dir(out.join("detect/searched/images")).unwrap().count();
    assert_eq!(detected, 4, "annotated copies of the held-out images");

    // a resume finds every step done
    let again = detnas(&["demo", "--quick", "--out", o, "--resume"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stderr(&again).matches("done before, skipped").count(), 7, "{}", stderr(&again));
    // the folder is guarded
    assert_one_line_failure(
        &detnas(&["demo", "--quick", "--out", o]),
        &["holds results of an earlier `detnas demo` run", "--resume"],
    );
    assert_one_line_failure(&detnas(&["demo", "--quick", "--out", o, "--resume", "--seed", "3"]), &["other settings"]);
    let supernet = ["demo", "--quick", "--out", o, "--resume", "--fitness", "supernet"];
    assert_one_line_failure(&detnas(&supernet), &["other settings"]);
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let f = foreign.to_str().unwrap();
    assert_one_line_failure(
        &detnas(&["demo", "--quick", "--out", f, "--overwrite"]),
        &["files detnas did not write (notes.txt)"],
    );
    assert_one_line_failure(&detnas(&["demo", "--quick", "--out", f, "--resume"]), &["files detnas did not write"]);
    assert!(foreign.join("notes.txt").is_file(), "nothing removed");
}

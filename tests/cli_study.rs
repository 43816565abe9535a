//! `detnas study --quick` on the user's own COCO data: every step, the report, the CSVs and the
//! plots, with the statistics read back from the files.

use crate::util::{detnas, stderr};

#[test]
fn a_quick_study_on_user_data_writes_its_report_csvs_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    for (out, seed, n) in [("train", "4", "8"), ("val", "5", "4")] {
        let args = ["data", "synthetic", "--out", &d(out), "--images", n, "--size", "96x96", "--classes", "2"];
        let o = detnas(&[&args[..], &["--seed", seed]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (train, val) = (d("train/annotations.json"), d("val/annotations.json"));
    // sizes out of range are refused before any work
    for (flag, value, needle) in [("--inputs", "100", "multiples of 32"), ("--inputs", "4096", "to 2048")] {
        let o = detnas(&["study", "--quick", "--coco", &train, "--val", &val, flag, value, "--out", &d("bad")]);
        assert!(!o.status.success() && stderr(&o).contains(needle), "{flag} {value}: {}", stderr(&o));
    }
    let o = detnas(&["study", "--quick", "--genomes", "100000", "--out", &d("bad")]);
    assert!(!o.status.success() && stderr(&o).contains("--genomes"), "{}", stderr(&o));
    assert!(!dir.path().join("bad").exists(), "nothing written for refused flags");
    let o = detnas(&["study", "--quick", "--coco", &train, "--out", &d("s")]);
    assert!(!o.status.success() && stderr(&o).contains("--val"), "--coco needs --val: {}", stderr(&o));
    let args = ["study", "--quick", "--coco", &train, "--val", &val, "--inputs", "64,96", "--seeds", "1"];
    let o = detnas(&[&args[..], &["--out", &d("s")]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("s");
    for f in ["report.md", "fidelity.csv", "contenders.csv", "search_budget.csv", "scatter.png", "pareto.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let fidelity = std::fs::read_to_string(out.join("fidelity.csv")).unwrap();
    assert_eq!(fidelity.lines().count(), 1 + 5, "4 genomes under the budget and the median one: {fidelity}");
    assert!(fidelity.lines().next().unwrap().contains("inherited_ap50_recal20_ema"));
    let contenders = std::fs::read_to_string(out.join("contenders.csv")).unwrap();
    for role in ["searched,", "all shufflenet_3x3,", "median random,"] {
        assert!(contenders.contains(role), "{role} missing: {contenders}");
    }
    assert!(contenders.contains("00000000000000000000:"), "the all-3x3 backbone");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["Kendall τ", "Spearman ρ", "(b) Does the search win?", "(c) Search budget", "2 classes", &train] {
        assert!(report.contains(needle), "`{needle}` missing from the report");
    }
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(state["steps"].as_array().unwrap().len(), 11);
    // the yardstick's second seed, every training-free fitness and the ladder are in the report
    assert!(fidelity.lines().next().unwrap().contains("standalone_ap50_seed2"));
    for needle in
        ["Seed-to-seed ceiling", "madnas", "zen", "params", "flops", "searched by madnas", "(d) Sanity ladder"]
    {
        assert!(report.contains(needle), "`{needle}` missing from the report");
    }
    assert!(state["data"]["ladder"]["crippled_supernet"].as_array().unwrap().len() == 4);
    // the ladder's middle rungs: one elastic dimension at a time, then all
    let rungs = state["data"]["rungs"].as_array().unwrap();
    let dims: Vec<&str> = rungs.iter().map(|r| r["dimension"].as_str().unwrap()).collect();
    assert_eq!(dims, ["backbone choices", "FPN width"], "a quick study's two rungs");
    assert!(report.contains("| FPN width |"), "rungs missing from the report");
    // the method ablation adds supernets to the finished study against the same yardstick
    let bad = detnas(&[&args[..], &["--out", &d("s"), "--resume", "--ablate", "fair:0"]].concat());
    assert!(!bad.status.success() && stderr(&bad).contains("--ablate"), "{}", stderr(&bad));
    let o = detnas(&[&args[..], &["--out", &d("s"), "--resume", "--ablate", "no-affine:20:0.01"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("(e) How the supernet trains"), "{report}");
    let row = "| no-affine, base learning rate 0.01 | 20 x 1 |";
    let line = report.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("`{row}` missing: {report}"));
    assert!(line.contains("(1 seed; inherited "), "the searched genome's cell: {line}");
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(again["data"]["pool"], state["data"]["pool"], "the yardstick is kept");
    assert_eq!(again["data"]["ablation"].as_array().unwrap().len(), 1);
    assert!(out.join("ablation/no-affine-20-lr0.01/state.json").is_file());
    // the study's search ran in the ablation's supernet and its genome was retrained (one seed here)
    let searched = &again["data"]["ablation"][0]["search"];
    assert_eq!(searched["standalone_ap50"].as_array().unwrap().len(), 1, "{searched}");
    let commands: Vec<&str> = again["commands"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let in_ablation = |c: &&str| {
        c.contains("search --checkpoint")
            && c.contains("ablation/no-affine-20-lr0.01 ")
            && c.contains("ablation/no-affine-20-lr0.01-search")
    };
    assert!(commands.iter().any(in_ablation), "no search in the ablation's supernet: {commands:?}");
    let retrain = format!("--arch {}", searched["genome"].as_str().unwrap());
    assert!(commands.iter().any(|c| c.contains("no-affine-20-lr0.01-searched-seed0") && c.contains(&retrain)));
    assert!(out.join("ablation/no-affine-20-lr0.01-search").is_dir());
    assert!(out.join("ablation/no-affine-20-lr0.01-searched-seed0/state.json").is_file());
    let verdict = "- no-affine, base learning rate 0.01 (20 x 1): its searched genome `";
    assert!(report.contains(verdict), "`{verdict}` missing: {report}");
    assert!(!out.join("data").exists(), "no synthetic set is made for user data");
}

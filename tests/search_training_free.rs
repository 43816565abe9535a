//! Training-free search (`detnas search --fitness madnas|zen|params|flops`): no checkpoint and no
//! data; the space, detector and genes come from the latency table or a training configuration.
//! Each search holds its budget, scores what the library's score functions compute, records the
//! fitness that scored it, resumes, refuses a state scored by another fitness, and leaves nothing
//! to export. Uses the latency table and configuration that `search_latency` makes.

use crate::search_latency::setup;
use crate::util::{assert_one_line_failure, detnas, stderr, stdout};
use detnas_core::SearchSpace;
use detnas_core::search::genome::Candidate;
use detnas_core::search::training_free;
use detnas_infer::latency::{LatencyTable, base_config};
use serde_json::Value;
use std::path::Path;

fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// A small search (`population` 6, two generations) with `extra` flags into `out`.
fn search(fitness: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["search", "--fitness", fitness, "--out", out.to_str().unwrap(), "--generations", "2"];
    a.extend(["--population", "6", "--top-k", "3", "--mutations", "2", "--crossovers", "2", "--seed", "3"]);
    a.extend(extra);
    detnas(&a)
}

#[test]
fn a_madnas_search_holds_a_latency_budget_scores_by_the_library_resumes_and_exports_nothing() {
    let s = setup();
    let budget = s.range.0 + 0.5 * (s.range.1 - s.range.0);
    let budget_text = format!("{budget}ms");
    let out = s.dir.join("tf-madnas");
    let flags = ["--lut", s.lut.as_str(), "--latency-max", budget_text.as_str()];
    let o = search("madnas", &out, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = LatencyTable::load(Path::new(&s.lut)).unwrap();
    let base = base_config(table.classes, table.shuffle);
    let space = SearchSpace::by_name(&table.space).unwrap();
    let rows = read(&out.join("candidates.json"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 12);
    for r in rows {
        assert_eq!(r["scored_by"], "madnas");
        assert!(r["predicted_ms"].as_f64().unwrap() <= budget, "{r} over {budget}");
        // the table's gene space is searched, and the fitness is the library's score
        let c = Candidate::parse(r["candidate"].as_str().unwrap()).unwrap();
        let genes = c.detector_genes().expect("joint candidates over the table's genes");
        assert!(table.genes.contains(&genes), "{genes} outside the table's genes");
        let want = training_free::madnas(&space, &c.arch, &c.detector_config(&base)).unwrap().total;
        assert!((r["fitness"].as_f64().unwrap() - want).abs() < 1e-9 * want.abs(), "{r}: {want}");
    }
    let csv = std::fs::read_to_string(out.join("candidates.csv")).unwrap();
    assert!(csv.starts_with("candidate,") && csv.lines().next().unwrap().ends_with(",scored_by"), "{csv}");
    let finalists = read(&out.join("finalists.json"));
    assert!(finalists.get("checkpoint").is_none(), "{finalists}");
    assert!(finalists["finalists"].as_array().unwrap().iter().all(|f| f.get("bn").is_none()));
    assert!(!out.join("bn").exists(), "no weights, no BN folder");
    let best = read(&out.join("best.json"))["candidate"].as_str().unwrap().to_string();
    assert!(stdout(&o).contains(&best));

    // a rerun resumes: nothing evaluated again, the same best
    let again = search("madnas", &out, &flags);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stderr(&again).contains("] "), "re-evaluated: {}", stderr(&again));
    assert_eq!(read(&out.join("best.json"))["candidate"].as_str(), Some(best.as_str()));
    // another fitness on the same state is another search
    let other = search("params", &out, &flags);
    assert!(!other.status.success() && stderr(&other).contains("different configuration"), "{}", stderr(&other));
    // nothing to export, said plainly
    let model = s.dir.join("tf.onnx");
    let o = detnas(&["export", "--search", out.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    assert_one_line_failure(&o, &["training-free", "detnas train det --arch"]);
}

#[test]
fn every_training_free_fitness_searches_a_configuration_under_a_flops_budget() {
    let s = setup();
    let config = s.dir.join("cfg.toml");
    let space = SearchSpace::detnas_300m();
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let base: detnas_core::detector::DetectorConfig = cfg["detector"].clone().try_into().unwrap();
    for fitness in ["zen", "params", "flops"] {
        let out = s.dir.join(format!("tf-{fitness}"));
        let o = search(fitness, &out, &["--config", config.to_str().unwrap(), "--flops-max", "300M"]);
        assert!(o.status.success(), "{fitness}: {}", stderr(&o));
        let rows = read(&out.join("candidates.json"));
        for r in rows.as_array().unwrap() {
            assert_eq!(r["scored_by"], fitness);
            assert!(r["backbone_flops"].as_u64().unwrap() > 0);
            let c = Candidate::parse(r["candidate"].as_str().unwrap()).unwrap();
            let genes = c.detector_genes().expect("the configuration's [genes] are searched");
            assert!([64, 96].contains(&genes.input.height), "{genes}: an input of the configuration's genes");
            let cfg = c.detector_config(&base);
            let fit = r["fitness"].as_f64().unwrap();
            match fitness {
                "params" => assert_eq!(fit, training_free::params(&space, &c.arch, &cfg) as f64),
                "flops" => assert_eq!(fit, training_free::flops(&space, &c.arch, &cfg).unwrap() as f64),
                _ => assert!(fit.is_finite(), "{r}"),
            }
        }
    }
}

#[test]
fn bad_training_free_options_are_clear_errors() {
    let s = setup();
    let out = s.dir.join("tf-bad");
    let o = search("entropy", &out, &[]);
    assert!(!o.status.success() && stderr(&o).contains("madnas"), "{}", stderr(&o));
    let o = detnas(&["search", "--out", out.to_str().unwrap()]);
    assert_one_line_failure(&o, &["--checkpoint", "training-free"]);
    let o = search("madnas", &out, &["--metric", "ap50"]);
    assert_one_line_failure(&o, &["--metric", "--fitness madnas"]);
    let o = search("madnas", &out, &["--coco", &s.val]);
    assert_one_line_failure(&o, &["--coco", "no data"]);
    let o = search("madnas", &out, &["--space", "detnas-1.3g", "--lut", &s.lut, "--latency-max", "5ms"]);
    assert_one_line_failure(&o, &["detnas-1.3g", "detnas-300m"]);
    let supernet = s.dir.join("super");
    let o = search("madnas", &out, &["--checkpoint", supernet.to_str().unwrap(), "--space", "detnas-300m"]);
    assert!(!o.status.success() && stderr(&o).contains("--space"), "{}", stderr(&o));
}

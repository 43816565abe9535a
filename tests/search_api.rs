//! The search as a library (`detnas_search`), without the binary: a latency-budgeted joint search
//! through `run_with`, its events and outcome against its report files, a rerun resuming it,
//! bad options refused before any work, and the recorded command line reproducing the search.
//! The supernet and latency table are the ones `search_latency` makes (made once per test run).

use crate::search_latency::setup;
use crate::util::{detnas, stderr};
use detnas_core::search::evolution::EvolutionConfig;
use detnas_search::{Event, FitnessChoice, LatencyBudget, Metric, SearchOptions};
use serde_json::Value;
use std::path::Path;

/// A small latency-budgeted joint search (6 x `generations`) of the shared supernet into `out`.
fn options(out: &Path, max_ms: f64, generations: usize) -> SearchOptions {
    let s = setup();
    let mut o = SearchOptions::new(s.dir.join("super"), out);
    o.coco = Some(s.val.clone().into());
    o.latency = Some(LatencyBudget {
        table: s.lut.clone().into(),
        max_ms,
        precision: None,
        measure: false,
        strict: false,
        remote: None,
    });
    o.evolution = EvolutionConfig {
        population: 6,
        generations,
        top_k: 3,
        mutations: 2,
        crossovers: 2,
        seed: 11,
        ..Default::default()
    };
    o.fitness = FitnessChoice::Supernet { metric: Metric::Ap50, recal_batches: 2, ema: false };
    o
}

fn candidates(dir: &Path) -> Vec<(String, f64)> {
    let rows: Value = serde_json::from_slice(&std::fs::read(dir.join("candidates.json")).unwrap()).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["candidate"].as_str().unwrap().into(), r["fitness"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_latency_budgeted_joint_search_runs_through_the_api_and_resumes() {
    let s = setup();
    let budget = s.range.0 + 0.7 * (s.range.1 - s.range.0);
    let out = s.dir.join("api-1");
    let opts = options(&out, budget, 1);
    let (mut started, mut evaluated, mut generations) = (None, 0, 0);
    let outcome = detnas_search::run_with(&opts, &mut |e| match e {
        Event::Started { total, done } => started = Some((total, done)),
        Event::Evaluated { candidate, fitness, backbone_flops, .. } => {
            assert!(candidate.detector_genes().is_some(), "a joint candidate: {candidate}");
            assert!(fitness >= 0.0 && backbone_flops > 0);
            evaluated += 1;
        }
        Event::Generation(_) => generations += 1,
        Event::Notice(_) => {}
    })
    .unwrap();
    assert_eq!(started, Some((6, 0)));
    assert_eq!((evaluated, generations), (6, 1));
    assert_eq!(outcome.evolution.evaluations, 6);
    assert_eq!(outcome.candidates.len(), 6);
    for row in &outcome.candidates {
        assert!(row.predicted_ms.unwrap() <= budget, "{row:?} over {budget}");
    }
    assert_eq!(outcome.finalists.len(), 3);
    assert!(
        outcome
            .finalists
            .iter()
            .all(|f| f.bn.as_ref().is_some_and(|bn| out.join(bn).is_file()) && f.predicted_ms.unwrap() <= budget)
    );
    assert!(!outcome.pareto_front.is_empty() && outcome.pareto_front.iter().all(|&i| i < 6));
    assert_eq!(outcome.selected.finalist, outcome.finalists[0]);
    assert_eq!(outcome.selected.finalist.candidate, outcome.evolution.top_k[0].arch.to_string());
    // the outcome is what the report files say
    let on_disk = candidates(&out);
    let in_memory: Vec<(String, f64)> = outcome.candidates.iter().map(|r| (r.candidate.clone(), r.fitness)).collect();
    assert_eq!(on_disk, in_memory);
    let best: Value = serde_json::from_slice(&std::fs::read(out.join("best.json")).unwrap()).unwrap();
    assert_eq!(best["candidate"].as_str(), Some(outcome.selected.finalist.candidate.as_str()));

    // run again on its folder: the state is resumed, nothing is evaluated twice
    let (mut resumed_from, mut again_evaluated) = (None, 0);
    let again = detnas_search::run_with(&opts, &mut |e| match e {
        Event::Started { done, .. } => resumed_from = Some(done),
        Event::Evaluated { .. } => again_evaluated += 1,
        _ => {}
    })
    .unwrap();
    assert_eq!((resumed_from, again_evaluated), (Some(6), 0));
    assert_eq!(again.finalists, outcome.finalists);
    assert_eq!(candidates(&out), on_disk);

    // the command line a pipeline records runs the same search through the binary
    let cli_out = s.dir.join("api-1-cli");
    let mut cli = options(&cli_out, budget, 1);
    cli.out = Some(cli_out.clone());
    let args: Vec<String> = std::iter::once("search".to_string()).chain(cli.command_line()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = detnas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(candidates(&cli_out), on_disk, "same options, same search");
}

#[test]
fn bad_options_are_refused_before_any_work() {
    let s = setup();
    let out = s.dir.join("api-bad");
    for (what, tweak) in [
        (
            "latency",
            Box::new(|o: &mut SearchOptions| o.latency.as_mut().unwrap().max_ms = f64::NAN) as Box<dyn Fn(&mut _)>,
        ),
        ("population", Box::new(|o: &mut SearchOptions| o.evolution.population = 0)),
        (
            "recal",
            Box::new(|o: &mut SearchOptions| {
                o.fitness = FitnessChoice::Supernet { metric: Metric::Ap, recal_batches: 0, ema: false }
            }),
        ),
        ("precision", Box::new(|o: &mut SearchOptions| o.latency.as_mut().unwrap().precision = Some("fp8".into()))),
    ] {
        let mut o = options(&out, 1.0, 1);
        tweak(&mut o);
        let e = detnas_search::run(&o).unwrap_err().to_string();
        assert!(!e.is_empty(), "{what}");
        assert!(!out.exists(), "{what}: nothing written before the options are checked");
    }
    // an impossible budget names the fastest candidate, before any evaluation
    let o = options(&out, s.range.0 / 100.0, 1);
    let e = format!("{:#}", detnas_search::run(&o).unwrap_err());
    assert!(e.contains("no candidate of detnas-300m runs within") && e.contains("fastest"), "{e}");
    assert!(!out.join("candidates.json").exists());
}

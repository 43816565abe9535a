use super::*;
use crate::search::genome::{Candidate, DetectorGenes, GeneSpace};
use crate::space::cost::InputSize;
use crate::space::{Choice, StageSpec};
use std::cell::RefCell;

/// 8 layers x 4 choices = 65 536 paths: small enough to brute-force the optimum.
fn tiny_space() -> SearchSpace {
    let mut s = SearchSpace::detnas_300m();
    s.name = "tiny".into();
    s.stages = vec![
        StageSpec { blocks: 2, channels: 32 },
        StageSpec { blocks: 2, channels: 64 },
        StageSpec { blocks: 2, channels: 128 },
        StageSpec { blocks: 2, channels: 256 },
    ];
    s
}

/// Separable synthetic accuracy: a seeded weight per (layer, choice), larger kernels mostly better,
/// so the unconstrained optimum is expensive and the budget binds.
fn weights(layers: usize) -> Vec<[f64; 4]> {
    let mut rng = Rng::seed(99);
    (0..layers).map(|_| [0, 1, 2, 3].map(|c| c as f64 * 0.3 + rng.unit())).collect()
}

fn score(w: &[[f64; 4]], arch: &Arch) -> f64 {
    arch.choices().iter().zip(w).map(|(c, row)| row[c.index() as usize]).sum()
}

fn all_archs(layers: usize) -> impl Iterator<Item = Arch> {
    (0..4u32.pow(layers as u32)).map(move |mut n| {
        Arch::new(
            (0..layers)
                .map(|_| {
                    let c = Choice::from_index((n % 4) as u8).unwrap();
                    n /= 4;
                    c
                })
                .collect(),
        )
    })
}

fn flops_limit(space: &SearchSpace, max: u64) -> Box<dyn Constraint> {
    Box::new(FlopsConstraint {
        table: FlopsTable::new(space, InputSize::IMAGENET).unwrap(),
        convention: Convention::Backbone,
        max,
        context: format!("{} 224x224", space.name),
    })
}

fn budget(space: &SearchSpace) -> u64 {
    let table = FlopsTable::new(space, InputSize::IMAGENET).unwrap();
    let (lo, hi) = table.range(Convention::Backbone);
    lo + (hi - lo) * 45 / 100
}

fn config() -> EvolutionConfig {
    EvolutionConfig { generations: 30, seed: 11, ..EvolutionConfig::default() }
}

#[test]
fn finds_the_brute_force_optimum_under_the_budget() {
    let space = tiny_space();
    let w = weights(space.num_layers());
    let max = budget(&space);
    let table = FlopsTable::new(&space, InputSize::IMAGENET).unwrap();
    let (best_arch, best) = all_archs(8)
        .filter(|a| table.flops(a, Convention::Backbone) <= max)
        .map(|a| {
            let s = score(&w, &a);
            (a, s)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    let unconstrained = all_archs(8).map(|a| score(&w, &a)).fold(f64::MIN, f64::max);
    assert!(unconstrained > best + 1e-9, "the budget must bind for this test to mean anything");

    let mut engine = Evolution::new(space.clone(), config(), vec![flops_limit(&space, max)]).unwrap();
    let outcome = engine.run(&mut |a: &Arch| Ok::<_, String>(score(&w, a)), |_| {}).unwrap();
    assert_eq!(outcome.best.arch.arch, best_arch);
    assert!((outcome.best.fitness - best).abs() < 1e-12);
}

#[test]
fn never_violates_a_constraint_and_never_evaluates_twice() {
    let space = SearchSpace::detnas_300m();
    let w = weights(space.num_layers());
    let table = FlopsTable::new(&space, InputSize::IMAGENET).unwrap();
    let max = 280_000_000;
    let seen = RefCell::new(Vec::new());
    let mut fitness = |a: &Arch| {
        seen.borrow_mut().push(a.clone());
        Ok::<_, String>(score(&w, a))
    };
    let cfg = EvolutionConfig { generations: 6, seed: 3, ..EvolutionConfig::default() };
    let mut engine = Evolution::new(space.clone(), cfg, vec![flops_limit(&space, max)]).unwrap();
    let outcome = engine.run(&mut fitness, |_| {}).unwrap();
    let seen = seen.into_inner();
    assert_eq!(seen.len(), 6 * 50);
    assert_eq!(outcome.evaluations, seen.len());
    let unique: BTreeSet<String> = seen.iter().map(Arch::compact).collect();
    assert_eq!(unique.len(), seen.len(), "an architecture was evaluated twice");
    assert!(seen.iter().all(|a| table.flops(a, Convention::Backbone) <= max));
    assert!(outcome.rejections.constraint.get("flops").copied().unwrap_or(0) > 0);
    let text = outcome.rejections.to_string();
    assert!(text.starts_with("rejected: ") && text.contains(" by flops") && !text.contains('{'), "{text}");
    // the top-k is sorted and elitist: the best never gets worse across generations
    let bests: Vec<f64> = outcome.history.iter().map(|h| h.best.fitness).collect();
    assert!(bests.windows(2).all(|p| p[1] >= p[0]), "{bests:?}");
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let space = tiny_space();
    let w = weights(space.num_layers());
    let max = budget(&space);
    let dir = tempfile::tempdir().unwrap();

    let full_path = dir.path().join("full.json");
    let mut full = Evolution::new(space.clone(), config(), vec![flops_limit(&space, max)])
        .unwrap()
        .with_state_file(&full_path)
        .unwrap();
    let expected = full.run(&mut |a: &Arch| Ok::<_, String>(score(&w, a)), |_| {}).unwrap();

    let path = dir.path().join("killed.json");
    let mut calls = 0;
    let mut dying = |a: &Arch| {
        calls += 1;
        if calls == 137 { Err("killed".to_string()) } else { Ok(score(&w, a)) }
    };
    let mut first = Evolution::new(space.clone(), config(), vec![flops_limit(&space, max)])
        .unwrap()
        .with_state_file(&path)
        .unwrap();
    let err = first.run(&mut dying, |_| {}).unwrap_err();
    assert!(err.to_string().contains("killed"));
    let saved = load_state(&path).unwrap();
    assert_eq!(saved.evaluated.len(), 136);
    drop(first);

    let mut resumed_calls = 0;
    let mut resumed = Evolution::new(space.clone(), config(), vec![flops_limit(&space, max)])
        .unwrap()
        .with_state_file(&path)
        .unwrap();
    let got = resumed
        .run(
            &mut |a: &Arch| {
                resumed_calls += 1;
                Ok::<_, String>(score(&w, a))
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(got, expected);
    assert_eq!(136 + resumed_calls, expected.evaluations);
    assert_eq!(load_state(&path).unwrap(), load_state(&full_path).unwrap());
}

#[test]
fn resuming_with_another_config_is_refused() {
    let space = tiny_space();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let cfg = EvolutionConfig { generations: 2, ..config() };
    Evolution::new(space.clone(), cfg.clone(), vec![flops_limit(&space, budget(&space))])
        .unwrap()
        .with_state_file(&path)
        .unwrap()
        .run(&mut |_: &Arch| Ok::<_, String>(1.0), |_| {})
        .unwrap();
    let other_budget = Evolution::new(space.clone(), cfg.clone(), vec![flops_limit(&space, budget(&space) - 1)])
        .unwrap()
        .with_state_file(&path);
    assert!(matches!(other_budget, Err(CoreError::State { .. })));
    let other_seed = EvolutionConfig { seed: 12, ..cfg };
    let err = Evolution::new(space.clone(), other_seed, vec![]).unwrap().with_state_file(&path).err().unwrap();
    assert!(err.to_string().contains("different configuration"), "{err}");
}

/// Regression (fuzz target `search_state`, seed 0, case 223): a state whose population had been
/// emptied mid-run made the resumed search index an empty top-k and panic. A state this search
/// could not have written is refused naming the file; the untouched state still resumes.
#[test]
fn resuming_an_edited_state_is_refused_naming_the_file() {
    use serde_json::{Value, json};
    let space = tiny_space();
    let w = weights(space.num_layers());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let make = || Evolution::new(space.clone(), config(), vec![flops_limit(&space, budget(&space))]).unwrap();
    let mut calls = 0;
    let mut dying = |a: &Arch| {
        calls += 1;
        if calls == 60 { Err("killed".to_string()) } else { Ok(score(&w, a)) }
    };
    make().with_state_file(&path).unwrap().run(&mut dying, |_| {}).unwrap_err();
    let saved: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((saved["generation"].as_u64(), saved["top_k"].as_array().map(Vec::len)), (Some(1), Some(10)));
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 8] = [
        ("0 candidates in the population (expected 1 to 50)", |s| s["population"] = json!([])),
        ("51 candidates in the population", |s| {
            let first = s["population"][0].clone();
            s["population"].as_array_mut().unwrap().push(first);
        }),
        ("generation 31 is past the run's 30 generations", |s| s["generation"] = json!(31)),
        ("11 parents in top_k (at most 10)", |s| {
            let first = s["top_k"][0].clone();
            s["top_k"].as_array_mut().unwrap().push(first);
        }),
        ("architecture has 3 choices but space `tiny` has 8 layers", |s| s["population"][0] = json!("1,2,3")),
        // Regression (seed 0, case 1617): an edited parent's fitness made the outcome's best wrong.
        ("is not among the evaluated", |s| s["top_k"][1]["fitness"] = json!(-1e308)),
        ("top_k is not sorted best first", |s| {
            let parents = s["top_k"].as_array_mut().unwrap();
            parents.swap(0, 1);
        }),
        ("has detector genes (a backbone search)", |s| {
            s["population"][1] = json!("01230123:fpn64:head64x1:sep:64x64");
        }),
    ];
    for (expected, edit) in edits {
        let mut state = saved.clone();
        edit(&mut state);
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let err = make().with_state_file(&path).err().unwrap().to_string();
        assert!(err.contains(expected) && err.contains(&path.display().to_string()), "{expected}: {err}");
    }
    std::fs::write(&path, serde_json::to_vec(&saved).unwrap()).unwrap();
    let outcome = make().with_state_file(&path).unwrap().run(&mut |a: &Arch| Ok::<_, String>(score(&w, a)), |_| {});
    assert_eq!(outcome.unwrap().evaluations, 30 * 50);
}

/// Regression (fuzz target `search_state`, seed 0, case 1055): rejection counts at `u64::MAX` in
/// a resumed state overflowed (a panic in debug builds). They saturate.
#[test]
fn rejection_counts_of_a_resumed_state_saturate() {
    let space = tiny_space();
    let w = weights(space.num_layers());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let cfg = EvolutionConfig { generations: 3, ..config() };
    let make = || Evolution::new(space.clone(), cfg.clone(), vec![flops_limit(&space, budget(&space))]).unwrap();
    let mut state = make().state().clone();
    state.rejections.duplicate = u64::MAX;
    state.rejections.constraint.insert("flops".into(), u64::MAX);
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let outcome = make().with_state_file(&path).unwrap().run(&mut |a: &Arch| Ok::<_, String>(score(&w, a)), |_| {});
    let rejections = outcome.unwrap().rejections;
    assert_eq!((rejections.duplicate, rejections.constraint["flops"]), (u64::MAX, u64::MAX));
}

#[test]
fn impossible_budget_is_reported() {
    let space = tiny_space();
    let err = Evolution::new(space.clone(), config(), vec![flops_limit(&space, 1)]).err().unwrap();
    assert!(matches!(err, CoreError::Unsatisfiable { .. }), "{err}");
}

#[test]
fn exhausted_space_reports_shortfall_instead_of_spinning() {
    // 2 layers, 4 choices: 16 archs in all, populations of 10 for 3 generations cannot all be new.
    let mut space = tiny_space();
    space.stages = vec![StageSpec { blocks: 2, channels: 32 }];
    let cfg = EvolutionConfig { population: 10, top_k: 3, mutations: 4, crossovers: 4, generations: 3, ..config() };
    let mut engine = Evolution::new(space, cfg, vec![]).unwrap();
    let result = engine.run(&mut |a: &Arch| Ok::<_, String>(a.compact().parse::<f64>().unwrap()), |_| {});
    match result {
        Ok(outcome) => {
            assert!(outcome.evaluations <= 16);
            assert!(outcome.history.iter().any(|h| h.shortfall > 0));
        }
        Err(e) => assert!(matches!(e, CoreError::Unsatisfiable { .. }), "{e}"),
    }
}

#[test]
fn config_validation() {
    let bad = EvolutionConfig { mutations: 40, crossovers: 20, ..EvolutionConfig::default() };
    assert!(bad.validate().is_err());
    let bad = EvolutionConfig { mutation_prob: 1.5, ..EvolutionConfig::default() };
    assert!(bad.validate().is_err());
    assert_eq!(EvolutionConfig::default().random_fill(), 10);
}

/// A joint oracle: backbone score plus a reward for wider, deeper heads and larger inputs.
struct JointScore(Vec<[f64; 4]>);

impl Fitness for JointScore {
    type Error = String;
    fn evaluate(&mut self, _: &Arch) -> std::result::Result<f64, String> {
        Err("a joint search scores candidates".into())
    }
    fn evaluate_candidate(&mut self, c: &Candidate) -> std::result::Result<f64, String> {
        let g = c.detector_genes().ok_or("no genes")?;
        let head = (g.head_channels as f64).ln() + g.head_convs as f64 * 0.5 + (g.fpn_channels as f64).ln();
        Ok(score(&self.0, c) + head + g.input.height as f64 / 100.0)
    }
}

/// A latency-like cost of the detector genes, as a hard constraint on candidates.
struct HeadCost(f64);

impl HeadCost {
    fn of(g: &DetectorGenes) -> f64 {
        let conv = if g.head_conv == crate::detector::HeadConv::Dense { 9.0 } else { 1.5 };
        let area = (g.input.height * g.input.width) as f64 / 1e4;
        area * (g.head_channels as f64 * g.head_convs as f64 * conv + g.fpn_channels as f64) / 100.0
    }
}

impl Constraint for HeadCost {
    fn name(&self) -> &str {
        "latency"
    }
    fn describe(&self) -> String {
        format!("head cost <= {}", self.0)
    }
    fn check(&self, _: &Arch) -> std::result::Result<(), String> {
        Ok(())
    }
    fn check_candidate(&self, c: &Candidate) -> std::result::Result<(), String> {
        let cost = HeadCost::of(&c.detector_genes().ok_or("no genes")?);
        if cost <= self.0 { Ok(()) } else { Err(format!("{cost} > {}", self.0)) }
    }
}

#[test]
fn joint_search_explores_detector_genes_under_a_candidate_constraint_and_resumes_exactly() {
    let space = tiny_space();
    let genes = GeneSpace::default();
    let costs: Vec<f64> = {
        let mut rng = Rng::seed(5);
        (0..2000).map(|_| HeadCost::of(&genes.sample(&mut rng))).collect()
    };
    let mut sorted = costs.clone();
    sorted.sort_by(f64::total_cmp);
    let limit = sorted[sorted.len() / 4];
    let cfg = EvolutionConfig { generations: 8, seed: 4, ..EvolutionConfig::default() };
    let make =
        || Evolution::joint(space.clone(), Some(genes.clone()), cfg.clone(), vec![Box::new(HeadCost(limit))]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let full_path = dir.path().join("full.json");
    let expected = make().with_state_file(&full_path).unwrap().run(&mut JointScore(weights(8)), |_| {}).unwrap();
    let state = load_state(&full_path).unwrap();
    assert_eq!(state.log.len(), expected.evaluations);
    assert!(state.log.windows(2).all(|w| w[0].generation <= w[1].generation));
    let mut distinct_inputs = BTreeSet::new();
    for e in &state.log {
        let g = e.candidate.detector_genes().expect("every candidate carries genes");
        assert!(genes.contains(&g) && HeadCost::of(&g) <= limit, "{}", e.candidate);
        distinct_inputs.insert(g.input.height);
    }
    assert!(distinct_inputs.len() > 1, "the resolution gene is explored");
    // evolution beats the median random candidate by a clear margin
    let mut fitness: Vec<f64> = state.log.iter().filter(|e| e.generation == 0).map(|e| e.fitness).collect();
    fitness.sort_by(f64::total_cmp);
    assert!(expected.best.fitness > fitness[fitness.len() / 2] + 0.5, "{} vs {fitness:?}", expected.best.fitness);

    // killed after 70 evaluations, resumed: identical outcome and state
    let path = dir.path().join("killed.json");
    struct Dying(JointScore, usize);
    impl Fitness for Dying {
        type Error = String;
        fn evaluate(&mut self, a: &Arch) -> std::result::Result<f64, String> {
            self.0.evaluate(a)
        }
        fn evaluate_candidate(&mut self, c: &Candidate) -> std::result::Result<f64, String> {
            self.1 += 1;
            if self.1 == 71 { Err("killed".into()) } else { self.0.evaluate_candidate(c) }
        }
    }
    let err = make().with_state_file(&path).unwrap().run(&mut Dying(JointScore(weights(8)), 0), |_| {}).unwrap_err();
    assert!(err.to_string().contains("killed"));
    let got = make().with_state_file(&path).unwrap().run(&mut JointScore(weights(8)), |_| {}).unwrap();
    assert_eq!(got, expected);
    assert_eq!(load_state(&path).unwrap(), state);
}

#[test]
fn latency_constraint_filters_candidates_and_its_source_enters_the_config_hash() {
    let space = tiny_space();
    let genes = GeneSpace::default();
    let limit = 40.0;
    let latency = |source: &str| -> Box<dyn Constraint> {
        Box::new(LatencyConstraint {
            predict: Box::new(|c: &Candidate| c.detector_genes().map(|g| HeadCost::of(&g)).ok_or("no genes".into())),
            max_ms: limit,
            source: source.into(),
        })
    };
    let cfg = EvolutionConfig { generations: 2, population: 20, mutations: 5, crossovers: 5, ..config() };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let seen = RefCell::new(Vec::new());
    let mut fitness = JointScore(weights(8));
    let mut engine = Evolution::joint(space.clone(), Some(genes.clone()), cfg.clone(), vec![latency("table a")])
        .unwrap()
        .with_state_file(&path)
        .unwrap();
    engine
        .run(&mut fitness, |p| {
            if let Progress::Evaluated { arch, .. } = p {
                seen.borrow_mut().push(arch.clone())
            }
        })
        .unwrap();
    let seen = seen.into_inner();
    assert_eq!(seen.len(), 40);
    assert!(seen.iter().all(|c| HeadCost::of(&c.detector_genes().unwrap()) <= limit));
    assert!(engine.state().rejections.constraint["latency"] > 0);
    let other = Evolution::joint(space, Some(genes), cfg, vec![latency("table b")]).unwrap().with_state_file(&path);
    assert!(other.err().unwrap().to_string().contains("different configuration"));
}

//! Robustness of the parsers of `detnas-core` on damaged files ([`detnas_core::mutate`]): COCO
//! ground truth and results (loaded and evaluated), checkpoint states and search states (loaded
//! and resumed). Every case must end in `Ok` or the parser's typed error naming the file, within
//! its heap budget; `tools/fuzz.sh` runs many more cases than the suite.

use detnas_core::checkpoint::{self, CheckpointKind, CheckpointState, LogEntry, LossPart};
use detnas_core::coco::{Detections, EvalParams, GroundTruth, evaluate};
use detnas_core::detector::{DetectorConfig, HeadConv};
use detnas_core::mutate::{AllocBudget, Case, Outcome, Settings, TrackingAlloc, fuzz};
use detnas_core::search::evolution::{Constraint, Evolution, EvolutionConfig, FlopsConstraint, LatencyConstraint};
use detnas_core::search::genome::{Candidate, GeneSpace};
use detnas_core::space::arch::Arch;
use detnas_core::space::cost::{Convention, FlopsTable};
use detnas_core::space::shape::InputSize;
use detnas_core::space::{SearchSpace, StageSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// JSON loaders hold the text, its parsed form and the typed values: a small multiple of the
/// input, plus the evaluation's fixed tables.
const JSON_BUDGET: AllocBudget = AllocBudget { fixed: 64 << 20, per_input_byte: 256 };

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/coco")
}

/// An error must name the file it is about.
fn names(error: &dyn std::fmt::Display, path: &Path) -> Result<Outcome, String> {
    let text = error.to_string();
    if text.contains(&path.display().to_string()) {
        Ok(Outcome::Rejected)
    } else {
        Err(format!("error without the file name: {text}"))
    }
}

#[test]
fn fuzz_coco_ground_truth_and_results() {
    // Corpus: the golden pycocotools fixtures, ground truth (even entries) and results (odd).
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures()).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    let mut corpus = Vec::new();
    for case in &cases {
        corpus.push(std::fs::read(case.join("gt.json")).unwrap());
        corpus.push(std::fs::read(case.join("dt.json")).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let (gt_path, dt_path) = (dir.path().join("gt.json"), dir.path().join("dt.json"));
    let check = move |case: &Case| {
        let fixture = &cases[case.entry / 2];
        let mutated_gt = case.entry.is_multiple_of(2);
        let (target, other) = if mutated_gt { (&gt_path, &dt_path) } else { (&dt_path, &gt_path) };
        std::fs::write(target, &case.bytes).unwrap();
        std::fs::copy(fixture.join(if mutated_gt { "dt.json" } else { "gt.json" }), other).unwrap();
        let gt = match GroundTruth::load(&gt_path) {
            Ok(gt) => gt,
            Err(e) if mutated_gt => return names(&e, &gt_path),
            Err(e) => return Err(format!("the fixture's own ground truth failed: {e}")),
        };
        let dt = match Detections::load(&dt_path, &gt) {
            Ok(dt) => dt,
            Err(e) => return names(&e, &dt_path),
        };
        let stats = evaluate(&gt, &dt, &EvalParams::default());
        // Each number is a mean over buckets with ground truth, or -1 when there is none.
        match stats.stats.iter().find(|&&s| s != -1.0 && !(0.0..=1.0).contains(&s)) {
            Some(s) => Err(format!("statistic {s} is neither -1 nor within [0, 1]: {:?}", stats.stats)),
            None => Ok(Outcome::Accepted),
        }
    };
    let summary = fuzz("coco_ground_truth_and_results", corpus, JSON_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

fn checkpoint_state(kind: CheckpointKind, arch: Option<&str>) -> Vec<u8> {
    let detector = DetectorConfig {
        class_names: vec!["tree".into(), "bush".into()],
        category_ids: vec![3, 7],
        ..Default::default()
    };
    let config = serde_json::json!({"detector": detector, "iterations": 100, "lr": 0.01, "batch": 4});
    let config = if kind == CheckpointKind::Classifier { serde_json::json!({"lr": 0.1, "epochs": 3}) } else { config };
    let mut state = CheckpointState::new(kind, "detnas-300m", arch.map(str::to_owned), &config);
    state.step = 40;
    state.weights = "weights-40.safetensors".into();
    state.optimizer = "optimizer-40.safetensors".into();
    state.skipped_steps = 1;
    for step in [20, 40] {
        let parts = vec![LossPart { name: "cls".into(), value: 0.7 }, LossPart { name: "box".into(), value: 0.31 }];
        let entry = LogEntry { step, loss: 1.01, parts, lr: 0.01, images_per_s: 12.5, data_wait_ms: 0.4 };
        state.history.push(entry);
    }
    state.note_bad_image("img/broken.jpg: cannot decode jpeg image: truncated".into());
    serde_json::to_vec_pretty(&state).unwrap()
}

#[test]
fn fuzz_checkpoint_state() {
    let corpus = vec![
        checkpoint_state(CheckpointKind::Retinanet, Some("23113213311133203333")),
        checkpoint_state(CheckpointKind::FasterRcnn, None),
        checkpoint_state(CheckpointKind::Classifier, None),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weights-40.safetensors"), b"not read by load_state").unwrap();
    let folder = dir.path().to_path_buf();
    let state_file = folder.join(checkpoint::STATE_FILE);
    let check = move |case: &Case| {
        std::fs::write(&state_file, &case.bytes).unwrap();
        let state = match checkpoint::load_state(&folder) {
            Ok(state) => state,
            Err(e) => return names(&e, &state_file),
        };
        if state.kind != CheckpointKind::Classifier
            && let Err(e) = state.detector_config(&folder)
        {
            names(&e, &state_file)?;
        }
        if let Err(e) = state.arch_or(&folder, None) {
            names(&e, &folder)?;
        }
        Ok(Outcome::Accepted)
    };
    let summary = fuzz("checkpoint_state", corpus, JSON_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

/// 8 layers: small enough that a search of a few generations takes milliseconds.
fn tiny_space() -> SearchSpace {
    let mut s = SearchSpace::detnas_300m();
    s.name = "tiny".into();
    s.stages = [32, 64, 128, 256].map(|channels| StageSpec { blocks: 2, channels }).to_vec();
    s
}

fn genes() -> GeneSpace {
    GeneSpace {
        fpn_channels: vec![32, 64],
        head_channels: vec![32, 64],
        head_convs: vec![1, 2],
        head_conv: vec![HeadConv::Separable, HeadConv::Dense],
        input: vec![InputSize::new(64, 64), InputSize::new(96, 96)],
    }
}

/// The search engine of a state file: backbone-only under a FLOPs budget, or joint (with
/// detector genes) under a latency-like constraint on the genes.
fn engine(joint: bool) -> Evolution<'static> {
    let space = tiny_space();
    let table = FlopsTable::new(&space, InputSize::IMAGENET).unwrap();
    let (lo, hi) = table.range(Convention::Backbone);
    let flops =
        FlopsConstraint { table, convention: Convention::Backbone, max: lo + (hi - lo) / 2, context: "tiny".into() };
    let config = EvolutionConfig {
        population: 6,
        generations: 3,
        top_k: 3,
        mutations: 2,
        crossovers: 2,
        seed: 9,
        ..Default::default()
    };
    let mut constraints: Vec<Box<dyn Constraint>> = vec![Box::new(flops)];
    if joint {
        let predict = |c: &Candidate| -> Result<f64, String> {
            let g = c.detector_genes().ok_or("no genes")?;
            Ok((g.input.height * g.input.width) as f64 * (g.head_channels * g.head_convs as u64) as f64 / 1e5)
        };
        constraints.push(Box::new(LatencyConstraint {
            predict: Box::new(predict),
            max_ms: 50.0,
            source: "head cost".into(),
        }));
    }
    Evolution::joint(space, joint.then(genes), config, constraints).unwrap()
}

/// A deterministic fitness over whatever the candidate holds.
fn fitness(c: &Candidate) -> Result<f64, String> {
    let backbone: f64 =
        c.arch.choices().iter().enumerate().map(|(i, ch)| f64::from(ch.index()) * (i as f64 + 1.0)).sum();
    Ok(backbone + c.detector_genes().map_or(0.0, |g| g.head_channels as f64 / 64.0))
}

struct Scores;

impl detnas_core::search::evolution::Fitness for Scores {
    type Error = String;
    fn evaluate(&mut self, arch: &Arch) -> Result<f64, String> {
        fitness(&Candidate::backbone(arch.clone()))
    }
    fn evaluate_candidate(&mut self, c: &Candidate) -> Result<f64, String> {
        fitness(c)
    }
}

/// State files as a search writes them: after its first, a middle and its last evaluation.
fn search_states(joint: bool, dir: &Path) -> Vec<Vec<u8>> {
    let path = dir.join(if joint { "joint.json" } else { "backbone.json" });
    let mut snapshots = Vec::new();
    let mut engine = engine(joint).with_state_file(&path).unwrap();
    let mut count = 0;
    engine
        .run(&mut Scores, |_| {
            count += 1;
            if count % 7 == 1 {
                snapshots.push(std::fs::read(&path).unwrap());
            }
        })
        .unwrap();
    snapshots.push(std::fs::read(&path).unwrap());
    snapshots
}

#[test]
fn fuzz_search_state() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = search_states(false, dir.path());
    let split = backbone.len();
    let corpus: Vec<Vec<u8>> = backbone.into_iter().chain(search_states(true, dir.path())).collect();
    let path = dir.path().join("resumed.json");
    let check = move |case: &Case| {
        std::fs::write(&path, &case.bytes).unwrap();
        let mut engine = match engine(case.entry >= split).with_state_file(&path) {
            Ok(engine) => engine,
            Err(e) => return names(&e, &path),
        };
        match engine.run(&mut Scores, |_| {}) {
            Ok(outcome) if outcome.top_k.windows(2).any(|p| p[0].fitness < p[1].fitness) => {
                Err(format!("top-k not sorted by fitness: {:?}", outcome.top_k))
            }
            Ok(_) => Ok(Outcome::Accepted),
            // A typed error of the search itself (an unsatisfiable population, ...).
            Err(_) => Ok(Outcome::Rejected),
        }
    };
    let summary = fuzz("search_state", corpus, JSON_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

#[test]
fn a_case_over_its_heap_budget_fails() {
    let tight = AllocBudget { fixed: 1 << 20, per_input_byte: 0 };
    let out_dir = std::env::temp_dir().join("detnas-fuzz-budget-test");
    let settings =
        Settings { cases: 1, seed: 0, seconds: None, only: None, case_timeout: Duration::from_secs(60), out_dir };
    let result = std::panic::catch_unwind(|| {
        fuzz("budget", vec![b"x".to_vec()], tight, &settings, |_| {
            let big = std::hint::black_box(vec![1u8; 4 << 20]);
            Ok(if big.len() > 1 { Outcome::Accepted } else { Outcome::Rejected })
        })
    });
    let message = result.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("over the budget of 1048576 bytes"), "{message}");
}

#[test]
fn fuzz_folder_ownership_records() {
    use detnas_core::owner::{Existing, Flags, OwnedDir, RECORD};
    // Corpus: records a real detect-like run and a real pipeline with a nested folder wrote.
    let make = |nested: bool| -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let owned = OwnedDir::open(&out, "detect", Existing::Refuse, Flags::OVERWRITE_RESUME).unwrap().dir;
        owned.create_dir("images").unwrap();
        owned.write("images/a.jpg", b"a").unwrap();
        owned.write("detections.json", b"[]").unwrap();
        if nested {
            owned.note(&["sub/".into(), "sub/x.txt".into()]).unwrap();
        }
        std::fs::read(out.join(RECORD)).unwrap()
    };
    let corpus = vec![make(false), make(true)];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let check = move |case: &Case| {
        // A fresh folder per case, with a file of the user's beside it that must survive.
        let out = root.join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(out.join("images")).unwrap();
        std::fs::write(out.join("images/a.jpg"), b"a").unwrap();
        std::fs::write(root.join("victim.txt"), b"keep").unwrap();
        let record = out.join(RECORD);
        std::fs::write(&record, &case.bytes).unwrap();
        let outcome = match OwnedDir::open(&out, "detect", Existing::Replace, Flags::OVERWRITE_RESUME) {
            Ok(opened) => match opened.dir.replace() {
                Ok(_) => Outcome::Accepted,
                Err(e) => names(&e, &record)?,
            },
            // A record naming another command is refused without naming the record file.
            Err(e) if e.to_string().contains("holds the output of") => Outcome::Rejected,
            Err(e) => names(&e, &record)?,
        };
        match std::fs::read(root.join("victim.txt")) {
            Ok(bytes) if bytes == b"keep" => Ok(outcome),
            _ => Err("a file outside the folder was removed or changed".into()),
        }
    };
    let summary = fuzz("folder_ownership_records", corpus, JSON_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

//! End-to-end training on the synthetic set: a RetinaNet overfits it; resume equals uninterrupted;
//! annotation problems are reported; BN recalibration is deterministic.

use detnas_core::InputSize;
use detnas_core::detector::{DetectorConfig, DetectorHead, RetinanetSettings};
use detnas_core::space::arch::Arch;
use detnas_data::synthetic::{SyntheticSpec, generate};
use detnas_train::config::{DataSource, DetTrainConfig, Optim};
use detnas_train::optim::LrSchedule;
use detnas_train::run::Start;
use detnas_train::tch::Device;
use detnas_train::trainer::{TrainEvent, train_detection};
use std::path::Path;

pub fn synthetic(dir: &Path, images: usize) -> DataSource {
    synthetic_sized(dir, images, 128)
}

/// `images` square images of side `side` with 1-3 objects of 2 classes, each 15-38% of the side.
pub fn synthetic_sized(dir: &Path, images: usize, side: u32) -> DataSource {
    let spec = SyntheticSpec {
        images,
        width: side,
        height: side,
        classes: 2,
        min_objects: 1,
        max_objects: 3,
        min_size: side * 5 / 32,
        max_size: side * 3 / 8,
        seed: 1,
        ..SyntheticSpec::default()
    };
    let json = generate(dir, &spec).unwrap();
    DataSource { coco: Some(json), images: Some(dir.to_path_buf()), voc: None }
}

pub fn small_config(data: DataSource, iterations: usize) -> DetTrainConfig {
    DetTrainConfig {
        space: "detnas-300m".into(),
        arch: Some("coco-retinanet-300m".into()),
        data: Some(data),
        val: None,
        holdout: 0.0,
        detector: DetectorConfig {
            input: InputSize::new(128, 128),
            fpn_channels: 48,
            head_channels: 48,
            head_convs: 2,
            head: DetectorHead::Retinanet(RetinanetSettings {
                anchor_sizes: vec![16.0, 32.0, 64.0, 128.0, 256.0],
                ..Default::default()
            }),
            ..DetectorConfig::default()
        },
        batch_size: 4,
        iterations,
        optim: Optim {
            lr: LrSchedule::WarmupStep {
                base: 0.02,
                warmup_iters: 50,
                warmup_factor: 1.0 / 3.0,
                milestones: vec![iterations * 3 / 4],
                gamma: 0.1,
            },
            ..Optim::default()
        },
        augment: detnas_train::data::Augment { hflip: false, scale_min: 1.0, ..Default::default() },
        seed: 0,
        log_every: 50,
        checkpoint_every: 1000,
        ..DetTrainConfig::default()
    }
}

/// The learning check of the trainer, sized for the default test run (about 20 s on 2 cores): 4
/// images of 96x96, 32 FPN/head channels, 200 steps of batch 2 (AP50 1.0, AP 0.97 here).
#[test]
fn retinanet_overfits_a_tiny_synthetic_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_sized(&dir.path().join("data"), 4, 96);
    let mut cfg = small_config(data.clone(), 200);
    cfg.batch_size = 2;
    cfg.val = Some(data);
    cfg.detector.input = InputSize::new(96, 96);
    cfg.detector.fpn_channels = 32;
    cfg.detector.head_channels = 32;
    cfg.detector.retinanet_mut().unwrap().anchor_sizes = vec![12.0, 24.0, 48.0, 96.0, 192.0];
    let out = dir.path().join("run");
    let outcome = train_detection(&cfg, &out, Start::Fresh, Device::Cpu, &mut |event| {
        if let TrainEvent::Log(e) = event {
            eprintln!("step {} loss {:.4} lr {:.4} {:.1} img/s", e.step, e.loss, e.lr, e.images_per_s)
        }
    })
    .unwrap();
    let stats = outcome.eval.expect("evaluated on the training images");
    eprintln!("AP {:.3} AP50 {:.3}", stats.stats[0], stats.stats[1]);
    assert!(stats.stats[1] >= 0.9, "mAP@0.5 {:.3} < 0.9 after overfitting", stats.stats[1]);
    let first = outcome.state.history.first().unwrap().loss;
    let last = outcome.state.history.last().unwrap().loss;
    assert!(last < first / 4.0, "loss {first} -> {last}");
}

fn weights_of(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let state = detnas_train::checkpoint::load_state(dir).unwrap();
    let mut named = detnas_train::tch::Tensor::read_safetensors(dir.join(state.weights)).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(n, t)| (n, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect()
}

#[test]
fn resumed_training_equals_uninterrupted_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(&dir.path().join("data"), 6);
    let mut cfg = small_config(data, 6);
    cfg.arch = None; // the supernet: paths are sampled per step, so resume must restore them too
    cfg.augment = detnas_train::data::Augment::default();
    cfg.checkpoint_every = 3;
    let straight = dir.path().join("straight");
    train_detection(&cfg, &straight, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();

    let split = dir.path().join("split");
    let mut first = cfg.clone();
    first.iterations = 3;
    train_detection(&first, &split, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(detnas_train::checkpoint::load_state(&split).unwrap().step, 3);
    let resumed = train_detection(&cfg, &split, Start::Resume, Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(resumed.state.step, 6);
    let (a, b) = (weights_of(&straight), weights_of(&split));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs between resumed and uninterrupted runs");
    }

    // another configuration is refused
    let mut other = cfg.clone();
    other.seed = 5;
    let err = train_detection(&other, &split, Start::Resume, Device::Cpu, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("different configuration"), "{err}");
}

#[test]
fn bn_recalibration_is_deterministic_and_path_specific() {
    use detnas_core::detector::plan::Paths;
    use detnas_train::detector::DetectionNet;
    use detnas_train::modules::BnUpdate;
    use detnas_train::net::RetinaNet;
    use detnas_train::tch::{Kind, nn};
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(&dir.path().join("data"), 6);
    let cfg = small_config(data.clone(), 1);
    let ds = detnas_train::trainer::load_dataset(&data).unwrap();
    let space = detnas_core::SearchSpace::detnas_300m();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = DetectionNet::Retinanet(RetinaNet::new(&vs, &space, Paths::All, &cfg.detector, 0).unwrap());
    let arch = Arch::parse_for("2,3,1,1,3,2,1,3,3,1,1,1,3,3,2,0,3,3,3,3", &space).unwrap();
    let stats = |update| {
        let batches = detnas_train::trainer::recalibration_batches(&ds, &cfg.detector, 3, 2, 7, Device::Cpu).unwrap();
        detnas_train::recal::recalibrate_genome(&net, &arch, &net.default_genes(), &batches, update).unwrap();
        let bns = net.backbone().path_bns(&arch).unwrap();
        bns.iter().map(|b| Vec::<f32>::try_from(b.running_var.to_kind(Kind::Float)).unwrap()).collect::<Vec<_>>()
    };
    let exact1 = stats(BnUpdate::Cumulative);
    let exact2 = stats(BnUpdate::Cumulative);
    assert_eq!(exact1, exact2, "same batches, same statistics");
    let ema = stats(BnUpdate::Ema(0.1));
    assert_ne!(exact1, ema, "EMA from a reset differs from the exact average over 3 batches");
    assert!(exact1.iter().flatten().any(|v| (v - 1.0).abs() > 1e-3), "statistics moved off the reset values");
    // another path's BNs are untouched
    let other = Arch::parse_for("0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0", &space).unwrap();
    let untouched = net.backbone().path_bns(&other).unwrap();
    let layer1 = &untouched[4]; // a BN of layer 1's choice 0, not on `arch` (layer 1 uses choice 3)
    assert!(Vec::<f32>::try_from(layer1.running_var.to_kind(Kind::Float)).unwrap().iter().all(|v| *v == 1.0));
}

#[test]
fn annotation_problems_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(&dir.path().join("data"), 4);
    let json = data.coco.clone().unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let anns = v["annotations"].as_array_mut().unwrap();
    let mut outside = anns[0].clone();
    outside["id"] = 9001.into();
    outside["bbox"] = serde_json::json!([500.0, 500.0, 10.0, 10.0]);
    let mut zero = anns[0].clone();
    zero["id"] = 9002.into();
    zero["bbox"] = serde_json::json!([5.0, 5.0, 0.0, 4.0]);
    let mut unknown = anns[0].clone();
    unknown["id"] = 9003.into();
    unknown["category_id"] = 77.into();
    anns.extend([outside, zero, unknown]);
    v["images"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": 99, "file_name": "images/missing.png", "width": 128, "height": 128}));
    std::fs::write(&json, serde_json::to_vec(&v).unwrap()).unwrap();
    let ds = detnas_train::trainer::load_dataset(&data).unwrap();
    assert_eq!(ds.samples.len(), 4, "the missing image is dropped, the others kept");
    let report = ds.report.to_string();
    assert!(ds.report.problems() >= 4, "{report}");
    for needle in ["outside", "missing"] {
        assert!(report.to_lowercase().contains(needle), "`{needle}` not in report: {report}");
    }
}

#[test]
fn classification_pretraining_learns_and_feeds_detection() {
    use detnas_train::classify::{ClsTrainConfig, PathSampler, train_classifier};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder");
    let mut rng = detnas_core::rng::Rng::seed(3);
    for (class, tint) in [("red", [200u8, 40, 40]), ("blue", [40, 40, 200])] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..8 {
            let img = image::RgbImage::from_fn(48, 48, |_, _| {
                let n = (rng.below(60)) as u8;
                image::Rgb([tint[0].saturating_add(n), tint[1].saturating_add(n), tint[2].saturating_add(n)])
            });
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let cfg = ClsTrainConfig {
        data: Some(root),
        input: 32,
        batch_size: 8,
        iterations: 30,
        lr: LrSchedule::Linear { base: 0.05, total: 30 },
        sampler: PathSampler::Fixed { arch: "spos-300m".into() },
        crop_scale_min: 0.5,
        log_every: 10,
        checkpoint_every: 30,
        ..ClsTrainConfig::default()
    };
    let out = dir.path().join("cls");
    let state = train_classifier(&cfg, &out, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(state.kind, detnas_core::checkpoint::CheckpointKind::Classifier);
    let first = state.history.first().unwrap().loss;
    let last = state.history.last().unwrap().loss;
    assert!(last < first / 2.0, "classification loss {first} -> {last}");
    // the supernet with SPOS FLOPs-binned paths runs and checkpoints too
    let supernet = ClsTrainConfig { sampler: PathSampler::FlopsBinned { bins: 4 }, iterations: 4, ..cfg.clone() };
    let s = train_classifier(&supernet, &dir.path().join("cls-super"), Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(s.step, 4);

    // the pretrained backbone initialises a detection network by name
    let mut vs = detnas_train::tch::nn::VarStore::new(Device::Cpu);
    let space = detnas_core::SearchSpace::detnas_300m();
    let _net = detnas_train::net::RetinaNet::new(
        &vs,
        &space,
        detnas_core::detector::plan::Paths::All,
        &DetectorConfig::default(),
        0,
    )
    .unwrap();
    let weights = out.join(detnas_train::checkpoint::load_state(&out).unwrap().weights);
    let loaded = detnas_train::trainer::load_partial(&mut vs, &weights).unwrap();
    let backbone = detnas_core::detector::plan::backbone_params(&space, detnas_core::detector::plan::Paths::All).len();
    assert_eq!(loaded, backbone, "every backbone tensor comes from the classifier");
}

#[test]
fn shipped_training_configs_load_and_round_trip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = ["neon-trees.toml", "neon-trees-curve.toml", "neon-trees-v1.toml", "neon-trees-v1-finetune.toml"];
    for name in names.map(|n| format!("models/{n}")) {
        let cfg = DetTrainConfig::load(&root.join(&name)).unwrap();
        cfg.detector.validate().unwrap();
        let (space, _) = detnas_core::space::arch::resolve(Some(&cfg.space), cfg.arch.as_deref().unwrap()).unwrap();
        assert_eq!(space.name, "detnas-300m");
        let back: DetTrainConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg, "{name}");
    }
}

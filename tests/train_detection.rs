//! End-to-end training on the synthetic set: a RetinaNet overfits it; resume equals uninterrupted;
//! annotation problems are reported; BN recalibration is deterministic.

use detnas_core::InputSize;
use detnas_core::arch::Arch;
use detnas_core::detector::DetectorConfig;
use detnas_data::synthetic::{SyntheticSpec, generate};
use detnas_train::config::{DataSource, DetTrainConfig, Optim};
use detnas_train::optim::LrSchedule;
use detnas_train::tch::Device;
use detnas_train::trainer::train_detection;
use std::path::Path;

pub fn synthetic(dir: &Path, images: usize) -> DataSource {
    let spec = SyntheticSpec {
        images,
        width: 128,
        height: 128,
        classes: 2,
        min_objects: 1,
        max_objects: 3,
        min_size: 20,
        max_size: 48,
        seed: 1,
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
            anchor_sizes: vec![16.0, 32.0, 64.0, 128.0, 256.0],
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
        augment: detnas_train::data::Augment { hflip: false, scale_min: 1.0 },
        seed: 0,
        log_every: 50,
        checkpoint_every: 1000,
        ..DetTrainConfig::default()
    }
}

#[test]
fn retinanet_overfits_a_tiny_synthetic_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(&dir.path().join("data"), 8);
    let mut cfg = small_config(data.clone(), 500);
    cfg.val = Some(data);
    let out = dir.path().join("run");
    let outcome = train_detection(&cfg, &out, false, Device::Cpu, &mut |e| {
        eprintln!(
            "step {} loss {:.4} lr {:.4} {:.1} img/s wait {:.1} ms",
            e.step, e.loss, e.lr, e.images_per_s, e.data_wait_ms
        )
    })
    .unwrap();
    let stats = outcome.eval.expect("evaluated on the training images");
    eprintln!("AP {:.3} AP50 {:.3}", stats.stats[0], stats.stats[1]);
    assert!(stats.stats[1] >= 0.9, "mAP@0.5 {:.3} < 0.9 after overfitting", stats.stats[1]);
    let first = outcome.state.history.first().unwrap().loss;
    let last = outcome.state.history.last().unwrap().loss;
    assert!(last < first / 4.0, "loss {first} -> {last}");
    let _ = Arch::parse("0");
}

//! The sanity ladder's two ends, as tests of the supernet's ranking signal:
//! - a supernet whose space holds one choice per layer (and fixed detector genes) trains exactly
//!   as that path stand-alone: the same losses and the same weights, tensor by tensor;
//! - a supernet with one deliberately crippled choice (its branch outputs zeros) ranks the path
//!   made of it below every uniform path of the healthy choices, scored as the search scores.

use crate::util::{detnas, stderr, stdout};
use detnas_core::Arch;
use detnas_core::search::evolution::Fitness;
use detnas_search::fitness::Recalibration;
use detnas_search::{Metric, SupernetScorer};
use detnas_train::config::DataSource;
use detnas_train::modules::BnUpdate;
use detnas_train::tch::{Device, Tensor};
use serde_json::Value;
use std::path::Path;

/// A small RetinaNet on 96x96 synthetic images.
const BASE: &str = r#"
space = "detnas-300m"
batch_size = 2
log_every = 5
checkpoint_every = 1000

[detector]
input = { height = 96, width = 96 }
fpn_channels = 16
head_channels = 16
head_convs = 1
anchor_sizes = [12.0, 24.0, 48.0, 96.0, 192.0]

[augment]
hflip = false
scale_min = 1.0
"#;

fn synthetic(dir: &Path, images: &str) -> String {
    let out = dir.join("data");
    let args = ["data", "synthetic", "--out", out.to_str().unwrap(), "--images", images, "--size", "96x96"];
    let o = detnas(&[&args[..], &["--classes", "1", "--seed", "4"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn train(dir: &Path, command: &str, config: &str, coco: &str, name: &str) -> std::path::PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let out = dir.join(name);
    let args = ["train", command, "--config", cfg.to_str().unwrap(), "--coco", coco, "--out", out.to_str().unwrap()];
    let o = detnas(&args);
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    out
}

fn state(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap()
}

#[test]
fn a_one_choice_supernet_trains_exactly_as_its_path_stand_alone() {
    let dir = tempfile::tempdir().unwrap();
    let coco = synthetic(dir.path(), "4");
    let schedule = "iterations = 20\n";
    let supernet = format!("{schedule}{BASE}\n[supernet]\nchoices = [\"shufflenet5x5\"]\n");
    let single = format!("{schedule}arch = \"{}\"\n{BASE}", "1".repeat(20));
    let s = train(dir.path(), "det-supernet", &supernet, &coco, "supernet");
    let a = train(dir.path(), "retinanet", &single, &coco, "single");
    let losses = |d: &Path| -> Vec<f64> {
        state(d)["history"].as_array().unwrap().iter().map(|e| e["loss"].as_f64().unwrap()).collect()
    };
    let (ls, la) = (losses(&s), losses(&a));
    assert_eq!(ls.len(), 4, "{ls:?}");
    assert_eq!(ls, la, "the one-choice supernet's losses are the path's");
    let weights = |d: &Path| {
        let file = d.join(state(d)["weights"].as_str().unwrap());
        Tensor::read_safetensors(file).unwrap()
    };
    let (ws, wa) = (weights(&s), weights(&a));
    assert_eq!(ws.len(), wa.len(), "the same tensors");
    let supernet_tensors: std::collections::HashMap<String, Tensor> = ws.into_iter().collect();
    for (name, t) in &wa {
        let u = supernet_tensors.get(name).unwrap_or_else(|| panic!("{name} missing from the supernet"));
        assert!(t.equal(u), "{name} differs");
    }
}

#[test]
fn a_crippled_choice_is_ranked_below_every_healthy_uniform_path() {
    let dir = tempfile::tempdir().unwrap();
    let coco = synthetic(dir.path(), "8");
    let optim = "[optim]\nlr = { kind = \"warmup-step\", base = 0.02, warmup_iters = 40, \
                 warmup_factor = 0.3333333333333333, milestones = [200], gamma = 0.1 }\n";
    let config = format!("iterations = 240\n{BASE}\n{optim}\n[supernet]\ncrippled = [\"xception3x3\"]\n");
    let s = train(dir.path(), "det-supernet", &config, &coco, "crippled");
    let ck = detnas_train::checkpoint::open(&s, None, Device::Cpu).unwrap();
    // scored on the training images themselves: what a tiny supernet has learnt at all
    let source = DataSource { coco: Some(coco.clone().into()), images: None, voc: None };
    let (train, val) = ck.datasets(Some(source)).unwrap();
    let recal = Recalibration { batches: 4, update: BnUpdate::Cumulative, seed: 0 };
    let mut scorer = SupernetScorer::new(&ck, (&train, &val), Metric::Ap50, recal, false).unwrap();
    let mut score = |choice: usize| scorer.evaluate(&Arch::parse(&choice.to_string().repeat(20)).unwrap()).unwrap();
    let healthy: Vec<f64> = (0..3).map(&mut score).collect();
    let crippled = score(3);
    eprintln!("inherited AP50: uniform healthy paths {healthy:?}, crippled path {crippled}");
    assert!(healthy.iter().all(|&h| h > crippled), "healthy {healthy:?} vs crippled {crippled}");
}

#[test]
fn a_fair_step_trains_every_choice_of_every_layer_a_uniform_step_one_and_block_bn_can_stay_plain() {
    let dir = tempfile::tempdir().unwrap();
    let coco = synthetic(dir.path(), "2");
    let one_step = format!("iterations = 1\n{BASE}");
    let fair =
        train(dir.path(), "det-supernet", &format!("{one_step}\n[supernet]\nsampling = \"fair\"\n"), &coco, "fair");
    let uniform = train(dir.path(), "det-supernet", &one_step, &coco, "uniform");
    let plain_bn = format!("{one_step}\n[supernet]\nblock_bn_affine = false\n");
    let no_affine = train(dir.path(), "det-supernet", &plain_bn, &coco, "no-affine");
    // the initial weights: the same seed, the backbone first in the parameter order
    let vs = detnas_train::tch::nn::VarStore::new(Device::Cpu);
    let space = detnas_core::SearchSpace::detnas_300m();
    let det = detnas_core::detector::DetectorConfig::default();
    let paths = detnas_core::detector::plan::Paths::All;
    detnas_train::detector::DetectionNet::build(&vs, &space, paths, &det, None, 0).unwrap();
    let init = vs.variables();
    let moved_tensor = |d: &Path, layer: usize, tensor: &str| -> Vec<bool> {
        let file = d.join(state(d)["weights"].as_str().unwrap());
        let trained: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(file).unwrap().into_iter().collect();
        (0..4)
            .map(|c| {
                let name = format!("backbone.features.{layer}.{c}.branch_main.{tensor}");
                !trained[&name].equal(&init[&name])
            })
            .collect()
    };
    let moved = |d: &Path, layer: usize| moved_tensor(d, layer, "0.weight");
    for layer in [0, 7, 19] {
        assert_eq!(moved(&fair, layer), vec![true; 4], "fair: every choice of layer {layer} trained");
        assert_eq!(moved(&uniform, layer).iter().filter(|&&m| m).count(), 1, "uniform: one choice of layer {layer}");
        // without block BN affine parameters the sampled conv moves, its BN's scale does not
        assert_eq!(moved(&no_affine, layer).iter().filter(|&&m| m).count(), 1);
        assert_eq!(moved_tensor(&no_affine, layer, "1.weight"), vec![false; 4], "layer {layer}");
        assert_eq!(moved_tensor(&uniform, layer, "1.weight").iter().filter(|&&m| m).count(), 1, "layer {layer}");
    }
}

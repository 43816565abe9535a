//! The genes supernet: elastic FPN / head widths, head depth, both head conv types and the input
//! resolution sampled per step; a step updates only the sampled blocks; any genome exports from
//! the supernet checkpoint by slicing and matches ONNX Runtime; genomes retrain and evaluate.

use crate::train_detection::{small_config, synthetic_sized};
use crate::util::{assert_one_line_failure, detnas, stderr};
use detnas_core::detector::plan::Paths;
use detnas_core::detector::{
    DetectorConfig, DetectorHead, HeadConv, RetinanetSettings, all_anchors, postprocess, pyramid_levels,
};
use detnas_core::search::genome::{DetectorGenes, GeneSpace, Genome};
use detnas_core::{Arch, InputSize, SearchSpace};
use detnas_infer::ort::session::Session;
use detnas_infer::ort::value::TensorRef;
use detnas_onnx::Weights;
use detnas_train::config::DetTrainConfig;
use detnas_train::loss::{Targets, image_targets, retinanet_loss};
use detnas_train::modules::BnUpdate;
use detnas_train::net::{RetinaNet, genes_supernet_params};
use detnas_train::optim::{PathSgd, leading};
use detnas_train::run::Start;
use detnas_train::search::{GenomeEval, evaluate_genome};
use detnas_train::tch::{Device, Kind, Tensor, nn};
use detnas_train::trainer::{EvalOptions, evaluate_checkpoint, train_detection};
use std::collections::HashMap;
use std::path::Path;

fn gene_space() -> GeneSpace {
    GeneSpace {
        fpn_channels: vec![16, 24],
        head_channels: vec![16, 24],
        head_convs: vec![1, 2],
        head_conv: vec![HeadConv::Separable, HeadConv::Dense],
        input: vec![InputSize::new(64, 64), InputSize::new(96, 96)],
    }
}

fn base() -> DetectorConfig {
    DetectorConfig {
        class_names: vec!["a".into(), "b".into()],
        input: InputSize::new(96, 96),
        fpn_channels: 24,
        head_channels: 24,
        head_convs: 2,
        head: DetectorHead::Retinanet(RetinanetSettings {
            anchor_sizes: vec![16.0, 32.0, 64.0, 128.0, 256.0],
            ..Default::default()
        }),
        ..DetectorConfig::default()
    }
}

fn genes(fpn: u64, head: u64, convs: usize, conv: HeadConv, side: u64) -> DetectorGenes {
    DetectorGenes {
        fpn_channels: fpn,
        head_channels: head,
        head_convs: convs,
        head_conv: conv,
        input: InputSize::new(side, side),
    }
}

/// Ones in the leading block `shape` of a tensor of `full` shape, zeros elsewhere.
fn block_mask(full: &[i64], shape: &[i64]) -> Tensor {
    let mask = Tensor::zeros(full, (Kind::Float, Device::Cpu));
    let _ = leading(&mask, shape).fill_(1.0);
    mask
}

fn max_abs(t: &Tensor) -> f64 {
    if t.numel() == 0 { 0.0 } else { t.abs().max().double_value(&[]) }
}

#[test]
fn a_genes_step_updates_only_the_sampled_blocks() {
    let space = SearchSpace::detnas_300m();
    let cfg = base();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RetinaNet::with_genes(&vs, &space, Paths::All, &cfg, &gene_space(), 1).unwrap();
    let mut opt = PathSgd::new(0.9, 1e-2, true);
    let step = |arch: &Arch, g: &DetectorGenes, opt: &mut PathSgd| {
        let det = g.apply(&cfg);
        let anchors = all_anchors(&pyramid_levels(&space, arch, &det).unwrap(), &det);
        let side = g.input.height as i64;
        let x = Tensor::rand([1, 3, side, side], (Kind::Float, Device::Cpu)) * 255.0;
        let targets = Targets::new(&[image_targets(&anchors, &[[8.0, 8.0, 40.0, 48.0]], &[1], &det)], Device::Cpu);
        let params = net.path_parameters_genes(arch, g).unwrap();
        PathSgd::zero_grad(&params);
        let (c, r) = net.forward_genes(&x, arch, g, true).unwrap();
        retinanet_loss(&c, &r, &targets).total().backward();
        opt.step(&params, 0.05);
        params
    };
    // the largest dense and separable sub-networks first: every FPN / head tensor gets momentum
    let first = Arch::uniform(&space, detnas_core::Choice::Shufflenet3x3);
    step(&first, &genes(24, 24, 2, HeadConv::Dense, 96), &mut opt);
    step(&first, &genes(24, 24, 2, HeadConv::Separable, 96), &mut opt);
    let snapshot: HashMap<String, Tensor> = vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
    let momentum: HashMap<String, Tensor> = opt.buffers().iter().map(|(k, v)| (k.clone(), v.copy())).collect();

    let arch = Arch::uniform(&space, detnas_core::Choice::Shufflenet7x7);
    let small = genes(16, 16, 1, HeadConv::Dense, 64);
    let params = step(&arch, &small, &mut opt);
    let active: HashMap<String, (Tensor, Vec<i64>)> = params
        .iter()
        .map(|p| (p.name.clone(), (p.tensor.shallow_clone(), p.active.clone().unwrap_or(p.tensor.size()))))
        .collect();
    let (mut changed_inside, mut blocks) = (0, 0);
    for (name, now) in vs.variables() {
        if name.contains("running_") {
            continue; // BN statistics: the backbone's own test covers them (FPN and head have none)
        }
        let before = &snapshot[&name];
        let Some((tensor, shape)) = active.get(&name) else {
            assert!(now.equal(before), "{name} is off the sampled genome but changed");
            if let Some(m) = momentum.get(&name) {
                assert!(m.equal(&opt.buffers()[&name]), "momentum of {name} changed off the genome");
            }
            continue;
        };
        let outside = 1.0 - block_mask(&now.size(), shape);
        assert_eq!(max_abs(&((&now - before) * &outside)), 0.0, "{name}: values beyond the block {shape:?} changed");
        assert_eq!(max_abs(&(tensor.grad() * &outside)), 0.0, "{name}: gradient beyond the block {shape:?}");
        if let Some(m) = momentum.get(&name) {
            let diff = (&opt.buffers()[&name] - m) * &outside;
            assert_eq!(max_abs(&diff), 0.0, "{name}: momentum beyond the block {shape:?} changed");
        }
        if shape != &now.size() {
            blocks += 1;
        }
        if !leading(&now, shape).equal(&leading(before, shape)) {
            changed_inside += 1;
        }
    }
    // what the genome names: 16 of 24 FPN channels, one dense conv per tower, no separable tower
    let fpn = &active["fpn.layer_blocks.0.0.weight"].1;
    assert_eq!(fpn, &vec![16, 16, 3, 3]);
    assert_eq!(active["head.classification_head.conv.0.weight"].1, vec![16, 16, 3, 3]);
    assert_eq!(active["head.classification_head.cls_logits.weight"].1[1], 16);
    assert!(!active.contains_key("head.classification_head.conv.2.weight"), "second conv beyond the depth");
    assert!(!active.keys().any(|n| n.contains(".dw.") || n.contains(".pw.")), "separable towers are not on it");
    assert!(blocks >= 16, "elastic FPN / head tensors are partial blocks ({blocks})");
    assert!(changed_inside > 100, "the sampled blocks train ({changed_inside})");
}

#[test]
fn a_sandwich_step_trains_the_largest_genome_on_labels_and_distils_the_others_from_it() {
    use detnas_train::data::BatchTargets;
    use detnas_train::detector::TrainingNet;
    let space = SearchSpace::detnas_300m();
    let cfg = base();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RetinaNet::with_genes(&vs, &space, Paths::All, &cfg, &gene_space(), 1).unwrap();
    let arch = Arch::uniform(&space, detnas_core::Choice::Shufflenet3x3);
    let (largest, smallest) = detnas_train::genes::sandwich_genes(&gene_space(), InputSize::new(64, 64));
    assert_eq!(largest, genes(24, 24, 2, HeadConv::Dense, 64));
    assert_eq!(smallest, genes(16, 16, 1, HeadConv::Separable, 64));
    let sampled = genes(24, 16, 1, HeadConv::Dense, 64);
    let det = largest.apply(&cfg);
    let anchors = all_anchors(&pyramid_levels(&space, &arch, &det).unwrap(), &det);
    let targets = BatchTargets::Retinanet(vec![image_targets(&anchors, &[[8.0, 8.0, 40.0, 48.0]], &[1], &det)]);
    let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu)) * 255.0;
    for g in [&largest, &smallest, &sampled] {
        PathSgd::zero_grad(&net.path_parameters_genes(&arch, g).unwrap());
    }
    let grad = |name: &str| {
        let g = vs.variables()[name].grad();
        if g.defined() { max_abs(&g) } else { 0.0 }
    };
    let loss = net.sandwich_loss(&x, &arch, (&largest, &[smallest, sampled]), &targets).unwrap();
    // the students are back-propagated inside: the separable tower (the smallest genome's only)
    // has its gradient; the second dense conv (the largest's only) waits for the step's backward
    assert!(grad("head.classification_head.conv.0.dw.weight") > 0.0, "the smallest genome is distilled");
    assert_eq!(grad("head.classification_head.conv.2.weight"), 0.0, "the teacher's graph is not back-propagated yet");
    loss.total.backward();
    assert!(grad("head.classification_head.conv.2.weight") > 0.0, "the largest genome trains on the labels");
    let part = |n: &str| loss.parts.iter().find(|(k, _)| *k == n).unwrap().1.double_value(&[]);
    let (cls, boxes, distill) = (part("cls"), part("box"), part("distill"));
    assert!(cls > 0.0 && boxes > 0.0 && distill > 0.0 && distill.is_finite(), "{cls} {boxes} {distill}");
    let total = loss.total.double_value(&[]);
    assert!((total - (cls + boxes + 2.0 * distill) / 3.0).abs() < 1e-4 * total, "the mean over the sandwich: {total}");
}

#[test]
fn a_sandwich_needs_genes_a_retinanet_and_uniform_paths() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_sized(&dir.path().join("data"), 2, 64);
    let mut cfg = supernet_config(data, 2);
    cfg.supernet.sandwich = true;
    cfg.supernet.sampling = detnas_train::config::Sampling::Fair;
    let err = train_detection(&cfg, &dir.path().join("a"), Start::Fresh, Device::Cpu, &mut |_| {}).err().unwrap();
    assert!(err.to_string().contains("leave sampling uniform"), "{err}");
    cfg.supernet.sampling = detnas_train::config::Sampling::Uniform;
    cfg.genes = None;
    let err = train_detection(&cfg, &dir.path().join("b"), Start::Fresh, Device::Cpu, &mut |_| {}).err().unwrap();
    assert!(err.to_string().contains("needs a [genes] space"), "{err}");
    // and with them, steps train and log the distillation beside the labels' losses
    cfg.genes = Some(gene_space());
    cfg.log_every = 1;
    let mut parts = Vec::new();
    let mut on_log = |e: detnas_train::trainer::TrainEvent<'_>| {
        if let detnas_train::trainer::TrainEvent::Log(entry) = e {
            parts.push(format!("{:?}", entry.parts));
        }
    };
    train_detection(&cfg, &dir.path().join("c"), Start::Fresh, Device::Cpu, &mut on_log).unwrap();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts.iter().all(|p| p.contains("distill") && p.contains("cls")), "{parts:?}");
}

fn supernet_config(data: detnas_train::config::DataSource, iterations: usize) -> DetTrainConfig {
    let mut cfg = small_config(data.clone(), iterations);
    cfg.arch = None;
    cfg.val = Some(data);
    cfg.batch_size = 2;
    cfg.detector = DetectorConfig { class_names: vec![], ..base() };
    cfg.genes = Some(gene_space());
    cfg.optim.lr = detnas_train::optim::LrSchedule::Linear { base: 0.001, total: 100 };
    cfg
}

/// The outputs of an exported model with raw outputs.
struct OnnxOut {
    cls: Vec<f32>,
    reg: Vec<f32>,
    boxes: Vec<f32>,
    scores: Vec<f32>,
    labels: Vec<i64>,
}

/// ONNX Runtime's outputs on `probe` (`[1, 3, side, side]`).
fn run_onnx(model: &Path, probe: &[f32], side: usize) -> OnnxOut {
    let bytes = std::fs::read(model).unwrap();
    let env = detnas_infer::runtime::environment().unwrap();
    let mut session = Session::builder(env).unwrap().commit_from_memory(&bytes).unwrap();
    let view = ndarray::ArrayView4::from_shape((1, 3, side, side), probe).unwrap();
    let out = session.run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(view).unwrap()]).unwrap();
    let f = |n: &str| out[n].try_extract_tensor::<f32>().unwrap().1.to_vec();
    OnnxOut {
        cls: f("cls_logits"),
        reg: f("bbox_regression"),
        boxes: f("boxes"),
        scores: f("scores"),
        labels: out["labels"].try_extract_tensor::<i64>().unwrap().1.to_vec(),
    }
}

#[test]
fn any_genome_exports_from_the_supernet_by_slicing_and_matches_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_sized(&dir.path().join("data"), 6, 96);
    let mut cfg = supernet_config(data, 3);
    // start from weights whose every tensor matters (as in train_parity), then train a few steps
    let space = SearchSpace::detnas_300m();
    let init = dir.path().join("init.safetensors");
    Weights::random_varied(&genes_supernet_params(&space, Paths::All, &base(), &gene_space()), 4).save(&init).unwrap();
    cfg.init = Some(init);
    let out = dir.path().join("super");
    let outcome = train_detection(&cfg, &out, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(outcome.state.step, 3);
    let saved: DetTrainConfig = serde_json::from_value(outcome.state.config.clone()).unwrap();
    assert_eq!(saved.genes, Some(gene_space()), "the gene space is stored in the checkpoint");

    let genomes = [
        "0,1,2,3,1,2,3,0,2,3,0,1,2,3,0,1,3,0,1,2:fpn16:head24x1:sep:64x64",
        "23113213311133203333:fpn24:head16x2:dense:96x96",
    ];
    let mut rng = detnas_core::rng::Rng::seed(5);
    for text in genomes {
        let model = dir.path().join("m.onnx");
        let o = detnas(&[
            "export",
            "--checkpoint",
            out.to_str().unwrap(),
            "--arch",
            text,
            "--out",
            model.to_str().unwrap(),
            "--raw-outputs",
        ]);
        assert!(o.status.success(), "{text}: {}", stderr(&o));
        let ck = detnas_train::checkpoint::open(&out, Some(text), Device::Cpu).unwrap();
        let arch = ck.arch().unwrap().clone();
        let side = ck.genes.input.height as usize;
        assert_eq!(ck.genes, Genome::parse(None, text).unwrap().genes.over(&ck.config.detector));
        let probe: Vec<f32> = (0..3 * side * side).map(|_| (rng.unit() * 255.0) as f32).collect();
        let x = Tensor::from_slice(&probe).view([1, 3, side as i64, side as i64]);
        let (tcls, treg) =
            detnas_train::tch::no_grad(|| ck.net.as_retinanet().unwrap().forward_genes(&x, &arch, &ck.genes, false))
                .unwrap();
        let tcls: Vec<f32> = Vec::try_from(tcls.flatten(0, -1)).unwrap();
        let treg: Vec<f32> = Vec::try_from(treg.flatten(0, -1)).unwrap();
        let OnnxOut { cls: ocls, reg: oreg, boxes, scores, labels } = run_onnx(&model, &probe, side);
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert_eq!((ocls.len(), oreg.len()), (tcls.len(), treg.len()), "{text}");
        assert!(diff(&ocls, &tcls) <= 1e-4, "{text}: cls_logits differ by {}", diff(&ocls, &tcls));
        assert!(diff(&oreg, &treg) <= 1e-4, "{text}: bbox_regression differs by {}", diff(&oreg, &treg));
        let det = ck.detector();
        let ours = postprocess(&tcls, &treg, &pyramid_levels(&space, &arch, &det).unwrap(), &det);
        assert!(!ours.is_empty(), "{text}: no detections to compare");
        assert_eq!(ours.len(), scores.len(), "{text}");
        for (i, d) in ours.iter().enumerate() {
            assert_eq!(d.label as i64, labels[i], "{text}");
            assert!((d.score - scores[i]).abs() < 1e-5, "{text}");
            for j in 0..4 {
                assert!(
                    (d.bbox[j] - boxes[i * 4 + j]).abs() < 1e-2,
                    "{text}: {:?} vs {:?}",
                    d.bbox,
                    &boxes[i * 4..][..4]
                );
            }
        }
    }

    // a genome wider than the supernet is refused, naming a tensor
    let o = detnas(&[
        "export",
        "--checkpoint",
        out.to_str().unwrap(),
        "--arch",
        "23113213311133203333:fpn32",
        "--out",
        dir.path().join("x.onnx").to_str().unwrap(),
    ]);
    assert_one_line_failure(&o, &["fpn.", "[32"]);

    // evaluation of a genome: recalibrated at its input, held-out AP (library and checkpoint paths)
    let ck = detnas_train::checkpoint::open(&out, Some(genomes[0]), Device::Cpu).unwrap();
    let (train, val) = ck.datasets(None).unwrap();
    let opts = GenomeEval { batches: 2, batch_size: 2, seed: 1, update: BnUpdate::Cumulative };
    let arch = ck.arch().unwrap().clone();
    let a = evaluate_genome(&ck.net, &arch, &ck.genes, &train, &val, &opts).unwrap();
    let b = evaluate_genome(&ck.net, &arch, &ck.genes, &train, &val, &opts).unwrap();
    assert_eq!(a.stats, b.stats, "deterministic");
    assert_eq!(a.images, 6);
    let e = evaluate_checkpoint(&ck, &EvalOptions { val: None, recalibrate: 2 }).unwrap();
    assert_eq!(e.stats.images, 6);
    let o = detnas(&[
        "train",
        "eval",
        "--checkpoint",
        out.to_str().unwrap(),
        "--arch",
        genomes[1],
        "--recalibrate",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_str(&crate::util::stdout(&o)).unwrap();
    assert_eq!(stats["images"], 6);
    let err = detnas_train::checkpoint::open(&out, Some("23113213311133203333:head32x1"), Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("head width 32"), "{err}");
}

#[test]
fn a_genome_retrains_stand_alone_with_its_detector() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_sized(&dir.path().join("data"), 4, 64);
    let mut cfg = small_config(data, 2);
    cfg.batch_size = 2;
    cfg.arch = Some("coco-retinanet-300m:fpn16:head16x1:sep:64x64".into());
    let out = dir.path().join("run");
    let state = train_detection(&cfg, &out, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap().state;
    let det = state.detector_config(&out).unwrap();
    assert_eq!(DetectorGenes::of(&det), genes(16, 16, 1, HeadConv::Separable, 64));
    assert_eq!(state.arch.as_deref(), Some("2,3,1,1,3,2,1,3,3,1,1,1,3,3,2,0,3,3,3,3"));
    let ck = detnas_train::checkpoint::open(&out, None, Device::Cpu).unwrap();
    assert_eq!(ck.genes, DetectorGenes::of(&det));
    // a fixed detector only changes its input
    let ok = detnas_train::checkpoint::open(&out, Some("coco-retinanet-300m:96"), Device::Cpu).unwrap();
    assert_eq!(ok.genes.input, InputSize::new(96, 96));
    let err = detnas_train::checkpoint::open(&out, Some("coco-retinanet-300m:fpn24"), Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("only the input resolution"), "{err}");
    // export slices a fixed detector to nothing but its own FPN and head
    let x = dir.path().join("x.onnx");
    let o = detnas(&[
        "export",
        "--checkpoint",
        out.to_str().unwrap(),
        "--arch",
        "coco-retinanet-300m:head8x1",
        "--out",
        x.to_str().unwrap(),
    ]);
    assert_one_line_failure(&o, &["fixed detector", "only the input resolution"]);
    // a gene space needs the supernet
    cfg.genes = Some(gene_space());
    let err = train_detection(&cfg, &dir.path().join("x"), Start::Fresh, Device::Cpu, &mut |_| {}).err().unwrap();
    assert!(err.to_string().contains("remove `arch`"), "{err}");
}

#[test]
fn a_genes_supernet_resumes_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_sized(&dir.path().join("data"), 4, 64);
    let mut cfg = supernet_config(data, 4);
    cfg.val = None;
    cfg.checkpoint_every = 2;
    let weights = |d: &Path| {
        let state = detnas_train::checkpoint::load_state(d).unwrap();
        let mut named = Tensor::read_safetensors(d.join(state.weights)).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let straight = dir.path().join("straight");
    train_detection(&cfg, &straight, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    let split = dir.path().join("split");
    train_detection(&DetTrainConfig { iterations: 2, ..cfg.clone() }, &split, Start::Fresh, Device::Cpu, &mut |_| {})
        .unwrap();
    train_detection(&cfg, &split, Start::Resume, Device::Cpu, &mut |_| {}).unwrap();
    let (a, b) = (weights(&straight), weights(&split));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs between resumed and uninterrupted runs");
    }
}

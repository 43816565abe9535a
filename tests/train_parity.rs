//! Train a few steps with libtorch, save, export to ONNX, and compare ONNX Runtime with tch.

use detnas_core::detector::plan::Paths;
use detnas_core::detector::{DetectorConfig, all_anchors, postprocess, pyramid_levels};
use detnas_core::rng::Rng;
use detnas_core::{Arch, InputSize, SearchSpace};
use detnas_infer::ort::session::Session;
use detnas_infer::ort::value::TensorRef;
use detnas_onnx::graph::encode;
use detnas_onnx::{ExportOptions, Weights, export_retinanet};
use detnas_train::loss::{Targets, image_targets, retinanet_loss};
use detnas_train::net::RetinaNet;
use detnas_train::optim::PathSgd;
use detnas_train::tch::{Device, Kind, Tensor, nn};

fn config() -> DetectorConfig {
    DetectorConfig {
        class_names: vec!["a".into(), "b".into()],
        input: InputSize::new(96, 128),
        fpn_channels: 32,
        head_channels: 32,
        head_convs: 2,
        score_thresh: 0.05,
        ..DetectorConfig::default()
    }
}

#[test]
fn trained_supernet_path_exports_and_matches_onnx_runtime() {
    detnas_train::tch::manual_seed(0);
    let space = SearchSpace::detnas_300m();
    let cfg = config();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = RetinaNet::new(&vs, &space, Paths::All, &cfg, 3).unwrap();
    // start from weights whose every tensor matters (random BN statistics, spread logits), so the
    // comparison is not decided by near-ties of scores at the prior
    let start = tempfile::tempdir().unwrap();
    let varied = Weights::random_varied(&detnas_core::detector::plan::detector_params(&space, Paths::All, &cfg), 4);
    varied.save(&start.path().join("start.safetensors")).unwrap();
    vs.load(start.path().join("start.safetensors")).unwrap();
    let levels = pyramid_levels(&space, &Arch::uniform(&space, detnas_core::Choice::Shufflenet3x3), &cfg).unwrap();
    let anchors = all_anchors(&levels, &cfg);
    let mut rng = Rng::seed(5);
    let n = 3 * 96 * 128;
    let images: Vec<f32> = (0..2 * n).map(|_| (rng.unit() * 255.0) as f32).collect();
    let x = Tensor::from_slice(&images).view([2, 3, 96, 128]);
    let gts = [vec![[10.0, 10.0, 40.0, 50.0], [60.0, 20.0, 120.0, 90.0]], vec![[30.0, 30.0, 70.0, 60.0]]];
    let labels = [vec![0, 1], vec![1]];
    let targets = Targets::new(
        &[image_targets(&anchors, &gts[0], &labels[0], &cfg), image_targets(&anchors, &gts[1], &labels[1], &cfg)],
        Device::Cpu,
    );
    let mut opt = PathSgd::new(0.9, 1e-4, true);
    let mut path_rng = Rng::seed(9);
    for _ in 0..4 {
        let arch = detnas_core::space::sample::uniform(&space, &mut path_rng);
        let params = net.path_parameters(&arch).unwrap();
        PathSgd::zero_grad(&params);
        let (cls, reg) = net.forward(&x, &arch, true).unwrap();
        let loss = retinanet_loss(&cls, &reg, &targets).total();
        assert!(loss.double_value(&[]).is_finite());
        loss.backward();
        opt.step(&params, 0.001);
    }

    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("w.safetensors");
    vs.save(&ckpt).unwrap();
    let arch = Arch::parse_for("0,1,2,3,1,2,3,0,2,3,0,1,2,3,0,1,3,0,1,2", &space).unwrap();
    let weights = Weights::load(&ckpt).unwrap();
    let model =
        export_retinanet(&space, &arch, &cfg, &weights, &ExportOptions { raw_outputs: true, ..Default::default() })
            .unwrap();
    let bytes = encode(&model).unwrap();

    let probe: Vec<f32> = (0..n).map(|_| (rng.unit() * 255.0) as f32).collect();
    let (tcls, treg) =
        detnas_train::tch::no_grad(|| net.forward(&Tensor::from_slice(&probe).view([1, 3, 96, 128]), &arch, false))
            .unwrap();
    let tcls: Vec<f32> = Vec::try_from(tcls.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    let treg: Vec<f32> = Vec::try_from(treg.to_kind(Kind::Float).flatten(0, -1)).unwrap();

    let env = detnas_infer::runtime::environment().unwrap();
    let mut session = Session::builder(env).unwrap().commit_from_memory(&bytes).unwrap();
    let view = ndarray::ArrayView4::from_shape((1, 3, 96, 128), &probe[..]).unwrap();
    let out = session.run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(view).unwrap()]).unwrap();
    let ocls = out["cls_logits"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let oreg = out["bbox_regression"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert_eq!(ocls.len(), tcls.len());
    assert!(diff(&ocls, &tcls) <= 1e-4, "cls_logits differ by {}", diff(&ocls, &tcls));
    assert!(diff(&oreg, &treg) <= 1e-4, "bbox_regression differs by {}", diff(&oreg, &treg));

    // identical detections: the graph's post-processing vs the core implementation on tch outputs
    let ours = postprocess(&tcls, &treg, &pyramid_levels(&space, &arch, &cfg).unwrap(), &cfg);
    let boxes = out["boxes"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let scores = out["scores"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let labels = out["labels"].try_extract_tensor::<i64>().unwrap().1.to_vec();
    assert!(!ours.is_empty());
    assert_eq!(ours.len(), scores.len());
    for (i, d) in ours.iter().enumerate() {
        assert_eq!(d.label as i64, labels[i]);
        assert!((d.score - scores[i]).abs() < 1e-5);
        for j in 0..4 {
            assert!((d.bbox[j] - boxes[i * 4 + j]).abs() < 1e-2, "{:?} vs {:?}", d.bbox, &boxes[i * 4..i * 4 + 4]);
        }
    }
}

#[test]
fn only_the_sampled_path_changes_in_a_step() {
    let space = SearchSpace::detnas_300m();
    let cfg = config();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RetinaNet::new(&vs, &space, Paths::All, &cfg, 1).unwrap();
    let levels = pyramid_levels(&space, &Arch::uniform(&space, detnas_core::Choice::Shufflenet3x3), &cfg).unwrap();
    let anchors = all_anchors(&levels, &cfg);
    let x = Tensor::rand([1, 3, 96, 128], (Kind::Float, Device::Cpu)) * 255.0;
    let targets = Targets::new(&[image_targets(&anchors, &[[10.0, 10.0, 50.0, 60.0]], &[1], &cfg)], Device::Cpu);
    let mut opt = PathSgd::new(0.9, 1e-2, true);
    let step = |arch: &Arch, opt: &mut PathSgd| {
        let params = net.path_parameters(arch).unwrap();
        PathSgd::zero_grad(&params);
        let (c, r) = net.forward(&x, arch, true).unwrap();
        retinanet_loss(&c, &r, &targets).total().backward();
        opt.step(&params, 0.05);
    };
    let first = Arch::uniform(&space, detnas_core::Choice::Shufflenet3x3);
    let second = Arch::uniform(&space, detnas_core::Choice::Shufflenet7x7);
    step(&first, &mut opt); // creates momentum for the first path
    let snapshot: std::collections::HashMap<String, Tensor> =
        vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
    let momentum_before: std::collections::HashMap<String, Tensor> =
        opt.buffers().iter().map(|(k, v)| (k.clone(), v.copy())).collect();
    step(&second, &mut opt);
    let on_path: std::collections::HashSet<String> =
        net.path_parameters(&second).unwrap().into_iter().map(|p| p.name).collect();
    let mut changed_on = 0;
    for (name, now) in vs.variables() {
        let same = now.equal(&snapshot[&name]);
        let block_of_other_choice =
            name.starts_with("backbone.features.") && !on_path.contains(&name) && !name.contains("running_");
        if block_of_other_choice {
            assert!(same, "{name} is off the path but changed");
        }
        if on_path.contains(&name) && !same {
            changed_on += 1;
        }
        // BN statistics of other choices must not move either
        if name.contains("running_") && name.starts_with("backbone.features.") {
            let choice = name.split('.').nth(3).unwrap();
            if choice != "2" {
                assert!(same, "{name} running statistic changed off the path");
            }
        }
    }
    assert!(changed_on > 100, "path tensors should change ({changed_on})");
    for (name, buf) in &momentum_before {
        if !on_path.contains(name) {
            assert!(buf.equal(&opt.buffers()[name]), "momentum of {name} changed off the path");
        }
    }
}

#[test]
fn checkpoint_names_and_shapes_are_exactly_the_exporters() {
    for space in [SearchSpace::detnas_300m(), SearchSpace::detnas_1_3g()] {
        let cfg = config();
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = RetinaNet::new(&vs, &space, Paths::All, &cfg, 0).unwrap();
        let mut ours: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
        ours.sort();
        let mut plan: Vec<(String, Vec<i64>)> = detnas_core::detector::plan::detector_params(&space, Paths::All, &cfg)
            .into_iter()
            .map(|p| (p.name, p.shape.iter().map(|&d| d as i64).collect()))
            .collect();
        plan.sort();
        assert_eq!(ours, plan, "{}", space.name);
    }
}

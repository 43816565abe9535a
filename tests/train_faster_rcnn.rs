//! FPN Faster R-CNN in libtorch: the four losses fall when it fits one image, and the fitted
//! network finds the objects; the supernet trains only the sampled path; the trainer overfits a
//! tiny synthetic set, resumes exactly, and its checkpoint evaluates to the same AP.

use detnas_core::detector::boxes::{BBox, iou};
use detnas_core::detector::plan::Paths;
use detnas_core::detector::{DetectorConfig, DetectorKind, all_anchors, pyramid_levels};
use detnas_core::rng::Rng;
use detnas_core::space::arch::Preset;
use detnas_core::space::shape::InputSize;
use detnas_train::faster_rcnn::{FasterRcnn, image_truth};
use detnas_train::tch::{Device, Tensor, nn, nn::OptimizerConfig};

fn small_config() -> DetectorConfig {
    let mut cfg = DetectorConfig::new(DetectorKind::FasterRcnn);
    cfg.class_names = vec!["square".into(), "bar".into()];
    cfg.input = InputSize::new(128, 128);
    cfg.fpn_channels = 32;
    let f = cfg.faster_rcnn_mut().unwrap();
    f.rpn.anchor_sizes = vec![16.0, 32.0, 64.0, 128.0, 256.0];
    f.rpn.pre_nms_top_n_train = 300;
    f.rpn.post_nms_top_n_train = 100;
    f.rpn.pre_nms_top_n_test = 200;
    f.rpn.post_nms_top_n_test = 50;
    f.roi_heads.batch_size_per_image = 64;
    f.roi_heads.representation_size = 64;
    cfg
}

/// A dark image with a bright square and a bright horizontal bar.
fn scene() -> (Tensor, Vec<BBox>, Vec<usize>) {
    let boxes = vec![[20.0, 24.0, 60.0, 64.0], [70.0, 80.0, 120.0, 100.0]];
    let mut pixels = vec![20.0f32; 3 * 128 * 128];
    for (c, b) in boxes.iter().enumerate() {
        for y in b[1] as usize..b[3] as usize {
            for x in b[0] as usize..b[2] as usize {
                for ch in 0..3 {
                    pixels[ch * 128 * 128 + y * 128 + x] = if ch == c { 240.0 } else { 120.0 };
                }
            }
        }
    }
    (Tensor::from_slice(&pixels).view([1, 3, 128, 128]), boxes, vec![0, 1])
}

#[test]
fn faster_rcnn_fits_one_image_and_finds_its_objects() {
    detnas_train::tch::manual_seed(0);
    let (space, arch) = Preset::by_name("coco-fpn-300m").unwrap().resolve();
    let cfg = small_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FasterRcnn::new(&vs, &space, Paths::Single(&arch), &cfg, 0).unwrap();
    let levels = pyramid_levels(&space, &arch, &cfg).unwrap();
    let anchors = all_anchors(&levels, &cfg);
    let (image, boxes, labels) = scene();
    let truth = vec![image_truth(&anchors, &boxes, &labels, &cfg)];
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.02).unwrap();
    let mut rng = Rng::seed(1);
    let mut first = None;
    let mut last = Vec::new();
    for _ in 0..60 {
        let loss = net.training_loss(&image, &arch, &truth, &levels, &anchors, &mut rng).unwrap();
        let parts: Vec<f64> = [&loss.objectness, &loss.rpn_box, &loss.classifier, &loss.box_reg]
            .iter()
            .map(|t| t.double_value(&[]))
            .collect();
        assert!(parts.iter().all(|v| v.is_finite()), "{parts:?}");
        first.get_or_insert(parts.clone());
        last = parts;
        opt.backward_step(&loss.total());
    }
    let first = first.unwrap();
    let total = |v: &[f64]| v.iter().sum::<f64>();
    assert!(total(&last) < 0.3 * total(&first), "losses {first:?} -> {last:?}");
    assert!(last[0] < first[0] && last[2] < first[2], "objectness and classifier fall: {first:?} -> {last:?}");

    let found = net.detect(&image, &arch, &levels, &anchors).unwrap();
    assert_eq!(found.len(), 1);
    for (b, &label) in boxes.iter().zip(&labels) {
        let best = found[0].iter().filter(|d| d.class == label).map(|d| iou(&d.bbox, b)).fold(0.0f32, f32::max);
        assert!(best > 0.5, "class {label}: best IoU {best} in {:?}", found[0]);
    }
    assert!(found[0].len() <= cfg.detections_per_img);
}

#[test]
fn a_supernet_step_trains_only_the_sampled_path() {
    let (space, arch) = Preset::by_name("coco-fpn-300m").unwrap().resolve();
    let cfg = small_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FasterRcnn::new(&vs, &space, Paths::All, &cfg, 0).unwrap();
    let params = net.path_parameters(&arch).unwrap();
    let names: std::collections::HashSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
    for head in ["rpn.head.conv.0.0.weight", "roi_heads.box_head.fc6.weight", "roi_heads.box_predictor.bbox_pred.bias"]
    {
        assert!(names.contains(head), "{head}");
    }
    // layer 0 uses choice arch[0]: its weights are in, the other choices' are not
    let chosen = arch.choices()[0].index();
    assert!(names.iter().any(|n| n.starts_with(&format!("backbone.features.0.{chosen}."))));
    for other in (0..4).filter(|&c| c != chosen) {
        assert!(!names.iter().any(|n| n.starts_with(&format!("backbone.features.0.{other}."))), "choice {other}");
    }
    let levels = pyramid_levels(&space, &arch, &cfg).unwrap();
    let anchors = all_anchors(&levels, &cfg);
    let (image, boxes, labels) = scene();
    let truth = vec![image_truth(&anchors, &boxes, &labels, &cfg)];
    let loss = net.training_loss(&image, &arch, &truth, &levels, &anchors, &mut Rng::seed(2)).unwrap();
    loss.total().backward();
    let grads: std::collections::HashMap<String, bool> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| {
            (
                name.replace('|', "."),
                t.grad().defined() && t.grad().abs().sum(detnas_train::tch::Kind::Float).double_value(&[]) > 0.0,
            )
        })
        .collect();
    for (name, has_grad) in &grads {
        if *has_grad {
            assert!(names.contains(name.as_str()), "{name} has a gradient but is not on the path");
        }
    }
    assert!(grads["roi_heads.box_head.fc6.weight"] && grads["rpn.head.cls_logits.weight"]);
}

/// A Faster R-CNN training configuration on the synthetic set (96x96, 2 classes).
fn trainer_config(data: detnas_train::config::DataSource, iterations: usize) -> detnas_train::config::DetTrainConfig {
    let mut cfg = crate::train_detection::small_config(data, iterations);
    cfg.arch = Some("coco-fpn-300m".into());
    cfg.batch_size = 2;
    let mut det = small_config();
    det.input = InputSize::new(96, 96);
    det.faster_rcnn_mut().unwrap().rpn.anchor_sizes = vec![12.0, 24.0, 48.0, 96.0, 192.0];
    cfg.detector = det;
    cfg
}

#[test]
fn the_trainer_overfits_a_tiny_set_resumes_exactly_and_evaluates_its_checkpoint() {
    use detnas_train::run::Start;
    use detnas_train::trainer::{EvalOptions, evaluate_checkpoint, train_detection};
    let dir = tempfile::tempdir().unwrap();
    let data = crate::train_detection::synthetic_sized(&dir.path().join("data"), 4, 96);
    let mut cfg = trainer_config(data.clone(), 150);
    cfg.val = Some(data);
    let out = dir.path().join("run");
    let outcome = train_detection(&cfg, &out, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    let stats = outcome.eval.expect("evaluated on the training images");
    eprintln!("Faster R-CNN: AP {:.3} AP50 {:.3}", stats.stats[0], stats.stats[1]);
    assert!(stats.stats[1] >= 0.6, "AP50 {:.3} after overfitting 4 images", stats.stats[1]);
    let state = &outcome.state;
    assert_eq!(state.kind, detnas_core::checkpoint::CheckpointKind::FasterRcnn);
    let names: Vec<&str> = state.history[0].parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["objectness", "rpn_box", "cls", "box"]);
    let (first, last) = (state.history.first().unwrap().loss, state.history.last().unwrap().loss);
    assert!(last < first / 2.0, "loss {first} -> {last}");

    // The checkpoint reopens as a Faster R-CNN and gives the same AP.
    let ck = detnas_train::checkpoint::open(&out, None, Device::Cpu).unwrap();
    assert!(matches!(ck.net, detnas_train::detector::DetectionNet::FasterRcnn(_)));
    let again = evaluate_checkpoint(&ck, &EvalOptions::default()).unwrap();
    assert_eq!(again.stats.stats, stats.stats);

    // Resume: 6 + 6 steps equal 12 straight steps (RoI sampling is seeded per step).
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    let mut full = cfg.clone();
    full.val = None;
    full.iterations = 12;
    full.checkpoint_every = 6;
    let mut half = full.clone();
    half.iterations = 6;
    train_detection(&full, &straight, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    train_detection(&half, &split, Start::Fresh, Device::Cpu, &mut |_| {}).unwrap();
    train_detection(&full, &split, Start::Resume, Device::Cpu, &mut |_| {}).unwrap();
    let weights = |d: &std::path::Path| {
        let state = detnas_train::checkpoint::load_state(d).unwrap();
        let mut named = Tensor::read_safetensors(d.join(state.weights)).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(n, t)| (n, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect::<Vec<_>>()
    };
    assert_eq!(weights(&split), weights(&straight), "resumed and uninterrupted runs differ");
}

/// tch and the exported graph agree on trained weights: the same proposals and the same final
/// detections, for both channel shuffles and both box heads (two fully connected layers; two
/// separable convs and one fully connected layer).
#[cfg(feature = "infer")]
#[test]
fn trained_faster_rcnn_exports_and_matches_onnx_runtime() {
    use detnas_core::detector::HeadConv;
    use detnas_core::space::ChannelShuffle;
    use detnas_infer::ort::session::Session;
    use detnas_infer::ort::value::TensorRef;
    use detnas_onnx::{ExportOptions, Weights, export_detector, graph::encode};
    use std::path::PathBuf;
    let (space, arch) = Preset::by_name("coco-fpn-300m").unwrap().resolve();
    for (shuffle, convs) in [(ChannelShuffle::EvenOdd, 0), (ChannelShuffle::HalfInterleave, 2)] {
        detnas_train::tch::manual_seed(0);
        let mut cfg = small_config();
        cfg.shuffle = shuffle;
        cfg.head_convs = convs;
        cfg.head_channels = 16;
        cfg.head_conv = HeadConv::Separable;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = FasterRcnn::new(&vs, &space, Paths::Single(&arch), &cfg, 0).unwrap();
        // every tensor matters (random BN statistics, spread scores), then a few real steps
        let params = detnas_core::detector::plan::detector_params(&space, Paths::Single(&arch), &cfg);
        let dir = tempfile::tempdir().unwrap();
        let start: PathBuf = dir.path().join("start.safetensors");
        Weights::random_varied(&params, 4).save(&start).unwrap();
        vs.load(&start).unwrap();
        let levels = pyramid_levels(&space, &arch, &cfg).unwrap();
        let anchors = all_anchors(&levels, &cfg);
        let (image, boxes, labels) = scene();
        let truth = vec![image_truth(&anchors, &boxes, &labels, &cfg)];
        let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.001).unwrap();
        let mut rng = Rng::seed(3);
        for _ in 0..3 {
            let loss = net.training_loss(&image, &arch, &truth, &levels, &anchors, &mut rng).unwrap();
            opt.backward_step(&loss.total());
        }
        let trained = dir.path().join("w.safetensors");
        vs.save(&trained).unwrap();
        let model = export_detector(
            &space,
            &arch,
            &cfg,
            &Weights::load(&trained).unwrap(),
            &ExportOptions { raw_outputs: true, ..Default::default() },
        )
        .unwrap();
        let bytes = encode(&model).unwrap();

        let ours = net.detect(&image, &arch, &levels, &anchors).unwrap().remove(0);
        let env = detnas_infer::runtime::environment().unwrap();
        let mut session = Session::builder(env).unwrap().commit_from_memory(&bytes).unwrap();
        let pixels: Vec<f32> = Vec::try_from(image.flatten(0, -1)).unwrap();
        let input = TensorRef::from_array_view(([1usize, 3, 128, 128], &pixels[..])).unwrap();
        let out = session.run(detnas_infer::ort::inputs!["images" => input]).unwrap();
        let get = |name: &str| out[name].try_extract_tensor::<f32>().unwrap().1.to_vec();
        let (oboxes, oscores) = (get("boxes"), get("scores"));
        let olabels = out["labels"].try_extract_tensor::<i64>().unwrap().1.to_vec();
        assert!(!ours.is_empty(), "{shuffle:?}/{convs}: the trained network detects something");
        assert_eq!(ours.len(), oscores.len(), "{shuffle:?}/{convs}: detection count");
        for (i, d) in ours.iter().enumerate() {
            assert_eq!(d.class as i64, olabels[i], "{shuffle:?}/{convs}: detection {i}");
            // libtorch and ONNX Runtime kernels (AVX2 here) differ by up to ~2e-4 after two stages
            assert!((d.score - oscores[i]).abs() < 1e-3, "{shuffle:?}/{convs}: score {} vs {}", d.score, oscores[i]);
            for j in 0..4 {
                let (a, b) = (d.bbox[j], oboxes[i * 4 + j]);
                assert!(
                    // relative, or a hundredth of a pixel near 0 (two stages of regression: CPU
                    // kernels that differ, AVX2 vs AVX-512, move a sub-pixel coordinate by ~5e-3)
                    (a - b).abs() <= (1e-3 * a.abs()).max(1e-2),
                    "{shuffle:?}/{convs}: {:?} vs {:?}",
                    d.bbox,
                    &oboxes[i * 4..i * 4 + 4]
                );
            }
        }
        let proposals = get("proposals");
        assert!(!proposals.is_empty() && proposals.len() % 4 == 0);
    }
}

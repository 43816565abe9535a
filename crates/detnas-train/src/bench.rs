//! Timing of one detection training step (forward, loss, backward, SGD) on a fixed synthetic batch,
//! comparable with `tools/bench_train_step.py` (PyTorch) at the same configuration.

use crate::config::DetTrainConfig;
use crate::data::BatchTargets;
use crate::detector::DetectionNet;
use crate::error::{Result, TrainError};
use crate::faster_rcnn::{ImageTruth, image_truth};
use crate::loss::{IGNORE, ImageTargets};
use crate::optim::PathSgd;
use detnas_core::detector::boxes::BBox;
use detnas_core::detector::plan::Paths;
use detnas_core::detector::{DetectorConfig, all_anchors, pyramid_levels};
use detnas_core::rng::Rng;
use detnas_core::space::arch::resolve;
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// What to time.
#[derive(Clone, Copy, Debug)]
pub struct StepBench {
    /// Build every choice of every layer (the supernet) instead of the one path.
    pub supernet: bool,
    /// Images per step.
    pub batch_size: usize,
    /// Timed steps (at least 1).
    pub steps: usize,
    /// Untimed steps first (at least one: the first step's loss is reported).
    pub warmup: usize,
    /// Where the steps run.
    pub device: Device,
}

/// Step times in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    /// Whether the supernet was timed.
    pub supernet: bool,
    /// Images per step.
    pub batch: usize,
    /// `[height, width]`.
    pub input: [i64; 2],
    /// Median time of a step.
    pub ms_per_step_p50: f64,
    /// Mean time of a step.
    pub ms_per_step_mean: f64,
    /// Total loss of the first (untimed) step. The weights and the batch are seeded whatever the
    /// device, so CPU and CUDA runs of the same configuration start equal and their first losses
    /// differ only by the kernels' rounding.
    pub loss_first: f64,
}

/// Times training steps of `cfg.arch` (required) at `cfg.detector`'s input on random images with
/// fixed targets: for RetinaNet like the PyTorch script (about 1% foreground, 5% ignored anchors);
/// for Faster R-CNN 8 random boxes per image (RoI sampling seeded, the same each step); momentum 0.9,
/// weight decay 1e-4, lr 0.01. GPU work is synchronised before each clock stop. The caller sets
/// libtorch's thread count.
pub fn time_step(cfg: &DetTrainConfig, opts: &StepBench) -> Result<StepTiming> {
    let arch_text = cfg
        .arch
        .as_deref()
        .ok_or_else(|| TrainError::Config("the config needs an `arch` (the path to time)".into()))?;
    let (space, arch) = resolve(Some(&cfg.space), arch_text)?;
    let dev = opts.device;
    let paths = if opts.supernet { Paths::All } else { Paths::Single(&arch) };
    let vs = nn::VarStore::new(dev);
    // the weights come from the project's seeded initialisation (seed 0) whatever the device; the
    // batch from libtorch's seeded CPU generator, then moved
    let net = DetectionNet::build(&vs, &space, paths, &cfg.detector, None, 0)?;
    let (h, w) = (cfg.detector.input.height as i64, cfg.detector.input.width as i64);
    tch::manual_seed(0);
    let x =
        (Tensor::rand([opts.batch_size as i64, 3, h, w], (Kind::Float, Device::Cpu)) * 255.0).to_device(dev).detach();
    let mut rng = Rng::seed(0);
    let targets = match &net {
        DetectionNet::Retinanet(r) => {
            let (cls, _) = tch::no_grad(|| r.forward(&x, &arch, false))?;
            let (anchors, classes) = (cls.size()[1] as usize, cls.size()[2] as usize);
            BatchTargets::Retinanet((0..opts.batch_size).map(|_| random_targets(&mut rng, anchors, classes)).collect())
        }
        DetectionNet::FasterRcnn(_) => {
            let det = &cfg.detector;
            let anchors = all_anchors(&pyramid_levels(&space, &arch, det)?, det);
            let truth = (0..opts.batch_size).map(|_| random_truth(&mut rng, &anchors, det)).collect();
            BatchTargets::FasterRcnn(truth)
        }
    };
    let genes = net.default_genes();
    let mut opt = PathSgd::new(0.9, 1e-4, true);
    let mut step = || -> Result<f64> {
        let params = net.path_parameters(&arch, &genes)?;
        PathSgd::zero_grad(&params);
        let loss = net.step_loss(&x, &arch, &genes, &targets, 0, 0)?.total;
        loss.backward();
        opt.step(&params, 0.01);
        Ok(loss.double_value(&[]))
    };
    let loss_first = step()?;
    for _ in 1..opts.warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(opts.steps.max(1));
    for _ in 0..opts.steps.max(1) {
        let t = Instant::now();
        step()?;
        if let Device::Cuda(i) = dev {
            tch::Cuda::synchronize(i as i64);
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(StepTiming {
        supernet: opts.supernet,
        batch: opts.batch_size,
        input: [h, w],
        ms_per_step_p50: times[times.len() / 2],
        ms_per_step_mean: times.iter().sum::<f64>() / times.len() as f64,
        loss_first,
    })
}

/// Faster R-CNN ground truth of one image: 8 random boxes of 16 to 25% of the input side, random
/// classes, with their RPN targets.
fn random_truth(rng: &mut Rng, anchors: &[BBox], det: &DetectorConfig) -> ImageTruth {
    let (w, h) = (det.input.width as f32, det.input.height as f32);
    let boxes: Vec<BBox> = (0..8)
        .map(|_| {
            let side = (0.16 + 0.09 * rng.unit() as f32) * w.min(h);
            let (x, y) = (rng.unit() as f32 * (w - side), rng.unit() as f32 * (h - side));
            [x, y, x + side, y + side]
        })
        .collect();
    let labels: Vec<usize> = boxes.iter().map(|_| rng.below(det.num_classes() as u64) as usize).collect();
    image_truth(anchors, &boxes, &labels, det)
}

/// Targets of one image: each anchor foreground of a random class with probability 0.01, ignored
/// with 0.05, background otherwise; deltas normal with sd 0.1.
fn random_targets(rng: &mut Rng, anchors: usize, classes: usize) -> ImageTargets {
    let mut t = ImageTargets { labels: vec![-1; anchors], deltas: vec![0.0; anchors * 4], num_foreground: 0 };
    for a in 0..anchors {
        let r = rng.unit();
        if r < 0.01 {
            t.labels[a] = rng.below(classes as u64) as i64;
            t.num_foreground += 1;
        } else if r < 0.06 {
            t.labels[a] = IGNORE;
        }
        for d in 0..4 {
            t.deltas[a * 4 + d] = detnas_core::detector::plan::normal(rng) * 0.1;
        }
    }
    t
}

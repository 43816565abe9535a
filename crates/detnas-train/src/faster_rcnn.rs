//! FPN Faster R-CNN on a DetNAS backbone (torchvision semantics): FPN on C2..C5 with a max-pool
//! P6, the RPN on P2..P6, multi-scale RoIAlign on P2..P5 and the box head.
//!
//! The network ops run in libtorch; the box bookkeeping between them (anchor targets, proposal
//! selection, RoI sampling and targets, final detections) runs on the CPU with
//! [`detnas_core::detector::two_stage`], the one implementation the exporter's references share.
//! Parameter names come from [`detnas_core::detector::plan`], so a checkpoint exports as is.

use crate::error::{Result, TrainError};
use crate::modules::{Builder, ConvBn, chain, tensor};
use crate::net::{Backbone, builder};
use crate::optim::PathParam;
use crate::roi_align::multi_scale_roi_align;
use detnas_core::detector::boxes::BBox;
use detnas_core::detector::plan::{
    LinearUnit, Paths, box_head_plan, detector_params, fpn_in_channels, fpn_plan, rpn_plan,
};
use detnas_core::detector::two_stage::{
    BoxDetection, LevelProposals, Proposal, RpnTargets, box_head_detections, roi_targets, sample_balanced,
    select_proposals,
};
use detnas_core::detector::{BoxLoss, DetectorConfig, FasterRcnnSettings, LevelShape};
use detnas_core::rng::Rng;
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use tch::{Device, Kind, Reduction, Tensor, nn};

/// A fully connected layer.
struct Linear {
    name: String,
    weight: Tensor,
    bias: Tensor,
    relu: bool,
}

impl Linear {
    fn new(b: &Builder<'_, '_>, u: &LinearUnit) -> Self {
        Linear {
            name: u.name.clone(),
            weight: b.make(&format!("{}.weight", u.name)),
            bias: b.make(&format!("{}.bias", u.name)),
            relu: u.relu,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.weight, Some(&self.bias));
        if self.relu { y.relu() } else { y }
    }

    fn parameters(&self) -> Vec<PathParam> {
        vec![
            PathParam::whole(format!("{}.weight", self.name), self.weight.shallow_clone()),
            PathParam::whole(format!("{}.bias", self.name), self.bias.shallow_clone()),
        ]
    }
}

/// Ground truth of one training image, in input pixels, with its RPN targets (from the loader).
#[derive(Clone, Debug)]
pub struct ImageTruth {
    /// Boxes `[x1, y1, x2, y2]`.
    pub boxes: Vec<BBox>,
    /// Class index of each box (0-based).
    pub labels: Vec<usize>,
    /// Anchor labels and box targets over every anchor of the pyramid.
    pub rpn: RpnTargets,
}

/// The four Faster R-CNN losses of a batch (scalars).
pub struct FasterRcnnLoss {
    /// RPN objectness (binary cross-entropy over the sampled anchors).
    pub objectness: Tensor,
    /// RPN box regression (smooth L1 over the sampled positives / sampled count).
    pub rpn_box: Tensor,
    /// Box-head classification (cross-entropy over the sampled RoIs).
    pub classifier: Tensor,
    /// Box-head regression (smooth L1 of the true class's deltas / sampled count).
    pub box_reg: Tensor,
}

impl FasterRcnnLoss {
    /// The minimised total.
    pub fn total(&self) -> Tensor {
        &self.objectness + &self.rpn_box + &self.classifier + &self.box_reg
    }
}

/// FPN Faster R-CNN (one path or the backbone supernet; the FPN and heads are fixed).
pub struct FasterRcnn {
    /// The backbone.
    pub backbone: Backbone,
    /// The detector configuration (`kind = "faster-rcnn"`).
    pub cfg: DetectorConfig,
    inner: Vec<ConvBn>,
    layer: Vec<ConvBn>,
    rpn_conv: ConvBn,
    rpn_cls: ConvBn,
    rpn_reg: ConvBn,
    box_convs: Vec<Vec<ConvBn>>,
    fcs: Vec<Linear>,
    cls_score: Linear,
    bbox_pred: Linear,
    mean: Tensor,
    inv_std: Tensor,
}

/// Pyramid outputs of a batch: P2..P6 feature maps and the RPN outputs over every anchor.
struct Pyramid {
    features: Vec<Tensor>,
    /// `[B, N]` objectness logits, anchors in [`detnas_core::detector::all_anchors`] order.
    objectness: Tensor,
    /// `[B, N, 4]` box deltas.
    deltas: Tensor,
}

impl FasterRcnn {
    /// Builds the detector with torchvision initialisation from `seed` (the values the exporter's
    /// random initialisation gives).
    pub fn new(
        vs: &nn::VarStore,
        space: &SearchSpace,
        paths: Paths<'_>,
        cfg: &DetectorConfig,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        if cfg.faster_rcnn().is_none() {
            return Err(TrainError::Config(format!(
                "a Faster R-CNN needs `kind = \"faster-rcnn\"`, not {}",
                cfg.kind()
            )));
        }
        let root = vs.root();
        let b = builder(&root, detector_params(space, paths, cfg), seed);
        let eps = cfg.bn_eps as f64;
        let backbone = Backbone::build(&b, space, paths, cfg.shuffle, eps);
        let fpn = fpn_plan(&fpn_in_channels(space, cfg.kind()), cfg);
        let units =
            |v: &[detnas_core::detector::plan::ConvUnit]| v.iter().map(|u| ConvBn::new(&b, u, eps)).collect::<Vec<_>>();
        let rpn = rpn_plan(cfg);
        let head = box_head_plan(cfg);
        let p = &cfg.preprocess;
        let device = vs.device();
        Ok(FasterRcnn {
            backbone,
            cfg: cfg.clone(),
            inner: units(&fpn.inner),
            layer: units(&fpn.layer),
            rpn_conv: ConvBn::new(&b, &rpn.conv, eps),
            rpn_cls: ConvBn::new(&b, &rpn.cls_logits, eps),
            rpn_reg: ConvBn::new(&b, &rpn.bbox_pred, eps),
            box_convs: head.convs.iter().map(|l| units(l)).collect(),
            fcs: head.fcs.iter().map(|u| Linear::new(&b, u)).collect(),
            cls_score: Linear::new(&b, &head.cls_score),
            bbox_pred: Linear::new(&b, &head.bbox_pred),
            mean: tensor(&p.mean.map(|m| m * 255.0), &[1, 3, 1, 1], device),
            inv_std: tensor(&p.std.map(|s| 1.0 / (255.0 * s)), &[1, 3, 1, 1], device),
        })
    }

    fn settings(&self) -> &FasterRcnnSettings {
        self.cfg.faster_rcnn().expect("checked by FasterRcnn::new")
    }

    /// `255 * mean` of the input normalisation, `[1, 3, 1, 1]`.
    pub(crate) fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// `1 / (255 * std)` of the input normalisation, `[1, 3, 1, 1]`.
    pub(crate) fn inv_std(&self) -> &Tensor {
        &self.inv_std
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.mean.device()
    }

    /// Backbone, FPN (P2..P6) and RPN head on `images` (`[B, 3, H, W]`, 0-255).
    fn pyramid(&self, images: &Tensor, arch: &Arch, train: bool) -> Result<Pyramid> {
        let x = (images - &self.mean) * &self.inv_std;
        let stages = self.backbone.forward(&x, arch, train)?;
        let idx = detnas_core::detector::plan::fpn_stage_indices(&self.backbone.space, self.cfg.kind());
        let feats: Vec<&Tensor> = idx.iter().map(|&i| &stages[i]).collect();
        let top = feats.len() - 1;
        let mut last_inner = self.inner[top].forward(feats[top], train);
        let mut features = vec![self.layer[top].forward(&last_inner, train)];
        for i in (0..top).rev() {
            let lateral = self.inner[i].forward(feats[i], train);
            let size = lateral.size();
            last_inner = lateral + last_inner.upsample_nearest2d([size[2], size[3]], None, None);
            features.insert(0, self.layer[i].forward(&last_inner, train));
        }
        let p6 = features[top].max_pool2d([1, 1], [2, 2], [0, 0], [1, 1], false);
        features.push(p6);
        let a = self.cfg.anchors_per_cell() as i64;
        let (mut objectness, mut deltas) = (Vec::new(), Vec::new());
        for f in &features {
            let t = self.rpn_conv.forward(f, train);
            let s = t.size();
            // (y, x, anchor) order, as the anchors are generated
            let logits = self.rpn_cls.forward(&t, train).permute([0, 2, 3, 1]).reshape([s[0], -1]);
            let d = self.rpn_reg.forward(&t, train).view([s[0], a, 4, s[2], s[3]]).permute([0, 3, 4, 1, 2]);
            objectness.push(logits);
            deltas.push(d.reshape([s[0], -1, 4]));
        }
        Ok(Pyramid { features, objectness: Tensor::cat(&objectness, 1), deltas: Tensor::cat(&deltas, 1) })
    }

    /// Proposals of each image from the RPN outputs (no gradient), with the train or test top-N.
    fn proposals(
        &self,
        p: &Pyramid,
        levels: &[LevelShape],
        anchors: &[BBox],
        train: bool,
    ) -> Result<Vec<Vec<Proposal>>> {
        let rpn = &self.settings().rpn;
        let (pre, post) = if train {
            (rpn.pre_nms_top_n_train, rpn.post_nms_top_n_train)
        } else {
            (rpn.pre_nms_top_n_test, rpn.post_nms_top_n_test)
        };
        let objectness: Vec<f32> =
            Vec::try_from(p.objectness.detach().to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        let deltas: Vec<f32> =
            Vec::try_from(p.deltas.detach().to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        let n = anchors.len();
        let per_level: Vec<usize> = levels.iter().map(|l| l.height * l.width * self.cfg.anchors_per_cell()).collect();
        let (w, h) = (self.cfg.input.width as f32, self.cfg.input.height as f32);
        let batch = objectness.len() / n.max(1);
        Ok((0..batch)
            .map(|i| {
                let obj = &objectness[i * n..(i + 1) * n];
                let d: Vec<[f32; 4]> =
                    deltas[i * n * 4..(i + 1) * n * 4].chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
                let mut start = 0;
                let level_data: Vec<LevelProposals<'_>> = per_level
                    .iter()
                    .map(|&len| {
                        let r = start..start + len;
                        start += len;
                        LevelProposals { objectness: &obj[r.clone()], deltas: &d[r.clone()], anchors: &anchors[r] }
                    })
                    .collect();
                select_proposals(&level_data, w, h, pre, post, rpn)
            })
            .collect())
    }

    /// Pooled features of `rois` (`(image index, box)`) through the box head: class logits
    /// `[R, K + 1]` and deltas `[R, 4 (K + 1)]`.
    fn box_head(&self, features: &[Tensor], rois: &[(usize, BBox)], train: bool) -> (Tensor, Tensor) {
        let roi = &self.settings().roi_heads;
        let flat: Vec<f32> = rois.iter().flat_map(|(i, b)| [*i as f32, b[0], b[1], b[2], b[3]]).collect();
        let rois_t = Tensor::from_slice(&flat).view([rois.len() as i64, 5]).to_device(self.device());
        let scales: Vec<f64> = (0..4).map(|l| 1.0 / f64::from(4u32 << l)).collect();
        let pool = roi.pool_size as i64;
        let mut x = multi_scale_roi_align(&features[..4], &rois_t, &scales, (pool, pool), roi.sampling_ratio as i64);
        for units in &self.box_convs {
            x = chain(units, &x, train);
        }
        let mut x = x.flatten(1, -1);
        for fc in &self.fcs {
            x = fc.forward(&x);
        }
        (self.cls_score.forward(&x), self.bbox_pred.forward(&x))
    }

    /// The training losses of a batch (`images` letterboxed to the configured input; one
    /// [`ImageTruth`] per image); `rng` samples the RoIs.
    pub fn training_loss(
        &self,
        images: &Tensor,
        arch: &Arch,
        truth: &[ImageTruth],
        levels: &[LevelShape],
        anchors: &[BBox],
        rng: &mut Rng,
    ) -> Result<FasterRcnnLoss> {
        let s = self.settings();
        let p = self.pyramid(images, arch, true)?;
        let device = self.device();
        // RPN: the sampled anchors of every image together.
        let (mut sampled, mut labels, mut positives, mut targets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let n = anchors.len() as i64;
        for (i, t) in truth.iter().enumerate() {
            let (pos, neg) = sample_balanced(&t.rpn.labels, s.rpn.batch_size_per_image, s.rpn.positive_fraction, rng);
            let base = i as i64 * n;
            for &a in &pos {
                sampled.push(base + a as i64);
                labels.push(1.0f32);
                positives.push(base + a as i64);
                targets.extend_from_slice(&t.rpn.deltas[a]);
            }
            for &a in &neg {
                sampled.push(base + a as i64);
                labels.push(0.0f32);
            }
        }
        let count = sampled.len().max(1) as f64;
        let index = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let logits = p.objectness.reshape([-1]).index_select(0, &index(&sampled));
        let objectness = logits.binary_cross_entropy_with_logits::<Tensor>(
            &tensor(&labels, &[labels.len() as i64], device),
            None,
            None,
            Reduction::Mean,
        );
        let pred = p.deltas.reshape([-1, 4]).index_select(0, &index(&positives));
        let target = tensor(&targets, &[positives.len() as i64, 4], device);
        let rpn_box = box_loss(&pred, &target, s.rpn.box_loss, s.rpn.smooth_l1_beta) / count;

        // Box head: proposals (no gradient), sampled RoIs with their targets.
        let proposals = self.proposals(&p, levels, anchors, true)?;
        let (mut rois, mut roi_labels, mut roi_targets_flat) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (props, t)) in proposals.iter().zip(truth).enumerate() {
            let boxes: Vec<BBox> = props.iter().map(|p| p.bbox).collect();
            let sample = roi_targets(&boxes, &t.boxes, &t.labels, &s.roi_heads, rng);
            rois.extend(sample.rois.iter().map(|b| (i, *b)));
            roi_labels.extend(sample.labels);
            roi_targets_flat.extend(sample.deltas.iter().flatten());
        }
        let (class_logits, box_deltas) = self.box_head(&p.features, &rois, true);
        let r = rois.len() as i64;
        let labels_t = Tensor::from_slice(&roi_labels).to_device(device);
        let classifier = class_logits.cross_entropy_loss::<Tensor>(&labels_t, None, Reduction::Mean, -100, 0.0);
        let fg: Vec<i64> = roi_labels.iter().enumerate().filter(|(_, l)| **l > 0).map(|(i, _)| i as i64).collect();
        let k1 = self.cfg.predicted_classes() as i64;
        let fg_t = index(&fg);
        let fg_labels = labels_t.index_select(0, &fg_t);
        let per_class = box_deltas.view([r, k1, 4]).index_select(0, &fg_t);
        let chosen = per_class.gather(1, &fg_labels.view([-1, 1, 1]).expand([-1, 1, 4], false), false).squeeze_dim(1);
        let all_targets = tensor(&roi_targets_flat, &[r, 4], device);
        let box_target = all_targets.index_select(0, &fg_t);
        let box_reg = box_loss(&chosen, &box_target, BoxLoss::SmoothL1, s.roi_heads.smooth_l1_beta) / (r.max(1) as f64);
        Ok(FasterRcnnLoss { objectness, rpn_box, classifier, box_reg })
    }

    /// Final detections of each image (input pixels), no gradient, eval-mode BN.
    pub fn detect(
        &self,
        images: &Tensor,
        arch: &Arch,
        levels: &[LevelShape],
        anchors: &[BBox],
    ) -> Result<Vec<Vec<BoxDetection>>> {
        let s = self.settings();
        tch::no_grad(|| {
            let p = self.pyramid(images, arch, false)?;
            let proposals = self.proposals(&p, levels, anchors, false)?;
            let rois: Vec<(usize, BBox)> =
                proposals.iter().enumerate().flat_map(|(i, ps)| ps.iter().map(move |p| (i, p.bbox))).collect();
            let k1 = self.cfg.predicted_classes();
            if rois.is_empty() {
                return Ok(vec![Vec::new(); proposals.len()]);
            }
            let (logits, deltas) = self.box_head(&p.features, &rois, false);
            let logits: Vec<f32> = Vec::try_from(logits.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
            let deltas: Vec<f32> = Vec::try_from(deltas.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
            let (w, h) = (self.cfg.input.width as f32, self.cfg.input.height as f32);
            let mut start = 0;
            Ok(proposals
                .iter()
                .map(|ps| {
                    let r = start..start + ps.len();
                    start += ps.len();
                    let boxes: Vec<BBox> = ps.iter().map(|p| p.bbox).collect();
                    let l: Vec<Vec<f32>> = r.clone().map(|j| logits[j * k1..(j + 1) * k1].to_vec()).collect();
                    let d: Vec<Vec<[f32; 4]>> = r
                        .map(|j| {
                            deltas[j * k1 * 4..(j + 1) * k1 * 4]
                                .chunks_exact(4)
                                .map(|c| [c[0], c[1], c[2], c[3]])
                                .collect()
                        })
                        .collect();
                    box_head_detections(
                        &boxes,
                        &l,
                        &d,
                        w,
                        h,
                        s.roi_heads.bbox_reg_weights,
                        self.cfg.score_thresh,
                        self.cfg.nms_thresh,
                        self.cfg.detections_per_img,
                    )
                })
                .collect())
        })
    }

    /// Named trainable tensors of the path `arch`: the backbone path, the FPN and both heads.
    pub fn path_parameters(&self, arch: &Arch) -> Result<Vec<PathParam>> {
        let mut v = self.backbone.path_parameters(arch)?;
        for u in self.inner.iter().chain(&self.layer).chain([&self.rpn_conv, &self.rpn_cls, &self.rpn_reg]) {
            v.extend(u.parameters());
        }
        for u in self.box_convs.iter().flatten() {
            v.extend(u.parameters());
        }
        for l in self.fcs.iter().chain([&self.cls_score, &self.bbox_pred]) {
            v.extend(l.parameters());
        }
        Ok(v)
    }
}

/// Sum of the smooth-L1 (`beta`) or L1 box losses.
fn box_loss(pred: &Tensor, target: &Tensor, kind: BoxLoss, beta: f32) -> Tensor {
    if pred.size()[0] == 0 {
        return pred.sum(Kind::Float) * 0.0;
    }
    match kind {
        BoxLoss::SmoothL1 => pred.smooth_l1_loss(target, Reduction::Sum, f64::from(beta)),
        BoxLoss::L1 => pred.l1_loss(target, Reduction::Sum),
    }
}

/// The RPN targets and ground truth of one image for [`FasterRcnn::training_loss`].
pub fn image_truth(anchors: &[BBox], boxes: &[BBox], labels: &[usize], cfg: &DetectorConfig) -> ImageTruth {
    let rpn = cfg.faster_rcnn().expect("a faster-rcnn configuration");
    ImageTruth {
        boxes: boxes.to_vec(),
        labels: labels.to_vec(),
        rpn: detnas_core::detector::two_stage::rpn_targets(anchors, boxes, &rpn.rpn),
    }
}

impl crate::detector::TrainingNet for FasterRcnn {
    fn cfg(&self) -> &DetectorConfig {
        &self.cfg
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn device(&self) -> Device {
        FasterRcnn::device(self)
    }

    fn path_parameters(
        &self,
        arch: &Arch,
        genes: &detnas_core::search::genome::DetectorGenes,
    ) -> Result<Vec<PathParam>> {
        self.holds(genes)?;
        FasterRcnn::path_parameters(self, arch)
    }

    fn step_loss(
        &self,
        images: &Tensor,
        arch: &Arch,
        genes: &detnas_core::search::genome::DetectorGenes,
        targets: &crate::data::BatchTargets,
        step: usize,
        seed: u64,
    ) -> Result<crate::run::StepLoss> {
        let crate::data::BatchTargets::FasterRcnn(t) = targets else {
            return Err(crate::detector::other_family_targets());
        };
        self.holds(genes)?;
        let levels = detnas_core::detector::pyramid_levels(&self.backbone.space, arch, &self.cfg)?;
        let anchors = detnas_core::detector::all_anchors(&levels, &self.cfg);
        let stream = detnas_core::detector::contract::seeds::stream_seed(
            seed,
            detnas_core::detector::contract::seeds::ROI_SAMPLING,
            step as u64,
        );
        let mut rng = Rng::seed(stream);
        let loss = self.training_loss(images, arch, t, &levels, &anchors, &mut rng)?;
        Ok(crate::run::StepLoss {
            total: loss.total(),
            parts: vec![
                ("objectness", loss.objectness),
                ("rpn_box", loss.rpn_box),
                ("cls", loss.classifier),
                ("box", loss.box_reg),
            ],
        })
    }

    fn detect(
        &self,
        images: &Tensor,
        arch: &Arch,
        genes: &detnas_core::search::genome::DetectorGenes,
    ) -> Result<Vec<Vec<detnas_core::detector::RawDetection>>> {
        self.holds(genes)?;
        let levels = detnas_core::detector::pyramid_levels(&self.backbone.space, arch, &self.cfg)?;
        let anchors = detnas_core::detector::all_anchors(&levels, &self.cfg);
        let found = FasterRcnn::detect(self, images, arch, &levels, &anchors)?;
        Ok(found
            .into_iter()
            .map(|d| {
                d.into_iter()
                    .map(|d| detnas_core::detector::RawDetection { bbox: d.bbox, score: d.score, label: d.class })
                    .collect()
            })
            .collect())
    }

    /// Only the backbone has BN, so only its path runs.
    fn recalibration_forward(
        &self,
        images: &Tensor,
        arch: &Arch,
        _genes: &detnas_core::search::genome::DetectorGenes,
    ) -> Result<()> {
        let x = (images - self.mean()) * self.inv_std();
        self.backbone.forward(&x, arch, true).map(drop)
    }
}

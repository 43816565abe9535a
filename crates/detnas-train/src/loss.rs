//! RetinaNet training targets and losses (torchvision semantics).
//!
//! Matching and box encoding run on the CPU with the core box maths
//! ([`detnas_core::detector::boxes::match_anchors`], [`detnas_core::detector::boxes::BoxCoder`]), the one
//! implementation shared with export and inference; the losses run in libtorch.

use detnas_core::detector::DetectorConfig;
use detnas_core::detector::boxes::{AnchorMatch, BBox, BoxCoder, match_anchors};
use tch::{Device, Kind, Tensor};

/// Anchor label for "ignored" (between the IoU thresholds).
pub const IGNORE: i64 = -2;
/// Anchor label for "background" (matched to no box).
pub const BACKGROUND: i64 = -1;

/// Per-image targets over all anchors.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTargets {
    /// Class index, [`BACKGROUND`] or [`IGNORE`] per anchor.
    pub labels: Vec<i64>,
    /// Encoded regression targets per anchor (zeros unless foreground), row-major `[A, 4]`.
    pub deltas: Vec<f32>,
    /// Anchors matched to a box.
    pub num_foreground: usize,
}

/// Matches `anchors` to the ground truth (`fg_iou_thresh` / `bg_iou_thresh`, low-quality matches
/// allowed as in torchvision's RetinaNet) and encodes the matched boxes.
pub fn image_targets(anchors: &[BBox], boxes: &[BBox], labels: &[usize], cfg: &DetectorConfig) -> ImageTargets {
    let coder = BoxCoder::retinanet();
    let r = cfg.retinanet().expect("RetinaNet targets need a retinanet configuration (checked by RetinaNet::new)");
    let matches = match_anchors(anchors, boxes, r.fg_iou_thresh, r.bg_iou_thresh, true);
    let mut out = ImageTargets {
        labels: vec![BACKGROUND; anchors.len()],
        deltas: vec![0.0; anchors.len() * 4],
        num_foreground: 0,
    };
    for (a, m) in matches.iter().enumerate() {
        match *m {
            AnchorMatch::Background => {}
            AnchorMatch::Ignore => out.labels[a] = IGNORE,
            AnchorMatch::Foreground(g) => {
                out.labels[a] = labels[g] as i64;
                out.deltas[a * 4..a * 4 + 4].copy_from_slice(&coder.encode(&anchors[a], &boxes[g]));
                out.num_foreground += 1;
            }
        }
    }
    out
}

/// Batched targets as tensors.
pub struct Targets {
    /// `[B, A]` int64.
    pub labels: Tensor,
    /// `[B, A, 4]` float.
    pub deltas: Tensor,
    /// `[B]` float: `max(1, foreground anchors)` per image.
    pub normalizer: Tensor,
}

impl Targets {
    /// The targets of `images` stacked into tensors on `device`.
    pub fn new(images: &[ImageTargets], device: Device) -> Self {
        let b = images.len() as i64;
        let a = images.first().map_or(0, |t| t.labels.len()) as i64;
        let labels: Vec<i64> = images.iter().flat_map(|t| t.labels.iter().copied()).collect();
        let deltas: Vec<f32> = images.iter().flat_map(|t| t.deltas.iter().copied()).collect();
        let norm: Vec<f32> = images.iter().map(|t| t.num_foreground.max(1) as f32).collect();
        Targets {
            labels: Tensor::from_slice(&labels).view([b, a]).to_device(device),
            deltas: Tensor::from_slice(&deltas).view([b, a, 4]).to_device(device),
            normalizer: Tensor::from_slice(&norm).to_device(device),
        }
    }
}

/// Sigmoid focal loss, elementwise (torchvision's `sigmoid_focal_loss` without reduction).
pub fn sigmoid_focal_loss(logits: &Tensor, targets: &Tensor, alpha: f64, gamma: f64) -> Tensor {
    let p = logits.sigmoid();
    let ce = logits.binary_cross_entropy_with_logits::<Tensor>(targets, None, None, tch::Reduction::None);
    let p_t: Tensor = &p * targets + (1.0 - &p) * (1.0 - targets);
    let one_minus: Tensor = 1.0 - p_t;
    let loss: Tensor = ce * one_minus.pow_tensor_scalar(gamma);
    let alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha);
    alpha_t * loss
}

/// The two RetinaNet losses (scalars).
pub struct RetinaLoss {
    /// Sigmoid focal loss of the classification head.
    pub cls: Tensor,
    /// L1 loss of the box regression head (foreground anchors only).
    pub boxes: Tensor,
}

impl RetinaLoss {
    /// The minimised total, `cls + boxes`.
    pub fn total(&self) -> Tensor {
        &self.cls + &self.boxes
    }
}

/// Classification and box regression losses, each a mean over images of the per-image sum divided
/// by the image's foreground count (torchvision's normalisation). `cls`: `[B, A, K]`, `reg`: `[B, A, 4]`.
pub fn retinanet_loss(cls: &Tensor, reg: &Tensor, t: &Targets) -> RetinaLoss {
    let k = cls.size()[2];
    let valid = t.labels.ne(IGNORE).to_kind(Kind::Float).unsqueeze(-1);
    let fg = t.labels.ge(0);
    let onehot = t.labels.clamp_min(0).one_hot(k).to_kind(Kind::Float) * fg.to_kind(Kind::Float).unsqueeze(-1);
    let focal = sigmoid_focal_loss(cls, &onehot, 0.25, 2.0) * valid;
    let cls_loss = (focal.sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float) / &t.normalizer).mean(Kind::Float);
    let l1 = (reg - &t.deltas).abs().sum_dim_intlist([2i64].as_slice(), false, Kind::Float) * fg.to_kind(Kind::Float);
    let box_loss = (l1.sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / &t.normalizer).mean(Kind::Float);
    RetinaLoss { cls: cls_loss, boxes: box_loss }
}

/// In-place distillation (the sandwich rule): a student's outputs against a teacher's on the same
/// anchors — the sigmoid focal loss with the teacher's class probabilities as soft targets, and the
/// L1 distance to the teacher's box regressions on foreground anchors — normalised as
/// [`retinanet_loss`], so it weighs as much as a loss on the labels. `teacher_probs`: `[B, A, K]`
/// in `[0, 1]`, `teacher_reg`: `[B, A, 4]` (both detached).
pub fn distillation_loss(
    cls: &Tensor,
    reg: &Tensor,
    teacher_probs: &Tensor,
    teacher_reg: &Tensor,
    t: &Targets,
) -> RetinaLoss {
    let valid = t.labels.ne(IGNORE).to_kind(Kind::Float).unsqueeze(-1);
    let fg = t.labels.ge(0).to_kind(Kind::Float);
    let focal = sigmoid_focal_loss(cls, teacher_probs, 0.25, 2.0) * valid;
    let cls_loss = (focal.sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float) / &t.normalizer).mean(Kind::Float);
    let l1 = (reg - teacher_reg).abs().sum_dim_intlist([2i64].as_slice(), false, Kind::Float) * fg;
    let box_loss = (l1.sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / &t.normalizer).mean(Kind::Float);
    RetinaLoss { cls: cls_loss, boxes: box_loss }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn focal_loss_matches_the_formula() {
        let x = Tensor::from_slice(&[-1.0f32, 0.5, 2.0]);
        let t = Tensor::from_slice(&[0.0f32, 1.0, 1.0]);
        let got: Vec<f32> = Vec::try_from(sigmoid_focal_loss(&x, &t, 0.25, 2.0)).unwrap();
        for (i, (&xi, &ti)) in [-1.0f32, 0.5, 2.0].iter().zip(&[0.0f32, 1.0, 1.0]).enumerate() {
            let p = 1.0 / (1.0 + (-xi).exp());
            let ce = -(ti * p.ln() + (1.0 - ti) * (1.0 - p).ln());
            let pt = p * ti + (1.0 - p) * (1.0 - ti);
            let a = 0.25 * ti + 0.75 * (1.0 - ti);
            assert!((got[i] - a * ce * (1.0 - pt).powi(2)).abs() < 1e-6);
        }
    }

    #[test]
    fn targets_encode_with_the_core_coder() {
        let cfg = DetectorConfig::default();
        let anchors = [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 120.0, 120.0]];
        let t = image_targets(&anchors, &[[1.0, 1.0, 11.0, 11.0]], &[0], &cfg);
        assert_eq!(t.labels, vec![0, BACKGROUND]);
        assert_eq!(t.num_foreground, 1);
        let d = BoxCoder::retinanet().encode(&anchors[0], &[1.0, 1.0, 11.0, 11.0]);
        assert_eq!(&t.deltas[..4], &d);
        let targets = Targets::new(&[t], Device::Cpu);
        // perfect regression and confident logits: small losses
        let mut cls = vec![-10.0f32; 2];
        cls[0] = 10.0;
        let cls = Tensor::from_slice(&cls).view([1, 2, 1]);
        let reg = Tensor::from_slice(&[d[0], d[1], d[2], d[3], 0.0, 0.0, 0.0, 0.0]).view([1, 2, 4]);
        let loss = retinanet_loss(&cls, &reg, &targets);
        assert!(loss.cls.double_value(&[]) < 1e-4 && loss.boxes.double_value(&[]) < 1e-6);
    }
}

//! The CPU steps of FPN Faster R-CNN (torchvision semantics), shared by the trainer and the
//! references of the exported graph:
//!
//! - [`sample_balanced`]: the positive/negative sampler of the RPN and the RoI heads;
//! - [`rpn_targets`]: anchor labels and box targets of the RPN;
//! - [`select_proposals`]: decoding, per-level top-N, clipping, small-box removal, score threshold,
//!   per-level NMS and the post-NMS top-N;
//! - [`roi_targets`]: ground truth added to the proposals, matching, sampling and box targets of
//!   the RoI heads;
//! - [`box_head_detections`]: softmax scores, class-specific decoding, clipping, the score
//!   threshold, small-box removal, per-class NMS and the detection cap;
//! - [`roi_levels`]: the pyramid level of each RoI (`LevelMapper`: k0 4, canonical size 224).

use super::heads::{RoiHeadSettings, RpnSettings};
use crate::detector::boxes::{AnchorMatch, BBox, BoxCoder, batched_nms, clip, match_anchors};
use crate::rng::Rng;

/// Label of a sampled anchor or proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampled {
    /// Not in the loss.
    Ignore,
    /// Background (label 0).
    Negative,
    /// Matched to a ground-truth box.
    Positive,
}

/// torchvision's `BalancedPositiveNegativeSampler`: at most `batch * positive_fraction` random
/// positives, the rest of `batch` random negatives (fewer when there are not enough). Returns the
/// chosen positive and negative indices, each in increasing order.
pub fn sample_balanced(
    labels: &[Sampled],
    batch: usize,
    positive_fraction: f32,
    rng: &mut Rng,
) -> (Vec<usize>, Vec<usize>) {
    let of = |kind: Sampled| labels.iter().enumerate().filter(|(_, l)| **l == kind).map(|(i, _)| i).collect();
    let positives: Vec<usize> = of(Sampled::Positive);
    let negatives: Vec<usize> = of(Sampled::Negative);
    let num_pos = ((batch as f32 * positive_fraction) as usize).min(positives.len());
    let num_neg = (batch - num_pos).min(negatives.len());
    (choose(positives, num_pos, rng), choose(negatives, num_neg, rng))
}

/// `n` distinct items of `items` chosen uniformly (partial Fisher-Yates), sorted.
fn choose(mut items: Vec<usize>, n: usize, rng: &mut Rng) -> Vec<usize> {
    for i in 0..n {
        let j = i + rng.below((items.len() - i) as u64) as usize;
        items.swap(i, j);
    }
    items.truncate(n);
    items.sort_unstable();
    items
}

/// RPN training targets of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct RpnTargets {
    /// Per anchor: positive (IoU >= `fg_iou_thresh`, or a ground-truth box's best anchor),
    /// negative (< `bg_iou_thresh`) or ignored.
    pub labels: Vec<Sampled>,
    /// Encoded box of the matched ground truth per anchor (weights 1; zeros unless positive).
    pub deltas: Vec<[f32; 4]>,
}

/// Matches `anchors` to the ground truth as torchvision's RPN does (low-quality matches allowed).
pub fn rpn_targets(anchors: &[BBox], gt: &[BBox], rpn: &RpnSettings) -> RpnTargets {
    let coder = BoxCoder::retinanet();
    let matches = match_anchors(anchors, gt, rpn.fg_iou_thresh, rpn.bg_iou_thresh, true);
    let mut out = RpnTargets { labels: vec![Sampled::Negative; anchors.len()], deltas: vec![[0.0; 4]; anchors.len()] };
    for (a, m) in matches.into_iter().enumerate() {
        match m {
            AnchorMatch::Background => {}
            AnchorMatch::Ignore => out.labels[a] = Sampled::Ignore,
            AnchorMatch::Foreground(g) => {
                out.labels[a] = Sampled::Positive;
                out.deltas[a] = coder.encode(&anchors[a], &gt[g]);
            }
        }
    }
    out
}

/// One pyramid level's RPN outputs for one image.
#[derive(Clone, Copy, Debug)]
pub struct LevelProposals<'a> {
    /// Objectness logit per anchor.
    pub objectness: &'a [f32],
    /// Box deltas per anchor (weights 1).
    pub deltas: &'a [[f32; 4]],
    /// The level's anchors, in the same order.
    pub anchors: &'a [BBox],
}

/// A proposal: its box (input pixels) and objectness probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    /// `[x1, y1, x2, y2]`, clipped to the image.
    pub bbox: BBox,
    /// `sigmoid(objectness)`.
    pub score: f32,
}

/// torchvision's `filter_proposals` for one image of `width x height` input pixels: on each level
/// the `pre_nms_top_n` highest logits, decoded and clipped; boxes with a side under `min_size` and
/// probabilities under `score_thresh` dropped; NMS per level at `nms_thresh`; the best
/// `post_nms_top_n` over all levels, by decreasing score.
pub fn select_proposals(
    levels: &[LevelProposals<'_>],
    width: f32,
    height: f32,
    pre_nms_top_n: usize,
    post_nms_top_n: usize,
    rpn: &RpnSettings,
) -> Vec<Proposal> {
    let coder = BoxCoder::retinanet();
    let (mut boxes, mut scores, mut level_of) = (Vec::new(), Vec::new(), Vec::new());
    for (l, level) in levels.iter().enumerate() {
        let mut order: Vec<usize> = (0..level.objectness.len()).collect();
        // torch.topk: largest first; ties keep the lower index first
        order.sort_by(|&a, &b| level.objectness[b].total_cmp(&level.objectness[a]).then(a.cmp(&b)));
        order.truncate(pre_nms_top_n);
        for i in order {
            let b = clip(&coder.decode(&level.anchors[i], &level.deltas[i]), width, height);
            let score = sigmoid(level.objectness[i]);
            let big_enough = b[2] - b[0] >= rpn.min_size && b[3] - b[1] >= rpn.min_size;
            if big_enough && score >= rpn.score_thresh {
                boxes.push(b);
                scores.push(score);
                level_of.push(l as i64);
            }
        }
    }
    let mut keep = batched_nms(&boxes, &scores, &level_of, rpn.nms_thresh);
    keep.truncate(post_nms_top_n);
    keep.into_iter().map(|i| Proposal { bbox: boxes[i], score: scores[i] }).collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The sampled RoIs of one training image and their targets.
#[derive(Clone, Debug, PartialEq)]
pub struct RoiSample {
    /// The sampled boxes (proposals and ground truth), positives first.
    pub rois: Vec<BBox>,
    /// Class per RoI: 0 background, `c + 1` for class `c`.
    pub labels: Vec<i64>,
    /// Box targets per RoI (weights `bbox_reg_weights`; zeros for background).
    pub deltas: Vec<[f32; 4]>,
}

/// torchvision's `select_training_samples` for one image: the ground-truth boxes are appended to
/// the proposals, each matched (IoU >= `fg_iou_thresh` foreground, < `bg_iou_thresh` background,
/// no low-quality matches), then `batch_size_per_image` sampled with at most `positive_fraction`
/// foreground. `gt_labels` are class indices (0-based, without background).
pub fn roi_targets(
    proposals: &[BBox],
    gt: &[BBox],
    gt_labels: &[usize],
    roi: &RoiHeadSettings,
    rng: &mut Rng,
) -> RoiSample {
    let candidates: Vec<BBox> = proposals.iter().chain(gt).copied().collect();
    let matches = match_anchors(&candidates, gt, roi.fg_iou_thresh, roi.bg_iou_thresh, false);
    let labels: Vec<Sampled> = matches
        .iter()
        .map(|m| match m {
            AnchorMatch::Foreground(_) => Sampled::Positive,
            AnchorMatch::Background => Sampled::Negative,
            AnchorMatch::Ignore => Sampled::Ignore,
        })
        .collect();
    let (pos, neg) = sample_balanced(&labels, roi.batch_size_per_image, roi.positive_fraction, rng);
    let coder = BoxCoder { weights: roi.bbox_reg_weights, clamp: BoxCoder::default_clamp() };
    let mut out = RoiSample { rois: Vec::new(), labels: Vec::new(), deltas: Vec::new() };
    for i in pos.into_iter().chain(neg) {
        out.rois.push(candidates[i]);
        match matches[i] {
            AnchorMatch::Foreground(g) => {
                out.labels.push(gt_labels[g] as i64 + 1);
                out.deltas.push(coder.encode(&candidates[i], &gt[g]));
            }
            _ => {
                out.labels.push(0);
                out.deltas.push([0.0; 4]);
            }
        }
    }
    out
}

/// One final detection of the box head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxDetection {
    /// `[x1, y1, x2, y2]`, clipped to the image.
    pub bbox: BBox,
    /// Softmax probability of the class.
    pub score: f32,
    /// Class index (0-based, background excluded).
    pub class: usize,
}

/// torchvision's `postprocess_detections` for one image: softmax over `logits` (`[R][K + 1]`,
/// background first), boxes decoded per class from `deltas` (`[R][K + 1]`) with `weights` and
/// clipped, the background dropped, scores `> score_thresh` kept, boxes with a side under `0.01`
/// dropped, NMS per class at `nms_thresh`, the best `detections_per_img` by decreasing score.
#[allow(clippy::too_many_arguments)]
pub fn box_head_detections(
    rois: &[BBox],
    logits: &[Vec<f32>],
    deltas: &[Vec<[f32; 4]>],
    width: f32,
    height: f32,
    weights: [f32; 4],
    score_thresh: f32,
    nms_thresh: f32,
    detections_per_img: usize,
) -> Vec<BoxDetection> {
    let coder = BoxCoder { weights, clamp: BoxCoder::default_clamp() };
    let (mut boxes, mut scores, mut classes) = (Vec::new(), Vec::new(), Vec::new());
    for (r, roi) in rois.iter().enumerate() {
        let max = logits[r].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits[r].iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        for c in 1..logits[r].len() {
            let score = exp[c] / sum;
            let b = clip(&coder.decode(roi, &deltas[r][c]), width, height);
            if score > score_thresh && b[2] - b[0] >= 0.01 && b[3] - b[1] >= 0.01 {
                boxes.push(b);
                scores.push(score);
                classes.push(c as i64 - 1);
            }
        }
    }
    let mut keep = batched_nms(&boxes, &scores, &classes, nms_thresh);
    keep.truncate(detections_per_img);
    keep.into_iter().map(|i| BoxDetection { bbox: boxes[i], score: scores[i], class: classes[i] as usize }).collect()
}

/// `k0` of the level mapper: the level of a RoI of [`CANONICAL_SIZE`] pixels.
pub const CANONICAL_LEVEL: f32 = 4.0;
/// `s0` of the level mapper (the ImageNet pre-training size).
pub const CANONICAL_SIZE: f32 = 224.0;
/// Added before the floor so that sizes exactly at a power of two stay on their level.
pub const LEVEL_EPS: f32 = 1e-6;

/// torchvision's `LevelMapper` for one box `[x1, y1, x2, y2]` (image pixels):
/// `floor(4 + log2(sqrt(area) / 224) + 1e-6)` in float32, clamped to `[k_min, k_max]`. An empty,
/// inverted or non-finite box has no size and goes to `k_min`.
pub fn roi_level(b: &BBox, k_min: usize, k_max: usize) -> usize {
    let area = (b[2] - b[0]) * (b[3] - b[1]);
    // f32::max drops a NaN: a NaN area counts as 0.
    let size = area.max(0.0).sqrt();
    // log2 correctly rounded to float32 (libtorch's float32 log2 is within an ulp of it).
    let log2 = ((size / CANONICAL_SIZE) as f64).log2() as f32;
    let level = ((CANONICAL_LEVEL + log2) + LEVEL_EPS).floor();
    if level.is_nan() { k_min } else { level.clamp(k_min as f32, k_max as f32) as usize }
}

/// [`roi_level`] of every box.
pub fn roi_levels(boxes: &[BBox], k_min: usize, k_max: usize) -> Vec<usize> {
    boxes.iter().map(|b| roi_level(b, k_min, k_max)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_takes_at_most_the_positive_fraction_and_fills_with_negatives() {
        let mut labels = vec![Sampled::Negative; 100];
        labels[..10].fill(Sampled::Positive);
        labels[10..20].fill(Sampled::Ignore);
        let mut rng = Rng::seed(1);
        let (pos, neg) = sample_balanced(&labels, 16, 0.25, &mut rng);
        assert_eq!((pos.len(), neg.len()), (4, 12));
        assert!(pos.iter().all(|&i| i < 10) && neg.iter().all(|&i| i >= 20));
        // few positives: the negatives fill the batch
        let (pos, neg) = sample_balanced(&labels, 64, 0.5, &mut Rng::seed(2));
        assert_eq!((pos.len(), neg.len()), (10, 54));
        // few of both: everything there is
        let (pos, neg) = sample_balanced(&labels[..15], 256, 0.5, &mut Rng::seed(3));
        assert_eq!((pos.len(), neg.len()), (10, 0));
        // the draw is uniform: each positive is chosen about equally often
        let mut counts = [0usize; 10];
        let mut rng = Rng::seed(4);
        for _ in 0..2000 {
            for i in sample_balanced(&labels, 8, 0.25, &mut rng).0 {
                counts[i] += 1;
            }
        }
        assert!(counts.iter().all(|&c| (300..500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn rpn_targets_label_by_iou_and_keep_each_boxs_best_anchor() {
        let gt = [[0.0, 0.0, 10.0, 10.0]];
        let anchors =
            [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 16.0]];
        let t = rpn_targets(&anchors, &gt, &RpnSettings::default());
        // IoU 1 -> positive; 0.5 -> ignored (between 0.3 and 0.7); 0 -> negative; 0.625 -> ignored
        assert_eq!(t.labels, vec![Sampled::Positive, Sampled::Ignore, Sampled::Negative, Sampled::Ignore]);
        assert_eq!(t.deltas[0], [0.0; 4]);
        // a box far from every good anchor still gets its best one
        let t = rpn_targets(&anchors[1..], &gt, &RpnSettings::default());
        assert_eq!(t.labels[2], Sampled::Positive, "best anchor of the box (IoU 0.625)");
    }

    #[test]
    fn proposals_are_clipped_filtered_and_suppressed_per_level() {
        let rpn = RpnSettings { min_size: 2.0, ..Default::default() };
        let anchors =
            [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [90.0, 90.0, 130.0, 130.0], [5.0, 5.0, 6.0, 6.0]];
        let deltas = [[0.0; 4]; 4];
        let objectness = [3.0, 2.0, 1.0, 4.0];
        let level = LevelProposals { objectness: &objectness, deltas: &deltas, anchors: &anchors };
        let p = select_proposals(&[level], 100.0, 100.0, 10, 10, &rpn);
        // anchor 3 is 1 px wide (dropped), 1 overlaps 0 at IoU 0.82 (suppressed), 2 is clipped
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].bbox, anchors[0]);
        assert!((p[0].score - sigmoid(3.0)).abs() < 1e-7);
        assert_eq!(p[1].bbox, [90.0, 90.0, 100.0, 100.0]);
        // the same boxes on two levels are not suppressed across levels
        let two = select_proposals(&[level, level], 100.0, 100.0, 10, 10, &rpn);
        assert_eq!(two.len(), 4);
        // pre-NMS top-N per level, post-NMS top-N overall
        let top1 = select_proposals(&[level], 100.0, 100.0, 1, 10, &rpn);
        assert!(top1.is_empty(), "the single best logit is the 1 px box, dropped afterwards");
        assert_eq!(select_proposals(&[level, level], 100.0, 100.0, 10, 3, &rpn).len(), 3);
    }

    #[test]
    fn roi_targets_add_the_ground_truth_and_encode_with_the_rcnn_weights() {
        let gt = [[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]];
        let proposals = [[12.0, 12.0, 50.0, 50.0], [0.0, 0.0, 5.0, 5.0], [62.0, 58.0, 91.0, 90.0]];
        let roi = RoiHeadSettings { batch_size_per_image: 8, positive_fraction: 0.5, ..Default::default() };
        let s = roi_targets(&proposals, &gt, &[0, 2], &roi, &mut Rng::seed(5));
        // positives: proposals 0 and 2 and both ground-truth boxes; negative: proposal 1
        assert_eq!(s.labels, vec![1, 3, 1, 3, 0]);
        assert_eq!(s.rois[4], proposals[1]);
        assert_eq!(s.deltas[4], [0.0; 4]);
        let coder = BoxCoder::rcnn();
        assert_eq!(s.deltas[0], coder.encode(&proposals[0], &gt[0]));
        assert_eq!(s.deltas[2], [0.0; 4], "a ground-truth box targets itself");
        // no ground truth: everything is background
        let s = roi_targets(&proposals, &[], &[], &roi, &mut Rng::seed(5));
        assert_eq!(s.labels, vec![0, 0, 0]);
    }

    #[test]
    fn box_head_keeps_each_class_above_the_threshold_after_nms() {
        let rois = [[10.0, 10.0, 30.0, 30.0], [11.0, 10.0, 31.0, 30.0]];
        // logits over (background, a, b)
        let logits = vec![vec![0.0, 3.0, 2.5], vec![0.0, 2.0, -5.0]];
        let deltas = vec![vec![[0.0; 4]; 3]; 2];
        let d = box_head_detections(&rois, &logits, &deltas, 100.0, 100.0, [10.0, 10.0, 5.0, 5.0], 0.05, 0.5, 100);
        let softmax = |l: &[f32], c: usize| l[c].exp() / l.iter().map(|v| v.exp()).sum::<f32>();
        // class a: two overlapping boxes (IoU 0.9) -> roi 1, the higher score; class b: roi 0 only
        // (roi 1 scores 0.0008)
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].class, d[0].bbox), (0, rois[1]));
        assert!((d[0].score - softmax(&logits[1], 1)).abs() < 1e-6);
        assert_eq!((d[1].class, d[1].bbox), (1, rois[0]));
        let capped = box_head_detections(&rois, &logits, &deltas, 100.0, 100.0, [10.0, 10.0, 5.0, 5.0], 0.05, 0.5, 1);
        assert_eq!(capped.len(), 1);
        // class-specific decoding: roi 0's class-b box moved by dx = 1.0 / 10 of its width
        let mut moved = deltas.clone();
        moved[0][2] = [1.0, 0.0, 0.0, 0.0];
        let d = box_head_detections(&rois, &logits, &moved, 100.0, 100.0, [10.0, 10.0, 5.0, 5.0], 0.05, 0.5, 100);
        assert_eq!(d.iter().find(|x| x.class == 1).unwrap().bbox, [12.0, 10.0, 32.0, 30.0]);
    }

    #[test]
    fn levels_follow_the_canonical_224_box_at_level_4() {
        let sq = |s: f32| [0.0, 0.0, s, s];
        let boxes = [sq(224.0), sq(112.0), sq(448.0), sq(10.0), sq(2000.0), sq(223.9), sq(111.99)];
        assert_eq!(roi_levels(&boxes, 2, 5), vec![4, 3, 5, 2, 5, 3, 2]);
        // no size: the lowest level
        assert_eq!(roi_levels(&[[10.0, 0.0, 0.0, 10.0], [0.0, 0.0, 0.0, 50.0], [f32::NAN; 4]], 2, 5), vec![2, 2, 2]);
    }
}

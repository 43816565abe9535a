//! Box maths shared by training, export and inference (torchvision semantics): IoU without the
//! legacy `+1`, NMS sorted by decreasing score, per-class batched NMS, the RetinaNet anchor
//! generator, the box coder, letterbox geometry and weighted box fusion. Boxes are `[x1, y1, x2, y2]` in pixels.

use serde::{Deserialize, Serialize};

/// `[x1, y1, x2, y2]`.
pub type BBox = [f32; 4];

/// Area of a box (0 for degenerate boxes).
pub fn area(b: &BBox) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union, 0 when the union is empty.
pub fn iou(a: &BBox, b: &BBox) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Indices of the boxes kept by greedy NMS, in decreasing score order (ties: lower index first).
/// A box is dropped when its IoU with a kept, higher-scored box is greater than `iou_threshold`.
pub fn nms(boxes: &[BBox], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep: Vec<usize> = Vec::new();
    let mut removed = vec![false; boxes.len()];
    for (i, &idx) in order.iter().enumerate() {
        if removed[idx] {
            continue;
        }
        keep.push(idx);
        for &other in &order[i + 1..] {
            if !removed[other] && iou(&boxes[idx], &boxes[other]) > iou_threshold {
                removed[other] = true;
            }
        }
    }
    keep
}

/// NMS applied independently per label; the result is sorted by decreasing score.
pub fn batched_nms(boxes: &[BBox], scores: &[f32], labels: &[i64], iou_threshold: f32) -> Vec<usize> {
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut keep = Vec::new();
    for c in classes {
        let idx: Vec<usize> = (0..boxes.len()).filter(|&i| labels[i] == c).collect();
        let b: Vec<BBox> = idx.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, iou_threshold).into_iter().map(|k| idx[k]));
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    keep
}

/// Result of matching one anchor against the ground truth (torchvision `Matcher` semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorMatch {
    /// IoU below the background threshold with every box.
    Background,
    /// IoU between the thresholds: excluded from the classification loss.
    Ignore,
    /// Assigned to ground-truth box `index`.
    Foreground(usize),
}

/// Matches every anchor to its best ground-truth box: foreground when IoU >= `fg_thresh`,
/// background when < `bg_thresh`, ignored in between. With `allow_low_quality`, each ground-truth box
/// also claims the anchors with which it has its highest IoU (ties included), as torchvision does.
pub fn match_anchors(
    anchors: &[BBox],
    gt: &[BBox],
    fg_thresh: f32,
    bg_thresh: f32,
    allow_low_quality: bool,
) -> Vec<AnchorMatch> {
    if gt.is_empty() {
        return vec![AnchorMatch::Background; anchors.len()];
    }
    let mut best_gt = vec![0usize; anchors.len()];
    let mut best_iou = vec![f32::NEG_INFINITY; anchors.len()];
    let mut gt_best = vec![0f32; gt.len()];
    for (a, anchor) in anchors.iter().enumerate() {
        for (g, b) in gt.iter().enumerate() {
            let v = iou(anchor, b);
            // first maximum wins, like torch.max over the ground-truth axis
            if v > best_iou[a] {
                best_iou[a] = v;
                best_gt[a] = g;
            }
            gt_best[g] = gt_best[g].max(v);
        }
    }
    let mut out: Vec<AnchorMatch> = (0..anchors.len())
        .map(|a| {
            if best_iou[a] >= fg_thresh {
                AnchorMatch::Foreground(best_gt[a])
            } else if best_iou[a] < bg_thresh {
                AnchorMatch::Background
            } else {
                AnchorMatch::Ignore
            }
        })
        .collect();
    if allow_low_quality {
        for (a, anchor) in anchors.iter().enumerate() {
            for (g, b) in gt.iter().enumerate() {
                if gt_best[g] > 0.0 && iou(anchor, b) == gt_best[g] {
                    out[a] = AnchorMatch::Foreground(best_gt[a]);
                }
            }
        }
    }
    out
}

/// torchvision's box coder: deltas `(dx, dy, dw, dh)` relative to an anchor, divided by `weights`;
/// `dw`/`dh` are clamped at `log(1000 / 16)` when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxCoder {
    /// Divisors of `(dx, dy, dw, dh)`.
    pub weights: [f32; 4],
    /// Largest `dw` / `dh` when decoding.
    pub clamp: f32,
}

impl BoxCoder {
    /// The default clamp, `log(1000 / 16)`.
    pub fn default_clamp() -> f32 {
        (1000.0f32 / 16.0).ln()
    }

    /// Weights (1, 1, 1, 1): RetinaNet.
    pub fn retinanet() -> Self {
        BoxCoder { weights: [1.0; 4], clamp: Self::default_clamp() }
    }

    /// Weights (10, 10, 5, 5): R-CNN box heads.
    pub fn rcnn() -> Self {
        BoxCoder { weights: [10.0, 10.0, 5.0, 5.0], clamp: Self::default_clamp() }
    }

    /// Applies `deltas` to `anchor`.
    pub fn decode(&self, anchor: &BBox, deltas: &[f32; 4]) -> BBox {
        let w = anchor[2] - anchor[0];
        let h = anchor[3] - anchor[1];
        let cx = anchor[0] + 0.5 * w;
        let cy = anchor[1] + 0.5 * h;
        let dx = deltas[0] / self.weights[0];
        let dy = deltas[1] / self.weights[1];
        let dw = (deltas[2] / self.weights[2]).min(self.clamp);
        let dh = (deltas[3] / self.weights[3]).min(self.clamp);
        let pcx = dx * w + cx;
        let pcy = dy * h + cy;
        let pw = dw.exp() * w;
        let ph = dh.exp() * h;
        [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph]
    }

    /// The deltas that turn `anchor` into `target` (inverse of [`BoxCoder::decode`] without clamp).
    pub fn encode(&self, anchor: &BBox, target: &BBox) -> [f32; 4] {
        let (aw, ah) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
        let (acx, acy) = (anchor[0] + 0.5 * aw, anchor[1] + 0.5 * ah);
        let (tw, th) = (target[2] - target[0], target[3] - target[1]);
        let (tcx, tcy) = (target[0] + 0.5 * tw, target[1] + 0.5 * th);
        [
            self.weights[0] * (tcx - acx) / aw,
            self.weights[1] * (tcy - acy) / ah,
            self.weights[2] * (tw / aw).ln(),
            self.weights[3] * (th / ah).ln(),
        ]
    }
}

/// Clamps a box to `[0, width] x [0, height]`.
pub fn clip(b: &BBox, width: f32, height: f32) -> BBox {
    [b[0].clamp(0.0, width), b[1].clamp(0.0, height), b[2].clamp(0.0, width), b[3].clamp(0.0, height)]
}

/// Zero-centred cell anchors for one level (torchvision `AnchorGenerator`): for each aspect ratio
/// (outer) and each size (inner), `w = size / sqrt(ratio)`, `h = size * sqrt(ratio)`, rounded to
/// integers as torchvision does.
pub fn cell_anchors(sizes: &[f32], aspect_ratios: &[f32]) -> Vec<BBox> {
    let mut out = Vec::with_capacity(sizes.len() * aspect_ratios.len());
    for &r in aspect_ratios {
        let h_ratio = r.sqrt();
        let w_ratio = 1.0 / h_ratio;
        for &s in sizes {
            let ws = w_ratio * s;
            let hs = h_ratio * s;
            out.push([(-ws / 2.0).round(), (-hs / 2.0).round(), (ws / 2.0).round(), (hs / 2.0).round()]);
        }
    }
    out
}

/// Anchors of a `grid_h x grid_w` feature map with the given strides, ordered (y, x, anchor) as the
/// heads flatten their outputs.
pub fn grid_anchors(cell: &[BBox], grid_h: usize, grid_w: usize, stride_h: f32, stride_w: f32) -> Vec<BBox> {
    let mut out = Vec::with_capacity(grid_h * grid_w * cell.len());
    for y in 0..grid_h {
        for x in 0..grid_w {
            let (sx, sy) = (x as f32 * stride_w, y as f32 * stride_h);
            for a in cell {
                out.push([a[0] + sx, a[1] + sy, a[2] + sx, a[3] + sy]);
            }
        }
    }
    out
}

/// Weighted box fusion (Solovyev et al., 2019) of the detections of `views` views of one image
/// (test-time augmentation, ensembles); `view[i]` (below `views`) is the view box `i` came from.
/// Per label, boxes are taken by decreasing score and join the cluster whose fused box they
/// overlap most, by more than `iou_threshold`, else start one. A cluster's box is the
/// score-weighted mean of its members and its score their mean score times the share of the
/// views that contributed to it, so objects fewer views agree on rank lower. Boxes without area
/// and non-finite scores are left out. Returns the clusters sorted by decreasing score (ties:
/// first formed first). Panics when the slices differ in length.
pub fn weighted_box_fusion(
    boxes: &[BBox],
    scores: &[f32],
    labels: &[i64],
    view: &[usize],
    views: usize,
    iou_threshold: f32,
) -> (Vec<BBox>, Vec<f32>, Vec<i64>) {
    assert!(
        scores.len() == boxes.len() && labels.len() == boxes.len() && view.len() == boxes.len(),
        "one score, label and view per box"
    );
    struct Cluster {
        label: i64,
        weighted: [f64; 4],
        weight: f64,
        members: usize,
        views: Vec<usize>,
        fused: BBox,
    }
    let mut order: Vec<usize> = (0..boxes.len()).filter(|&i| scores[i].is_finite() && area(&boxes[i]) > 0.0).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut clusters: Vec<Cluster> = Vec::new();
    for i in order {
        let best = clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.label == labels[i])
            .map(|(k, c)| (k, iou(&c.fused, &boxes[i])))
            .filter(|&(_, o)| o > iou_threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let c = match best {
            Some((k, _)) => &mut clusters[k],
            None => {
                let fresh = Cluster {
                    label: labels[i],
                    weighted: [0.0; 4],
                    weight: 0.0,
                    members: 0,
                    views: Vec::new(),
                    fused: boxes[i],
                };
                clusters.push(fresh);
                clusters.last_mut().expect("just pushed")
            }
        };
        let s = f64::from(scores[i].max(0.0));
        for (w, v) in c.weighted.iter_mut().zip(boxes[i]) {
            *w += s * f64::from(v);
        }
        c.weight += s;
        c.members += 1;
        if !c.views.contains(&view[i]) {
            c.views.push(view[i]);
        }
        if c.weight > 0.0 {
            c.fused = c.weighted.map(|w| (w / c.weight) as f32);
        }
    }
    let views = views.max(1);
    let mut fused: Vec<(BBox, f32, i64)> = clusters
        .iter()
        .map(|c| {
            let mean = c.weight / c.members as f64;
            (c.fused, (mean * c.views.len().min(views) as f64 / views as f64) as f32, c.label)
        })
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    (fused.iter().map(|f| f.0).collect(), fused.iter().map(|f| f.1).collect(), fused.iter().map(|f| f.2).collect())
}

/// Sizes of one RetinaNet level: `base * 2^(i / scales_per_octave)` for `i in 0..scales_per_octave`.
pub fn octave_sizes(base: f32, scales_per_octave: usize) -> Vec<f32> {
    (0..scales_per_octave).map(|i| base * 2f32.powf(i as f32 / scales_per_octave as f32)).collect()
}

/// How an image of `src` size is fitted into the network input: scaled by `scale` keeping the aspect
/// ratio, placed at the top-left corner, the rest padded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Letterbox {
    /// Resize factor from source pixels to input pixels.
    pub scale: f32,
    /// Size of the resized image inside the input.
    pub resized_w: u32,
    /// Height of the resized image inside the input.
    pub resized_h: u32,
    /// Width of the source image.
    pub src_w: u32,
    /// Height of the source image.
    pub src_h: u32,
}

impl Letterbox {
    /// Fits `src_w x src_h` into `dst_w x dst_h`. Sources must be at least 1x1.
    pub fn fit(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        let scale = (dst_w as f32 / src_w as f32).min(dst_h as f32 / src_h as f32);
        let resized_w = ((src_w as f32 * scale).round() as u32).clamp(1, dst_w);
        let resized_h = ((src_h as f32 * scale).round() as u32).clamp(1, dst_h);
        Letterbox { scale, resized_w, resized_h, src_w, src_h }
    }

    /// Maps a box from network-input pixels back to source pixels, clipped to the source image.
    pub fn to_source(&self, b: &BBox) -> BBox {
        let sx = self.src_w as f32 / self.resized_w as f32;
        let sy = self.src_h as f32 / self.resized_h as f32;
        clip(&[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy], self.src_w as f32, self.src_h as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quadratic reference NMS straight from the definition.
    fn naive_nms(boxes: &[BBox], scores: &[f32], t: f32) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..boxes.len()).collect();
        let mut keep = Vec::new();
        while !idx.is_empty() {
            let best = *idx.iter().max_by(|&&a, &&b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a))).unwrap();
            keep.push(best);
            idx.retain(|&i| i != best && iou(&boxes[best], &boxes[i]) <= t);
        }
        keep
    }

    #[test]
    fn iou_has_no_plus_one() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-7);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn nms_matches_naive_reference_on_random_boxes() {
        let mut rng = crate::rng::Rng::seed(42);
        for _ in 0..50 {
            let n = 1 + rng.below(40) as usize;
            let boxes: Vec<BBox> = (0..n)
                .map(|_| {
                    let x = rng.unit() as f32 * 50.0;
                    let y = rng.unit() as f32 * 50.0;
                    [x, y, x + 1.0 + rng.unit() as f32 * 30.0, y + 1.0 + rng.unit() as f32 * 30.0]
                })
                .collect();
            let scores: Vec<f32> = (0..n).map(|_| (rng.below(10) as f32) / 10.0).collect();
            assert_eq!(nms(&boxes, &scores, 0.5), naive_nms(&boxes, &scores, 0.5));
        }
    }

    #[test]
    fn batched_nms_keeps_overlapping_boxes_of_other_classes() {
        let boxes = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]];
        let keep = batched_nms(&boxes, &[0.9, 0.8, 0.7], &[0, 1, 0], 0.5);
        assert_eq!(keep, vec![0, 1]);
    }

    #[test]
    fn matcher_thresholds_and_low_quality_matches() {
        let anchors =
            [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 12.0], [5.0, 0.0, 15.0, 10.0], [50.0, 50.0, 60.0, 60.0]];
        let gt = [[0.0, 0.0, 10.0, 10.0]];
        let m = match_anchors(&anchors, &gt, 0.5, 0.4, false);
        assert_eq!(m[0], AnchorMatch::Foreground(0));
        assert_eq!(m[1], AnchorMatch::Foreground(0)); // IoU 100/120
        assert_eq!(m[2], AnchorMatch::Background); // IoU 1/3
        assert_eq!(m[3], AnchorMatch::Background);
        // a box no anchor reaches 0.5 with still gets its best anchor
        let gt = [[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 18.0, 10.0]];
        let m = match_anchors(&anchors, &gt, 0.5, 0.4, true);
        assert_eq!(m[2], AnchorMatch::Foreground(1)); // IoU 10/14 = 0.71 anyway
        // best IoU 0.4 reached by anchors 0 and 2 (a tie): ignored, unless low-quality matches allowed
        let gt = [[0.0, 0.0, 25.0, 10.0]];
        let strict = match_anchors(&anchors, &gt, 0.5, 0.4, false);
        let low = match_anchors(&anchors, &gt, 0.5, 0.4, true);
        assert_eq!(
            (strict[0], strict[1], strict[2]),
            (AnchorMatch::Ignore, AnchorMatch::Background, AnchorMatch::Ignore)
        );
        assert_eq!(
            (low[0], low[1], low[2]),
            (AnchorMatch::Foreground(0), AnchorMatch::Background, AnchorMatch::Foreground(0))
        );
        assert!(match_anchors(&anchors, &[], 0.5, 0.4, true).iter().all(|m| *m == AnchorMatch::Background));
    }

    #[test]
    fn coder_round_trips_and_clamps() {
        let c = BoxCoder::retinanet();
        let anchor = [10.0, 20.0, 50.0, 40.0];
        let target = [12.0, 18.0, 70.0, 44.0];
        let back = c.decode(&anchor, &c.encode(&anchor, &target));
        for i in 0..4 {
            assert!((back[i] - target[i]).abs() < 1e-4, "{back:?}");
        }
        let huge = c.decode(&anchor, &[0.0, 0.0, 100.0, 100.0]);
        assert!((huge[2] - huge[0] - 40.0 * 1000.0 / 16.0).abs() < 1e-1);
    }

    #[test]
    fn anchors_match_torchvision_layout() {
        // torchvision AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),)) cell anchors, rounded
        let cell = cell_anchors(&[32.0], &[0.5, 1.0, 2.0]);
        assert_eq!(cell, vec![[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]);
        let grid = grid_anchors(&cell, 2, 3, 8.0, 8.0);
        assert_eq!(grid.len(), 18);
        assert_eq!(grid[3], [-15.0, -11.0, 31.0, 11.0]); // (y=0, x=1, a=0)
        assert_eq!(grid[9], [-23.0, -3.0, 23.0, 19.0]); // (y=1, x=0, a=0)
        let sizes = octave_sizes(32.0, 3);
        assert!((sizes[1] - 40.317).abs() < 1e-3 && (sizes[2] - 50.797).abs() < 1e-3);
    }

    #[test]
    fn letterbox_maps_back_to_source_pixels() {
        let lb = Letterbox::fit(1000, 500, 512, 512);
        assert_eq!((lb.resized_w, lb.resized_h), (512, 256));
        let b = lb.to_source(&[0.0, 0.0, 256.0, 128.0]);
        assert!((b[2] - 500.0).abs() < 1e-3 && (b[3] - 250.0).abs() < 1e-3);
        let clipped = lb.to_source(&[-5.0, 0.0, 600.0, 300.0]);
        assert_eq!(clipped, [0.0, 0.0, 1000.0, 500.0]);
        let tiny = Letterbox::fit(1, 1, 512, 384);
        assert_eq!((tiny.resized_w, tiny.resized_h), (384, 384));
    }
    #[test]
    fn box_fusion_averages_by_score_and_ranks_by_agreement() {
        // two views: one object seen in both, one seen in one, another class on the first
        let boxes = [[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]];
        let scores = [0.9, 0.3, 0.95, 0.5];
        let labels = [0, 0, 0, 1];
        let (b, s, l) = weighted_box_fusion(&boxes, &scores, &labels, &[0, 1, 1, 0], 2, 0.5);
        assert_eq!(l, vec![0, 0, 1]);
        // both views: weighted mean x1 = (0.9 * 0 + 0.3 * 2) / 1.2 = 0.5, score mean 0.6
        assert!((b[0][0] - 0.5).abs() < 1e-6 && (b[0][2] - 10.5).abs() < 1e-6, "{b:?}");
        assert!((s[0] - 0.6).abs() < 1e-6, "{s:?}");
        // one view of two: 0.95 / 2, ranked below the object both views agree on
        assert_eq!(b[1], [50.0, 50.0, 60.0, 60.0]);
        assert!((s[1] - 0.475).abs() < 1e-6 && (s[2] - 0.25).abs() < 1e-6, "{s:?}");
        // two boxes of one view in one cluster are one view's agreement, not two
        let (_, s2, _) = weighted_box_fusion(&boxes[..2], &scores[..2], &labels[..2], &[0, 0], 2, 0.5);
        assert!((s2[0] - 0.3).abs() < 1e-6, "{s2:?}");
        // one view is plain pass-through, boxes that do not overlap enough stay apart
        let (b1, s1, _) = weighted_box_fusion(&boxes[..2], &scores[..2], &labels[..2], &[0, 0], 1, 0.9);
        assert_eq!((b1, s1), (vec![boxes[0], boxes[1]], vec![0.9, 0.3]));
        assert_eq!(weighted_box_fusion(&[], &[], &[], &[], 8, 0.5).0.len(), 0);
        // boxes without area and non-finite scores are left out
        let odd = [[5.0, 5.0, 5.0, 9.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]];
        let (b3, _, _) = weighted_box_fusion(&odd, &[0.9, f32::NAN, 0.2], &[0, 0, 0], &[0, 1, 2], 3, 0.5);
        assert_eq!(b3, vec![[0.0, 0.0, 4.0, 4.0]]);
    }
}

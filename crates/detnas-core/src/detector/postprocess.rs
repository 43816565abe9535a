//! RetinaNet post-processing in Rust: the reference for the exported graph's own.

use super::config::DetectorConfig;
use super::levels::{LevelShape, all_anchors};
use serde::Serialize;

/// One final detection in network-input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RawDetection {
    /// `[x1, y1, x2, y2]` in network-input pixels.
    pub bbox: [f32; 4],
    /// The class score.
    pub score: f32,
    /// The class (0-based label).
    pub label: usize,
}

/// RetinaNet post-processing, the semantics the exported graph implements: per level, sigmoid
/// scores over `(anchor, class)`, the `topk_candidates` best, boxes decoded (torchvision coder,
/// weights 1) and clipped to the input; then scores above `score_thresh`, per-class NMS at
/// `nms_thresh`, and the `detections_per_img` best in decreasing score order.
///
/// `cls_logits` is `[A, K]` and `bbox_regression` `[A, 4]` row-major over all anchors of all levels,
/// in the order of [`all_anchors`].
pub fn postprocess(
    cls_logits: &[f32],
    bbox_regression: &[f32],
    levels: &[LevelShape],
    cfg: &DetectorConfig,
) -> Vec<RawDetection> {
    let k = cfg.num_classes();
    let a = cfg.anchors_per_cell();
    let coder = crate::detector::boxes::BoxCoder::retinanet();
    let (w, h) = (cfg.input.width as f32, cfg.input.height as f32);
    let anchors = all_anchors(levels, cfg);
    let (mut boxes, mut scores, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0;
    for level in levels {
        let n = level.height * level.width * a;
        let logits = &cls_logits[offset * k..(offset + n) * k];
        let mut order: Vec<usize> = (0..n * k).collect();
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        let topk = cfg.expect_retinanet().map_or(n * k, |r| r.topk_candidates).min(n * k);
        order.select_nth_unstable_by(topk.saturating_sub(1).min(n * k - 1), |&i, &j| {
            logits[j].total_cmp(&logits[i]).then(i.cmp(&j))
        });
        order.truncate(topk);
        for idx in order {
            let score = sig(logits[idx]);
            if score <= cfg.score_thresh {
                continue;
            }
            let anchor = offset + idx / k;
            let d = &bbox_regression[anchor * 4..anchor * 4 + 4];
            let b = coder.decode(&anchors[anchor], &[d[0], d[1], d[2], d[3]]);
            boxes.push(crate::detector::boxes::clip(&b, w, h));
            scores.push(score);
            labels.push((idx % k) as i64);
        }
        offset += n;
    }
    let keep = crate::detector::boxes::batched_nms(&boxes, &scores, &labels, cfg.nms_thresh);
    keep.into_iter()
        .take(cfg.detections_per_img)
        .map(|i| RawDetection { bbox: boxes[i], score: scores[i], label: labels[i] as usize })
        .collect()
}

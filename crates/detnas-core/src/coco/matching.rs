//! Recall and precision at one IoU threshold, the tree-crown benchmark's measure (DeepForest reports
//! box recall and precision at IoU 0.4): every detection scoring at least `min_score` is matched to at
//! most one ground-truth box of its image and category, greedily by decreasing score, each taking
//! the unmatched box it overlaps most when that IoU reaches the threshold. (DeepForest assigns by
//! maximum total IoU; the two agree unless crowns overlap heavily.) Crowd boxes are left out.

use super::types::{Detections, GroundTruth};
use serde::Serialize;
use std::collections::BTreeMap;

/// Recall and precision at one IoU and score threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MatchStats {
    /// The IoU a match needs.
    pub iou: f64,
    /// Detections below this score are dropped first.
    pub min_score: f64,
    /// Matched ground truth / ground truth (0 without ground truth).
    pub recall: f64,
    /// Matched detections / detections kept (0 without detections).
    pub precision: f64,
    /// Ground-truth boxes matched.
    pub matched: usize,
    /// Detections kept (scoring at least `min_score`).
    pub detections: usize,
    /// Ground-truth boxes (crowd boxes left out).
    pub ground_truth: usize,
}

fn iou_xywh(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Ground-truth boxes of one image and category, each with whether a detection took it.
type Candidates = Vec<([f64; 4], bool)>;

/// See the module docs.
pub fn recall_precision(gt: &GroundTruth, dt: &Detections, iou: f64, min_score: f64) -> MatchStats {
    let mut truth: BTreeMap<(i64, i64), Candidates> = BTreeMap::new();
    let mut ground_truth = 0;
    for a in gt.dataset().annotations.iter().filter(|a| !a.iscrowd) {
        truth.entry((a.image_id, a.category_id)).or_default().push((a.bbox, false));
        ground_truth += 1;
    }
    let mut kept: Vec<_> = dt.as_slice().iter().filter(|d| d.score >= min_score).collect();
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut matched = 0;
    for d in &kept {
        let Some(boxes) = truth.get_mut(&(d.image_id, d.category_id)) else { continue };
        let best = boxes
            .iter()
            .enumerate()
            .filter(|(_, (_, used))| !used)
            .map(|(i, (b, _))| (i, iou_xywh(&d.bbox, b)))
            .filter(|&(_, v)| v >= iou)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, _)) = best {
            boxes[i].1 = true;
            matched += 1;
        }
    }
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    MatchStats {
        iou,
        min_score,
        recall: ratio(matched, ground_truth),
        precision: ratio(matched, kept.len()),
        matched,
        detections: kept.len(),
        ground_truth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coco::types::{CocoAnnotation, CocoCategory, CocoDataset, CocoImage, Detection};

    fn gt(boxes: &[[f64; 4]]) -> GroundTruth {
        let annotations = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| CocoAnnotation {
                id: i as i64 + 1,
                image_id: 1,
                category_id: 1,
                bbox: *b,
                area: b[2] * b[3],
                iscrowd: false,
            })
            .collect();
        let images = vec![CocoImage { id: 1, ..Default::default() }];
        let categories = vec![CocoCategory { id: 1, name: "tree".into(), supercategory: None }];
        GroundTruth::new(CocoDataset { images, annotations, categories }).unwrap()
    }

    fn det(g: &GroundTruth, list: &[([f64; 4], f64)]) -> Detections {
        let d = list.iter().map(|(b, s)| Detection { image_id: 1, category_id: 1, bbox: *b, score: *s }).collect();
        Detections::new(d, g).unwrap()
    }

    #[test]
    fn one_to_one_matching_at_the_threshold() {
        let g = gt(&[[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 10.0, 10.0]]);
        // IoU of [0,0,10,10] with [0,0,10,5] is 0.5; with [5,0,10,10] it is 1/3.
        let d = det(&g, &[([0.0, 0.0, 10.0, 5.0], 0.9), ([0.0, 0.0, 10.0, 10.0], 0.8), ([5.0, 0.0, 10.0, 10.0], 0.7)]);
        let s = recall_precision(&g, &d, 0.4, 0.0);
        assert_eq!((s.matched, s.detections, s.ground_truth), (1, 3, 2), "a box is matched once");
        assert_eq!((s.recall, s.precision), (0.5, 1.0 / 3.0));
        let s = recall_precision(&g, &d, 0.3, 0.75);
        assert_eq!((s.matched, s.detections), (1, 2), "low scores dropped before matching");
        let s = recall_precision(&g, &det(&g, &[]), 0.4, 0.0);
        assert_eq!((s.recall, s.precision), (0.0, 0.0));
    }
}

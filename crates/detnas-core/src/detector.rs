//! Detector configuration (RetinaNet on a DetNAS backbone) and the pre-processing contract.
//! Names follow torchvision (`score_thresh`, `nms_thresh`, `detections_per_img`, ...).

use crate::boxes::{cell_anchors, octave_sizes};
use crate::cost::InputSize;
use crate::space::ChannelShuffle;
use serde::{Deserialize, Serialize};

/// Detector families. FPN Faster R-CNN will join RetinaNet here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    #[default]
    Retinanet,
}

/// Convolution type of the head's tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HeadConv {
    /// Dense 3x3 conv (torchvision's RetinaNet head).
    #[default]
    Dense,
    /// Depthwise 3x3 followed by a pointwise 1x1: far cheaper, for latency budgets.
    Separable,
}

/// What the network expects as input; recorded in exported models.
///
/// The graph takes `images`: float32 `[1, 3, H, W]`, RGB, values 0-255, the image letterboxed
/// (aspect kept, top-left aligned, padded with `pad_value`). Normalisation `(x / 255 - mean) / std`
/// happens inside the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub pad_value: f32,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], pad_value: 0.0 }
    }
}

/// RetinaNet with FPN (P3-P7) on a DetNAS backbone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    pub kind: DetectorKind,
    pub class_names: Vec<String>,
    /// Dataset category id of each class (COCO `category_id`); empty means `index + 1`.
    pub category_ids: Vec<u64>,
    /// Fixed network input (H x W); images are letterboxed into it.
    pub input: InputSize,
    pub fpn_channels: u64,
    /// Convs per head tower (classification and regression each).
    pub head_convs: usize,
    pub head_channels: u64,
    pub head_conv: HeadConv,
    /// Base anchor size per level P3..P7.
    pub anchor_sizes: Vec<f32>,
    pub scales_per_octave: usize,
    pub aspect_ratios: Vec<f32>,
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub detections_per_img: usize,
    pub topk_candidates: usize,
    pub fg_iou_thresh: f32,
    pub bg_iou_thresh: f32,
    pub shuffle: ChannelShuffle,
    pub preprocess: Preprocess,
    /// BN epsilon of the backbone.
    pub bn_eps: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            kind: DetectorKind::Retinanet,
            class_names: vec!["object".into()],
            category_ids: Vec::new(),
            input: InputSize::new(512, 512),
            fpn_channels: 256,
            head_convs: 4,
            head_channels: 256,
            head_conv: HeadConv::Dense,
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            scales_per_octave: 3,
            aspect_ratios: vec![0.5, 1.0, 2.0],
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 100,
            topk_candidates: 1000,
            fg_iou_thresh: 0.5,
            bg_iou_thresh: 0.4,
            shuffle: ChannelShuffle::EvenOdd,
            preprocess: Preprocess::default(),
            bn_eps: 1e-5,
        }
    }
}

impl DetectorConfig {
    /// Number of classes (no background class: RetinaNet uses sigmoid scores).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Dataset category id of class `index`.
    pub fn category_id(&self, index: usize) -> u64 {
        self.category_ids.get(index).copied().unwrap_or(index as u64 + 1)
    }

    /// Anchors per feature-map cell.
    pub fn anchors_per_cell(&self) -> usize {
        self.scales_per_octave * self.aspect_ratios.len()
    }

    /// Zero-centred anchors of each level P3..P7.
    pub fn cell_anchors(&self) -> Vec<Vec<[f32; 4]>> {
        self.anchor_sizes
            .iter()
            .map(|&s| cell_anchors(&octave_sizes(s, self.scales_per_octave), &self.aspect_ratios))
            .collect()
    }

    /// Checks internal consistency; returns a description of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.class_names.is_empty() {
            return Err("class_names must not be empty".into());
        }
        if !self.category_ids.is_empty() && self.category_ids.len() != self.class_names.len() {
            return Err(format!(
                "category_ids has {} entries for {} classes",
                self.category_ids.len(),
                self.class_names.len()
            ));
        }
        if self.anchor_sizes.len() != 5 {
            return Err(format!("anchor_sizes needs 5 entries (P3..P7), got {}", self.anchor_sizes.len()));
        }
        if self.scales_per_octave == 0 || self.aspect_ratios.is_empty() || self.aspect_ratios.iter().any(|r| *r <= 0.0)
        {
            return Err("scales_per_octave and aspect_ratios must be positive".into());
        }
        if self.fpn_channels == 0 || self.head_channels == 0 {
            return Err("fpn_channels and head_channels must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.score_thresh) || !(0.0..=1.0).contains(&self.nms_thresh) {
            return Err("score_thresh and nms_thresh must be within [0, 1]".into());
        }
        if self.detections_per_img == 0 || self.topk_candidates == 0 {
            return Err("detections_per_img and topk_candidates must be positive".into());
        }
        if self.input.height < 32 || self.input.width < 32 {
            return Err(format!("input {} is smaller than 32x32", self.input));
        }
        Ok(())
    }
}

/// One pyramid level as the head sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelShape {
    /// `P3`..`P7`.
    pub name: String,
    pub height: usize,
    pub width: usize,
    /// Anchor strides: `input / grid` (integer division, torchvision's rule).
    pub stride_h: usize,
    pub stride_w: usize,
}

/// P3..P7 sizes of `arch` at the configured input.
pub fn pyramid_levels(
    space: &crate::space::SearchSpace,
    arch: &crate::arch::Arch,
    cfg: &DetectorConfig,
) -> crate::error::Result<Vec<LevelShape>> {
    let report = crate::cost::cost(space, arch, cfg.input)?;
    let mut sizes: Vec<(u64, u64)> = crate::plan::fpn_stage_indices(space)
        .iter()
        .map(|&i| (report.stages[i].height, report.stages[i].width))
        .collect();
    for _ in 0..2 {
        let (h, w) = *sizes.last().expect("three stages");
        let down = |n| crate::cost::conv_out(n, 3, 2, 1).unwrap_or(1);
        sizes.push((down(h), down(w)));
    }
    Ok(sizes
        .iter()
        .enumerate()
        .map(|(i, &(h, w))| LevelShape {
            name: format!("P{}", i + 3),
            height: h as usize,
            width: w as usize,
            stride_h: (cfg.input.height / h) as usize,
            stride_w: (cfg.input.width / w) as usize,
        })
        .collect())
}

/// Anchors of every level, concatenated P3..P7 in the heads' (y, x, anchor) order.
pub fn all_anchors(levels: &[LevelShape], cfg: &DetectorConfig) -> Vec<[f32; 4]> {
    levels
        .iter()
        .zip(cfg.cell_anchors())
        .flat_map(|(l, cell)| {
            crate::boxes::grid_anchors(&cell, l.height, l.width, l.stride_h as f32, l.stride_w as f32)
        })
        .collect()
}

/// One final detection in network-input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RawDetection {
    pub bbox: [f32; 4],
    pub score: f32,
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
    let coder = crate::boxes::BoxCoder::retinanet();
    let (w, h) = (cfg.input.width as f32, cfg.input.height as f32);
    let anchors = all_anchors(levels, cfg);
    let (mut boxes, mut scores, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0;
    for level in levels {
        let n = level.height * level.width * a;
        let logits = &cls_logits[offset * k..(offset + n) * k];
        let mut order: Vec<usize> = (0..n * k).collect();
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        let topk = cfg.topk_candidates.min(n * k);
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
            boxes.push(crate::boxes::clip(&b, w, h));
            scores.push(score);
            labels.push((idx % k) as i64);
        }
        offset += n;
    }
    let keep = crate::boxes::batched_nms(&boxes, &scores, &labels, cfg.nms_thresh);
    keep.into_iter()
        .take(cfg.detections_per_img)
        .map(|i| RawDetection { bbox: boxes[i], score: scores[i], label: labels[i] as usize })
        .collect()
}

/// Multiply-adds of a whole detector, split by part (conv convention of [`crate::cost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DetectorFlops {
    pub backbone: u64,
    pub fpn: u64,
    pub head: u64,
    pub total: u64,
}

/// FLOPs of the detector at its configured input.
pub fn detector_flops(
    space: &crate::space::SearchSpace,
    arch: &crate::arch::Arch,
    cfg: &DetectorConfig,
) -> crate::error::Result<DetectorFlops> {
    use crate::plan::{ConvUnit, fpn_plan, fpn_stage_indices, head_plan};
    let backbone = crate::cost::cost(space, arch, cfg.input)?.backbone_flops;
    let levels = pyramid_levels(space, arch, cfg)?;
    let unit =
        |u: &ConvUnit, out_hw: u64| (u.in_channels / u.groups * u.out_channels * u.kernel * u.kernel) as u64 * out_hw;
    let area = |l: &LevelShape| (l.height * l.width) as u64;
    let in_ch: Vec<usize> = fpn_stage_indices(space).iter().map(|&i| space.stages[i].channels as usize).collect();
    let fpn = fpn_plan(&in_ch, cfg);
    let mut fpn_flops = 0;
    for ((inner, layer), level) in fpn.inner.iter().zip(&fpn.layer).zip(&levels) {
        fpn_flops += unit(inner, area(level)) + unit(layer, area(level));
    }
    fpn_flops += unit(&fpn.p6, area(&levels[3])) + unit(&fpn.p7, area(&levels[4]));
    let head = head_plan(cfg);
    let mut head_flops = 0;
    for l in &levels {
        for b in [&head.classification, &head.regression] {
            for u in b.tower.iter().flatten().chain([&b.predictor]) {
                head_flops += unit(u, area(l));
            }
        }
    }
    Ok(DetectorFlops { backbone, fpn: fpn_flops, head: head_flops, total: backbone + fpn_flops + head_flops })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Preset;

    #[test]
    fn pyramid_of_a_512_input() {
        let (space, arch) = Preset::by_name("coco-retinanet-300m").unwrap().resolve();
        let cfg = DetectorConfig::default();
        let levels = pyramid_levels(&space, &arch, &cfg).unwrap();
        let dims: Vec<(usize, usize)> = levels.iter().map(|l| (l.height, l.stride_h)).collect();
        assert_eq!(dims, vec![(64, 8), (32, 16), (16, 32), (8, 64), (4, 128)]);
        let anchors = all_anchors(&levels, &cfg);
        assert_eq!(anchors.len(), (64 * 64 + 32 * 32 + 16 * 16 + 64 + 16) * 9);
    }

    #[test]
    fn detector_flops_are_dominated_by_the_dense_head() {
        // spec: at 512x512 the default head is ~84% of the conv MACs.
        let (space, arch) = Preset::by_name("coco-retinanet-300m").unwrap().resolve();
        let f = detector_flops(&space, &arch, &DetectorConfig::default()).unwrap();
        let share = f.head as f64 / f.total as f64;
        assert!((0.80..0.88).contains(&share), "head share {share}");
        assert!((f.total as f64 / 1e9 - 31.5).abs() < 1.5, "total {}", f.total);
        let sep = DetectorConfig { head_conv: HeadConv::Separable, ..DetectorConfig::default() };
        assert!(detector_flops(&space, &arch, &sep).unwrap().head * 5 < f.head);
    }
}

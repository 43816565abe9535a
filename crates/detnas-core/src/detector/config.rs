//! Detector configuration (RetinaNet on a DetNAS backbone) and the pre-processing contract.

use crate::boxes::{cell_anchors, octave_sizes};
use crate::error::{CoreError, Result};
use crate::shape::InputSize;
use crate::space::ChannelShuffle;
use serde::{Deserialize, Serialize};

/// Input height and width must be multiples of this: the stride of C5/P5, the largest stride of
/// every DetNAS backbone (torchvision's `size_divisible`). Then the anchors of P3..P5 sit exactly on
/// their feature grids; P6/P7 follow torchvision's `input / grid` rule.
pub const INPUT_DIVISOR: u64 = 32;

/// Detector families. FPN Faster R-CNN will join RetinaNet here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    #[default]
    Retinanet,
}

impl DetectorKind {
    /// The name written in exported models ([`crate::contract::detector_kinds`]).
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Retinanet => crate::contract::detector_kinds::RETINANET,
        }
    }
}

/// Convolution type of the head's tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
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

    /// Checks internal consistency; the error names the field and the first problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(CoreError::BadDetectorConfig { field, reason });
        self.validate_classes()?;
        if self.anchor_sizes.len() != 5 {
            return bad("anchor_sizes", format!("needs 5 entries (P3..P7), got {}", self.anchor_sizes.len()));
        }
        if self.anchor_sizes.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("anchor_sizes", format!("must be positive, got {:?}", self.anchor_sizes));
        }
        if self.scales_per_octave == 0 || self.aspect_ratios.is_empty() || self.aspect_ratios.iter().any(|r| *r <= 0.0)
        {
            return bad("aspect_ratios", "scales_per_octave and aspect_ratios must be positive".into());
        }
        if self.fpn_channels == 0 || self.head_channels == 0 {
            return bad("fpn_channels", "fpn_channels and head_channels must be positive".into());
        }
        for (field, v) in [("score_thresh", self.score_thresh), ("nms_thresh", self.nms_thresh)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("must be within [0, 1], got {v}"));
            }
        }
        if self.detections_per_img == 0 || self.topk_candidates == 0 {
            return bad("detections_per_img", "detections_per_img and topk_candidates must be positive".into());
        }
        if self.preprocess.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("preprocess", format!("std must be positive, got {:?}", self.preprocess.std));
        }
        self.validate_input()
    }

    /// Class names non-empty and distinct; category ids one per class and distinct (part of
    /// [`DetectorConfig::validate`]; the SDK checks a loaded model's metadata with it).
    pub fn validate_classes(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(CoreError::BadDetectorConfig { field, reason });
        if self.class_names.is_empty() {
            return bad("class_names", "must not be empty".into());
        }
        for (i, name) in self.class_names.iter().enumerate() {
            if name.trim().is_empty() {
                return bad("class_names", format!("class {i} has an empty name (names: {:?})", self.class_names));
            }
            if let Some(j) = self.class_names[..i].iter().position(|n| n == name) {
                return bad("class_names", format!("`{name}` is given twice (classes {j} and {i})"));
            }
        }
        if !self.category_ids.is_empty() && self.category_ids.len() != self.class_names.len() {
            let (ids, classes) = (self.category_ids.len(), self.class_names.len());
            return bad("category_ids", format!("{ids} entries for {classes} classes"));
        }
        for (i, id) in self.category_ids.iter().enumerate() {
            if let Some(j) = self.category_ids[..i].iter().position(|x| x == id) {
                return bad("category_ids", format!("id {id} is given twice (classes {j} and {i})"));
            }
        }
        Ok(())
    }

    /// At least 32x32 and both sides multiples of [`INPUT_DIVISOR`].
    fn validate_input(&self) -> Result<()> {
        let (h, w) = (self.input.height, self.input.width);
        let d = INPUT_DIVISOR;
        if h < d || w < d {
            let reason = format!("{} is smaller than {d}x{d}", self.input);
            return Err(CoreError::BadDetectorConfig { field: "input", reason });
        }
        if h % d != 0 || w % d != 0 {
            let below = InputSize::new(h / d * d, w / d * d);
            let above = InputSize::new(h.div_ceil(d) * d, w.div_ceil(d) * d);
            let reason = format!(
                "{} is not a multiple of {d}, the largest stride of the backbone (anchors would drift \
                 from the feature grid); nearest valid sizes: {below} or {above}",
                self.input
            );
            return Err(CoreError::BadDetectorConfig { field: "input", reason });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(cfg: DetectorConfig) -> String {
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn input_must_be_a_multiple_of_the_largest_stride() {
        let e = err(DetectorConfig { input: InputSize::new(500, 500), ..Default::default() });
        assert!(e.contains("500x500") && e.contains("480x480 or 512x512") && e.contains("32"), "{e}");
        let e = err(DetectorConfig { input: InputSize::new(320, 330), ..Default::default() });
        assert!(e.contains("320x320 or 320x352"), "{e}");
        let e = err(DetectorConfig { input: InputSize::new(16, 16), ..Default::default() });
        assert!(e.contains("smaller than 32x32"), "{e}");
        for (h, w) in [(512, 512), (320, 320), (128, 160), (800, 1216)] {
            DetectorConfig { input: InputSize::new(h, w), ..Default::default() }.validate().unwrap();
        }
    }

    #[test]
    fn class_names_must_be_non_empty_and_distinct() {
        let names = |v: &[&str]| DetectorConfig {
            class_names: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let e = err(names(&["a", "", "b"]));
        assert!(e.contains("class_names") && e.contains("class 1 has an empty name"), "{e}");
        let e = err(names(&["tree", "bush", "tree"]));
        assert!(e.contains("`tree` is given twice (classes 0 and 2)"), "{e}");
        let e = err(names(&[]));
        assert!(e.contains("must not be empty"), "{e}");
        let e = err(DetectorConfig { category_ids: vec![1, 2], ..names(&["a"]) });
        assert!(e.contains("category_ids") && e.contains("2 entries for 1 classes"), "{e}");
        let e = err(DetectorConfig { category_ids: vec![3, 3], ..names(&["a", "b"]) });
        assert!(e.contains("id 3 is given twice"), "{e}");
    }

    #[test]
    fn validation_errors_are_typed() {
        let e = DetectorConfig { score_thresh: f32::NAN, ..Default::default() }.validate().unwrap_err();
        assert!(matches!(e, CoreError::BadDetectorConfig { field: "score_thresh", .. }), "{e}");
    }
}

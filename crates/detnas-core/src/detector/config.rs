//! Detector configuration (RetinaNet or FPN Faster R-CNN on a DetNAS backbone) and the
//! pre-processing contract.

use super::heads::{DetectorHead, DetectorKind, FasterRcnnSettings, RetinanetSettings};
use crate::detector::boxes::{cell_anchors, octave_sizes};
use crate::error::{CoreError, Result};
use crate::limits::{MAX_CLASSES, MAX_HEAD_CONVS, MAX_INPUT_SIDE, MAX_WIDTH};
use crate::space::ChannelShuffle;
use crate::space::shape::InputSize;
use serde::{Deserialize, Serialize};

/// Input height and width must be multiples of this: the stride of C5/P5, the largest stride of
/// every DetNAS backbone (torchvision's `size_divisible`). Then the anchors of P3..P5 sit exactly on
/// their feature grids; P6/P7 follow torchvision's `input / grid` rule.
pub const INPUT_DIVISOR: u64 = 32;

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
    /// Per-channel mean (RGB, on the 0-1 scale).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB, on the 0-1 scale).
    pub std: [f32; 3],
    /// Value (0-255) of the padding around the letterboxed image.
    pub pad_value: f32,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], pad_value: 0.0 }
    }
}

/// A detector on a DetNAS backbone: the fields every family shares (input, classes,
/// normalisation, FPN, head tower, final thresholds) and the family's own settings ([`DetectorHead`]).
///
/// Serialised flat with a `kind` field (`retinanet`, the default when absent, or `faster-rcnn`):
/// RetinaNet's settings beside the common fields, Faster R-CNN's in `rpn` and `roi_heads` tables.
/// Settings of the other family are refused by name.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Class names (no background class; Faster R-CNN adds its own internally).
    pub class_names: Vec<String>,
    /// Dataset category id of each class (COCO `category_id`); empty means `index + 1`.
    pub category_ids: Vec<u64>,
    /// Fixed network input (H x W); images are letterboxed into it.
    pub input: InputSize,
    /// FPN width.
    pub fpn_channels: u64,
    /// The head tower's depth: convs per RetinaNet tower (classification and regression each); the
    /// Faster R-CNN box head's 3x3 convs before its fully connected layer (0: torchvision's two
    /// fully connected layers).
    pub head_convs: usize,
    /// Channels of the head tower's convs.
    pub head_channels: u64,
    /// Conv type of the head tower.
    pub head_conv: HeadConv,
    /// Final score threshold.
    pub score_thresh: f32,
    /// Final per-class NMS IoU.
    pub nms_thresh: f32,
    /// Most detections per image.
    pub detections_per_img: usize,
    /// Channel shuffle of the backbone's blocks.
    pub shuffle: ChannelShuffle,
    /// The input contract (normalisation, letterbox padding).
    pub preprocess: Preprocess,
    /// BN epsilon of the backbone.
    pub bn_eps: f32,
    /// The family and its own settings.
    pub head: DetectorHead,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig::new(DetectorKind::Retinanet)
    }
}

impl DetectorConfig {
    /// torchvision's defaults for `kind` (512x512 input, one class `object`). Faster R-CNN: FPN
    /// 256, two fully connected layers of 1024 (`head_convs` 0), 100 detections per image.
    pub fn new(kind: DetectorKind) -> Self {
        DetectorConfig {
            class_names: vec!["object".into()],
            category_ids: Vec::new(),
            input: InputSize::new(512, 512),
            fpn_channels: 256,
            head_convs: if kind == DetectorKind::FasterRcnn { 0 } else { 4 },
            head_channels: 256,
            head_conv: HeadConv::Dense,
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 100,
            shuffle: ChannelShuffle::EvenOdd,
            preprocess: Preprocess::default(),
            bn_eps: 1e-5,
            head: DetectorHead::default_for(kind),
        }
    }

    /// The detector family.
    pub fn kind(&self) -> DetectorKind {
        self.head.kind()
    }

    /// RetinaNet's settings; `None` for another family.
    pub fn retinanet(&self) -> Option<&RetinanetSettings> {
        match &self.head {
            DetectorHead::Retinanet(r) => Some(r),
            DetectorHead::FasterRcnn(_) => None,
        }
    }

    /// RetinaNet's settings, mutable; `None` for another family.
    pub fn retinanet_mut(&mut self) -> Option<&mut RetinanetSettings> {
        match &mut self.head {
            DetectorHead::Retinanet(r) => Some(r),
            DetectorHead::FasterRcnn(_) => None,
        }
    }

    /// Faster R-CNN's settings; `None` for another family.
    pub fn faster_rcnn(&self) -> Option<&FasterRcnnSettings> {
        match &self.head {
            DetectorHead::FasterRcnn(f) => Some(f),
            DetectorHead::Retinanet(_) => None,
        }
    }

    /// Faster R-CNN's settings, mutable; `None` for another family.
    pub fn faster_rcnn_mut(&mut self) -> Option<&mut FasterRcnnSettings> {
        match &mut self.head {
            DetectorHead::FasterRcnn(f) => Some(f),
            DetectorHead::Retinanet(_) => None,
        }
    }

    /// RetinaNet's settings, or the error naming the family this configuration is for.
    pub fn expect_retinanet(&self) -> Result<&RetinanetSettings> {
        self.retinanet().ok_or_else(|| CoreError::BadDetectorConfig {
            field: "kind",
            reason: format!("this needs a retinanet configuration, not {}", self.kind()),
        })
    }

    /// Number of classes (no background class: RetinaNet uses sigmoid scores).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Dataset category id of class `index`.
    pub fn category_id(&self, index: usize) -> u64 {
        self.category_ids.get(index).copied().unwrap_or(index as u64 + 1)
    }

    /// Anchors per feature-map cell: RetinaNet's scales x ratios; the RPN's ratios.
    pub fn anchors_per_cell(&self) -> usize {
        match &self.head {
            DetectorHead::Retinanet(r) => r.scales_per_octave * r.aspect_ratios.len(),
            DetectorHead::FasterRcnn(f) => f.rpn.aspect_ratios.len(),
        }
    }

    /// Zero-centred anchors of each pyramid level: RetinaNet P3..P7 (octave scales), the RPN
    /// P2..P6 (one size per level).
    pub fn cell_anchors(&self) -> Vec<Vec<[f32; 4]>> {
        match &self.head {
            DetectorHead::Retinanet(r) => r
                .anchor_sizes
                .iter()
                .map(|&s| cell_anchors(&octave_sizes(s, r.scales_per_octave), &r.aspect_ratios))
                .collect(),
            DetectorHead::FasterRcnn(f) => {
                f.rpn.anchor_sizes.iter().map(|&s| cell_anchors(&[s], &f.rpn.aspect_ratios)).collect()
            }
        }
    }

    /// Classes the network scores: Faster R-CNN's box predictor adds a background class (index 0).
    pub fn predicted_classes(&self) -> usize {
        match self.kind() {
            DetectorKind::Retinanet => self.num_classes(),
            DetectorKind::FasterRcnn => self.num_classes() + 1,
        }
    }

    /// Checks internal consistency; the error names the field and the first problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(CoreError::BadDetectorConfig { field, reason });
        self.validate_classes()?;
        let (sizes, ratios, scales) = match &self.head {
            DetectorHead::Retinanet(r) => (&r.anchor_sizes, &r.aspect_ratios, r.scales_per_octave),
            DetectorHead::FasterRcnn(f) => (&f.rpn.anchor_sizes, &f.rpn.aspect_ratios, 1),
        };
        let levels = crate::detector::plan::Pyramid::of(self.kind()).levels();
        if sizes.len() != levels.len() {
            let names = levels.iter().map(|l| format!("P{l}")).collect::<Vec<_>>().join(", ");
            return bad("anchor_sizes", format!("needs {} entries ({names}), got {}", levels.len(), sizes.len()));
        }
        if sizes.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("anchor_sizes", format!("must be positive, got {sizes:?}"));
        }
        if scales == 0 || ratios.is_empty() || ratios.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return bad("aspect_ratios", "scales_per_octave and aspect_ratios must be positive".into());
        }
        if let DetectorHead::FasterRcnn(f) = &self.head {
            f.validate()?;
        }
        if self.fpn_channels == 0 || self.head_channels == 0 {
            return bad("fpn_channels", "fpn_channels and head_channels must be positive".into());
        }
        for (field, v) in [("fpn_channels", self.fpn_channels), ("head_channels", self.head_channels)] {
            if v > MAX_WIDTH {
                return bad(field, format!("{v} is over the most, {MAX_WIDTH}"));
            }
        }
        if self.head_convs > MAX_HEAD_CONVS {
            return bad("head_convs", format!("{} is over the most, {MAX_HEAD_CONVS}", self.head_convs));
        }
        for (field, v) in [("score_thresh", self.score_thresh), ("nms_thresh", self.nms_thresh)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("must be within [0, 1], got {v}"));
            }
        }
        if self.detections_per_img == 0 || self.retinanet().is_some_and(|r| r.topk_candidates == 0) {
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
        if self.class_names.len() > MAX_CLASSES {
            return bad(
                "class_names",
                format!("{} classes, more than the most, {MAX_CLASSES}", self.class_names.len()),
            );
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

    /// From 32x32 to [`MAX_INPUT_SIDE`] a side and both sides multiples of [`INPUT_DIVISOR`].
    fn validate_input(&self) -> Result<()> {
        let (h, w) = (self.input.height, self.input.width);
        let d = INPUT_DIVISOR;
        if h < d || w < d {
            let reason = format!("{} is smaller than {d}x{d}", self.input);
            return Err(CoreError::BadDetectorConfig { field: "input", reason });
        }
        if h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
            let reason = format!("{} is over the most, {MAX_INPUT_SIDE} pixels a side", self.input);
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
    fn widths_depths_classes_and_inputs_have_stated_maxima() {
        use crate::limits::*;
        let e = err(DetectorConfig { fpn_channels: MAX_WIDTH + 1, ..Default::default() });
        assert!(e.contains("fpn_channels") && e.contains("1024"), "{e}");
        let e = err(DetectorConfig { head_channels: u64::MAX, ..Default::default() });
        assert!(e.contains("head_channels"), "{e}");
        let e = err(DetectorConfig { head_convs: MAX_HEAD_CONVS + 1, ..Default::default() });
        assert!(e.contains("head_convs") && e.contains("16"), "{e}");
        let names = (0..=MAX_CLASSES).map(|i| i.to_string()).collect();
        let e = err(DetectorConfig { class_names: names, ..Default::default() });
        assert!(e.contains("10000"), "{e}");
        let e = err(DetectorConfig { input: InputSize::new(32, MAX_INPUT_SIDE + 32), ..Default::default() });
        assert!(e.contains("4096 pixels a side"), "{e}");
        let most = InputSize::new(MAX_INPUT_SIDE, MAX_INPUT_SIDE);
        DetectorConfig { input: most, fpn_channels: MAX_WIDTH, head_convs: MAX_HEAD_CONVS, ..Default::default() }
            .validate()
            .unwrap();
    }

    #[test]
    fn validation_errors_are_typed() {
        let e = DetectorConfig { score_thresh: f32::NAN, ..Default::default() }.validate().unwrap_err();
        assert!(matches!(e, CoreError::BadDetectorConfig { field: "score_thresh", .. }), "{e}");
    }
}

//! The detector-specific settings: one variant per detector family ([`DetectorHead`]).
//!
//! RetinaNet's settings are written flat beside the common fields (`anchor_sizes = [...]`), as
//! every model and configuration written so far has them; Faster R-CNN's sit in two tables,
//! `rpn` and `roi_heads` (`[detector.rpn]` in a TOML file). Defaults follow torchvision.

use serde::{Deserialize, Serialize};

/// Detector families, as recorded in configurations, checkpoints and exported models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    /// One-stage RetinaNet on FPN P3-P7 (focal loss, sigmoid scores).
    #[default]
    Retinanet,
    /// Two-stage FPN Faster R-CNN on P2-P6 (RPN, RoIAlign, softmax box head): the paper's main
    /// detector.
    FasterRcnn,
}

impl DetectorKind {
    /// The name written in exported models ([`crate::detector::contract::detector_kinds`]).
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Retinanet => crate::detector::contract::detector_kinds::RETINANET,
            DetectorKind::FasterRcnn => crate::detector::contract::detector_kinds::FASTER_RCNN,
        }
    }

    /// Every family.
    pub const ALL: [DetectorKind; 2] = [DetectorKind::Retinanet, DetectorKind::FasterRcnn];
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DetectorKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = DetectorKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown detector `{s}`: expected one of {}", names.join(", "))
        })
    }
}

/// The head variant and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectorHead {
    /// RetinaNet's anchors, matching and candidate selection.
    Retinanet(RetinanetSettings),
    /// Faster R-CNN's region proposal network and RoI heads.
    FasterRcnn(FasterRcnnSettings),
}

impl DetectorHead {
    /// The family of this head.
    pub fn kind(&self) -> DetectorKind {
        match self {
            DetectorHead::Retinanet(_) => DetectorKind::Retinanet,
            DetectorHead::FasterRcnn(_) => DetectorKind::FasterRcnn,
        }
    }

    /// Default settings of `kind`.
    pub fn default_for(kind: DetectorKind) -> Self {
        match kind {
            DetectorKind::Retinanet => DetectorHead::Retinanet(RetinanetSettings::default()),
            DetectorKind::FasterRcnn => DetectorHead::FasterRcnn(FasterRcnnSettings::default()),
        }
    }
}

/// RetinaNet (torchvision semantics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetinanetSettings {
    /// Base anchor size per level P3..P7.
    pub anchor_sizes: Vec<f32>,
    /// Anchor scales per octave (`2^(i / n)` times the base size).
    pub scales_per_octave: usize,
    /// Anchor aspect ratios (height / width).
    pub aspect_ratios: Vec<f32>,
    /// Best-scoring (anchor, class) pairs kept per level before NMS.
    pub topk_candidates: usize,
    /// IoU at or above which an anchor is foreground.
    pub fg_iou_thresh: f32,
    /// IoU below which an anchor is background (between the two: ignored).
    pub bg_iou_thresh: f32,
}

impl Default for RetinanetSettings {
    fn default() -> Self {
        RetinanetSettings {
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            scales_per_octave: 3,
            aspect_ratios: vec![0.5, 1.0, 2.0],
            topk_candidates: 1000,
            fg_iou_thresh: 0.5,
            bg_iou_thresh: 0.4,
        }
    }
}

/// FPN Faster R-CNN: the region proposal network and the RoI heads (torchvision defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FasterRcnnSettings {
    /// Region proposal network.
    pub rpn: RpnSettings,
    /// RoI heads (box head and predictor).
    pub roi_heads: RoiHeadSettings,
}

impl FasterRcnnSettings {
    /// Checks the ranges: thresholds and fractions within [0, 1], positive counts and sizes.
    pub fn validate(&self) -> crate::error::Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(crate::error::CoreError::BadDetectorConfig { field, reason });
        let (r, h) = (&self.rpn, &self.roi_heads);
        let fractions = [
            ("rpn.fg_iou_thresh", r.fg_iou_thresh),
            ("rpn.bg_iou_thresh", r.bg_iou_thresh),
            ("rpn.positive_fraction", r.positive_fraction),
            ("rpn.nms_thresh", r.nms_thresh),
            ("rpn.score_thresh", r.score_thresh),
            ("roi_heads.fg_iou_thresh", h.fg_iou_thresh),
            ("roi_heads.bg_iou_thresh", h.bg_iou_thresh),
            ("roi_heads.positive_fraction", h.positive_fraction),
        ];
        for (field, v) in fractions {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("must be within [0, 1], got {v}"));
            }
        }
        if r.bg_iou_thresh > r.fg_iou_thresh || h.bg_iou_thresh > h.fg_iou_thresh {
            return bad("bg_iou_thresh", "must not exceed fg_iou_thresh (rpn and roi_heads)".into());
        }
        let counts = [
            ("rpn.batch_size_per_image", r.batch_size_per_image),
            ("rpn.pre_nms_top_n_train", r.pre_nms_top_n_train),
            ("rpn.pre_nms_top_n_test", r.pre_nms_top_n_test),
            ("rpn.post_nms_top_n_train", r.post_nms_top_n_train),
            ("rpn.post_nms_top_n_test", r.post_nms_top_n_test),
            ("roi_heads.batch_size_per_image", h.batch_size_per_image),
            ("roi_heads.pool_size", h.pool_size),
            ("roi_heads.representation_size", h.representation_size),
        ];
        for (field, v) in counts {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if !(r.min_size.is_finite() && r.min_size >= 0.0) {
            return bad("rpn.min_size", format!("must be a size >= 0, got {}", r.min_size));
        }
        if h.bbox_reg_weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
            return bad("roi_heads.bbox_reg_weights", format!("must be positive, got {:?}", h.bbox_reg_weights));
        }
        for (field, beta) in [("rpn.smooth_l1_beta", r.smooth_l1_beta), ("roi_heads.smooth_l1_beta", h.smooth_l1_beta)]
        {
            if !(beta.is_finite() && beta > 0.0) {
                return bad(field, format!("must be positive, got {beta}"));
            }
        }
        Ok(())
    }
}

/// The region proposal network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpnSettings {
    /// One anchor size per level P2..P6.
    pub anchor_sizes: Vec<f32>,
    /// Anchor aspect ratios (height / width), the same on every level.
    pub aspect_ratios: Vec<f32>,
    /// IoU at or above which an anchor is an object (low-quality best matches also count).
    pub fg_iou_thresh: f32,
    /// IoU below which an anchor is background.
    pub bg_iou_thresh: f32,
    /// Anchors sampled per image for the losses.
    pub batch_size_per_image: usize,
    /// Fraction of the sampled anchors that are objects (at most).
    pub positive_fraction: f32,
    /// Proposals kept per level before NMS, in training.
    pub pre_nms_top_n_train: usize,
    /// Proposals kept per level before NMS, at test time (and in the exported graph).
    pub pre_nms_top_n_test: usize,
    /// Proposals kept per image after NMS, in training.
    pub post_nms_top_n_train: usize,
    /// Proposals kept per image after NMS, at test time (and in the exported graph).
    pub post_nms_top_n_test: usize,
    /// IoU of the proposals' NMS (per level).
    pub nms_thresh: f32,
    /// Proposals with a lower objectness probability are dropped.
    pub score_thresh: f32,
    /// Proposals with a side shorter than this (input pixels) are dropped.
    pub min_size: f32,
    /// Box loss: `smooth-l1` (β below) or `l1`.
    pub box_loss: BoxLoss,
    /// β of the smooth-L1 box loss.
    pub smooth_l1_beta: f32,
}

impl Default for RpnSettings {
    fn default() -> Self {
        RpnSettings {
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            aspect_ratios: vec![0.5, 1.0, 2.0],
            fg_iou_thresh: 0.7,
            bg_iou_thresh: 0.3,
            batch_size_per_image: 256,
            positive_fraction: 0.5,
            pre_nms_top_n_train: 2000,
            pre_nms_top_n_test: 1000,
            post_nms_top_n_train: 2000,
            post_nms_top_n_test: 1000,
            nms_thresh: 0.7,
            score_thresh: 0.0,
            min_size: 1e-3,
            box_loss: BoxLoss::SmoothL1,
            smooth_l1_beta: 1.0 / 9.0,
        }
    }
}

/// The RoI heads: multi-scale RoIAlign, the box head and the class-specific box predictor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoiHeadSettings {
    /// IoU at or above which a proposal is foreground.
    pub fg_iou_thresh: f32,
    /// IoU below which a proposal is background.
    pub bg_iou_thresh: f32,
    /// Proposals sampled per image for the losses (ground-truth boxes are added first).
    pub batch_size_per_image: usize,
    /// Fraction of the sampled proposals that are foreground (at most).
    pub positive_fraction: f32,
    /// RoIAlign output side (7: 7x7 bins).
    pub pool_size: usize,
    /// Bilinear samples per bin side (RoIAlign `sampling_ratio`).
    pub sampling_ratio: usize,
    /// Width of the fully connected layers (`fc6`, `fc7`).
    pub representation_size: usize,
    /// Box coder weights `(wx, wy, ww, wh)`.
    pub bbox_reg_weights: [f32; 4],
    /// β of the smooth-L1 box loss.
    pub smooth_l1_beta: f32,
}

impl Default for RoiHeadSettings {
    fn default() -> Self {
        RoiHeadSettings {
            fg_iou_thresh: 0.5,
            bg_iou_thresh: 0.5,
            batch_size_per_image: 512,
            positive_fraction: 0.25,
            pool_size: 7,
            sampling_ratio: 2,
            representation_size: 1024,
            bbox_reg_weights: [10.0, 10.0, 5.0, 5.0],
            smooth_l1_beta: 1.0 / 9.0,
        }
    }
}

/// A box regression loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BoxLoss {
    /// Smooth L1 with the configured β.
    #[default]
    SmoothL1,
    /// Plain L1.
    L1,
}

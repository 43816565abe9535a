//! Detectors on a DetNAS backbone (RetinaNet, FPN Faster R-CNN): configuration, pyramid geometry,
//! post-processing and FLOPs.
//! Names follow torchvision (`score_thresh`, `nms_thresh`, `detections_per_img`, ...).
//!
//! Module layering (no cycles): [`config`] depends only on [`crate::space::shape`], [`crate::detector::boxes`] and
//! [`crate::space`]; [`crate::detector::plan`] reads the config; [`levels`] and [`flops`] read the plan and the
//! cost model; [`postprocess`](mod@postprocess) reads the config and the levels.

pub mod boxes;
pub mod config;
mod config_serde;
pub mod contract;
pub mod flops;
pub mod heads;
pub mod levels;
pub mod plan;
pub mod postprocess;
pub mod two_stage;

pub use config::{DetectorConfig, HeadConv, INPUT_DIVISOR, Preprocess};
pub use flops::{DetectorFlops, detector_flops};
pub use heads::{
    BoxLoss, DetectorHead, DetectorKind, FasterRcnnSettings, RetinanetSettings, RoiHeadSettings, RpnSettings,
};
pub use levels::{LevelShape, all_anchors, pyramid_levels};
pub use postprocess::{RawDetection, postprocess};

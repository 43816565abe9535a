//! Detector FLOPs: every conv of the FPN and head as a [`ConvOp`], counted by the same function as
//! the backbone ([`ConvOp::flops`], the convention of [`crate::space::cost`]).

use super::config::DetectorConfig;
use super::heads::DetectorKind;
use super::levels::{LevelShape, pyramid_levels};
use crate::detector::plan::{ConvUnit, LinearUnit, box_head_plan, fpn_in_channels, fpn_plan, head_plan, rpn_plan};
use crate::error::Result;
use crate::space::SearchSpace;
use crate::space::arch::Arch;
use crate::space::cost::ConvOp;
use serde::Serialize;

/// Multiply-adds of a whole detector, split by part (conv convention of [`crate::space::cost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DetectorFlops {
    /// The backbone up to its last FPN stage.
    pub backbone: u64,
    /// Lateral, output and extra-level convs.
    pub fpn: u64,
    /// Every head: RetinaNet's towers and predictors, or `rpn + roi_head`.
    pub head: u64,
    /// Faster R-CNN's RPN head over every level (0 for RetinaNet).
    pub rpn: u64,
    /// Faster R-CNN's box head and predictor at the test-time post-NMS proposal count (0 for
    /// RetinaNet). RoIAlign's interpolation is not a multiply-add and is not counted.
    pub roi_head: u64,
    /// The sum of the parts.
    pub total: u64,
}

/// `unit` applied to a `from` map producing the `to` map.
fn op(unit: &ConvUnit, from: &LevelShape, to: &LevelShape) -> ConvOp {
    ConvOp {
        in_channels: unit.in_channels as u64,
        out_channels: unit.out_channels as u64,
        kernel: unit.kernel as u64,
        stride: unit.stride as u64,
        groups: unit.groups as u64,
        in_hw: (from.height as u64, from.width as u64),
        out_hw: (to.height as u64, to.width as u64),
        batch_norm: unit.bn.is_some(),
    }
}

/// A fully connected layer as a 1x1 conv on a 1x1 map.
fn linear_op(l: &LinearUnit) -> ConvOp {
    ConvOp::fully_connected(l.in_features as u64, l.out_features as u64)
}

/// FLOPs of the detector at its configured input.
pub fn detector_flops(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<DetectorFlops> {
    let backbone = crate::space::cost::cost(space, arch, cfg.input)?.backbone_flops;
    let levels = pyramid_levels(space, arch, cfg)?;
    let fpn = fpn_plan(&fpn_in_channels(space, cfg.kind()), cfg);
    // Lateral and output convs keep each level's size; each extra level comes from the one below.
    let mut fpn_ops: Vec<ConvOp> = Vec::new();
    for ((inner, layer), level) in fpn.inner.iter().zip(&fpn.layer).zip(&levels) {
        fpn_ops.extend([op(inner, level, level), op(layer, level, level)]);
    }
    let stages = fpn.inner.len();
    for (i, unit) in fpn.extra.iter().enumerate() {
        fpn_ops.push(op(unit, &levels[stages + i - 1], &levels[stages + i]));
    }
    let sum = |ops: &[ConvOp]| ops.iter().map(ConvOp::flops).sum::<u64>();
    let (rpn, roi_head, head) = match cfg.kind() {
        DetectorKind::Retinanet => {
            let plan = head_plan(cfg);
            let mut ops: Vec<ConvOp> = Vec::new();
            for level in &levels {
                for branch in [&plan.classification, &plan.regression] {
                    ops.extend(branch.tower.iter().flatten().chain([&branch.predictor]).map(|u| op(u, level, level)));
                }
            }
            (0, 0, sum(&ops))
        }
        DetectorKind::FasterRcnn => {
            let plan = rpn_plan(cfg);
            let ops: Vec<ConvOp> = levels
                .iter()
                .flat_map(|l| [&plan.conv, &plan.cls_logits, &plan.bbox_pred].map(|u| op(u, l, l)))
                .collect();
            let rpn = sum(&ops);
            let f = cfg.faster_rcnn().expect("a faster-rcnn configuration");
            let pool = f.roi_heads.pool_size;
            let pooled = LevelShape { name: "RoI".into(), height: pool, width: pool, stride_h: 1, stride_w: 1 };
            let box_head = box_head_plan(cfg);
            let mut ops: Vec<ConvOp> = box_head.convs.iter().flatten().map(|u| op(u, &pooled, &pooled)).collect();
            ops.extend(box_head.fcs.iter().chain([&box_head.cls_score, &box_head.bbox_pred]).map(linear_op));
            let roi_head = sum(&ops) * f.rpn.post_nms_top_n_test as u64;
            (rpn, roi_head, rpn + roi_head)
        }
    };
    let fpn = sum(&fpn_ops);
    Ok(DetectorFlops { backbone, fpn, head, rpn, roi_head, total: backbone + fpn + head })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::HeadConv;
    use crate::space::arch::Preset;

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

    #[test]
    fn detector_flops_are_exact() {
        // Pinned before the count moved onto `ConvOp::flops`: the numbers must not change.
        let (space, arch) = Preset::by_name("coco-retinanet-300m").unwrap().resolve();
        let f = detector_flops(&space, &arch, &DetectorConfig::default()).unwrap();
        assert_eq!((f.backbone, f.fpn, f.head), PINNED);
        // and equal to the former per-part formula: `Cin/g * Cout * k * k * area(output level)`
        let levels = pyramid_levels(&space, &arch, &DetectorConfig::default()).unwrap();
        let cfg = DetectorConfig::default();
        let unit = |u: &ConvUnit, l: &LevelShape| {
            (u.in_channels / u.groups * u.out_channels * u.kernel * u.kernel * l.height * l.width) as u64
        };
        let fpn = fpn_plan(&[160, 320, 640], &cfg);
        let mut old_fpn = unit(&fpn.extra[0], &levels[3]) + unit(&fpn.extra[1], &levels[4]);
        for ((inner, layer), level) in fpn.inner.iter().zip(&fpn.layer).zip(&levels) {
            old_fpn += unit(inner, level) + unit(layer, level);
        }
        let head = head_plan(&cfg);
        let per_level: u64 = [&head.classification, &head.regression]
            .iter()
            .flat_map(|b| b.tower.iter().flatten().chain([&b.predictor]))
            .map(|u| unit(u, &levels[0]) / (levels[0].height * levels[0].width) as u64)
            .sum();
        let area: u64 = levels.iter().map(|l| (l.height * l.width) as u64).sum();
        assert_eq!((f.fpn, f.head), (old_fpn, per_level * area));
    }

    #[test]
    fn faster_rcnn_flops_count_the_rpn_on_every_level_and_the_box_head_per_proposal() {
        let (space, arch) = Preset::by_name("coco-fpn-300m").unwrap().resolve();
        let cfg = DetectorConfig::new(crate::detector::DetectorKind::FasterRcnn);
        let f = detector_flops(&space, &arch, &cfg).unwrap();
        // RPN: 3x3 256->256 + 1x1 256->3 + 1x1 256->12 on P2..P6 of a 512 input.
        let area: u64 = [128u64, 64, 32, 16, 8].iter().map(|s| s * s).sum();
        assert_eq!(f.rpn, area * 256 * (256 * 9 + 3 + 12));
        // Box head: fc6 (256*7*7 -> 1024), fc7, cls_score (1024 -> 2), bbox_pred (1024 -> 8), per proposal.
        assert_eq!(f.roi_head, 1000 * (256 * 49 * 1024 + 1024 * 1024 + 1024 * 2 + 1024 * 8));
        assert_eq!(f.head, f.rpn + f.roi_head);
        assert_eq!(f.total, f.backbone + f.fpn + f.head);
        // FPN: four laterals and outputs (C2..C5), no P6 conv.
        let r = detector_flops(&space, &arch, &DetectorConfig::default()).unwrap();
        assert!(f.fpn > r.fpn, "P2 costs more than P6/P7 convs");
        assert_eq!(f.backbone, r.backbone, "the same backbone up to C5");
    }

    const PINNED: (u64, u64, u64) = (1_521_401_856, 3_511_681_024, 26_310_316_032);
}

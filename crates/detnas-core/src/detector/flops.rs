//! Detector FLOPs: every conv of the FPN and head as a [`ConvOp`], counted by the same function as
//! the backbone ([`ConvOp::flops`], the convention of [`crate::cost`]).

use super::config::DetectorConfig;
use super::levels::{LevelShape, pyramid_levels};
use crate::arch::Arch;
use crate::cost::ConvOp;
use crate::error::Result;
use crate::plan::{ConvUnit, fpn_plan, fpn_stage_indices, head_plan};
use crate::space::SearchSpace;
use serde::Serialize;

/// Multiply-adds of a whole detector, split by part (conv convention of [`crate::cost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DetectorFlops {
    pub backbone: u64,
    pub fpn: u64,
    pub head: u64,
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

/// FLOPs of the detector at its configured input.
pub fn detector_flops(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<DetectorFlops> {
    let backbone = crate::cost::cost(space, arch, cfg.input)?.backbone_flops;
    let levels = pyramid_levels(space, arch, cfg)?;
    let in_ch: Vec<usize> = fpn_stage_indices(space).iter().map(|&i| space.stages[i].channels as usize).collect();
    let fpn = fpn_plan(&in_ch, cfg);
    // Lateral and output convs keep each level's size; P6 comes from P5 and P7 from P6.
    let mut fpn_ops: Vec<ConvOp> = Vec::new();
    for ((inner, layer), level) in fpn.inner.iter().zip(&fpn.layer).zip(&levels) {
        fpn_ops.extend([op(inner, level, level), op(layer, level, level)]);
    }
    fpn_ops.extend([op(&fpn.p6, &levels[2], &levels[3]), op(&fpn.p7, &levels[3], &levels[4])]);
    let head = head_plan(cfg);
    let mut head_ops: Vec<ConvOp> = Vec::new();
    for level in &levels {
        for branch in [&head.classification, &head.regression] {
            head_ops.extend(branch.tower.iter().flatten().chain([&branch.predictor]).map(|u| op(u, level, level)));
        }
    }
    let fpn = fpn_ops.iter().map(ConvOp::flops).sum();
    let head = head_ops.iter().map(ConvOp::flops).sum();
    Ok(DetectorFlops { backbone, fpn, head, total: backbone + fpn + head })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Preset;
    use crate::detector::HeadConv;

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
        let mut old_fpn = unit(&fpn.p6, &levels[3]) + unit(&fpn.p7, &levels[4]);
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

    const PINNED: (u64, u64, u64) = (1_521_401_856, 3_511_681_024, 26_310_316_032);
}

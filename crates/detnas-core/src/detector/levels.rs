//! Pyramid geometry: the level grids of an architecture at the configured input, and their anchors.

use super::config::DetectorConfig;
use crate::detector::plan::{ExtraLevels, Pyramid};
use crate::error::Result;
use crate::space::SearchSpace;
use crate::space::arch::Arch;
use crate::space::shape::conv_out;
use serde::Serialize;

/// One pyramid level as the head sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelShape {
    /// `P3`..`P7` (RetinaNet) or `P2`..`P6` (Faster R-CNN).
    pub name: String,
    /// Grid height (feature map rows).
    pub height: usize,
    /// Grid width (feature map columns).
    pub width: usize,
    /// Anchor strides: `input / grid` (integer division, torchvision's rule).
    pub stride_h: usize,
    /// Horizontal anchor stride (see `stride_h`).
    pub stride_w: usize,
}

/// The pyramid levels of `arch` at the configured input: P3..P7 for RetinaNet (P6, P7 by 3x3
/// stride-2 convs), P2..P6 for Faster R-CNN (P6 by a stride-2 max-pool of kernel 1).
pub fn pyramid_levels(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<Vec<LevelShape>> {
    let report = crate::space::cost::cost(space, arch, cfg.input)?;
    let pyramid = Pyramid::of(cfg.kind());
    let mut sizes: Vec<(u64, u64)> = crate::detector::plan::fpn_stage_indices(space, cfg.kind())
        .iter()
        .map(|&i| (report.stages[i].height, report.stages[i].width))
        .collect();
    for _ in 0..pyramid.extra_count() {
        let (h, w) = *sizes.last().expect("at least one stage");
        let down = |n| match pyramid.extra {
            ExtraLevels::ConvP6P7 => conv_out(n, 3, 2, 1).unwrap_or(1),
            ExtraLevels::MaxPoolP6 => conv_out(n, 1, 2, 0).unwrap_or(1),
        };
        sizes.push((down(h), down(w)));
    }
    Ok(sizes
        .iter()
        .zip(pyramid.levels())
        .map(|(&(h, w), level)| LevelShape {
            name: format!("P{level}"),
            height: h as usize,
            width: w as usize,
            stride_h: (cfg.input.height / h) as usize,
            stride_w: (cfg.input.width / w) as usize,
        })
        .collect())
}

/// Anchors of every level, concatenated lowest level first in the heads' (y, x, anchor) order.
pub fn all_anchors(levels: &[LevelShape], cfg: &DetectorConfig) -> Vec<[f32; 4]> {
    levels
        .iter()
        .zip(cfg.cell_anchors())
        .flat_map(|(l, cell)| {
            crate::detector::boxes::grid_anchors(&cell, l.height, l.width, l.stride_h as f32, l.stride_w as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::arch::Preset;

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
    fn faster_rcnn_pyramid_of_a_512_input() {
        let (space, arch) = Preset::by_name("coco-fpn-300m").unwrap().resolve();
        let cfg = DetectorConfig::new(crate::detector::DetectorKind::FasterRcnn);
        let levels = pyramid_levels(&space, &arch, &cfg).unwrap();
        let dims: Vec<(&str, usize, usize)> = levels.iter().map(|l| (l.name.as_str(), l.height, l.stride_h)).collect();
        assert_eq!(dims, vec![("P2", 128, 4), ("P3", 64, 8), ("P4", 32, 16), ("P5", 16, 32), ("P6", 8, 64)]);
        let anchors = all_anchors(&levels, &cfg);
        assert_eq!(anchors.len(), (128 * 128 + 64 * 64 + 32 * 32 + 16 * 16 + 64) * 3);
        // One size per level: P2's anchors are 32 px squares and their 0.5 / 2 ratio variants.
        let side = |b: &[f32; 4]| ((b[2] - b[0]) * (b[3] - b[1])).sqrt();
        assert!((side(&anchors[1]) - 32.0).abs() < 0.5, "{:?}", anchors[1]);
    }
}

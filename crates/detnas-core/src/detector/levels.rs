//! Pyramid geometry: the P3..P7 grids of an architecture at the configured input, and their anchors.

use super::config::DetectorConfig;
use crate::arch::Arch;
use crate::error::Result;
use crate::shape::conv_out;
use crate::space::SearchSpace;
use serde::Serialize;

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
pub fn pyramid_levels(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<Vec<LevelShape>> {
    let report = crate::cost::cost(space, arch, cfg.input)?;
    let mut sizes: Vec<(u64, u64)> = crate::plan::fpn_stage_indices(space)
        .iter()
        .map(|&i| (report.stages[i].height, report.stages[i].width))
        .collect();
    for _ in 0..2 {
        let (h, w) = *sizes.last().expect("three stages");
        let down = |n| conv_out(n, 3, 2, 1).unwrap_or(1);
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
}

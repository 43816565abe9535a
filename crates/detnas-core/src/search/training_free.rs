//! Training-free fitness computed from a candidate's layer shapes alone: the MAE-DET maximum-entropy
//! score ([`madnas`]) and the baselines every proxy must beat ([`params`], [`flops`]). No weights,
//! no data: a candidate scores in microseconds, so a latency-constrained search runs in seconds.
//!
//! # The MAE-DET score, adapted to this project's networks
//!
//! MAE-DET (and DAMO-YOLO's TinyNAS) treat a network with Gaussian weights as an information
//! channel: a conv with fan-in `n = Cin / groups * k * k` multiplies the standard deviation of its
//! input by `√n`, so the log standard deviation `ln σ` of a feature map is the sum of `ln √n` over
//! the convs on its path. A map of `C x H x W` Gaussian elements has differential entropy
//! proportional to `C·H·W·ln σ`; in the log domain, `ln σ + ln(C·H·W)`. MAE-DET fixes the
//! resolution and keeps `ln σ + ln C` per stage, then weights the stages `[0, 0, 1, 1, 6]` (C1..C5)
//! for detection. Here:
//! - **Blocks with a channel split** (ShuffleNetV2 / Xception choices): the output concatenates the
//!   passthrough half (or, at stride 2, the projection branch) and the main branch. The entropy of
//!   a concatenation is the sum over its channels, so a block adds the channel-weighted mean of its
//!   branches' `Σ ln √n` (the passthrough adds 0). Depthwise convs have fan-in `k²`.
//! - **Resolution is a gene**, so `ln(H·W)` stays in every map's term (MAE-DET's `ln C` is the same
//!   expression at a fixed resolution).
//! - **FPN**: a lateral 1x1 conv (fan-in `C_l`) starts each level; the top-down sum adds variances
//!   (`ln σ = ½·ln(e^{2a} + e^{2b})`); the output 3x3 conv adds `ln √(9F)`; RetinaNet's P6/P7 convs
//!   follow P5 (Faster R-CNN's max-pooled P6 adds nothing but halves the map).
//! - **Head**: RetinaNet's tower adds `ln √n` per conv (dense `9·Cin`; separable `9` then `Cin`),
//!   and the level's map has `head_channels` channels (FPN width without a tower).
//! - Each pyramid level's `ln σ + ln(C·H·W)` enters with weight 1, beside the backbone's weighted
//!   stages: the head sees every level, and the detection loss is summed over them.
//!
//! ReLU (which halves the variance of every conv alike) and BN are ignored, as in MAE-DET.

use crate::detector::DetectorKind;
use crate::detector::flops::detector_flops;
use crate::detector::levels::pyramid_levels;
use crate::detector::plan::{ConvUnit, ExtraLevels, Paths, Pyramid, block_plan, detector_params, fpn_stage_indices};
use crate::detector::{DetectorConfig, HeadConv};
use crate::error::Result;
use crate::space::SearchSpace;
use crate::space::arch::Arch;
use crate::space::cost::cost;

/// MAE-DET's weight of a backbone stage by its nominal stride exponent (`C3`, `C4`: 1; `C5`: 6;
/// shallower stages 0).
pub fn stage_weight(c_level: u32) -> f64 {
    match c_level {
        3 | 4 => 1.0,
        5 => 6.0,
        _ => 0.0,
    }
}

/// `ln √n` of one conv: half the log of its fan-in (`Cin / groups · k²`).
pub fn conv_log_gain(unit: &ConvUnit) -> f64 {
    let fan_in = unit.in_channels / unit.groups * unit.kernel * unit.kernel;
    0.5 * (fan_in as f64).ln()
}

/// `ln σ` added by one block: the channel-weighted mean over the output's parts (projection or
/// passthrough, and main branch) of each part's `Σ ln √n`.
pub fn block_log_gain(space: &SearchSpace, layer: usize, arch: &Arch) -> f64 {
    let spec = space.layers()[layer];
    let plan = block_plan(&spec, arch.choices()[layer]);
    let gain = |units: &[ConvUnit]| units.iter().map(conv_log_gain).sum::<f64>();
    let out = spec.out_channels as f64;
    let main_out = plan.main.last().map_or(0, |u| u.out_channels) as f64;
    // The rest of the output is the projection branch (stride 2) or the untouched passthrough.
    let side = (out - main_out) / out * gain(&plan.proj);
    side + main_out / out * gain(&plan.main)
}

/// The terms of a candidate's MAE-DET score, for reports and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct MadnasTerms {
    /// `ln σ` at the end of every backbone stage.
    pub stage_log_std: Vec<f64>,
    /// Each stage's `ln σ + ln(C·H·W)`.
    pub stage_scores: Vec<f64>,
    /// Each pyramid level's `ln σ + ln(C·H·W)` at the head's output.
    pub level_scores: Vec<f64>,
    /// `Σ stage_weight · stage_score + Σ level_score`.
    pub total: f64,
}

/// The MAE-DET score of `arch` with the detector `cfg` (its genes applied); see the module docs.
pub fn madnas(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<MadnasTerms> {
    let report = cost(space, arch, cfg.input)?;
    let stem = crate::detector::plan::stem_plan(space);
    let mut log_std = conv_log_gain(&stem);
    let mut stage_log_std = Vec::with_capacity(space.stages.len());
    for spec in space.layers() {
        log_std += block_log_gain(space, spec.index, arch);
        if spec.block + 1 == space.stages[spec.stage].blocks {
            stage_log_std.push(log_std);
        }
    }
    let map_entropy = |c: f64, h: u64, w: u64| (c * h as f64 * w as f64).ln();
    let stage_scores: Vec<f64> = report
        .stages
        .iter()
        .zip(&stage_log_std)
        .map(|(s, &l)| l + map_entropy(s.channels as f64, s.height, s.width))
        .collect();
    let backbone: f64 =
        report.stages.iter().zip(&stage_scores).map(|(s, score)| stage_weight(s.stride.trailing_zeros()) * score).sum();
    let level_scores = level_scores(space, arch, cfg, &stage_log_std)?;
    let total = backbone + level_scores.iter().sum::<f64>();
    Ok(MadnasTerms { stage_log_std, stage_scores, level_scores, total })
}

/// `ln σ + ln(C·H·W)` of every pyramid level at the head's output (see the module docs).
fn level_scores(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig, stage_log_std: &[f64]) -> Result<Vec<f64>> {
    let kind = cfg.kind();
    let f = cfg.fpn_channels as f64;
    let output_gain = 0.5 * (9.0 * f).ln();
    let stages = fpn_stage_indices(space, kind);
    // Top-down: the lateral of each stage plus the upsampled level above, variances adding.
    let mut inner: Vec<f64> = vec![0.0; stages.len()];
    let mut above: Option<f64> = None;
    for (slot, &s) in stages.iter().enumerate().rev() {
        let lateral = stage_log_std[s] + 0.5 * (space.stages[s].channels as f64).ln();
        let sum = match above {
            Some(a) => 0.5 * ((2.0 * lateral).exp() + (2.0 * a).exp()).ln(),
            None => lateral,
        };
        inner[slot] = sum;
        above = Some(sum);
    }
    let mut levels: Vec<f64> = inner.iter().map(|a| a + output_gain).collect();
    let pyramid = Pyramid::of(kind);
    for _ in 0..pyramid.extra_count() {
        let below = *levels.last().expect("a pyramid has levels");
        levels.push(match pyramid.extra {
            ExtraLevels::ConvP6P7 => below + output_gain,
            ExtraLevels::MaxPoolP6 => below,
        });
    }
    let (tower, width) = match kind {
        DetectorKind::Retinanet => tower_gain(cfg),
        DetectorKind::FasterRcnn => (0.0, f),
    };
    let shapes = pyramid_levels(space, arch, cfg)?;
    Ok(levels.iter().zip(&shapes).map(|(l, s)| l + tower + (width * s.height as f64 * s.width as f64).ln()).collect())
}

/// RetinaNet's head tower: its `Σ ln √n` and the width of the map it leaves.
fn tower_gain(cfg: &DetectorConfig) -> (f64, f64) {
    let mut cin = cfg.fpn_channels as f64;
    let mut gain = 0.0;
    for _ in 0..cfg.head_convs {
        gain += match cfg.head_conv {
            HeadConv::Dense => 0.5 * (9.0 * cin).ln(),
            HeadConv::Separable => 0.5 * 9f64.ln() + 0.5 * cin.ln(),
        };
        cin = cfg.head_channels as f64;
    }
    (gain, cin)
}

/// Trainable parameters of the whole detector (weights, biases, BN affine; not running statistics).
pub fn params(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> u64 {
    detector_params(space, Paths::Single(arch), cfg)
        .iter()
        .filter(|p| !p.buffer)
        .map(|p| p.shape.iter().product::<usize>() as u64)
        .sum()
}

/// Multiply-adds of the whole detector at its input ([`detector_flops`]).
pub fn flops(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<u64> {
    Ok(detector_flops(space, arch, cfg)?.total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::plan::Init;
    use crate::space::{Choice, StageSpec};

    fn unit(cin: usize, cout: usize, k: usize, groups: usize) -> ConvUnit {
        ConvUnit {
            conv: "c".into(),
            bn: None,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride: 1,
            groups,
            bias: false,
            relu: false,
            weight_init: Init::Const(0.0),
            bias_init: 0.0,
        }
    }

    /// Two stages of one block each, 8 then 16 channels, one choice.
    fn tiny(choice: Choice) -> SearchSpace {
        SearchSpace {
            name: "tiny".into(),
            stem_channels: 4,
            stem_maxpool: false,
            stages: vec![StageSpec { blocks: 1, channels: 8 }, StageSpec { blocks: 2, channels: 16 }],
            last_channels: 32,
            num_classes: 10,
            allowed: vec![choice],
        }
    }

    #[test]
    fn conv_gain_is_half_log_fan_in() {
        assert!((conv_log_gain(&unit(16, 32, 3, 1)) - 0.5 * (144f64).ln()).abs() < 1e-12);
        // depthwise: fan-in k²
        assert!((conv_log_gain(&unit(16, 16, 5, 16)) - 0.5 * (25f64).ln()).abs() < 1e-12);
    }

    #[test]
    fn block_gains_computed_by_hand() {
        let space = tiny(Choice::Shufflenet3x3);
        let arch = Arch::new(vec![Choice::Shufflenet3x3; 3]);
        // Layer 0: stride 2, 4 -> 8. Projection: dw3x3 on 4 (9), 1x1 4->4 (4): 4 of 8 channels.
        // Main: 1x1 4->4 (fan-in 4), dw3x3 (9), 1x1 4->4 (4): the other 4 channels.
        let proj = 0.5 * 9f64.ln() + 0.5 * 4f64.ln();
        let main = 0.5 * 4f64.ln() + 0.5 * 9f64.ln() + 0.5 * 4f64.ln();
        let l0 = block_log_gain(&space, 0, &arch);
        assert!((l0 - (0.5 * proj + 0.5 * main)).abs() < 1e-12, "{l0}");
        // Layer 2: stride 1 on 16: passthrough 8 channels (gain 0); main on 8 -> mid 8 -> 8:
        // 1x1 (8), dw3x3 (9), 1x1 (8).
        let main2 = 0.5 * 8f64.ln() + 0.5 * 9f64.ln() + 0.5 * 8f64.ln();
        let l2 = block_log_gain(&space, 2, &arch);
        assert!((l2 - 0.5 * main2).abs() < 1e-12, "{l2}");
        // Xception at stride 1: dw3 (9), 1x1 8->8 (8), dw3 (9), 1x1 (8), dw3 (9), 1x1 (8).
        let x = tiny(Choice::Xception3x3);
        let xa = Arch::new(vec![Choice::Xception3x3; 3]);
        let main_x = 3.0 * 0.5 * 9f64.ln() + 3.0 * 0.5 * 8f64.ln();
        assert!((block_log_gain(&x, 2, &xa) - 0.5 * main_x).abs() < 1e-12);
    }

    #[test]
    fn stage_scores_computed_by_hand() {
        let space = tiny(Choice::Shufflenet3x3);
        let arch = Arch::new(vec![Choice::Shufflenet3x3; 3]);
        let cfg = DetectorConfig { input: crate::InputSize::new(64, 64), ..DetectorConfig::default() };
        let t = madnas(&space, &arch, &cfg).unwrap();
        let stem = 0.5 * 27f64.ln();
        let s0 = stem + block_log_gain(&space, 0, &arch);
        let s1 = s0 + block_log_gain(&space, 1, &arch) + block_log_gain(&space, 2, &arch);
        assert_eq!(t.stage_log_std.len(), 2);
        assert!((t.stage_log_std[0] - s0).abs() < 1e-12 && (t.stage_log_std[1] - s1).abs() < 1e-12);
        // 64x64 input: stem /2, stage 0 /4 (C2, 16x16x8), stage 1 /8 (C3, 8x8x16).
        assert!((t.stage_scores[0] - (s0 + (8.0 * 16.0 * 16.0f64).ln())).abs() < 1e-9);
        assert!((t.stage_scores[1] - (s1 + (16.0 * 8.0 * 8.0f64).ln())).abs() < 1e-9);
        // Only C3 (weight 1) counts among the backbone stages here.
        let levels: f64 = t.level_scores.iter().sum();
        assert!((t.total - (t.stage_scores[1] + levels)).abs() < 1e-9);
    }

    #[test]
    fn larger_kernels_deeper_heads_and_inputs_score_higher() {
        let space = SearchSpace::detnas_300m();
        let cfg = DetectorConfig::default();
        let score = |c: Choice, cfg: &DetectorConfig| madnas(&space, &Arch::uniform(&space, c), cfg).unwrap().total;
        let s3 = score(Choice::Shufflenet3x3, &cfg);
        assert!(s3 < score(Choice::Shufflenet5x5, &cfg));
        assert!(score(Choice::Shufflenet5x5, &cfg) < score(Choice::Shufflenet7x7, &cfg));
        let deeper = DetectorConfig { head_convs: cfg.head_convs + 1, ..cfg.clone() };
        assert!(s3 < score(Choice::Shufflenet3x3, &deeper));
        let larger = DetectorConfig { input: crate::InputSize::new(640, 640), ..cfg.clone() };
        assert!(s3 < score(Choice::Shufflenet3x3, &larger));
        // Levels: five for RetinaNet, each a finite number.
        let t = madnas(&space, &Arch::uniform(&space, Choice::Shufflenet3x3), &cfg).unwrap();
        assert_eq!(t.level_scores.len(), 5);
        assert!(t.level_scores.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn params_and_flops_match_the_plan_and_cost_model() {
        let space = SearchSpace::detnas_300m();
        let arch = Arch::uniform(&space, Choice::Xception3x3);
        let cfg = DetectorConfig::default();
        let small = DetectorConfig { fpn_channels: cfg.fpn_channels / 2, ..cfg.clone() };
        assert!(params(&space, &arch, &small) < params(&space, &arch, &cfg));
        assert!(flops(&space, &arch, &small).unwrap() < flops(&space, &arch, &cfg).unwrap());
        // The backbone's share of the count is the cost model's (which has no biases).
        let backbone = cost(&space, &arch, cfg.input).unwrap().backbone_params;
        assert!(params(&space, &arch, &cfg) > backbone);
    }
}

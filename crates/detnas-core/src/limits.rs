//! Stated maxima of the numbers a user gives (genome genes, detector configurations, counts of
//! genomes) and a memory estimate of a detector, so that a request too large to run is refused with
//! a message naming the limit instead of aborting on an allocation.

use crate::arch::Arch;
use crate::detector::{DetectorConfig, DetectorKind, pyramid_levels};
use crate::error::{CoreError, Result};
use crate::plan::{Paths, detector_params};
use crate::space::SearchSpace;

/// Widest FPN or head (channels): four times torchvision's 256, wider than any published
/// RetinaNet or Faster R-CNN head; a 3x3 conv at this width holds 9.4M weights.
pub const MAX_WIDTH: u64 = 1024;

/// Deepest head tower (convs per tower): four times torchvision's 4.
pub const MAX_HEAD_CONVS: usize = 16;

/// Largest network input side in pixels: 4096 covers every detection benchmark's resolution
/// (COCO's 1333 pixel side three times over); larger images are detected window by window
/// (`detect --tile`).
pub const MAX_INPUT_SIDE: u64 = 4096;

/// Most classes of a detector: eight times LVIS's 1203, the largest common detection vocabulary.
pub const MAX_CLASSES: usize = 10_000;

/// Most genomes drawn, measured or held at once (a population, a sample, the finalists): a few
/// MB of state, and days of evaluation, at this many.
pub const MAX_GENOMES: usize = 100_000;

/// Largest estimated memory of one detector (its weights plus the activations of the images of one
/// run, see [`model_bytes`]): 8 GiB, half of a 16 GiB machine. torchvision's RetinaNet at 800x1216
/// with 91 classes needs about 0.7 GiB by this estimate, the largest genes at 4096x4096 173 GiB.
pub const MAX_MODEL_BYTES: u64 = 8 << 30;

/// Bytes of one float32 value.
const F32_BYTES: u64 = 4;

/// Estimated memory of a detector running `batch` images at once: 4 bytes per parameter plus 4 per
/// value of every conv output of the backbone, the FPN and the heads (an upper bound: a runtime
/// reuses the memory of outputs it no longer needs). `cfg` is validated first, so the estimate
/// never walks an unbounded configuration.
pub fn model_bytes(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig, batch: usize) -> Result<u64> {
    cfg.validate()?;
    let params: u64 = detector_params(space, Paths::Single(arch), cfg)
        .iter()
        .map(|p| p.shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64)))
        .fold(0, u64::saturating_add);
    let ops = crate::cost::conv_ops(space, arch, cfg.input)?;
    let out = |o: &crate::cost::ConvOp| o.out_channels * o.out_hw.0 * o.out_hw.1;
    let mut values: u64 = ops.stem.iter().chain(ops.layers.iter().flatten()).map(out).sum();
    let anchors = cfg.anchors_per_cell() as u64;
    let (fpn, head) = (cfg.fpn_channels, cfg.head_channels);
    let tower = cfg.head_convs as u64 * head;
    // Values per cell of each pyramid level: lateral and output FPN maps, then the heads.
    let per_cell = match cfg.kind() {
        DetectorKind::Retinanet => 2 * fpn + 2 * tower + anchors * (cfg.num_classes() as u64 + 4),
        DetectorKind::FasterRcnn => 3 * fpn + anchors * 5,
    };
    for level in pyramid_levels(space, arch, cfg)? {
        values = values.saturating_add(per_cell.saturating_mul((level.height * level.width) as u64));
    }
    if let Some(f) = cfg.faster_rcnn() {
        let r = &f.roi_heads;
        let pooled = (r.pool_size * r.pool_size) as u64;
        let per_roi = (fpn + tower).saturating_mul(pooled)
            + 2 * r.representation_size as u64
            + 5 * cfg.predicted_classes() as u64;
        values = values.saturating_add(per_roi.saturating_mul(f.rpn.post_nms_top_n_test as u64));
    }
    Ok(params.saturating_add(values.saturating_mul(batch as u64)).saturating_mul(F32_BYTES))
}

/// Refuses a detector whose [`model_bytes`] exceed [`MAX_MODEL_BYTES`]; `what` names the request
/// (`export`, `bench --arch`) in the error.
pub fn check_model_memory(
    what: &str,
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    batch: usize,
) -> Result<()> {
    let needed = model_bytes(space, arch, cfg, batch)?;
    if needed > MAX_MODEL_BYTES {
        return Err(CoreError::TooLarge {
            what: format!("{what} (weights and activations of {batch} image(s) at {})", cfg.input),
            needed,
            limit: MAX_MODEL_BYTES,
            name: "MAX_MODEL_BYTES",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Preset;
    use crate::shape::InputSize;

    const GIB: u64 = 1 << 30;

    #[test]
    fn common_detectors_fit_and_the_largest_genes_do_not() {
        let (space, arch) = Preset::by_name("coco-retinanet-300m").unwrap().resolve();
        let coco = DetectorConfig {
            input: InputSize::new(800, 1216),
            class_names: (0..91).map(|i| format!("c{i}")).collect(),
            ..DetectorConfig::default()
        };
        let bytes = model_bytes(&space, &arch, &coco, 1).unwrap();
        assert!((GIB / 4..2 * GIB).contains(&bytes), "{bytes}");
        check_model_memory("export", &space, &arch, &coco, 1).unwrap();
        let huge = DetectorConfig {
            input: InputSize::new(MAX_INPUT_SIDE, MAX_INPUT_SIDE),
            fpn_channels: MAX_WIDTH,
            head_channels: MAX_WIDTH,
            head_convs: MAX_HEAD_CONVS,
            class_names: (0..MAX_CLASSES).map(|i| format!("c{i}")).collect(),
            ..DetectorConfig::default()
        };
        let e = check_model_memory("export", &space, &arch, &huge, 1).unwrap_err().to_string();
        assert!(e.contains("MAX_MODEL_BYTES") && e.contains("8.0 GiB") && e.contains("export"), "{e}");
        let e = check_model_memory("export", &space, &arch, &coco, 256).unwrap_err();
        assert!(matches!(e, CoreError::TooLarge { .. }), "{e}");
    }
}

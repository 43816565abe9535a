//! Stated maxima of the numbers a user gives (genome genes, detector configurations, counts of
//! genomes) and a memory estimate of a detector, so that a request too large to run is refused with
//! a message naming the limit instead of aborting on an allocation.

use crate::detector::plan::{Paths, detector_params};
use crate::detector::{DetectorConfig, DetectorKind, pyramid_levels};
use crate::error::{CoreError, Result};
use crate::space::SearchSpace;
use crate::space::arch::Arch;
use crate::space::shape::InputSize;

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

/// Most detections kept per image (`detect --max-det`): a hundred times torchvision's 1000
/// candidates per level.
pub const MAX_DETECTIONS: usize = 100_000;

/// Smallest window side in pixels of tiled detection (`detect --tile`): the tiler's own minimum.
pub const MIN_TILE: u32 = 32;

/// Largest fraction of a detection window shared with its neighbours (`detect --overlap`): windows
/// sharing more barely move.
pub const MAX_TILE_OVERLAP: f32 = 0.9;

/// Most threads or workers a run takes: a `u32`, what every runtime's thread setting holds (a
/// larger number is refused, never wrapped); more than the machine's cores are used as its cores.
pub const MAX_THREADS: usize = u32::MAX as usize;

/// Largest estimated memory of one detector (its weights plus the activations of the images of one
/// run, see [`model_bytes`]): 8 GiB, half of a 16 GiB machine. torchvision's RetinaNet at 800x1216
/// with 91 classes needs about 0.7 GiB by this estimate, the largest genes at 4096x4096 173 GiB.
pub const MAX_MODEL_BYTES: u64 = 8 << 30;

/// Largest float32 weights of one exported model: an ONNX file is one protobuf message, which
/// cannot exceed 2 GiB (the export writes no external data file).
pub const MAX_WEIGHT_BYTES: u64 = i32::MAX as u64;

/// Bytes of one float32 value.
const F32_BYTES: u64 = 4;

/// Estimated memory of a detector running `batch` images at once: 4 bytes per parameter plus 4 per
/// value of every conv output of the backbone, the FPN and the heads (an upper bound: a runtime
/// reuses the memory of outputs it no longer needs); with `batch` 0, the bytes of its weights.
/// `cfg` is validated first, so the estimate never walks an unbounded configuration.
pub fn model_bytes(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig, batch: usize) -> Result<u64> {
    cfg.validate()?;
    let params: u64 = detector_params(space, Paths::Single(arch), cfg)
        .iter()
        .map(|p| p.shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64)))
        .fold(0, u64::saturating_add);
    let ops = crate::space::cost::conv_ops(space, arch, cfg.input)?;
    let out = |o: &crate::space::cost::ConvOp| o.out_channels * o.out_hw.0 * o.out_hw.1;
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

/// Refuses a detector whose weights exceed [`MAX_WEIGHT_BYTES`] (they would not encode); `what`
/// names the request (`export`) in the error.
pub fn check_export_size(what: &str, space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<()> {
    let needed = model_bytes(space, arch, cfg, 0)?;
    if needed > MAX_WEIGHT_BYTES {
        return Err(CoreError::TooLarge {
            what: format!("{what} (float32 weights of the detector at {} classes)", cfg.num_classes()),
            needed,
            limit: MAX_WEIGHT_BYTES,
            name: "MAX_WEIGHT_BYTES, one ONNX protobuf",
        });
    }
    Ok(())
}

/// Refuses a detector whose [`model_bytes`] exceed [`MAX_MODEL_BYTES`] or whose weights exceed
/// [`MAX_WEIGHT_BYTES`]; `what` names the request (`bench --arch`) in the error.
pub fn check_model_memory(
    what: &str,
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    batch: usize,
) -> Result<()> {
    check_export_size(what, space, arch, cfg)?;
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

/// Most memory of the image batches a run holds from start to end (a search's BN recalibration
/// batches, one set per input resolution): 4 GiB, a quarter of a 16 GiB machine, leaving the rest
/// to the supernet and its activations. DetNAS's 20 batches of 8 images at 512x512 take 0.5 GiB.
pub const MAX_BATCHES_BYTES: u64 = 4 << 30;

/// Bytes of `batches` float32 batches of `batch_size` RGB images at each of `inputs`.
pub fn image_batches_bytes(batches: usize, batch_size: usize, inputs: &[InputSize]) -> u64 {
    let pixels = inputs.iter().map(|i| i.height.saturating_mul(i.width)).fold(0, u64::saturating_add);
    pixels.saturating_mul(3 * F32_BYTES).saturating_mul(batches as u64).saturating_mul(batch_size as u64)
}

/// Refuses holding [`image_batches_bytes`] over [`MAX_BATCHES_BYTES`]; `what` names the request.
pub fn check_batches_memory(what: &str, batches: usize, batch_size: usize, inputs: &[InputSize]) -> Result<()> {
    let needed = image_batches_bytes(batches, batch_size, inputs);
    if needed > MAX_BATCHES_BYTES {
        let sizes: Vec<String> = inputs.iter().map(InputSize::to_string).collect();
        return Err(CoreError::TooLarge {
            what: format!("{what} ({batches} batches of {batch_size} images at {})", sizes.join(", ")),
            needed,
            limit: MAX_BATCHES_BYTES,
            name: "MAX_BATCHES_BYTES",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::arch::Preset;

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
        check_model_memory("bench", &space, &arch, &coco, 1).unwrap();
        check_export_size("export", &space, &arch, &coco).unwrap();
        let huge = DetectorConfig {
            input: InputSize::new(MAX_INPUT_SIDE, MAX_INPUT_SIDE),
            fpn_channels: MAX_WIDTH,
            head_channels: MAX_WIDTH,
            head_convs: MAX_HEAD_CONVS,
            class_names: (0..MAX_CLASSES).map(|i| format!("c{i}")).collect(),
            ..DetectorConfig::default()
        };
        let e = check_model_memory("bench", &space, &arch, &coco, 256).unwrap_err();
        assert!(matches!(e, CoreError::TooLarge { .. }), "{e}");
        // the largest genes: their weights encode at one class, but they do not run in 8 GiB
        let wide = DetectorConfig { class_names: vec!["a".into()], ..huge.clone() };
        check_export_size("export", &space, &arch, &wide).unwrap();
        let e = check_model_memory("bench", &space, &arch, &wide, 1).unwrap_err().to_string();
        assert!(e.contains("MAX_MODEL_BYTES") && e.contains("8.0 GiB") && e.contains("bench"), "{e}");
        // at the most classes their weights alone are over one ONNX file
        let e = check_export_size("export", &space, &arch, &huge).unwrap_err().to_string();
        assert!(e.contains("MAX_WEIGHT_BYTES") && e.contains("10000 classes"), "{e}");
    }

    #[test]
    fn recalibration_batches_have_a_memory_limit() {
        let detnas = [InputSize::new(512, 512)];
        assert!(image_batches_bytes(20, 8, &detnas) < GIB);
        check_batches_memory("search", 20, 8, &detnas).unwrap();
        let e = check_batches_memory("search --recal-batches", 1000, 8, &detnas).unwrap_err().to_string();
        assert!(e.contains("MAX_BATCHES_BYTES") && e.contains("1000 batches of 8 images at 512x512"), "{e}");
        assert_eq!(image_batches_bytes(usize::MAX, usize::MAX, &detnas), u64::MAX);
    }
}

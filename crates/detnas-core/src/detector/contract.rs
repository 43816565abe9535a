//! The one contract between the exporter (`detnas-onnx`), the SDK (`detnas-infer`) and the
//! trainer: ONNX metadata keys, tensor names, detector kind names and named seed streams.
//!
//! Every exported model carries the [`keys`] below; a reader accepts a model whose
//! [`keys::FORMAT`] equals [`FORMAT_VERSION`]. Tensor names are exact ONNX value names.

/// Metadata keys written into every exported model (`detnas.*`).
pub mod keys {
    /// Version of the metadata contract ([`super::FORMAT_VERSION`]).
    pub const FORMAT: &str = "detnas.format";
    /// The [`crate::detector::DetectorConfig`] as JSON: the SDK's source of truth.
    pub const CONFIG: &str = "detnas.config";
    /// Name of the search space of the backbone.
    pub const SPACE: &str = "detnas.space";
    /// The backbone architecture's encoding.
    pub const ARCH: &str = "detnas.arch";
    /// The full genome (backbone and every detector gene, [`crate::search::genome::Candidate`] text form).
    pub const GENOME: &str = "detnas.genome";
    /// One of the [`super::detector_kinds`] names.
    pub const DETECTOR: &str = "detnas.detector";
    /// Class names as a JSON list (also inside [`CONFIG`]).
    pub const CLASSES: &str = "detnas.classes";
    /// Channel split of stride-1 blocks ([`crate::space::ChannelShuffle`]).
    pub const SHUFFLE: &str = "detnas.shuffle";
    /// `HxW` of the fixed network input.
    pub const INPUT: &str = "detnas.input";
    /// The pre-processing contract as JSON (letterbox, RGB, 0-255, in-graph normalisation).
    pub const PREPROCESS: &str = "detnas.preprocess";
    /// [`crate::detector::DetectorFlops`] as JSON.
    pub const FLOPS: &str = "detnas.flops";
    /// Parameter values after BN folding.
    pub const PARAMS: &str = "detnas.params";
    /// Where the weights came from.
    pub const WEIGHTS: &str = "detnas.weights";
    /// Images per run of a model exported with a batch size above 1 (absent: 1).
    pub const BATCH: &str = "detnas.batch";
    /// How the backbone's channel shuffle is written: `shuffle-free` when folded into the
    /// weights (absent: the shuffle as trained).
    pub const LAYOUT: &str = "detnas.layout";
}

/// Version of the metadata contract written by the exporter.
pub const FORMAT_VERSION: &str = "1";

/// ONNX value names of the detector graph.
pub mod tensors {
    /// The input: float32 `[1, 3, H, W]`, RGB 0-255, letterboxed.
    pub const IMAGES: &str = "images";
    /// float32 `[N, 4]`: x1, y1, x2, y2 in network-input pixels.
    pub const BOXES: &str = "boxes";
    /// float32 `[N]`, decreasing.
    pub const SCORES: &str = "scores";
    /// int64 `[N]`: 0-based indices into the class names.
    pub const LABELS: &str = "labels";
    /// int64 `[N]`: the image of each detection in a batch model (`[B, 3, H, W]` input).
    pub const BATCH_INDEX: &str = "batch_index";
    /// Optional raw head output, float32 `[1, A, K]`.
    pub const CLS_LOGITS: &str = "cls_logits";
    /// Optional raw head output, float32 `[1, A, 4]`.
    pub const BBOX_REGRESSION: &str = "bbox_regression";
}

/// Names of the detector kinds, as written under [`keys::DETECTOR`] and in configs.
pub mod detector_kinds {
    /// One-stage RetinaNet.
    pub const RETINANET: &str = "retinanet";
    /// Two-stage FPN Faster R-CNN.
    pub const FASTER_RCNN: &str = "faster-rcnn";
}

/// Named random streams. Every random decision of training, export and search draws from a
/// generator seeded by the run's seed and one of these streams, so two decisions never share a
/// sequence by accident. The values are fixed forever: changing one changes results.
pub mod seeds {
    use crate::rng::Rng;

    /// Per-epoch permutation of the training samples.
    pub const EPOCH_PERMUTATION: u64 = 1;
    /// Detection-batch augmentation (flip, scale).
    pub const DETECTION_AUGMENT: u64 = 2;
    /// Single-path sampling of a supernet step.
    pub const PATH_SAMPLING: u64 = 3;
    /// Augmentation of BN-recalibration batches.
    pub const RECALIBRATION_AUGMENT: u64 = 4;
    /// Classification-batch augmentation (crop, flip).
    pub const CLASSIFY_AUGMENT: u64 = 5;
    /// Detector-gene sampling (FPN/head width, depth, conv type, input) of a genes-supernet step.
    pub const GENE_SAMPLING: u64 = 6;
    /// RoI sampling of a Faster R-CNN training step (RPN anchors and box-head proposals).
    pub const ROI_SAMPLING: u64 = 7;
    /// Xor-ed into the seed for the sample order of BN-recalibration batches.
    pub const RECALIBRATION_ORDER_SALT: u64 = 0x5EED;
    /// Xor-ed into the seed of the held-out split of a detection data set (`split_holdout`).
    pub const HOLDOUT_SALT: u64 = 0x6A09_E667_F3BC_C908;

    /// Seed of step `step` of stream `stream` under the run seed `seed`.
    pub fn stream_seed(seed: u64, stream: u64, step: u64) -> u64 {
        let mut r =
            Rng::seed(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::seeds::*;

    #[test]
    fn streams_are_distinct_and_stable() {
        let all = [
            EPOCH_PERMUTATION,
            DETECTION_AUGMENT,
            PATH_SAMPLING,
            RECALIBRATION_AUGMENT,
            CLASSIFY_AUGMENT,
            GENE_SAMPLING,
            ROI_SAMPLING,
        ];
        let mut seen: Vec<u64> = all.iter().map(|&s| stream_seed(7, s, 3)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), all.len());
        assert_eq!(stream_seed(7, PATH_SAMPLING, 3), stream_seed(7, 3, 3));
    }
}

//! Export of a single-path RetinaNet detector to a self-contained ONNX model.
//!
//! Graph: `images` (float32 `[1, 3, H, W]`, RGB 0-255, letterboxed; see
//! [`detnas_core::detector::Preprocess`]) -> in-graph normalisation -> backbone (BN folded into the
//! convs) -> FPN P3..P7 -> RetinaNet head (weights shared across levels) -> per level sigmoid,
//! top-k candidates, box decoding against constant anchors, clipping -> score threshold -> per-class
//! NMS -> the `detections_per_img` best, sorted by decreasing score.
//!
//! Outputs: `boxes` float32 `[N, 4]` (x1, y1, x2, y2 in network-input pixels), `scores` float32
//! `[N]`, `labels` int64 `[N]` (0-based indices into the class names). With
//! [`ExportOptions::raw_outputs`] also `cls_logits` `[1, A, K]` and `bbox_regression` `[1, A, 4]`
//! over all anchors (torchvision's head output layout).

use crate::emit::{Candidates, Emitter, flatten_head, refs};
use crate::error::{OnnxError, Result};
use crate::graph::{Attr, Dim, ElemType, GraphBuilder};
use crate::layout::{Layout, LayoutPlan};
use crate::weights::Weights;
use detnas_core::detector::contract::tensors;
use detnas_core::detector::plan::head_plan;
use detnas_core::detector::{DetectorConfig, DetectorKind, LevelShape, all_anchors, detector_flops, pyramid_levels};
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use onnx_protobuf::ModelProto;

/// Export switches.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOptions {
    /// Also output the raw head tensors (for parity tests and debugging).
    pub raw_outputs: bool,
    /// Images per run (RetinaNet): `images` is `[batch, 3, H, W]`; with more than one, the
    /// post-processing runs per image in the graph and a `batch_index` output (int64 `[N]`) says
    /// which image each detection belongs to (detections grouped by image, each group sorted by
    /// decreasing score).
    pub batch: usize,
    /// How the backbone's channel shuffle is written ([`Layout`]); recorded in the metadata.
    pub layout: Layout,
}

/// The largest [`ExportOptions::batch`]: the post-processing is repeated per image in the graph.
pub const MAX_BATCH: usize = 256;

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { raw_outputs: false, batch: 1, layout: Layout::Shuffle }
    }
}

/// Metadata keys and format version, from the core's contract (kept here for existing callers).
pub use detnas_core::detector::contract::{FORMAT_VERSION, keys};

/// Runs the head on every level of `pyramid` and collects the candidates of each of the
/// `e.batch` images (with one image straight from the head outputs, else from the flattened
/// outputs gathered per image). The raw flattened outputs are kept in the first image's set.
fn head_candidates(
    e: &mut Emitter<'_>,
    cfg: &DetectorConfig,
    levels: &[LevelShape],
    pyramid: &[String],
    anchors: &[[f32; 4]],
) -> Result<Vec<Candidates>> {
    let batch = e.batch;
    let head = head_plan(cfg);
    // One set of candidates per image; with one image the flattened outputs are used as they are.
    let mut per_image: Vec<Candidates> = (0..batch).map(|_| Candidates::default()).collect();
    for (level, feat) in levels.iter().zip(pyramid) {
        let cls = e.head_branch(&head.classification, feat)?;
        let reg = e.head_branch(&head.regression, feat)?;
        if batch == 1 {
            per_image[0].add_level(e, (&cls, &reg), level, anchors, cfg)?;
            continue;
        }
        let (k, a) = (cfg.num_classes() as i64, cfg.anchors_per_cell() as i64);
        let cls_flat = flatten_head(e, &cls, level, a, k)?;
        let reg_flat = flatten_head(e, &reg, level, a, 4)?;
        per_image[0].raw_cls.push(cls_flat.clone());
        per_image[0].raw_reg.push(reg_flat.clone());
        for (b, candidates) in per_image.iter_mut().enumerate() {
            let index = e.g.const_i64("image_index", &[], vec![b as i64])?;
            let axis0 = || vec![("axis", Attr::Int(0))];
            let c = e.g.op("Gather", "post.image", &[&cls_flat, &index], axis0());
            let r = e.g.op("Gather", "post.image", &[&reg_flat, &index], axis0());
            candidates.add_flat(e, (&c, &r), level, anchors, cfg)?;
        }
    }
    Ok(per_image)
}

/// Concatenates the per-image `(boxes, scores, labels)` of `outs` into one set, and outputs
/// `batch_index` (the image of each detection, `det` long).
fn concat_images(
    e: &mut Emitter<'_>,
    outs: &[(String, String, String)],
    det: &Dim,
) -> Result<(String, String, String)> {
    let axis0 = || vec![("axis", Attr::Int(0))];
    let mut image_of = Vec::new();
    for (b, (_, s, _)) in outs.iter().enumerate() {
        let shape = e.g.op("Shape", "post.batch_index", &[s], vec![]);
        let value = Attr::Tensor(Box::new(crate::graph::tensor_i64("value", &[1], vec![b as i64])?));
        image_of.push(e.g.op("ConstantOfShape", "post.batch_index", &[&shape], vec![("value", value)]));
    }
    e.g.op_as("Concat", tensors::BATCH_INDEX, &refs(&image_of), axis0())?;
    e.g.output(tensors::BATCH_INDEX, ElemType::I64, std::slice::from_ref(det))?;
    let pick = |i: usize| outs.iter().map(|o| [&o.0, &o.1, &o.2][i].clone()).collect::<Vec<_>>();
    let (b, s, l) = (pick(0), pick(1), pick(2));
    Ok((
        e.g.op("Concat", "post.batch", &refs(&b), axis0()),
        e.g.op("Concat", "post.batch", &refs(&s), axis0()),
        e.g.op("Concat", "post.batch", &refs(&l), axis0()),
    ))
}

/// Outputs the raw head tensors `cls_logits` `[batch, total, K]` and `bbox_regression`
/// `[batch, total, 4]` from the flattened per-level outputs kept in `first` (`total` anchors).
fn raw_head_outputs(e: &mut Emitter<'_>, first: &Candidates, total: usize, cfg: &DetectorConfig) -> Result<()> {
    let batch = e.batch;
    let (total, k) = (total as i64, cfg.num_classes() as i64);
    let (cls, reg) = (refs(&first.raw_cls), refs(&first.raw_reg));
    e.g.op_as("Concat", tensors::CLS_LOGITS, &cls, vec![("axis", Attr::Int(1))])?;
    e.g.op_as("Concat", tensors::BBOX_REGRESSION, &reg, vec![("axis", Attr::Int(1))])?;
    e.g.output(tensors::CLS_LOGITS, ElemType::F32, &[Dim::Fixed(batch), Dim::Fixed(total), Dim::Fixed(k)])?;
    e.g.output(tensors::BBOX_REGRESSION, ElemType::F32, &[Dim::Fixed(batch), Dim::Fixed(total), Dim::Fixed(4)])?;
    Ok(())
}

/// Exports `arch` in `space` as a RetinaNet detector with `weights` (names from
/// [`detnas_core::detector::plan`]); BN statistics are folded into the convolutions.
pub fn export_retinanet(
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<ModelProto> {
    cfg.validate()?;
    cfg.expect_retinanet()?;
    arch.validate(space)?;
    if !(1..=MAX_BATCH).contains(&opts.batch) {
        return Err(OnnxError::Options(format!("batch {}: must be from 1 to {MAX_BATCH}", opts.batch)));
    }
    let levels = pyramid_levels(space, arch, cfg)?;
    let mut e = Emitter::new("detnas_retinanet", weights, cfg.bn_eps);
    let batch = opts.batch as i64;
    e.batch = batch;
    e.plan = plan_of(space, cfg, opts.layout);
    let (h, w) = (cfg.input.height as i64, cfg.input.width as i64);
    let images =
        e.g.input(tensors::IMAGES, ElemType::F32, &[Dim::Fixed(batch), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)])?;
    let pyramid = e.backbone_fpn(space, arch, cfg, &levels, &images)?;

    let anchors = all_anchors(&levels, cfg);
    let per_image = head_candidates(&mut e, cfg, &levels, &pyramid, &anchors)?;
    let mut outs: Vec<(String, String, String)> = Vec::new();
    for candidates in &per_image {
        outs.push(candidates.finish(&mut e, cfg)?);
    }
    let det = Dim::Symbolic("detections".into());
    let (boxes, scores, labels) =
        if batch == 1 { outs.pop().expect("one image") } else { concat_images(&mut e, &outs, &det)? };
    e.g.op_as("Identity", tensors::BOXES, &[&boxes], vec![])?;
    e.g.op_as("Identity", tensors::SCORES, &[&scores], vec![])?;
    e.g.op_as("Identity", tensors::LABELS, &[&labels], vec![])?;
    e.g.output(tensors::BOXES, ElemType::F32, &[det.clone(), Dim::Fixed(4)])?;
    e.g.output(tensors::SCORES, ElemType::F32, std::slice::from_ref(&det))?;
    e.g.output(tensors::LABELS, ElemType::I64, &[det])?;
    if opts.raw_outputs {
        raw_head_outputs(&mut e, &per_image[0], anchors.len(), cfg)?;
    }

    let params = e.params;
    let mut g = e.g;
    write_metadata(&mut g, space, arch, cfg, weights, params, opts.layout)?;
    if batch > 1 {
        g.metadata(keys::BATCH, batch.to_string());
    }
    Ok(g.build())
}

/// Exports `arch` as the detector family of `cfg` ([`export_retinanet`] or
/// [`crate::export_faster_rcnn`]).
pub fn export_detector(
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<ModelProto> {
    match cfg.kind() {
        DetectorKind::Retinanet => export_retinanet(space, arch, cfg, weights, opts),
        DetectorKind::FasterRcnn if opts.batch != 1 => {
            Err(OnnxError::Options(format!("batch {}: Faster R-CNN exports take one image per run", opts.batch)))
        }
        DetectorKind::FasterRcnn => crate::faster_rcnn::export_faster_rcnn(space, arch, cfg, weights, opts),
    }
}

/// The backbone's channel plan for `layout` (`None`: the shuffle as trained).
pub(crate) fn plan_of(space: &SearchSpace, cfg: &DetectorConfig, layout: Layout) -> Option<LayoutPlan> {
    (layout == Layout::ShuffleFree).then(|| LayoutPlan::new(space, cfg.shuffle))
}

/// The metadata contract ([`keys`]) and doc string of an exported detector; `params` counts the
/// parameter values read (BN statistics included).
pub(crate) fn write_metadata(
    g: &mut GraphBuilder,
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    weights: &Weights,
    params: usize,
    layout: Layout,
) -> Result<()> {
    let flops = detector_flops(space, arch, cfg)?;
    g.metadata(keys::FORMAT, FORMAT_VERSION);
    g.metadata(keys::CONFIG, serde_json::to_string(cfg).expect("config serializes"));
    g.metadata(keys::SPACE, space.name.clone());
    g.metadata(keys::ARCH, arch.to_string());
    let genome = detnas_core::search::genome::Candidate::joint(
        arch.clone(),
        detnas_core::search::genome::DetectorGenes::of(cfg),
    );
    g.metadata(keys::GENOME, genome.to_string());
    g.metadata(keys::DETECTOR, cfg.kind().name());
    g.metadata(keys::CLASSES, serde_json::to_string(&cfg.class_names).expect("names serialize"));
    g.metadata(keys::SHUFFLE, cfg.shuffle.name());
    if !layout.is_default() {
        g.metadata(keys::LAYOUT, layout.name());
    }
    g.metadata(keys::INPUT, cfg.input.to_string());
    g.metadata(
        keys::PREPROCESS,
        serde_json::json!({
            "resize": "letterbox", "align": "top-left", "pad_value": cfg.preprocess.pad_value,
            "channel_order": "RGB", "layout": "NCHW", "dtype": "float32", "range": [0.0, 255.0],
            "mean": cfg.preprocess.mean, "std": cfg.preprocess.std, "normalization": "in-graph",
        })
        .to_string(),
    );
    g.metadata(keys::FLOPS, serde_json::to_string(&flops).expect("flops serialize"));
    g.metadata(keys::PARAMS, params.to_string());
    g.metadata(keys::WEIGHTS, weights.source.clone());
    let family = match cfg.kind() {
        DetectorKind::Retinanet => "RetinaNet",
        DetectorKind::FasterRcnn => "Faster R-CNN",
    };
    g.doc(format!("DetNAS {family}: space {} arch {} input {}", space.name, arch, cfg.input));
    Ok(())
}

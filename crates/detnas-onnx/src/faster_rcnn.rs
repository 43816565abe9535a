//! Export of a single-path FPN Faster R-CNN to a self-contained ONNX model: both stages run in the
//! graph, at test-time settings, with the semantics (torchvision's) of
//! [`detnas_core::detector::two_stage::select_proposals`],
//! [`detnas_core::detector::two_stage::roi_level`] and
//! [`detnas_core::detector::two_stage::box_head_detections`].
//!
//! Graph: `images` (float32 `[1, 3, H, W]`, RGB 0-255, letterboxed) -> in-graph normalisation ->
//! backbone (BN folded into the convs) -> FPN C2..C5 -> P2..P5, P6 a stride-2 max-pool of P5 ->
//! RPN head on every level (weights shared) -> per level: the `pre_nms_top_n_test` best objectness
//! logits, their boxes decoded against constant anchors (weights 1) and clipped, boxes with a side
//! under `min_size` and probabilities under `score_thresh` dropped, NMS at `nms_thresh` -> the
//! `post_nms_top_n_test` best proposals over all levels -> each proposal's level (LevelMapper: k0 4,
//! canonical size 224) -> `RoiAlign` on its level of P2..P5 (torchvision's `aligned=False`,
//! average of `sampling_ratio`² bilinear samples per bin) -> box head (3x3 convs if any, `fc6`,
//! `fc7` without convs) -> predictor -> softmax, class-specific boxes (weights 10, 10, 5, 5),
//! clipping, background dropped, boxes with a side under 0.01 dropped, score threshold, per-class
//! NMS -> the `detections_per_img` best, by decreasing score.
//!
//! Outputs as RetinaNet's ([`crate::export`]): `boxes` float32 `[N, 4]`, `scores` float32 `[N]`,
//! `labels` int64 `[N]` (0-based class indices, no background). With
//! [`ExportOptions::raw_outputs`] also [`PROPOSALS`] float32 `[P, 4]` and [`PROPOSAL_SCORES`]
//! float32 `[P]` (the RPN's output, by decreasing objectness probability).

use crate::emit::{Emitter, final_nms, flatten_head, refs};
use crate::error::Result;
use crate::export::{ExportOptions, plan_of, write_metadata};
use crate::graph::{Attr, Dim, ElemType, tensor_i64};
use crate::weights::Weights;
use detnas_core::CoreError;
use detnas_core::detector::boxes::{BBox, BoxCoder};
use detnas_core::detector::contract::tensors;
use detnas_core::detector::plan::{Pyramid, box_head_plan, rpn_plan};
use detnas_core::detector::two_stage::{CANONICAL_LEVEL, CANONICAL_SIZE, LEVEL_EPS};
use detnas_core::detector::{
    DetectorConfig, DetectorKind, LevelShape, RoiHeadSettings, RpnSettings, all_anchors, pyramid_levels,
};
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use onnx_protobuf::ModelProto;

/// Optional output with [`ExportOptions::raw_outputs`]: the proposals, float32 `[P, 4]`.
pub const PROPOSALS: &str = "proposals";
/// Optional output with [`ExportOptions::raw_outputs`]: the proposals' objectness probabilities,
/// float32 `[P]`, decreasing.
pub const PROPOSAL_SCORES: &str = "proposal_scores";

/// torchvision's `postprocess_detections`: boxes with a side under this are dropped.
const MIN_DETECTION_SIDE: f32 = 1e-2;

/// Exports `arch` in `space` as an FPN Faster R-CNN detector with `weights` (names from
/// [`detnas_core::detector::plan`]); BN statistics are folded into the convolutions. `cfg` must be a
/// Faster R-CNN configuration.
pub fn export_faster_rcnn(
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<ModelProto> {
    cfg.validate()?;
    let settings = cfg.faster_rcnn().ok_or_else(|| CoreError::BadDetectorConfig {
        field: "kind",
        reason: format!("this needs a faster-rcnn configuration, not {}", cfg.kind()),
    })?;
    arch.validate(space)?;
    let levels = pyramid_levels(space, arch, cfg)?;
    let mut e = Emitter::new("detnas_faster_rcnn", weights, cfg.bn_eps);
    e.plan = plan_of(space, cfg, opts.layout);
    let (h, w) = (cfg.input.height as i64, cfg.input.width as i64);
    let images =
        e.g.input(tensors::IMAGES, ElemType::F32, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)])?;
    let pyramid = e.backbone_fpn(space, arch, cfg, &levels, &images)?;
    let (proposals, proposal_scores) = region_proposals(&mut e, &pyramid, &levels, cfg, &settings.rpn)?;
    let pooled = multiscale_roi_align(&mut e, &pyramid, &levels, &proposals, &settings.roi_heads)?;
    let (boxes, scores, labels) = box_head(&mut e, &pooled, &proposals, cfg, &settings.roi_heads)?;

    let det = Dim::Symbolic("detections".into());
    e.g.op_as("Identity", tensors::BOXES, &[&boxes], vec![])?;
    e.g.op_as("Identity", tensors::SCORES, &[&scores], vec![])?;
    e.g.op_as("Identity", tensors::LABELS, &[&labels], vec![])?;
    e.g.output(tensors::BOXES, ElemType::F32, &[det.clone(), Dim::Fixed(4)])?;
    e.g.output(tensors::SCORES, ElemType::F32, std::slice::from_ref(&det))?;
    e.g.output(tensors::LABELS, ElemType::I64, &[det])?;
    if opts.raw_outputs {
        let p = Dim::Symbolic("proposals".into());
        e.g.op_as("Identity", PROPOSALS, &[&proposals], vec![])?;
        e.g.op_as("Identity", PROPOSAL_SCORES, &[&proposal_scores], vec![])?;
        e.g.output(PROPOSALS, ElemType::F32, &[p.clone(), Dim::Fixed(4)])?;
        e.g.output(PROPOSAL_SCORES, ElemType::F32, &[p])?;
    }
    let params = e.params;
    let mut g = e.g;
    write_metadata(&mut g, space, arch, cfg, weights, params, opts.layout)?;
    Ok(g.build())
}

/// Column `i` of `t` along `axis` (the axis removed).
fn column(e: &mut Emitter<'_>, t: &str, i: i64, axis: i64, base: &str) -> Result<String> {
    let idx = e.g.const_i64("column", &[], vec![i])?;
    Ok(e.g.op("Gather", base, &[t, &idx], vec![("axis", Attr::Int(axis))]))
}

fn scalar(e: &mut Emitter<'_>, base: &str, v: f32) -> Result<String> {
    e.g.const_f32(base, &[], vec![v])
}

/// torchvision's `BoxCoder.decode` then `clip_boxes_to_image`: reference boxes as centre and size
/// `[cx, cy, w, h]` and `deltas` `[dx, dy, dw, dh]` (broadcastable tensors) -> `[x1, y1, x2, y2]`
/// clipped to the input.
fn decode_clip(
    e: &mut Emitter<'_>,
    reference: &[String; 4],
    deltas: &[String; 4],
    coder: &BoxCoder,
    cfg: &DetectorConfig,
    base: &str,
) -> Result<[String; 4]> {
    let mut scaled = Vec::new();
    for (i, d) in deltas.iter().enumerate() {
        let wgt = scalar(e, "coder.weight", coder.weights[i])?;
        scaled.push(e.g.op("Div", base, &[d, &wgt], vec![]));
    }
    let clamp = scalar(e, "coder.clamp", coder.clamp)?;
    let half = scalar(e, "half", 0.5)?;
    // centre: d * size + c; half extent: 0.5 * (exp(min(d, clamp)) * size)
    let mut centre = Vec::new();
    let mut extent = Vec::new();
    for i in 0..2 {
        let m = e.g.op("Mul", base, &[&scaled[i], &reference[i + 2]], vec![]);
        centre.push(e.g.op("Add", base, &[&m, &reference[i]], vec![]));
        let c = e.g.op("Min", base, &[&scaled[i + 2], &clamp], vec![]);
        let ex = e.g.op("Exp", base, &[&c], vec![]);
        let full = e.g.op("Mul", base, &[&ex, &reference[i + 2]], vec![]);
        extent.push(e.g.op("Mul", base, &[&half, &full], vec![]));
    }
    let zero = scalar(e, "zero", 0.0)?;
    let maxes = [scalar(e, "input_w", cfg.input.width as f32)?, scalar(e, "input_h", cfg.input.height as f32)?];
    let mut out = Vec::new();
    for (op, i) in [("Sub", 0), ("Sub", 1), ("Add", 0), ("Add", 1)] {
        let v = e.g.op(op, base, &[&centre[i], &extent[i]], vec![]);
        out.push(e.g.op("Clip", base, &[&v, &zero, &maxes[i]], vec![]));
    }
    Ok(out.try_into().expect("four coordinates"))
}

/// `[x1, y1, x2, y2]` tensors of equal shape stacked on a new last axis (`axis`).
fn stack(e: &mut Emitter<'_>, coords: &[String; 4], axis: i64, base: &str) -> Result<String> {
    let ax = e.i64s("axes", &[axis])?;
    let cols: Vec<String> = coords.iter().map(|c| e.g.op("Unsqueeze", base, &[c, &ax], vec![])).collect();
    Ok(e.g.op("Concat", base, &refs(&cols), vec![("axis", Attr::Int(axis))]))
}

/// Widths and heights of `[x1, y1, x2, y2]` tensors.
fn sides(e: &mut Emitter<'_>, c: &[String; 4], base: &str) -> (String, String) {
    (e.g.op("Sub", base, &[&c[2], &c[0]], vec![]), e.g.op("Sub", base, &[&c[3], &c[1]], vec![]))
}

/// Indices (int64 `[M]`) where the boolean `mask` (any shape, flattened row-major) is true.
fn true_indices(e: &mut Emitter<'_>, mask: &str, base: &str) -> Result<String> {
    let flat = e.i64s("shape", &[-1])?;
    let mask = e.g.op("Reshape", base, &[mask, &flat], vec![]);
    // NonZero of a 1-D mask: [1, M]
    let nz = e.g.op("NonZero", base, &[&mask], vec![]);
    Ok(e.g.op("Reshape", base, &[&nz, &flat], vec![]))
}

/// `TopK` of a 1-D `x` keeping `min(len(x), k)` values (sorted, largest first).
fn top_at_most(e: &mut Emitter<'_>, x: &str, k: usize, base: &str) -> Result<Vec<String>> {
    let count = e.g.op("Shape", base, &[x], vec![]);
    let cap = e.i64s(base, &[k as i64])?;
    let k = e.g.op("Min", base, &[&count, &cap], vec![]);
    Ok(e.g.node("TopK", base, &[x, &k], 2, vec![("axis", Attr::Int(0))]))
}

/// The RPN on every level and torchvision's `filter_proposals`: `(proposals [P, 4], scores [P])`,
/// by decreasing objectness probability.
fn region_proposals(
    e: &mut Emitter<'_>,
    pyramid: &[String],
    levels: &[LevelShape],
    cfg: &DetectorConfig,
    rpn: &RpnSettings,
) -> Result<(String, String)> {
    let plan = rpn_plan(cfg);
    let anchors = all_anchors(levels, cfg);
    let a = cfg.anchors_per_cell() as i64;
    let (mut boxes, mut scores) = (Vec::new(), Vec::new());
    let mut offset = 0;
    for (l, (level, feat)) in levels.iter().zip(pyramid).enumerate() {
        let t = e.unit(&plan.conv, feat)?;
        let logits = e.unit(&plan.cls_logits, &t)?;
        let deltas = e.unit(&plan.bbox_pred, &t)?;
        let n = level.height * level.width * a as usize;
        let logits = flatten_head(e, &logits, level, a, 1)?;
        let deltas = flatten_head(e, &deltas, level, a, 4)?;
        let base = format!("rpn.level{l}");
        let flat = e.i64s("shape", &[-1])?;
        let logits = e.g.op("Reshape", &base, &[&logits, &flat], vec![]);
        let shape = e.i64s("shape", &[-1, 4])?;
        let deltas = e.g.op("Reshape", &base, &[&deltas, &shape], vec![]);
        let (b, s) = level_proposals(e, (&logits, &deltas), &anchors[offset..offset + n], cfg, rpn, &base)?;
        offset += n;
        boxes.push(b);
        scores.push(s);
    }
    let axis0 = || vec![("axis", Attr::Int(0))];
    let boxes = e.g.op("Concat", "rpn.proposals", &refs(&boxes), axis0());
    let scores = e.g.op("Concat", "rpn.proposals", &refs(&scores), axis0());
    let top = top_at_most(e, &scores, rpn.post_nms_top_n_test, "rpn.post_nms_top_n")?;
    let proposals = e.g.op("Gather", "rpn.proposals", &[&boxes, &top[1]], axis0());
    Ok((proposals, top[0].clone()))
}

/// One level of `filter_proposals`: the best logits, decoded, clipped, filtered and suppressed:
/// `(boxes [m, 4], probabilities [m])`, by decreasing probability.
fn level_proposals(
    e: &mut Emitter<'_>,
    (logits, deltas): (&str, &str),
    anchors: &[BBox],
    cfg: &DetectorConfig,
    rpn: &RpnSettings,
    base: &str,
) -> Result<(String, String)> {
    let n = anchors.len();
    let k = rpn.pre_nms_top_n_test.min(n) as i64;
    let kk = e.i64s("rpn.pre_nms_top_n", &[k])?;
    let top = e.g.node("TopK", base, &[logits, &kk], 2, vec![("axis", Attr::Int(0))]);
    // anchors as (cx, cy, w, h), computed as torchvision's decoder does in float32
    let table: Vec<f32> = anchors
        .iter()
        .flat_map(|b| {
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            [b[0] + 0.5 * w, b[1] + 0.5 * h, w, h]
        })
        .collect();
    let table = e.g.const_f32("rpn.anchors_cxcywh", &[n as i64, 4], table)?;
    let axis0 = || vec![("axis", Attr::Int(0))];
    let anc = e.g.op("Gather", base, &[&table, &top[1]], axis0());
    let d = e.g.op("Gather", base, &[deltas, &top[1]], axis0());
    let mut reference = Vec::new();
    let mut codes = Vec::new();
    for i in 0..4 {
        reference.push(column(e, &anc, i, 1, base)?);
        codes.push(column(e, &d, i, 1, base)?);
    }
    let reference: [String; 4] = reference.try_into().expect("four columns");
    let codes: [String; 4] = codes.try_into().expect("four columns");
    let coords = decode_clip(e, &reference, &codes, &BoxCoder::retinanet(), cfg, base)?;
    let boxes = stack(e, &coords, 1, base)?;
    let scores = e.g.op("Sigmoid", base, &[&top[0]], vec![]);
    // remove_small_boxes, then the score threshold (>=)
    let (ws, hs) = sides(e, &coords, base);
    let min_size = scalar(e, "rpn.min_size", rpn.min_size)?;
    let wide = e.g.op("GreaterOrEqual", base, &[&ws, &min_size], vec![]);
    let tall = e.g.op("GreaterOrEqual", base, &[&hs, &min_size], vec![]);
    let big = e.g.op("And", base, &[&wide, &tall], vec![]);
    let thresh = scalar(e, "rpn.score_thresh", rpn.score_thresh)?;
    let confident = e.g.op("GreaterOrEqual", base, &[&scores, &thresh], vec![]);
    let keep = e.g.op("And", base, &[&big, &confident], vec![]);
    let boxes = e.g.op("Compress", base, &[&boxes, &keep], axis0());
    let scores = e.g.op("Compress", base, &[&scores, &keep], axis0());
    // NMS of this level (ONNX Runtime suppresses at IoU > threshold, as torchvision)
    let ax0 = e.i64s("axes", &[0])?;
    let nms_boxes = e.g.op("Unsqueeze", base, &[&boxes, &ax0], vec![]);
    let shape = e.i64s("shape", &[1, 1, -1])?;
    let nms_scores = e.g.op("Reshape", base, &[&scores, &shape], vec![]);
    let max_out = e.g.const_i64("nms_max", &[1], vec![k])?;
    let iou = e.g.const_f32("rpn.nms_thresh", &[1], vec![rpn.nms_thresh])?;
    let selected = e.g.op("NonMaxSuppression", base, &[&nms_boxes, &nms_scores, &max_out, &iou], vec![]);
    let idx = column(e, &selected, 2, 1, base)?;
    let boxes = e.g.op("Gather", base, &[&boxes, &idx], axis0());
    let scores = e.g.op("Gather", base, &[&scores, &idx], axis0());
    Ok((boxes, scores))
}

/// torchvision's `MultiScaleRoIAlign` on P2..P5: each proposal pooled on its level (LevelMapper),
/// `[P, C, pool, pool]` in the proposals' order.
fn multiscale_roi_align(
    e: &mut Emitter<'_>,
    pyramid: &[String],
    levels: &[LevelShape],
    proposals: &str,
    roi: &RoiHeadSettings,
) -> Result<String> {
    let base = "roi_heads.box_roi_pool";
    let pyr = Pyramid::of(DetectorKind::FasterRcnn);
    let (k_min, k_max) = (pyr.first_level, pyr.first_level + pyr.stages - 1);
    // level = clamp(floor(4 + log2(sqrt(area) / 224) + 1e-6), k_min, k_max), in float32
    // ([`detnas_core::detector::two_stage::roi_level`]; empty, inverted and NaN boxes to k_min)
    let coords: [String; 4] =
        (0..4).map(|i| column(e, proposals, i, 1, base)).collect::<Result<Vec<_>>>()?.try_into().expect("four columns");
    let (ws, hs) = sides(e, &coords, base);
    let area = e.g.op("Mul", base, &[&ws, &hs], vec![]);
    let side = e.g.op("Sqrt", base, &[&area], vec![]);
    let canonical = scalar(e, "canonical_size", CANONICAL_SIZE)?;
    let ratio = e.g.op("Div", base, &[&side, &canonical], vec![]);
    let ln = e.g.op("Log", base, &[&ratio], vec![]);
    let ln2 = scalar(e, "ln2", std::f32::consts::LN_2)?;
    let log2 = e.g.op("Div", base, &[&ln, &ln2], vec![]);
    let k0 = scalar(e, "canonical_level", CANONICAL_LEVEL)?;
    let eps = scalar(e, "level_eps", LEVEL_EPS)?;
    let level = e.g.op("Add", base, &[&k0, &log2], vec![]);
    let level = e.g.op("Add", base, &[&level, &eps], vec![]);
    let level = e.g.op("Floor", base, &[&level], vec![]);
    // at_least[j]: level >= k_min + 1 + j (false for NaN); the buckets partition the proposals
    let mut at_least = Vec::new();
    for k in k_min + 1..=k_max {
        let kf = scalar(e, "level", k as f32)?;
        at_least.push(e.g.op("GreaterOrEqual", base, &[&level, &kf], vec![]));
    }

    let zero = Attr::Tensor(Box::new(tensor_i64("value", &[1], vec![0])?));
    let (mut pooled, mut order) = (Vec::new(), Vec::new());
    for k in k_min..=k_max {
        let i = k - pyr.first_level;
        let lv = &levels[i];
        assert_eq!(lv.stride_h, lv.stride_w, "square strides on P2..P5 (inputs are multiples of 32)");
        // level k: at least k (always true for k_min) and not at least k + 1 (always for k_max)
        let below_next = (k < k_max).then(|| e.g.op("Not", base, &[&at_least[k - k_min]], vec![]));
        let here = match (k > k_min, below_next) {
            (true, Some(below)) => e.g.op("And", base, &[&at_least[k - k_min - 1], &below], vec![]),
            (true, None) => at_least[k - k_min - 1].clone(),
            (false, Some(below)) => below,
            (false, None) => unreachable!("k_min < k_max"),
        };
        let idx = true_indices(e, &here, base)?;
        let rois = e.g.op("Gather", base, &[proposals, &idx], vec![("axis", Attr::Int(0))]);
        let count = e.g.op("Shape", base, &[&idx], vec![]);
        let batch = e.g.op("ConstantOfShape", base, &[&count], vec![("value", zero.clone())]);
        let attrs = vec![
            ("coordinate_transformation_mode", Attr::Str("output_half_pixel".into())),
            ("mode", Attr::Str("avg".into())),
            ("output_height", Attr::Int(roi.pool_size as i64)),
            ("output_width", Attr::Int(roi.pool_size as i64)),
            ("sampling_ratio", Attr::Int(roi.sampling_ratio as i64)),
            ("spatial_scale", Attr::Float(1.0 / lv.stride_w as f32)),
        ];
        pooled.push(e.g.op("RoiAlign", base, &[&pyramid[i], &rois, &batch], attrs));
        order.push(idx);
    }
    // back to the proposals' order: position j of the concatenation holds proposal order[j]
    let axis0 = || vec![("axis", Attr::Int(0))];
    let pooled = e.g.op("Concat", base, &refs(&pooled), axis0());
    let order = e.g.op("Concat", base, &refs(&order), axis0());
    let order_f = e.g.op("Cast", base, &[&order], vec![("to", Attr::Int(1))]);
    let count = e.g.op("Shape", base, &[&order], vec![]);
    let inverse =
        e.g.node("TopK", base, &[&order_f, &count], 2, vec![("axis", Attr::Int(0)), ("largest", Attr::Int(0))]);
    Ok(e.g.op("Gather", base, &[&pooled, &inverse[1]], axis0()))
}

/// The box head, predictor and torchvision's `postprocess_detections`: `(boxes, scores, labels)`.
fn box_head(
    e: &mut Emitter<'_>,
    pooled: &str,
    proposals: &str,
    cfg: &DetectorConfig,
    roi: &RoiHeadSettings,
) -> Result<(String, String, String)> {
    let plan = box_head_plan(cfg);
    let base = "roi_heads.postprocess";
    let x = e.chain(&plan.convs.concat(), pooled)?;
    let mut x = e.g.op("Flatten", "roi_heads.box_head", &[&x], vec![("axis", Attr::Int(1))]);
    for fc in &plan.fcs {
        x = e.linear(fc, &x)?;
    }
    let logits = e.linear(&plan.cls_score, &x)?;
    let deltas = e.linear(&plan.bbox_pred, &x)?;
    let k = cfg.num_classes() as i64;
    // softmax over background + classes, then the classes only
    let probs = e.g.op("Softmax", base, &[&logits], vec![("axis", Attr::Int(1))]);
    let (start, end, ax1) = (e.i64s("start", &[1])?, e.i64s("end", &[k + 1])?, e.i64s("axes", &[1])?);
    let scores = e.g.op("Slice", base, &[&probs, &start, &end, &ax1], vec![]);
    let shape = e.i64s("shape", &[-1, k + 1, 4])?;
    let deltas = e.g.op("Reshape", base, &[&deltas, &shape], vec![]);
    let deltas = e.g.op("Slice", base, &[&deltas, &start, &end, &ax1], vec![]);
    // proposals as centre and size [P, 1]; class deltas [P, K]
    let mut reference = Vec::new();
    let mut codes = Vec::new();
    for i in 0..4 {
        let c = column(e, proposals, i, 1, base)?;
        reference.push(e.g.op("Unsqueeze", base, &[&c, &ax1], vec![]));
        codes.push(column(e, &deltas, i, 2, base)?);
    }
    let (ws, hs) = (
        e.g.op("Sub", base, &[&reference[2], &reference[0]], vec![]),
        e.g.op("Sub", base, &[&reference[3], &reference[1]], vec![]),
    );
    let half = scalar(e, "half", 0.5)?;
    let mut centre = Vec::new();
    for (lo, size) in [(&reference[0], &ws), (&reference[1], &hs)] {
        let m = e.g.op("Mul", base, &[&half, size], vec![]);
        centre.push(e.g.op("Add", base, &[lo, &m], vec![]));
    }
    let reference = [centre[0].clone(), centre[1].clone(), ws, hs];
    let codes: [String; 4] = codes.try_into().expect("four columns");
    let coder = BoxCoder { weights: roi.bbox_reg_weights, clamp: BoxCoder::default_clamp() };
    let coords = decode_clip(e, &reference, &codes, &coder, cfg, base)?;
    // (proposal, class) pairs flattened row-major; boxes with a side under 0.01 dropped
    let boxes = stack(e, &coords, 2, base)?;
    let shape = e.i64s("shape", &[-1, 4])?;
    let boxes = e.g.op("Reshape", base, &[&boxes, &shape], vec![]);
    let flat = e.i64s("shape", &[-1])?;
    let scores = e.g.op("Reshape", base, &[&scores, &flat], vec![]);
    let (bw, bh) = sides(e, &coords, base);
    let min_side = scalar(e, "min_side", MIN_DETECTION_SIDE)?;
    let wide = e.g.op("GreaterOrEqual", base, &[&bw, &min_side], vec![]);
    let tall = e.g.op("GreaterOrEqual", base, &[&bh, &min_side], vec![]);
    let big = e.g.op("And", base, &[&wide, &tall], vec![]);
    let idx = true_indices(e, &big, base)?;
    let axis0 = || vec![("axis", Attr::Int(0))];
    let boxes = e.g.op("Gather", base, &[&boxes, &idx], axis0());
    let scores = e.g.op("Gather", base, &[&scores, &idx], axis0());
    let kc = e.g.const_i64("num_classes", &[], vec![k])?;
    let labels = e.g.op("Mod", base, &[&idx, &kc], vec![]);
    // score threshold, per-class NMS, the best detections_per_img
    final_nms(e, &boxes, &scores, &labels, cfg)
}

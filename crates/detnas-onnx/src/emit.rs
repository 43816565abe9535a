//! The graph emitters shared by the full exporter ([`crate::export`]) and the part exporter
//! ([`crate::parts`]): pre-processing, stem and blocks, FPN, head branches and post-processing.

use crate::error::Result;
use crate::graph::{Attr, GraphBuilder};
use crate::layout::{BlockLayout, LayoutPlan, Order, Source};
use crate::weights::Weights;
use detnas_core::detector::plan::{
    ConvUnit, FpnPlan, HeadBranchPlan, LinearUnit, block_plan, fpn_plan, fpn_stage_indices, stem_plan,
};
use detnas_core::detector::{DetectorConfig, LevelShape, Preprocess};
use detnas_core::space::arch::Arch;
use detnas_core::space::{ChannelShuffle, Choice, LayerSpec, SearchSpace};
use std::collections::HashMap;

/// Emits the graph pieces of a detector into one [`GraphBuilder`]; the full exporter and the part
/// exporter ([`crate::parts`]) call the same methods, so a part is exactly the sub-graph the full
/// model contains.
pub(crate) struct Emitter<'w> {
    pub g: GraphBuilder,
    weights: &'w Weights,
    eps: f32,
    /// Conv prefix -> (weight, bias) initializer names, so shared head weights are stored once.
    emitted: HashMap<String, (String, String)>,
    /// Parameter values read so far (BN statistics counted, as before folding).
    pub params: usize,
    /// Images per run (the leading dimension of every activation).
    pub batch: i64,
    /// The shuffle-free channel plan of the backbone (`None`: the shuffle as trained).
    pub plan: Option<LayoutPlan>,
    /// Conv prefix -> the channel orders its stored weights take (set before the conv is emitted).
    orders: HashMap<String, ConvOrder>,
}

/// The channel orders a conv's stored weights are permuted to: `input[p]` is the logical input
/// channel it reads at physical position `p` (dense convs only), `output[p]` the logical output
/// channel it writes there (for a depthwise conv, the order it reads: it keeps its input's order).
#[derive(Default)]
struct ConvOrder {
    input: Option<Order>,
    output: Option<Order>,
}

/// Whether `u` is a depthwise conv (one group per channel): it keeps its input's channel order.
fn depthwise(u: &ConvUnit) -> bool {
    u.groups > 1 && u.groups == u.in_channels && u.groups == u.out_channels
}

impl<'w> Emitter<'w> {
    /// An empty graph called `name` reading `weights`; BN is folded with epsilon `eps`.
    pub fn new(name: &str, weights: &'w Weights, eps: f32) -> Self {
        Emitter {
            g: GraphBuilder::new(name),
            weights,
            eps,
            emitted: HashMap::new(),
            params: 0,
            batch: 1,
            plan: None,
            orders: HashMap::new(),
        }
    }

    /// Folds BN (if any) into the conv and stores the result once per conv.
    fn conv_weights(&mut self, u: &ConvUnit) -> Result<(String, String)> {
        if let Some(names) = self.emitted.get(&u.conv) {
            return Ok(names.clone());
        }
        let w = self.weights.get(&format!("{}.weight", u.conv), &u.weight_shape())?;
        let cout = u.out_channels;
        if self.weights.folded {
            // an exported model's conv: BN folded in, a bias always
            let weight = w.data.clone();
            let bias = self.weights.get(&format!("{}.bias", u.conv), &[cout])?.data.clone();
            return self.store_conv(u, weight, bias);
        }
        let mut weight = w.data.clone();
        let mut bias =
            if u.bias { self.weights.get(&format!("{}.bias", u.conv), &[cout])?.data.clone() } else { vec![0.0; cout] };
        self.params += weight.len() + if u.bias { cout } else { 0 };
        if let Some(bn) = &u.bn {
            let get = |n: &str| self.weights.get(&format!("{bn}.{n}"), &[cout]).map(|t| t.data.clone());
            let (gamma, beta, mean, var) = (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
            self.params += 2 * cout;
            let per_out = weight.len() / cout;
            for o in 0..cout {
                let s = gamma[o] / (var[o] + self.eps).sqrt();
                for v in &mut weight[o * per_out..(o + 1) * per_out] {
                    *v *= s;
                }
                bias[o] = (bias[o] - mean[o]) * s + beta[o];
            }
        }
        self.store_conv(u, weight, bias)
    }

    /// Stores a conv's folded weight and bias (in the channel orders set for it) once.
    fn store_conv(&mut self, u: &ConvUnit, mut weight: Vec<f32>, mut bias: Vec<f32>) -> Result<(String, String)> {
        let cout = u.out_channels;
        if let Some(order) = self.orders.get(&u.conv) {
            (weight, bias) = permute(u, weight, bias, order);
        }
        let dims: Vec<i64> = u.weight_shape().iter().map(|&d| d as i64).collect();
        let wn = self.g.weight(&format!("{}.weight", u.conv), &dims, weight)?;
        let bn = self.g.weight(&format!("{}.bias", u.conv), &[cout as i64], bias)?;
        self.emitted.insert(u.conv.clone(), (wn.clone(), bn.clone()));
        Ok((wn, bn))
    }

    /// `units` in sequence reading channels in `input` order (logical channels of the first
    /// unit's input), the last emitting `output` order; depthwise convs keep the order they read.
    fn chain_ordered(&mut self, units: &[ConvUnit], x: &str, input: &[usize], output: &[usize]) -> Result<String> {
        // the order the next unit reads (`None`: the previous unit's natural order)
        let mut order: Option<Order> = Some(input.to_vec());
        for (i, u) in units.iter().enumerate() {
            let last = i + 1 == units.len();
            let o = if depthwise(u) {
                ConvOrder { input: None, output: order.clone() }
            } else {
                let o = ConvOrder { input: order.take(), output: last.then(|| output.to_vec()) };
                order = o.output.clone();
                o
            };
            if last && order.as_deref() != Some(output) {
                return Err(crate::OnnxError::Options(format!(
                    "{}: a depthwise conv cannot end a branch of a shuffle-free block",
                    u.conv
                )));
            }
            self.orders.insert(u.conv.clone(), o);
        }
        self.chain(units, x)
    }

    /// One conv (BN folded) and its ReLU.
    pub fn unit(&mut self, u: &ConvUnit, x: &str) -> Result<String> {
        let (w, b) = self.conv_weights(u)?;
        let (k, s, p) = (u.kernel as i64, u.stride as i64, u.padding() as i64);
        let y = self.g.op(
            "Conv",
            &u.conv,
            &[x, &w, &b],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("group", Attr::Int(u.groups as i64)),
            ],
        );
        Ok(if u.relu { self.g.op("Relu", &u.conv, &[&y], vec![]) } else { y })
    }

    /// Convs applied in sequence.
    pub fn chain(&mut self, units: &[ConvUnit], x: &str) -> Result<String> {
        let mut y = x.to_string();
        for u in units {
            y = self.unit(u, &y)?;
        }
        Ok(y)
    }

    pub fn i64s(&mut self, base: &str, v: &[i64]) -> Result<String> {
        self.g.const_i64(base, &[v.len() as i64], v.to_vec())
    }

    fn scalar_f32(&mut self, base: &str, v: f32) -> Result<String> {
        self.g.const_f32(base, &[], vec![v])
    }

    /// Splits a stride-1 block input into (identity half, processed half).
    fn split(&mut self, x: &str, channels: usize, shuffle: ChannelShuffle, base: &str) -> Result<(String, String)> {
        let c = channels as i64;
        match shuffle {
            ChannelShuffle::EvenOdd => {
                let axes = self.i64s("axes1", &[1])?;
                let steps = self.i64s("step2", &[2])?;
                let end = self.i64s("end", &[c])?;
                let s0 = self.i64s("start0", &[0])?;
                let s1 = self.i64s("start1", &[1])?;
                let even = self.g.op("Slice", base, &[x, &s0, &end, &axes, &steps], vec![]);
                let odd = self.g.op("Slice", base, &[x, &s1, &end, &axes, &steps], vec![]);
                Ok((even, odd))
            }
            ChannelShuffle::HalfInterleave => {
                let idx: Vec<i64> = shuffle.split_indices(channels).iter().map(|&i| i as i64).collect();
                let half = channels / 2;
                let a = self.g.const_i64("shuffle_idx", &[half as i64], idx[..half].to_vec())?;
                let b = self.g.const_i64("shuffle_idx", &[half as i64], idx[half..].to_vec())?;
                let first = self.g.op("Gather", base, &[x, &a], vec![("axis", Attr::Int(1))]);
                let second = self.g.op("Gather", base, &[x, &b], vec![("axis", Attr::Int(1))]);
                Ok((first, second))
            }
        }
    }

    /// `(x / 255 - mean) / std` as `x * (1 / (255 std)) + (-mean / std)`.
    pub fn preprocess(&mut self, images: &str, p: &Preprocess) -> Result<String> {
        let scale: Vec<f32> = (0..3).map(|c| 1.0 / (255.0 * p.std[c])).collect();
        let shift: Vec<f32> = (0..3).map(|c| -p.mean[c] / p.std[c]).collect();
        let sc = self.g.const_f32("preprocess.scale", &[1, 3, 1, 1], scale)?;
        let sh = self.g.const_f32("preprocess.shift", &[1, 3, 1, 1], shift)?;
        let x = self.g.op("Mul", "preprocess", &[images, &sc], vec![]);
        Ok(self.g.op("Add", "preprocess", &[&x, &sh], vec![]))
    }

    /// One backbone block: both branches (stride 2) or split, main branch and concat (stride 1);
    /// shuffle-free when [`Emitter::plan`] is set.
    pub fn block(&mut self, layer: &LayerSpec, choice: Choice, shuffle: ChannelShuffle, x: &str) -> Result<String> {
        if let Some(block) = self.plan.as_ref().map(|p| p.blocks[layer.index].clone()) {
            return self.block_shuffle_free(layer, choice, &block, x);
        }
        let plan = block_plan(layer, choice);
        let base = format!("backbone.features.{}", layer.index);
        let (left, right) = if layer.stride == 2 {
            (self.chain(&plan.proj, x)?, self.chain(&plan.main, x)?)
        } else {
            let (keep, process) = self.split(x, layer.in_channels as usize, shuffle, &base)?;
            (keep, self.chain(&plan.main, &process)?)
        };
        Ok(self.g.op("Concat", &base, &[&left, &right], vec![("axis", Attr::Int(1))]))
    }

    /// One backbone block laid out by `layout`: contiguous `Split` and `Concat`, the shuffle in
    /// the weights.
    fn block_shuffle_free(
        &mut self,
        layer: &LayerSpec,
        choice: Choice,
        layout: &BlockLayout,
        x: &str,
    ) -> Result<String> {
        let plan = block_plan(layer, choice);
        let base = format!("backbone.features.{}", layer.index);
        let axis = || vec![("axis", Attr::Int(1))];
        match layout {
            BlockLayout::Stride2 { input, proj_out, main_out, .. } => {
                let left = self.chain_ordered(&plan.proj, x, input, proj_out)?;
                let right = self.chain_ordered(&plan.main, x, input, main_out)?;
                Ok(self.g.op("Concat", &base, &[&left, &right], axis()))
            }
            BlockLayout::Stride1 { split, process, branch_in, branch_out, concat, .. } => {
                let sizes: Vec<i64> = split.iter().map(|&n| n as i64).collect();
                let sizes = self.i64s("split", &sizes)?;
                let pieces = self.g.node("Split", &base, &[x, &sizes], split.len(), axis());
                let branch = self.chain_ordered(&plan.main, &pieces[*process], branch_in, branch_out)?;
                let inputs: Vec<&str> = concat
                    .iter()
                    .map(|s| match s {
                        Source::Piece(i) => pieces[*i].as_str(),
                        Source::Branch => branch.as_str(),
                    })
                    .collect();
                Ok(self.g.op("Concat", &base, &inputs, axis()))
            }
        }
    }

    /// torchvision's FeaturePyramidNetwork with its extra levels: C3..C5 -> P3..P7 (LastLevelP6P7
    /// on P5) or C2..C5 -> P2..P6 (LastLevelMaxPool), one lateral per entry of `feats`.
    pub fn fpn(
        &mut self,
        fpn: &FpnPlan,
        feats: &[String],
        levels: &[LevelShape],
        channels: u64,
    ) -> Result<Vec<String>> {
        let fc = channels as i64;
        let top = feats.len() - 1;
        let mut last_inner = self.unit(&fpn.inner[top], &feats[top])?;
        let mut pyramid = vec![self.unit(&fpn.layer[top], &last_inner)?];
        for i in (0..top).rev() {
            let lateral = self.unit(&fpn.inner[i], &feats[i])?;
            let sizes = self.i64s("fpn.size", &[self.batch, fc, levels[i].height as i64, levels[i].width as i64])?;
            let up = self.g.op(
                "Resize",
                "fpn.upsample",
                &[&last_inner, "", "", &sizes],
                vec![
                    ("mode", Attr::Str("nearest".into())),
                    ("coordinate_transformation_mode", Attr::Str("asymmetric".into())),
                    ("nearest_mode", Attr::Str("floor".into())),
                ],
            );
            last_inner = self.g.op("Add", "fpn.merge", &[&lateral, &up], vec![]);
            pyramid.insert(0, self.unit(&fpn.layer[i], &last_inner)?);
        }
        let top = pyramid.last().expect("at least one level").clone();
        match fpn.extra.as_slice() {
            // RetinaNet: P6 = conv(P5), P7 = conv(relu(P6)).
            [p6_conv, p7_conv] => {
                let p6 = self.unit(p6_conv, &top)?;
                let p6_relu = self.g.op("Relu", "fpn.extra_blocks", &[&p6], vec![]);
                let p7 = self.unit(p7_conv, &p6_relu)?;
                pyramid.push(p6);
                pyramid.push(p7);
            }
            // Faster R-CNN: P6 = max-pool(P5), kernel 1, stride 2.
            [] => {
                let attrs = vec![
                    ("kernel_shape", Attr::Ints(vec![1, 1])),
                    ("strides", Attr::Ints(vec![2, 2])),
                    ("pads", Attr::Ints(vec![0, 0, 0, 0])),
                ];
                pyramid.push(self.g.op("MaxPool", "fpn.extra_blocks.pool", &[&top], attrs));
            }
            other => unreachable!("the plan makes 0 or 2 extra convs, not {}", other.len()),
        }
        Ok(pyramid)
    }

    /// One head branch (tower, then predictor) on one pyramid level.
    pub fn head_branch(&mut self, branch: &HeadBranchPlan, feat: &str) -> Result<String> {
        let y = self.chain(&branch.tower.concat(), feat)?;
        self.unit(&branch.predictor, &y)
    }

    /// In-graph normalisation, the backbone path `arch` and the FPN of `cfg`'s family on `images`:
    /// the pyramid levels, lowest first (P3..P7 or P2..P6).
    pub fn backbone_fpn(
        &mut self,
        space: &SearchSpace,
        arch: &Arch,
        cfg: &DetectorConfig,
        levels: &[LevelShape],
        images: &str,
    ) -> Result<Vec<String>> {
        let x = self.preprocess(images, &cfg.preprocess)?;
        let mut x = self.unit(&stem_plan(space), &x)?;
        let mut stage_outputs = Vec::new();
        for (layer, &choice) in space.layers().iter().zip(arch.choices()) {
            x = self.block(layer, choice, cfg.shuffle, &x)?;
            if layer.block + 1 == space.stages[layer.stage].blocks {
                stage_outputs.push(x.clone());
            }
        }
        let stage_idx = fpn_stage_indices(space, cfg.kind());
        let in_ch: Vec<usize> = stage_idx.iter().map(|&i| space.stages[i].channels as usize).collect();
        let feats: Vec<String> = stage_idx.iter().map(|&i| stage_outputs[i].clone()).collect();
        let fpn = fpn_plan(&in_ch, cfg);
        if let Some(plan) = &self.plan {
            // the lateral convs read each stage in its planned order
            for (inner, &stage) in fpn.inner.iter().zip(&stage_idx) {
                let order = plan.stage_output(space, stage).clone();
                self.orders.insert(inner.conv.clone(), ConvOrder { input: Some(order), output: None });
            }
        }
        self.fpn(&fpn, &feats, levels, cfg.fpn_channels)
    }

    /// A fully connected layer on `[N, in]` (`Gemm`, weight `[out, in]` transposed), then its ReLU.
    pub fn linear(&mut self, l: &LinearUnit, x: &str) -> Result<String> {
        let w = self.weights.get(&format!("{}.weight", l.name), &[l.out_features, l.in_features])?.data.clone();
        let b = self.weights.get(&format!("{}.bias", l.name), &[l.out_features])?.data.clone();
        self.params += w.len() + b.len();
        let (o, i) = (l.out_features as i64, l.in_features as i64);
        let wn = self.g.weight(&format!("{}.weight", l.name), &[o, i], w)?;
        let bn = self.g.weight(&format!("{}.bias", l.name), &[o], b)?;
        let y = self.g.op("Gemm", &l.name, &[x, &wn, &bn], vec![("transB", Attr::Int(1))]);
        Ok(if l.relu { self.g.op("Relu", &l.name, &[&y], vec![]) } else { y })
    }
}

/// `weight` and `bias` of `u` (BN folded) with their channels in `order`'s physical orders.
fn permute(u: &ConvUnit, weight: Vec<f32>, bias: Vec<f32>, order: &ConvOrder) -> (Vec<f32>, Vec<f32>) {
    let (cout, cin_g) = (u.out_channels, u.in_channels / u.groups);
    let kk = u.kernel * u.kernel;
    let per_out = cin_g * kk;
    let mut weight = weight;
    let mut bias = bias;
    if let Some(input) = &order.input {
        assert!(u.groups == 1 && input.len() == cin_g, "{}: input order of a dense conv", u.conv);
        let mut w = vec![0.0; weight.len()];
        for o in 0..cout {
            for (p, &l) in input.iter().enumerate() {
                let (to, from) = (o * per_out + p * kk, o * per_out + l * kk);
                w[to..to + kk].copy_from_slice(&weight[from..from + kk]);
            }
        }
        weight = w;
    }
    if let Some(output) = &order.output {
        assert_eq!(output.len(), cout, "{}: output order", u.conv);
        let mut w = vec![0.0; weight.len()];
        for (p, &l) in output.iter().enumerate() {
            w[p * per_out..(p + 1) * per_out].copy_from_slice(&weight[l * per_out..(l + 1) * per_out]);
        }
        bias = output.iter().map(|&l| bias[l]).collect();
        weight = w;
    }
    (weight, bias)
}

/// The per-level post-processing state: levels are added in order P3..P7, then
/// [`Candidates::finish`] runs threshold, NMS and the final top-k.
#[derive(Default)]
pub(crate) struct Candidates {
    boxes: Vec<String>,
    scores: Vec<String>,
    labels: Vec<String>,
    /// Flattened head outputs `[1, n, K]` and `[1, n, 4]` per level (torchvision's layout).
    pub raw_cls: Vec<String>,
    pub raw_reg: Vec<String>,
    offset: usize,
}

impl Candidates {
    /// Flattens one level's head outputs (`cls` `[1, A*K, h, w]`, `reg` `[1, A*4, h, w]`) and adds
    /// its top-k decoded, clipped candidates; `anchors` are those of every level.
    pub fn add_level(
        &mut self,
        e: &mut Emitter<'_>,
        (cls, reg): (&str, &str),
        level: &LevelShape,
        anchors: &[[f32; 4]],
        cfg: &DetectorConfig,
    ) -> Result<()> {
        let (k, a) = (cfg.num_classes() as i64, cfg.anchors_per_cell() as i64);
        let cls_flat = flatten_head(e, cls, level, a, k)?;
        let reg_flat = flatten_head(e, reg, level, a, 4)?;
        self.raw_cls.push(cls_flat.clone());
        self.raw_reg.push(reg_flat.clone());
        self.add_flat(e, (&cls_flat, &reg_flat), level, anchors, cfg)
    }

    /// [`Candidates::add_level`] on one image's flattened outputs (`[1, n, K]` / `[n, K]` and the
    /// same with 4): its top-k decoded, clipped candidates.
    pub fn add_flat(
        &mut self,
        e: &mut Emitter<'_>,
        (cls_flat, reg_flat): (&str, &str),
        level: &LevelShape,
        anchors: &[[f32; 4]],
        cfg: &DetectorConfig,
    ) -> Result<()> {
        let n = level.height * level.width * cfg.anchors_per_cell();
        let level_anchors = &anchors[self.offset..self.offset + n];
        self.offset += n;
        let (b, s, l) = level_candidates(e, cls_flat, reg_flat, level_anchors, n, cfg)?;
        self.boxes.push(b);
        self.scores.push(s);
        self.labels.push(l);
        Ok(())
    }

    /// Score threshold, per-class NMS and the best detections: `(boxes, scores, labels)`.
    pub fn finish(&self, e: &mut Emitter<'_>, cfg: &DetectorConfig) -> Result<(String, String, String)> {
        let boxes = e.g.op("Concat", "candidates", &refs(&self.boxes), vec![("axis", Attr::Int(0))]);
        let scores = e.g.op("Concat", "candidates", &refs(&self.scores), vec![("axis", Attr::Int(0))]);
        let labels = e.g.op("Concat", "candidates", &refs(&self.labels), vec![("axis", Attr::Int(0))]);
        final_nms(e, &boxes, &scores, &labels, cfg)
    }
}

pub(crate) fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `[B, A*C, H, W]` -> `[B, H*W*A, C]` (torchvision's order: y, x, anchor), `B` the emitter's batch.
pub(crate) fn flatten_head(e: &mut Emitter<'_>, t: &str, level: &LevelShape, a: i64, c: i64) -> Result<String> {
    let (h, w, b) = (level.height as i64, level.width as i64, e.batch);
    let s5 = e.i64s("shape", &[b, a, c, h, w])?;
    let r = e.g.op("Reshape", "head.flatten", &[t, &s5], vec![]);
    let tr = e.g.op("Transpose", "head.flatten", &[&r], vec![("perm", Attr::Ints(vec![0, 3, 4, 1, 2]))]);
    let s3 = e.i64s("shape", &[b, h * w * a, c])?;
    Ok(e.g.op("Reshape", "head.flatten", &[&tr, &s3], vec![]))
}

/// Top-k candidates of one level: decoded, clipped boxes `[k, 4]`, scores `[k]`, labels `[k]`.
fn level_candidates(
    e: &mut Emitter<'_>,
    cls: &str,
    reg: &str,
    anchors: &[[f32; 4]],
    n: usize,
    cfg: &DetectorConfig,
) -> Result<(String, String, String)> {
    let k = cfg.num_classes();
    let topk = cfg.expect_retinanet()?.topk_candidates.min(n * k) as i64;
    let flat_shape = e.i64s("shape", &[-1])?;
    let flat = e.g.op("Reshape", "post.scores", &[cls, &flat_shape], vec![]);
    let probs = e.g.op("Sigmoid", "post.scores", &[&flat], vec![]);
    let kk = e.i64s("topk", &[topk])?;
    let top = e.g.node("TopK", "post.topk", &[&probs, &kk], 2, vec![("axis", Attr::Int(0))]);
    let kc = e.g.const_i64("num_classes", &[], vec![k as i64])?;
    let anchor_idx = e.g.op("Div", "post.anchor_idx", &[&top[1], &kc], vec![]);
    let labels = e.g.op("Mod", "post.labels", &[&top[1], &kc], vec![]);
    // anchors as (cx, cy, w, h)
    let table: Vec<f32> = anchors
        .iter()
        .flat_map(|b| {
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            [b[0] + 0.5 * w, b[1] + 0.5 * h, w, h]
        })
        .collect();
    let table = e.g.const_f32("anchors_cxcywh", &[n as i64, 4], table)?;
    let reg_shape = e.i64s("shape", &[-1, 4])?;
    let reg2 = e.g.op("Reshape", "post.deltas", &[reg, &reg_shape], vec![]);
    let deltas = e.g.op("Gather", "post.deltas", &[&reg2, &anchor_idx], vec![("axis", Attr::Int(0))]);
    let anc = e.g.op("Gather", "post.anchors", &[&table, &anchor_idx], vec![("axis", Attr::Int(0))]);
    let sizes = e.i64s("split", &[1, 1, 1, 1])?;
    let d = e.g.node("Split", "post.decode", &[&deltas, &sizes], 4, vec![("axis", Attr::Int(1))]);
    let an = e.g.node("Split", "post.decode", &[&anc, &sizes], 4, vec![("axis", Attr::Int(1))]);
    let coder = detnas_core::detector::boxes::BoxCoder::retinanet();
    let mut xs = Vec::new();
    // pcx = dx / wx * w + cx ; pw = exp(min(dw / ww, clamp)) * w
    let centre = |e: &mut Emitter<'_>, i: usize| -> Result<String> {
        let wgt = e.scalar_f32("coder.weight", coder.weights[i])?;
        let dv = e.g.op("Div", "post.decode", &[&d[i], &wgt], vec![]);
        let m = e.g.op("Mul", "post.decode", &[&dv, &an[i + 2]], vec![]);
        Ok(e.g.op("Add", "post.decode", &[&m, &an[i]], vec![]))
    };
    let pcx = centre(e, 0)?;
    let pcy = centre(e, 1)?;
    let extent = |e: &mut Emitter<'_>, i: usize| -> Result<String> {
        let wgt = e.scalar_f32("coder.weight", coder.weights[i])?;
        let clamp = e.scalar_f32("coder.clamp", coder.clamp)?;
        let dv = e.g.op("Div", "post.decode", &[&d[i], &wgt], vec![]);
        let c = e.g.op("Min", "post.decode", &[&dv, &clamp], vec![]);
        let ex = e.g.op("Exp", "post.decode", &[&c], vec![]);
        let full = e.g.op("Mul", "post.decode", &[&ex, &an[i]], vec![]);
        let half = e.scalar_f32("half", 0.5)?;
        Ok(e.g.op("Mul", "post.decode", &[&half, &full], vec![]))
    };
    let hw_ = extent(e, 2)?;
    let hh_ = extent(e, 3)?;
    let zero = e.scalar_f32("zero", 0.0)?;
    let wmax = e.scalar_f32("input_w", cfg.input.width as f32)?;
    let hmax = e.scalar_f32("input_h", cfg.input.height as f32)?;
    for (c, half, max, op) in
        [(&pcx, &hw_, &wmax, "Sub"), (&pcy, &hh_, &hmax, "Sub"), (&pcx, &hw_, &wmax, "Add"), (&pcy, &hh_, &hmax, "Add")]
    {
        let v = e.g.op(op, "post.decode", &[c, half], vec![]);
        xs.push(e.g.op("Clip", "post.clip", &[&v, &zero, max], vec![]));
    }
    let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
    let boxes = e.g.op("Concat", "post.boxes", &refs, vec![("axis", Attr::Int(1))]);
    Ok((boxes, top[0].clone(), labels))
}

/// Score threshold, per-class NMS and the final top detections sorted by score.
pub(crate) fn final_nms(
    e: &mut Emitter<'_>,
    boxes: &str,
    scores: &str,
    labels: &str,
    cfg: &DetectorConfig,
) -> Result<(String, String, String)> {
    let thresh = e.scalar_f32("score_thresh", cfg.score_thresh)?;
    let keep = e.g.op("Greater", "post.threshold", &[scores, &thresh], vec![]);
    let axis0 = vec![("axis", Attr::Int(0))];
    let boxes = e.g.op("Compress", "post.threshold", &[boxes, &keep], axis0.clone());
    let scores = e.g.op("Compress", "post.threshold", &[scores, &keep], axis0.clone());
    let labels = e.g.op("Compress", "post.threshold", &[labels, &keep], axis0.clone());
    // class-score matrix [1, K, M] with each candidate's score in its own class row only
    let depth = e.g.const_i64("num_classes", &[1], vec![cfg.num_classes() as i64])?;
    let onoff = e.g.const_f32("onehot_values", &[2], vec![0.0, 1.0])?;
    let onehot = e.g.op("OneHot", "post.nms", &[&labels, &depth, &onoff], vec![("axis", Attr::Int(-1))]);
    let ax1 = e.i64s("axes", &[1])?;
    let col = e.g.op("Unsqueeze", "post.nms", &[&scores, &ax1], vec![]);
    let per_class = e.g.op("Mul", "post.nms", &[&onehot, &col], vec![]);
    let t = e.g.op("Transpose", "post.nms", &[&per_class], vec![("perm", Attr::Ints(vec![1, 0]))]);
    let ax0 = e.i64s("axes", &[0])?;
    let nms_scores = e.g.op("Unsqueeze", "post.nms", &[&t, &ax0], vec![]);
    let nms_boxes = e.g.op("Unsqueeze", "post.nms", &[&boxes, &ax0], vec![]);
    let max_per_class = e.g.const_i64("nms_max", &[1], vec![i64::from(i32::MAX)])?;
    let iou = e.g.const_f32("nms_thresh", &[1], vec![cfg.nms_thresh])?;
    let min_score = e.g.const_f32("nms_min_score", &[1], vec![0.0])?;
    let selected =
        e.g.op("NonMaxSuppression", "post.nms", &[&nms_boxes, &nms_scores, &max_per_class, &iou, &min_score], vec![]);
    let col2 = e.g.const_i64("column", &[], vec![2])?;
    let idx = e.g.op("Gather", "post.nms", &[&selected, &col2], vec![("axis", Attr::Int(1))]);
    let boxes = e.g.op("Gather", "post.select", &[&boxes, &idx], axis0.clone());
    let scores = e.g.op("Gather", "post.select", &[&scores, &idx], axis0.clone());
    let labels = e.g.op("Gather", "post.select", &[&labels, &idx], axis0.clone());
    let count = e.g.op("Shape", "post.top", &[&scores], vec![]);
    let max_det = e.i64s("detections_per_img", &[cfg.detections_per_img as i64])?;
    let k = e.g.op("Min", "post.top", &[&count, &max_det], vec![]);
    let top = e.g.node("TopK", "post.top", &[&scores, &k], 2, vec![("axis", Attr::Int(0))]);
    let boxes = e.g.op("Gather", "post.top", &[&boxes, &top[1]], axis0.clone());
    let labels = e.g.op("Gather", "post.top", &[&labels, &top[1]], axis0);
    Ok((boxes, top[0].clone(), labels))
}

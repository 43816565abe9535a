//! The single naming scheme of parameters and the conv-by-conv plan of every network part.
//!
//! Training (tch), export (ONNX) and random initialisation all read this module, so a checkpoint's
//! tensor names and shapes are exactly what the exporter expects. Names mirror a PyTorch module tree:
//!
//! - backbone: `backbone.first_conv.{0: conv, 1: bn}`,
//!   `backbone.features.{layer}.{choice}.branch_main.{i}` and `.branch_proj.{i}` (sequence indices
//!   counting ReLUs, as in the authors' code), BN tensors `weight`, `bias`, `running_mean`,
//!   `running_var`;
//! - classifier head: `backbone.conv_last.{0,1}`, `classifier.0.weight`;
//! - FPN (torchvision): `fpn.inner_blocks.{i}.0`, `fpn.layer_blocks.{i}.0`, `fpn.extra_blocks.p6`,
//!   `fpn.extra_blocks.p7` (conv `weight` + `bias`);
//! - RetinaNet head (torchvision v1): `head.classification_head.conv.{2i}`, `...cls_logits`,
//!   `head.regression_head.conv.{2i}`, `...bbox_reg` (separable towers: `.conv.{2i}.dw`, `.conv.{2i}.pw`).

use crate::detector::config::{DetectorConfig, HeadConv};
use crate::detector::heads::DetectorKind;
use crate::space::arch::Arch;
use crate::space::{Choice, LayerSpec, SearchSpace};
use serde::Serialize;

/// How a tensor is initialised when no weights are given (DetNAS / torchvision conventions).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Init {
    /// Normal with mean 0.
    Normal {
        /// The standard deviation.
        std: f32,
    },
    /// Uniform in `[-bound, bound]`.
    Uniform {
        /// Largest magnitude.
        bound: f32,
    },
    /// Every value this constant.
    Const(f32),
}

/// Standard normal sample (Box-Muller) from the project's generator.
pub fn normal(rng: &mut crate::rng::Rng) -> f32 {
    let u1 = rng.unit().max(f64::MIN_POSITIVE);
    let u2 = rng.unit();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Draws every tensor of `params` from its initialiser, in order, from one seeded generator: the
/// trainer and the exporter produce identical random weights for the same seed.
pub fn random_init(params: &[ParamSpec], seed: u64) -> Vec<Vec<f32>> {
    let mut rng = crate::rng::Rng::seed(seed);
    params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            match p.init {
                Init::Const(v) => vec![v; n],
                Init::Normal { std } => (0..n).map(|_| normal(&mut rng) * std).collect(),
                Init::Uniform { bound } => (0..n).map(|_| (rng.unit() as f32 * 2.0 - 1.0) * bound).collect(),
            }
        })
        .collect()
}

/// Every tensor of the backbone (one path or all choices), stem first.
pub fn backbone_params(space: &SearchSpace, paths: Paths<'_>) -> Vec<ParamSpec> {
    let mut out = stem_plan(space).params();
    for b in backbone_blocks(space, paths) {
        for u in b.proj.iter().chain(&b.main) {
            out.extend(u.params());
        }
    }
    out
}

/// One parameter or buffer tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamSpec {
    /// Full parameter name (`<prefix>.weight`, ...).
    pub name: String,
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// How it is initialised.
    pub init: Init,
    /// BN running statistics are buffers, not trained parameters.
    pub buffer: bool,
}

/// A convolution, optionally followed by BatchNorm and ReLU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvUnit {
    /// Parameter prefix of the conv (`<prefix>.weight`, and `<prefix>.bias` when `bias`).
    pub conv: String,
    /// Parameter prefix of the BN after it, if any.
    pub bn: Option<String>,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Groups (input channels for a depthwise conv).
    pub groups: usize,
    /// Whether the conv has a bias.
    pub bias: bool,
    /// Whether a ReLU follows (after the BN, if any).
    pub relu: bool,
    /// Initialisation of the weight.
    pub weight_init: Init,
    /// Constant initial value of the bias.
    pub bias_init: f32,
}

impl ConvUnit {
    /// Padding (`kernel / 2`, "same" for odd kernels).
    pub fn padding(&self) -> usize {
        self.kernel / 2
    }

    /// Weight shape `[out, in / groups, k, k]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.out_channels, self.in_channels / self.groups, self.kernel, self.kernel]
    }

    /// The tensors of this unit.
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = vec![ParamSpec {
            name: format!("{}.weight", self.conv),
            shape: self.weight_shape(),
            init: self.weight_init,
            buffer: false,
        }];
        if self.bias {
            out.push(ParamSpec {
                name: format!("{}.bias", self.conv),
                shape: vec![self.out_channels],
                init: Init::Const(self.bias_init),
                buffer: false,
            });
        }
        if let Some(bn) = &self.bn {
            let c = vec![self.out_channels];
            let p = |n: &str, init, buffer| ParamSpec { name: format!("{bn}.{n}"), shape: c.clone(), init, buffer };
            out.push(p("weight", Init::Const(1.0), false));
            out.push(p("bias", Init::Const(1e-4), false));
            out.push(p("running_mean", Init::Const(0.0), true));
            out.push(p("running_var", Init::Const(1.0), true));
        }
        out
    }
}

/// Conv geometry: (in channels, out channels, kernel, stride, groups).
#[derive(Clone, Copy)]
struct Geom(usize, usize, usize, usize, usize);

/// Backbone conv without bias, with BN, DetNAS init `N(0, 1 / (in / groups))`.
fn bn_conv(prefix: &str, conv_index: usize, geom: Geom, relu: bool) -> ConvUnit {
    let Geom(cin, cout, k, s, groups) = geom;
    ConvUnit {
        conv: format!("{prefix}.{conv_index}"),
        bn: Some(format!("{prefix}.{}", conv_index + 1)),
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride: s,
        groups,
        bias: false,
        relu,
        weight_init: Init::Normal { std: 1.0 / (cin / groups) as f32 },
        bias_init: 0.0,
    }
}

/// A sequence builder that numbers modules as an `nn.Sequential` would (conv, bn[, relu]).
struct Seq {
    prefix: String,
    next: usize,
    units: Vec<ConvUnit>,
}

impl Seq {
    fn new(prefix: String) -> Self {
        Seq { prefix, next: 0, units: Vec::new() }
    }

    fn push(&mut self, cin: usize, cout: usize, k: usize, s: usize, groups: usize, relu: bool) {
        self.units.push(bn_conv(&self.prefix, self.next, Geom(cin, cout, k, s, groups), relu));
        self.next += if relu { 3 } else { 2 };
    }
}

/// The two branches of one block with one choice.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockPlan {
    /// The layer.
    pub layer: LayerSpec,
    /// The block's choice.
    pub choice: Choice,
    /// Projection branch on the full input (stride-2 blocks only; empty otherwise).
    pub proj: Vec<ConvUnit>,
    /// Main branch: on the full input for stride 2, on the shuffled half for stride 1.
    pub main: Vec<ConvUnit>,
}

/// Parameter prefix of `choice` at `layer`.
pub fn block_prefix(layer: usize, choice: Choice) -> String {
    format!("backbone.features.{layer}.{}", choice.index())
}

/// The plan of one block.
pub fn block_plan(layer: &LayerSpec, choice: Choice) -> BlockPlan {
    let prefix = block_prefix(layer.index, choice);
    let k = choice.kernel() as usize;
    let s = layer.stride as usize;
    let cout = layer.out_channels as usize;
    let mid = cout / 2;
    let (inp, main_out) = if s == 2 {
        let cin = layer.in_channels as usize;
        (cin, cout - cin)
    } else {
        let half = layer.in_channels as usize / 2;
        (half, cout - half)
    };
    let mut proj = Seq::new(format!("{prefix}.branch_proj"));
    if s == 2 {
        proj.push(inp, inp, k, 2, inp, false);
        proj.push(inp, inp, 1, 1, 1, true);
    }
    let mut main = Seq::new(format!("{prefix}.branch_main"));
    match choice {
        Choice::Xception3x3 => {
            main.push(inp, inp, 3, s, inp, false);
            main.push(inp, mid, 1, 1, 1, true);
            main.push(mid, mid, 3, 1, mid, false);
            main.push(mid, mid, 1, 1, 1, true);
            main.push(mid, mid, 3, 1, mid, false);
            main.push(mid, main_out, 1, 1, 1, true);
        }
        _ => {
            main.push(inp, mid, 1, 1, 1, true);
            main.push(mid, mid, k, s, mid, false);
            main.push(mid, main_out, 1, 1, 1, true);
        }
    }
    BlockPlan { layer: *layer, choice, proj: proj.units, main: main.units }
}

/// The stem conv (3x3 stride 2, BN, ReLU), init `N(0, 0.01)`.
pub fn stem_plan(space: &SearchSpace) -> ConvUnit {
    let mut u = bn_conv("backbone.first_conv", 0, Geom(3, space.stem_channels as usize, 3, 2, 1), true);
    u.weight_init = Init::Normal { std: 0.01 };
    u
}

/// Classification head: 1x1 conv + BN + ReLU, then (after global pooling) the FC as a 1x1 conv.
pub fn classifier_plan(space: &SearchSpace) -> Vec<ConvUnit> {
    let c5 = space.stages.last().map_or(space.stem_channels, |s| s.channels) as usize;
    let last = space.last_channels as usize;
    let conv_last = bn_conv("backbone.conv_last", 0, Geom(c5, last, 1, 1, 1), true);
    let fc = ConvUnit {
        conv: "classifier.0".into(),
        bn: None,
        in_channels: last,
        out_channels: space.num_classes as usize,
        kernel: 1,
        stride: 1,
        groups: 1,
        bias: false,
        relu: false,
        weight_init: Init::Normal { std: 0.01 },
        bias_init: 0.0,
    };
    vec![conv_last, fc]
}

/// Which choices to include: one path, or every allowed choice (a supernet).
#[derive(Clone, Copy, Debug)]
pub enum Paths<'a> {
    /// One path.
    Single(&'a Arch),
    /// Every allowed choice of every layer (a supernet).
    All,
}

/// Every backbone block of the selected paths, in layer order (all choices of a layer together).
pub fn backbone_blocks(space: &SearchSpace, paths: Paths<'_>) -> Vec<BlockPlan> {
    space
        .layers()
        .iter()
        .flat_map(|l| {
            let choices: Vec<Choice> = match paths {
                Paths::Single(a) => vec![a.choices()[l.index]],
                Paths::All => space.allowed.clone(),
            };
            choices.into_iter().map(move |c| block_plan(l, c))
        })
        .collect()
}

/// Plain conv with bias (FPN / head), no BN.
fn biased_conv(conv: String, geom: Geom, relu: bool, init: Init) -> ConvUnit {
    let Geom(cin, cout, k, s, groups) = geom;
    ConvUnit {
        conv,
        bn: None,
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride: s,
        groups,
        bias: true,
        relu,
        weight_init: init,
        bias_init: 0.0,
    }
}

/// torchvision's `kaiming_uniform_(a=1)` bound for a conv: `sqrt(3 / fan_in)`.
fn kaiming_a1(fan_in: usize) -> Init {
    Init::Uniform { bound: (3.0 / fan_in as f32).sqrt() }
}

/// How the levels above the backbone's last stage are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ExtraLevels {
    /// RetinaNet: P6 = conv3x3 s2 (P5), P7 = conv3x3 s2 (relu(P6)).
    ConvP6P7,
    /// Faster R-CNN: P6 = max-pool (kernel 1, stride 2) of P5, no parameters
    /// (torchvision's `LastLevelMaxPool`).
    MaxPoolP6,
}

/// The feature pyramid of a detector family: which backbone stages feed it and how it extends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pyramid {
    /// Backbone stages feeding the FPN (the last ones): 3 (C3..C5) or 4 (C2..C5).
    pub stages: usize,
    /// The level of the first one (3 for C3 -> P3, 2 for C2 -> P2).
    pub first_level: usize,
    /// The levels above the last stage.
    pub extra: ExtraLevels,
}

impl Pyramid {
    /// RetinaNet: P3..P7 from C3..C5; Faster R-CNN: P2..P6 from C2..C5.
    pub fn of(kind: DetectorKind) -> Self {
        match kind {
            DetectorKind::Retinanet => Pyramid { stages: 3, first_level: 3, extra: ExtraLevels::ConvP6P7 },
            DetectorKind::FasterRcnn => Pyramid { stages: 4, first_level: 2, extra: ExtraLevels::MaxPoolP6 },
        }
    }

    /// Levels above the last stage.
    pub fn extra_count(&self) -> usize {
        match self.extra {
            ExtraLevels::ConvP6P7 => 2,
            ExtraLevels::MaxPoolP6 => 1,
        }
    }

    /// Every level's number, lowest first (`[3, 4, 5, 6, 7]`).
    pub fn levels(&self) -> Vec<usize> {
        (self.first_level..self.first_level + self.stages + self.extra_count()).collect()
    }
}

/// The FPN's convolutions (torchvision `FeaturePyramidNetwork` names).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FpnPlan {
    /// Lateral 1x1 convs, one per input stage (lowest first).
    pub inner: Vec<ConvUnit>,
    /// Output 3x3 convs, one per input stage.
    pub layer: Vec<ConvUnit>,
    /// RetinaNet's P6 and P7 convs ([`ExtraLevels::ConvP6P7`]); empty for the max-pool P6.
    pub extra: Vec<ConvUnit>,
}

/// The FPN of `cfg`'s family for a backbone whose input stages have `in_channels`.
pub fn fpn_plan(in_channels: &[usize], cfg: &DetectorConfig) -> FpnPlan {
    let c = cfg.fpn_channels as usize;
    let inner = in_channels
        .iter()
        .enumerate()
        .map(|(i, &cin)| biased_conv(format!("fpn.inner_blocks.{i}.0"), Geom(cin, c, 1, 1, 1), false, kaiming_a1(cin)))
        .collect();
    let layer = (0..in_channels.len())
        .map(|i| biased_conv(format!("fpn.layer_blocks.{i}.0"), Geom(c, c, 3, 1, 1), false, kaiming_a1(c * 9)))
        .collect();
    let extra = match Pyramid::of(cfg.kind()).extra {
        ExtraLevels::ConvP6P7 => ["p6", "p7"]
            .map(|n| biased_conv(format!("fpn.extra_blocks.{n}"), Geom(c, c, 3, 2, 1), false, kaiming_a1(c * 9)))
            .to_vec(),
        ExtraLevels::MaxPoolP6 => Vec::new(),
    };
    FpnPlan { inner, layer, extra }
}

/// One RetinaNet head branch: the tower (each entry one or two convs: dense, or dw + pw) and the
/// final predictor conv.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadBranchPlan {
    /// The tower's layers, each one dense conv or a depthwise + pointwise pair.
    pub tower: Vec<Vec<ConvUnit>>,
    /// The final conv giving the branch's outputs.
    pub predictor: ConvUnit,
}

/// Classification and regression branches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadPlan {
    /// The classification branch (class logits).
    pub classification: HeadBranchPlan,
    /// The box regression branch (box deltas).
    pub regression: HeadBranchPlan,
}

fn head_branch(prefix: &str, predictor: &str, out: usize, prior_bias: f32, cfg: &DetectorConfig) -> HeadBranchPlan {
    let normal = Init::Normal { std: 0.01 };
    let tower = tower_plan(prefix, cfg.fpn_channels as usize, cfg, normal);
    let cin = if tower.is_empty() { cfg.fpn_channels as usize } else { cfg.head_channels as usize };
    let mut predictor = biased_conv(format!("{prefix}.{predictor}"), Geom(cin, out, 3, 1, 1), false, normal);
    predictor.bias_init = prior_bias;
    HeadBranchPlan { tower, predictor }
}

/// The head tower of `cfg` (its genes): `head_convs` 3x3 convs with ReLU, `{prefix}.conv.{2i}`,
/// dense or separable (`.dw` + `.pw`), from `cin` to `head_channels`.
fn tower_plan(prefix: &str, cin: usize, cfg: &DetectorConfig, normal: Init) -> Vec<Vec<ConvUnit>> {
    let mut cin = cin;
    let ch = cfg.head_channels as usize;
    (0..cfg.head_convs)
        .map(|i| {
            let base = format!("{prefix}.conv.{}", 2 * i);
            let units = match cfg.head_conv {
                HeadConv::Dense => vec![biased_conv(base, Geom(cin, ch, 3, 1, 1), true, normal)],
                // Same per-layer gain as the dense conv's N(0, 0.01) over 9 * cin inputs: the depthwise
                // conv preserves the variance, the pointwise one carries the 0.01 * sqrt(9) scale.
                // (N(0, 0.01) for both would shrink the signal ~300x per layer and stall training.)
                HeadConv::Separable => vec![
                    biased_conv(
                        format!("{base}.dw"),
                        Geom(cin, cin, 3, 1, cin),
                        false,
                        Init::Normal { std: 1.0 / 3.0 },
                    ),
                    biased_conv(format!("{base}.pw"), Geom(cin, ch, 1, 1, 1), true, Init::Normal { std: 0.03 }),
                ],
            };
            cin = ch;
            units
        })
        .collect()
}

/// The RetinaNet head; the classification bias starts at `-log((1 - 0.01) / 0.01)`.
pub fn head_plan(cfg: &DetectorConfig) -> HeadPlan {
    let a = cfg.anchors_per_cell();
    let prior = -((1.0f32 - 0.01) / 0.01).ln();
    HeadPlan {
        classification: head_branch("head.classification_head", "cls_logits", a * cfg.num_classes(), prior, cfg),
        regression: head_branch("head.regression_head", "bbox_reg", a * 4, 0.0, cfg),
    }
}

/// Indices of the backbone stages feeding the FPN of `kind` (the last [`Pyramid::stages`]).
pub fn fpn_stage_indices(space: &SearchSpace, kind: DetectorKind) -> Vec<usize> {
    let n = space.stages.len();
    (n.saturating_sub(Pyramid::of(kind).stages)..n).collect()
}

/// The channels of the stages feeding the FPN of `kind`.
pub fn fpn_in_channels(space: &SearchSpace, kind: DetectorKind) -> Vec<usize> {
    fpn_stage_indices(space, kind).iter().map(|&i| space.stages[i].channels as usize).collect()
}

/// A fully connected layer `weight [out, in]`, `bias [out]` (torchvision `nn.Linear` names).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinearUnit {
    /// Parameter prefix (`<prefix>.weight`, `<prefix>.bias`).
    pub name: String,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Followed by a ReLU.
    pub relu: bool,
    /// Weight initialiser.
    pub weight_init: Init,
    /// Bias initialiser.
    pub bias_init: Init,
}

impl LinearUnit {
    /// The tensors of this layer.
    pub fn params(&self) -> Vec<ParamSpec> {
        let p = |suffix: &str, shape: Vec<usize>, init: Init| ParamSpec {
            name: format!("{}.{suffix}", self.name),
            shape,
            init,
            buffer: false,
        };
        vec![
            p("weight", vec![self.out_features, self.in_features], self.weight_init),
            p("bias", vec![self.out_features], self.bias_init),
        ]
    }
}

/// torchvision's `nn.Linear` default initialisation: weight and bias `U(-1/sqrt(in), 1/sqrt(in))`.
fn linear(name: String, in_features: usize, out_features: usize, relu: bool) -> LinearUnit {
    let bound = Init::Uniform { bound: 1.0 / (in_features as f32).sqrt() };
    LinearUnit { name, in_features, out_features, relu, weight_init: bound, bias_init: bound }
}

/// The region proposal network's head (torchvision `RPNHead`, one conv): a shared 3x3 conv with
/// ReLU, then 1x1 objectness logits (one per anchor) and 1x1 box deltas (four per anchor).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RpnPlan {
    /// `rpn.head.conv.0.0`.
    pub conv: ConvUnit,
    /// `rpn.head.cls_logits`.
    pub cls_logits: ConvUnit,
    /// `rpn.head.bbox_pred`.
    pub bbox_pred: ConvUnit,
}

/// The RPN head of a Faster R-CNN configuration (weights N(0, 0.01), biases 0).
pub fn rpn_plan(cfg: &DetectorConfig) -> RpnPlan {
    let c = cfg.fpn_channels as usize;
    let a = cfg.anchors_per_cell();
    let normal = Init::Normal { std: 0.01 };
    RpnPlan {
        conv: biased_conv("rpn.head.conv.0.0".into(), Geom(c, c, 3, 1, 1), true, normal),
        cls_logits: biased_conv("rpn.head.cls_logits".into(), Geom(c, a, 1, 1, 1), false, normal),
        bbox_pred: biased_conv("rpn.head.bbox_pred".into(), Geom(c, 4 * a, 1, 1, 1), false, normal),
    }
}

/// The RoI box head and predictor. `head_convs` 3x3 convs of `head_channels` (with ReLU) run on
/// each pooled `pool x pool` RoI first, then fully connected layers of `representation_size`:
/// `fc6` and `fc7` without convs (torchvision's `TwoMLPHead`), `fc6` alone after convs
/// (the "4conv1fc" head of the DetNAS paper with `head_convs` 4). The predictor scores the classes
/// plus background (softmax) and regresses one box per class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoxHeadPlan {
    /// `roi_heads.box_head.conv.{2i}` (dense; or `.dw` + `.pw` when separable).
    pub convs: Vec<Vec<ConvUnit>>,
    /// `roi_heads.box_head.fc6` (and `fc7`).
    pub fcs: Vec<LinearUnit>,
    /// `roi_heads.box_predictor.cls_score`: classes + 1 logits.
    pub cls_score: LinearUnit,
    /// `roi_heads.box_predictor.bbox_pred`: 4 deltas per class (background included).
    pub bbox_pred: LinearUnit,
}

/// The box head of a Faster R-CNN configuration.
pub fn box_head_plan(cfg: &DetectorConfig) -> BoxHeadPlan {
    let roi = &cfg.faster_rcnn().expect("box_head_plan needs a faster-rcnn configuration").roi_heads;
    let (pool, rep) = (roi.pool_size, roi.representation_size);
    let tower = tower_plan("roi_heads.box_head", cfg.fpn_channels as usize, cfg, Init::Normal { std: 0.01 });
    let cin = if tower.is_empty() { cfg.fpn_channels as usize } else { cfg.head_channels as usize };
    let mut fcs = vec![linear("roi_heads.box_head.fc6".into(), cin * pool * pool, rep, true)];
    if tower.is_empty() {
        fcs.push(linear("roi_heads.box_head.fc7".into(), rep, rep, true));
    }
    let k = cfg.predicted_classes();
    BoxHeadPlan {
        convs: tower,
        fcs,
        cls_score: linear("roi_heads.box_predictor.cls_score".into(), rep, k, false),
        bbox_pred: linear("roi_heads.box_predictor.bbox_pred".into(), rep, 4 * k, false),
    }
}

/// Every tensor of a detector on `space` (one path or the supernet), in a stable order: backbone,
/// FPN, then the family's heads.
pub fn detector_params(space: &SearchSpace, paths: Paths<'_>, cfg: &DetectorConfig) -> Vec<ParamSpec> {
    let mut out = backbone_params(space, paths);
    let fpn = fpn_plan(&fpn_in_channels(space, cfg.kind()), cfg);
    for u in fpn.inner.iter().chain(&fpn.layer).chain(&fpn.extra) {
        out.extend(u.params());
    }
    match cfg.kind() {
        DetectorKind::Retinanet => {
            let head = head_plan(cfg);
            for branch in [&head.classification, &head.regression] {
                for u in branch.tower.iter().flatten().chain([&branch.predictor]) {
                    out.extend(u.params());
                }
            }
        }
        DetectorKind::FasterRcnn => {
            let rpn = rpn_plan(cfg);
            for u in [&rpn.conv, &rpn.cls_logits, &rpn.bbox_pred] {
                out.extend(u.params());
            }
            let head = box_head_plan(cfg);
            for u in head.convs.iter().flatten() {
                out.extend(u.params());
            }
            for l in head.fcs.iter().chain([&head.cls_score, &head.bbox_pred]) {
                out.extend(l.params());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::arch::Preset;

    #[test]
    fn names_are_unique_and_supernet_contains_every_path() {
        let space = SearchSpace::detnas_300m();
        let cfg = DetectorConfig::default();
        let all = detector_params(&space, Paths::All, &cfg);
        let mut names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate parameter names");
        let arch = Preset::by_name("coco-retinanet-300m").unwrap().resolve().1;
        for p in detector_params(&space, Paths::Single(&arch), &cfg) {
            assert!(names.binary_search(&p.name.as_str()).is_ok(), "{} missing from the supernet", p.name);
        }
    }

    #[test]
    fn block_plans_agree_with_the_cost_model() {
        let space = SearchSpace::detnas_300m();
        for choice in Choice::ALL {
            let arch = Arch::uniform(&space, choice);
            let report = crate::space::cost::cost(&space, &arch, crate::space::cost::InputSize::IMAGENET).unwrap();
            let params: u64 = space
                .layers()
                .iter()
                .map(|l| {
                    let b = block_plan(l, choice);
                    b.proj
                        .iter()
                        .chain(&b.main)
                        .flat_map(|u| u.params())
                        .filter(|p| !p.buffer)
                        .map(|p| p.shape.iter().product::<usize>() as u64)
                        .sum::<u64>()
                })
                .sum();
            let expected: u64 = report.layers.iter().map(|l| l.params).sum();
            assert_eq!(params, expected, "{choice}");
        }
    }

    #[test]
    fn names_follow_the_documented_scheme() {
        let space = SearchSpace::detnas_300m();
        let b = block_plan(&space.layers()[0], Choice::Xception3x3);
        assert_eq!(b.proj[0].conv, "backbone.features.0.3.branch_proj.0");
        assert_eq!(b.proj[1].bn.as_deref(), Some("backbone.features.0.3.branch_proj.3"));
        assert_eq!(b.main[1].conv, "backbone.features.0.3.branch_main.2");
        assert_eq!(b.main[2].conv, "backbone.features.0.3.branch_main.5");
        let s = block_plan(&space.layers()[1], Choice::Shufflenet5x5);
        assert!(s.proj.is_empty());
        assert_eq!(s.main[1].conv, "backbone.features.1.1.branch_main.3");
        assert_eq!(s.main[1].weight_shape(), vec![32, 1, 5, 5]);
        let head = head_plan(&DetectorConfig::default());
        assert_eq!(head.classification.tower[3][0].conv, "head.classification_head.conv.6");
        assert_eq!(head.classification.predictor.out_channels, 9);
    }
}

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

use crate::arch::Arch;
use crate::detector::config::{DetectorConfig, HeadConv};
use crate::space::{Choice, LayerSpec, SearchSpace};
use serde::Serialize;

/// How a tensor is initialised when no weights are given (DetNAS / torchvision conventions).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Init {
    Normal { std: f32 },
    Uniform { bound: f32 },
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
    pub name: String,
    pub shape: Vec<usize>,
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
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub bias: bool,
    pub relu: bool,
    pub weight_init: Init,
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
    pub layer: LayerSpec,
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
    Single(&'a Arch),
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

/// FPN over C3..C5 plus P6/P7 from P5.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FpnPlan {
    /// Lateral 1x1 convs for C3, C4, C5.
    pub inner: Vec<ConvUnit>,
    /// Output 3x3 convs for P3, P4, P5.
    pub layer: Vec<ConvUnit>,
    /// P6 = conv3x3 s2 (P5); P7 = conv3x3 s2 (relu(P6)).
    pub p6: ConvUnit,
    pub p7: ConvUnit,
}

/// The FPN for a backbone whose C3..C5 have `in_channels`.
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
    let p6 = biased_conv("fpn.extra_blocks.p6".into(), Geom(c, c, 3, 2, 1), false, kaiming_a1(c * 9));
    let p7 = biased_conv("fpn.extra_blocks.p7".into(), Geom(c, c, 3, 2, 1), false, kaiming_a1(c * 9));
    FpnPlan { inner, layer, p6, p7 }
}

/// One RetinaNet head branch: the tower (each entry one or two convs: dense, or dw + pw) and the
/// final predictor conv.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadBranchPlan {
    pub tower: Vec<Vec<ConvUnit>>,
    pub predictor: ConvUnit,
}

/// Classification and regression branches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadPlan {
    pub classification: HeadBranchPlan,
    pub regression: HeadBranchPlan,
}

fn head_branch(prefix: &str, predictor: &str, out: usize, prior_bias: f32, cfg: &DetectorConfig) -> HeadBranchPlan {
    let normal = Init::Normal { std: 0.01 };
    let mut cin = cfg.fpn_channels as usize;
    let ch = cfg.head_channels as usize;
    let tower = (0..cfg.head_convs)
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
        .collect();
    let mut predictor = biased_conv(format!("{prefix}.{predictor}"), Geom(cin, out, 3, 1, 1), false, normal);
    predictor.bias_init = prior_bias;
    HeadBranchPlan { tower, predictor }
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

/// Indices of the stages feeding the FPN (C3, C4, C5: the last three stages).
pub fn fpn_stage_indices(space: &SearchSpace) -> Vec<usize> {
    let n = space.stages.len();
    (n.saturating_sub(3)..n).collect()
}

/// Every tensor of a RetinaNet detector on `space` (one path or the supernet), in a stable order.
pub fn detector_params(space: &SearchSpace, paths: Paths<'_>, cfg: &DetectorConfig) -> Vec<ParamSpec> {
    let mut out = backbone_params(space, paths);
    let in_channels: Vec<usize> = fpn_stage_indices(space).iter().map(|&i| space.stages[i].channels as usize).collect();
    let fpn = fpn_plan(&in_channels, cfg);
    for u in fpn.inner.iter().chain(&fpn.layer).chain([&fpn.p6, &fpn.p7]) {
        out.extend(u.params());
    }
    let head = head_plan(cfg);
    for branch in [&head.classification, &head.regression] {
        for u in branch.tower.iter().flatten().chain([&branch.predictor]) {
            out.extend(u.params());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Preset;

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
            let report = crate::cost::cost(&space, &arch, crate::cost::InputSize::IMAGENET).unwrap();
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

//! The networks: the one-shot supernet backbone (every choice of every layer, own weights and BN),
//! its classification head, and RetinaNet (FPN P3-P7 + heads) on top. A forward pass takes the path.
//!
//! A genes supernet ([`RetinaNet::with_genes`]) also makes the FPN and head elastic (Once-for-All):
//! it holds the largest FPN and head towers of its [`GeneSpace`] (the largest value of each gene),
//! one set of towers per head conv type (dense and separable towers are distinct parameters in
//! [`detnas_core::detector::plan`]); a forward with [`DetectorGenes`] uses the first `k` channels of every
//! elastic weight (output and input channels, biases alike) and the first `d` convs of each tower.

use crate::error::{Result, TrainError};
use crate::modules::{Bn, Builder, ConvBn, chain, tensor};
use crate::optim::PathParam;
use detnas_core::detector::plan::{
    ParamSpec, Paths, backbone_blocks, backbone_params, classifier_plan, detector_params, fpn_plan, fpn_stage_indices,
    head_plan, random_init, stem_plan,
};
use detnas_core::detector::{DetectorConfig, DetectorKind, HeadConv};
use detnas_core::search::genome::{DetectorGenes, GeneSpace};
use detnas_core::space::arch::Arch;
use detnas_core::space::{ChannelShuffle, Choice, SearchSpace};
use std::collections::HashMap;
use tch::{Kind, Tensor, nn};

struct Block {
    proj: Vec<ConvBn>,
    main: Vec<ConvBn>,
    stride: u64,
    in_channels: i64,
}

/// A supernet (all choices) or single-path backbone.
pub struct Backbone {
    /// The search space.
    pub space: SearchSpace,
    /// Channel split of stride-1 blocks.
    pub shuffle: ChannelShuffle,
    stem: ConvBn,
    /// `layers[l][choice]`, `None` for choices not built.
    layers: Vec<Vec<Option<Block>>>,
    shuffle_index: HashMap<i64, (Tensor, Tensor)>,
    /// Choices whose blocks' main branch outputs zeros (a diagnostic of the ranking signal:
    /// `[supernet] crippled`); empty for every real network.
    pub crippled: Vec<Choice>,
}

pub(crate) fn builder<'a, 'p>(root: &'a nn::Path<'p>, params: Vec<ParamSpec>, seed: u64) -> Builder<'a, 'p> {
    let values = random_init(&params, seed);
    Builder { root, specs: params.into_iter().zip(values).map(|(p, v)| (p.name.clone(), (p, v))).collect() }
}

impl Backbone {
    pub(crate) fn build(
        b: &Builder<'_, '_>,
        space: &SearchSpace,
        paths: Paths<'_>,
        shuffle: ChannelShuffle,
        eps: f64,
    ) -> Self {
        let mut layers: Vec<Vec<Option<Block>>> =
            (0..space.num_layers()).map(|_| (0..4).map(|_| None).collect()).collect();
        for plan in backbone_blocks(space, paths) {
            let block = Block {
                proj: plan.proj.iter().map(|u| ConvBn::new(b, u, eps)).collect(),
                main: plan.main.iter().map(|u| ConvBn::new(b, u, eps)).collect(),
                stride: plan.layer.stride,
                in_channels: plan.layer.in_channels as i64,
            };
            layers[plan.layer.index][plan.choice.index() as usize] = Some(block);
        }
        let device = b.root.device();
        let mut shuffle_index = HashMap::new();
        for l in space.layers().iter().filter(|l| l.stride == 1) {
            let c = l.in_channels as usize;
            shuffle_index.entry(c as i64).or_insert_with(|| {
                let idx: Vec<i64> = shuffle.split_indices(c).iter().map(|&i| i as i64).collect();
                let half = c / 2;
                (Tensor::from_slice(&idx[..half]).to_device(device), Tensor::from_slice(&idx[half..]).to_device(device))
            });
        }
        let stem = ConvBn::new(b, &stem_plan(space), eps);
        Backbone { space: space.clone(), shuffle, stem, layers, shuffle_index, crippled: Vec::new() }
    }

    fn block(&self, layer: usize, arch: &Arch) -> Result<&Block> {
        let c = arch.choices()[layer];
        self.layers[layer][c.index() as usize].as_ref().ok_or_else(|| TrainError::PathNotBuilt {
            layer,
            choice: c.index(),
            arch: arch.to_string(),
        })
    }

    /// Outputs of every stage for `arch` (already normalised input).
    pub fn forward(&self, x: &Tensor, arch: &Arch, train: bool) -> Result<Vec<Tensor>> {
        arch.validate(&self.space)?;
        let mut x = self.stem.forward(x, train);
        let mut outs = Vec::new();
        for l in self.space.layers() {
            let b = self.block(l.index, arch)?;
            let crippled = self.crippled.contains(&arch.choices()[l.index]);
            // A crippled block's main branch outputs zeros (same shape): the block keeps only its
            // passthrough half (stride 1) or its projection branch (stride 2).
            let main = |x: &Tensor| {
                let y = chain(&b.main, x, train);
                if crippled { y.zeros_like() } else { y }
            };
            x = if b.stride == 2 {
                Tensor::cat(&[chain(&b.proj, &x, train), main(&x)], 1)
            } else {
                let (keep, process) = match self.shuffle {
                    ChannelShuffle::EvenOdd => (x.slice(1, 0, b.in_channels, 2), x.slice(1, 1, b.in_channels, 2)),
                    ChannelShuffle::HalfInterleave => {
                        let (a, c) = &self.shuffle_index[&b.in_channels];
                        (x.index_select(1, a), x.index_select(1, c))
                    }
                };
                Tensor::cat(&[keep, main(&process)], 1)
            };
            if l.block + 1 == self.space.stages[l.stage].blocks {
                outs.push(x.shallow_clone());
            }
        }
        Ok(outs)
    }

    /// Named trainable tensors on `arch`'s path (the stem and the chosen blocks).
    pub fn path_parameters(&self, arch: &Arch) -> Result<Vec<PathParam>> {
        let mut v = self.stem.parameters();
        for l in 0..self.space.num_layers() {
            let b = self.block(l, arch)?;
            for u in b.proj.iter().chain(&b.main) {
                v.extend(u.parameters());
            }
        }
        Ok(v)
    }

    /// BatchNorms on `arch`'s path.
    pub fn path_bns(&self, arch: &Arch) -> Result<Vec<&Bn>> {
        let mut v: Vec<&Bn> = self.stem.bn.iter().collect();
        for l in 0..self.space.num_layers() {
            let b = self.block(l, arch)?;
            v.extend(b.proj.iter().chain(&b.main).filter_map(|u| u.bn.as_ref()));
        }
        Ok(v)
    }
}

/// ImageNet-style classifier: backbone, 1x1 conv, global pooling, dropout, FC.
pub struct Classifier {
    /// The backbone.
    pub backbone: Backbone,
    conv_last: ConvBn,
    fc: Tensor,
    /// Dropout probability before the FC in train mode.
    pub dropout: f64,
}

impl Classifier {
    /// Builds the supernet (`Paths::All`) or one path, with `classes` outputs, DetNAS initialisation.
    pub fn new(vs: &nn::VarStore, space: &SearchSpace, paths: Paths<'_>, classes: usize, seed: u64) -> Self {
        let mut space = space.clone();
        space.num_classes = classes as u64;
        let mut params = backbone_params(&space, paths);
        let head = classifier_plan(&space);
        params.extend(head.iter().flat_map(|u| u.params()));
        let root = vs.root();
        let b = builder(&root, params, seed);
        let backbone = Backbone::build(&b, &space, paths, ChannelShuffle::default(), 1e-5);
        let conv_last = ConvBn::new(&b, &head[0], 1e-5);
        let (spec, values) = &b.specs["classifier.0.weight"];
        let fc = crate::modules::var(&root, "classifier.0.weight", &spec.shape, values, true);
        Classifier { backbone, conv_last, fc, dropout: 0.1 }
    }

    /// Logits `[B, classes]`; `x` is normalised input.
    pub fn forward(&self, x: &Tensor, arch: &Arch, train: bool) -> Result<Tensor> {
        let c5 = self.backbone.forward(x, arch, train)?.pop().expect("stages");
        let y = self.conv_last.forward(&c5, train).adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        let y = y.dropout(self.dropout, train);
        Ok(y.matmul(&self.fc.flatten(1, -1).transpose(0, 1)))
    }

    /// Named trainable tensors on the path plus the head.
    pub fn path_parameters(&self, arch: &Arch) -> Result<Vec<PathParam>> {
        let mut v = self.backbone.path_parameters(arch)?;
        v.extend(self.conv_last.parameters());
        v.push(PathParam::whole("classifier.0.weight".into(), self.fc.shallow_clone()));
        Ok(v)
    }
}

/// The head towers of one conv type: per branch, one entry per tower layer (a dense conv, or
/// depthwise + pointwise).
struct Towers {
    conv: HeadConv,
    cls: Vec<Vec<ConvBn>>,
    reg: Vec<Vec<ConvBn>>,
}

/// The configuration whose FPN and head are the largest of `genes` (largest value of each gene)
/// with head conv type `conv`.
pub fn largest_config(base: &DetectorConfig, genes: &GeneSpace, conv: HeadConv) -> DetectorConfig {
    DetectorConfig {
        fpn_channels: genes.fpn_channels.iter().copied().max().unwrap_or(base.fpn_channels),
        head_channels: genes.head_channels.iter().copied().max().unwrap_or(base.head_channels),
        head_convs: genes.head_convs.iter().copied().max().unwrap_or(base.head_convs),
        head_conv: conv,
        ..base.clone()
    }
}

/// The distinct head conv types of `genes`, in order of first appearance.
fn conv_types(genes: &GeneSpace) -> Vec<HeadConv> {
    let mut v = Vec::new();
    for c in &genes.head_conv {
        if !v.contains(c) {
            v.push(*c);
        }
    }
    v
}

/// Every tensor of a genes supernet: the detector of [`largest_config`] for each head conv type of
/// `genes`, each name once, in a stable order (the backbone, FPN and predictors are shared).
pub fn genes_supernet_params(
    space: &SearchSpace,
    paths: Paths<'_>,
    base: &DetectorConfig,
    genes: &GeneSpace,
) -> Vec<ParamSpec> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for conv in conv_types(genes) {
        for p in detector_params(space, paths, &largest_config(base, genes, conv)) {
            if seen.insert(p.name.clone()) {
                out.push(p);
            }
        }
    }
    out
}

/// RetinaNet with FPN on a (super)net backbone. Input: float `[B, 3, H, W]`, RGB 0-255 (the
/// exported model's contract); normalisation happens inside.
pub struct RetinaNet {
    /// The backbone (supernet or single path).
    pub backbone: Backbone,
    /// The detector configuration (for a genes supernet: the base its genes apply to).
    pub cfg: DetectorConfig,
    /// The gene space of a genes supernet; `None`: the FPN and head of `cfg` only.
    pub genes: Option<GeneSpace>,
    inner: Vec<ConvBn>,
    layer: Vec<ConvBn>,
    p6: ConvBn,
    p7: ConvBn,
    towers: Vec<Towers>,
    cls_pred: ConvBn,
    reg_pred: ConvBn,
    mean: Tensor,
    inv_std: Tensor,
}

impl RetinaNet {
    /// Builds the detector with DetNAS / torchvision initialisation from `seed` (the same values the
    /// exporter's random initialisation gives).
    pub fn new(
        vs: &nn::VarStore,
        space: &SearchSpace,
        paths: Paths<'_>,
        cfg: &DetectorConfig,
        seed: u64,
    ) -> Result<Self> {
        Self::build(vs, space, paths, cfg, None, seed)
    }

    /// Builds a genes supernet: the largest FPN and head of `genes` (validated against `cfg`; every
    /// `head_convs` value at least 1) for each head conv type, initialised from `seed` like
    /// [`genes_supernet_params`] lists them.
    pub fn with_genes(
        vs: &nn::VarStore,
        space: &SearchSpace,
        paths: Paths<'_>,
        cfg: &DetectorConfig,
        genes: &GeneSpace,
        seed: u64,
    ) -> Result<Self> {
        genes.validate(cfg)?;
        if genes.head_convs.contains(&0) {
            return Err(TrainError::Config(
                "`genes.head_convs` must not contain 0 (an elastic head needs at least one tower conv)".into(),
            ));
        }
        Self::build(vs, space, paths, cfg, Some(genes), seed)
    }

    fn build(
        vs: &nn::VarStore,
        space: &SearchSpace,
        paths: Paths<'_>,
        cfg: &DetectorConfig,
        genes: Option<&GeneSpace>,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        cfg.expect_retinanet()?;
        let root = vs.root();
        let (params, configs) = match genes {
            None => (detector_params(space, paths, cfg), vec![cfg.clone()]),
            Some(g) => (
                genes_supernet_params(space, paths, cfg, g),
                conv_types(g).into_iter().map(|c| largest_config(cfg, g, c)).collect(),
            ),
        };
        let b = builder(&root, params, seed);
        let eps = cfg.bn_eps as f64;
        let backbone = Backbone::build(&b, space, paths, cfg.shuffle, eps);
        let in_ch: Vec<usize> = fpn_stage_indices(space, DetectorKind::Retinanet)
            .iter()
            .map(|&i| space.stages[i].channels as usize)
            .collect();
        let fpn = fpn_plan(&in_ch, &configs[0]);
        let units =
            |v: &[detnas_core::detector::plan::ConvUnit]| v.iter().map(|u| ConvBn::new(&b, u, eps)).collect::<Vec<_>>();
        let tower = |t: &[Vec<detnas_core::detector::plan::ConvUnit>]| t.iter().map(|l| units(l)).collect::<Vec<_>>();
        let towers = configs
            .iter()
            .map(|c| {
                let h = head_plan(c);
                Towers { conv: c.head_conv, cls: tower(&h.classification.tower), reg: tower(&h.regression.tower) }
            })
            .collect();
        let head = head_plan(&configs[0]);
        let device = vs.device();
        let p = &cfg.preprocess;
        Ok(RetinaNet {
            backbone,
            inner: units(&fpn.inner),
            layer: units(&fpn.layer),
            p6: ConvBn::new(&b, &fpn.extra[0], eps),
            p7: ConvBn::new(&b, &fpn.extra[1], eps),
            towers,
            cls_pred: ConvBn::new(&b, &head.classification.predictor, eps),
            reg_pred: ConvBn::new(&b, &head.regression.predictor, eps),
            mean: tensor(&p.mean.map(|m| m * 255.0), &[1, 3, 1, 1], device),
            inv_std: tensor(&p.std.map(|s| 1.0 / (255.0 * s)), &[1, 3, 1, 1], device),
            cfg: cfg.clone(),
            genes: genes.cloned(),
        })
    }

    /// The genes of [`RetinaNet::cfg`]: what [`RetinaNet::forward`] runs.
    pub fn default_genes(&self) -> DetectorGenes {
        DetectorGenes::of(&self.cfg)
    }

    /// Whether this network holds the sub-network `genes`; the error names what it lacks (a conv
    /// type not built, more convs or channels than the largest built).
    pub fn holds(&self, genes: &DetectorGenes) -> Result<()> {
        self.towers_for(genes).map(|_| ())
    }

    /// The towers `genes` runs; errors as [`RetinaNet::holds`].
    fn towers_for(&self, genes: &DetectorGenes) -> Result<&Towers> {
        let bad = |reason: String| TrainError::GenesNotBuilt { genes: genes.to_string(), reason };
        let t = self
            .towers
            .iter()
            .find(|t| t.conv == genes.head_conv)
            .ok_or_else(|| bad(format!("no {:?} head towers in this network", genes.head_conv)))?;
        let fpn_max = self.inner[0].out_channels() as u64;
        if genes.fpn_channels > fpn_max {
            return Err(bad(format!("FPN width {} > the largest built ({fpn_max})", genes.fpn_channels)));
        }
        if genes.head_convs > t.cls.len() {
            return Err(bad(format!("{} head convs > the deepest built ({})", genes.head_convs, t.cls.len())));
        }
        let pred_in = self.cls_pred.weight.size()[1] as u64;
        let into_pred = if genes.head_convs > 0 { genes.head_channels } else { genes.fpn_channels };
        let head_max = t.cls.first().and_then(|l| l.last()).map_or(pred_in, |u| u.out_channels() as u64);
        if genes.head_convs > 0 && genes.head_channels > head_max || into_pred > pred_in {
            return Err(bad(format!("head width {} > the largest built ({head_max})", genes.head_channels)));
        }
        Ok(t)
    }

    /// Raw head outputs `(cls_logits [B, A, K], bbox_regression [B, A, 4])` over all anchors of
    /// P3..P7, in [`detnas_core::detector::all_anchors`] order, with the FPN and head of `cfg`.
    pub fn forward(&self, images: &Tensor, arch: &Arch, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_genes(images, arch, &self.default_genes(), train)
    }

    /// [`RetinaNet::forward`] of the sub-network `genes` (FPN width, head width, depth and conv
    /// type; the input resolution is the images'). Errors when this network does not hold `genes`.
    pub fn forward_genes(
        &self,
        images: &Tensor,
        arch: &Arch,
        genes: &DetectorGenes,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let towers = self.towers_for(genes)?;
        let f = Some(genes.fpn_channels as i64);
        let h = Some(genes.head_channels as i64);
        let x = (images - &self.mean) * &self.inv_std;
        let stages = self.backbone.forward(&x, arch, train)?;
        let idx = fpn_stage_indices(&self.backbone.space, DetectorKind::Retinanet);
        let feats: Vec<&Tensor> = idx.iter().map(|&i| &stages[i]).collect();
        let mut last_inner = self.inner[2].forward_active(feats[2], f, train);
        let mut pyramid = vec![self.layer[2].forward_active(&last_inner, f, train)];
        for i in (0..2).rev() {
            let lateral = self.inner[i].forward_active(feats[i], f, train);
            let size = lateral.size();
            let up = last_inner.upsample_nearest2d([size[2], size[3]], None, None);
            last_inner = lateral + up;
            pyramid.insert(0, self.layer[i].forward_active(&last_inner, f, train));
        }
        let p6 = self.p6.forward_active(&pyramid[2], f, train);
        let p7 = self.p7.forward_active(&p6.relu(), f, train);
        pyramid.push(p6);
        pyramid.push(p7);
        let a = self.cfg.anchors_per_cell() as i64;
        let k = self.cfg.num_classes() as i64;
        let flatten = |t: Tensor, c: i64| {
            let s = t.size();
            t.view([s[0], a, c, s[2], s[3]]).permute([0, 3, 4, 1, 2]).reshape([s[0], -1, c])
        };
        let run = |tower: &[Vec<ConvBn>], x: &Tensor| {
            let mut y = x.shallow_clone();
            for u in tower[..genes.head_convs].iter().flatten() {
                y = u.forward_active(&y, h, train);
            }
            y
        };
        let mut cls = Vec::new();
        let mut reg = Vec::new();
        for p in &pyramid {
            cls.push(flatten(self.cls_pred.forward_active(&run(&towers.cls, p), None, train), k));
            reg.push(flatten(self.reg_pred.forward_active(&run(&towers.reg, p), None, train), 4));
        }
        Ok((Tensor::cat(&cls, 1), Tensor::cat(&reg, 1)))
    }

    /// Device of the parameters.
    pub fn device(&self) -> tch::Device {
        self.mean.device()
    }

    /// Named trainable tensors used by `arch`: backbone path, FPN and heads.
    pub fn path_parameters(&self, arch: &Arch) -> Result<Vec<PathParam>> {
        self.path_parameters_genes(arch, &self.default_genes())
    }

    /// Named trainable tensors [`RetinaNet::forward_genes`] uses, each with the block it uses (the
    /// first FPN / head channels, the first towers' convs, the one conv type's towers).
    pub fn path_parameters_genes(&self, arch: &Arch, genes: &DetectorGenes) -> Result<Vec<PathParam>> {
        let towers = self.towers_for(genes)?;
        let f = genes.fpn_channels as i64;
        let h = Some(genes.head_channels as i64);
        let mut v = self.backbone.path_parameters(arch)?;
        for u in &self.inner {
            v.extend(u.parameters_active(u.weight.size()[1], Some(f)));
        }
        for u in self.layer.iter().chain([&self.p6, &self.p7]) {
            v.extend(u.parameters_active(f, Some(f)));
        }
        for (tower, pred) in [(&towers.cls, &self.cls_pred), (&towers.reg, &self.reg_pred)] {
            let mut c = f;
            for u in tower[..genes.head_convs].iter().flatten() {
                v.extend(u.parameters_active(c, h));
                c = u.active_out(c, h);
            }
            v.extend(pred.parameters_active(c, None));
        }
        Ok(v)
    }
}

/// Kind guard: every network here is float32.
pub const KIND: Kind = Kind::Float;

impl crate::detector::TrainingNet for RetinaNet {
    fn cfg(&self) -> &DetectorConfig {
        &self.cfg
    }

    fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    fn device(&self) -> tch::Device {
        RetinaNet::device(self)
    }

    fn default_genes(&self) -> DetectorGenes {
        RetinaNet::default_genes(self)
    }

    fn gene_space(&self) -> Option<&GeneSpace> {
        self.genes.as_ref()
    }

    fn holds(&self, genes: &DetectorGenes) -> Result<()> {
        RetinaNet::holds(self, genes)
    }

    fn path_parameters(&self, arch: &Arch, genes: &DetectorGenes) -> Result<Vec<PathParam>> {
        self.path_parameters_genes(arch, genes)
    }

    fn step_loss(
        &self,
        images: &Tensor,
        arch: &Arch,
        genes: &DetectorGenes,
        targets: &crate::data::BatchTargets,
        _step: usize,
        _seed: u64,
    ) -> Result<crate::run::StepLoss> {
        let crate::data::BatchTargets::Retinanet(t) = targets else {
            return Err(crate::detector::other_family_targets());
        };
        let (cls, reg) = self.forward_genes(images, arch, genes, true)?;
        let loss = crate::loss::retinanet_loss(&cls, &reg, &crate::loss::Targets::new(t, RetinaNet::device(self)));
        Ok(crate::run::StepLoss { total: loss.total(), parts: vec![("cls", loss.cls), ("box", loss.boxes)] })
    }

    fn sandwich_loss(
        &self,
        images: &Tensor,
        arch: &Arch,
        (teacher, students): (&DetectorGenes, &[DetectorGenes]),
        targets: &crate::data::BatchTargets,
    ) -> Result<crate::run::StepLoss> {
        let crate::data::BatchTargets::Retinanet(t) = targets else {
            return Err(crate::detector::other_family_targets());
        };
        let t = crate::loss::Targets::new(t, RetinaNet::device(self));
        let m = (1 + students.len()) as f64;
        let (cls, reg) = self.forward_genes(images, arch, teacher, true)?;
        let (probs, boxes) = (cls.detach().sigmoid(), reg.detach());
        let labels = crate::loss::retinanet_loss(&cls, &reg, &t);
        let mut distilled = labels.cls.zeros_like().detach();
        for genes in students {
            let (c, r) = self.forward_genes(images, arch, genes, true)?;
            let kd = crate::loss::distillation_loss(&c, &r, &probs, &boxes, &t).total();
            (&kd / m).backward();
            distilled += kd.detach();
        }
        // the mean over the sandwich; the students' part is detached (back-propagated above)
        let total = (labels.total() + &distilled) / m;
        let per_student = distilled / students.len().max(1) as f64;
        Ok(crate::run::StepLoss {
            total,
            parts: vec![("cls", labels.cls.detach()), ("box", labels.boxes.detach()), ("distill", per_student)],
        })
    }

    fn detect(
        &self,
        images: &Tensor,
        arch: &Arch,
        genes: &DetectorGenes,
    ) -> Result<Vec<Vec<detnas_core::detector::RawDetection>>> {
        let det = genes.apply(&self.cfg);
        let levels = detnas_core::detector::pyramid_levels(&self.backbone.space, arch, &det)?;
        let (cls, reg) = tch::no_grad(|| self.forward_genes(images, arch, genes, false))?;
        let b = images.size()[0] as usize;
        let flat = |t: Tensor| Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Float).flatten(0, -1));
        let (cls, reg) = (flat(cls)?, flat(reg)?);
        let (pc, pr) = (cls.len() / b.max(1), reg.len() / b.max(1));
        Ok((0..b)
            .map(|j| {
                detnas_core::detector::postprocess(
                    &cls[j * pc..(j + 1) * pc],
                    &reg[j * pr..(j + 1) * pr],
                    &levels,
                    &det,
                )
            })
            .collect())
    }

    fn recalibration_forward(&self, images: &Tensor, arch: &Arch, genes: &DetectorGenes) -> Result<()> {
        self.forward_genes(images, arch, genes, true).map(drop)
    }
}

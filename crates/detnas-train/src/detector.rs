//! One interface over the detector families, for the trainer, BN recalibration, the search's
//! fitness, evaluation and step benchmarks: build, path parameters, one training step's losses,
//! detections and a recalibration forward.

use crate::data::BatchTargets;
use crate::error::{Result, TrainError};
use crate::faster_rcnn::FasterRcnn;
use crate::loss::{Targets, retinanet_loss};
use crate::net::{Backbone, RetinaNet};
use crate::optim::PathParam;
use crate::run::StepLoss;
use detnas_core::arch::Arch;
use detnas_core::contract::seeds;
use detnas_core::detector::{DetectorConfig, DetectorKind, RawDetection, all_anchors, postprocess, pyramid_levels};
use detnas_core::genome::{DetectorGenes, GeneSpace};
use detnas_core::plan::Paths;
use detnas_core::rng::Rng;
use detnas_core::space::SearchSpace;
use tch::{Device, Kind, Tensor, nn};

/// A detector network of either family.
pub enum DetectionNet {
    /// RetinaNet (fixed, or a genes supernet with an elastic FPN and head).
    Retinanet(RetinaNet),
    /// FPN Faster R-CNN (fixed FPN and heads).
    FasterRcnn(FasterRcnn),
}

impl DetectionNet {
    /// Builds the network of `cfg`'s family: one path or the backbone supernet (`paths`), a genes
    /// supernet with `genes` (RetinaNet only), initialised from `seed`.
    pub fn build(
        vs: &nn::VarStore,
        space: &SearchSpace,
        paths: Paths<'_>,
        cfg: &DetectorConfig,
        genes: Option<&GeneSpace>,
        seed: u64,
    ) -> Result<Self> {
        match (cfg.kind(), genes) {
            (DetectorKind::Retinanet, Some(g)) => {
                Ok(Self::Retinanet(RetinaNet::with_genes(vs, space, paths, cfg, g, seed)?))
            }
            (DetectorKind::Retinanet, None) => Ok(Self::Retinanet(RetinaNet::new(vs, space, paths, cfg, seed)?)),
            (DetectorKind::FasterRcnn, None) => Ok(Self::FasterRcnn(FasterRcnn::new(vs, space, paths, cfg, seed)?)),
            (DetectorKind::FasterRcnn, Some(_)) => Err(TrainError::Config(
                "a `[genes]` supernet (elastic FPN and head) is RetinaNet-only: remove `[genes]` for a faster-rcnn \
                 (its backbone supernet still trains every path)"
                    .into(),
            )),
        }
    }

    /// The detector configuration (of a genes supernet: the base its genes apply to).
    pub fn cfg(&self) -> &DetectorConfig {
        match self {
            Self::Retinanet(n) => &n.cfg,
            Self::FasterRcnn(n) => &n.cfg,
        }
    }

    /// The backbone.
    pub fn backbone(&self) -> &Backbone {
        match self {
            Self::Retinanet(n) => &n.backbone,
            Self::FasterRcnn(n) => &n.backbone,
        }
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        match self {
            Self::Retinanet(n) => n.device(),
            Self::FasterRcnn(n) => n.device(),
        }
    }

    /// The genes the network runs with by default (its configuration's).
    pub fn default_genes(&self) -> DetectorGenes {
        match self {
            Self::Retinanet(n) => n.default_genes(),
            Self::FasterRcnn(n) => DetectorGenes::of(&n.cfg),
        }
    }

    /// The gene space of a genes supernet (RetinaNet only).
    pub fn gene_space(&self) -> Option<&GeneSpace> {
        match self {
            Self::Retinanet(n) => n.genes.as_ref(),
            Self::FasterRcnn(_) => None,
        }
    }

    /// The RetinaNet, if this is one.
    pub fn as_retinanet(&self) -> Option<&RetinaNet> {
        match self {
            Self::Retinanet(n) => Some(n),
            Self::FasterRcnn(_) => None,
        }
    }

    /// Checks that `genes` are the configuration's own for a network without elastic genes.
    fn fixed_genes(&self, genes: &DetectorGenes) -> Result<()> {
        if *genes == self.default_genes() {
            Ok(())
        } else {
            Err(TrainError::Config(format!("this {} has fixed detector genes; asked for {genes:?}", self.cfg().kind())))
        }
    }

    /// Whether the network can run `genes` (an error naming the gene otherwise).
    pub fn holds(&self, genes: &DetectorGenes) -> Result<()> {
        match self {
            Self::Retinanet(n) => n.holds(genes),
            Self::FasterRcnn(_) => self.fixed_genes(genes),
        }
    }

    /// The trainable tensors a step on `arch` with `genes` uses.
    pub fn path_parameters(&self, arch: &Arch, genes: &DetectorGenes) -> Result<Vec<PathParam>> {
        match self {
            Self::Retinanet(n) => n.path_parameters_genes(arch, genes),
            Self::FasterRcnn(n) => {
                self.fixed_genes(genes)?;
                n.path_parameters(arch)
            }
        }
    }

    /// The losses of one training step on `images` (`[B, 3, H, W]` at `genes.input`); `step` and
    /// `seed` seed the step's RoI sampling.
    pub fn step_loss(
        &self,
        images: &Tensor,
        arch: &Arch,
        genes: &DetectorGenes,
        targets: &BatchTargets,
        step: usize,
        seed: u64,
    ) -> Result<StepLoss> {
        match (self, targets) {
            (Self::Retinanet(n), BatchTargets::Retinanet(t)) => {
                let (cls, reg) = n.forward_genes(images, arch, genes, true)?;
                let loss = retinanet_loss(&cls, &reg, &Targets::new(t, self.device()));
                Ok(StepLoss { total: loss.total(), parts: vec![("cls", loss.cls), ("box", loss.boxes)] })
            }
            (Self::FasterRcnn(n), BatchTargets::FasterRcnn(t)) => {
                self.fixed_genes(genes)?;
                let levels = pyramid_levels(&n.backbone.space, arch, &n.cfg)?;
                let anchors = all_anchors(&levels, &n.cfg);
                let mut rng = Rng::seed(seeds::stream_seed(seed, seeds::ROI_SAMPLING, step as u64));
                let loss = n.training_loss(images, arch, t, &levels, &anchors, &mut rng)?;
                Ok(StepLoss {
                    total: loss.total(),
                    parts: vec![
                        ("objectness", loss.objectness),
                        ("rpn_box", loss.rpn_box),
                        ("cls", loss.classifier),
                        ("box", loss.box_reg),
                    ],
                })
            }
            _ => Err(TrainError::Config("batch targets of another detector family".into())),
        }
    }

    /// Detections of each image (input pixels of `genes.input`, highest score first), no
    /// gradient, eval-mode BN.
    pub fn detect(&self, images: &Tensor, arch: &Arch, genes: &DetectorGenes) -> Result<Vec<Vec<RawDetection>>> {
        match self {
            Self::Retinanet(n) => {
                let det = genes.apply(&n.cfg);
                let levels = pyramid_levels(&n.backbone.space, arch, &det)?;
                let (cls, reg) = tch::no_grad(|| n.forward_genes(images, arch, genes, false))?;
                let b = images.size()[0] as usize;
                let cls: Vec<f32> = Vec::try_from(cls.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
                let reg: Vec<f32> = Vec::try_from(reg.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
                let (pc, pr) = (cls.len() / b.max(1), reg.len() / b.max(1));
                Ok((0..b)
                    .map(|j| postprocess(&cls[j * pc..(j + 1) * pc], &reg[j * pr..(j + 1) * pr], &levels, &det))
                    .collect())
            }
            Self::FasterRcnn(n) => {
                self.fixed_genes(genes)?;
                let levels = pyramid_levels(&n.backbone.space, arch, &n.cfg)?;
                let anchors = all_anchors(&levels, &n.cfg);
                let found = n.detect(images, arch, &levels, &anchors)?;
                Ok(found
                    .into_iter()
                    .map(|d| {
                        d.into_iter().map(|d| RawDetection { bbox: d.bbox, score: d.score, label: d.class }).collect()
                    })
                    .collect())
            }
        }
    }

    /// A train-mode forward without gradient (BN statistics update): BN recalibration. Only the
    /// backbone has BN, so only its path runs for a Faster R-CNN.
    pub fn recalibration_forward(&self, images: &Tensor, arch: &Arch, genes: &DetectorGenes) -> Result<()> {
        match self {
            Self::Retinanet(n) => n.forward_genes(images, arch, genes, true).map(drop),
            Self::FasterRcnn(n) => {
                let x = (images - n.mean()) * n.inv_std();
                n.backbone.forward(&x, arch, true).map(drop)
            }
        }
    }
}

//! One interface over the detector families, for the trainer, BN recalibration, the search's
//! fitness, evaluation and step benchmarks: [`TrainingNet`], implemented by each family's network
//! in its own module (`net.rs` for RetinaNet, `faster_rcnn.rs` for Faster R-CNN), and
//! [`DetectionNet`], which builds the network of a configuration's family and dispatches to it in
//! one place ([`DetectionNet::net`]; its `Deref` makes every [`TrainingNet`] method a method of
//! the `DetectionNet`).

use crate::data::BatchTargets;
use crate::error::{Result, TrainError};
use crate::faster_rcnn::FasterRcnn;
use crate::net::{Backbone, RetinaNet};
use crate::optim::PathParam;
use crate::run::StepLoss;
use detnas_core::detector::plan::Paths;
use detnas_core::detector::{DetectorConfig, DetectorKind, RawDetection};
use detnas_core::search::genome::{DetectorGenes, GeneSpace};
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use tch::{Device, Tensor, nn};

/// What a detector family's training network provides: build it in [`DetectionNet::build`] and
/// implement this in the family's module.
pub trait TrainingNet {
    /// The detector configuration (of a genes supernet: the base its genes apply to).
    fn cfg(&self) -> &DetectorConfig;

    /// The backbone.
    fn backbone(&self) -> &Backbone;

    /// Device of the parameters.
    fn device(&self) -> Device;

    /// The genes the network runs with by default (its configuration's).
    fn default_genes(&self) -> DetectorGenes {
        DetectorGenes::of(self.cfg())
    }

    /// The gene space of a genes supernet; `None` for a network with fixed detector genes.
    fn gene_space(&self) -> Option<&GeneSpace> {
        None
    }

    /// Whether the network can run `genes` (an error naming the gene otherwise). By default only
    /// the configuration's own genes.
    fn holds(&self, genes: &DetectorGenes) -> Result<()> {
        if *genes == self.default_genes() {
            Ok(())
        } else {
            Err(TrainError::Config(format!("this {} has fixed detector genes; asked for {genes:?}", self.cfg().kind())))
        }
    }

    /// The trainable tensors a step on `arch` with `genes` uses.
    fn path_parameters(&self, arch: &Arch, genes: &DetectorGenes) -> Result<Vec<PathParam>>;

    /// The losses of one training step on `images` (`[B, 3, H, W]` at `genes.input`); `step` and
    /// `seed` seed the step's sampling. Targets of another family are an error.
    fn step_loss(
        &self,
        images: &Tensor,
        arch: &Arch,
        genes: &DetectorGenes,
        targets: &BatchTargets,
        step: usize,
        seed: u64,
    ) -> Result<StepLoss>;

    /// The sandwich rule's step on `arch` ([`crate::config::SupernetSettings::sandwich`]): the
    /// `teacher` genes on the labels, each of `students` distilled from the teacher's outputs
    /// ([`crate::loss::distillation_loss`]), the mean over all of them. The students' gradients
    /// are back-propagated here; the returned total carries the teacher's graph (the step loop
    /// back-propagates it) plus the students' detached values. Only a RetinaNet distils.
    fn sandwich_loss(
        &self,
        _images: &Tensor,
        _arch: &Arch,
        (_teacher, _students): (&DetectorGenes, &[DetectorGenes]),
        _targets: &BatchTargets,
    ) -> Result<StepLoss> {
        Err(TrainError::Config(format!("the sandwich rule distils RetinaNet outputs, not a {}", self.cfg().kind())))
    }

    /// Detections of each image (input pixels of `genes.input`, highest score first), no
    /// gradient, eval-mode BN.
    fn detect(&self, images: &Tensor, arch: &Arch, genes: &DetectorGenes) -> Result<Vec<Vec<RawDetection>>>;

    /// A train-mode forward without gradient (BN statistics update): BN recalibration.
    fn recalibration_forward(&self, images: &Tensor, arch: &Arch, genes: &DetectorGenes) -> Result<()>;
}

/// The error of [`TrainingNet::step_loss`] given another family's targets.
pub(crate) fn other_family_targets() -> TrainError {
    TrainError::Config("batch targets of another detector family".into())
}

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

    /// The family's network: the one place the families are told apart.
    pub fn net(&self) -> &(dyn TrainingNet + 'static) {
        match self {
            Self::Retinanet(n) => n,
            Self::FasterRcnn(n) => n,
        }
    }

    /// The backbone, to change (its crippled choices).
    pub fn backbone_mut(&mut self) -> &mut Backbone {
        match self {
            Self::Retinanet(n) => &mut n.backbone,
            Self::FasterRcnn(n) => &mut n.backbone,
        }
    }

    /// The RetinaNet, if this is one.
    pub fn as_retinanet(&self) -> Option<&RetinaNet> {
        match self {
            Self::Retinanet(n) => Some(n),
            Self::FasterRcnn(_) => None,
        }
    }
}

impl std::ops::Deref for DetectionNet {
    type Target = dyn TrainingNet;

    fn deref(&self) -> &Self::Target {
        self.net()
    }
}

//! DetNAS step 3: evolutionary search on a trained detection supernet. The fitness of a path is its
//! held-out COCO AP after BN recalibration on fixed training batches; constraints (FLOPs, ...) are
//! hard filters of the core engine, which also makes the search resumable.

use crate::detector::DetectionNet;
use crate::error::Result;
use crate::modules::BnUpdate;
use crate::trainer::{recalibration_batches, score_candidate, score_genome};
use detnas_core::coco::CocoStats;
use detnas_core::search::genome::DetectorGenes;
use detnas_core::space::arch::Arch;
use detnas_data::detection::DetectionDataset;
use std::time::{Duration, Instant};
use tch::Tensor;

/// Which COCO statistic is the fitness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// AP @ IoU 0.50:0.95 (COCO mmAP, DetNAS's fitness).
    Ap,
    /// AP @ IoU 0.50.
    Ap50,
}

/// Scores candidate paths of a supernet; counts and times evaluations.
pub struct SupernetFitness<'a> {
    /// The supernet.
    pub net: &'a DetectionNet,
    /// Fixed recalibration batches (the same images and augmentation for every path).
    pub batches: Vec<Tensor>,
    /// Held-out data the fitness is measured on.
    pub val: &'a DetectionDataset,
    /// Exact or moving-average BN recalibration.
    pub update: BnUpdate,
    /// The COCO statistic returned.
    pub metric: Metric,
    /// Evaluations so far.
    pub evaluations: usize,
    /// Wall time of those evaluations.
    pub time: Duration,
}

impl SupernetFitness<'_> {
    /// Mean wall time of one candidate evaluation (recalibration + held-out inference + COCO AP).
    pub fn mean_time(&self) -> Duration {
        self.time / self.evaluations.max(1) as u32
    }
}

impl detnas_core::search::evolution::Fitness for SupernetFitness<'_> {
    type Error = crate::TrainError;

    fn evaluate(&mut self, arch: &Arch) -> Result<f64> {
        let t = Instant::now();
        let stats = score_candidate(self.net, arch, &self.batches, self.val, self.update)?;
        self.evaluations += 1;
        self.time += t.elapsed();
        // no ground truth at all gives -1: treat as zero accuracy
        Ok(match self.metric {
            Metric::Ap => stats.stats[0],
            Metric::Ap50 => stats.stats[1],
        }
        .max(0.0))
    }
}

/// How [`evaluate_genome`] recalibrates BN before scoring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenomeEval {
    /// Recalibration batches (fixed: the same images and augmentation for every genome).
    pub batches: usize,
    /// Images per recalibration batch.
    pub batch_size: usize,
    /// Seed of the batches' image order and augmentation.
    pub seed: u64,
    /// Exact or moving-average BN recalibration.
    pub update: BnUpdate,
}

/// The fitness of one genome (backbone path `arch` + detector `genes`) of a (genes) supernet:
/// `opts.batches` fixed batches of `train` letterboxed to the genome's input recalibrate the path's
/// BN, then COCO statistics on `val` at that input. Deterministic for fixed arguments; the net's BN
/// statistics of the path are left recalibrated. Errors when `net` does not hold `genes`.
pub fn evaluate_genome(
    net: &DetectionNet,
    arch: &Arch,
    genes: &DetectorGenes,
    train: &DetectionDataset,
    val: &DetectionDataset,
    opts: &GenomeEval,
) -> Result<CocoStats> {
    net.holds(genes)?;
    let det = genes.apply(net.cfg());
    let batches = recalibration_batches(train, &det, opts.batches, opts.batch_size, opts.seed, net.device())?;
    score_genome(net, arch, genes, &batches, val, opts.update)
}

//! Per-path BatchNorm recalibration: reset the path's running statistics, then forward fixed batches
//! in train mode without gradients. Deterministic for a fixed batch list.

use crate::error::Result;
use crate::modules::{Bn, BnUpdate};
use detnas_core::search::genome::DetectorGenes;
use detnas_core::space::arch::Arch;
use tch::Tensor;

/// Recalibrates the BNs `bns` by running `forward` on each batch (train mode, no gradient), with
/// `update` (EMA or exact cumulative average); afterwards the BNs are back to EMA(0.1) updates.
pub fn recalibrate(
    bns: &[&Bn],
    batches: &[Tensor],
    update: BnUpdate,
    mut forward: impl FnMut(&Tensor) -> Result<()>,
) -> Result<()> {
    for bn in bns {
        bn.reset(update);
    }
    tch::no_grad(|| batches.iter().try_for_each(&mut forward))?;
    for bn in bns {
        bn.set_update(BnUpdate::Ema(0.1));
    }
    Ok(())
}

/// Recalibrates the backbone BNs of `arch` in `net` with image batches (`[B, 3, H, W]`, 0-255,
/// at `genes.input`) running the sub-network `genes` (the FPN and heads have no BN, so only the
/// backbone path's statistics change; the batches set the resolution).
pub fn recalibrate_genome(
    net: &crate::detector::DetectionNet,
    arch: &Arch,
    genes: &DetectorGenes,
    batches: &[Tensor],
    update: BnUpdate,
) -> Result<()> {
    let bns = net.backbone().path_bns(arch)?;
    recalibrate(&bns, batches, update, |b| net.recalibration_forward(b, arch, genes))
}

//! Detector genes in training: the genome a supernet step samples, the per-step batch geometry of
//! a genes supernet, and the genome a configuration's `arch` names.

use crate::data::{Geometry, fixed_geometry, step_seed};
use crate::error::Result;
use detnas_core::detector::contract::seeds;
use detnas_core::detector::{DetectorConfig, HeadConv, all_anchors, pyramid_levels};
use detnas_core::rng::Rng;
use detnas_core::search::genome::{DetectorGenes, GeneSpace, Genome};
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use detnas_core::space::sample::uniform;
use detnas_core::{InputSize, detector::boxes::BBox};
use std::collections::HashMap;
use std::sync::Arc;

/// The backbone path of supernet step `step` (uniform, stream [`seeds::PATH_SAMPLING`]).
pub fn step_arch(space: &SearchSpace, seed: u64, step: usize) -> Arch {
    uniform(space, &mut Rng::seed(step_seed(seed, seeds::PATH_SAMPLING, step as u64)))
}

/// The paths of a strictly fair supernet step `step` (FairNAS): one per allowed choice, each
/// layer's choices a uniformly random permutation across them (stream [`seeds::PATH_SAMPLING`]),
/// so every choice of every layer is in exactly one path.
pub fn fair_step_archs(space: &SearchSpace, seed: u64, step: usize) -> Vec<Arch> {
    let mut rng = Rng::seed(step_seed(seed, seeds::PATH_SAMPLING, step as u64));
    let m = space.allowed.len();
    let mut columns: Vec<Vec<detnas_core::space::Choice>> = Vec::with_capacity(space.num_layers());
    for _ in 0..space.num_layers() {
        let mut perm = space.allowed.clone();
        // Fisher-Yates
        for i in (1..m).rev() {
            perm.swap(i, rng.below(i as u64 + 1) as usize);
        }
        columns.push(perm);
    }
    (0..m).map(|i| Arch::new(columns.iter().map(|c| c[i]).collect())).collect()
}

/// The detector genes of genes-supernet step `step` (uniform per gene, stream
/// [`seeds::GENE_SAMPLING`]): a pure function of its arguments, so the data thread and the
/// training loop agree and a resumed run samples what an uninterrupted one would.
pub fn step_genes(genes: &GeneSpace, seed: u64, step: usize) -> DetectorGenes {
    genes.sample(&mut Rng::seed(step_seed(seed, seeds::GENE_SAMPLING, step as u64)))
}

/// The sandwich rule's bread at `input`: the largest genome of `genes` (widest FPN and head,
/// deepest head, dense convs where the space has them) and the smallest (narrowest, shallowest,
/// separable where it has them).
pub fn sandwich_genes(genes: &GeneSpace, input: InputSize) -> (DetectorGenes, DetectorGenes) {
    let end = |largest: bool| {
        let conv = if largest { HeadConv::Dense } else { HeadConv::Separable };
        DetectorGenes {
            fpn_channels: extreme(&genes.fpn_channels, largest),
            head_channels: extreme(&genes.head_channels, largest),
            head_convs: extreme(&genes.head_convs, largest),
            head_conv: if genes.head_conv.contains(&conv) { conv } else { genes.head_conv[0] },
            input,
        }
    };
    (end(true), end(false))
}

/// The largest value of a gene's values, or the smallest.
fn extreme<T: Ord + Copy + Default>(values: &[T], largest: bool) -> T {
    if largest { values.iter().max() } else { values.iter().min() }.copied().unwrap_or_default()
}

/// Each step's letterbox size and anchors: `det`'s for a fixed detector, the sampled input's
/// (anchors computed once per input size of `genes`) for a genes supernet.
pub fn geometry(space: &SearchSpace, det: &DetectorConfig, genes: Option<&GeneSpace>, seed: u64) -> Result<Geometry> {
    let any_arch = Arch::uniform(space, space.allowed[0]);
    let anchors_at = |cfg: &DetectorConfig| -> Result<Arc<Vec<BBox>>> {
        Ok(Arc::new(all_anchors(&pyramid_levels(space, &any_arch, cfg)?, cfg)))
    };
    let Some(genes) = genes else {
        return Ok(fixed_geometry(det.clone(), anchors_at(det)?));
    };
    let mut table: HashMap<InputSize, Arc<Vec<BBox>>> = HashMap::new();
    for &input in &genes.input {
        table.insert(input, anchors_at(&DetectorConfig { input, ..det.clone() })?);
    }
    let (genes, det) = (genes.clone(), det.clone());
    Ok(Arc::new(move |step| {
        let g = step_genes(&genes, seed, step);
        (DetectorConfig { input: g.input, ..det.clone() }, table[&g.input].clone())
    }))
}

/// The genome `text` names in `space`, and the detector configuration of it over `base` (genes left
/// out keep `base`'s values; the result is validated).
pub fn resolve_genome(space: &str, text: &str, base: &DetectorConfig) -> Result<(Arch, DetectorConfig)> {
    let genome = Genome::parse(Some(space), text)?;
    let det = genome.detector_config(base)?;
    Ok((genome.arch, det))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fair_step_trains_every_choice_of_every_layer_once() {
        let space = SearchSpace::detnas_300m();
        let archs = fair_step_archs(&space, 7, 3);
        assert_eq!(archs.len(), 4);
        for l in 0..space.num_layers() {
            let mut at: Vec<_> = archs.iter().map(|a| a.choices()[l]).collect();
            at.sort();
            assert_eq!(at, space.allowed, "layer {l}");
        }
        assert_eq!(archs, fair_step_archs(&space, 7, 3), "a pure function of seed and step");
        assert_ne!(archs, fair_step_archs(&space, 7, 4));
    }

    #[test]
    fn the_sandwich_is_the_largest_and_smallest_genome_at_the_step_input() {
        let genes = GeneSpace {
            fpn_channels: vec![32, 16, 24],
            head_channels: vec![16, 48],
            head_convs: vec![2, 1, 3],
            head_conv: vec![HeadConv::Separable, HeadConv::Dense],
            input: vec![InputSize::new(64, 64), InputSize::new(96, 96)],
        };
        let at = InputSize::new(96, 96);
        let (big, small) = sandwich_genes(&genes, at);
        assert_eq!((big.fpn_channels, big.head_channels, big.head_convs, big.head_conv), (32, 48, 3, HeadConv::Dense));
        assert_eq!((small.fpn_channels, small.head_channels, small.head_convs), (16, 16, 1));
        assert_eq!((small.head_conv, big.input, small.input), (HeadConv::Separable, at, at));
        let dense_only = GeneSpace { head_conv: vec![HeadConv::Dense], ..genes };
        assert_eq!(sandwich_genes(&dense_only, at).1.head_conv, HeadConv::Dense);
    }

    #[test]
    fn step_genes_are_seeded_and_cover_the_space() {
        let space = GeneSpace {
            input: vec![InputSize::new(64, 64), InputSize::new(96, 96)],
            head_convs: vec![1, 2],
            ..GeneSpace::default()
        };
        let a: Vec<DetectorGenes> = (0..40).map(|s| step_genes(&space, 3, s)).collect();
        let b: Vec<DetectorGenes> = (0..40).map(|s| step_genes(&space, 3, s)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|g| space.contains(g)));
        assert!(a.iter().any(|g| g.input.height == 64) && a.iter().any(|g| g.input.height == 96));
        assert_ne!(a, (0..40).map(|s| step_genes(&space, 4, s)).collect::<Vec<_>>(), "the seed matters");
    }
}

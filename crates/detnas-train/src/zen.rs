//! The Zen-score (Zen-NAS), a training-free fitness: the network with random Gaussian weights, fed
//! random Gaussian images, and how much its output moves under a small input perturbation.
//!
//! `score = ln E_batch ‖f(x) − f(x + γ·ε)‖₁ + Σ_BN ln √mean(σ²_BN)`, with every conv weight drawn
//! from `N(0, 1)`, biases 0, BN affine at identity and in train mode (batch statistics), `γ = 0.01`.
//! The first term measures the expressivity of the network as a function; BN renormalises every
//! layer's output, so the second term puts back the scale it removed (the batch variance each BN
//! saw, taken exactly here rather than through a moving average).
//!
//! `f` is the whole detector where the family lets us run it: RetinaNet's classification and box
//! outputs over every pyramid level (backbone, FPN and head genes all count); for Faster R-CNN, the
//! backbone stages its FPN reads.

use crate::detector::DetectionNet;
use crate::error::Result;
use crate::modules::BnUpdate;
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::plan::{Paths, normal};
use detnas_core::rng::Rng;
use detnas_core::search::genome::DetectorGenes;
use detnas_core::space::SearchSpace;
use detnas_core::space::arch::Arch;
use tch::{Device, Kind, Tensor, nn};

/// How a Zen-score is taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZenOptions {
    /// Random images per batch.
    pub batch: usize,
    /// Independent draws (weights, images, perturbation) averaged.
    pub repeats: usize,
    /// Seed of the weights, images and perturbations.
    pub seed: u64,
    /// Perturbation scale `γ`.
    pub gamma: f64,
}

impl Default for ZenOptions {
    fn default() -> Self {
        ZenOptions { batch: 4, repeats: 1, seed: 0, gamma: 0.01 }
    }
}

/// A standard normal tensor of `shape` from `rng` (CPU; the project's generator, not libtorch's
/// global one, so concurrent scores stay deterministic).
fn gaussian(shape: &[i64], rng: &mut Rng) -> Tensor {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| normal(rng)).collect();
    Tensor::from_slice(&values).view(shape)
}

/// Sets every conv weight to `N(0, 1)`, every bias to 0 and every BN to identity.
fn gaussian_weights(vs: &nn::VarStore, rng: &mut Rng) {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut t) in named {
            match t.dim() {
                // conv and linear weights
                2 | 4 => t.copy_(&gaussian(&t.size(), rng)),
                // BN scale (conv weights have 4 dimensions)
                1 if name.ends_with(".weight") => drop(t.fill_(1.0)),
                // reset with the BNs before every pass
                _ if name.ends_with("running_var") => {}
                // biases, BN shifts and running means
                _ => drop(t.fill_(0.0)),
            }
        }
    });
}

/// The Zen-score of `arch` with the detector `cfg` (its genes applied) on `space`; see the module
/// docs. Deterministic for a given `opts.seed`.
pub fn zen_score(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig, opts: ZenOptions) -> Result<f64> {
    let mut total = 0.0;
    for r in 0..opts.repeats.max(1) {
        let mut rng = Rng::seed(opts.seed.wrapping_add(r as u64));
        let vs = nn::VarStore::new(Device::Cpu);
        let net = DetectionNet::build(&vs, space, Paths::Single(arch), cfg, None, opts.seed)?;
        gaussian_weights(&vs, &mut rng);
        let shape = [opts.batch as i64, 3, cfg.input.height as i64, cfg.input.width as i64];
        let x = gaussian(&shape, &mut rng);
        let moved = &x + gaussian(&shape, &mut rng) * opts.gamma;
        let bns = net.backbone().path_bns(arch)?;
        for bn in &bns {
            bn.reset(BnUpdate::Cumulative);
        }
        let (out, out_moved) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let out = features(&net, arch, cfg, &x)?;
            // The BN term is the batch variance of the clean images: read it before the second pass.
            let variance: f64 = bns
                .iter()
                .map(|bn| 0.5 * bn.running_var.mean(Kind::Double).double_value(&[]).max(f64::MIN_POSITIVE).ln())
                .sum();
            total += variance;
            Ok((out, features(&net, arch, cfg, &moved)?))
        })?;
        let diff = (out - out_moved).abs().to_kind(Kind::Double).view([opts.batch as i64, -1]).sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Double,
        );
        total += diff.mean(Kind::Double).double_value(&[]).max(f64::MIN_POSITIVE).ln();
    }
    Ok(total / opts.repeats.max(1) as f64)
}

/// The flattened output `f` of the module docs for normalised images `x`, train-mode BN.
fn features(net: &DetectionNet, arch: &Arch, cfg: &DetectorConfig, x: &Tensor) -> Result<Tensor> {
    let b = x.size()[0];
    match net {
        DetectionNet::Retinanet(r) => {
            // The network normalises 0-255 pixels itself: give it pixels whose normalisation is `x`.
            let p = &cfg.preprocess;
            let std = Tensor::from_slice(&p.std.map(|s| s * 255.0)).view([1, 3, 1, 1]);
            let mean = Tensor::from_slice(&p.mean.map(|m| m * 255.0)).view([1, 3, 1, 1]);
            let (cls, reg) = r.forward_genes(&(x * std + mean), arch, &DetectorGenes::of(cfg), true)?;
            Ok(Tensor::cat(&[cls.view([b, -1]), reg.view([b, -1])], 1))
        }
        DetectionNet::FasterRcnn(f) => {
            let stages = f.backbone.forward(x, arch, true)?;
            let kind = cfg.kind();
            let feeds = detnas_core::detector::plan::fpn_stage_indices(&f.backbone.space, kind);
            let flat: Vec<Tensor> = feeds.iter().map(|&i| stages[i].view([b, -1])).collect();
            Ok(Tensor::cat(&flat, 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detnas_core::InputSize;
    use detnas_core::space::Choice;

    fn cfg() -> DetectorConfig {
        DetectorConfig {
            input: InputSize::new(64, 64),
            fpn_channels: 16,
            head_channels: 16,
            head_convs: 1,
            ..DetectorConfig::default()
        }
    }

    #[test]
    fn deterministic_finite_and_seed_dependent() {
        let space = SearchSpace::detnas_300m();
        let arch = Arch::uniform(&space, Choice::Shufflenet3x3);
        let opts = ZenOptions { batch: 2, ..ZenOptions::default() };
        let a = zen_score(&space, &arch, &cfg(), opts).unwrap();
        let b = zen_score(&space, &arch, &cfg(), opts).unwrap();
        assert!(a.is_finite());
        assert_eq!(a, b);
        let c = zen_score(&space, &arch, &cfg(), ZenOptions { seed: 1, ..opts }).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn a_deeper_head_moves_more() {
        // Each N(0, 1) conv of fan-in 9·16 multiplies the output change by about √144 / √2 ≈ 8.5 (ReLU
        // halves the variance): one more tower conv must raise the score by about ln 8.5 ≈ 2.1.
        let space = SearchSpace::detnas_300m();
        let arch = Arch::uniform(&space, Choice::Shufflenet3x3);
        let opts = ZenOptions { batch: 2, ..ZenOptions::default() };
        let one = zen_score(&space, &arch, &cfg(), opts).unwrap();
        let two = zen_score(&space, &arch, &DetectorConfig { head_convs: 2, ..cfg() }, opts).unwrap();
        assert!((two - one - (144f64 / 2.0).sqrt().ln()).abs() < 0.5, "one {one}, two {two}");
    }
}

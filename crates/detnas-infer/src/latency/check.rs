//! Validating a table against whole-model measurements: random genomes of the table's gene space,
//! predicted and measured end to end; the share within ±10%, mean absolute percentage error, RMSE
//! and Kendall's τ, for the additive sum and for the corrected prediction.

use super::measure::{Runner, base_config};
use super::table::{Correction, LatencyTable};
use crate::error::Result;
use detnas_core::rng::Rng;
use detnas_core::search::genome::{GeneOverrides, GeneSpace, Genome};
use detnas_core::search::stats::kendall_tau_defined;
use detnas_core::space::SearchSpace;
use detnas_core::space::sample::uniform;
use serde::Serialize;

/// Agreement of predictions with measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Share (0-1) of genomes predicted within ±10% of their measurement.
    pub within_10pct: f64,
    /// Mean absolute percentage error, in percent.
    pub mape: f64,
    /// Kendall's τ-b between predicted and measured (rank agreement, -1..1); `None` (JSON `null`)
    /// when undefined: fewer than 2 genomes, or either series constant.
    pub kendall_tau: Option<f64>,
    /// Root mean square error, in milliseconds.
    pub rmse_ms: f64,
}

/// [`Metrics`] of `predicted` against `measured` (milliseconds, same order).
pub fn metrics(predicted: &[f64], measured: &[f64]) -> Metrics {
    let n = predicted.len().min(measured.len()).max(1) as f64;
    let rel: Vec<f64> = predicted.iter().zip(measured).map(|(p, m)| (p - m).abs() / m).collect();
    let sq: f64 = predicted.iter().zip(measured).map(|(p, m)| (p - m) * (p - m)).sum();
    Metrics {
        within_10pct: rel.iter().filter(|r| **r <= 0.10).count() as f64 / n,
        mape: 100.0 * rel.iter().sum::<f64>() / n,
        kendall_tau: kendall_tau_defined(predicted, measured),
        rmse_ms: (sq / n).sqrt(),
    }
}

/// `scale` and `offset` minimising the squared *relative* error of `scale * sum + offset` against
/// `measured` (weighted least squares, weights `1 / measured²`); `None` with fewer than 3 points,
/// non-positive measurements or sums that do not vary.
pub fn fit_correction(sums: &[f64], measured: &[f64]) -> Option<Correction> {
    if sums.len() < 3 || sums.len() != measured.len() || measured.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
        return None;
    }
    let (mut sw, mut sp, mut spp, mut sm, mut spm) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&p, &m) in sums.iter().zip(measured) {
        let w = 1.0 / (m * m);
        sw += w;
        sp += w * p;
        spp += w * p * p;
        sm += w * m;
        spm += w * p * m;
    }
    let det = spp * sw - sp * sp;
    if det.abs() <= 1e-12 * spp * sw || det.is_nan() {
        return None;
    }
    let scale = (spm * sw - sp * sm) / det;
    let offset_ms = (spp * sm - sp * spm) / det;
    (scale.is_finite() && offset_ms.is_finite()).then_some(Correction { scale, offset_ms })
}

/// [`fit_correction`], kept only when it predicts held-out points better than the plain sum:
/// leave-one-out over the calibration points, mean relative error with the correction fitted on
/// the others against without. (Timings that drift during calibration, e.g. on a shared machine,
/// fit a correction that makes predictions worse; then none is stored.)
pub fn fit_validated_correction(sums: &[f64], measured: &[f64]) -> Option<Correction> {
    let full = fit_correction(sums, measured)?;
    let (mut plain, mut corrected) = (0.0, 0.0);
    for i in 0..sums.len() {
        let rest = |v: &[f64]| v.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, x)| *x).collect::<Vec<_>>();
        let c = fit_correction(&rest(sums), &rest(measured))?;
        plain += ((sums[i] - measured[i]) / measured[i]).abs();
        corrected += ((c.apply(sums[i]) - measured[i]) / measured[i]).abs();
    }
    (corrected < plain).then_some(full)
}

/// `count` genomes, each a uniform backbone path and genes drawn from `genes`, all genes given.
pub fn sample_genomes(space: &SearchSpace, genes: &GeneSpace, count: usize, seed: u64) -> Vec<Genome> {
    let mut rng = Rng::seed(seed);
    (0..count)
        .map(|_| {
            let arch = uniform(space, &mut rng);
            let g = genes.sample(&mut rng);
            let genes = GeneOverrides {
                fpn_channels: Some(g.fpn_channels),
                head: Some((g.head_channels, g.head_convs)),
                head_conv: Some(g.head_conv),
                input: Some(g.input),
            };
            Genome { space: space.clone(), arch, genes }
        })
        .collect()
}

/// One checked genome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckSample {
    /// The genome with every gene given (its display form).
    pub genome: String,
    /// The table's plain additive sum of parts, in milliseconds.
    pub additive_ms: f64,
    /// The table's prediction (corrected when it has a correction).
    pub predicted_ms: f64,
    /// Mean end-to-end time of its random-weight detector ([`Runner::detector`]), in milliseconds.
    pub measured_ms: f64,
}

/// The result of [`check_table`]. The top-level metrics are those of the table's prediction
/// (`latency_ms`: corrected when the table has a correction).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// Genomes measured (the `samples` given to [`check_table`]).
    pub samples: usize,
    /// Seed the genomes were drawn with.
    pub seed: u64,
    /// Metrics of the table's prediction (`predicted_ms`); flattened into the report's top level in JSON.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// The plain additive sum.
    pub additive: Metrics,
    /// The corrected prediction, when the table has a correction.
    pub corrected: Option<Metrics>,
    /// Each genome checked, in sampling order.
    pub genomes: Vec<CheckSample>,
}

/// Measures `samples` random genomes (`seed`) end to end with `runner` and compares them with the
/// table's predictions; `log` gets one line per genome.
pub fn check_table(
    table: &LatencyTable,
    space: &SearchSpace,
    samples: usize,
    seed: u64,
    runner: &Runner,
    log: &mut dyn FnMut(&str),
) -> Result<CheckReport> {
    let base = base_config(table.classes, table.shuffle);
    let mut genomes = Vec::new();
    for (i, genome) in sample_genomes(space, &table.genes, samples, seed).iter().enumerate() {
        let cfg = genome.detector_config(&base)?;
        let p = table.predict(space, &genome.arch, &cfg)?;
        let measured_ms = runner.detector(space, &genome.arch, &cfg)?.mean_ms;
        log(&format!(
            "[{}/{samples}] {genome}: predicted {:.2} ms, measured {measured_ms:.2} ms ({:+.1}%)",
            i + 1,
            p.latency_ms,
            100.0 * (p.latency_ms - measured_ms) / measured_ms
        ));
        genomes.push(CheckSample {
            genome: genome.to_string(),
            additive_ms: p.additive_ms,
            predicted_ms: p.latency_ms,
            measured_ms,
        });
    }
    let measured: Vec<f64> = genomes.iter().map(|g| g.measured_ms).collect();
    let additive = metrics(&genomes.iter().map(|g| g.additive_ms).collect::<Vec<_>>(), &measured);
    let predicted = metrics(&genomes.iter().map(|g| g.predicted_ms).collect::<Vec<_>>(), &measured);
    let corrected = table.correction.as_ref().map(|_| predicted.clone());
    Ok(CheckReport { samples, seed, metrics: predicted, additive, corrected, genomes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_an_exact_correction() {
        let measured = [10.0, 20.0, 40.0, 80.0];
        let m = metrics(&[10.5, 25.0, 40.0, 70.0], &measured);
        assert_eq!(m.within_10pct, 0.5);
        assert!((m.mape - 100.0 * (0.05 + 0.25 + 0.0 + 0.125) / 4.0).abs() < 1e-9, "{m:?}");
        assert_eq!(m.kendall_tau, Some(1.0));
        assert_eq!(metrics(&[10.0], &[11.0]).kendall_tau, None, "undefined for one genome");
        // measured = 0.8 sum - 2 exactly
        let sums: Vec<f64> = measured.iter().map(|m| (m + 2.0) / 0.8).collect();
        let c = fit_correction(&sums, &measured).unwrap();
        assert!((c.scale - 0.8).abs() < 1e-9 && (c.offset_ms + 2.0).abs() < 1e-9, "{c:?}");
        assert!(fit_correction(&sums[..2], &measured[..2]).is_none());
        assert!(fit_correction(&[5.0, 5.0, 5.0], &[1.0, 2.0, 3.0]).is_none());
    }

    #[test]
    fn sampled_genomes_use_the_gene_space() {
        let space = SearchSpace::detnas_300m();
        let genes = GeneSpace { input: vec![detnas_core::InputSize::new(128, 128)], ..GeneSpace::default() };
        let a = sample_genomes(&space, &genes, 5, 1);
        assert_eq!(a, sample_genomes(&space, &genes, 5, 1));
        assert_ne!(a, sample_genomes(&space, &genes, 5, 2));
        let base = detnas_core::detector::DetectorConfig::default();
        for g in &a {
            assert!(genes.contains(&g.genes.over(&base)), "{g}");
        }
    }

    #[test]
    fn a_correction_is_kept_only_when_it_predicts_held_out_points_better() {
        let sums = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        let biased: Vec<f64> = sums.iter().map(|s| 1.2 * s + 3.0).collect();
        let c = fit_validated_correction(&sums, &biased).expect("a systematic bias is corrected");
        assert!((c.scale - 1.2).abs() < 1e-9 && (c.offset_ms - 3.0).abs() < 1e-9, "{c:?}");
        // the sum is right on average but the timings drift: a fitted line only adds error
        let drifting = [10.0, 26.0, 24.0, 52.0, 41.0, 66.0];
        assert_eq!(fit_validated_correction(&sums, &drifting), None);
    }
}

//! Validating a table against whole-model measurements: random genomes of the table's gene space,
//! predicted and measured end to end with the table's [`Protocol`] (repetitions interleaved
//! round-robin); the share within ±10%, mean absolute percentage error, RMSE, Kendall's τ, bias
//! and spread, for the additive sum and for the corrected prediction, scored against the mean of
//! the repetitions — beside the ceiling of the measurements themselves ([`super::score`]).

use super::correction;
use super::measure::{Runner, base_config};
use super::protocol::{Drift, Protocol};
use super::score::{BudgetDecisions, Ceiling, Metrics, budget_decisions, ceiling, metrics};
use super::table::{Correction, CorrectionForm, LatencyTable};
use crate::error::Result;
use detnas_core::detector::DetectorConfig;
use detnas_core::rng::Rng;
use detnas_core::search::genome::{GeneOverrides, GeneSpace, Genome};
use detnas_core::space::SearchSpace;
use detnas_core::space::sample::uniform;
use serde::Serialize;

/// `scale` and `offset` minimising the squared *relative* error of `scale * sum + offset` against
/// `measured` ([`correction::fit`] of the affine form).
pub fn fit_correction(sums: &[f64], measured: &[f64]) -> Option<Correction> {
    correction::fit(CorrectionForm::Affine, sums, measured)
}

/// The correction a table keeps: the form that predicts held-out calibration genomes best, or none
/// when the plain sum does ([`correction::choose`]). (Timings that drift during calibration, e.g.
/// on a shared machine, fit corrections that make predictions worse; then none is stored.)
pub fn fit_validated_correction(sums: &[f64], measured: &[f64]) -> Option<Correction> {
    correction::choose(sums, measured, true)
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
    /// The mean of the repetitions of its random-weight detector's model run
    /// ([`Runner::detector`]), in milliseconds.
    pub measured_ms: f64,
    /// Each repetition's mean run time, in the order measured.
    pub repetitions_ms: Vec<f64>,
}

/// The result of [`check_table`]. The top-level metrics are those of the table's prediction
/// (`latency_ms`: corrected when the table has a correction), against the mean of the repetitions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// Genomes measured (the `samples` given to [`check_table`]).
    pub samples: usize,
    /// Seed the genomes were drawn with.
    pub seed: u64,
    /// Repetitions of every measurement (a genome's repetitions still taken in a slow spell are
    /// left out where it has a quiet one: `genomes[..].repetitions_ms` may hold fewer).
    pub repetitions: usize,
    /// Metrics of the table's prediction (`predicted_ms`); flattened into the report's top level in JSON.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// The measurements' own agreement (`repeat_*` at the top level in JSON); `None` for one
    /// repetition.
    #[serde(flatten)]
    pub ceiling: Option<Ceiling>,
    /// The plain additive sum.
    pub additive: Metrics,
    /// The corrected prediction, when the table has a correction.
    pub corrected: Option<Metrics>,
    /// Decisions near a budget, when one was given.
    pub budget: Option<BudgetDecisions>,
    /// The drift reference's timings through the check (`None` when scored from given samples).
    pub drift: Option<Drift>,
    /// Each genome checked, in sampling order.
    pub genomes: Vec<CheckSample>,
}

impl CheckReport {
    /// Scores `genomes` (their predictions and repetitions; every genome the same count of
    /// repetitions): the prediction and the plain sum against the mean of the repetitions, the
    /// ceiling between repetitions, and budget decisions at `budget_ms`.
    pub fn score(seed: u64, genomes: Vec<CheckSample>, corrected: bool, budget_ms: Option<f64>) -> CheckReport {
        let reps: Vec<Vec<f64>> = genomes.iter().map(|g| g.repetitions_ms.clone()).collect();
        let measured: Vec<f64> = genomes.iter().map(|g| g.measured_ms).collect();
        let predicted: Vec<f64> = genomes.iter().map(|g| g.predicted_ms).collect();
        let additive = metrics(&genomes.iter().map(|g| g.additive_ms).collect::<Vec<_>>(), &measured);
        let scored = metrics(&predicted, &measured);
        CheckReport {
            samples: genomes.len(),
            seed,
            repetitions: reps.iter().map(Vec::len).max().unwrap_or(0),
            ceiling: ceiling(&reps),
            corrected: corrected.then(|| scored.clone()),
            metrics: scored,
            additive,
            budget: budget_ms.map(|b| budget_decisions(b, &predicted, &reps)),
            drift: None,
            genomes,
        }
    }

    /// One line when the measurements are too noisy to check the goal of `goal` (share, 0-1)
    /// within ±10%: even a perfect predictor would reach less than `goal` against the mean of
    /// these repetitions (or there is one repetition and no ceiling at all).
    pub fn too_noisy(&self, goal: f64) -> Option<String> {
        let Some(c) = &self.ceiling else {
            return Some("one repetition per genome: no noise ceiling to read the score against; use 3 or more".into());
        };
        (c.perfect_within_10pct < goal).then(|| {
            format!(
                "this machine is too noisy to check a goal of {:.0}% within ±10%: repetitions of the same model vary by \
                 {:.1}% (CV), two agree within ±10% for {:.0}% of genomes, and a perfect predictor would reach only \
                 {:.0}% against the mean of {}",
                100.0 * goal,
                c.repeat_cv_pct,
                100.0 * c.repeat_within_10pct,
                100.0 * c.perfect_within_10pct,
                self.repetitions
            )
        })
    }
}

/// Measures `samples` random genomes (`seed`) end to end with `runner` under `protocol`
/// (repetitions round-robin over the genomes, a fresh session each, the stem at the table's first
/// resolution as drift reference with `drift_tolerance_pct`) and scores the table's predictions
/// against them ([`CheckReport::score`], budget decisions at `budget_ms`); `log` gets one line per
/// measurement.
pub fn check_table(
    table: &LatencyTable,
    space: &SearchSpace,
    (samples, seed): (usize, u64),
    (runner, protocol, drift_tolerance_pct): (&Runner, &Protocol, f64),
    budget_ms: Option<f64>,
    log: &mut dyn FnMut(&str),
) -> Result<CheckReport> {
    protocol.validate()?;
    let base = base_config(table.classes, table.shuffle);
    let genomes = sample_genomes(space, &table.genes, samples, seed);
    let mut planned = Vec::new();
    for genome in &genomes {
        let cfg = genome.detector_config(&base)?;
        let p = table.predict(space, &genome.arch, &cfg)?;
        planned.push((cfg, p));
    }
    let runner = Runner { timing: protocol.plan, ..runner.clone() };
    let stem = DetectorConfig { input: table.genes.input[0], ..base.clone() };
    let mut reference = runner.stem_reference(space, &stem, drift_tolerance_pct, None);
    let models: Vec<_> = genomes.iter().zip(&planned).map(|(g, (cfg, _))| (&g.arch, cfg)).collect();
    let (measured, drift) = runner.detectors(space, &models, protocol, &mut reference, &mut |round, i, l| {
        let predicted = planned[i].1.latency_ms;
        log(&format!(
            "round {}/{} [{}/{samples}] {}: predicted {predicted:.2} ms, measured {:.2} ms ({:+.1}%)",
            round + 1,
            protocol.repetitions,
            i + 1,
            genomes[i],
            l.mean_ms,
            100.0 * (predicted - l.mean_ms) / l.mean_ms
        ))
    })?;
    let samples = genomes
        .iter()
        .zip(&planned)
        .zip(measured)
        .map(|((genome, (_, p)), m)| CheckSample {
            genome: genome.to_string(),
            additive_ms: p.additive_ms,
            predicted_ms: p.latency_ms,
            measured_ms: super::protocol::repetition_mean(&m),
            repetitions_ms: m.repetitions_ms,
        })
        .collect();
    let mut report = CheckReport::score(seed, samples, table.correction.is_some(), budget_ms);
    report.repetitions = protocol.repetitions;
    report.drift = Some(drift);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Few-shot tables for a new device or setting: instead of the ~100 sub-graphs of a build, a
//! handful of whole genomes measured end to end on the new target refit the correction of the
//! base table's additive sum (`scale × sum + offset`). The base table's parts keep the *shape* of
//! the latency (which block, width or resolution costs more); the new measurements set its level
//! on the target. The adapted table carries the target's fingerprint and names its base.

use super::build::calibration_points;
use super::check::sample_genomes;
use super::measure::{Runner, base_config};
use super::protocol::Protocol;
use super::table::{Correction, CorrectionForm, LatencyTable};
use crate::error::{InferError, Result};
use crate::fingerprint::{Fingerprint, Precision};
use detnas_core::detector::DetectorConfig;
use detnas_core::space::SearchSpace;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// Fewest genomes an adaptation fits on (two parameters, and one more to see the fit's error).
pub const MIN_ADAPT_SAMPLES: usize = 3;

/// Where an adapted table came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adapted {
    /// The base table's content hash.
    pub base_hash: String,
    /// The base table's fingerprint (the device its parts were measured on).
    pub base_fingerprint: Fingerprint,
    /// Genomes measured on the target (the table's `calibration`).
    pub samples: usize,
}

/// What an adaptation measures.
pub struct AdaptOptions<'a> {
    /// The target: device, threads and precision (the base table's precision is kept: a table
    /// of another precision is another base).
    pub runner: &'a Runner,
    /// How every genome is measured.
    pub protocol: Protocol,
    /// Genomes measured end to end (at least [`MIN_ADAPT_SAMPLES`]).
    pub samples: usize,
    /// Seed of the genomes (recorded as the table's calibration seed).
    pub seed: u64,
    /// Drift tolerance of the measurements ([`Drift`]).
    pub drift_tolerance_pct: f64,
}

/// The base table adapted to `opts.runner`'s device and threads: `samples` random genomes of its
/// gene space measured there, and the correction of its additive sum refitted on them (least
/// squares on the relative error; a plain ratio when the sums do not vary). `log` gets one line
/// per measurement.
pub fn adapt_table(base: &LatencyTable, opts: &AdaptOptions<'_>, log: &mut dyn FnMut(&str)) -> Result<LatencyTable> {
    if opts.samples < MIN_ADAPT_SAMPLES {
        let m = format!("{} samples: adapting a table fits on at least {MIN_ADAPT_SAMPLES} genomes", opts.samples);
        return Err(InferError::Config(m));
    }
    if Precision::parse(&base.fingerprint.precision)? != opts.runner.precision {
        let m = format!(
            "a {} table adapts to {} timings only: adapt a table of the target's precision, or build one",
            base.fingerprint.precision, base.fingerprint.precision
        );
        return Err(InferError::Config(m));
    }
    opts.protocol.validate()?;
    let space = SearchSpace::by_name(&base.space)?;
    let genomes = sample_genomes(&space, &base.genes, opts.samples, opts.seed);
    // measured as the base was: its post-processing load
    let runner =
        Runner { timing: opts.protocol.plan, detections: base.detections, layout: base.layout, ..opts.runner.clone() };
    let stem = DetectorConfig { input: base.genes.input[0], ..base_config(base.classes, base.shuffle) };
    // the provider that ran, from the reference's sessions (the target's fingerprint names it)
    let provider = RefCell::new(String::new());
    let mut reference = runner.stem_reference(&space, &stem, opts.drift_tolerance_pct, Some(&provider));
    let (calibration, drift) = calibration_points(base, &genomes, (&runner, &opts.protocol, &mut reference), log)?;
    drop(reference);
    let (sums, times): (Vec<f64>, Vec<f64>) = calibration.iter().map(|c| (c.additive_ms, c.measured_ms)).unzip();
    // the base's parts were measured elsewhere: some correction always, the form held-out points choose
    let correction = super::correction::choose(&sums, &times, false).unwrap_or_else(|| {
        let ratios: Vec<f64> = sums.iter().zip(&times).map(|(s, t)| t / s).collect();
        Correction { scale: super::protocol::median(&ratios), offset_ms: 0.0, form: CorrectionForm::Scale }
    });
    let provider = provider.into_inner();
    let mut table = base.clone();
    table.fingerprint = opts.runner.fingerprint(&provider)?;
    table.timing = opts.protocol.plan;
    table.repetitions = opts.protocol.repetitions;
    table.correction = Some(correction);
    table.calibration_seed = opts.seed;
    table.calibration = calibration;
    table.calibration_drift = Some(drift);
    table.adapted = Some(Adapted {
        base_hash: base.hash.clone(),
        base_fingerprint: base.fingerprint.clone(),
        samples: opts.samples,
    });
    table.hash = String::new();
    Ok(table)
}

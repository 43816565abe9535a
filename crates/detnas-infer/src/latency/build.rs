//! Building a latency table: every part at every resolution of the gene space, then calibration
//! genomes measured end to end and the correction fitted on them — all with the measurement
//! [`Protocol`], and a drift reference (the stem at the first resolution) timed throughout so
//! that the table records how much the machine itself moved while it was measured.

use super::check::{fit_validated_correction, sample_genomes};
use super::measure::{Runner, base_config};
use super::protocol::{Protocol, spread_pct};
use super::table::{CalibrationPoint, Drift, LatencyTable, TABLE_FORMAT, TABLE_VERSION, table_parts};
use crate::error::{InferError, Result};
use crate::fingerprint::Fingerprint;
use detnas_core::detector::DetectorConfig;
use detnas_core::search::genome::GeneSpace;
use detnas_core::space::{ChannelShuffle, SearchSpace};
use detnas_onnx::Part;
use std::collections::BTreeMap;

/// Parts measured between two timings of the drift reference.
pub const REFERENCE_EVERY: usize = 8;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Search space whose blocks are measured; its name becomes the table's `space`.
    pub space: SearchSpace,
    /// Gene values to cover; `input` gives the resolutions.
    pub genes: GeneSpace,
    /// Classes of the measured predictors ([`base_config`]); predictions need the same count.
    pub classes: usize,
    /// Channel shuffle of the measured blocks; predictions need the same.
    pub shuffle: ChannelShuffle,
    /// Device, threads and timing plan of one repetition of every measurement; the table records
    /// its fingerprint and plan.
    pub runner: Runner,
    /// Repetitions of every measurement ([`Protocol`]), recorded in the table.
    pub repetitions: usize,
    /// Refuse the build when the drift reference moved more than this (percent: (slowest −
    /// fastest) / median of its timings); `None`: record the drift only.
    pub max_drift_pct: Option<f64>,
    /// Genomes measured end to end to fit the correction (none: no correction; at least 3 to fit).
    pub calibration: usize,
    /// Seed of the calibration genomes, recorded in the table (held-out checks should use another).
    pub calibration_seed: u64,
}

/// Measures every part, then the calibration genomes, each with the protocol's repetitions
/// interleaved round-robin (parts of every resolution in one round) and a fresh session per
/// repetition; the drift reference is timed before every [`REFERENCE_EVERY`] parts. `log` gets
/// one line per measurement. Fails when the reference drifted more than `max_drift_pct`.
pub fn build_table(opts: &BuildOptions, log: &mut dyn FnMut(&str)) -> Result<LatencyTable> {
    let base = base_config(opts.classes, opts.shuffle);
    opts.genes.validate(&base)?;
    let protocol = Protocol { repetitions: opts.repetitions, plan: opts.runner.timing };
    protocol.validate()?;
    let mut all = Vec::new();
    for &input in &opts.genes.input {
        let cfg = DetectorConfig { input, ..base.clone() };
        for (key, part) in table_parts(&opts.space, &opts.genes, &cfg)? {
            all.push((input.to_string(), key, cfg.clone(), part));
        }
    }
    let reference_cfg = DetectorConfig { input: opts.genes.input[0], ..base.clone() };
    let mut drift = Drift { reference: format!("stem {}", reference_cfg.input), times_ms: Vec::new(), drift_pct: 0.0 };
    let mut provider = None;
    let start = std::time::Instant::now();
    let measured = protocol.round_robin(
        all.len(),
        |i| {
            if i % REFERENCE_EVERY == 0 {
                let (l, _) = opts.runner.part(&opts.space, &reference_cfg, &Part::Stem)?;
                drift.times_ms.push(l.p50_ms);
            }
            let (_, _, cfg, part) = &all[i];
            let (latency, p) = opts.runner.part(&opts.space, cfg, part)?;
            provider.get_or_insert(p);
            Ok::<_, InferError>(latency)
        },
        &mut |round, i, l| {
            let (input, key, _, _) = &all[i];
            let n = (round + 1, protocol.repetitions, i + 1, all.len());
            log(&format!(
                "round {}/{} [{}/{}] {input} {key}: mean {:.3} ms, p50 {:.3} ms",
                n.0, n.1, n.2, n.3, l.mean_ms, l.p50_ms
            ));
        },
    )?;
    log(&format!(
        "{} parts x {} repetitions in {:.1} s",
        all.len(),
        protocol.repetitions,
        start.elapsed().as_secs_f64()
    ));
    drift.drift_pct = spread_pct(&drift.times_ms);
    let mut entries: BTreeMap<String, BTreeMap<String, _>> = BTreeMap::new();
    for ((input, key, _, _), latency) in all.into_iter().zip(measured) {
        entries.entry(input).or_default().insert(key, latency);
    }
    let provider = provider.unwrap_or_default();
    let mut table = LatencyTable {
        format: TABLE_FORMAT.into(),
        version: TABLE_VERSION,
        hash: String::new(),
        space: opts.space.name.clone(),
        classes: opts.classes,
        shuffle: opts.shuffle,
        fingerprint: Fingerprint::current(opts.runner.device, opts.runner.threads, &provider, opts.runner.precision),
        genes: opts.genes.clone(),
        timing: opts.runner.timing,
        repetitions: protocol.repetitions,
        entries,
        drift: Some(drift),
        correction: None,
        calibration_seed: opts.calibration_seed,
        calibration: Vec::new(),
        source: String::new(),
    };
    calibrate(&mut table, opts, &protocol, log)?;
    let drift = table.drift.as_ref().expect("drift recorded");
    if let Some(max) = opts.max_drift_pct
        && drift.drift_pct > max
    {
        return Err(InferError::Config(format!(
            "the drift reference ({}) moved by {:.0}% during the build (tolerance {max}%): the machine was not \
             quiet enough; build again when it is, or allow more with --max-drift",
            drift.reference, drift.drift_pct
        )));
    }
    Ok(table)
}

/// Measures the calibration genomes end to end (round-robin) and fits the table's correction.
fn calibrate(
    table: &mut LatencyTable,
    opts: &BuildOptions,
    protocol: &Protocol,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let base = base_config(opts.classes, opts.shuffle);
    let genomes = sample_genomes(&opts.space, &opts.genes, opts.calibration, opts.calibration_seed);
    let mut planned = Vec::new();
    for genome in &genomes {
        let cfg = genome.detector_config(&base)?;
        let additive_ms = table.predict(&opts.space, &genome.arch, &cfg)?.additive_ms;
        planned.push((cfg, additive_ms));
    }
    let measured = protocol.round_robin(
        genomes.len(),
        |i| opts.runner.detector(&opts.space, &genomes[i].arch, &planned[i].0),
        &mut |round, i, l| {
            log(&format!(
                "calibration round {}/{} [{}/{}] {}: sum {:.2} ms, measured {:.2} ms",
                round + 1,
                protocol.repetitions,
                i + 1,
                genomes.len(),
                genomes[i],
                planned[i].1,
                l.mean_ms
            ))
        },
    )?;
    for ((genome, (_, additive_ms)), m) in genomes.iter().zip(planned).zip(measured) {
        table.calibration.push(CalibrationPoint { genome: genome.to_string(), additive_ms, measured_ms: m.mean_ms });
    }
    let (sums, measured): (Vec<f64>, Vec<f64>) =
        table.calibration.iter().map(|c| (c.additive_ms, c.measured_ms)).unzip();
    table.correction = fit_validated_correction(&sums, &measured);
    Ok(())
}

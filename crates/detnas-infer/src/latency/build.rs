//! Building a latency table: every part at every resolution of the gene space, then calibration
//! genomes measured end to end and the correction fitted on them — all with the measurement
//! [`Protocol`], and a drift reference (the stem at the first resolution) timed throughout so
//! that the table records how much the machine itself moved while it was measured.

use super::check::{fit_validated_correction, sample_genomes};
use super::measure::{Runner, base_config};
use super::protocol::{Drift, Protocol, Reference};
use super::table::{CalibrationPoint, LatencyTable, TABLE_FORMAT, TABLE_VERSION, table_parts};
use crate::error::{InferError, Result};
use detnas_core::detector::DetectorConfig;
use detnas_core::search::genome::{GeneSpace, Genome};
use detnas_core::space::{ChannelShuffle, SearchSpace};
use std::collections::BTreeMap;

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
    /// Measurements taken while the drift reference was more than this many percent off its
    /// median are measured again ([`Drift`]).
    pub drift_tolerance_pct: f64,
    /// Refuse the build when measurements are still disturbed after the re-measurement passes.
    pub strict_drift: bool,
    /// Genomes measured end to end to fit the correction (none: no correction; at least 3 to fit).
    pub calibration: usize,
    /// Seed of the calibration genomes, recorded in the table (held-out checks should use another).
    pub calibration_seed: u64,
}

/// Measures every part, then the calibration genomes, each with the protocol's repetitions
/// interleaved round-robin (parts of every resolution in one round), a fresh session per
/// repetition, and the drift reference (the stem at the first resolution) timed throughout;
/// measurements in a disturbed stretch are measured again ([`Protocol::round_robin`]). `log` gets
/// one line per measurement. Fails under `strict_drift` when measurements are still disturbed.
pub fn build_table(opts: &BuildOptions, log: &mut dyn FnMut(&str)) -> Result<LatencyTable> {
    let base = base_config(opts.classes, opts.shuffle);
    opts.genes.validate(&base)?;
    let protocol = Protocol { repetitions: opts.repetitions, plan: opts.runner.timing };
    protocol.validate()?;
    let mut all = Vec::new();
    for &input in &opts.genes.input {
        let cfg = DetectorConfig { input, ..base.clone() };
        for (key, part) in table_parts(&opts.space, &opts.genes, &cfg, opts.runner.layout)? {
            all.push((input.to_string(), key, cfg.clone(), part));
        }
    }
    let reference_cfg = DetectorConfig { input: opts.genes.input[0], ..base.clone() };
    let mut provider = None;
    let start = std::time::Instant::now();
    let (measured, drift) = protocol.round_robin(
        all.len(),
        |i| {
            let (_, _, cfg, part) = &all[i];
            let (latency, p) = opts.runner.part(&opts.space, cfg, part)?;
            provider.get_or_insert(p);
            Ok::<_, InferError>(latency)
        },
        &mut opts.runner.stem_reference(&opts.space, &reference_cfg, opts.drift_tolerance_pct, None),
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
        "{} parts x {} repetitions in {:.1} s ({} measured again in slow spells)",
        all.len(),
        protocol.repetitions,
        start.elapsed().as_secs_f64(),
        drift.remeasured
    ));
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
        fingerprint: opts.runner.fingerprint(&provider)?,
        genes: opts.genes.clone(),
        timing: opts.runner.timing,
        repetitions: protocol.repetitions,
        detections: opts.runner.detections,
        layout: opts.runner.layout,
        entries,
        drift: Some(drift),
        calibration_drift: None,
        correction: None,
        calibration_seed: opts.calibration_seed,
        calibration: Vec::new(),
        adapted: None,
        source: String::new(),
    };
    table.calibration_drift = calibrate(&mut table, opts, &protocol, log)?;
    let disturbed: usize =
        [&table.drift, &table.calibration_drift].iter().filter_map(|d| d.as_ref()).map(|d| d.disturbed).sum();
    if opts.strict_drift && disturbed > 0 {
        return Err(InferError::Config(format!(
            "{disturbed} measurement(s) were still taken in slow spells of this machine after {} passes (the drift \
             reference was more than {}% above its fastest): build again when the machine is quieter",
            Drift::PASSES,
            opts.drift_tolerance_pct
        )));
    }
    Ok(table)
}

/// Measures the calibration genomes end to end (round-robin) and fits the table's correction;
/// returns the drift seen (`None` without calibration genomes).
fn calibrate(
    table: &mut LatencyTable,
    opts: &BuildOptions,
    protocol: &Protocol,
    log: &mut dyn FnMut(&str),
) -> Result<Option<Drift>> {
    let genomes = sample_genomes(&opts.space, &opts.genes, opts.calibration, opts.calibration_seed);
    if genomes.is_empty() {
        return Ok(None);
    }
    let stem = DetectorConfig { input: opts.genes.input[0], ..base_config(opts.classes, opts.shuffle) };
    let mut reference = opts.runner.stem_reference(&opts.space, &stem, opts.drift_tolerance_pct, None);
    let (points, drift) = calibration_points(table, &genomes, (&opts.runner, protocol, &mut reference), log)?;
    table.calibration = points;
    let (sums, measured): (Vec<f64>, Vec<f64>) =
        table.calibration.iter().map(|c| (c.additive_ms, c.measured_ms)).unzip();
    table.correction = fit_validated_correction(&sums, &measured);
    Ok(Some(drift))
}

/// `genomes` measured end to end with `runner` under `protocol` (round-robin, with `reference`)
/// beside their plain additive sum in `table`: the points a correction is fitted on, and the drift
/// seen. `log` gets one line per measurement.
pub(super) fn calibration_points(
    table: &LatencyTable,
    genomes: &[Genome],
    (runner, protocol, reference): (&Runner, &Protocol, &mut Reference<'_, InferError>),
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<CalibrationPoint>, Drift)> {
    let space = SearchSpace::by_name(&table.space)?;
    let base = base_config(table.classes, table.shuffle);
    let mut planned = Vec::new();
    for genome in genomes {
        let cfg = genome.detector_config(&base)?;
        let additive_ms = table.predict(&space, &genome.arch, &cfg)?.additive_ms;
        planned.push((cfg, additive_ms));
    }
    let models: Vec<_> = genomes.iter().zip(&planned).map(|(g, (cfg, _))| (&g.arch, cfg)).collect();
    let (measured, drift) = runner.detectors(&space, &models, protocol, reference, &mut |round, i, l| {
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
    })?;
    let points = genomes
        .iter()
        .zip(planned)
        .zip(measured)
        .map(|((genome, (_, additive_ms)), m)| CalibrationPoint {
            genome: genome.to_string(),
            additive_ms,
            measured_ms: m.mean_ms,
        })
        .collect();
    Ok((points, drift))
}

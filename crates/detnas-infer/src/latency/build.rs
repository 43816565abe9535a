//! Building a latency table: every part at every resolution of the gene space, then calibration
//! genomes measured end to end and the correction fitted on them.

use super::check::{fit_validated_correction, sample_genomes};
use super::measure::{Runner, base_config};
use super::table::{CalibrationPoint, LatencyTable, TABLE_FORMAT, TABLE_VERSION, table_parts};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use detnas_core::search::genome::GeneSpace;
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
    /// Device, threads and timing plan of every measurement; the table records its fingerprint and plan.
    pub runner: Runner,
    /// Genomes measured end to end to fit the correction (none: no correction; at least 3 to fit).
    pub calibration: usize,
    /// Seed of the calibration genomes, recorded in the table (held-out checks should use another).
    pub calibration_seed: u64,
}

/// Measures every part, then the calibration genomes; `log` gets one line per step.
pub fn build_table(opts: &BuildOptions, log: &mut dyn FnMut(&str)) -> Result<LatencyTable> {
    let base = base_config(opts.classes, opts.shuffle);
    opts.genes.validate(&base)?;
    let mut entries = BTreeMap::new();
    let mut provider = None;
    for &input in &opts.genes.input {
        let cfg = detnas_core::detector::DetectorConfig { input, ..base.clone() };
        let parts = table_parts(&opts.space, &opts.genes, &cfg)?;
        let mut at = BTreeMap::new();
        let start = std::time::Instant::now();
        for (i, (key, part)) in parts.iter().enumerate() {
            let (latency, p) = opts.runner.part(&opts.space, &cfg, part)?;
            log(&format!(
                "{input} [{}/{}] {key}: mean {:.3} ms, p50 {:.3} ms",
                i + 1,
                parts.len(),
                latency.mean_ms,
                latency.p50_ms
            ));
            provider.get_or_insert(p);
            at.insert(key.clone(), latency);
        }
        log(&format!("{input}: {} parts in {:.1} s", parts.len(), start.elapsed().as_secs_f64()));
        entries.insert(input.to_string(), at);
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
        entries,
        correction: None,
        calibration_seed: opts.calibration_seed,
        calibration: Vec::new(),
        source: String::new(),
    };
    for (i, genome) in
        sample_genomes(&opts.space, &opts.genes, opts.calibration, opts.calibration_seed).iter().enumerate()
    {
        let cfg = genome.detector_config(&base)?;
        let additive_ms = table.predict(&opts.space, &genome.arch, &cfg)?.additive_ms;
        let measured_ms = opts.runner.detector(&opts.space, &genome.arch, &cfg)?.mean_ms;
        log(&format!(
            "calibration [{}/{}] {genome}: sum {additive_ms:.2} ms, measured {measured_ms:.2} ms",
            i + 1,
            opts.calibration
        ));
        table.calibration.push(CalibrationPoint { genome: genome.to_string(), additive_ms, measured_ms });
    }
    let (sums, measured): (Vec<f64>, Vec<f64>) =
        table.calibration.iter().map(|c| (c.additive_ms, c.measured_ms)).unzip();
    table.correction = fit_validated_correction(&sums, &measured);
    Ok(table)
}

//! A latency table as a search constraint: the predictor over candidates, the fastest reachable
//! latency (so that an impossible budget says what is possible), and the fingerprint check.

use anyhow::{Result, bail};
use detnas_core::detector::DetectorConfig;
use detnas_core::search::evolution::LatencyConstraint;
use detnas_core::search::genome::{Candidate, DetectorGenes, GeneSpace};
use detnas_core::{Arch, InputSize, SearchSpace};
use detnas_infer::LatencyTable;
use std::collections::HashMap;

/// Predicted milliseconds of `candidate` (its genes over `base`).
pub fn predict(table: &LatencyTable, space: &SearchSpace, base: &DetectorConfig, c: &Candidate) -> Result<f64> {
    Ok(table.predict(space, &c.arch, &c.detector_config(base))?.latency_ms)
}

/// The constraint `predicted latency <= max_ms`; the table's hash and fingerprint name its source.
pub fn constraint<'a>(
    table: &'a LatencyTable,
    space: &'a SearchSpace,
    base: &'a DetectorConfig,
    max_ms: f64,
) -> LatencyConstraint<'a> {
    LatencyConstraint {
        predict: Box::new(move |c| predict(table, space, base, c).map_err(|e| e.to_string())),
        max_ms,
        source: format!("table {} on {}", table.hash, table.fingerprint.cpu),
    }
}

/// The fastest backbone at `cfg`'s input: the fastest choice of every layer (blocks add up).
fn fastest_arch(table: &LatencyTable, space: &SearchSpace, cfg: &DetectorConfig) -> Result<Arch> {
    let per_choice: Vec<Vec<f64>> = space
        .allowed
        .iter()
        .map(|&c| Ok(table.predict(space, &Arch::uniform(space, c), cfg)?.blocks_ms))
        .collect::<Result<_>>()?;
    let choices = (0..space.num_layers())
        .map(|l| {
            let best = (0..space.allowed.len()).min_by(|&a, &b| per_choice[a][l].total_cmp(&per_choice[b][l]));
            space.allowed[best.expect("a space allows a choice")]
        })
        .collect();
    Ok(Arch::new(choices))
}

/// The fastest candidate of the search (backbone, and every gene combination of `genes`) with its
/// predicted latency.
pub fn fastest(
    table: &LatencyTable,
    space: &SearchSpace,
    genes: Option<&GeneSpace>,
    base: &DetectorConfig,
) -> Result<(Candidate, f64)> {
    let combos: Vec<Option<DetectorGenes>> = match genes {
        Some(g) => g.combinations().into_iter().map(Some).collect(),
        None => vec![None],
    };
    // blocks add up, so the fastest backbone depends on the input alone
    let mut fastest_by_input: HashMap<InputSize, Arch> = HashMap::new();
    let mut best: Option<(Candidate, f64)> = None;
    for genes in combos {
        let cfg = genes.map_or_else(|| base.clone(), |g| g.apply(base));
        let arch = match fastest_by_input.get(&cfg.input) {
            Some(a) => a.clone(),
            None => {
                let a = fastest_arch(table, space, &cfg)?;
                fastest_by_input.insert(cfg.input, a.clone());
                a
            }
        };
        let c = match genes {
            Some(g) => Candidate::joint(arch, g),
            None => Candidate::backbone(arch),
        };
        let ms = predict(table, space, base, &c)?;
        if best.as_ref().is_none_or(|(_, b)| ms < *b) {
            best = Some((c, ms));
        }
    }
    Ok(best.expect("at least one combination"))
}

/// Fails when no candidate can meet `max_ms`, naming the fastest one.
pub fn check_feasible(
    table: &LatencyTable,
    space: &SearchSpace,
    genes: Option<&GeneSpace>,
    base: &DetectorConfig,
    max_ms: f64,
) -> Result<()> {
    let (c, ms) = fastest(table, space, genes, base)?;
    if ms > max_ms {
        bail!(
            "no candidate of {} runs within {max_ms} ms by {}: the fastest, {c}, is predicted at {ms:.2} ms",
            space.name,
            table.source
        );
    }
    Ok(())
}

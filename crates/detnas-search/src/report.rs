//! The files a search leaves in its folder: `candidates.csv`/`.json`, `pareto.csv`, `pareto.png`
//! and `best.json`, from the search state's evaluation log.

use crate::plot::pareto_png;
use anyhow::Result;
use detnas_core::detector::{DetectorConfig, detector_flops};
use detnas_core::search::evolution::EvolutionState;
use detnas_core::search::genome::Candidate;
use detnas_core::search::pareto::{CandidateRow, write_report};
use detnas_core::{Convention, SearchSpace, space::cost::cost};
use std::collections::BTreeMap;
use std::path::Path;

/// Predicted milliseconds of a candidate.
pub type Predict<'a> = &'a dyn Fn(&Candidate) -> Result<f64>;

/// One row per evaluation: FLOPs at the candidate's own input, predicted latency where a predictor
/// is given, measured latency where one was taken (by candidate key).
/// `scored_by` names the fitness.
pub fn rows(
    state: &EvolutionState,
    (space, base): (&SearchSpace, &DetectorConfig),
    predict: Option<Predict<'_>>,
    measured: &BTreeMap<String, f64>,
    scored_by: &str,
) -> Result<Vec<CandidateRow>> {
    state
        .log
        .iter()
        .map(|e| {
            let c = &e.candidate;
            let cfg = c.detector_config(base);
            let backbone_flops = cost(space, &c.arch, cfg.input)?.flops(Convention::Backbone);
            Ok(CandidateRow {
                candidate: c.to_string(),
                generation: e.generation,
                backbone_flops,
                detector_flops: detector_flops(space, &c.arch, &cfg)?.total,
                predicted_ms: predict.map(|p| p(c)).transpose()?,
                measured_ms: measured.get(&c.key()).copied(),
                fitness: e.fitness,
                scored_by: scored_by.to_string(),
            })
        })
        .collect()
}

/// Writes every report file into `dir` (`best`: the selected candidate's text, if any) and returns
/// the Pareto front (indices into `rows`).
pub fn write(
    dir: &Path,
    title: &str,
    rows: &[CandidateRow],
    best: Option<&str>,
    references: &[(String, f64, f64)],
) -> Result<Vec<usize>> {
    let front = write_report(dir, rows, best)?;
    pareto_png(&dir.join("pareto.png"), title, rows, references)?;
    Ok(front)
}

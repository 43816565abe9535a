//! What a search leaves for its user: every evaluated candidate with its costs and fitness, the
//! Pareto front of fitness against cost, and the best candidate — as CSV and JSON files.

use crate::error::{CoreError, Result};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluated candidate of a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRow {
    /// Text form of the candidate (see [`crate::genome::Candidate`]).
    pub candidate: String,
    pub generation: usize,
    /// Backbone FLOPs (the DetNAS convention) at the candidate's input.
    pub backbone_flops: u64,
    /// FLOPs of the whole detector.
    pub detector_flops: u64,
    /// Latency predicted by a latency table, in milliseconds.
    pub predicted_ms: Option<f64>,
    /// Latency measured on the device, in milliseconds.
    pub measured_ms: Option<f64>,
    pub fitness: f64,
}

impl CandidateRow {
    /// The cost the front is drawn against: measured latency, else predicted latency, else
    /// detector FLOPs (in GFLOPs); with its axis label.
    pub fn cost(&self) -> (f64, &'static str) {
        match (self.measured_ms, self.predicted_ms) {
            (Some(m), _) => (m, "latency (ms)"),
            (None, Some(p)) => (p, "latency (ms)"),
            (None, None) => (self.detector_flops as f64 / 1e9, "detector GFLOPs"),
        }
    }
}

/// Indices of the Pareto-optimal rows (no other row is at most as costly and at least as fit, and
/// strictly better in one), sorted by increasing cost. Ties keep the first row.
pub fn pareto_front(rows: &[CandidateRow]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        rows[a].cost().0.total_cmp(&rows[b].cost().0).then(rows[b].fitness.total_cmp(&rows[a].fitness)).then(a.cmp(&b))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if rows[i].fitness > best {
            best = rows[i].fitness;
            front.push(i);
        }
    }
    front
}

fn csv_field(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x:.4}"))
}

/// The rows as CSV with a header line.
pub fn to_csv(rows: &[&CandidateRow]) -> String {
    let mut out = String::from("candidate,generation,backbone_flops,detector_flops,predicted_ms,measured_ms,fitness\n");
    for r in rows {
        out.push_str(&format!(
            "\"{}\",{},{},{},{},{},{:.6}\n",
            r.candidate.replace('"', "\"\""),
            r.generation,
            r.backbone_flops,
            r.detector_flops,
            csv_field(r.predicted_ms),
            csv_field(r.measured_ms),
            r.fitness
        ));
    }
    out
}

/// Writes `candidates.csv`, `candidates.json`, `pareto.csv` and `best.json` (the fittest row, first
/// in case of ties) into `dir`, each atomically. Returns the front (indices into `rows`).
pub fn write_report(dir: &Path, rows: &[CandidateRow]) -> Result<Vec<usize>> {
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    let all: Vec<&CandidateRow> = rows.iter().collect();
    write_atomic(&dir.join("candidates.csv"), to_csv(&all).as_bytes())?;
    write_atomic(&dir.join("candidates.json"), &pretty(&rows))?;
    let front = pareto_front(rows);
    let on_front: Vec<&CandidateRow> = front.iter().map(|&i| &rows[i]).collect();
    write_atomic(&dir.join("pareto.csv"), to_csv(&on_front).as_bytes())?;
    let best = rows.iter().enumerate().max_by(|a, b| a.1.fitness.total_cmp(&b.1.fitness).then(b.0.cmp(&a.0)));
    if let Some((_, best)) = best {
        write_atomic(&dir.join("best.json"), &pretty(best))?;
    }
    Ok(front)
}

fn pretty(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("rows serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(candidate: &str, ms: f64, fitness: f64) -> CandidateRow {
        CandidateRow {
            candidate: candidate.into(),
            generation: 0,
            backbone_flops: 1,
            detector_flops: 2,
            predicted_ms: Some(ms),
            measured_ms: None,
            fitness,
        }
    }

    #[test]
    fn the_front_holds_exactly_the_undominated_rows() {
        let rows = vec![
            row("a", 10.0, 0.30),
            row("b", 12.0, 0.25), // dominated by a
            row("c", 20.0, 0.40),
            row("d", 5.0, 0.10),
            row("e", 20.0, 0.35), // same cost as c, less fit
            row("f", 30.0, 0.40), // as fit as c, more costly
        ];
        assert_eq!(pareto_front(&rows), [3, 0, 2]);
        let dir = tempfile::tempdir().unwrap();
        write_report(dir.path(), &rows).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("pareto.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.lines().nth(1).unwrap().starts_with("\"d\",0,1,2,5.0000,,"), "{csv}");
        let best: CandidateRow = serde_json::from_slice(&std::fs::read(dir.path().join("best.json")).unwrap()).unwrap();
        assert_eq!(best.candidate, "c");
        let all: Vec<CandidateRow> =
            serde_json::from_slice(&std::fs::read(dir.path().join("candidates.json")).unwrap()).unwrap();
        assert_eq!(all, rows);
    }
}

//! What a search leaves for its user: every evaluated candidate with its costs and fitness, the
//! Pareto front of fitness against cost, and the best candidate — as CSV and JSON files.

use crate::error::{CoreError, Result};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluated candidate of a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRow {
    /// Text form of the candidate (see [`crate::search::genome::Candidate`]).
    pub candidate: String,
    /// The generation that evaluated the candidate.
    pub generation: usize,
    /// Backbone FLOPs (the DetNAS convention) at the candidate's input.
    pub backbone_flops: u64,
    /// FLOPs of the whole detector.
    pub detector_flops: u64,
    /// Latency predicted by a latency table, in milliseconds.
    pub predicted_ms: Option<f64>,
    /// Latency measured on the device, in milliseconds.
    pub measured_ms: Option<f64>,
    /// Fitness of the candidate.
    pub fitness: f64,
    /// The fitness that scored it (`supernet`, `madnas`, `zen`, `params`, `flops`).
    #[serde(default = "supernet")]
    pub scored_by: String,
}

/// What searches before the `scored_by` column ranked with.
fn supernet() -> String {
    "supernet".into()
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
    let mut out =
        String::from("candidate,generation,backbone_flops,detector_flops,predicted_ms,measured_ms,fitness,scored_by\n");
    for r in rows {
        out.push_str(&format!(
            "\"{}\",{},{},{},{},{},{:.6},{}\n",
            r.candidate.replace('"', "\"\""),
            r.generation,
            r.backbone_flops,
            r.detector_flops,
            csv_field(r.predicted_ms),
            csv_field(r.measured_ms),
            r.fitness,
            r.scored_by
        ));
    }
    out
}

/// The files [`write_report`] writes.
pub const REPORT_FILES: [&str; 4] = ["candidates.csv", "candidates.json", "pareto.csv", "best.json"];

/// Writes `candidates.csv`, `candidates.json`, `pareto.csv` and `best.json` (the row of candidate
/// `best`, the search's choice; removed when there is none) into `dir`, each atomically, after
/// listing them in the folder's ownership record (when it has one). Returns the front (indices
/// into `rows`).
pub fn write_report(dir: &Path, rows: &[CandidateRow], best: Option<&str>) -> Result<Vec<usize>> {
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    crate::owner::note(dir, &REPORT_FILES.map(String::from))
        .map_err(|e| CoreError::io(dir, std::io::Error::other(e.to_string())))?;
    let all: Vec<&CandidateRow> = rows.iter().collect();
    write_atomic(&dir.join("candidates.csv"), to_csv(&all).as_bytes())?;
    write_atomic(&dir.join("candidates.json"), &pretty(&rows))?;
    let front = pareto_front(rows);
    let on_front: Vec<&CandidateRow> = front.iter().map(|&i| &rows[i]).collect();
    write_atomic(&dir.join("pareto.csv"), to_csv(&on_front).as_bytes())?;
    let path = dir.join("best.json");
    match best {
        Some(best) => {
            let row = rows.iter().find(|r| r.candidate == best).ok_or_else(|| {
                CoreError::BadConfig(format!("the best candidate {best} is not among the evaluated ones"))
            })?;
            write_atomic(&path, &pretty(row))?;
        }
        None if path.exists() => std::fs::remove_file(&path).map_err(|e| CoreError::io(&path, e))?,
        None => {}
    }
    Ok(front)
}

/// One finalist of a search (the best candidates, measured within budget when asked).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finalist {
    /// 1 for the best.
    pub rank: usize,
    /// Text form of the candidate (a genome `detnas export --arch` takes).
    pub candidate: String,
    /// Fitness of the candidate.
    pub fitness: f64,
    /// Latency predicted by a latency table, in milliseconds.
    pub predicted_ms: Option<f64>,
    /// Latency measured on the device, in milliseconds.
    pub measured_ms: Option<f64>,
    /// The path's BN statistics after the search's recalibration (safetensors), relative to the
    /// search folder; `None` for a training-free search (its finalists have no weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn: Option<String>,
}

/// `finalists.json` of a search folder: what `detnas export --search` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finalists {
    /// The supernet checkpoint folder (absolute); `None` for a training-free search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Name of the search space.
    pub space: String,
    /// The finalists, best first.
    pub finalists: Vec<Finalist>,
}

impl Finalists {
    /// Name of the finalists file inside a search folder.
    pub const FILE: &'static str = "finalists.json";

    /// Reads `finalists.json` of the search folder `dir`; errors name the file.
    pub fn read(dir: &Path) -> Result<Finalists> {
        let path = dir.join(Self::FILE);
        let bytes = std::fs::read(&path).map_err(|e| CoreError::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CoreError::State { path: path.clone(), reason: format!("not a detnas finalists file: {e}") })
    }

    /// Writes `finalists.json` into `dir` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(Self::FILE), &pretty(self))
    }

    /// The finalist of rank `rank` (1 = best), or an error naming the ranks there are.
    pub fn rank(&self, rank: usize, dir: &Path) -> Result<&Finalist> {
        self.finalists.iter().find(|f| f.rank == rank).ok_or_else(|| CoreError::State {
            path: dir.join(Self::FILE),
            reason: format!("no finalist of rank {rank} (ranks 1 to {})", self.finalists.len()),
        })
    }
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
            scored_by: "madnas".into(),
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
        write_report(dir.path(), &rows, Some("c")).unwrap();
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

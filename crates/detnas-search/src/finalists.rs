//! The finalists of a search: timed for real on the latency table's device when asked, and saved
//! with what export needs (`finalists.json`, `bn/rank-N.safetensors`).

use crate::fitness::SearchFitness;
use crate::report::Predict;
use crate::run::Event;
use anyhow::{Context, Result, bail};
use detnas_core::SearchSpace;
use detnas_core::detector::DetectorConfig;
use detnas_core::search::evolution::Scored;
use detnas_core::search::pareto::{Finalist, Finalists};
use detnas_infer::LatencyTable;
use detnas_infer::latency::protocol::{Drift, repetition_mean, spread_pct};
use detnas_infer::latency::{Remote, Runner};
use std::collections::BTreeMap;
use std::path::Path;

/// Builds each finalist (random weights) and times its model run on the table's device and thread
/// count — here, or on the latency server `remote` — strictly (no fallback), with the table's measurement protocol (its repetitions
/// interleaved round-robin over the finalists, a fresh session each, measurements in slow spells
/// of the machine taken again); returns the mean of the repetitions in milliseconds by candidate
/// key.
pub fn measure_finalists(
    t: &LatencyTable,
    remote: Option<&Remote>,
    (space, base): (&SearchSpace, &DetectorConfig),
    top: &[Scored],
    max_ms: f64,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<BTreeMap<String, f64>> {
    let runner = Runner { remote: remote.cloned(), ..t.runner(true)? };
    let protocol = t.protocol();
    let stem = DetectorConfig { input: t.genes.input[0], ..base.clone() };
    let mut reference = runner.stem_reference(space, &stem, Drift::TOLERANCE_PCT, None);
    let configs: Vec<DetectorConfig> = top.iter().map(|s| s.arch.detector_config(base)).collect();
    let models: Vec<_> = top.iter().zip(&configs).map(|(s, cfg)| (&s.arch.arch, cfg)).collect();
    let (measured, _) = runner.detectors(space, &models, &protocol, &mut reference, &mut |_, _, _| {})?;
    let mut out = BTreeMap::new();
    for (s, m) in top.iter().zip(measured) {
        let ms = repetition_mean(&m);
        let verdict = if ms <= max_ms { "within" } else { "over" };
        let dropped = if ms <= max_ms { "" } else { ", dropped" };
        let spread = spread_pct(&m.repetitions_ms);
        let reps = m.repetitions_ms.len();
        on_event(Event::Notice(format!(
            "measured {}: {ms:.2} ms (mean of {reps}, spread {spread:.0}%), {verdict} the {max_ms} ms budget{dropped}",
            s.arch
        )));
        out.insert(s.arch.key(), ms);
    }
    Ok(out)
}

/// Saves each kept finalist's artefact (`bn/rank-N.safetensors`, listed in the folder's ownership
/// record first; none for a fitness without weights) and writes `finalists.json`; returns the
/// finalist records, best first. `checkpoint`: the supernet the finalists came from, if any.
pub fn save_finalists(
    out: &Path,
    (checkpoint, space): (Option<&Path>, &SearchSpace),
    fitness: &mut dyn SearchFitness,
    kept: &[&Scored],
    predict: Option<Predict<'_>>,
    measured: &BTreeMap<String, f64>,
) -> Result<Vec<Finalist>> {
    if fitness.has_weights() {
        let bn_dir = out.join("bn");
        if detnas_core::fsutil::is_symlink(&bn_dir) {
            bail!("{}: a symbolic link; the search writes only into folders it made", bn_dir.display());
        }
        std::fs::create_dir_all(&bn_dir).with_context(|| format!("creating {}", bn_dir.display()))?;
    }
    let mut list = Vec::new();
    for (i, s) in kept.iter().enumerate() {
        let rank = i + 1;
        let bn = if fitness.has_weights() {
            let rel = format!("bn/rank-{rank}.safetensors");
            detnas_core::owner::note(out, std::slice::from_ref(&rel))?;
            fitness.save_finalist(&s.arch, &out.join(&rel))?;
            Some(rel)
        } else {
            None
        };
        list.push(Finalist {
            rank,
            candidate: s.arch.to_string(),
            fitness: s.fitness,
            predicted_ms: predict.map(|p| p(&s.arch)).transpose()?,
            measured_ms: measured.get(&s.arch.key()).copied(),
            bn,
        });
    }
    let f = Finalists {
        checkpoint: checkpoint
            .map(|c| std::fs::canonicalize(c).with_context(|| c.display().to_string()))
            .transpose()?,
        space: space.name.clone(),
        finalists: list,
    };
    f.write(out)?;
    Ok(f.finalists)
}

//! Trained models checked against a table: what a table promises is the latency of the model that
//! will be deployed, with its trained weights and the detections real images give. Each exported
//! model's genome (from its metadata) is predicted by the table and its model run measured on real
//! images (cycled), under the table's protocol (repetitions round-robin over the models, a fresh
//! session each, the drift reference timed throughout).

use super::protocol::{Drift, Protocol};
use super::table::LatencyTable;
use crate::detector::Detector;
use crate::error::{InferError, Result};
use crate::options::DetectorOptions;
use crate::timing::time;
use detnas_core::detector::DetectorConfig;
use detnas_core::search::genome::Genome;
use detnas_core::space::SearchSpace;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Most images a check runs each model on.
pub const MAX_IMAGES: usize = 32;

/// One trained model, predicted and measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainedCheck {
    /// The model file.
    pub model: String,
    /// Its genome, every gene given.
    pub genome: String,
    /// The table's prediction.
    pub predicted_ms: f64,
    /// The mean of the repetitions' mean model runs over the images.
    pub measured_ms: f64,
    /// Each repetition's mean.
    pub repetitions_ms: Vec<f64>,
    /// (predicted − measured) / measured, in percent: negative when the model ran slower than
    /// the table promised.
    pub error_pct: f64,
}

/// Checks `models` (exported detnas models) against `table`: each one's prediction beside its
/// model run on `images` (at most [`MAX_IMAGES`]), measured with `runner`'s device, threads and
/// timing plan here under `protocol`, with `reference` timed throughout. Refuses a model whose
/// space, classes or genes the table does not cover, naming the file.
pub fn check_trained(
    table: &LatencyTable,
    models: &[PathBuf],
    images: &[PathBuf],
    (runner, protocol, reference): (&super::Runner, &Protocol, &mut super::protocol::Reference<'_, InferError>),
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<TrainedCheck>, Drift)> {
    if images.is_empty() || images.len() > MAX_IMAGES {
        return Err(InferError::Config(format!("{} images: give 1 to {MAX_IMAGES}", images.len())));
    }
    let options =
        DetectorOptions { threads: runner.threads, device: runner.device, strict: true, ..Default::default() };
    let mut planned = Vec::new();
    for path in models {
        let detector = Detector::from_file(path, options.clone())?;
        let (genome, predicted_ms) =
            predict(table, path, &detector.info().space, &detector.info().arch, &detector.info().config)?;
        let inputs = images
            .iter()
            .map(|image| Ok(detector.prepare_path(image)?.network_input().to_vec()))
            .collect::<Result<Vec<_>>>()?;
        planned.push((genome, predicted_ms, inputs));
    }
    let (measured, drift) = protocol.round_robin(
        models.len(),
        |i| {
            // a fresh session each repetition, as every measurement of the protocol
            let detector = Detector::from_file(&models[i], options.clone())?;
            let inputs = &planned[i].2;
            let mut k = 0;
            time(&runner.timing, || {
                k += 1;
                detector.run(&inputs[k % inputs.len()]).map(drop)
            })
        },
        reference,
        &mut |round, i, l| {
            log(&format!(
                "round {}/{} {}: predicted {:.2} ms, measured {:.2} ms",
                round + 1,
                protocol.repetitions,
                models[i].display(),
                planned[i].1,
                l.mean_ms
            ))
        },
    )?;
    let checks = models
        .iter()
        .zip(planned)
        .zip(measured)
        .map(|((path, (genome, predicted_ms, _)), m)| {
            let measured_ms = super::protocol::repetition_mean(&m);
            TrainedCheck {
                model: path.display().to_string(),
                genome,
                predicted_ms,
                measured_ms,
                repetitions_ms: m.repetitions_ms,
                error_pct: (predicted_ms - measured_ms) / measured_ms * 100.0,
            }
        })
        .collect();
    Ok((checks, drift))
}

/// The table's prediction of the model at `path` (space `space`, backbone `arch`, exported with
/// `cfg`), with its genome.
fn predict(table: &LatencyTable, path: &Path, space: &str, arch: &str, cfg: &DetectorConfig) -> Result<(String, f64)> {
    let refuse = |reason: String| InferError::Config(format!("{}: {reason}", path.display()));
    if space != table.space {
        return Err(refuse(format!("a {space} model; latency table {} measured {}", table.source, table.space)));
    }
    if cfg.class_names.len() != table.classes {
        return Err(refuse(format!(
            "{} classes; latency table {} measured predictors of {}",
            cfg.class_names.len(),
            table.source,
            table.classes
        )));
    }
    let space = SearchSpace::by_name(space)?;
    let genome = Genome::parse(Some(&space.name), arch)?;
    let p = table.predict(&space, &genome.arch, cfg)?;
    Ok((genome.complete(cfg).to_string(), p.latency_ms))
}

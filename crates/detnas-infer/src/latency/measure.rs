//! Measuring on ONNX Runtime: one part of a detector ([`detnas_onnx::parts`]) or a whole random-weight
//! detector through the SDK's model run ([`Detector::from_memory`] + [`Detector::run`], the bench
//! path).

use super::protocol::{Drift, Protocol, Reference};
use crate::detector::Detector;
use crate::device::Device;
use crate::error::{InferError, Result};
use crate::fingerprint::Precision;
use crate::options::DetectorOptions;
use crate::timing::{Latency, TimingPlan, time};
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::rng::Rng;
use detnas_core::space::arch::Arch;
use detnas_core::space::{ChannelShuffle, SearchSpace};
use detnas_onnx::graph::encode;
use detnas_onnx::quantize::quantize_for_timing;
use detnas_onnx::{ExportOptions, ModelProto, Part, Weights, export_part, export_retinanet};
use std::cell::RefCell;

/// Where and how to measure.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    /// Device the sessions run on; an unavailable CUDA device falls back to CPU unless `strict`.
    pub device: Device,
    /// ONNX Runtime intra-op threads (`None`: its default, all cores).
    pub threads: Option<usize>,
    /// Fail instead of falling back to CPU when the device is unavailable.
    pub strict: bool,
    /// Warm-up and timed runs of every measurement.
    pub timing: TimingPlan,
    /// Precision of the measured models (INT8: quantized as `detnas quantize` does, with ranges
    /// that do not matter for timing).
    pub precision: Precision,
}

/// The detector configuration tables are measured with: defaults, `classes` classes (`object`
/// for one, else `class0`, `class1`, ...) and `shuffle`.
pub fn base_config(classes: usize, shuffle: ChannelShuffle) -> DetectorConfig {
    let class_names =
        if classes == 1 { vec!["object".to_string()] } else { (0..classes).map(|i| format!("class{i}")).collect() };
    DetectorConfig { class_names, shuffle, ..DetectorConfig::default() }
}

/// A self-contained ONNX detector of `arch` with `cfg` and random weights (`seed`) whose
/// activations stay of order one through the network ([`Weights::random_varied`]), as with trained
/// weights. (DetNAS's initialisation shrinks activations into denormal floats, which run several
/// times slower on CPUs: timing those would measure something no trained model does.)
pub fn random_detector(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig, seed: u64) -> Result<Vec<u8>> {
    Ok(encode(&random_detector_model(space, arch, cfg, seed)?)?)
}

fn random_detector_model(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig, seed: u64) -> Result<ModelProto> {
    let weights = Weights::random_varied(&detector_params(space, Paths::Single(arch), cfg), seed).without_detections();
    Ok(export_retinanet(space, arch, cfg, &weights, &ExportOptions::default())?)
}

/// Deterministic input values in `[0, scale)`.
fn values(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::seed(seed);
    (0..n).map(|_| rng.unit() as f32 * scale).collect()
}

impl Runner {
    /// Times `part` (random weights and inputs); returns its latency and the provider that ran.
    pub fn part(&self, space: &SearchSpace, cfg: &DetectorConfig, part: &Part) -> Result<(Latency, String)> {
        let name = format!("{part:?} at {}", cfg.input);
        let pm = export_part(space, cfg, part, 0)?;
        let bytes = match self.precision {
            // The stem stays float in INT8 models.
            Precision::Int8 if !matches!(part, Part::Stem) => encode(&quantize_for_timing(&pm.model, false)?)?,
            _ => encode(&pm.model)?,
        };
        let (mut builder, choice) = crate::runtime::session_builder(self.threads, self.device, self.strict, &name)?;
        let mut session = builder
            .commit_from_memory(&bytes)
            .map_err(|e| InferError::ModelLoad { path: name.clone().into(), source: e })?;
        let mut tensors = Vec::new();
        for (i, (input, shape)) in pm.inputs.iter().enumerate() {
            let n = shape.iter().product();
            let scale = if matches!(part, Part::Stem) { 255.0 } else { 1.0 };
            let t = ort::value::Tensor::from_array((shape.clone(), values(n, scale, i as u64)))?;
            tensors.push((input.clone(), t));
        }
        let latency = time(&self.timing, || -> Result<()> {
            let inputs: Vec<(&str, &ort::value::Tensor<f32>)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            session.run(inputs)?;
            Ok(())
        })?;
        Ok((latency, choice.provider))
    }

    /// The drift reference of measurements with this runner ([`Reference`]): the stem at `cfg`'s
    /// input, timed as one part (its p50); `provider`, when given, gets the provider that ran it.
    pub fn stem_reference<'a>(
        &'a self,
        space: &'a SearchSpace,
        cfg: &DetectorConfig,
        tolerance_pct: f64,
        provider: Option<&'a RefCell<String>>,
    ) -> Reference<'a, InferError> {
        let cfg = cfg.clone();
        Reference {
            name: format!("stem {}", cfg.input),
            time: Box::new(move || {
                let (latency, p) = self.part(space, &cfg, &Part::Stem)?;
                if let Some(sink) = provider {
                    *sink.borrow_mut() = p;
                }
                Ok(latency.p50_ms)
            }),
            tolerance_pct,
        }
    }

    /// Measures the random-weight detectors `models` (`(arch, configuration)`) end to end with
    /// `protocol`'s repetitions round-robin and `reference` ([`Protocol::round_robin`]; this
    /// runner's timing plan is one repetition); `log` gets `(round, model, latency)`.
    pub fn detectors(
        &self,
        space: &SearchSpace,
        models: &[(&Arch, &DetectorConfig)],
        protocol: &Protocol,
        reference: &mut Reference<'_, InferError>,
        log: &mut dyn FnMut(usize, usize, &Latency),
    ) -> Result<(Vec<Latency>, Drift)> {
        protocol.round_robin(models.len(), |i| self.detector(space, models[i].0, models[i].1), reference, log)
    }

    /// Times the SDK's model run of a random-weight detector built in memory (the `bench` path).
    pub fn detector(&self, space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<Latency> {
        let model = random_detector_model(space, arch, cfg, 0)?;
        let bytes = match self.precision {
            Precision::Int8 => encode(&quantize_for_timing(&model, true)?)?,
            Precision::Fp32 => encode(&model)?,
        };
        let options =
            DetectorOptions { threads: self.threads, device: self.device, strict: self.strict, ..Default::default() };
        let detector = Detector::from_memory(&bytes, &format!("{} {arch}", space.name), options)?;
        let input = vec![114.0f32; 3 * (cfg.input.height * cfg.input.width) as usize];
        time(&self.timing, || detector.run(&input).map(drop))
    }
}

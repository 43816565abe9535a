//! Measuring on ONNX Runtime: one part of a detector ([`detnas_onnx::parts`]) or a whole random-weight
//! detector through the SDK's model run ([`Detector::from_memory`] + [`Detector::run`], the bench
//! path) — on this machine, or on a latency server ([`super::remote`]) that times the same bytes
//! the same way on its own.

use super::protocol::{Drift, Protocol, Reference};
use crate::detector::Detector;
use crate::device::Device;
use crate::error::{InferError, Result};
use crate::fingerprint::{Fingerprint, Precision};
use crate::options::DetectorOptions;
use crate::timing::{Latency, TimingPlan, time};
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::rng::Rng;
use detnas_core::space::arch::Arch;
use detnas_core::space::{ChannelShuffle, SearchSpace};
use detnas_onnx::graph::encode;
use detnas_onnx::quantize::quantize_for_timing;
use detnas_onnx::{DetectionLoad, ExportOptions, Layout, ModelProto, Part, Weights, export_part, export_retinanet};
use serde::{Deserialize, Serialize};
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
    /// Measure on this latency server instead of here: the models are built here and sent; the
    /// server's device and threads apply (`device`, `threads` and `strict` are not used).
    pub remote: Option<super::remote::Remote>,
    /// The detections the post-processing of measured predictors and detectors handles.
    pub detections: DetectionLoad,
    /// How measured blocks and detectors write the channel shuffle.
    pub layout: Layout,
}

/// How a model's bytes are timed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelKind {
    /// Any ONNX graph whose inputs are float tensors of fixed shape: input `i` is filled with
    /// deterministic values in `[0, scale)` (seeded with `i`) and the bare session run is timed.
    Graph {
        /// Upper end of the input values (255 for image-like inputs, 1 for activations).
        scale: f32,
    },
    /// An exported DetNAS detector: the SDK's model run ([`Detector::run`], post-processing in
    /// the graph included) on a constant grey input.
    Detector,
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
/// weights, and whose post-processing handles `load`'s detections. (DetNAS's initialisation
/// shrinks activations into denormal floats, which run several times slower on CPUs: timing those
/// would measure something no trained model does.) The shuffle is written as `layout` says.
pub fn random_detector(
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    seed: u64,
    load: DetectionLoad,
    layout: Layout,
) -> Result<Vec<u8>> {
    Ok(encode(&random_detector_model(space, arch, cfg, seed, load, layout)?)?)
}

fn random_detector_model(
    space: &SearchSpace,
    arch: &Arch,
    cfg: &DetectorConfig,
    seed: u64,
    load: DetectionLoad,
    layout: Layout,
) -> Result<ModelProto> {
    let weights = Weights::random_varied(&detector_params(space, Paths::Single(arch), cfg), seed).with_detections(load);
    Ok(export_retinanet(space, arch, cfg, &weights, &ExportOptions { layout, ..ExportOptions::default() })?)
}

/// Deterministic input values in `[0, scale)`.
fn values(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::seed(seed);
    (0..n).map(|_| rng.unit() as f32 * scale).collect()
}

impl Runner {
    /// The fingerprint of measurements with this runner that ran on `provider`: its latency
    /// server's (asked now, at this runner's precision), or this machine's.
    pub fn fingerprint(&self, provider: &str) -> Result<Fingerprint> {
        match &self.remote {
            Some(remote) => {
                let mut f = remote.info()?.fingerprint;
                f.precision = self.precision.name().into();
                Ok(f)
            }
            None => Ok(Fingerprint::current(self.device, self.threads, provider, self.precision)),
        }
    }

    /// Times `part` (random weights and inputs); returns its latency and the provider that ran.
    pub fn part(&self, space: &SearchSpace, cfg: &DetectorConfig, part: &Part) -> Result<(Latency, String)> {
        let name = format!("{part:?} at {}", cfg.input);
        let pm = export_part(space, cfg, part, 0, self.detections, self.layout)?;
        let bytes = match self.precision {
            // The stem stays float in INT8 models.
            Precision::Int8 if !matches!(part, Part::Stem) => encode(&quantize_for_timing(&pm.model, false)?)?,
            _ => encode(&pm.model)?,
        };
        let scale = if matches!(part, Part::Stem) { 255.0 } else { 1.0 };
        self.measure(&bytes, &name, ModelKind::Graph { scale })
    }

    /// Times the model `bytes` (`name` in errors) as `kind` says with this runner's timing plan:
    /// on its latency server when it has one, else here ([`Runner::measure_here`]).
    pub fn measure(&self, bytes: &[u8], name: &str, kind: ModelKind) -> Result<(Latency, String)> {
        match &self.remote {
            Some(remote) => {
                let m = remote.measure(bytes, kind, &self.timing)?;
                Ok((m.latency, m.provider))
            }
            None => self.measure_here(bytes, name, kind),
        }
    }

    /// Times the model `bytes` on this machine's device and threads: a fresh session, warm-up,
    /// then the timing plan's runs ([`ModelKind`] says what runs); returns the latency and the
    /// provider that ran. A graph input that is not a float tensor of fixed shape is refused.
    pub fn measure_here(&self, bytes: &[u8], name: &str, kind: ModelKind) -> Result<(Latency, String)> {
        self.timing.validate()?;
        match kind {
            ModelKind::Graph { scale } => {
                let (mut builder, choice) =
                    crate::runtime::session_builder(self.threads, self.device, self.strict, name)?;
                let mut session = builder
                    .commit_from_memory(bytes)
                    .map_err(|e| InferError::ModelLoad { path: name.into(), source: e })?;
                let mut tensors = Vec::new();
                for (i, input) in session.inputs().iter().enumerate() {
                    let shape = fixed_float_shape(input.dtype()).ok_or_else(|| InferError::Model {
                        path: name.into(),
                        reason: format!("input {:?} is not a float tensor of fixed shape", input.name()),
                        source: None,
                    })?;
                    let n = shape.iter().product();
                    let t = ort::value::Tensor::from_array((shape, values(n, scale, i as u64)))?;
                    tensors.push((input.name().to_string(), t));
                }
                let latency = time(&self.timing, || -> Result<()> {
                    let inputs: Vec<(&str, &ort::value::Tensor<f32>)> =
                        tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
                    session.run(inputs)?;
                    Ok(())
                })?;
                Ok((latency, choice.provider))
            }
            ModelKind::Detector => {
                let options = DetectorOptions {
                    threads: self.threads,
                    device: self.device,
                    strict: self.strict,
                    ..Default::default()
                };
                let detector = Detector::from_memory(bytes, name, options)?;
                let size = detector.input_size();
                let input = vec![114.0f32; 3 * (size.height * size.width) as usize];
                let latency = time(&self.timing, || detector.run(&input).map(drop))?;
                Ok((latency, detector.info().provider.clone()))
            }
        }
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
        let model = random_detector_model(space, arch, cfg, 0, self.detections, self.layout)?;
        let bytes = match self.precision {
            Precision::Int8 => encode(&quantize_for_timing(&model, true)?)?,
            Precision::Fp32 => encode(&model)?,
        };
        Ok(self.measure(&bytes, &format!("{} {arch}", space.name), ModelKind::Detector)?.0)
    }
}

/// The dimensions of a float tensor whose every dimension is fixed (none symbolic).
fn fixed_float_shape(dtype: &ort::value::ValueType) -> Option<Vec<usize>> {
    if dtype.tensor_type()? != ort::value::TensorElementType::Float32 {
        return None;
    }
    dtype.tensor_shape()?.iter().map(|&d| usize::try_from(d).ok().filter(|&d| d > 0)).collect()
}

//! Static INT8 quantization of an exported detector, calibrated with ONNX Runtime on real images.
//!
//! [`quantize_detector`]:
//! 1. **calibration**: the float model runs on the calibration images (letterboxed exactly as at
//!    inference) with every convolution's input and output as extra outputs; each activation gets a
//!    range by [`CalibMethod`];
//! 2. **sensitivity**: each convolution is quantized alone and the head's outputs (the last
//!    convolutions, before any post-processing) are compared with the float model's on the first
//!    images: [`LayerSensitivity::error`] is the squared error relative to the outputs' variance;
//! 3. **rewrite**: every convolution is quantized ([`detnas_onnx::quantize`], QDQ form) except the
//!    input stem and the [`QuantizeOptions::float_layers`] most sensitive ones; post-processing
//!    stays float. The record ([`QUANTIZATION_KEY`]) goes into the model's metadata.
//!
//! Calibration is deterministic: the same images, options and model give the same bytes.

use crate::error::{InferError, Result};
use crate::image_io::{DecodeLimits, load_image};
use crate::preprocess::letterbox_into;
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::contract::{keys, tensors};
use detnas_onnx::ModelProto;
use detnas_onnx::graph::encode;
pub use detnas_onnx::quantize::QUANTIZATION_KEY;
use detnas_onnx::quantize::{ConvSite, QuantPlan, conv_sites, metadata, quantize_qdq, set_metadata, with_outputs};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How an activation's range is chosen from what calibration saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibMethod {
    /// The smallest and largest values seen.
    MinMax,
    /// The given percentile of the values (and its mirror for the minimum), e.g. 99.99.
    Percentile(f64),
    /// The clipping threshold that minimises the KL divergence between the value histogram and its
    /// quantized form (TensorRT's entropy calibration).
    Entropy,
}

impl CalibMethod {
    /// `minmax`, `percentile` (99.99) or `entropy`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "minmax" => Ok(CalibMethod::MinMax),
            "percentile" => Ok(CalibMethod::Percentile(99.99)),
            "entropy" => Ok(CalibMethod::Entropy),
            other => {
                Err(InferError::Config(format!("unknown calibration method {other:?} (minmax, percentile, entropy)")))
            }
        }
    }

    /// The name [`CalibMethod::parse`] reads.
    pub fn name(&self) -> &'static str {
        match self {
            CalibMethod::MinMax => "minmax",
            CalibMethod::Percentile(_) => "percentile",
            CalibMethod::Entropy => "entropy",
        }
    }
}

/// Options of [`quantize_detector`].
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// How activation ranges are chosen.
    pub method: CalibMethod,
    /// The most sensitive convolutions kept in float (besides the input stem).
    pub float_layers: usize,
    /// Images (the first of the calibration set) used by the sensitivity pass; 0 skips it (then
    /// only the stem stays float).
    pub sensitivity_images: usize,
    /// 7-bit weights, for CPUs whose int8 dot products saturate (off: full int8).
    pub reduce_range: bool,
    /// ONNX Runtime intra-op threads (`None`: its default).
    pub threads: Option<usize>,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            method: CalibMethod::Percentile(99.99),
            float_layers: 2,
            sensitivity_images: 4,
            reduce_range: false,
            threads: None,
        }
    }
}

/// What quantizing one convolution alone does to the head's outputs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerSensitivity {
    /// The convolution node.
    pub layer: String,
    /// Squared error of the head outputs relative to their variance (0 = no change).
    pub error: f64,
}

/// The quantized model and how it was made.
#[derive(Debug)]
pub struct QuantizeReport {
    /// The QDQ model, with the record under [`QUANTIZATION_KEY`].
    pub model: ModelProto,
    /// Every quantizable convolution but the stem, most sensitive first (empty without the pass).
    pub sensitivity: Vec<LayerSensitivity>,
    /// Convolutions left in float: the stem, then the most sensitive.
    pub float_layers: Vec<String>,
    /// Convolutions quantized, of [`QuantizeReport::convolutions`].
    pub quantized: usize,
    /// Convolutions with constant weights in the model.
    pub convolutions: usize,
    /// Relative error of the head outputs with every convolution but the stem quantized.
    pub error_all: f64,
    /// The same for the returned model.
    pub error_final: f64,
    /// The metadata record (JSON).
    pub record: serde_json::Value,
}

/// A calibration image: its name and its letterboxed network input (`3 x H x W`, RGB 0-255).
pub type CalibrationInput = (String, Vec<f32>);

/// The calibration inputs: each readable image of `paths`, letterboxed to the model's input with its
/// pad value. Unreadable images are returned beside the inputs (name and problem), not fatal.
pub fn calibration_inputs(
    model: &ModelProto,
    paths: &[PathBuf],
    limits: &DecodeLimits,
) -> Result<(Vec<CalibrationInput>, Vec<String>)> {
    let cfg = model_config(model)?;
    let (w, h) = (cfg.input.width as u32, cfg.input.height as u32);
    let (mut inputs, mut failures) = (Vec::new(), Vec::new());
    for p in paths {
        match load_image(p, limits) {
            Ok(img) => {
                let mut buf = vec![0f32; 3 * (w * h) as usize];
                letterbox_into(&img.rgb, w, h, cfg.preprocess.pad_value, &mut buf);
                inputs.push((p.display().to_string(), buf));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    Ok((inputs, failures))
}

/// The detector configuration recorded in an exported model.
pub fn model_config(model: &ModelProto) -> Result<DetectorConfig> {
    let text = metadata(model, keys::CONFIG).ok_or_else(|| {
        InferError::Config(format!("the model has no `{}` metadata (not exported by detnas)", keys::CONFIG))
    })?;
    serde_json::from_str(&text).map_err(|e| InferError::Config(format!("`{}` metadata: {e}", keys::CONFIG)))
}

/// A session on an in-memory model that returns named float outputs.
struct Probe {
    session: ort::session::Session,
    shape: [usize; 4],
}

impl Probe {
    fn new(model: &ModelProto, threads: Option<usize>, what: &str) -> Result<Self> {
        let cfg = model_config(model)?;
        let bytes = encode(model)?;
        let (mut builder, _) = crate::runtime::session_builder(threads, crate::Device::Cpu, false, what)?;
        let session =
            builder.commit_from_memory(&bytes).map_err(|e| InferError::ModelLoad { path: what.into(), source: e })?;
        Ok(Probe { session, shape: [1, 3, cfg.input.height as usize, cfg.input.width as usize] })
    }

    /// Runs on `input`; calls `f(name, values)` for each of `names`.
    fn run(&mut self, input: &[f32], names: &[String], mut f: impl FnMut(usize, &[f32])) -> Result<()> {
        let tensor = ort::value::TensorRef::from_array_view((self.shape, input))?;
        let out = self.session.run(ort::inputs![tensors::IMAGES => tensor])?;
        for (i, n) in names.iter().enumerate() {
            let (_, v) = out[n.as_str()].try_extract_tensor::<f32>()?;
            f(i, v);
        }
        Ok(())
    }
}

const BINS: usize = 2048;

/// Value statistics of one activation over the calibration set.
#[derive(Clone, Debug)]
struct Stats {
    min: f32,
    max: f32,
    hist: Vec<u64>,
}

impl Stats {
    fn bin(&self, v: f32) -> usize {
        let width = (self.max - self.min) / BINS as f32;
        if width <= 0.0 { 0 } else { (((v - self.min) / width) as usize).min(BINS - 1) }
    }

    fn edge(&self, bin: usize) -> f32 {
        self.min + (self.max - self.min) * bin as f32 / BINS as f32
    }

    /// The range `method` keeps.
    fn range(&self, method: CalibMethod) -> (f32, f32) {
        match method {
            CalibMethod::MinMax => (self.min, self.max),
            CalibMethod::Percentile(p) => {
                let total: u64 = self.hist.iter().sum();
                let tail = ((1.0 - p / 100.0) * total as f64).floor() as u64;
                let (mut lo, mut acc) = (0, 0u64);
                while lo < BINS - 1 && acc + self.hist[lo] <= tail {
                    acc += self.hist[lo];
                    lo += 1;
                }
                let (mut hi, mut acc) = (BINS - 1, 0u64);
                while hi > 0 && acc + self.hist[hi] <= tail {
                    acc += self.hist[hi];
                    hi -= 1;
                }
                let lo = if self.min >= 0.0 { self.min } else { self.edge(lo) };
                (lo, self.edge(hi + 1).max(lo))
            }
            CalibMethod::Entropy => {
                // On magnitudes: the histogram folded at zero, then the KL-optimal threshold.
                let amax = self.min.abs().max(self.max.abs());
                if amax == 0.0 {
                    return (0.0, 0.0);
                }
                let mut folded = vec![0u64; BINS];
                for (b, &c) in self.hist.iter().enumerate() {
                    let centre = 0.5 * (self.edge(b) + self.edge(b + 1));
                    folded[((centre.abs() / amax * BINS as f32) as usize).min(BINS - 1)] += c;
                }
                let levels = if self.min >= 0.0 { 255 } else { 128 };
                let t = entropy_threshold(&folded, levels) * amax;
                (self.min.max(-t), self.max.min(t))
            }
        }
    }
}

/// The KL-optimal clipping point of a magnitude histogram over `[0, 1]` for `levels` quantization
/// levels, as a fraction of the histogram's range.
fn entropy_threshold(hist: &[u64], levels: usize) -> f32 {
    let n = hist.len();
    let mut best = (f64::INFINITY, n);
    let mut i = levels;
    while i <= n {
        // Reference: the first i bins, outliers folded into the last.
        let mut p: Vec<f64> = hist[..i].iter().map(|&c| c as f64).collect();
        p[i - 1] += hist[i..].iter().map(|&c| c as f64).sum::<f64>();
        // Candidate: the i bins merged into `levels` groups, spread back over their non-empty bins.
        let mut q = vec![0f64; i];
        for g in 0..levels {
            let (a, b) = (g * i / levels, ((g + 1) * i / levels).max(g * i / levels + 1));
            let total: f64 = hist[a..b].iter().map(|&c| c as f64).sum();
            let nonzero = hist[a..b].iter().filter(|&&c| c > 0).count();
            for k in a..b {
                if hist[k] > 0 {
                    q[k] = total / nonzero as f64;
                }
            }
        }
        let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if sp > 0.0 && sq > 0.0 {
            let kl: f64 = p
                .iter()
                .zip(&q)
                .filter(|(pv, _)| **pv > 0.0)
                .map(|(pv, qv)| {
                    let (pn, qn) = (pv / sp, (qv / sq).max(1e-12));
                    pn * (pn / qn).ln()
                })
                .sum();
            if kl < best.0 {
                best = (kl, i);
            }
        }
        i += 16;
    }
    best.1 as f32 / n as f32
}

/// Activation ranges of every convolution input and output of `sites`, from `inputs`.
fn calibrate(
    model: &ModelProto,
    sites: &[ConvSite],
    inputs: &[CalibrationInput],
    opts: &QuantizeOptions,
) -> Result<BTreeMap<String, (f32, f32)>> {
    let mut names: Vec<String> = sites.iter().flat_map(|s| [s.input.clone(), s.output.clone()]).collect();
    names.sort();
    names.dedup();
    let mut probe = Probe::new(&with_outputs(model, &names)?, opts.threads, "calibration model")?;
    let mut stats: Vec<Stats> =
        names.iter().map(|_| Stats { min: f32::MAX, max: f32::MIN, hist: vec![0; BINS] }).collect();
    for (_, x) in inputs {
        probe.run(x, &names, |i, v| {
            for &value in v.iter().filter(|v| v.is_finite()) {
                stats[i].min = stats[i].min.min(value);
                stats[i].max = stats[i].max.max(value);
            }
        })?;
    }
    if !matches!(opts.method, CalibMethod::MinMax) {
        for (_, x) in inputs {
            probe.run(x, &names, |i, v| {
                for &value in v.iter().filter(|v| v.is_finite()) {
                    let b = stats[i].bin(value);
                    stats[i].hist[b] += 1;
                }
            })?;
        }
    }
    Ok(names
        .into_iter()
        .zip(stats)
        .map(|(n, s)| {
            let range = if s.min > s.max { (0.0, 0.0) } else { s.range(opts.method) };
            (n, range)
        })
        .collect())
}

/// Head outputs of a model on the sensitivity images.
fn head_outputs(
    model: &ModelProto,
    names: &[String],
    inputs: &[CalibrationInput],
    threads: Option<usize>,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let mut probe = Probe::new(&with_outputs(model, names)?, threads, "sensitivity model")?;
    let mut all = Vec::new();
    for (_, x) in inputs {
        let mut outs = vec![Vec::new(); names.len()];
        probe.run(x, names, |i, v| outs[i] = v.to_vec())?;
        all.push(outs);
    }
    Ok(all)
}

/// Largest head output (logit or box delta) a working float model produces: beyond it the
/// activations overflow any INT8 range that keeps the useful ones apart.
const MAX_HEAD_MAGNITUDE: f32 = 1e6;

/// Largest accepted [`relative_error`] of the quantized head outputs: at 1 the error is as large as
/// the signal itself.
const MAX_HEAD_ERROR: f64 = 1.0;

/// [`relative_error`] with every convolution but the stem quantized beyond which keeping a few
/// layers in float cannot bring it under [`MAX_HEAD_ERROR`].
const HOPELESS_HEAD_ERROR: f64 = 10.0 * MAX_HEAD_ERROR;

fn noise_error(error: f64) -> InferError {
    InferError::Config(format!(
        "quantization error of the head outputs is {error:.3e} (at most {MAX_HEAD_ERROR} of their variance is usable): \
         the INT8 model would detect noise; the float model's outputs vary too little on the calibration images (an \
         untrained, random-initialised model?) or they are not like the images the model sees"
    ))
}

/// Mean over outputs of the squared error relative to the float output's variance.
fn relative_error(float: &[Vec<Vec<f32>>], quant: &[Vec<Vec<f32>>]) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for (fi, qi) in float.iter().zip(quant) {
        for (f, q) in fi.iter().zip(qi) {
            let mean = f.iter().map(|&v| v as f64).sum::<f64>() / f.len().max(1) as f64;
            let var: f64 = f.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
            let err: f64 = f.iter().zip(q).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
            sum += if var > 0.0 { err / var } else { err };
            count += 1;
        }
    }
    sum / count.max(1) as f64
}

/// Quantizes the convolutions `convs` of `model` and measures the head-output error on `inputs`.
struct Quantizer<'a> {
    model: &'a ModelProto,
    ranges: BTreeMap<String, (f32, f32)>,
    heads: Vec<String>,
    reference: Vec<Vec<Vec<f32>>>,
    inputs: &'a [(String, Vec<f32>)],
    opts: &'a QuantizeOptions,
}

impl Quantizer<'_> {
    fn plan(&self, convs: Vec<String>) -> QuantPlan {
        QuantPlan { convs, ranges: self.ranges.clone(), reduce_range: self.opts.reduce_range }
    }

    fn error(&self, convs: Vec<String>) -> Result<f64> {
        if self.inputs.is_empty() {
            return Ok(0.0);
        }
        let q = quantize_qdq(self.model, &self.plan(convs))?;
        let names: Vec<String> = self.heads.iter().map(|h| q.dequantized.get(h).unwrap_or(h).clone()).collect();
        let outs = head_outputs(&q.model, &names, self.inputs, self.opts.threads)?;
        Ok(relative_error(&self.reference, &outs))
    }

    /// The error of quantizing each of `candidates` alone, largest first (ties by name); empty
    /// without probe inputs.
    fn sensitivity(&self, candidates: &[&ConvSite]) -> Result<Vec<LayerSensitivity>> {
        let mut sensitivity = Vec::new();
        if !self.inputs.is_empty() {
            for s in candidates {
                sensitivity.push(LayerSensitivity { layer: s.name.clone(), error: self.error(vec![s.name.clone()])? });
            }
            sensitivity.sort_by(|a, b| b.error.total_cmp(&a.error).then(a.layer.cmp(&b.layer)));
        }
        Ok(sensitivity)
    }
}

/// An error when a float head output in `reference` is not finite or beyond
/// [`MAX_HEAD_MAGNITUDE`]: such a model cannot be quantized usefully.
fn check_reference(reference: &[Vec<Vec<f32>>]) -> Result<()> {
    if let Some(bad) = reference.iter().flatten().flatten().find(|v| !v.is_finite() || v.abs() > MAX_HEAD_MAGNITUDE) {
        return Err(InferError::Config(format!(
            "the float model's head outputs on the calibration images are not usable ({bad:e}, beyond ±{MAX_HEAD_MAGNITUDE:e}): \
             quantizing would only keep noise; check the model (trained weights?) and the images"
        )));
    }
    Ok(())
}

/// FNV-1a-style digest of the calibration images' values (their bit patterns, in order), for the
/// quantization record.
fn calibration_digest(inputs: &[CalibrationInput]) -> u64 {
    inputs.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, (_, x)| {
        x.iter().fold(h, |h, v| (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3))
    })
}

/// Quantizes `model` (an exported detnas detector) with calibration `inputs` (from
/// [`calibration_inputs`]); see the module docs.
pub fn quantize_detector(
    model: &ModelProto,
    inputs: &[CalibrationInput],
    opts: &QuantizeOptions,
) -> Result<QuantizeReport> {
    if inputs.is_empty() {
        return Err(InferError::Config("calibration needs at least one image".into()));
    }
    if metadata(model, QUANTIZATION_KEY).is_some() {
        return Err(InferError::Config("the model is already quantized".into()));
    }
    let sites = conv_sites(model)?;
    let stem =
        sites.first().ok_or_else(|| InferError::Config("the model has no convolution with constant weights".into()))?;
    let ranges = calibrate(model, &sites, inputs, opts)?;
    let heads: Vec<String> = sites.iter().filter(|s| s.terminal).map(|s| s.output.clone()).collect();
    let probe_inputs = &inputs[..opts.sensitivity_images.min(inputs.len())];
    let reference = head_outputs(model, &heads, probe_inputs, opts.threads)?;
    check_reference(&reference)?;
    let q = Quantizer { model, ranges, heads, reference, inputs: probe_inputs, opts };

    let candidates: Vec<&ConvSite> = sites.iter().skip(1).collect();
    let all: Vec<String> = candidates.iter().map(|s| s.name.clone()).collect();
    // Before the per-layer pass: a model no choice of float layers can save is refused at once.
    let error_all = q.error(all.clone())?;
    if error_all > HOPELESS_HEAD_ERROR {
        return Err(noise_error(error_all));
    }
    let sensitivity = q.sensitivity(&candidates)?;
    let mut float_layers = vec![stem.name.clone()];
    float_layers.extend(sensitivity.iter().take(opts.float_layers).map(|s| s.layer.clone()));
    let chosen: Vec<String> = all.iter().filter(|c| !float_layers.contains(c)).cloned().collect();
    let error_final = q.error(chosen.clone())?;
    if error_final > MAX_HEAD_ERROR {
        return Err(noise_error(error_final));
    }

    let mut out = quantize_qdq(model, &q.plan(chosen.clone()))?.model;
    let digest = calibration_digest(inputs);
    let record = serde_json::json!({
        "format": "qdq",
        "weights": if opts.reduce_range { "int8 symmetric per-channel, 7-bit" } else { "int8 symmetric per-channel" },
        "activations": "uint8 asymmetric per-tensor",
        "method": opts.method.name(),
        "percentile": match opts.method { CalibMethod::Percentile(p) => Some(p), _ => None },
        "calibration_images": inputs.len(),
        "calibration_digest": format!("{digest:016x}"),
        "sensitivity_images": probe_inputs.len(),
        "convolutions": sites.len(),
        "quantized": chosen.len(),
        "float_layers": float_layers,
        "head_error_all": error_all,
        "head_error": error_final,
        "sensitivity": sensitivity.iter().take(10).collect::<Vec<_>>(),
    });
    set_metadata(&mut out, QUANTIZATION_KEY, record.to_string());
    if let Some(w) = metadata(model, keys::WEIGHTS) {
        set_metadata(&mut out, keys::WEIGHTS, format!("{w}, int8 ({} calibration)", opts.method.name()));
    }
    Ok(QuantizeReport {
        model: out,
        sensitivity,
        float_layers,
        quantized: chosen.len(),
        convolutions: sites.len(),
        error_all,
        error_final,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[f32]) -> Stats {
        let mut s = Stats {
            min: values.iter().copied().fold(f32::MAX, f32::min),
            max: values.iter().copied().fold(f32::MIN, f32::max),
            hist: vec![0; BINS],
        };
        for &v in values {
            let b = s.bin(v);
            s.hist[b] += 1;
        }
        s
    }

    #[test]
    fn methods_parse_by_name() {
        for m in ["minmax", "percentile", "entropy"] {
            assert_eq!(CalibMethod::parse(m).unwrap().name(), m);
        }
        assert!(CalibMethod::parse("mse").unwrap_err().to_string().contains("minmax, percentile, entropy"));
    }

    #[test]
    fn percentile_and_entropy_clip_rare_outliers_minmax_keeps_them() {
        // 100k values in [0, 1) plus three outliers at 50.
        let mut v: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.extend([50.0, 50.0, 50.0]);
        let s = stats(&v);
        assert_eq!(s.range(CalibMethod::MinMax), (0.0, 50.0));
        let (lo, hi) = s.range(CalibMethod::Percentile(99.99));
        assert!(lo == 0.0 && (0.99..1.1).contains(&hi), "percentile: {hi}");
        let (lo, hi) = s.range(CalibMethod::Entropy);
        // Entropy cannot clip below `levels` of its 2048 bins (255/2048 of the maximum here).
        assert!(lo == 0.0 && (0.9..=50.0 * 256.0 / 2048.0).contains(&hi), "entropy: {hi}");
        // Signed data keeps both tails.
        let signed: Vec<f32> = (0..100_000).map(|i| (i % 2001) as f32 / 1000.0 - 1.0).collect();
        let (lo, hi) = stats(&signed).range(CalibMethod::Percentile(99.9));
        assert!((-1.0..-0.95).contains(&lo) && (0.95..=1.0).contains(&hi), "{lo} {hi}");
    }

    #[test]
    fn relative_error_is_zero_for_equal_outputs_and_grows_with_noise() {
        let f = vec![vec![vec![1.0f32, 2.0, 3.0, 4.0]]];
        assert_eq!(relative_error(&f, &f), 0.0);
        let q = vec![vec![vec![1.5f32, 2.0, 3.0, 4.0]]];
        assert!((relative_error(&f, &q) - 0.25 / 5.0).abs() < 1e-12);
    }
}

//! Named float tensors: loaded from / saved to safetensors, or drawn from the plan's initialisers.

use crate::error::{OnnxError, Result};
use detnas_core::detector::plan::{Init, ParamSpec};
use detnas_core::rng::Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// A dense float32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, row-major (as many as the dimensions say).
    pub data: Vec<f32>,
}

/// Tensors by parameter name (see [`detnas_core::detector::plan`] for the naming scheme).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    /// Where the weights came from (file path or `random-init seed N`), recorded in exports.
    pub source: String,
    /// The tensors are an exported model's: every conv's weight and bias with its BN already
    /// folded in (and no BN tensors); see [`crate::relayout`].
    pub folded: bool,
}

impl Weights {
    /// Reads a safetensors file; float32 tensors only (float64/float16 are converted).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| OnnxError::Weights { path: path.display().to_string(), reason: e.to_string() })?;
        let mut w = Self::from_bytes(&bytes, &path.display().to_string())?;
        w.source = path.display().to_string();
        Ok(w)
    }

    /// Parses safetensors bytes; `name` is used in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        let bad = |reason: String| OnnxError::Weights { path: name.to_string(), reason };
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (tname, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F64 => {
                    raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
                }
                other => return Err(bad(format!("tensor `{tname}` has dtype {other:?}; expected F32"))),
            };
            tensors.insert(tname, Tensor { shape: view.shape().to_vec(), data });
        }
        Ok(Weights { tensors, source: name.to_string(), folded: false })
    }

    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, b, s)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| self.err(e))?)))
            .collect::<Result<_>>()?;
        safetensors::serialize(views, None).map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> OnnxError {
        OnnxError::Weights { path: self.source.clone(), reason: e.to_string() }
    }

    /// Writes a safetensors file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        detnas_core::fsutil::write_atomic(path, &bytes)
            .map_err(|e| OnnxError::Weights { path: path.display().to_string(), reason: e.to_string() })
    }

    /// Draws every tensor of `params` from its initialiser with a seeded generator
    /// ([`detnas_core::detector::plan::random_init`]: the trainer starts from the same values).
    pub fn random(params: &[ParamSpec], seed: u64) -> Self {
        let values = detnas_core::detector::plan::random_init(params, seed);
        let tensors = params
            .iter()
            .zip(values)
            .map(|(p, data)| (p.name.clone(), Tensor { shape: p.shape.clone(), data }))
            .collect();
        Weights { tensors, source: format!("random-init seed {seed}"), folded: false }
    }

    /// Random weights where every tensor matters numerically, for parity tests, scaled so that
    /// activations stay of order one through the whole network: convs `N(0, gain / fan_in)` with gain 1
    /// for depthwise convs (never followed by ReLU here) and 2 otherwise, BN running variances uniform in
    /// `[0.5, 1.5]` with scales `sqrt(var) * U(0.9, 1.1)`, BN means, BN shifts and conv biases `N(0, 0.1)`;
    /// the classification prior bias is kept so scores stay in a realistic range.
    pub fn random_varied(params: &[ParamSpec], seed: u64) -> Self {
        let mut rng = Rng::seed(seed);
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        for p in params {
            let n: usize = p.shape.iter().product();
            let name = p.name.as_str();
            let data: Vec<f32> = if p.shape.len() == 4 {
                let fan_in: usize = p.shape[1..].iter().product();
                let gain = if p.shape[1] == 1 { 1.0 } else { 2.0 };
                let std = (gain / fan_in as f32).sqrt();
                (0..n).map(|_| normal(&mut rng) * std).collect()
            } else if name.ends_with("running_var") {
                (0..n).map(|_| 0.5 + rng.unit() as f32).collect()
            } else if name.contains("cls_logits") {
                match p.init {
                    Init::Const(v) => vec![v; n],
                    _ => vec![0.0; n],
                }
            } else if name.ends_with(".weight") && p.shape.len() == 1 {
                // BN scale; fixed up below once the running variance is known
                (0..n).map(|_| 0.9 + 0.2 * rng.unit() as f32).collect()
            } else {
                (0..n).map(|_| normal(&mut rng) * 0.1).collect()
            };
            tensors.insert(p.name.clone(), Tensor { shape: p.shape.clone(), data });
        }
        let bn_prefixes: Vec<String> =
            tensors.keys().filter_map(|k| k.strip_suffix(".running_var").map(str::to_string)).collect();
        for prefix in bn_prefixes {
            let var = tensors[&format!("{prefix}.running_var")].data.clone();
            if let Some(gamma) = tensors.get_mut(&format!("{prefix}.weight")) {
                for (g, v) in gamma.data.iter_mut().zip(var) {
                    *g *= v.sqrt();
                }
            }
        }
        Weights { tensors, source: format!("random-varied seed {seed}"), folded: false }
    }

    /// The tensors of `params` cut from these weights: each stored tensor's leading block of the
    /// spec's shape (the first channels of every dimension, Once-for-All style), so any sub-network
    /// of an elastic supernet exports from its checkpoint. A tensor of exactly the spec's shape is
    /// copied; one of another rank or smaller in any dimension is an error naming the parameter, as
    /// is a missing one. Tensors not in `params` are left out.
    pub fn sliced_to(&self, params: &[ParamSpec]) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for p in params {
            let t = self
                .tensors
                .get(&p.name)
                .ok_or_else(|| OnnxError::MissingTensor { name: p.name.clone(), origin: self.source.clone() })?;
            if t.shape.len() != p.shape.len() || t.shape.iter().zip(&p.shape).any(|(have, want)| want > have) {
                return Err(self.err(format!(
                    "tensor `{}` has shape {:?}, which does not contain the requested shape {:?}",
                    p.name, t.shape, p.shape
                )));
            }
            tensors.insert(p.name.clone(), Tensor { shape: p.shape.clone(), data: leading_block(t, &p.shape) });
        }
        Ok(Weights { tensors, source: self.source.clone(), folded: self.folded })
    }

    /// Replaces (or adds) every tensor of `other`, e.g. recalibrated BN statistics over a
    /// supernet's weights; returns how many were taken.
    pub fn overlay(&mut self, other: Weights) -> usize {
        let n = other.tensors.len();
        self.tensors.extend(other.tensors);
        n
    }

    /// For latency measurements: the classification logit biases set for `load` — far below any
    /// score threshold for [`DetectionLoad::None`]; for [`DetectionLoad::Cap`] far above it with
    /// the classification and box regression weights zeroed, so that every anchor scores the same
    /// and its box is the anchor itself: the post-processing's work then depends on the detector
    /// configuration alone, not on the features (the same for a part and a whole model).
    pub fn with_detections(mut self, load: DetectionLoad) -> Self {
        for (name, t) in &mut self.tensors {
            let value = match (load, name.rsplit_once('.')) {
                (DetectionLoad::None, Some((layer, "bias"))) if layer.ends_with("cls_logits") => -40.0,
                (DetectionLoad::Cap, Some((layer, "bias"))) if layer.ends_with("cls_logits") => 8.0,
                (DetectionLoad::Cap, Some((layer, _)))
                    if layer.ends_with("cls_logits") || layer.ends_with("bbox_reg") =>
                {
                    0.0
                }
                _ => continue,
            };
            t.data.iter_mut().for_each(|v| *v = value);
        }
        self
    }

    /// Inserts or replaces a tensor.
    pub fn insert(&mut self, name: &str, tensor: Tensor) {
        self.tensors.insert(name.to_string(), tensor);
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| OnnxError::MissingTensor { name: name.to_string(), origin: self.source.clone() })?;
        if t.shape != shape {
            return Err(OnnxError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.shape.clone(),
                origin: self.source.clone(),
            });
        }
        Ok(t)
    }

    /// Mutable access for tests and tools that perturb weights.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors.get_mut(name)
    }

    /// Names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of scalars over all tensors.
    pub fn numel(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }
}

pub use detnas_core::detector::plan::normal;

/// The values of `t`'s leading block of `shape` (same rank, every dimension at most `t`'s), in
/// row-major order.
fn leading_block(t: &Tensor, shape: &[usize]) -> Vec<f32> {
    if t.shape == shape {
        return t.data.clone();
    }
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    // row-major strides of the stored tensor
    let mut strides = vec![1usize; t.shape.len()];
    for d in (0..t.shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * t.shape[d + 1];
    }
    let mut index = vec![0usize; shape.len()];
    for _ in 0..n {
        let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(t.data[offset]);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// How many detections the post-processing of a random-weight model handles when it is timed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectionLoad {
    /// No anchor scores above the threshold: the network and the cheapest post-processing, the
    /// same for every genome (what tables measured before this choice existed).
    #[default]
    None,
    /// Every anchor scores above the threshold, with its anchor as its box: each level's top-k
    /// candidates are decoded and suppressed and the detection cap is filled — the full
    /// post-processing of a busy image, fixed by the detector configuration alone.
    Cap,
}

impl DetectionLoad {
    /// `none` or `cap`; anything else is an error naming both.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text {
            "none" => Ok(DetectionLoad::None),
            "cap" => Ok(DetectionLoad::Cap),
            other => Err(format!("unknown detection load {other:?} (none, cap)")),
        }
    }

    /// The name [`Self::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            DetectionLoad::None => "none",
            DetectionLoad::Cap => "cap",
        }
    }

    /// Whether this is [`DetectionLoad::None`] (tables leave it out then).
    pub fn is_none(&self) -> bool {
        *self == DetectionLoad::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_shape_checks() {
        let params = vec![
            ParamSpec { name: "a.weight".into(), shape: vec![2, 3], init: Init::Normal { std: 1.0 }, buffer: false },
            ParamSpec { name: "a.bias".into(), shape: vec![2], init: Init::Const(0.5), buffer: false },
        ];
        let w = Weights::random(&params, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        w.save(&path).unwrap();
        let back = Weights::load(&path).unwrap();
        assert_eq!(back.get("a.weight", &[2, 3]).unwrap(), w.get("a.weight", &[2, 3]).unwrap());
        assert_eq!(back.get("a.bias", &[2]).unwrap().data, vec![0.5, 0.5]);
        let err = back.get("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(err.contains("a.weight") && err.contains("[3, 2]") && err.contains("[2, 3]"), "{err}");
        assert!(back.get("b.weight", &[1]).unwrap_err().to_string().contains("b.weight"));
        let garbage = dir.path().join("bad.safetensors");
        std::fs::write(&garbage, b"not safetensors").unwrap();
        assert!(Weights::load(&garbage).unwrap_err().to_string().contains("bad.safetensors"));
    }

    #[test]
    fn slicing_takes_the_leading_block_and_names_a_too_large_request() {
        let mut w = Weights::default();
        w.insert("c.weight", Tensor { shape: vec![3, 2, 2], data: (0..12).map(|v| v as f32).collect() });
        w.insert("c.bias", Tensor { shape: vec![3], data: vec![1.0, 2.0, 3.0] });
        w.insert("other", Tensor { shape: vec![1], data: vec![0.0] });
        let spec = |name: &str, shape: Vec<usize>| ParamSpec {
            name: name.into(),
            shape,
            init: Init::Const(0.0),
            buffer: false,
        };
        let s = w.sliced_to(&[spec("c.weight", vec![2, 1, 2]), spec("c.bias", vec![2])]).unwrap();
        assert_eq!(s.get("c.weight", &[2, 1, 2]).unwrap().data, vec![0.0, 1.0, 4.0, 5.0]);
        assert_eq!(s.get("c.bias", &[2]).unwrap().data, vec![1.0, 2.0]);
        assert_eq!(s.names().collect::<Vec<_>>(), ["c.bias", "c.weight"], "only the requested tensors");
        let full = w.sliced_to(&[spec("c.weight", vec![3, 2, 2])]).unwrap();
        assert_eq!(full.get("c.weight", &[3, 2, 2]).unwrap().data, (0..12).map(|v| v as f32).collect::<Vec<_>>());
        let err = w.sliced_to(&[spec("c.weight", vec![4, 2, 2])]).unwrap_err().to_string();
        assert!(err.contains("c.weight") && err.contains("[4, 2, 2]") && err.contains("[3, 2, 2]"), "{err}");
        let err = w.sliced_to(&[spec("c.weight", vec![3, 4])]).unwrap_err().to_string();
        assert!(err.contains("c.weight"), "{err}");
        assert!(w.sliced_to(&[spec("gone", vec![1])]).unwrap_err().to_string().contains("gone"));
    }

    #[test]
    fn normal_samples_have_unit_variance() {
        let mut rng = Rng::seed(2);
        let xs: Vec<f32> = (0..20000).map(|_| normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }

    #[test]
    fn detection_loads_set_only_the_classification_bias() {
        let mut w = Weights::default();
        w.insert("head.classification_head.cls_logits.bias", Tensor { shape: vec![2], data: vec![0.5, -1.0] });
        w.insert("head.regression_head.bbox_reg.bias", Tensor { shape: vec![1], data: vec![0.5] });
        w.insert("head.regression_head.bbox_reg.weight", Tensor { shape: vec![1], data: vec![0.5] });
        w.insert("head.classification_head.cls_logits.weight", Tensor { shape: vec![1], data: vec![0.5] });
        w.insert("head.classification_head.conv.0.weight", Tensor { shape: vec![1], data: vec![0.5] });
        let w = w.with_detections(DetectionLoad::None);
        assert_eq!(w.get("head.classification_head.cls_logits.bias", &[2]).unwrap().data, [-40.0, -40.0]);
        assert_eq!(w.get("head.regression_head.bbox_reg.bias", &[1]).unwrap().data, [0.5]);
        assert_eq!(w.get("head.classification_head.cls_logits.weight", &[1]).unwrap().data, [0.5]);
        let w = w.with_detections(DetectionLoad::Cap);
        assert_eq!(w.get("head.classification_head.cls_logits.bias", &[2]).unwrap().data, [8.0, 8.0]);
        for zeroed in [
            "regression_head.bbox_reg.bias",
            "regression_head.bbox_reg.weight",
            "classification_head.cls_logits.weight",
        ] {
            assert_eq!(w.get(&format!("head.{zeroed}"), &[1]).unwrap().data, [0.0], "{zeroed}");
        }
        assert_eq!(
            w.get("head.classification_head.conv.0.weight", &[1]).unwrap().data,
            [0.5],
            "the towers keep theirs"
        );
        assert_eq!(DetectionLoad::parse("cap").unwrap(), DetectionLoad::Cap);
        assert!(DetectionLoad::parse("some").is_err());
    }
}

//! The model contract as the SDK checks it: metadata and interface at load time, outputs on
//! every run. Names and keys come from [`detnas_core::detector::contract`].

use crate::error::{InferError, Result};
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::boxes::BBox;
use detnas_core::detector::contract::{FORMAT_VERSION, keys, tensors};
use ort::session::Session;
use ort::value::TensorElementType;

/// What the model says about itself (from its metadata), and what runs it.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct ModelInfo {
    /// The search space the backbone comes from (`detnas-300m`).
    pub space: String,
    /// The architecture: a preset name or a genome.
    pub arch: String,
    /// The detector configuration the graph was exported with (input, classes, thresholds).
    pub config: DetectorConfig,
    /// Metadata entries as stored.
    pub metadata: Vec<(String, String)>,
    /// The execution provider actually running the model.
    pub provider: String,
    /// One line when the requested device was unavailable and the CPU runs instead
    /// (also [`crate::Detector::device_warning`]).
    pub device_warning: Option<String>,
    /// The ONNX Runtime library in use and how it was found.
    pub runtime: crate::runtime::RuntimeInfo,
}

const OUTPUTS: [(&str, &str, TensorElementType); 3] = [
    (tensors::BOXES, "float32 [N, 4]", TensorElementType::Float32),
    (tensors::SCORES, "float32 [N]", TensorElementType::Float32),
    (tensors::LABELS, "int64 [N]", TensorElementType::Int64),
];

/// Reads the metadata contract, validates it, and checks the graph's inputs and outputs against it.
pub(crate) fn read_contract(session: &Session, name: &str) -> Result<ModelInfo> {
    let invalid = |expected: String, actual: String| InferError::ModelContract { path: name.into(), expected, actual };
    let meta = session.metadata().map_err(|e| InferError::Model {
        path: name.into(),
        reason: "cannot read the metadata".into(),
        source: Some(Box::new(e)),
    })?;
    let mut metadata = Vec::new();
    for k in meta.custom_keys().unwrap_or_default() {
        if let Some(v) = meta.custom(&k) {
            metadata.push((k, v));
        }
    }
    let config = check_metadata(&metadata, name)?;
    let get = |k: &str| metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());

    let inputs = session.inputs();
    let expected_input =
        format!("one input `{}` float32 [1, 3, {}, {}]", tensors::IMAGES, config.input.height, config.input.width);
    let describe = |o: &ort::value::Outlet| format!("`{}` {:?}", o.name(), o.dtype());
    if inputs.len() != 1 || inputs[0].name() != tensors::IMAGES {
        let actual = inputs.iter().map(describe).collect::<Vec<_>>().join(", ");
        return Err(invalid(expected_input, if actual.is_empty() { "no inputs".into() } else { actual }));
    }
    let dims = inputs[0].dtype().tensor_shape().map(|s| s.to_vec());
    let ty = inputs[0].dtype().tensor_type();
    let want = vec![1, 3, config.input.height as i64, config.input.width as i64];
    if dims.as_ref() != Some(&want) || ty != Some(TensorElementType::Float32) {
        return Err(invalid(expected_input, describe(&inputs[0])));
    }
    for (out_name, shape, want_ty) in OUTPUTS {
        match session.outputs().iter().find(|o| o.name() == out_name) {
            Some(o) if o.dtype().tensor_type() == Some(want_ty) => {}
            Some(o) => return Err(invalid(format!("output `{out_name}` {shape}"), describe(o))),
            None => {
                let actual = session.outputs().iter().map(describe).collect::<Vec<_>>().join(", ");
                return Err(invalid(format!("output `{out_name}` {shape}"), format!("outputs {actual}")));
            }
        }
    }
    Ok(ModelInfo {
        space: get(keys::SPACE).unwrap_or_default(),
        arch: get(keys::ARCH).unwrap_or_default(),
        config,
        metadata,
        provider: String::new(),
        device_warning: None,
        runtime: crate::runtime::info()?.clone(),
    })
}

/// The metadata checks of [`crate::Detector`] loading, without ONNX Runtime (on a model's
/// `metadata_props` read by any ONNX parser): `detnas.config` present and a detector
/// configuration; class names non-empty and distinct, one category id per class; a known format
/// version and detector kind; `detnas.classes` agreeing with the configuration; a model of one
/// image per run. Returns the configuration; errors ([`InferError::ModelContract`],
/// [`InferError::Metadata`]) name the model `name`.
pub fn check_metadata(metadata: &[(String, String)], name: &str) -> Result<DetectorConfig> {
    let invalid = |expected: String, actual: String| InferError::ModelContract { path: name.into(), expected, actual };
    let get = |k: &str| metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let config_json = get(keys::CONFIG).ok_or_else(|| {
        invalid(format!("metadata entry `{}` (a model exported by detnas)", keys::CONFIG), "no such entry".into())
    })?;
    let config: DetectorConfig = serde_json::from_str(&config_json)
        .map_err(|e| invalid(format!("a valid detector configuration in `{}`", keys::CONFIG), e.to_string()))?;
    validate_metadata(&config, &get, name)?;
    if let Some(b) = get(keys::BATCH).filter(|b| b != "1") {
        return Err(invalid(
            "a model of one image per run (export without --batch)".into(),
            format!(
                "a batch-{b} model (`{}` input [{b}, 3, H, W]; run it with ONNX Runtime directly)",
                tensors::IMAGES
            ),
        ));
    }
    Ok(config)
}

/// The metadata's own consistency: class names non-empty and distinct, one category id per class,
/// a known format version and detector kind, and `detnas.classes` agreeing with the config.
fn validate_metadata(config: &DetectorConfig, get: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<()> {
    let bad = |reason: String| InferError::Metadata { path: name.into(), reason };
    config.validate_classes().map_err(|e| bad(e.to_string()))?;
    if let Some(v) = get(keys::FORMAT).filter(|v| v != FORMAT_VERSION) {
        return Err(bad(format!("`{}` is {v:?}; this SDK reads version {FORMAT_VERSION}", keys::FORMAT)));
    }
    if let Some(kind) = get(keys::DETECTOR).filter(|k| k != config.kind().name()) {
        let want = config.kind().name();
        return Err(bad(format!("`{}` is {kind:?} but `{}` describes a {want}", keys::DETECTOR, keys::CONFIG)));
    }
    if let Some(classes) = get(keys::CLASSES) {
        let listed: Vec<String> = serde_json::from_str(&classes)
            .map_err(|e| bad(format!("`{}` is not a JSON list of names: {e}", keys::CLASSES)))?;
        if listed != config.class_names {
            let (c, k) = (keys::CLASSES, keys::CONFIG);
            return Err(bad(format!("`{c}` lists {listed:?} but `{k}` has {:?}", config.class_names)));
        }
    }
    Ok(())
}

/// Checks one run's raw outputs: equal counts, labels within the class list, finite boxes with
/// `x1 <= x2` and `y1 <= y2`, finite scores. The error names the first offending detection.
pub(crate) fn check_outputs(
    boxes: &[BBox],
    scores: &[f32],
    labels: &[i64],
    num_classes: usize,
    name: &str,
) -> Result<()> {
    let bad = |reason: String| InferError::BadOutput { path: name.into(), reason };
    if boxes.len() != scores.len() || scores.len() != labels.len() {
        let (b, s, l) = (boxes.len(), scores.len(), labels.len());
        return Err(bad(format!("{b} boxes, {s} scores and {l} labels (counts must agree)")));
    }
    for (i, ((b, &s), &l)) in boxes.iter().zip(scores).zip(labels).enumerate() {
        if l < 0 || l as usize >= num_classes {
            return Err(bad(format!("detection {i} has label {l}, outside the {num_classes} classes")));
        }
        if !s.is_finite() {
            return Err(bad(format!("detection {i} has score {s}")));
        }
        if b.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("detection {i} has a non-finite box {b:?}")));
        }
        if b[2] < b[0] || b[3] < b[1] {
            return Err(bad(format!("detection {i} has an inverted box {b:?} (x2 < x1 or y2 < y1)")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_outputs_are_named() {
        let ok = [[0.0, 0.0, 1.0, 1.0]];
        assert!(check_outputs(&ok, &[0.5], &[1], 2, "m").is_ok());
        let e = |b: [f32; 4], s: f32, l: i64| check_outputs(&[b], &[s], &[l], 2, "m.onnx").unwrap_err().to_string();
        assert!(e([0.0, 0.0, 1.0, 1.0], 0.5, 2).contains("label 2, outside the 2 classes"));
        assert!(e([0.0, 0.0, 1.0, 1.0], 0.5, -1).contains("label -1"));
        assert!(e([5.0, 0.0, 1.0, 1.0], 0.5, 0).contains("inverted box"));
        assert!(e([f32::NAN, 0.0, 1.0, 1.0], 0.5, 0).contains("non-finite box"));
        assert!(e([0.0, 0.0, 1.0, 1.0], f32::INFINITY, 0).contains("score inf"));
        assert!(e([0.0, 0.0, 1.0, 1.0], 0.5, 7).contains("m.onnx"));
        let counts = check_outputs(&ok, &[0.5, 0.4], &[0], 2, "m").unwrap_err().to_string();
        assert!(counts.contains("counts must agree"), "{counts}");
    }
}

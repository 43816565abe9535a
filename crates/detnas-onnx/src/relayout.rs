//! An exported float detector written again with another [`Layout`]: the same genome,
//! configuration and (BN-folded) weights, read back from the model itself, so a model exported
//! before shuffle-free layouts existed (or shipped without its checkpoint) can be converted.

use crate::error::{OnnxError, Result};
use crate::layout::Layout;
use crate::quantize::float_data;
use crate::weights::{Tensor, Weights};
use crate::{ExportOptions, ModelProto, export_detector};
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::contract::{keys, tensors};
use detnas_core::search::genome::Genome;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{StringStringEntryProto, TensorProto};
use std::collections::BTreeMap;

/// `model` (read from `name`, named in errors) exported again with `layout`: every output equal
/// within float rounding, its metadata kept (the layout entry set). A model already in `layout`
/// comes back as it is. An error when it is not a float detector exported by detnas (quantized or
/// half-precision models: convert the float model, then quantize), or when it is shuffle-free and
/// `layout` is not (its weights are stored permuted: export the model it was made from again).
pub fn relayout(model: &ModelProto, name: &str, layout: Layout) -> Result<ModelProto> {
    let bad = |reason: &str| OnnxError::Options(format!("{name}: {reason}"));
    let meta: BTreeMap<&str, &str> = model.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    let get =
        |key: &str| meta.get(key).copied().ok_or_else(|| bad(&format!("no `{key}` metadata: not a detnas export")));
    let graph = model.graph.as_ref().ok_or_else(|| bad("no graph"))?;
    let converted =
        [crate::quantize::QUANTIZATION_KEY, crate::half::PRECISION_KEY].iter().any(|k| meta.contains_key(k))
            || graph.node.iter().any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")
            || graph.initializer.iter().any(|t| t.data_type != DataType::FLOAT as i32 && is_weight(t));
    if converted {
        return Err(bad("a quantized or half-precision model: convert the float model, then quantize it"));
    }
    let config: DetectorConfig =
        serde_json::from_str(get(keys::CONFIG)?).map_err(|e| bad(&format!("`{}` metadata: {e}", keys::CONFIG)))?;
    let genome = Genome::parse(Some(get(keys::SPACE)?), get(keys::ARCH)?)?;
    let source = match meta.get(keys::LAYOUT) {
        Some(l) => Layout::from_name(l).ok_or_else(|| bad(&format!("unknown `{}` metadata: {l}", keys::LAYOUT)))?,
        None => Layout::Shuffle,
    };
    if source == layout {
        return Ok(model.clone());
    }
    if source != Layout::Shuffle {
        return Err(bad(&format!(
            "is {source}: its weights are stored in that channel order; export the model it was made from with --layout {layout}"
        )));
    }
    let batch = match meta.get(keys::BATCH) {
        Some(b) => b.parse().map_err(|_| bad(&format!("`{}` metadata is not a number: {b}", keys::BATCH)))?,
        None => 1,
    };
    let raw_outputs = graph.output.iter().any(|o| o.name == tensors::CLS_LOGITS || o.name == crate::PROPOSALS);
    let mut weights = Weights::default();
    weights.source = name.to_string();
    weights.folded = true;
    for t in graph.initializer.iter().filter(|t| is_weight(t)) {
        let shape = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad("a negative dimension")))
            .collect::<Result<_>>()?;
        weights.insert(&t.name, Tensor { shape, data: float_data(t)? });
    }
    let options = ExportOptions { raw_outputs, batch, layout };
    let mut out = export_detector(&genome.space, &genome.arch, &config, &weights, &options)?;
    // the provenance as it was; only the layout entry changes
    out.metadata_props = model.metadata_props.iter().filter(|e| e.key != keys::LAYOUT).cloned().collect();
    if !layout.is_default() {
        let mut e = StringStringEntryProto::new();
        e.key = keys::LAYOUT.to_string();
        e.value = layout.name().to_string();
        out.metadata_props.push(e);
    }
    out.doc_string = model.doc_string.clone();
    Ok(out)
}

/// A parameter tensor (`<module>.weight` / `<module>.bias`), not a graph constant.
fn is_weight(t: &TensorProto) -> bool {
    t.name.ends_with(".weight") || t.name.ends_with(".bias")
}

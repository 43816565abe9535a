//! `detnas inspect`: inputs, outputs, metadata, parameters and FLOPs of an ONNX model (any ONNX
//! model; detnas metadata is shown when present). Pure Rust: no ONNX Runtime needed. External data
//! files (`m.onnx.data`) are listed with their sizes; a reference that leaves the model's folder
//! (absolute or `..`) or a missing file is flagged.

use anyhow::{Context, Result};
use clap::Args;
use detnas_core::detector::contract::keys;
use detnas_onnx::ModelProto;
use detnas_onnx::external::external_files;
use detnas_onnx::onnx_protobuf::Message;
use detnas_onnx::onnx_protobuf::tensor_shape_proto::dimension::Value as DimValue;
use detnas_onnx::onnx_protobuf::type_proto::Value as TypeValue;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The ONNX model file (its external data files, if any, are looked for next to it).
    model: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The external data files a model refers to, resolved against the model's folder.
fn external_data(model: &ModelProto, path: &Path) -> Vec<serde_json::Value> {
    let folder = path.parent().unwrap_or(Path::new("."));
    external_files(model)
        .iter()
        .map(|f| {
            let file_bytes = std::fs::metadata(folder.join(&f.location)).ok().map(|m| m.len());
            json!({
                "file": f.location,
                "tensors": f.tensors,
                "bytes": f.bytes,
                "file_bytes": file_bytes,
                "leaves_model_folder": f.leaves_model_folder(),
            })
        })
        .collect()
}

/// One text line per external data file; paths leaving the model's folder and missing files are
/// flagged.
fn external_line(e: &serde_json::Value) -> String {
    let mut line =
        format!("external   {} {} tensors, {} bytes", e["file"].as_str().unwrap_or(""), e["tensors"], e["bytes"]);
    if e["file_bytes"].is_null() {
        line.push_str(" (file missing)");
    }
    if e["leaves_model_folder"].as_bool() == Some(true) {
        line.push_str(" (WARNING: path leaves the model's folder, absolute or `..`; ONNX Runtime refuses it)");
    }
    line
}

fn describe(v: &detnas_onnx::onnx_protobuf::ValueInfoProto) -> serde_json::Value {
    let (dtype, dims) = match v.type_.value.as_ref() {
        Some(TypeValue::TensorType(t)) => {
            let dims: Vec<serde_json::Value> = t
                .shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(DimValue::DimValue(n)) => json!(n),
                    Some(DimValue::DimParam(p)) => json!(p),
                    _ => json!("?"),
                })
                .collect();
            let dtype =
                <detnas_onnx::onnx_protobuf::tensor_proto::DataType as detnas_onnx::ProtoEnum>::from_i32(t.elem_type)
                    .map(|d| format!("{d:?}").to_lowercase())
                    .unwrap_or_else(|| t.elem_type.to_string());
            (dtype, dims)
        }
        _ => ("non-tensor".to_string(), Vec::new()),
    };
    json!({"name": v.name, "dtype": dtype, "shape": dims})
}

pub fn run(args: InspectArgs) -> Result<()> {
    let bytes = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    anyhow::ensure!(!bytes.is_empty(), "{}: empty file, not an ONNX model", args.model.display());
    let model = ModelProto::parse_from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not an ONNX model ({e})", args.model.display()))?;
    anyhow::ensure!(model.graph.is_some(), "{}: ONNX model without a graph", args.model.display());
    let graph = &model.graph;
    // Dims come from the file: a crafted model may declare products past i64 (saturated).
    let params: i64 = graph
        .initializer
        .iter()
        .map(|t| t.dims.iter().try_fold(1i64, |p, &d| p.checked_mul(d.max(0))).unwrap_or(i64::MAX))
        .fold(0i64, i64::saturating_add);
    let metadata: serde_json::Map<String, serde_json::Value> =
        model.metadata_props.iter().map(|e| (e.key.clone(), json!(e.value))).collect();
    let flops: Option<serde_json::Value> =
        metadata.get(keys::FLOPS).and_then(|v| v.as_str()).and_then(|s| serde_json::from_str(s).ok());
    let report = json!({
        "path": args.model.display().to_string(),
        "ir_version": model.ir_version,
        "opsets": model.opset_import.iter().map(|o| json!({"domain": o.domain, "version": o.version})).collect::<Vec<_>>(),
        "producer": format!("{} {}", model.producer_name, model.producer_version),
        "inputs": graph.input.iter().map(describe).collect::<Vec<_>>(),
        "outputs": graph.output.iter().map(describe).collect::<Vec<_>>(),
        "nodes": graph.node.len(),
        "initializer_values": params,
        "flops": flops,
        "external_data": external_data(&model, &args.model),
        "metadata": metadata,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("model      {}", args.model.display());
    println!(
        "format     ONNX IR {}, opset {}, producer {}",
        model.ir_version,
        report["opsets"][0]["version"],
        report["producer"].as_str().unwrap_or("")
    );
    for (kind, list) in [("input", &report["inputs"]), ("output", &report["outputs"])] {
        for v in list.as_array().into_iter().flatten() {
            println!(
                "{kind:<10} {} {} {}",
                v["name"].as_str().unwrap_or(""),
                v["dtype"].as_str().unwrap_or(""),
                v["shape"]
            );
        }
    }
    for e in report["external_data"].as_array().into_iter().flatten() {
        println!("{}", external_line(e));
    }
    println!("graph      {} nodes, {} parameter values (after BN folding)", graph.node.len(), params);
    if let Some(f) = &report["flops"].as_object() {
        let g = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(detnas_core::size::format_count).unwrap_or_default();
        // Faster R-CNN splits its head into the RPN and the RoI head (at the test-time proposals).
        let heads = match f.get("rpn").and_then(|v| v.as_u64()) {
            Some(rpn) if rpn > 0 => format!("rpn {} + roi head {}", g("rpn"), g("roi_head")),
            _ => format!("head {}", g("head")),
        };
        println!("flops      total {} = backbone {} + fpn {} + {heads}", g("total"), g("backbone"), g("fpn"));
    }
    for (k, v) in &metadata {
        if k != keys::CONFIG && k != keys::FLOPS {
            println!("meta       {k} = {}", v.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

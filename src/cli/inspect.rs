//! `detnas inspect`: inputs, outputs, metadata, parameters and FLOPs of an ONNX model (any ONNX
//! model; detnas metadata is shown when present). Pure Rust: no ONNX Runtime needed.

use anyhow::{Context, Result};
use clap::Args;
use detnas_onnx::ModelProto;
use detnas_onnx::onnx_protobuf::Message;
use detnas_onnx::onnx_protobuf::tensor_shape_proto::dimension::Value as DimValue;
use detnas_onnx::onnx_protobuf::type_proto::Value as TypeValue;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    model: PathBuf,
    #[arg(long)]
    json: bool,
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
    let params: i64 = graph.initializer.iter().map(|t| t.dims.iter().product::<i64>()).sum();
    let metadata: serde_json::Map<String, serde_json::Value> =
        model.metadata_props.iter().map(|e| (e.key.clone(), json!(e.value))).collect();
    let flops: Option<serde_json::Value> =
        metadata.get("detnas.flops").and_then(|v| v.as_str()).and_then(|s| serde_json::from_str(s).ok());
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
    println!("graph      {} nodes, {} parameter values (after BN folding)", graph.node.len(), params);
    if let Some(f) = &report["flops"].as_object() {
        let g = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(detnas_core::size::format_count).unwrap_or_default();
        println!(
            "flops      total {} = backbone {} + fpn {} + head {}",
            g("total"),
            g("backbone"),
            g("fpn"),
            g("head")
        );
    }
    for (k, v) in &metadata {
        if k != "detnas.config" && k != "detnas.flops" {
            println!("meta       {k} = {}", v.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

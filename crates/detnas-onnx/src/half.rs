//! Half-precision (fp16) conversion of an exported detector for GPU execution providers.
//!
//! The network (every node the head's last convolutions depend on: normalisation, backbone, FPN,
//! head) runs in float16: its float initializers become float16, the float32 `images` input is cast
//! on entry, and the head's outputs are cast back to float32 before the post-processing (box
//! decoding, NMS), which stays in float32 as do the model's inputs and outputs. `Resize` keeps its
//! float32 `roi` / `scales` inputs, as the operator requires.

use crate::error::{OnnxError, Result};
use crate::quantize::{conv_sites, set_metadata};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, ModelProto, NodeProto, TensorProto, attribute_proto::AttributeType};
use std::collections::{HashMap, HashSet};

/// Metadata key of a converted model: `fp16`.
pub const PRECISION_KEY: &str = "detnas.precision";

/// IEEE 754 binary16 bits of `v`, rounded to nearest even (overflow to infinity).
pub fn f16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let mant = x & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut r = m >> shift;
        if rest > half || (rest == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && r & 1 == 1) {
        r += 1; // may carry into the exponent, which is the correct rounding
    }
    sign | r as u16
}

fn to_half(t: &TensorProto, name: String) -> Result<TensorProto> {
    let values = crate::quantize::float_data(t)?;
    let mut h = TensorProto::new();
    h.name = name;
    h.dims = t.dims.clone();
    h.data_type = DataType::FLOAT16 as i32;
    h.raw_data = values.iter().flat_map(|v| f16_bits(*v).to_le_bytes()).collect();
    Ok(h)
}

fn cast(name: String, input: String, output: String, to: DataType) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = "Cast".into();
    n.name = name;
    n.input = vec![input];
    n.output = vec![output];
    let mut a = AttributeProto::new();
    a.name = "to".into();
    a.i = to as i64;
    a.type_ = AttributeType::INT.into();
    n.attribute.push(a);
    n
}

/// The nodes of `g` that `heads` depend on (the network), found through `producer` (value ->
/// index of the node writing it).
fn network_nodes(g: &onnx_protobuf::GraphProto, heads: &[String], producer: &HashMap<String, usize>) -> HashSet<usize> {
    let mut network: HashSet<usize> = HashSet::new();
    let mut stack: Vec<String> = heads.to_vec();
    while let Some(v) = stack.pop() {
        if let Some(&i) = producer.get(&v)
            && network.insert(i)
        {
            stack.extend(g.node[i].input.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    network
}

/// The names of the float32 tensor inputs of `g`.
fn float_graph_inputs(g: &onnx_protobuf::GraphProto) -> HashSet<String> {
    g.input
        .iter()
        .filter(|i| {
            i.type_.as_ref().and_then(|t| t.value.as_ref()).is_some_and(|v| {
                matches!(v, onnx_protobuf::type_proto::Value::TensorType(t) if t.elem_type == DataType::FLOAT as i32)
            })
        })
        .map(|i| i.name.clone())
        .collect()
}

/// Makes the `network` nodes among `nodes` read float16: a float32 graph input of `g` through a
/// `Cast` (`<v>_fp16`, one per input), a float32 initializer through a float16 copy (`<v>_fp16`),
/// except the `roi` / `scales` inputs of `Resize`. Returns the entry casts and the new
/// initializers; an error when a float initializer's values do not match its shape.
fn halve_network_inputs(
    g: &onnx_protobuf::GraphProto,
    nodes: &mut [NodeProto],
    network: &HashSet<usize>,
) -> Result<(Vec<NodeProto>, Vec<TensorProto>)> {
    let float_inputs = float_graph_inputs(g);
    let inits: HashMap<String, usize> = g.initializer.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
    let mut half_inits: HashMap<String, String> = HashMap::new();
    let mut new_inits = Vec::new();
    let mut entry_casts = Vec::new();
    let mut cast_inputs: HashMap<String, String> = HashMap::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        if !network.contains(&i) {
            continue;
        }
        let keep_float: &[usize] = if node.op_type == "Resize" { &[1, 2] } else { &[] };
        for k in 0..node.input.len() {
            let v = node.input[k].clone();
            if v.is_empty() || keep_float.contains(&k) {
                continue;
            }
            if float_inputs.contains(&v) {
                let h = cast_inputs.entry(v.clone()).or_insert_with(|| {
                    let out = format!("{v}_fp16");
                    entry_casts.push(cast(format!("{v}/to_fp16"), v.clone(), out.clone(), DataType::FLOAT16));
                    out
                });
                node.input[k] = h.clone();
            } else if let Some(&t) = inits.get(&v) {
                if g.initializer[t].data_type != DataType::FLOAT as i32 {
                    continue;
                }
                let h = match half_inits.get(&v) {
                    Some(h) => h.clone(),
                    None => {
                        let h = format!("{v}_fp16");
                        new_inits.push(to_half(&g.initializer[t], h.clone())?);
                        half_inits.insert(v.clone(), h.clone());
                        h
                    }
                };
                node.input[k] = h;
            }
        }
    }
    Ok((entry_casts, new_inits))
}

/// Casts each of `heads` back to float32 (`<h>_fp32`) for the nodes outside `network`: returns the
/// casts by the index of the node (per `producer`) they follow, and each head's float32 name. Those
/// nodes among `nodes` are changed to read the float32 names.
fn cast_heads_back(
    nodes: &mut [NodeProto],
    network: &HashSet<usize>,
    heads: &[String],
    producer: &HashMap<String, usize>,
) -> (HashMap<usize, Vec<NodeProto>>, HashMap<String, String>) {
    let mut exit_casts: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut renamed: HashMap<String, String> = HashMap::new();
    for h in heads {
        let out = format!("{h}_fp32");
        exit_casts.entry(producer[h]).or_default().push(cast(
            format!("{h}/to_fp32"),
            h.clone(),
            out.clone(),
            DataType::FLOAT,
        ));
        renamed.insert(h.clone(), out);
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        if !network.contains(&i) {
            for input in n.input.iter_mut() {
                if let Some(r) = renamed.get(input) {
                    *input = r.clone();
                }
            }
        }
    }
    (exit_casts, renamed)
}

/// The fp16 version of `model` (see the module docs).
pub fn to_fp16(model: &ModelProto) -> Result<ModelProto> {
    let heads: Vec<String> = conv_sites(model)?.into_iter().filter(|s| s.terminal).map(|s| s.output).collect();
    if heads.is_empty() {
        return Err(OnnxError::Quantize("no convolution with constant weights to convert".into()));
    }
    let mut m = model.clone();
    let g = m.graph.as_mut().ok_or_else(|| OnnxError::Quantize("the model has no graph".into()))?;
    let producer: HashMap<String, usize> =
        g.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i))).collect();
    // The network: every node the head outputs depend on.
    let network = network_nodes(g, &heads, &producer);
    let mut nodes = std::mem::take(&mut g.node);
    let (entry_casts, new_inits) = halve_network_inputs(g, &mut nodes, &network)?;
    // Head outputs back to float32 for every reader outside the network and for graph outputs.
    let (mut exit_casts, renamed) = cast_heads_back(&mut nodes, &network, &heads, &producer);
    let mut ordered = entry_casts;
    for (i, n) in nodes.into_iter().enumerate() {
        ordered.push(n);
        ordered.extend(exit_casts.remove(&i).unwrap_or_default());
    }
    g.node = ordered;
    if let Some(o) = g.output.iter().find(|o| renamed.contains_key(&o.name)) {
        return Err(OnnxError::Quantize(format!("graph output `{}` is a head output; not supported", o.name)));
    }
    g.initializer.extend(new_inits);
    let read: HashSet<String> = g.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    g.initializer.retain(|t| read.contains(&t.name));
    g.value_info.clear();
    set_metadata(&mut m, PRECISION_KEY, "fp16".into());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_bits_round_to_nearest_even() {
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(1e6), 0x7c00, "overflow to infinity");
        assert_eq!(f16_bits(0.0), 0);
        assert_eq!(f16_bits(5.960_464_5e-8), 1, "smallest subnormal");
        assert_eq!(f16_bits(1.0 + 1.0 / 2048.0), 0x3c00, "a tie rounds to even");
        assert_eq!(f16_bits(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f16_bits(0.1), 0x2e66);
        assert!(f16_bits(f32::NAN) & 0x7c00 == 0x7c00 && f16_bits(f32::NAN) & 0x3ff != 0);
    }
}

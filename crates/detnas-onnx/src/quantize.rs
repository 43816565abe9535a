//! Static INT8 quantization of a float ONNX model in QDQ form (the form ONNX Runtime fuses into
//! integer kernels such as `QLinearConv`).
//!
//! Only convolutions with constant weights are quantized ([`conv_sites`]); everything else (the
//! in-graph normalisation, resizes, concatenations, box decoding, NMS) stays in float, except the
//! backbone of a shuffle-free model, whose splits and concatenations are quantized with one scale
//! per stage so that they run as uint8 copies between the integer convolutions. For each
//! quantized convolution:
//! - weights: int8, symmetric, per output channel (`DequantizeLinear` on axis 0), the scale
//!   `max |w_c| / 127` (`/ 63` with [`QuantPlan::reduce_range`], for CPUs whose int8 dot products
//!   saturate in 16 bits);
//! - bias: int32 with scale `s_input * s_weight[c]` and zero point 0;
//! - its input and its output (after a directly following `Relu`) as `QuantizeLinear` ->
//!   `DequantizeLinear` pairs, uint8, asymmetric, per tensor, from calibrated ranges. Every reader of
//!   such a tensor reads the dequantized value, so a quantized tensor has one value in the graph.
//!
//! The calibration itself (running the float model on images) lives with ONNX Runtime in
//! `detnas-infer`; this module only needs the ranges.

use crate::error::{OnnxError, Result};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto::{self, Tensor as TensorType};
use onnx_protobuf::{AttributeProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto};
use onnx_protobuf::{StringStringEntryProto, attribute_proto::AttributeType};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Metadata key of a quantized model: the calibration and quantization record as JSON.
pub const QUANTIZATION_KEY: &str = "detnas.quantization";

/// One convolution that can be quantized: constant weights (and bias) in the initializers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvSite {
    /// The node's name (unique; nodes without a name get `conv#<index>`).
    pub name: String,
    /// Position of the node in the graph.
    pub index: usize,
    /// The activation read.
    pub input: String,
    /// The weight initializer.
    pub weight: String,
    /// The bias initializer, when the convolution has one.
    pub bias: Option<String>,
    /// The activation written: the output of a `Relu` that is the convolution's only reader, else
    /// the convolution's own output.
    pub output: String,
    /// Output channels.
    pub channels: usize,
    /// Whether no other convolution reads from this one, directly or through other nodes (the last
    /// layers of the head): their outputs measure what quantization does to the network's result.
    pub terminal: bool,
}

/// What to quantize and with which activation ranges.
#[derive(Clone, Debug, Default)]
pub struct QuantPlan {
    /// Names of the [`ConvSite`]s to quantize.
    pub convs: Vec<String>,
    /// `(min, max)` of every activation read or written by those convolutions.
    pub ranges: BTreeMap<String, (f32, f32)>,
    /// 7-bit weights (`[-63, 63]`).
    pub reduce_range: bool,
}

/// The rewritten model and where each quantized activation's dequantized value lives.
#[derive(Debug)]
pub struct Quantized {
    /// The rewritten model.
    pub model: ModelProto,
    /// Activation name -> name of its `DequantizeLinear` output.
    pub dequantized: BTreeMap<String, String>,
}

fn graph(model: &ModelProto) -> Result<&onnx_protobuf::GraphProto> {
    model.graph.as_ref().ok_or_else(|| OnnxError::Quantize("the model has no graph".into()))
}

/// The convolutions of `model` with constant weights (float32, at least 3 dimensions, all
/// positive), in graph order.
pub fn conv_sites(model: &ModelProto) -> Result<Vec<ConvSite>> {
    let g = graph(model)?;
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for input in &n.input {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }
    let mut sites = Vec::new();
    for (index, n) in g.node.iter().enumerate() {
        if n.op_type != "Conv" || n.input.len() < 2 || n.output.len() != 1 {
            continue;
        }
        let Some(w) = inits.get(n.input[1].as_str()) else { continue };
        if w.data_type != DataType::FLOAT as i32 || w.dims.len() < 3 || w.dims.iter().any(|&d| d <= 0) {
            continue;
        }
        let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned();
        if bias.as_deref().is_some_and(|b| !inits.contains_key(b)) {
            continue;
        }
        let out = n.output[0].as_str();
        let output = match readers.get(out).map(Vec::as_slice) {
            Some([r]) if g.node[*r].op_type == "Relu" && !g.node[*r].output.is_empty() => g.node[*r].output[0].clone(),
            _ => out.to_string(),
        };
        let name = if n.name.is_empty() { format!("conv#{index}") } else { n.name.clone() };
        let channels = w.dims[0] as usize;
        sites.push(ConvSite {
            name,
            index,
            input: n.input[0].clone(),
            weight: n.input[1].clone(),
            bias,
            output,
            channels,
            terminal: false,
        });
    }
    // A site is terminal when no convolution is reachable from its output.
    let conv_nodes: HashSet<usize> = sites.iter().map(|s| s.index).collect();
    for site in &mut sites {
        let mut stack = vec![site.output.clone()];
        let mut seen: HashSet<String> = HashSet::new();
        let mut reaches = false;
        while let Some(v) = stack.pop() {
            if !seen.insert(v.clone()) {
                continue;
            }
            for &r in readers.get(v.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                if conv_nodes.contains(&r) {
                    reaches = true;
                    break;
                }
                stack.extend(g.node[r].output.iter().cloned());
            }
            if reaches {
                break;
            }
        }
        site.terminal = !reaches;
    }
    Ok(sites)
}

/// A copy of `model` that also outputs each of `values` (float, shape left open), for calibration
/// and for measuring intermediate tensors. Values already output are not repeated.
pub fn with_outputs(model: &ModelProto, values: &[String]) -> Result<ModelProto> {
    let mut m = model.clone();
    let g = m.graph.as_mut().ok_or_else(|| OnnxError::Quantize("the model has no graph".into()))?;
    let existing: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    for v in values.iter().filter(|v| !existing.contains(*v)) {
        let mut tensor = TensorType::new();
        tensor.elem_type = DataType::FLOAT as i32;
        let mut tp = TypeProto::new();
        tp.value = Some(type_proto::Value::TensorType(tensor));
        let mut vi = ValueInfoProto::new();
        vi.name = v.clone();
        vi.type_ = Some(tp).into();
        g.output.push(vi);
    }
    Ok(m)
}

/// The float values of an initializer (raw little-endian data or `float_data`); an error naming
/// it when it is not float32 or its values are not as many as its dimensions (non-negative, their
/// product within `u64`) say.
pub fn float_data(t: &TensorProto) -> Result<Vec<f32>> {
    if t.data_type != DataType::FLOAT as i32 {
        return Err(OnnxError::Quantize(format!("initializer `{}` is not float32", t.name)));
    }
    let n = t.dims.iter().try_fold(1u64, |n, &d| u64::try_from(d).ok().and_then(|d| n.checked_mul(d)));
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        t.float_data.clone()
    };
    if n != Some(values.len() as u64) {
        let reason = format!("initializer `{}` holds {} values for shape {:?}", t.name, values.len(), t.dims);
        return Err(OnnxError::Quantize(reason));
    }
    Ok(values)
}

/// Scale and zero point of an asymmetric uint8 activation covering `(min, max)` and 0.
pub fn activation_params((min, max): (f32, f32)) -> (f32, u8) {
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) || !(hi - lo).is_finite() {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// Per-output-channel symmetric int8 weights and their scales.
fn quantize_weights(w: &[f32], channels: usize, qmax: f32) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / channels.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for c in w.chunks(per.max(1)) {
        let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if amax > 0.0 && amax.is_finite() { amax / qmax } else { 1.0 };
        scales.push(s);
        q.extend(c.iter().map(|v| (v / s).round().clamp(-qmax, qmax) as i8));
    }
    (q, scales)
}

fn raw_tensor(name: &str, dims: &[i64], ty: DataType, raw: Vec<u8>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = ty as i32;
    t.raw_data = raw;
    t
}

fn node(op: &str, name: String, inputs: Vec<String>, output: String, axis: Option<i64>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = name;
    n.input = inputs;
    n.output = vec![output];
    if let Some(axis) = axis {
        let mut a = AttributeProto::new();
        a.name = "axis".into();
        a.i = axis;
        a.type_ = AttributeType::INT.into();
        n.attribute.push(a);
    }
    n
}

/// Fresh names that collide with nothing in the graph.
struct Names(HashSet<String>);

impl Names {
    fn fresh(&mut self, base: String) -> String {
        let mut candidate = base.clone();
        let mut k = 0;
        while self.0.contains(&candidate) {
            k += 1;
            candidate = format!("{base}_{k}");
        }
        self.0.insert(candidate.clone());
        candidate
    }
}

/// Integer values of a quantized initializer: int8 weights or int32 biases.
enum IntValues {
    I8(Vec<i8>),
    I32(Vec<i32>),
}

impl IntValues {
    /// The ONNX element type of the values (and of their zero points).
    fn data_type(&self) -> DataType {
        match self {
            IntValues::I8(_) => DataType::INT8,
            IntValues::I32(_) => DataType::INT32,
        }
    }

    /// The values as little-endian bytes.
    fn raw(&self) -> Vec<u8> {
        match self {
            IntValues::I8(v) => v.iter().map(|&v| v as u8).collect(),
            IntValues::I32(v) => v.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The bytes of `channels` zero points of the values' type.
    fn zero_points(&self, channels: usize) -> Vec<u8> {
        match self {
            IntValues::I8(_) => vec![0; channels],
            IntValues::I32(_) => vec![0; 4 * channels],
        }
    }
}

/// What the rewrite adds to a graph: fresh names, new initializers and the weight and bias
/// dequantizers (which read initializers only, so they can go first in the node list).
struct Additions {
    names: Names,
    inits: Vec<TensorProto>,
    weight_nodes: Vec<NodeProto>,
}

impl Additions {
    /// Starts with every name `g` uses (values, nodes, initializers, inputs) taken.
    fn new(g: &onnx_protobuf::GraphProto) -> Self {
        let mut names = Names(HashSet::new());
        for n in &g.node {
            names.0.extend(n.input.iter().chain(&n.output).cloned());
            names.0.insert(n.name.clone());
        }
        names.0.extend(g.initializer.iter().map(|t| t.name.clone()));
        names.0.extend(g.input.iter().map(|t| t.name.clone()));
        Additions { names, inits: Vec::new(), weight_nodes: Vec::new() }
    }

    /// Adds the scale and zero point of activation `v` as initializers and returns its
    /// `QuantizeLinear` -> `DequantizeLinear` pair and the name of the dequantized value.
    fn qdq_pair(&mut self, v: &str, scale: f32, zero: u8) -> (Vec<NodeProto>, String) {
        let names = &mut self.names;
        let s = names.fresh(format!("{v}_scale"));
        let z = names.fresh(format!("{v}_zero_point"));
        self.inits.push(raw_tensor(&s, &[], DataType::FLOAT, scale.to_le_bytes().to_vec()));
        self.inits.push(raw_tensor(&z, &[], DataType::UINT8, vec![zero]));
        let q = names.fresh(format!("{v}_quantized"));
        let dq = names.fresh(format!("{v}_dequantized"));
        let qn = node(
            "QuantizeLinear",
            names.fresh(format!("{v}/Q")),
            vec![v.to_string(), s.clone(), z.clone()],
            q.clone(),
            None,
        );
        let dqn = node("DequantizeLinear", names.fresh(format!("{v}/DQ")), vec![q, s, z], dq.clone(), None);
        (vec![qn, dqn], dq)
    }

    /// Adds `values` (shape `dims`, the integer form of initializer `base`), their per-channel
    /// `scales` and zero points (0, `channels` of each) as initializers, and a `DequantizeLinear` on
    /// axis 0 that reads them; returns the name of its float output.
    fn channel_dequantizer(
        &mut self,
        base: &str,
        dims: &[i64],
        values: IntValues,
        scales: &[f32],
        channels: usize,
    ) -> String {
        let names = &mut self.names;
        let (q, s, z) = (
            names.fresh(format!("{base}_quantized")),
            names.fresh(format!("{base}_scale")),
            names.fresh(format!("{base}_zero_point")),
        );
        let c = channels as i64;
        self.inits.push(raw_tensor(&q, dims, values.data_type(), values.raw()));
        self.inits.push(raw_tensor(&s, &[c], DataType::FLOAT, scales.iter().flat_map(|v| v.to_le_bytes()).collect()));
        self.inits.push(raw_tensor(&z, &[c], values.data_type(), values.zero_points(channels)));
        let dq = names.fresh(format!("{base}_dequantized"));
        let dq_node = node("DequantizeLinear", names.fresh(format!("{base}/DQ")), vec![q, s, z], dq.clone(), Some(0));
        self.weight_nodes.push(dq_node);
        dq
    }

    /// Quantizes the weight (and bias) of `site`, read from `inits`, and returns the dequantized
    /// names the convolution reads instead. Weights are int8 per channel within `[-qmax, qmax]`;
    /// the bias is int32 with scales `in_scale * weight scale`. An error when an initializer is not
    /// float32 or does not match its shape.
    fn conv_weights(
        &mut self,
        site: &ConvSite,
        inits: &HashMap<&str, &TensorProto>,
        in_scale: f32,
        qmax: f32,
    ) -> Result<(String, Option<String>)> {
        let w = inits[site.weight.as_str()];
        let (q, scales) = quantize_weights(&float_data(w)?, site.channels, qmax);
        let weight = self.channel_dequantizer(&site.weight, &w.dims, IntValues::I8(q), &scales, site.channels);
        let bias = match &site.bias {
            Some(b) => {
                let values = float_data(inits[b.as_str()])?;
                let bias_scales: Vec<f32> = scales.iter().map(|w| w * in_scale).collect();
                let q: Vec<i32> = values
                    .iter()
                    .zip(&bias_scales)
                    .map(|(v, s)| {
                        (f64::from(*v) / f64::from(*s)).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
                    })
                    .collect();
                let c = site.channels as i64;
                Some(self.channel_dequantizer(b, &[c], IntValues::I32(q), &bias_scales, site.channels))
            }
            None => None,
        };
        Ok((weight, bias))
    }
}

/// The sites named by `convs`, in that order; an error naming the first that is no site.
fn chosen_sites<'a>(sites: &'a [ConvSite], convs: &[String]) -> Result<Vec<&'a ConvSite>> {
    let by_name: HashMap<&str, &ConvSite> = sites.iter().map(|s| (s.name.as_str(), s)).collect();
    convs
        .iter()
        .map(|c| {
            by_name.get(c.as_str()).copied().ok_or_else(|| OnnxError::Quantize(format!("no quantizable conv `{c}`")))
        })
        .collect()
}

/// Scale and zero point of every activation read or written by `chosen`, from `ranges`; an error
/// naming the first activation without a range.
fn activation_quant_params(
    chosen: &[&ConvSite],
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Result<BTreeMap<String, (f32, u8)>> {
    let mut params = BTreeMap::new();
    for s in chosen {
        for v in [&s.input, &s.output] {
            let range = ranges.get(v).ok_or_else(|| OnnxError::Quantize(format!("no calibrated range for `{v}`")))?;
            params.insert(v.clone(), activation_params(*range));
        }
    }
    Ok(params)
}

/// The values each backbone `Split` and `Concat` of a shuffle-free model connects (its data
/// inputs and outputs), merged where they share one: a stage's block inputs, their pieces and its
/// branch outputs form one group. Empty for other models (no backbone `Split`).
fn shared_scale_groups(g: &onnx_protobuf::GraphProto) -> Vec<Vec<String>> {
    let backbone = |n: &&NodeProto| n.name.starts_with("backbone.") && (n.op_type == "Split" || n.op_type == "Concat");
    let nodes: Vec<&NodeProto> = g.node.iter().filter(backbone).collect();
    if !nodes.iter().any(|n| n.op_type == "Split") {
        return Vec::new();
    }
    // union-find over value names
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    fn root(parent: &mut BTreeMap<String, String>, v: &str) -> String {
        let mut r = v.to_string();
        while let Some(p) = parent.get(&r).filter(|p| **p != r) {
            r = p.clone();
        }
        parent.insert(v.to_string(), r.clone());
        r
    }
    for n in nodes {
        let data = if n.op_type == "Split" { &n.input[..1] } else { &n.input[..] };
        let members: Vec<&String> = data.iter().chain(&n.output).collect();
        let first = root(&mut parent, members[0]);
        for m in &members[1..] {
            let r = root(&mut parent, m);
            parent.insert(r, first.clone());
        }
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in parent.keys().cloned().collect::<Vec<_>>() {
        let r = root(&mut parent, &v);
        groups.entry(r).or_default().push(v);
    }
    groups.into_values().collect()
}

/// Gives every value of a [`shared_scale_groups`] group one scale and zero point, from the union of
/// its convolution activations' ranges, so ONNX Runtime runs the backbone's splits and
/// concatenations on uint8 as plain copies (a `QLinearConcat` of equal scales copies; a `Split`
/// between equal `DequantizeLinear` / `QuantizeLinear` drops them). A group is left alone unless
/// every convolution writing into it is quantized (the sensitivity pass quantizes one at a time);
/// a float convolution reading from it then reads the shared-scale value.
fn share_scales(
    g: &onnx_protobuf::GraphProto,
    sites: &[ConvSite],
    ranges: &BTreeMap<String, (f32, f32)>,
    params: &mut BTreeMap<String, (f32, u8)>,
) {
    let conv_values: HashSet<&String> = sites.iter().flat_map(|s| [&s.input, &s.output]).collect();
    let written: HashSet<&String> = sites.iter().map(|s| &s.output).collect();
    for group in shared_scale_groups(g) {
        let convs: Vec<&String> = group.iter().filter(|v| conv_values.contains(v)).collect();
        let writers: Vec<&&String> = convs.iter().filter(|v| written.contains(**v)).collect();
        if writers.is_empty() || !writers.iter().all(|v| params.contains_key(**v)) {
            continue;
        }
        let (lo, hi) = convs
            .iter()
            .filter_map(|v| ranges.get(*v))
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| (lo.min(r.0), hi.max(r.1)));
        let shared = activation_params((lo, hi));
        for v in group {
            params.insert(v, shared);
        }
    }
}

/// Replaces the nodes of `g`: `first` (the weight dequantizers), the Q -> DQ pairs of graph
/// inputs, then each original node followed by the pairs of what it writes. Readers of a quantized
/// activation read its value in `dequantized`; convolution `i` in `conv_inputs` reads the given
/// weight (and bias). An error names an activation with a pair that no node or input produces.
fn rewire_nodes(
    g: &mut onnx_protobuf::GraphProto,
    first: Vec<NodeProto>,
    mut pairs: HashMap<String, Vec<NodeProto>>,
    dequantized: &BTreeMap<String, String>,
    mut conv_inputs: HashMap<usize, (String, Option<String>)>,
) -> Result<()> {
    let mut nodes = first;
    for v in g.input.iter().map(|i| i.name.clone()).collect::<Vec<_>>() {
        nodes.extend(pairs.remove(&v).unwrap_or_default());
    }
    for (i, mut n) in std::mem::take(&mut g.node).into_iter().enumerate() {
        for input in n.input.iter_mut() {
            if let Some(dq) = dequantized.get(input) {
                *input = dq.clone();
            }
        }
        if let Some((w, b)) = conv_inputs.remove(&i) {
            n.input[1] = w;
            if let Some(b) = b {
                n.input[2] = b;
            }
        }
        let outputs = n.output.clone();
        nodes.push(n);
        for o in outputs {
            nodes.extend(pairs.remove(&o).unwrap_or_default());
        }
    }
    if let Some(v) = pairs.keys().next() {
        return Err(OnnxError::Quantize(format!("activation `{v}` is produced by no node")));
    }
    g.node = nodes;
    Ok(())
}

/// Drops the initializers of `g` that no node reads and no graph output names (the float weights
/// replaced by integer ones).
fn drop_unread_initializers(g: &mut onnx_protobuf::GraphProto) {
    let read: HashSet<&String> = g.node.iter().flat_map(|n| n.input.iter()).collect();
    let outputs: HashSet<&String> = g.output.iter().map(|o| &o.name).collect();
    let keep: Vec<bool> = g.initializer.iter().map(|t| read.contains(&t.name) || outputs.contains(&t.name)).collect();
    let mut k = keep.iter();
    g.initializer.retain(|_| *k.next().expect("one flag per initializer"));
}

/// Rewrites `model` per `plan` (see the module docs). Every activation of a quantized convolution
/// needs a range in `plan.ranges`; unknown convolution names are an error.
pub fn quantize_qdq(model: &ModelProto, plan: &QuantPlan) -> Result<Quantized> {
    let sites = conv_sites(model)?;
    let chosen = chosen_sites(&sites, &plan.convs)?;
    let mut m = model.clone();
    let g = m.graph.as_mut().ok_or_else(|| OnnxError::Quantize("the model has no graph".into()))?;
    let mut add = Additions::new(g);
    let qmax = if plan.reduce_range { 63.0 } else { 127.0 };

    // Activations: one Q -> DQ pair each; the backbone of a shuffle-free model in uint8 between
    // its convolutions (shared scales).
    let mut act_params = activation_quant_params(&chosen, &plan.ranges)?;
    share_scales(graph(model)?, &sites, &plan.ranges, &mut act_params);
    let mut pairs: HashMap<String, Vec<NodeProto>> = HashMap::new();
    let mut dequantized = BTreeMap::new();
    for (v, &(scale, zero)) in &act_params {
        let (pair, dq) = add.qdq_pair(v, scale, zero);
        pairs.insert(v.clone(), pair);
        dequantized.insert(v.clone(), dq);
    }

    // Weights and biases: integer initializers behind per-channel DequantizeLinear nodes.
    let inits: HashMap<&str, &TensorProto> = graph(model)?.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut conv_inputs: HashMap<usize, (String, Option<String>)> = HashMap::new();
    for s in &chosen {
        let inputs = add.conv_weights(s, &inits, act_params[&s.input].0, qmax)?;
        conv_inputs.insert(s.index, inputs);
    }

    // The new node list: weight dequantizers first, then each original node followed by the
    // Q -> DQ pairs of what it writes; readers of a quantized activation read its DQ output.
    rewire_nodes(g, add.weight_nodes, pairs, &dequantized, conv_inputs)?;
    g.initializer.extend(add.inits);
    // Drop float weights nobody reads any more.
    drop_unread_initializers(g);
    Ok(Quantized { model: m, dequantized })
}

/// `model` quantized for timing only (latency tables of INT8 models): every convolution, except
/// the first when `keep_first_float` (the input stem of a whole detector), with fixed activation
/// ranges, `[0, 6]` for `Relu` outputs and `[-6, 6]` otherwise. Integer kernels take the same time
/// whatever the ranges; the numbers are meaningless.
pub fn quantize_for_timing(model: &ModelProto, keep_first_float: bool) -> Result<ModelProto> {
    let sites = conv_sites(model)?;
    let g = graph(model)?;
    let relu_outputs: HashSet<&String> =
        g.node.iter().filter(|n| n.op_type == "Relu").flat_map(|n| n.output.iter()).collect();
    let skip = usize::from(keep_first_float);
    let mut plan = QuantPlan::default();
    for s in sites.iter().skip(skip) {
        plan.convs.push(s.name.clone());
        for v in [&s.input, &s.output] {
            let range = if relu_outputs.contains(v) { (0.0, 6.0) } else { (-6.0, 6.0) };
            plan.ranges.insert(v.clone(), range);
        }
    }
    Ok(quantize_qdq(model, &plan)?.model)
}

/// Sets (or replaces) a metadata entry.
pub fn set_metadata(model: &mut ModelProto, key: &str, value: String) {
    model.metadata_props.retain(|e| e.key != key);
    let mut e = StringStringEntryProto::new();
    e.key = key.to_string();
    e.value = value;
    model.metadata_props.push(e);
}

/// A metadata entry of `model`.
pub fn metadata(model: &ModelProto, key: &str) -> Option<String> {
    model.metadata_props.iter().find(|e| e.key == key).map(|e| e.value.clone())
}

/// Counts the nodes of `op` in `model` (for reports and tests).
pub fn count_ops(model: &ModelProto, op: &str) -> usize {
    model.graph.as_ref().map_or(0, |g| g.node.iter().filter(|n| n.op_type == op).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Attr, Dim, ElemType, GraphBuilder};

    /// Regression (fuzz target `onnx_model`, seed 0, case 552): dimensions whose product overflows
    /// `i64` made the fp16 conversion and the quantizer panic (debug builds); negative dimensions
    /// whose product matched the values were accepted.
    #[test]
    fn initializers_with_impossible_dimensions_are_errors_naming_them() {
        let four = raw_tensor(
            "w",
            &[4],
            DataType::FLOAT,
            [1f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        assert_eq!(float_data(&four).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        for dims in [vec![i64::MAX, 4], vec![-1, -4], vec![1 << 40, 1 << 40, 1 << 40], vec![4, -1]] {
            let t = TensorProto { dims: dims.clone(), ..four.clone() };
            let e = float_data(&t).unwrap_err().to_string();
            assert!(e.contains("initializer `w` holds 4 values for shape"), "{dims:?}: {e}");
        }
    }

    /// x -> Conv(3->4) -> Relu -> Conv(4->2) -> y.
    fn two_convs() -> ModelProto {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", ElemType::F32, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)]).unwrap();
        let w1: Vec<f32> = (0..4 * 3 * 9).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
        let w1 = g.weight("a.weight", &[4, 3, 3, 3], w1).unwrap();
        let b1 = g.weight("a.bias", &[4], vec![0.1, -0.2, 0.3, 0.0]).unwrap();
        let pads = || vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))];
        let c1 = g.op("Conv", "a", &[&x, &w1, &b1], pads());
        let r1 = g.op("Relu", "a_relu", &[&c1], vec![]);
        let w2 = g.weight("b.weight", &[2, 4, 1, 1], vec![0.5, -1.0, 0.25, 2.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
        let c2 = g.op_as("Conv", "y", &[&r1, &w2], vec![]).unwrap();
        g.output(&c2, ElemType::F32, &[]).unwrap();
        g.build()
    }

    #[test]
    fn sites_follow_relu_and_find_the_terminal_conv() {
        let sites = conv_sites(&two_convs()).unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!((sites[0].input.as_str(), sites[0].output.as_str()), ("x", "a_relu"));
        assert_eq!(sites[0].bias.as_deref(), Some("a.bias"));
        assert!(!sites[0].terminal && sites[1].terminal);
        assert_eq!((sites[1].bias.as_ref(), sites[1].channels), (None, 2));
    }

    /// Regression (fuzz target `onnx_model`, seed 0, case 2126): a `Relu` without an output after
    /// a convolution made `conv_sites` index past its outputs; and weights with a zero or negative
    /// dimension were sites (channels from a negative `i64`, or a zero-size weight over huge
    /// channels that the quantizer allocated per channel).
    #[test]
    fn malformed_convs_are_not_quantization_sites() {
        let mut m = two_convs();
        let g = m.graph.as_mut().unwrap();
        g.node.iter_mut().find(|n| n.op_type == "Relu").unwrap().output.clear();
        let sites = conv_sites(&m).unwrap();
        assert_eq!(sites.len(), 2);
        assert_ne!(sites[0].output, "a_relu", "the output of a Relu without one");
        let e = quantize_for_timing(&m, false).unwrap_err().to_string();
        assert!(e.contains("activation `a_relu` is produced by no node"), "{e}");
        for dims in [vec![-4, 3, 3, 3], vec![1 << 40, 0, 3, 3]] {
            let mut m = two_convs();
            let g = m.graph.as_mut().unwrap();
            g.initializer.iter_mut().find(|t| t.name == "a.weight").unwrap().dims = dims.clone();
            let sites = conv_sites(&m).unwrap();
            assert_eq!(sites.iter().map(|s| s.weight.as_str()).collect::<Vec<_>>(), ["b.weight"], "{dims:?}");
        }
    }

    #[test]
    fn activation_parameters_cover_zero_and_the_range() {
        let (s, z) = activation_params((0.0, 2.55));
        assert!((s - 0.01).abs() < 1e-7 && z == 0);
        let (s, z) = activation_params((-1.0, 1.0));
        assert!((s - 2.0 / 255.0).abs() < 1e-7 && (127..=128).contains(&z));
        assert_eq!(activation_params((0.0, 0.0)), (1.0, 0), "a constant zero tensor gets a usable scale");
        let (s, z) = activation_params((0.5, 1.0));
        assert!(z == 0 && (s - 1.0 / 255.0).abs() < 1e-7, "the range is widened to include 0");
    }

    #[test]
    fn per_channel_weights_round_trip_within_half_a_step() {
        let w = [0.5f32, -1.0, 0.25, 2.0, 0.0, 0.0, 0.0, 0.0];
        let (q, s) = quantize_weights(&w, 2, 127.0);
        assert_eq!(s[1], 1.0, "an all-zero channel keeps a usable scale");
        assert_eq!(q[1], -64, "-1.0 at scale 2/127");
        for (i, (&qv, &wv)) in q.iter().zip(&w).enumerate() {
            let back = qv as f32 * s[i / 4];
            assert!((back - wv).abs() <= s[i / 4] / 2.0 + 1e-7, "{i}: {back} vs {wv}");
        }
        let (q7, _) = quantize_weights(&w, 2, 63.0);
        assert_eq!(q7[3], 63, "reduced range");
    }

    #[test]
    fn rewrite_inserts_qdq_pairs_and_integer_weights() {
        let model = two_convs();
        let mut plan = QuantPlan { convs: vec!["a/Conv".into(), "y/Conv".into()], ..Default::default() };
        assert!(quantize_qdq(&model, &plan).unwrap_err().to_string().contains("no calibrated range for `x`"));
        plan.ranges = [("x", (-1.0, 1.0)), ("a_relu", (0.0, 3.0)), ("y", (-4.0, 4.0))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let q = quantize_qdq(&model, &plan).unwrap();
        assert_eq!(count_ops(&q.model, "QuantizeLinear"), 3);
        assert_eq!(count_ops(&q.model, "DequantizeLinear"), 3 + 2 + 1, "3 activations, 2 weights, 1 bias");
        let g = q.model.graph.as_ref().unwrap();
        assert!(g.initializer.iter().all(|t| !t.name.ends_with(".weight")), "float weights are dropped");
        let wq = g.initializer.iter().find(|t| t.name == "a.weight_quantized").unwrap();
        assert_eq!((wq.data_type, wq.raw_data.len()), (DataType::INT8 as i32, 4 * 3 * 9));
        let bq = g.initializer.iter().find(|t| t.name == "a.bias_quantized").unwrap();
        assert_eq!(bq.data_type, DataType::INT32 as i32);
        // Readers of a quantized activation read its dequantized value; the output keeps its name.
        let relu_readers: Vec<_> = g.node.iter().filter(|n| n.input.iter().any(|i| i == "a_relu")).collect();
        assert_eq!(relu_readers.len(), 1);
        assert_eq!(relu_readers[0].op_type, "QuantizeLinear");
        assert_eq!(q.dequantized["a_relu"], "a_relu_dequantized");
        assert_eq!(g.output[0].name, "y");
        // Topological order: every input is produced before it is read.
        let mut known: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        known.insert("x".into());
        for n in &g.node {
            assert!(n.input.iter().all(|i| known.contains(i)), "{} reads before write", n.name);
            known.extend(n.output.iter().cloned());
        }
        // Quantizing only the second conv leaves the first one's weights in float.
        let only = QuantPlan { convs: vec!["y/Conv".into()], ..plan };
        let q = quantize_qdq(&model, &only).unwrap();
        assert_eq!(count_ops(&q.model, "QuantizeLinear"), 2);
        assert!(q.model.graph.initializer.iter().any(|t| t.name == "a.weight"));
        assert!(quantize_qdq(&model, &QuantPlan { convs: vec!["nope".into()], ..Default::default() }).is_err());
    }

    #[test]
    fn timing_quantization_covers_every_conv_of_a_block_and_spares_a_detector_stem() {
        use detnas_core::detector::DetectorConfig;
        use detnas_core::space::{Choice, SearchSpace};
        let space = SearchSpace::by_name("detnas-300m").unwrap();
        let cfg = DetectorConfig::default();
        let part = crate::parts::Part::Block { layer: 1, choice: Choice::Xception3x3 };
        let pm = crate::parts::export_part(&space, &cfg, &part, 0, crate::DetectionLoad::None, crate::Layout::Shuffle)
            .unwrap();
        let convs = conv_sites(&pm.model).unwrap().len();
        let q = quantize_for_timing(&pm.model, false).unwrap();
        assert_eq!(count_ops(&q, "Conv"), convs);
        assert_eq!(conv_sites(&q).unwrap().len(), 0, "no float weights left");
        let kept = quantize_for_timing(&pm.model, true).unwrap();
        assert_eq!(conv_sites(&kept).unwrap().len(), 1, "the first conv stays float");
    }

    /// The backbone of a shuffle-free detector runs on uint8 between its convolutions: every
    /// backbone `Split` reads a dequantized value and every output is quantized again, all with one
    /// scale per stage; a shuffled export gets no such pairs.
    #[test]
    fn a_shuffle_free_backbone_shares_one_scale_per_stage() {
        use detnas_core::InputSize;
        use detnas_core::detector::DetectorConfig;
        use detnas_core::detector::plan::{Paths, detector_params};
        use detnas_core::space::arch::Arch;
        use detnas_core::space::{Choice, SearchSpace};
        let space = SearchSpace::detnas_300m();
        let arch = Arch::uniform(&space, Choice::Shufflenet3x3);
        let cfg = DetectorConfig { input: InputSize::new(64, 64), ..Default::default() };
        let weights = crate::Weights::random_varied(&detector_params(&space, Paths::Single(&arch), &cfg), 1);
        // every conv activation its own range (growing with the conv's place), so that a stage's
        // shared scale comes from its own ranges and stages differ
        let export = |layout| {
            let opts = crate::ExportOptions { layout, ..Default::default() };
            let model = crate::export_retinanet(&space, &arch, &cfg, &weights, &opts).unwrap();
            let mut plan = QuantPlan::default();
            for (i, s) in conv_sites(&model).unwrap().iter().enumerate().skip(1) {
                plan.convs.push(s.name.clone());
                for v in [&s.input, &s.output] {
                    plan.ranges.insert(v.clone(), (0.0, 1.0 + i as f32));
                }
            }
            quantize_qdq(&model, &plan).unwrap().model
        };
        let scale_of = |m: &ModelProto, v: &str, op: &str, reads: bool| -> Option<Vec<u8>> {
            let g = m.graph.as_ref().unwrap();
            let n =
                g.node.iter().find(|n| n.op_type == op && if reads { n.input[0] == v } else { n.output[0] == v })?;
            g.initializer.iter().find(|t| t.name == n.input[1]).map(|t| t.raw_data.clone())
        };
        let free = export(crate::Layout::ShuffleFree);
        let g = free.graph.as_ref().unwrap();
        let splits: Vec<&NodeProto> =
            g.node.iter().filter(|n| n.op_type == "Split" && n.name.starts_with("backbone.")).collect();
        assert_eq!(splits.len(), 16);
        let mut scales = BTreeMap::new();
        for n in splits {
            let layer = n.name.split(['.', '/']).nth(2).unwrap().parse::<usize>().unwrap();
            let stage = space.layers()[layer].stage;
            let input = scale_of(&free, &n.input[0], "DequantizeLinear", false).expect("a dequantized input");
            for o in &n.output {
                assert_eq!(scale_of(&free, o, "QuantizeLinear", true).as_ref(), Some(&input), "{}", n.name);
            }
            assert_eq!(scales.entry(stage).or_insert(input.clone()), &input, "one scale per stage");
        }
        let distinct: std::collections::BTreeSet<&Vec<u8>> = scales.values().collect();
        assert_eq!(distinct.len(), scales.len(), "each stage its own scale: {scales:?}");
        // every input of a backbone concatenation is dequantized uint8 in the shuffle-free model;
        // in the shuffled one the passthrough halves stay float
        let concat_inputs_quantized = |m: &ModelProto| {
            let g = m.graph.as_ref().unwrap();
            g.node
                .iter()
                .filter(|n| n.op_type == "Concat" && n.name.starts_with("backbone."))
                .flat_map(|n| n.input.iter())
                .all(|v| g.node.iter().any(|w| w.op_type == "DequantizeLinear" && w.output[0] == *v))
        };
        assert!(concat_inputs_quantized(&free));
        assert!(!concat_inputs_quantized(&export(crate::Layout::Shuffle)));
    }
}

//! A small builder for ONNX graphs: names, initializers, nodes, inputs/outputs and metadata.

use crate::error::{OnnxError, Result};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::{self, Tensor as TensorType};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// ONNX IR version written (accepted by ONNX Runtime >= 1.14 and the official checker).
pub const IR_VERSION: i64 = 8;
/// Default-domain opset version written.
pub const OPSET: i64 = 17;

/// Element types used by detnas graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    /// float32.
    F32,
    /// int64.
    I64,
    /// uint8.
    U8,
}

impl ElemType {
    fn data_type(self) -> DataType {
        match self {
            ElemType::F32 => DataType::FLOAT,
            ElemType::I64 => DataType::INT64,
            ElemType::U8 => DataType::UINT8,
        }
    }
}

/// A dimension of a declared input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named dynamic dimension (`batch`, `num_detections`).
    Symbolic(String),
}

/// A node attribute.
#[derive(Clone, Debug)]
pub enum Attr {
    /// One integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// One float.
    Float(f32),
    /// A list of floats.
    Floats(Vec<f32>),
    /// A string.
    Str(String),
    /// A constant tensor.
    Tensor(Box<TensorProto>),
}

/// Builds one graph; see the crate docs.
#[derive(Default)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    used: HashSet<String>,
    counters: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    doc: String,
}

fn value_info(name: &str, ty: ElemType, dims: &[Dim]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = Dimension::new();
        dim.value = Some(match d {
            Dim::Fixed(v) => dimension::Value::DimValue(*v),
            Dim::Symbolic(s) => dimension::Value::DimParam(s.clone()),
        });
        shape.dim.push(dim);
    }
    let mut tensor = TensorType::new();
    tensor.elem_type = ty.data_type() as i32;
    tensor.shape = Some(shape).into();
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(tensor));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = Some(tp).into();
    vi
}

/// A float tensor constant (for initializers and `Constant` attributes).
pub fn tensor_f32(name: &str, dims: &[i64], data: Vec<f32>) -> Result<TensorProto> {
    check_size(name, dims, data.len())?;
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(t)
}

/// An int64 tensor constant.
pub fn tensor_i64(name: &str, dims: &[i64], data: Vec<i64>) -> Result<TensorProto> {
    check_size(name, dims, data.len())?;
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = DataType::INT64 as i32;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(t)
}

fn check_size(name: &str, dims: &[i64], got: usize) -> Result<()> {
    let expected: i64 = dims.iter().product();
    if dims.iter().any(|&d| d < 0) || expected as usize != got {
        return Err(OnnxError::InitializerSize {
            name: name.to_string(),
            dims: dims.to_vec(),
            expected: expected.max(0) as usize,
            got,
        });
    }
    Ok(())
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        GraphBuilder { name: name.to_string(), ..Default::default() }
    }

    /// A fresh value name starting with `base` (`base`, `base_1`, ...), never used before.
    pub fn unique(&mut self, base: &str) -> String {
        let mut candidate = base.to_string();
        while self.used.contains(&candidate) {
            let n = self.counters.entry(base.to_string()).or_insert(0);
            *n += 1;
            candidate = format!("{base}_{n}");
        }
        self.used.insert(candidate.clone());
        candidate
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        if !self.used.insert(name.to_string()) {
            return Err(OnnxError::DuplicateName(name.to_string()));
        }
        Ok(())
    }

    /// Declares a graph input with an exact name.
    pub fn input(&mut self, name: &str, ty: ElemType, dims: &[Dim]) -> Result<String> {
        self.claim(name)?;
        self.inputs.push(value_info(name, ty, dims));
        Ok(name.to_string())
    }

    /// Declares `value` as a graph output of the given type and shape.
    pub fn output(&mut self, value: &str, ty: ElemType, dims: &[Dim]) -> Result<()> {
        if !self.used.contains(value) {
            return Err(OnnxError::UnknownValue(value.to_string()));
        }
        self.outputs.push(value_info(value, ty, dims));
        Ok(())
    }

    /// Adds a float initializer under an exact name (parameter names are kept as given).
    pub fn weight(&mut self, name: &str, dims: &[i64], data: Vec<f32>) -> Result<String> {
        let t = tensor_f32(name, dims, data)?;
        self.claim(name)?;
        self.initializers.push(t);
        Ok(name.to_string())
    }

    /// Adds a float constant under a fresh name derived from `base`.
    pub fn const_f32(&mut self, base: &str, dims: &[i64], data: Vec<f32>) -> Result<String> {
        let name = self.unique(base);
        self.initializers.push(tensor_f32(&name, dims, data)?);
        Ok(name)
    }

    /// Adds an int64 constant under a fresh name derived from `base`.
    pub fn const_i64(&mut self, base: &str, dims: &[i64], data: Vec<i64>) -> Result<String> {
        let name = self.unique(base);
        self.initializers.push(tensor_i64(&name, dims, data)?);
        Ok(name)
    }

    /// Adds a node with `outputs` fresh output names derived from `base`; returns those names.
    /// An empty input name means "optional input omitted".
    pub fn node(
        &mut self,
        op: &str,
        base: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: Vec<(&str, Attr)>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..outputs).map(|_| self.unique(base)).collect();
        let mut node = NodeProto::new();
        node.op_type = op.to_string();
        node.name = self.unique(&format!("{base}/{op}"));
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = outs.clone();
        for (name, value) in attrs {
            let mut a = AttributeProto::new();
            a.name = name.to_string();
            let ty = match value {
                Attr::Int(v) => {
                    a.i = v;
                    AttributeType::INT
                }
                Attr::Ints(v) => {
                    a.ints = v;
                    AttributeType::INTS
                }
                Attr::Float(v) => {
                    a.f = v;
                    AttributeType::FLOAT
                }
                Attr::Floats(v) => {
                    a.floats = v;
                    AttributeType::FLOATS
                }
                Attr::Str(v) => {
                    a.s = v.into_bytes();
                    AttributeType::STRING
                }
                Attr::Tensor(t) => {
                    a.t = Some(*t).into();
                    AttributeType::TENSOR
                }
            };
            a.type_ = ty.into();
            node.attribute.push(a);
        }
        self.nodes.push(node);
        outs
    }

    /// A single-output node whose output gets the exact name `output` (for graph outputs).
    pub fn op_as(&mut self, op: &str, output: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> Result<String> {
        self.claim(output)?;
        let tmp = self.node(op, output, inputs, 1, attrs).remove(0);
        let node = self.nodes.last_mut().expect("node just added");
        node.output[0] = output.to_string();
        self.used.remove(&tmp);
        Ok(output.to_string())
    }

    /// [`GraphBuilder::node`] with a single output.
    pub fn op(&mut self, op: &str, base: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.node(op, base, inputs, 1, attrs).remove(0)
    }

    /// Records a metadata entry (model provenance, pre-processing contract).
    pub fn metadata(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.to_string(), value.into());
    }

    /// Sets the model's doc string.
    pub fn doc(&mut self, doc: impl Into<String>) {
        self.doc = doc.into();
    }

    /// Number of nodes so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The finished model (IR 8, opset 17), producer `detnas`.
    pub fn build(self) -> ModelProto {
        let mut graph = GraphProto::new();
        graph.name = self.name;
        graph.node = self.nodes;
        graph.initializer = self.initializers;
        graph.input = self.inputs;
        graph.output = self.outputs;
        let mut opset = OperatorSetIdProto::new();
        opset.domain = String::new();
        opset.version = OPSET;
        let mut model = ModelProto::new();
        model.ir_version = IR_VERSION;
        model.producer_name = "detnas".into();
        model.producer_version = env!("CARGO_PKG_VERSION").into();
        model.doc_string = self.doc;
        model.opset_import.push(opset);
        model.graph = Some(graph).into();
        for (k, v) in self.metadata {
            let mut e = StringStringEntryProto::new();
            e.key = k;
            e.value = v;
            model.metadata_props.push(e);
        }
        model
    }
}

/// Serializes a model to protobuf bytes.
pub fn encode(model: &ModelProto) -> Result<Vec<u8>> {
    model.write_to_bytes().map_err(|e| OnnxError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_duplicates_rejected() {
        let mut g = GraphBuilder::new("t");
        assert_eq!(g.unique("x"), "x");
        assert_eq!(g.unique("x"), "x_1");
        assert_eq!(g.unique("x"), "x_2");
        g.weight("w", &[2], vec![1.0, 2.0]).unwrap();
        assert!(matches!(g.weight("w", &[1], vec![1.0]), Err(OnnxError::DuplicateName(_))));
    }

    #[test]
    fn initializer_size_is_checked() {
        let mut g = GraphBuilder::new("t");
        let err = g.weight("conv.weight", &[2, 3], vec![0.0; 5]).unwrap_err().to_string();
        assert!(err.contains("conv.weight") && err.contains("6") && err.contains("5"), "{err}");
    }

    #[test]
    fn builds_a_model_with_metadata_and_round_trips() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", ElemType::F32, &[Dim::Symbolic("batch".into()), Dim::Fixed(4)]).unwrap();
        let y = g.op("Relu", "relu", &[&x], vec![]);
        g.output(&y, ElemType::F32, &[Dim::Symbolic("batch".into()), Dim::Fixed(4)]).unwrap();
        assert!(g.output("nope", ElemType::F32, &[]).is_err());
        g.metadata("detnas.arch", "0,1,2,3");
        let bytes = encode(&g.build()).unwrap();
        let back = ModelProto::parse_from_bytes(&bytes).unwrap();
        assert_eq!(back.ir_version, IR_VERSION);
        assert_eq!(back.opset_import[0].version, OPSET);
        assert_eq!(back.metadata_props[0].key, "detnas.arch");
        assert_eq!(back.graph.node[0].op_type, "Relu");
    }
}

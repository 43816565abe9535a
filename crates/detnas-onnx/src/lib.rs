//! ONNX graph building and export of DetNAS detectors, pure Rust (no libtorch).
//!
//! [`graph::GraphBuilder`] is the small API every exporter uses: unique value names, typed
//! initializers with size checks, nodes with attributes, declared inputs/outputs with shapes and
//! model metadata. Models are written as IR version 8, opset 17.
#![warn(missing_docs)]

mod emit;
pub mod error;
pub mod export;
pub mod external;
mod faster_rcnn;
pub mod graph;
pub mod half;
pub mod layout;
pub mod parts;
pub mod quantize;
pub mod relayout;
pub mod source;
pub mod weights;

pub use error::{OnnxError, Result};
pub use export::{ExportOptions, export_detector, export_retinanet};
pub use faster_rcnn::{PROPOSAL_SCORES, PROPOSALS, export_faster_rcnn};
pub use graph::{Attr, Dim, ElemType, GraphBuilder, IR_VERSION, OPSET};
pub use layout::Layout;
pub use onnx_protobuf;
pub use onnx_protobuf::ModelProto;
pub use parts::{Part, PartModel, export_part};
pub use protobuf::Enum as ProtoEnum;
pub use weights::{DetectionLoad, Tensor, Weights};

//! Pure core of detnas: no native dependencies.
//!
//! - [`space`]: the DetNAS search spaces and ShuffleNetV2 reference nets, described as data;
//! - [`arch`]: architectures (one choice per layer), parsing, validation and published presets;
//! - [`contract`]: ONNX metadata keys, tensor names and named seed streams shared by export,
//!   inference and training;
//! - [`shape`]: input sizes and conv output arithmetic;
//! - [`cost`]: exact FLOPs (multiply-adds) and parameter counts, feature-map shapes;
//! - [`sample`]: uniform and FLOPs-binned path samplers;
//! - [`evolution`]: the evolutionary search engine with resumable on-disk state;
//! - [`boxes`]: IoU, NMS, anchors, box coder, letterbox geometry (torchvision semantics);
//! - [`detector`]: RetinaNet configuration and the pre-processing contract;
//! - [`genome`]: detector genomes (backbone path + FPN/head/resolution genes), text form, gene spaces;
//! - [`limits`]: stated maxima of user numbers (genes, classes, genome counts) and a detector's memory estimate;
//! - [`pareto`]: a search's candidates, Pareto front and best, as CSV and JSON;
//! - [`plan`]: the one parameter naming scheme and conv-by-conv plans of every network part;
//! - [`rng`]: a small seedable generator whose state serializes exactly;
//! - [`fsutil`]: atomic file writes, path identity;
//! - [`owner`]: folder ownership records: which command wrote which files;
//! - [`mutate`]: seeded byte mutations and a case runner for the robustness tests of every parser.
#![warn(missing_docs)]

pub mod arch;
pub mod boxes;
pub mod checkpoint;
pub mod coco;
pub mod contract;
pub mod cost;
pub mod detector;
pub mod error;
pub mod evolution;
pub mod fsutil;
pub mod genome;
pub mod limits;
pub mod mutate;
pub mod owner;
pub mod pareto;
pub mod plan;
pub mod rng;
pub mod sample;
pub mod shape;
pub mod size;
pub mod space;
pub mod stats;

pub use arch::{Arch, Preset};
pub use cost::{Convention, CostReport, InputSize};
pub use error::{CoreError, Result};
pub use space::{ChannelShuffle, Choice, SearchSpace};

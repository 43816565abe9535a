//! Pure core of detnas: no native dependencies. Its modules follow the pipeline:
//!
//! - [`space`]: the DetNAS search spaces and ShuffleNetV2 reference nets, described as data;
//!   [`space::arch`] (one choice per layer, parsing, presets), [`space::shape`] and
//!   [`space::cost`] (exact FLOPs and parameters, feature-map shapes), [`space::sample`] (uniform
//!   and FLOPs-binned path samplers);
//! - [`detector`]: detector configurations (RetinaNet, Faster R-CNN), levels, FLOPs,
//!   post-processing; [`detector::boxes`] (IoU, NMS, anchors, box coder, letterbox, torchvision
//!   semantics), [`detector::plan`] (the one parameter naming scheme and conv-by-conv plans shared
//!   by trainer and exporter), [`detector::contract`] (ONNX metadata keys, tensor names, seed
//!   streams shared by export, inference and training);
//! - [`search`]: [`search::genome`] (backbone path + detector genes, declared once; gene spaces),
//!   [`search::evolution`] (the engine with resumable state), [`search::pareto`] (candidates,
//!   Pareto front, finalists), [`search::stats`] (Kendall τ, Spearman ρ, bootstrap intervals);
//! - [`coco`]: COCO data, results and bbox evaluation with pycocotools' semantics;
//! - files and bounds: [`checkpoint`] (checkpoint states), [`fsutil`] (atomic writes, path
//!   identity), [`owner`] (which command wrote which files), [`limits`] (stated maxima of user
//!   numbers and memory estimates), [`size`] (`300M`-style counts), [`rng`] (a seedable generator
//!   whose state serializes exactly), [`error`], and [`mutate`] (seeded byte mutations for the
//!   robustness tests of every parser).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod coco;
pub mod detector;
pub mod error;
pub mod fsutil;
pub mod limits;
pub mod mutate;
pub mod owner;
pub mod rng;
pub mod search;
pub mod size;
pub mod space;

pub use error::{CoreError, Result};
pub use space::arch::{Arch, Preset};
pub use space::cost::{Convention, CostReport, InputSize};
pub use space::{ChannelShuffle, Choice, SearchSpace};

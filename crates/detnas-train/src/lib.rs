//! DetNAS training with libtorch: the only crate of the workspace that links `tch`.
//!
//! - [`net`]: the supernet backbone (every choice with its own weights and BN), the classifier and
//!   RetinaNet, with parameter names from [`detnas_core::detector::plan`] (checkpoints load into the exporter);
//! - [`optim`]: SGD that touches only the sampled path (gradients, momentum, weight decay), and
//!   only the sampled block of elastic FPN / head weights;
//! - [`genes`]: the genome a supernet step samples and the per-step input of a genes supernet;
//! - [`loss`]: anchor matching (core box maths), focal and L1 box losses;
//! - [`recal`]: per-path BN recalibration (EMA or exact average);
//! - [`search`]: the evolutionary search's fitness (recalibrate, then held-out AP);
//! - [`run`]: the one optimisation-step loop of both trainers (non-finite skips, clipping, learning
//!   rate, log window, checkpoints) and what a run does with an existing checkpoint ([`run::Start`]);
//! - [`checkpoint`]: atomic safetensors + JSON state, exact resume, opening a detection checkpoint;
//! - [`bench`](mod@bench): timing of one training step;
//! - [`device`]: CPU/CUDA selection (call [`device::init`] first thing in `main`).
#![warn(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod data;
pub mod detector;
pub mod device;
pub mod error;
pub mod faster_rcnn;
pub mod genes;
pub mod loss;
pub mod modules;
pub mod net;
pub mod optim;
pub mod progress;
pub mod recal;
pub mod roi_align;
pub mod run;
pub mod search;
pub mod trainer;
pub mod zen;

pub use error::{Result, TrainError};
pub use tch;

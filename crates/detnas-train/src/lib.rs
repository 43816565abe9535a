//! DetNAS training with libtorch: the only crate of the workspace that links `tch`.
//!
//! - [`net`]: the supernet backbone (every choice with its own weights and BN), the classifier and
//!   RetinaNet, with parameter names from [`detnas_core::plan`] (checkpoints load into the exporter);
//! - [`optim`]: SGD that touches only the sampled path (gradients, momentum, weight decay);
//! - [`loss`]: anchor matching (core box maths), focal and L1 box losses;
//! - [`recal`]: per-path BN recalibration (EMA or exact average);
//! - [`search`]: the evolutionary search's fitness (recalibrate, then held-out AP);
//! - [`checkpoint`]: atomic safetensors + JSON state, exact resume;
//! - [`device`]: CPU/CUDA selection (call [`device::init`] first thing in `main`).

pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod loss;
pub mod modules;
pub mod net;
pub mod optim;
pub mod recal;
pub mod search;
pub mod trainer;

pub use error::{Result, TrainError};
pub use tch;

//! DetNAS training with libtorch: the only crate of the workspace that links `tch`.
//!
//! For now it holds the device plumbing every trainer needs: [`device::init`] must run first thing in
//! `main`, before any other `tch` call, so that CUDA kernels are available when a GPU is.

pub mod device;
pub mod error;

pub use error::{Result, TrainError};
pub use tch;

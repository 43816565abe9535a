//! Detection SDK on ONNX Runtime for exported DetNAS models; the only crate that links `ort`
//! (loaded at run time, never libtorch).
//!
//! [`runtime::environment`] loads ONNX Runtime once per process, from `ORT_DYLIB_PATH` or the path
//! baked in at build time by `.cargo/config.toml`, and gives a one-line error naming the setup
//! script when the library is missing.
//!
//! - [`detector`]: the [`Detector`] SDK (load, detect, batches, timings);
//! - [`contract`]: the model contract as checked at load time (metadata, interface) and on every
//!   run (outputs): violations are [`InferError::Metadata`], [`InferError::ModelContract`] and
//!   [`InferError::BadOutput`];
//! - [`device`]: `--device` parsing and the provider actually used, with the one-line warning of a
//!   CPU fallback ([`Detector::device_warning`]);
//! - [`timing`]: warm-up, minimum runs and duration, p50/p90/p99 ([`Latency`]);
//! - [`latency`]: latency lookup tables, their [`Fingerprint`], predictor and validation.

pub mod contract;
pub mod detector;
pub mod device;
pub mod error;
pub mod fingerprint;
pub use detnas_data::image_io;
pub use detnas_data::preprocess;
pub mod latency;
pub mod runtime;
pub mod timing;

pub use contract::ModelInfo;
pub use detector::{Detection, Detections, Detector, DetectorOptions, StageTimings};
pub use device::{Device, ProviderChoice};
pub use error::{InferError, Result};
pub use fingerprint::Fingerprint;
pub use latency::{LatencyTable, Prediction};
pub use ort;
pub use timing::{Latency, TimingPlan};

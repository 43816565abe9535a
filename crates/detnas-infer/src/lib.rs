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
//!   CPU fallback ([`Detector::device_warning`]).

pub mod contract;
pub mod detector;
pub mod device;
pub mod error;
pub use detnas_data::image_io;
pub use detnas_data::preprocess;
pub mod runtime;

pub use contract::ModelInfo;
pub use detector::{Detection, Detections, Detector, DetectorOptions, StageTimings};
pub use device::{Device, ProviderChoice};
pub use error::{InferError, Result};
pub use ort;

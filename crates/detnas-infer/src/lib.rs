//! Object detection with exported DetNAS models on ONNX Runtime.
//!
//! Load a `.onnx` file written by `detnas export` (or `detnas train` / `detnas search`), then
//! detect in image files, encoded bytes or decoded images. Boxes come back in the image's own
//! pixels, with scores, class names and per-stage timings. The model file carries its whole
//! contract (input size, pre-processing, class names, thresholds), so no other configuration is
//! needed.
//!
//! ```
//! use detnas_infer::Detector;
//!
//! let model = "models/neon-trees.onnx";
//! # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/neon-trees.onnx");
//! let image = "models/samples/neon-yell-1.jpg";
//! # let image = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/samples/neon-yell-1.jpg");
//! let detector = Detector::builder().confidence(0.3).load(model)?;
//! let result = detector.detect_path(image)?;
//! for d in &result.detections {
//!     let [x1, y1, x2, y2] = d.bbox;
//!     println!("{} {:.2} at ({x1:.0}, {y1:.0})-({x2:.0}, {y2:.0})", d.class_name, d.score);
//! }
//! println!("{} objects in {:?}", result.detections.len(), result.timings.total());
//! # assert!(!result.detections.is_empty());
//! # Ok::<(), detnas_infer::InferError>(())
//! ```
//!
//! # What comes back
//! - [`Detections`]: the image's size, every [`Detection`] (highest score first), [`StageTimings`]
//!   and image warnings (a truncated JPEG). All are `serde` serialisable (timings in ms), with box
//!   helpers ([`Detection::xywh`], [`Detection::normalized`], [`Detection::to_coco`]).
//! - By default only detections scoring at least [`DEFAULT_CONFIDENCE`] (0.25) come back. The graph
//!   itself keeps everything from 0.05 up to its cap (the shipped model fills its 150 boxes on
//!   every image at 0.05): use [`DetectorBuilder::all_scores`] for AP evaluation.
//! - Errors are [`InferError`]: typed, one line, naming the file; the underlying error is its
//!   `source()`. A bad image is an error of that image only ([`Detector::detect_batch`] goes on).
//!
//! # Threads and throughput
//! A [`Detector`] is `Send + Sync`: share it (`Arc`) between threads. It holds a pool of ONNX
//! Runtime sessions ([`DetectorBuilder::sessions`], default 1), each with
//! [`DetectorBuilder::threads`] intra-op threads. One session with all cores gives the lowest
//! latency per image; N sessions with `cores / N` threads run N images at once and give more
//! images per second when a single run cannot keep every core busy (light models, small inputs).
//! The batch calls ([`Detector::detect_batch`], [`Detector::detect_images`],
//! [`Detector::detect_bytes_batch`]) spread over the pool. Measured on 2 cores with the shipped
//! 320x320 model (HTTP service of the repository's `examples/serve.rs`): 1 session x 2 threads
//! answers one client in 25.5 ms (p50) and 4 clients at 35 images/s; 2 sessions x 1 thread answer
//! one client in 30.1 ms but 4 clients at 60 images/s. Use one session for latency, several for
//! throughput.
//!
//! # Finding ONNX Runtime
//! The library (`libonnxruntime.so.1.31.1`, 1.31 or newer) is loaded at run time from, in order:
//! a path given in code ([`runtime::builder`] or [`DetectorBuilder::ort_library`]),
//! `ORT_DYLIB_PATH`, the system loader's search (`LD_LIBRARY_PATH`, rpath), then the executable's
//! folder. [`ModelInfo::runtime`] says which file was used and how it was found; see [`runtime`].
//!
//! # Shipping an application
//! Ship `libonnxruntime.so.1.31.1` (Linux; `libonnxruntime.1.31.1.dylib` on macOS,
//! `onnxruntime.dll` on Windows) beside your executable: it is found there with no environment
//! variable. `detnas env --copy-runtime target/release` (or [`runtime::copy_library_to`]) copies
//! the library this machine uses. The file comes from the official release archives
//! (<https://github.com/microsoft/onnxruntime/releases>, `lib/`) or the `onnxruntime` wheel on PyPI
//! (`onnxruntime/capi/`). Nothing from the build machine is baked into your binary unless the
//! build sets `DETNAS_ORT_LIBRARY`.
//!
//! # Features
//! - `jpeg`, `png` (default), `webp`, `gif`, `bmp`: image formats decoded from files and bytes
//!   (decoded [`RgbImage`]s need none).
//! - `folder`: batch detection of files, folders and globs into an output folder, resumable, with
//!   COCO results, YOLO labels and annotated copies ([`folder::detect_folder`], what `detnas detect`
//!   runs); pulls `imageproc` and `glob`.
//! - `latency`: latency tables of a search space ([`latency`]); pulls the ONNX exporter.
//! - `quantize`: static INT8 quantization with calibration ([`quantize`]); pulls the ONNX graph crate.
//! - `cuda`: the CUDA execution provider (needs a CUDA build of ONNX Runtime at run time).
#![warn(missing_docs)]

pub mod contract;
pub mod detector;
pub mod device;
pub mod error;
pub mod fingerprint;
#[cfg(feature = "folder")]
pub mod folder;
pub use detnas_data::image_io;
pub use detnas_data::preprocess;
#[cfg(feature = "latency")]
pub mod latency;
pub mod options;
#[cfg(feature = "quantize")]
pub mod quantize;
pub mod results;
pub mod runtime;
pub mod tiles;
pub mod timing;

pub use contract::ModelInfo;
pub use detector::{Detector, Prepared, RawOutputs};
pub use detnas_core::detector::DetectorConfig;
pub use detnas_core::detector::boxes::BBox;
pub use detnas_core::space::shape::InputSize;
pub use detnas_data::symmetry::Symmetry;
pub use device::{Device, ProviderChoice};
pub use error::{InferError, Result};
pub use fingerprint::{Fingerprint, Precision};
pub use image::{self, RgbImage};
pub use image_io::{DecodeLimits, ImageError, ImageWarning};
#[cfg(feature = "latency")]
pub use latency::{LatencyTable, Prediction};
pub use options::{DEFAULT_CONFIDENCE, DetectorBuilder, DetectorOptions, Thresholds, Tta};
pub use ort;
pub use results::{CocoDetection, Detection, Detections, StageTimings};
pub use runtime::{LibrarySource, RuntimeInfo};
pub use tiles::Tiling;
pub use timing::{DetectorLatency, Latency, TimingPlan};

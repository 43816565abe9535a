//! Training data for DetNAS, in pure Rust (no native dependencies).
//!
//! - [`image_io`]: the one robust image-loading path (format from content, decode limits, EXIF
//!   orientation, any colour type to RGB8, truncated-JPEG warnings), shared by the inference SDK
//!   and the trainer;
//! - [`detection`]: COCO and Pascal VOC detection sets loaded into one validated form
//!   ([`DetectionDataset`]) with a [`ValidationReport`] of every questionable record, a
//!   deterministic hold-out split, and COCO ground-truth output for `detnas eval`;
//! - [`preprocess`]: letterboxing into the network input (SIMD bilinear resize);
//! - [`folder`]: classification sets in the image-folder layout ([`ImageFolder`]);
//! - [`synthetic`]: a seeded generator of small shape-detection sets for fast tests.

pub mod detection;
pub mod error;
pub mod folder;
pub mod image_io;
pub mod preprocess;
pub mod synthetic;

pub use detection::{
    DetectionDataset, DetectionSample, Example, Issue, ValidationPolicy, ValidationReport, VocOptions, voc_files,
};
pub use error::{DataError, Result};
pub use folder::ImageFolder;
pub use synthetic::{SyntheticSpec, generate};

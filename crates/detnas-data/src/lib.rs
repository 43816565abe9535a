//! Training data for DetNAS, in pure Rust (no native dependencies).
//!
//! - [`image_io`]: the one robust image-loading path (format from content, decode limits, EXIF
//!   orientation, any colour type to RGB8, truncated-JPEG warnings), shared by the inference SDK
//!   and the trainer;
//! - [`detection`]: COCO and Pascal VOC detection sets loaded into one validated form
//!   ([`DetectionDataset`]) with a [`ValidationReport`] of every questionable record, a
//!   deterministic hold-out split, and COCO ground-truth output for `detnas eval`;
//! - [`png_rows`]: row-by-row PNG reading for images too large to decode whole;
//! - [`preprocess`]: letterboxing into the network input (SIMD bilinear resize);
//! - [`symmetry`]: the eight symmetries of the square on images and boxes (augmentation, TTA);
//! - [`folder`]: classification sets in the image-folder layout ([`ImageFolder`]);
//! - [`synthetic`]: a seeded generator of small shape-detection sets for fast tests.

//!
//! Features: `datasets` (the sets above: [`detection`], [`folder`], [`synthetic`]) and the image
//! codecs `jpeg`, `png`, `gif`, `bmp`, `webp` (all on by default). The inference SDK takes only
//! [`image_io`] and [`preprocess`] with the codecs its user chose.
#![warn(missing_docs)]

#[cfg(feature = "datasets")]
pub mod detection;
#[cfg(feature = "datasets")]
pub mod error;
#[cfg(feature = "datasets")]
pub mod folder;
pub mod image_io;
#[cfg(feature = "png")]
pub mod png_rows;
pub mod preprocess;
pub mod symmetry;
#[cfg(feature = "datasets")]
pub mod synthetic;

#[cfg(feature = "datasets")]
pub use detection::{
    DetectionDataset, DetectionSample, Example, Issue, ValidationPolicy, ValidationReport, VocOptions, voc_files,
};
#[cfg(feature = "datasets")]
pub use error::{DataError, Result};
#[cfg(feature = "datasets")]
pub use folder::ImageFolder;
#[cfg(feature = "datasets")]
pub use synthetic::{SyntheticSpec, generate};

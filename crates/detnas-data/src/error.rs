//! The error type of `detnas-data`: every variant names the file (or folder) and the problem.

use std::path::PathBuf;

use crate::detection::Issue;
use crate::image_io::ImageError;

/// Result with [`DataError`] as the default error.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Why a data set could not be loaded, validated, split, written or generated.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the expected shape (serde's message gives line and column).
    #[error("{path}: invalid COCO JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The whole file or data set is unusable (no categories, no class names, ...).
    #[error("{path}: {reason}")]
    Invalid {
        /// The file or folder.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// A validation problem found under a strict [`crate::ValidationPolicy`]: the file, the record
    /// (`annotation id 17`, `object #2`, `image id 3`, ...) and what is wrong with it.
    #[error("{path}: {record}: {detail} ({issue}; strict validation)", issue = issue.describe())]
    Strict {
        /// The file the record is in.
        path: PathBuf,
        /// The kind of problem.
        issue: Issue,
        /// The record.
        record: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An image-folder data set has no class sub-folder.
    #[error("{path}: no class sub-folders (expected one folder of images per class)")]
    NoClasses {
        /// The data set's folder.
        path: PathBuf,
    },
    /// A class folder of an image-folder data set holds no image file.
    #[error("{path}: class `{class}` has no image files (jpg, jpeg, png, gif, bmp, webp)")]
    EmptyClass {
        /// The data set's folder.
        path: PathBuf,
        /// The class (sub-folder) without images.
        class: String,
    },
    /// An image could not be decoded.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// An image could not be encoded or written.
    #[error("{path}: cannot write image: {reason}")]
    ImageWrite {
        /// The image file.
        path: PathBuf,
        /// The encoder's or the file system's error, as text.
        reason: String,
    },
    /// An argument is out of its documented range (split fraction, synthetic spec, ...).
    #[error("invalid argument: {0}")]
    Argument(String),
    /// An atomic write failed (the error names the file).
    #[error(transparent)]
    Core(#[from] detnas_core::CoreError),
    /// The output folder is not this command's to write (another command's, or the user's).
    #[error(transparent)]
    Owner(#[from] detnas_core::owner::OwnerError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Invalid { path: path.into(), reason: reason.into() }
    }
}

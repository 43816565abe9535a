//! Validation of detection records: what counts as a problem, the policy that decides what happens
//! to it, and the report that counts it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// What the loaders do with questionable records.
///
/// Whatever the policy, every issue is counted in the [`ValidationReport`]; a record that is
/// dropped never reaches the samples, and a kept record is always valid (finite box inside the
/// image with positive width and height, known class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationPolicy {
    /// A box partly outside its image is clipped to the image and kept ([`Issue::BoxClipped`])
    /// when true, dropped ([`Issue::BoxPartlyOutside`]) when false. Overhangs up to 0.001 px
    /// (floating-point noise of `x + width`) are clipped silently either way.
    pub clip_boxes: bool,
    /// Any problem ([`Issue::is_problem`]) is an error ([`DataError::Strict`]) naming the file and
    /// the record, instead of being counted and skipped. Notes (crowd regions, difficult objects,
    /// images without boxes) are never errors.
    pub strict: bool,
    /// Check that every image file exists (one `stat` per image); a missing one drops its sample
    /// ([`Issue::MissingImageFile`]). When false, image paths are taken on trust.
    pub check_files: bool,
    /// Examples kept in the report for each issue (file, record, detail).
    pub max_examples: usize,
    /// With `check_files`, decode every image fully (the training path,
    /// [`crate::image_io::load_image`]) instead of reading its header only: also finds corrupt or
    /// truncated pixel data ([`Issue::UnreadableImage`], [`Issue::ImageDecodeWarning`]). One full
    /// decode per image: slower on large sets.
    pub decode_images: bool,
}

impl Default for ValidationPolicy {
    /// Lenient: clip partly-outside boxes, count and skip every other problem, check that image
    /// files exist and their headers decode, keep 5 examples per issue.
    fn default() -> Self {
        ValidationPolicy { clip_boxes: true, strict: false, check_files: true, max_examples: 5, decode_images: false }
    }
}

impl ValidationPolicy {
    /// The default policy with [`ValidationPolicy::strict`] set: the first problem is an error.
    pub fn strict() -> Self {
        ValidationPolicy { strict: true, ..ValidationPolicy::default() }
    }
}

/// One kind of questionable record. Each is either a *problem* (an error under a strict policy) or
/// a *note* (normal in real data sets, only counted); see [`Issue::is_problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Issue {
    /// A box partly outside its image, clipped to it and kept (`clip_boxes`).
    BoxClipped,
    /// A box partly outside its image, dropped (`clip_boxes` off).
    BoxPartlyOutside,
    /// A box with no part inside its image, dropped.
    BoxOutside,
    /// A box with zero or negative width or height, dropped.
    BoxEmpty,
    /// A box with non-finite, missing or malformed coordinates, dropped.
    BoxInvalid,
    /// An annotation whose category id (COCO) or class name (VOC) is not a known class, dropped.
    UnknownCategory,
    /// A COCO annotation whose image id is not in `images`, dropped.
    UnknownImage,
    /// A category record with a negative or repeated id (COCO), skipped; the first one is kept.
    BadCategory,
    /// An image whose file does not exist, dropped with its annotations.
    MissingImageFile,
    /// An image record without a usable id, file name or size (none in the record and the file's
    /// header unreadable), dropped with its annotations.
    BadImageRecord,
    /// An image file that cannot be decoded (header unreadable; with
    /// [`ValidationPolicy::decode_images`], pixel data corrupt or truncated), dropped with its
    /// annotations.
    UnreadableImage,
    /// An image file whose dimensions differ from the recorded width and height (neither equal nor
    /// transposed), dropped with its annotations: its boxes would land in the wrong place.
    ImageSizeMismatch,
    /// An image that decodes with a warning (a truncated JPEG, whose missing part the decoder
    /// fills), kept; checked with [`ValidationPolicy::decode_images`] only.
    ImageDecodeWarning,
    /// A VOC annotation file that cannot be read or parsed, skipped.
    BadAnnotationFile,
    /// An image id (COCO) or image file (VOC) that appears again; the first record is kept.
    DuplicateImageId,
    /// An annotation id that appears again (COCO); the first annotation is kept.
    DuplicateAnnotationId,
    /// Note: a COCO crowd region (`iscrowd` 1), skipped (not a trainable box).
    CrowdSkipped,
    /// Note: a VOC object marked `difficult`, kept.
    DifficultKept,
    /// Note: a VOC object marked `difficult`, dropped (`VocOptions::skip_difficult`).
    DifficultSkipped,
    /// Note: a kept image with no box (no annotation, or all skipped or dropped).
    ImageWithoutBoxes,
}

impl Issue {
    /// Every issue, in report order.
    pub const ALL: [Issue; 20] = [
        Issue::BoxClipped,
        Issue::BoxPartlyOutside,
        Issue::BoxOutside,
        Issue::BoxEmpty,
        Issue::BoxInvalid,
        Issue::UnknownCategory,
        Issue::UnknownImage,
        Issue::BadCategory,
        Issue::MissingImageFile,
        Issue::BadImageRecord,
        Issue::UnreadableImage,
        Issue::ImageSizeMismatch,
        Issue::ImageDecodeWarning,
        Issue::BadAnnotationFile,
        Issue::DuplicateImageId,
        Issue::DuplicateAnnotationId,
        Issue::CrowdSkipped,
        Issue::DifficultKept,
        Issue::DifficultSkipped,
        Issue::ImageWithoutBoxes,
    ];

    /// Problems are errors under a strict policy; notes (crowd regions, difficult objects, images
    /// without boxes) are normal in real data and only counted.
    pub fn is_problem(self) -> bool {
        !matches!(self, Issue::CrowdSkipped | Issue::DifficultKept | Issue::DifficultSkipped | Issue::ImageWithoutBoxes)
    }

    /// What the count counts and what was done, as a plural phrase: `boxes partly outside the
    /// image (clipped)`.
    pub fn describe(self) -> &'static str {
        match self {
            Issue::BoxClipped => "boxes partly outside the image (clipped)",
            Issue::BoxPartlyOutside => "boxes partly outside the image (dropped)",
            Issue::BoxOutside => "boxes entirely outside the image (dropped)",
            Issue::BoxEmpty => "boxes with zero or negative size (dropped)",
            Issue::BoxInvalid => "boxes with non-finite or malformed coordinates (dropped)",
            Issue::UnknownCategory => "annotations of unknown categories (dropped)",
            Issue::UnknownImage => "annotations of unknown image ids (dropped)",
            Issue::BadCategory => "category records with a negative or repeated id (skipped)",
            Issue::MissingImageFile => "images whose file is missing (dropped)",
            Issue::BadImageRecord => "image records without a usable id, file name or size (dropped)",
            Issue::UnreadableImage => "images whose file cannot be decoded (dropped)",
            Issue::ImageSizeMismatch => "images whose file size differs from the recorded width/height (dropped)",
            Issue::ImageDecodeWarning => "images that decode with a warning, e.g. truncated JPEG (kept)",
            Issue::BadAnnotationFile => "unreadable annotation files (skipped)",
            Issue::DuplicateImageId => "duplicate images (first kept)",
            Issue::DuplicateAnnotationId => "duplicate annotation ids (first kept)",
            Issue::CrowdSkipped => "crowd annotations (skipped)",
            Issue::DifficultKept => "difficult objects (kept)",
            Issue::DifficultSkipped => "difficult objects (skipped)",
            Issue::ImageWithoutBoxes => "images without boxes (kept)",
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One example of an issue: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The kind of issue.
    pub issue: Issue,
    /// The file the record is in (the COCO JSON, the VOC XML).
    pub file: String,
    /// The record: `annotation id 17`, `image id 3`, `object #2`, `category id -1`, ...
    pub record: String,
    /// What is wrong, with the values found.
    pub detail: String,
}

/// What a loader found: record counts, a count per issue, and examples.
///
/// `Display` writes one line per non-zero issue count (`3 boxes partly outside the image
/// (clipped), e.g. a.json annotation id 17: ...`), or `no problems`; serde gives the same as JSON
/// (`counts` keyed by the snake-case issue name).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ValidationReport {
    /// The annotation source: the COCO JSON file, or the VOC annotation folder / first file.
    pub source: String,
    /// Image records read (COCO `images` entries, VOC files).
    pub images_read: usize,
    /// Annotation records read (COCO `annotations` entries, VOC `<object>`s).
    pub annotations_read: usize,
    /// Samples kept.
    pub samples: usize,
    /// Boxes kept.
    pub boxes: usize,
    /// Non-zero counts per issue.
    pub counts: BTreeMap<Issue, usize>,
    /// Up to `max_examples` examples per issue, in the order found.
    pub examples: Vec<Example>,
}

impl ValidationReport {
    /// How many times `issue` occurred.
    pub fn count(&self, issue: Issue) -> usize {
        self.counts.get(&issue).copied().unwrap_or(0)
    }

    /// Total count of problems (issues that are errors under a strict policy).
    pub fn problems(&self) -> usize {
        self.counts.iter().filter(|(issue, _)| issue.is_problem()).map(|(_, n)| n).sum()
    }

    /// One line: `<source>: N samples, M boxes kept (of I images, A annotations read)`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} samples, {} boxes kept (of {} images, {} annotations read)",
            self.source, self.samples, self.boxes, self.images_read, self.annotations_read
        )
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.counts.is_empty() {
            return f.write_str("no problems");
        }
        for (i, (issue, count)) in self.counts.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{count} {}", issue.describe())?;
            if let Some(e) = self.examples.iter().find(|e| e.issue == *issue) {
                write!(f, ", e.g. {} {}: {}", e.file, e.record, e.detail)?;
            }
        }
        Ok(())
    }
}

/// What [`Validator::image_size`] found.
pub(crate) enum Checked {
    /// The record cannot be used (already noted).
    Dropped,
    /// Its size, when known.
    Size(Option<(u32, u32)>),
}

/// Counts issues into a report, or fails on the first problem under a strict policy.
pub(crate) struct Validator<'p> {
    policy: &'p ValidationPolicy,
    pub(crate) report: ValidationReport,
}

impl<'p> Validator<'p> {
    pub(crate) fn new(policy: &'p ValidationPolicy, source: String) -> Self {
        Validator { policy, report: ValidationReport { source, ..ValidationReport::default() } }
    }

    pub(crate) fn policy(&self) -> &ValidationPolicy {
        self.policy
    }

    /// The size of a record's image at `path`, checked as the policy asks. With `check_files` the
    /// file must exist and its header (or, with `decode_images`, its whole content) must be readable
    /// and agree with `recorded`: every problem is noted against `file` / `record`, and a record
    /// that cannot be used comes back [`Checked::Dropped`]. Without checks: `recorded`, else the
    /// header's size if readable.
    pub(crate) fn image_size(
        &mut self,
        path: &Path,
        recorded: Option<(u32, u32)>,
        file: &Path,
        record: &dyn fmt::Display,
    ) -> Result<Checked> {
        if !self.policy.check_files {
            return Ok(Checked::Size(recorded.or_else(|| super::header_size(path))));
        }
        if !path.is_file() {
            self.note(Issue::MissingImageFile, file, record, format!("{} does not exist", path.display()))?;
            return Ok(Checked::Dropped);
        }
        match super::check_image(path, recorded, self.policy.decode_images) {
            Ok(checked) => {
                if let Some(warning) = checked.warning {
                    self.note(Issue::ImageDecodeWarning, file, record, warning)?;
                }
                Ok(Checked::Size(Some(checked.size)))
            }
            Err((issue, detail)) => {
                self.note(issue, file, record, detail)?;
                Ok(Checked::Dropped)
            }
        }
    }

    /// Records one occurrence of `issue` in `file` at `record`; under a strict policy a problem
    /// is returned as [`DataError::Strict`] instead.
    /// The size of an image record's file ([`Validator::image_size`]), or `None` when the record
    /// cannot be used: already noted, or neither a recorded size nor a readable one, which is
    /// noted as a bad record (`recorded` describes the record's size fields).
    pub(crate) fn sized(
        &mut self,
        path: &Path,
        recorded: Option<(u32, u32)>,
        file: &Path,
        record: &dyn fmt::Display,
        describe_recorded: impl FnOnce() -> String,
    ) -> Result<Option<(u32, u32)>> {
        match self.image_size(path, recorded, file, record)? {
            Checked::Dropped => Ok(None),
            Checked::Size(Some(size)) => Ok(Some(size)),
            Checked::Size(None) => {
                let detail = format!(
                    "{} not positive integers and {} has no readable size",
                    describe_recorded(),
                    path.display()
                );
                self.note(Issue::BadImageRecord, file, record, detail)?;
                Ok(None)
            }
        }
    }

    pub(crate) fn note(&mut self, issue: Issue, file: &Path, record: &dyn fmt::Display, detail: String) -> Result<()> {
        if self.policy.strict && issue.is_problem() {
            return Err(DataError::Strict { path: file.to_path_buf(), issue, record: record.to_string(), detail });
        }
        let count = self.report.counts.entry(issue).or_insert(0);
        *count += 1;
        if *count <= self.policy.max_examples {
            let file = file.display().to_string();
            self.report.examples.push(Example { issue, file, record: record.to_string(), detail });
        }
        Ok(())
    }
}

//! The COCO instances format (ground truth) and results format (detections), with loading and
//! validation.
//!
//! Boxes are `[x, y, width, height]` in pixels, as in COCO. Only the fields the bbox evaluation
//! needs are kept; others (`info`, `licenses`, `segmentation`, ...) are accepted and ignored.

use super::{CocoError, CocoProblem, Entry};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Label used as the "file" of errors about a ground truth built in memory.
const MEMORY_GT: &str = "<ground truth>";
/// Label used as the "file" of errors about detections built in memory.
const MEMORY_DT: &str = "<results>";

/// A COCO instances file: `images`, `annotations` (optional, default empty) and `categories`.
///
/// This is the raw data; [`GroundTruth`] is the validated, indexed form the evaluation uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CocoDataset {
    /// The `images` entries, in file order.
    pub images: Vec<CocoImage>,
    /// The `annotations` entries, in file order.
    pub annotations: Vec<CocoAnnotation>,
    /// The `categories` entries, in file order.
    pub categories: Vec<CocoCategory>,
}

/// An entry of `images`. Only `id` is used by the evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    /// The image's id (unique).
    pub id: i64,
    /// The image file, relative to the image folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Width in pixels, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// An entry of `annotations`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CocoAnnotation {
    /// The annotation's id (unique).
    pub id: i64,
    /// The image it annotates (an id of `images`).
    pub image_id: i64,
    /// Its category (an id of `categories`).
    pub category_id: i64,
    /// `[x, y, width, height]`; finite, width and height non-negative.
    pub bbox: [f64; 4],
    /// The object's area (for COCO, the segmentation's area, not `w*h`): it alone decides the area
    /// range (small / medium / large) of a ground-truth object.
    pub area: f64,
    /// Crowd regions are never true positives: a detection matching one is ignored.
    #[serde(serialize_with = "crowd_as_int")]
    pub iscrowd: bool,
}

/// An entry of `categories`. Only `id` is used by the evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    /// The category's id (unique).
    pub id: i64,
    /// Its name (empty when the file has none).
    #[serde(default)]
    pub name: String,
    /// Its supercategory, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

/// One entry of a COCO results file (`{"image_id", "category_id", "bbox", "score"}`), as
/// `pycocotools`' `loadRes` and `detnas eval` read it: the one COCO result record of the
/// evaluator, the `detect` command and the SDK (`detnas_infer::CocoDetection`).
///
/// Deserialising does not validate: [`Detections::new`] and [`Detections::load`] do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The image detected in (an id of the ground truth's images).
    pub image_id: i64,
    /// The detected category's id.
    pub category_id: i64,
    /// `[x, y, width, height]`; finite, width and height non-negative.
    pub bbox: [f64; 4],
    /// Confidence; finite. Higher ranks first.
    pub score: f64,
}

fn crowd_as_int<S: Serializer>(crowd: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(u8::from(*crowd))
}

/// `iscrowd` as found in files: an integer (COCO) or a boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCrowd {
    Int(i64),
    Bool(bool),
}

#[derive(Deserialize)]
struct RawDataset {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    area: f64,
    #[serde(default)]
    iscrowd: Option<RawCrowd>,
}

#[derive(Deserialize)]
struct RawDetection {
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    score: f64,
}

/// Checks a box: four finite numbers, width and height non-negative.
fn check_bbox(bbox: &[f64], entry: Entry) -> Result<[f64; 4], CocoProblem> {
    let malformed = |reason| CocoProblem::MalformedBbox { entry, bbox: bbox.to_vec(), reason };
    let b: [f64; 4] = bbox.try_into().map_err(|_| malformed("expected 4 numbers [x, y, width, height]"))?;
    if !b.iter().all(|v| v.is_finite()) {
        return Err(malformed("values must be finite"));
    }
    if b[2] < 0.0 || b[3] < 0.0 {
        return Err(malformed("width and height must be non-negative"));
    }
    Ok(b)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CocoError> {
    let text = std::fs::read_to_string(path).map_err(|source| CocoError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| CocoError::Json { path: path.into(), source })
}

impl CocoDataset {
    /// Reads and validates a COCO instances JSON file (see [`GroundTruth::new`] for the checks).
    pub fn load(path: &Path) -> Result<CocoDataset, CocoError> {
        let raw: RawDataset = read_json(path)?;
        let invalid = |problem| CocoError::Invalid { path: path.into(), problem };
        let annotations = raw
            .annotations
            .into_iter()
            .map(|a| {
                let iscrowd = match a.iscrowd {
                    None | Some(RawCrowd::Int(0)) | Some(RawCrowd::Bool(false)) => false,
                    Some(RawCrowd::Int(1)) | Some(RawCrowd::Bool(true)) => true,
                    Some(RawCrowd::Int(value)) => return Err(CocoProblem::BadCrowdFlag { id: a.id, value }),
                };
                let bbox = check_bbox(&a.bbox, Entry::Annotation { id: a.id })?;
                Ok(CocoAnnotation {
                    id: a.id,
                    image_id: a.image_id,
                    category_id: a.category_id,
                    bbox,
                    area: a.area,
                    iscrowd,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let dataset = CocoDataset { images: raw.images, annotations, categories: raw.categories };
        dataset.check().map_err(invalid)?;
        Ok(dataset)
    }

    /// The consistency checks of [`GroundTruth::new`].
    fn check(&self) -> Result<(), CocoProblem> {
        let mut images = HashSet::with_capacity(self.images.len());
        for image in &self.images {
            if !images.insert(image.id) {
                return Err(CocoProblem::DuplicateImageId { id: image.id });
            }
        }
        let mut categories = HashSet::with_capacity(self.categories.len());
        for category in &self.categories {
            if !categories.insert(category.id) {
                return Err(CocoProblem::DuplicateCategoryId { id: category.id });
            }
        }
        let mut ids = HashSet::with_capacity(self.annotations.len());
        for a in &self.annotations {
            if !ids.insert(a.id) {
                return Err(CocoProblem::DuplicateAnnotationId { id: a.id });
            }
            if !images.contains(&a.image_id) {
                return Err(CocoProblem::AnnotationUnknownImage { id: a.id, image_id: a.image_id });
            }
            if !categories.contains(&a.category_id) {
                return Err(CocoProblem::AnnotationUnknownCategory { id: a.id, category_id: a.category_id });
            }
            check_bbox(&a.bbox, Entry::Annotation { id: a.id })?;
            if !(a.area.is_finite() && a.area >= 0.0) {
                return Err(CocoProblem::BadArea { id: a.id, area: a.area });
            }
        }
        Ok(())
    }
}

/// A validated ground truth, indexed for evaluation.
///
/// Invariants: image, category and annotation ids are unique; every annotation refers to a listed
/// image and category; boxes are finite with non-negative size; areas are finite and non-negative.
#[derive(Clone, Debug)]
pub struct GroundTruth {
    dataset: CocoDataset,
    /// Sorted image ids: the images evaluated, in pycocotools' order.
    image_ids: Vec<i64>,
    /// Sorted category ids: the categories evaluated.
    category_ids: Vec<i64>,
    image_index: HashMap<i64, usize>,
    category_index: HashMap<i64, usize>,
}

impl GroundTruth {
    /// Validates an in-memory data set; errors name the file `<ground truth>`.
    pub fn new(dataset: CocoDataset) -> Result<GroundTruth, CocoError> {
        dataset.check().map_err(|problem| CocoError::Invalid { path: PathBuf::from(MEMORY_GT), problem })?;
        Ok(GroundTruth::index(dataset))
    }

    /// Reads and validates a COCO instances JSON file; errors name `path`.
    pub fn load(path: &Path) -> Result<GroundTruth, CocoError> {
        Ok(GroundTruth::index(CocoDataset::load(path)?))
    }

    fn index(dataset: CocoDataset) -> GroundTruth {
        let image_ids: Vec<i64> = dataset.images.iter().map(|i| i.id).collect::<BTreeSet<_>>().into_iter().collect();
        let category_ids: Vec<i64> =
            dataset.categories.iter().map(|c| c.id).collect::<BTreeSet<_>>().into_iter().collect();
        let image_index = image_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let category_index = category_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        GroundTruth { dataset, image_ids, category_ids, image_index, category_index }
    }

    /// The underlying data set.
    pub fn dataset(&self) -> &CocoDataset {
        &self.dataset
    }

    /// Image ids in ascending order (the images evaluated).
    pub fn image_ids(&self) -> &[i64] {
        &self.image_ids
    }

    /// Category ids in ascending order (the categories evaluated).
    pub fn category_ids(&self) -> &[i64] {
        &self.category_ids
    }

    /// Position of an image id in [`GroundTruth::image_ids`].
    pub(crate) fn image_position(&self, id: i64) -> Option<usize> {
        self.image_index.get(&id).copied()
    }

    /// Position of a category id in [`GroundTruth::category_ids`].
    pub(crate) fn category_position(&self, id: i64) -> Option<usize> {
        self.category_index.get(&id).copied()
    }
}

/// Detections validated against a ground truth.
///
/// Invariants: scores and boxes are finite, sizes non-negative, and every image id is one of the
/// ground truth's (as pycocotools' `loadRes` requires). Detections of categories absent from the
/// ground truth are kept but, as in pycocotools, not evaluated. An empty list is valid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detections {
    detections: Vec<Detection>,
}

impl Detections {
    /// Validates in-memory detections against `gt`; errors name the file `<results>`.
    pub fn new(detections: Vec<Detection>, gt: &GroundTruth) -> Result<Detections, CocoError> {
        for (index, d) in detections.iter().enumerate() {
            Detections::check(index, &d.bbox, d.score, d.image_id, gt)
                .map_err(|problem| CocoError::Invalid { path: PathBuf::from(MEMORY_DT), problem })?;
        }
        Ok(Detections { detections })
    }

    /// Reads a COCO results JSON file (a list of `{image_id, category_id, bbox, score}`) and
    /// validates it against `gt`; errors name `path`.
    pub fn load(path: &Path, gt: &GroundTruth) -> Result<Detections, CocoError> {
        let raw: Vec<RawDetection> = read_json(path)?;
        let detections = raw
            .into_iter()
            .enumerate()
            .map(|(index, d)| {
                let bbox = Detections::check(index, &d.bbox, d.score, d.image_id, gt)?;
                Ok(Detection { image_id: d.image_id, category_id: d.category_id, bbox, score: d.score })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| CocoError::Invalid { path: path.into(), problem })?;
        Ok(Detections { detections })
    }

    fn check(index: usize, bbox: &[f64], score: f64, image_id: i64, gt: &GroundTruth) -> Result<[f64; 4], CocoProblem> {
        let bbox = check_bbox(bbox, Entry::Result { index })?;
        if !score.is_finite() {
            return Err(CocoProblem::NonFiniteScore { index, score });
        }
        if gt.image_position(image_id).is_none() {
            return Err(CocoProblem::UnknownImage { index, image_id });
        }
        Ok(bbox)
    }

    /// The detections, in file order (their ids are position + 1, as pycocotools assigns them).
    pub fn as_slice(&self) -> &[Detection] {
        &self.detections
    }

    /// Number of detections.
    pub fn len(&self) -> usize {
        self.detections.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.detections.is_empty()
    }

    /// The detections, in file order.
    pub fn into_inner(self) -> Vec<Detection> {
        self.detections
    }
}

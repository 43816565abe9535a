//! Loading COCO instances JSON into a [`DetectionDataset`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::report::{Issue, ValidationPolicy, Validator};
use super::{DetectionDataset, DetectionSample, check_box};
use crate::error::{DataError, Result};

#[derive(Deserialize)]
struct RawCoco {
    images: Vec<RawImage>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    categories: Vec<RawCategory>,
}

#[derive(Deserialize)]
struct RawImage {
    id: i64,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    width: Option<f64>,
    #[serde(default)]
    height: Option<f64>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    #[serde(default)]
    id: Option<i64>,
    image_id: i64,
    category_id: i64,
    /// `[x, y, width, height]`; anything else is counted as [`Issue::BoxInvalid`].
    #[serde(default)]
    bbox: Vec<Value>,
    #[serde(default)]
    iscrowd: Option<Value>,
}

#[derive(Deserialize)]
struct RawCategory {
    id: i64,
    #[serde(default)]
    name: Option<String>,
}

/// A recorded image dimension: a positive integer (`640` or `640.0`).
fn dimension(value: Option<f64>) -> Option<u32> {
    let v = value?;
    (v.is_finite() && v >= 1.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32)
}

/// `iscrowd` as found in files: a non-zero number or `true` is a crowd region.
fn is_crowd(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|v| v != 0.0),
        _ => false,
    }
}

/// The usable categories of `categories`, id -> name (`category <id>` when it has none); a
/// negative or repeated id is noted as [`Issue::BadCategory`] against `json` (an error under a
/// strict policy). An error when none is usable.
fn read_categories(categories: &[RawCategory], json: &Path, v: &mut Validator<'_>) -> Result<BTreeMap<u64, String>> {
    let mut usable: BTreeMap<u64, String> = BTreeMap::new();
    for c in categories {
        let record = format!("category id {}", c.id);
        match u64::try_from(c.id) {
            Err(_) => v.note(Issue::BadCategory, json, &record, "negative id".to_owned())?,
            Ok(id) if usable.contains_key(&id) => {
                v.note(Issue::BadCategory, json, &record, "id repeated; the first is kept".to_owned())?
            }
            Ok(id) => {
                let name = c.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| format!("category {id}"));
                usable.insert(id, name);
            }
        }
    }
    if usable.is_empty() {
        return Err(DataError::invalid(json, "no usable category in `categories`"));
    }
    Ok(usable)
}

/// The samples of a COCO file's usable images (no boxes yet) and where each image id went.
struct CocoImages {
    samples: Vec<DetectionSample>,
    /// Image id -> index in `samples`.
    sample_of: HashMap<i64, usize>,
    /// Every image id of the file, usable or not.
    seen: HashSet<i64>,
}

/// Reads `images` (`file_name`s relative to `image_dir`); a repeated id is noted as
/// [`Issue::DuplicateImageId`] against `json` and the first is kept; see [`image_sample`].
fn read_images(images: &[RawImage], image_dir: &Path, json: &Path, v: &mut Validator<'_>) -> Result<CocoImages> {
    let mut read = CocoImages {
        samples: Vec::with_capacity(images.len()),
        sample_of: HashMap::with_capacity(images.len()),
        seen: HashSet::with_capacity(images.len()),
    };
    for image in images {
        if !read.seen.insert(image.id) {
            let record = format!("image id {}", image.id);
            v.note(Issue::DuplicateImageId, json, &record, "id repeated; the first is kept".to_owned())?;
            continue;
        }
        if let Some(sample) = image_sample(image, image_dir, json, v)? {
            read.sample_of.insert(image.id, read.samples.len());
            read.samples.push(sample);
        }
    }
    Ok(read)
}

/// The sample (without boxes) of `image`, or `None` when it cannot be used: a negative id, no
/// `file_name`, an unknown size or a file failing the policy's checks (each noted against `json`;
/// an error under a strict policy).
fn image_sample(
    image: &RawImage,
    image_dir: &Path,
    json: &Path,
    v: &mut Validator<'_>,
) -> Result<Option<DetectionSample>> {
    let record = format!("image id {}", image.id);
    let Ok(image_id) = u64::try_from(image.id) else {
        v.note(Issue::BadImageRecord, json, &record, "negative id".to_owned())?;
        return Ok(None);
    };
    let Some(file_name) = image.file_name.as_deref().filter(|n| !n.is_empty()) else {
        v.note(Issue::BadImageRecord, json, &record, "no file_name".to_owned())?;
        return Ok(None);
    };
    let path = image_dir.join(file_name);
    let recorded = match (dimension(image.width), dimension(image.height)) {
        (Some(w), Some(h)) => Some((w, h)),
        _ => None,
    };
    let describe = || format!("width {:?} / height {:?}", image.width, image.height);
    let Some((width, height)) = v.sized(&path, recorded, json, &record, describe)? else {
        return Ok(None);
    };
    Ok(Some(DetectionSample { image: path, width, height, boxes: Vec::new(), labels: Vec::new(), image_id }))
}

/// Adds the box of each of `annotations` to its image's sample in `images`; labels come from
/// `label_of` (category id -> label). Repeated annotation ids, unknown images, crowd regions,
/// unknown categories and bad boxes are noted against `json` (an error under a strict policy).
fn add_annotations(
    annotations: &[RawAnnotation],
    label_of: &HashMap<u64, usize>,
    images: &mut CocoImages,
    json: &Path,
    v: &mut Validator<'_>,
) -> Result<()> {
    let mut seen_annotations: HashSet<i64> = HashSet::with_capacity(annotations.len());
    for (index, a) in annotations.iter().enumerate() {
        let record = match a.id {
            Some(id) => format!("annotation id {id}"),
            None => format!("annotation #{index}"),
        };
        if let Some(id) = a.id
            && !seen_annotations.insert(id)
        {
            v.note(Issue::DuplicateAnnotationId, json, &record, "id repeated; the first is kept".to_owned())?;
            continue;
        }
        let Some(&at) = images.sample_of.get(&a.image_id) else {
            if !images.seen.contains(&a.image_id) {
                let detail = format!("image id {} is not in `images`", a.image_id);
                v.note(Issue::UnknownImage, json, &record, detail)?;
            }
            // Otherwise its image was dropped, and counted, already.
            continue;
        };
        add_annotation(a, &record, label_of, &mut images.samples[at], json, v)?;
    }
    Ok(())
}

/// Adds the box and label of annotation `a` (called `record` in notes) to `sample` unless it is a
/// crowd region, its category is not in `label_of` or its box fails [`check_box`] (each noted
/// against `json`; an error under a strict policy).
fn add_annotation(
    a: &RawAnnotation,
    record: &str,
    label_of: &HashMap<u64, usize>,
    sample: &mut DetectionSample,
    json: &Path,
    v: &mut Validator<'_>,
) -> Result<()> {
    if is_crowd(a.iscrowd.as_ref()) {
        return v.note(Issue::CrowdSkipped, json, &record, "iscrowd region".to_owned());
    }
    let Some(&label) = u64::try_from(a.category_id).ok().and_then(|id| label_of.get(&id)) else {
        let detail = format!("category id {} is not in `categories`", a.category_id);
        return v.note(Issue::UnknownCategory, json, &record, detail);
    };
    let numbers: Option<Vec<f64>> = a.bbox.iter().map(Value::as_f64).collect();
    let xyxy = match numbers.as_deref() {
        Some(&[x, y, w, h]) => [x, y, x + w, y + h],
        _ => [f64::NAN; 4],
    };
    match check_box(xyxy, sample.width, sample.height, v.policy().clip_boxes) {
        Ok((b, clipped)) => {
            if let Some(issue) = clipped {
                let detail = box_detail(&a.bbox, sample.width, sample.height);
                v.note(issue, json, &record, detail)?;
            }
            sample.boxes.push(b);
            sample.labels.push(label);
            Ok(())
        }
        Err(issue) => v.note(issue, json, &record, box_detail(&a.bbox, sample.width, sample.height)),
    }
}

impl DetectionDataset {
    /// Loads a COCO instances JSON file; image `file_name`s are relative to `image_dir`.
    ///
    /// Classes are the `categories` sorted by id: label `k` is the `k`-th smallest id
    /// (`category_ids[k]`), named by its `name` (`category <id>` when it has none). Annotations
    /// with `iscrowd` set are skipped ([`Issue::CrowdSkipped`]). Every other questionable record is
    /// counted in [`DetectionDataset::report`] and dropped, clipped or kept as
    /// [`ValidationPolicy`] says, or is a [`DataError::Strict`] naming the file and the record.
    /// A file that is not JSON of the COCO shape ([`DataError::Json`], with line and column) or
    /// has no usable category ([`DataError::Invalid`]) is an error whatever the policy.
    pub fn from_coco(json: &Path, image_dir: &Path, policy: &ValidationPolicy) -> Result<DetectionDataset> {
        let text = std::fs::read_to_string(json).map_err(|e| DataError::io(json, e))?;
        let raw: RawCoco =
            serde_json::from_str(&text).map_err(|source| DataError::Json { path: json.into(), source })?;
        let mut v = Validator::new(policy, json.display().to_string());
        v.report.images_read = raw.images.len();
        v.report.annotations_read = raw.annotations.len();

        let categories = read_categories(&raw.categories, json, &mut v)?;
        let label_of: HashMap<u64, usize> = categories.keys().enumerate().map(|(label, &id)| (id, label)).collect();
        let mut images = read_images(&raw.images, image_dir, json, &mut v)?;
        add_annotations(&raw.annotations, &label_of, &mut images, json, &mut v)?;

        let samples = images.samples;
        for sample in &samples {
            if sample.boxes.is_empty() {
                v.note(
                    Issue::ImageWithoutBoxes,
                    json,
                    &format!("image id {}", sample.image_id),
                    "no box kept".to_owned(),
                )?;
            }
        }
        v.report.samples = samples.len();
        v.report.boxes = samples.iter().map(|s| s.boxes.len()).sum();
        let (category_ids, class_names) = categories.into_iter().unzip();
        Ok(DetectionDataset { class_names, category_ids, samples, report: v.report })
    }
}

fn box_detail(bbox: &[Value], width: u32, height: u32) -> String {
    let shown: Vec<String> = bbox.iter().map(Value::to_string).collect();
    format!("bbox [{}] (x, y, w, h) in a {width}x{height} image", shown.join(", "))
}

//! Loading COCO instances JSON into a [`DetectionDataset`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::report::{Checked, Issue, ValidationPolicy, Validator};
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

        let mut categories: BTreeMap<u64, String> = BTreeMap::new();
        for c in &raw.categories {
            let record = format!("category id {}", c.id);
            match u64::try_from(c.id) {
                Err(_) => v.note(Issue::BadCategory, json, &record, "negative id".to_owned())?,
                Ok(id) if categories.contains_key(&id) => {
                    v.note(Issue::BadCategory, json, &record, "id repeated; the first is kept".to_owned())?
                }
                Ok(id) => {
                    let name = c.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| format!("category {id}"));
                    categories.insert(id, name);
                }
            }
        }
        if categories.is_empty() {
            return Err(DataError::invalid(json, "no usable category in `categories`"));
        }
        let label_of: HashMap<u64, usize> = categories.keys().enumerate().map(|(label, &id)| (id, label)).collect();

        let mut samples: Vec<DetectionSample> = Vec::with_capacity(raw.images.len());
        let mut sample_of: HashMap<i64, usize> = HashMap::with_capacity(raw.images.len());
        let mut seen_images: HashSet<i64> = HashSet::with_capacity(raw.images.len());
        for image in &raw.images {
            let record = format!("image id {}", image.id);
            if !seen_images.insert(image.id) {
                v.note(Issue::DuplicateImageId, json, &record, "id repeated; the first is kept".to_owned())?;
                continue;
            }
            let Ok(image_id) = u64::try_from(image.id) else {
                v.note(Issue::BadImageRecord, json, &record, "negative id".to_owned())?;
                continue;
            };
            let Some(file_name) = image.file_name.as_deref().filter(|n| !n.is_empty()) else {
                v.note(Issue::BadImageRecord, json, &record, "no file_name".to_owned())?;
                continue;
            };
            let path = image_dir.join(file_name);
            let recorded = match (dimension(image.width), dimension(image.height)) {
                (Some(w), Some(h)) => Some((w, h)),
                _ => None,
            };
            let size = match v.image_size(&path, recorded, json, &record)? {
                Checked::Dropped => continue,
                Checked::Size(size) => size,
            };
            let Some((width, height)) = size else {
                let detail = format!(
                    "width {:?} / height {:?} not positive integers and {} has no readable size",
                    image.width,
                    image.height,
                    path.display()
                );
                v.note(Issue::BadImageRecord, json, &record, detail)?;
                continue;
            };
            sample_of.insert(image.id, samples.len());
            samples.push(DetectionSample {
                image: path,
                width,
                height,
                boxes: Vec::new(),
                labels: Vec::new(),
                image_id,
            });
        }

        let mut seen_annotations: HashSet<i64> = HashSet::with_capacity(raw.annotations.len());
        for (index, a) in raw.annotations.iter().enumerate() {
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
            let Some(&at) = sample_of.get(&a.image_id) else {
                if !seen_images.contains(&a.image_id) {
                    let detail = format!("image id {} is not in `images`", a.image_id);
                    v.note(Issue::UnknownImage, json, &record, detail)?;
                }
                // Otherwise its image was dropped, and counted, already.
                continue;
            };
            if is_crowd(a.iscrowd.as_ref()) {
                v.note(Issue::CrowdSkipped, json, &record, "iscrowd region".to_owned())?;
                continue;
            }
            let Some(&label) = u64::try_from(a.category_id).ok().and_then(|id| label_of.get(&id)) else {
                let detail = format!("category id {} is not in `categories`", a.category_id);
                v.note(Issue::UnknownCategory, json, &record, detail)?;
                continue;
            };
            let sample = &mut samples[at];
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
                }
                Err(issue) => v.note(issue, json, &record, box_detail(&a.bbox, sample.width, sample.height))?,
            }
        }

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

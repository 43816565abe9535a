//! [`Detector::detect_dataset`]: a model run on every image of a COCO ground truth, its
//! detections as COCO results with the ground truth's ids — what `detnas eval --model` evaluates.

use super::names::category_ids_by_name;
use crate::Detector;
use crate::error::{InferError, Result};
use detnas_core::coco::{Detection, GroundTruth};
use std::path::{Path, PathBuf};

/// The detections of a model on a ground truth's images, with what the caller should be told.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DatasetDetections {
    /// COCO results: the ground truth's image ids, its category ids (matched by class name where
    /// the names agree, the model's own ids otherwise), every score the detector keeps.
    pub detections: Vec<Detection>,
    /// Images detected.
    pub images: usize,
    /// Lines for the user: class names that did not match (the model's ids kept), images whose
    /// size is not the one the ground truth records (boxes in other pixels than the annotations').
    pub warnings: Vec<String>,
}

impl Detector {
    /// Detects in every image of `gt` (read from `gt_path`; file names relative to `images`, by
    /// default the folder of `gt_path`). Every image counts in an evaluation, so an image without
    /// a file name, or one that cannot be detected in, is an error (naming up to five of them)
    /// rather than a smaller data set. For AP, build the detector keeping every score
    /// ([`crate::DetectorBuilder::all_scores`]).
    pub fn detect_dataset(&self, gt: &GroundTruth, gt_path: &Path, images: Option<&Path>) -> Result<DatasetDetections> {
        let root =
            images.map(Path::to_path_buf).unwrap_or_else(|| gt_path.parent().map(PathBuf::from).unwrap_or_default());
        let mut ids = Vec::new();
        let mut paths = Vec::new();
        let mut sizes = Vec::new();
        for image in &gt.dataset().images {
            let Some(name) = image.file_name.as_deref() else {
                return Err(InferError::GroundTruth(format!(
                    "{}: image {} has no file_name, so --model cannot find it: give --dt",
                    gt_path.display(),
                    image.id
                )));
            };
            ids.push(image.id);
            paths.push(root.join(name));
            sizes.push(image.width.zip(image.height));
        }
        let mut warnings = Vec::new();
        // The model's classes take the ground truth's ids by name; where the names differ, its own
        // ids are kept and the user told.
        let class_names = &self.info().config.class_names;
        let by_name = match category_ids_by_name(gt_path, &gt.dataset().categories, class_names) {
            Ok(ids) => Some(ids),
            Err(e) => {
                warnings.push(format!("warning: {e}; the model's own category ids are used"));
                None
            }
        };
        let (mut detections, mut failed, mut resized) = (Vec::new(), Vec::new(), Vec::new());
        for (k, result) in self.detect_batch(&paths).into_iter().enumerate() {
            let found = match result {
                Ok(d) => d,
                Err(e) => {
                    failed.push(e.to_string());
                    continue;
                }
            };
            if sizes[k].is_some_and(|size| size != (found.width, found.height)) {
                resized.push(paths[k].display().to_string());
            }
            detections.extend(found.detections.iter().map(|d| {
                let mut coco = d.to_coco(ids[k]);
                if let Some(by_name) = &by_name {
                    coco.category_id = by_name[d.class_id];
                }
                coco
            }));
        }
        if !failed.is_empty() {
            let shown = failed.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
            return Err(InferError::GroundTruth(format!(
                "{} of {} ground-truth images could not be detected in (every one counts in the evaluation): {shown}",
                failed.len(),
                paths.len()
            )));
        }
        if !resized.is_empty() {
            warnings.push(format!(
                "warning: {} image(s) are not the size {} gives them (resized after annotation, or an EXIF \
                 rotation?): {}",
                resized.len(),
                gt_path.display(),
                resized.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(DatasetDetections { detections, images: paths.len(), warnings })
    }
}

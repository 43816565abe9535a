//! Output file names (`labels/<name>.txt`, `images/<name>.jpg`) and image ids matched from a COCO
//! ground truth.

use crate::error::{InferError, Result};
use detnas_core::coco::{CocoCategory, CocoDataset};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// One output base name per input, unique without regard to case (so the names stay distinct on
/// case-insensitive file systems too).
///
/// A file keeps its stem when no other input shares it; inputs sharing a stem are named
/// `<parent folder>_<stem>`, and any name still taken gets `-2`, `-3`, ... The names depend only on
/// the list, never on the order in which images finish.
pub(super) fn output_names(files: &[PathBuf]) -> Vec<String> {
    let stems: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, p)| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| format!("image{i}")))
        .collect();
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in &stems {
        *count.entry(s.to_lowercase()).or_default() += 1;
    }
    let mut taken: HashSet<String> =
        stems.iter().filter(|s| count[&s.to_lowercase()] == 1).map(|s| s.to_lowercase()).collect();
    files
        .iter()
        .zip(&stems)
        .map(|(path, stem)| {
            if count[&stem.to_lowercase()] == 1 {
                return stem.clone();
            }
            let parent = path.parent().and_then(|p| p.file_name()).map(|p| p.to_string_lossy().into_owned());
            let base = parent.map_or_else(|| stem.clone(), |p| format!("{p}_{stem}"));
            let mut name = base.clone();
            let mut n = 2;
            while !taken.insert(name.to_lowercase()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        })
        .collect()
}

/// The normal components of a path (`.` dropped), for suffix matching.
fn components(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The ground truth's category id of each of the model's classes, matched by name. A class the
/// ground truth does not name is an [`InferError::GroundTruth`] listing both sides (`gt_path` names
/// the file): its detections would be scored against the wrong category, or not at all.
pub fn category_ids_by_name(gt_path: &Path, categories: &[CocoCategory], class_names: &[String]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(class_names.len());
    let mut missing = Vec::new();
    for name in class_names {
        match categories.iter().find(|c| &c.name == name) {
            Some(c) => ids.push(c.id),
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        let gt: Vec<String> = categories.iter().map(|c| format!("{} (id {})", c.name, c.id)).collect();
        return Err(InferError::GroundTruth(format!(
            "{}: the model's class(es) {} are not categories of the ground truth (model: {}; ground truth: {})",
            gt_path.display(),
            missing.join(", "),
            class_names.join(", "),
            if gt.is_empty() { "none".to_string() } else { gt.join(", ") }
        )));
    }
    Ok(ids)
}

/// Image ids of `files` from a COCO instances file, matched by file name.
///
/// A ground-truth `file_name` matches an input when its components end the input's path
/// (`img.jpg` matches `a/img.jpg`; `a/img.jpg` matches `data/a/img.jpg` but not `b/img.jpg`); the
/// longest match wins. `None`: no ground-truth image matches. Errors: two ground-truth images match
/// one input equally well, or one ground-truth image matches two inputs (the ids would collide).
pub(super) fn ids_from_ground_truth(gt_path: &Path, files: &[PathBuf]) -> Result<Vec<Option<i64>>> {
    let gt = CocoDataset::load(gt_path)?;
    let mut by_base: HashMap<String, Vec<(Vec<String>, i64)>> = HashMap::new();
    for img in &gt.images {
        let Some(name) = &img.file_name else { continue };
        let parts = components(Path::new(name));
        if let Some(base) = parts.last() {
            by_base.entry(base.clone()).or_default().push((parts.clone(), img.id));
        }
    }
    let mut owner: HashMap<i64, &Path> = HashMap::new();
    let mut ids = Vec::with_capacity(files.len());
    for file in files {
        let parts = components(file);
        let candidates = parts.last().and_then(|b| by_base.get(b)).map_or(&[][..], |v| v.as_slice());
        let matching: Vec<&(Vec<String>, i64)> = candidates.iter().filter(|(gt, _)| parts.ends_with(gt)).collect();
        let best = matching.iter().map(|(gt, _)| gt.len()).max();
        let winners: Vec<_> = matching.iter().filter(|(gt, _)| Some(gt.len()) == best).collect();
        let id = match winners.as_slice() {
            [] => None,
            [(_, id)] => Some(*id),
            several => {
                return Err(InferError::GroundTruth(format!(
                    "{}: {} matches image ids {} equally well (their file_name is the same)",
                    gt_path.display(),
                    file.display(),
                    several.iter().map(|(_, id)| id.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        if let Some(id) = id
            && let Some(first) = owner.insert(id, file)
        {
            return Err(InferError::GroundTruth(format!(
                "{}: image id {id} matches both {} and {}: name the folders in the ground truth's \
                 file_name, or detect one folder at a time",
                gt_path.display(),
                first.display(),
                file.display()
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_matched_by_name_and_unknown_names_listed() {
        let cat = |id, name: &str| CocoCategory { id, name: name.into(), supercategory: None };
        let gt = [cat(7, "tree"), cat(3, "bush")];
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(category_ids_by_name(Path::new("gt.json"), &gt, &names(&["bush", "tree"])).unwrap(), [3, 7]);
        let err = category_ids_by_name(Path::new("gt.json"), &gt, &names(&["tree", "car"])).unwrap_err().to_string();
        assert!(err.contains("car") && err.contains("tree (id 7)") && err.contains("model: tree, car"), "{err}");
    }

    fn paths(p: &[&str]) -> Vec<PathBuf> {
        p.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn names_are_unique_whatever_the_inputs() {
        let files = paths(&["a/img.png", "b/img.jpg", "c/img_3.png", "d/IMG.png", "x/a_img.png", "y/z/a/img.bmp"]);
        let names = output_names(&files);
        assert_eq!(names, ["a_img-2", "b_img", "img_3", "d_IMG", "a_img", "a_img-3"]);
        let lower: HashSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(lower.len(), files.len());
    }

    fn gt(dir: &Path, names: &[&str]) -> PathBuf {
        let images: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"id": i + 10, "file_name": n, "width": 8, "height": 8}))
            .collect();
        let path = dir.join("gt.json");
        let json = serde_json::json!({"images": images, "annotations": [], "categories": []});
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    #[test]
    fn ids_match_on_the_longest_path_suffix_and_refuse_ambiguity() {
        let dir = tempfile::tempdir().unwrap();
        let g = gt(dir.path(), &["a/img.jpg", "b/img.jpg", "solo.jpg"]);
        let ids = ids_from_ground_truth(&g, &paths(&["data/a/img.jpg", "data/b/img.jpg", "x/solo.jpg", "new.jpg"]));
        assert_eq!(ids.unwrap(), [Some(10), Some(11), Some(12), None]);

        let g = gt(dir.path(), &["img.jpg"]);
        let err = ids_from_ground_truth(&g, &paths(&["a/img.jpg", "b/img.jpg"])).unwrap_err().to_string();
        assert!(err.contains("image id 10 matches both a/img.jpg and b/img.jpg"), "{err}");

        let g = gt(dir.path(), &["img.jpg", "./img.jpg"]);
        let err = ids_from_ground_truth(&g, &paths(&["a/img.jpg"])).unwrap_err().to_string();
        assert!(err.contains("matches image ids 10, 11 equally well"), "{err}");
    }
}

//! What a `detect` run writes as it goes, so that a killed run loses nothing it finished:
//!
//! - `run.json` (written atomically before the first image): the settings that decide the results
//!   (model identity, options, inputs as given) and the planned work (files, ids, output names,
//!   inputs that failed to collect);
//! - `results.jsonl`: one [`ImageRecord`] per finished image, appended and flushed as each image
//!   finishes, after its label and annotated files are written;
//! - at the end, `detections.json`, `images.json` and `errors.json`, each written atomically from
//!   the records in input order, and `results.jsonl` rewritten in input order — so a resumed run
//!   ends with exactly the files an uninterrupted one writes.

use super::{Failure, file_error, to_json};
use crate::error::{InferError, Result};
use crate::options::Tta;
use detnas_core::coco::Detection;
use detnas_core::detector::DetectorConfig;
use detnas_core::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;
/// The run's settings and planned work.
pub(super) const MANIFEST: &str = "run.json";
/// One record per finished image.
pub(super) const JOURNAL: &str = "results.jsonl";

/// Everything that decides a run's results; a resumed run must have the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Settings {
    pub model: String,
    pub model_bytes: u64,
    /// FNV-1a 64 of the model file.
    pub model_hash: String,
    pub inputs: Vec<String>,
    pub conf: Option<f32>,
    pub iou: Option<f32>,
    pub max_det: Option<usize>,
    pub classes: Option<Vec<String>>,
    pub save_txt: bool,
    pub save_img: bool,
    pub ids_from: Option<String>,
    /// `--tile` window size and its overlap (absent in runs written before tiling existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tile: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f32>,
    /// `--full-decode` (absent, false, in runs written before reduced JPEG decoding existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_decode: bool,
    /// `--tta` (absent, none, in runs written before test-time augmentation existed).
    #[serde(default, skip_serializing_if = "is_no_tta")]
    pub tta: Tta,
}

fn is_no_tta(tta: &Tta) -> bool {
    *tta == Tta::None
}

/// Settings recorded as spelled but compared otherwise: the model by its size and hash (an
/// identical copy is the same model), the inputs by the files they name (see
/// [`Manifest::reconcile`]), the ground truth by its canonical path.
const SPELLINGS: [&str; 2] = ["model", "inputs"];

impl Settings {
    /// The fields that differ from `other` (`name (recorded R, now N)`), spellings left out. A
    /// field left out of one side holds its default there (defaults are not written), so adding
    /// `--tile` or `--tta` on resume counts.
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        let (a, b) = (json!(self), json!(other));
        let (a, b) = (a.as_object().expect("struct"), b.as_object().expect("struct"));
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        // Settings hold f32 values: shown as f32 (0.7, not 0.699999988), unset ones as `none`.
        let shown = |v: Option<&serde_json::Value>| match v {
            None | Some(serde_json::Value::Null) => "none".to_string(),
            Some(serde_json::Value::Number(n)) if n.is_f64() => format!("{}", n.as_f64().unwrap_or(f64::NAN) as f32),
            Some(v) => v.to_string(),
        };
        keys.into_iter()
            .filter(|k| !SPELLINGS.contains(&k.as_str()) && a.get(*k) != b.get(*k))
            .map(|k| format!("{k} (recorded {}, now {})", shown(a.get(k)), shown(b.get(k))))
            .collect()
    }
}

/// An input's size and modification time when the run planned it: a resumed run detects again
/// the inputs whose stamp changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stamp {
    pub bytes: u64,
    /// Nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

impl Stamp {
    /// The stamp of `path` now; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        let modified = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(Stamp { bytes: m.len(), modified_ns: u64::try_from(modified.as_nanos()).unwrap_or(u64::MAX) })
    }
}

/// The planned work of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub format: u32,
    pub settings: Settings,
    /// Images to process, in input order (their index is their position).
    pub files: Vec<PathBuf>,
    /// COCO image id of each file; `None`: not in the `--ids-from` ground truth (not processed).
    pub ids: Vec<Option<i64>>,
    /// Output base name of each file (`labels/<name>.txt`, `images/<name>.jpg`).
    pub names: Vec<String>,
    /// Inputs that could not be collected.
    pub failures: Vec<Failure>,
    /// Canonical path of each file: a resumed run matches its inputs by it, however spelled.
    #[serde(default)]
    pub canonical: Vec<PathBuf>,
    /// Each file's [`Stamp`] when planned.
    #[serde(default)]
    pub stamps: Vec<Option<Stamp>>,
    /// With `--ids-from`: the ground truth's category id of each model class (matched by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_ids: Option<Vec<i64>>,
}

/// Canonical forms of `files` (the path itself when it cannot be resolved).
fn canonical_paths(files: &[PathBuf]) -> Vec<PathBuf> {
    files.iter().map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())).collect()
}

/// Up to three paths, then a count.
fn few(paths: &[&PathBuf]) -> String {
    let mut s: Vec<String> =
        paths.iter().take(3).map(|p| detnas_core::fsutil::escaped(&p.display().to_string())).collect();
    if paths.len() > 3 {
        s.push(format!("and {} more", paths.len() - 3));
    }
    s.join(", ")
}

impl Manifest {
    pub fn new(settings: Settings, files: Vec<PathBuf>, ids: Vec<Option<i64>>, names: Vec<String>) -> Self {
        let canonical = canonical_paths(&files);
        let stamps = files.iter().map(|f| Stamp::of(f)).collect();
        Manifest {
            format: FORMAT,
            settings,
            files,
            ids,
            names,
            failures: Vec::new(),
            canonical,
            stamps,
            category_ids: None,
        }
    }

    /// The category id recorded for detections of model class `class`.
    pub fn category_id(&self, cfg: &DetectorConfig, class: usize) -> i64 {
        match &self.category_ids {
            Some(ids) => ids.get(class).copied().unwrap_or(cfg.category_id(class) as i64),
            None => cfg.category_id(class) as i64,
        }
    }

    /// Matches the files collected now (`current`, as spelled now) with the run's files by
    /// identity. Different sets are refused in one line naming what was added and removed; each
    /// file takes today's spelling (a resume from another folder still finds it). Returns the
    /// indices of files whose stamp changed since the run planned them (to be detected again),
    /// with their stamps brought up to date.
    pub fn reconcile(&mut self, current: &[PathBuf]) -> Result<Vec<usize>> {
        if self.canonical.len() != self.files.len() {
            self.canonical = canonical_paths(&self.files);
        }
        let now: BTreeMap<PathBuf, &PathBuf> = canonical_paths(current).into_iter().zip(current).collect();
        let recorded: std::collections::BTreeSet<&PathBuf> = self.canonical.iter().collect();
        let added: Vec<&PathBuf> = now.iter().filter(|(c, _)| !recorded.contains(c)).map(|(_, p)| *p).collect();
        let removed: Vec<&PathBuf> =
            self.canonical.iter().zip(&self.files).filter(|(c, _)| !now.contains_key(*c)).map(|(_, p)| p).collect();
        if !added.is_empty() || !removed.is_empty() {
            return Err(resume_error(format!(
                "--resume: the inputs are not those of the run ({} added: {}; {} removed: {}); rerun with the same \
                 inputs, or use --exist-ok to start afresh",
                added.len(),
                few(&added),
                removed.len(),
                few(&removed)
            )));
        }
        if self.stamps.len() != self.files.len() {
            self.stamps = vec![None; self.files.len()];
        }
        let mut changed = Vec::new();
        for i in 0..self.files.len() {
            self.files[i] = now[&self.canonical[i]].clone();
            let stamp = Stamp::of(&self.files[i]);
            if self.stamps[i].is_some() && stamp != self.stamps[i] {
                changed.push(i);
            }
            self.stamps[i] = stamp;
        }
        Ok(changed)
    }

    /// Writes `run.json` into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        Ok(write_atomic(&path, &to_json(self, true, &path)?)?)
    }

    /// Reads the manifest of the run in `dir` and checks that `settings` match it.
    pub fn read_for_resume(dir: &Path, settings: &Settings) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| file_error(format!("reading {}", path.display()), e))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| InferError::Resume {
            reason: format!("{}: not a detnas detect run (or a newer format)", path.display()),
            source: Some(Box::new(e)),
        })?;
        if m.format != FORMAT {
            let reason = format!("{}: run format {} is not supported (expected {FORMAT})", path.display(), m.format);
            return Err(resume_error(reason));
        }
        let diff = m.settings.differences(settings);
        if !diff.is_empty() {
            return Err(resume_error(format!(
                "--resume: {} was started with other settings: {}; rerun it with the same model and options, or use \
                 --exist-ok to start afresh",
                dir.display(),
                diff.join(", ")
            )));
        }
        Ok(m)
    }
}

/// One detection as recorded (COCO conventions: `bbox` is `[x, y, w, h]` in original pixels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BoxRecord {
    /// The category id: the model's, or the ground truth's of the class name with `ids_from`.
    pub category_id: i64,
    /// `[x, y, width, height]` in the image's pixels, rounded to 1/1000.
    pub bbox: [f64; 4],
    /// Confidence, rounded to 1e-5.
    pub score: f64,
}

/// The outcome of one image (one line of `results.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageRecord {
    /// Its position among the run's images (input order).
    pub index: usize,
    /// The image file, as spelled.
    pub file: String,
    /// Its COCO image id (1, 2, ... in input order, or from the `ids_from` ground truth).
    pub id: i64,
    /// Why the image could not be processed (then nothing else is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Image width in pixels.
    #[serde(default)]
    pub width: u32,
    /// Image height in pixels.
    #[serde(default)]
    pub height: u32,
    /// Its detections, highest score first.
    #[serde(default)]
    pub detections: Vec<BoxRecord>,
    /// Image warnings (a truncated JPEG).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `labels/<name>.txt`, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_file: Option<String>,
    /// `images/<name>.jpg`, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_file: Option<String>,
    /// Why an output file (label or annotated copy) could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_error: Option<String>,
}

impl ImageRecord {
    /// The record of image `index` that failed with `error`.
    pub(super) fn failed(index: usize, file: String, id: i64, error: String) -> Self {
        ImageRecord { error: Some(error), ..ImageRecord::new(index, file, id) }
    }

    /// An empty record of image `index`, to be filled.
    pub(super) fn new(index: usize, file: String, id: i64) -> Self {
        ImageRecord {
            index,
            file,
            id,
            error: None,
            width: 0,
            height: 0,
            detections: Vec::new(),
            warnings: Vec::new(),
            label_file: None,
            image_file: None,
            output_error: None,
        }
    }
}

/// A refused resume.
fn resume_error(reason: String) -> InferError {
    InferError::Resume { reason, source: None }
}

/// The append-only `results.jsonl` of a run.
pub(super) struct Journal {
    file: std::fs::File,
    dir: PathBuf,
}

impl Journal {
    /// Reads the complete records of an interrupted run's journal, keyed by image index (a line
    /// torn by a kill is dropped; records of indices `>= files` are ignored). No journal: none.
    pub fn read(dir: &Path, files: usize) -> Result<BTreeMap<usize, ImageRecord>> {
        let path = dir.join(JOURNAL);
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(file_error(format!("reading {}", path.display()), e)),
        };
        let mut records = BTreeMap::new();
        for line in text.lines() {
            if let Ok(r) = serde_json::from_str::<ImageRecord>(line)
                && r.index < files
            {
                records.insert(r.index, r);
            }
        }
        Ok(records)
    }

    /// Starts the journal in `dir` holding exactly `records` (none for a new run), open for appending.
    pub fn start(dir: &Path, records: &BTreeMap<usize, ImageRecord>) -> Result<Journal> {
        write_atomic(&dir.join(JOURNAL), &lines(records.values(), dir)?)?;
        Journal::open(dir)
    }

    fn open(dir: &Path) -> Result<Journal> {
        let path = dir.join(JOURNAL);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| file_error(format!("opening {}", path.display()), e))?;
        Ok(Journal { file, dir: dir.to_path_buf() })
    }

    /// Appends one record as one line in a single write (readers never see half a record unless
    /// the process dies inside that write).
    pub fn append(&mut self, record: &ImageRecord) -> Result<()> {
        let path = self.dir.join(JOURNAL);
        let mut line = to_json(record, false, &path)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.flush())
            .map_err(|e| file_error(format!("writing {}", path.display()), e))
    }

    /// Rewrites the journal with `records` in input order.
    pub fn finish(self, records: &BTreeMap<usize, ImageRecord>) -> Result<()> {
        Ok(write_atomic(&self.dir.join(JOURNAL), &lines(records.values(), &self.dir)?)?)
    }
}

/// The journal of `dir` holding `records`, one per line.
fn lines<'a>(records: impl Iterator<Item = &'a ImageRecord>, dir: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        out.extend(to_json(r, false, &dir.join(JOURNAL))?);
        out.push(b'\n');
    }
    Ok(out)
}

/// Every failure of the run: inputs that could not be collected, then failed images and outputs.
pub(super) fn all_failures(collect: &[Failure], records: &BTreeMap<usize, ImageRecord>) -> Vec<Failure> {
    let mut all = collect.to_vec();
    for r in records.values() {
        for e in [&r.error, &r.output_error].into_iter().flatten() {
            all.push(Failure::new(r.file.clone(), e.clone()));
        }
    }
    all
}

/// Writes `detections.json`, `images.json` and `errors.json` (removed when nothing failed), each
/// atomically.
pub(super) fn write_results(
    dir: &Path,
    manifest: &Manifest,
    cfg: &DetectorConfig,
    records: &BTreeMap<usize, ImageRecord>,
    failures: &[Failure],
) -> Result<()> {
    let ok = || records.values().filter(|r| r.error.is_none());
    let coco: Vec<Detection> = ok()
        .flat_map(|r| {
            r.detections.iter().map(|d| Detection {
                image_id: r.id,
                category_id: d.category_id,
                bbox: d.bbox,
                score: d.score,
            })
        })
        .collect();
    let path = dir.join("detections.json");
    write_atomic(&path, &to_json(&coco, false, &path)?)?;
    let images: Vec<_> = ok()
        .map(|r| {
            let mut entry = json!({"id": r.id, "file_name": r.file, "width": r.width, "height": r.height,
                "detections": r.detections.len()});
            for (key, value) in [("label_file", &r.label_file), ("image_file", &r.image_file)] {
                if let Some(v) = value {
                    entry[key] = json!(v);
                }
            }
            entry
        })
        .collect();
    let warnings: Vec<_> =
        ok().flat_map(|r| r.warnings.iter().map(|w| json!({"file": r.file, "warning": w}))).collect();
    let categories: Vec<_> = cfg
        .class_names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": manifest.category_id(cfg, i), "name": n}))
        .collect();
    let index =
        json!({"model": manifest.settings.model, "images": images, "categories": categories, "warnings": warnings});
    let path = dir.join("images.json");
    write_atomic(&path, &to_json(&index, true, &path)?)?;
    let errors = dir.join("errors.json");
    if failures.is_empty() {
        if errors.exists() {
            std::fs::remove_file(&errors).map_err(|e| file_error(format!("removing {}", errors.display()), e))?;
        }
    } else {
        write_atomic(&errors, &to_json(failures, true, &errors)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_dropped_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::start(dir.path(), &BTreeMap::new()).unwrap();
        j.append(&ImageRecord::failed(1, "b.jpg".into(), 2, "bad".into())).unwrap();
        j.append(&ImageRecord::failed(0, "a.jpg".into(), 1, "bad".into())).unwrap();
        drop(j);
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(JOURNAL)).unwrap();
        f.write_all(b"{\"index\":2,\"file\":\"c.j").unwrap();
        let records = Journal::read(dir.path(), 3).unwrap();
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), [0, 1]);
        let j = Journal::start(dir.path(), &records).unwrap();
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("{\"index\":0"), "rewritten in input order: {text}");
        j.finish(&records).unwrap();
    }
}

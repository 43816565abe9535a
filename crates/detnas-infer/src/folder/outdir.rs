//! The `detect` output folder: checked before any work, owned through its record
//! ([`detnas_core::owner`]), never silently mixing two runs.
//!
//! A folder holding results of an earlier run is refused unless the run replaces them
//! (`--exist-ok`: the files the record lists are removed, nothing else) or continues them
//! (`--resume`). A folder of another command or of the user's own files is refused. Every file
//! the run may write is listed in the record before the first is written.

use super::FolderEvent;
use crate::error::{InferError, Result};
use detnas_core::owner::{self, Existing, Flags, OwnedDir};
use std::path::{Path, PathBuf};

/// Files a folder run writes at the top of its output folder (besides `labels/` and `images/`).
pub const RESULT_FILES: [&str; 5] = ["detections.json", "images.json", "errors.json", "results.jsonl", "run.json"];

const FLAGS: Flags = Flags { out: "--out", replace: "--exist-ok", resume: Some("--resume") };

/// A checked, writable output folder owned by `detect`.
#[derive(Debug)]
pub(super) struct OutDir {
    pub path: PathBuf,
    /// Canonical path, so that input walking can skip it.
    pub canonical: PathBuf,
    /// Whether results of an earlier run are present.
    pub has_results: bool,
    owned: OwnedDir,
}

impl OutDir {
    /// Creates `path` if needed and checks that it is a folder `detect` may write, holding no
    /// earlier results unless `existing` allows them. Removes nothing but temporaries of a killed run.
    pub fn open(path: &Path, existing: Existing, emit: &mut dyn FnMut(FolderEvent<'_>)) -> Result<OutDir> {
        adopt_earlier_run(path, emit)?;
        let opened = OwnedDir::open(path, "detect", existing, FLAGS)?;
        if existing == Existing::Resume && !path.join("run.json").exists() {
            return Err(InferError::OutDir(format!(
                "--resume: {} holds no run to continue (no run.json)",
                path.display()
            )));
        }
        let canonical =
            std::fs::canonicalize(path).map_err(|e| InferError::OutDir(format!("--out {}: {e}", path.display())))?;
        Ok(OutDir { path: path.to_path_buf(), canonical, has_results: opened.earlier, owned: opened.dir })
    }

    /// Lists every file of the run (the result files, and a label and annotated file per output
    /// name as asked) in the record, before any is written. A file at one of those names that
    /// detnas did not write is an error naming it.
    pub fn claim(&self, names: &[String], save_txt: bool, save_img: bool) -> Result<()> {
        let mut files: Vec<String> = RESULT_FILES.iter().map(|s| s.to_string()).collect();
        for (wanted, dir, ext) in [(save_txt, "labels", "txt"), (save_img, "images", "jpg")] {
            if wanted {
                if detnas_core::fsutil::is_symlink(&self.path.join(dir)) {
                    return Err(InferError::OutDir(format!(
                        "--out {}: {dir} is a symbolic link; detect writes its files only into folders it made",
                        self.path.display()
                    )));
                }
                files.push(format!("{dir}/"));
                files.extend(names.iter().map(|n| format!("{dir}/{n}.{ext}")));
            }
        }
        let record = owner::read_record(&self.path)?.map(|r| r.files).unwrap_or_default();
        let foreign: Vec<&String> = files
            .iter()
            .filter(|f| {
                !f.ends_with('/') && !record.contains(*f) && std::fs::symlink_metadata(self.path.join(f)).is_ok()
            })
            .collect();
        if let Some(first) = foreign.first() {
            return Err(InferError::OutDir(format!(
                "--out {}: {} exists and detnas did not write it ({} such file(s)); it is never replaced: choose another --out",
                self.path.display(),
                detnas_core::fsutil::escaped(first),
                foreign.len()
            )));
        }
        self.owned.note(&files)?;
        Ok(())
    }

    /// Removes the files of the earlier run (those its record lists, and only those); says which
    /// other files stay.
    pub fn clear(&self, emit: &mut dyn FnMut(FolderEvent<'_>)) -> Result<()> {
        if let Some(note) = self.owned.replace_with_note()? {
            emit(FolderEvent::Notice(note));
        }
        Ok(())
    }
}

/// A folder an earlier detnas `detect` wrote (before ownership records; its `run.json` loads):
/// its result files and the label and annotated files its run names are adopted, nothing else.
fn adopt_earlier_run(path: &Path, emit: &mut dyn FnMut(FolderEvent<'_>)) -> Result<()> {
    if owner::owner_of(path).is_some() {
        return Ok(());
    }
    let Ok(bytes) = std::fs::read(path.join("run.json")) else { return Ok(()) };
    let Ok(run) = serde_json::from_slice::<super::journal::Manifest>(&bytes) else { return Ok(()) };
    let mut files: Vec<String> = RESULT_FILES.iter().map(|s| s.to_string()).collect();
    for n in &run.names {
        files.extend([format!("labels/{n}.txt"), format!("images/{n}.jpg")]);
    }
    files.extend(["labels/".to_string(), "images/".to_string()]);
    let adopted = owner::adopt(path, "detect", &files)?;
    if adopted > 0 {
        emit(FolderEvent::Notice(format!(
            "note: {} was written by an earlier detnas: its {adopted} result file(s) are now recorded",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_results_are_refused_replaced_only_when_asked_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = OutDir::open(&out, Existing::Refuse, &mut |_| {}).unwrap();
        assert!(!o.has_results);
        o.claim(&["old".into()], true, false).unwrap();
        std::fs::create_dir_all(out.join("labels")).unwrap();
        std::fs::write(out.join("labels/old.txt"), b"0 0.5 0.5 1 1 0.9").unwrap();
        std::fs::write(out.join("labels/mine.txt"), b"mine").unwrap();
        std::fs::write(out.join("notes.md"), b"mine").unwrap();
        let err = OutDir::open(&out, Existing::Refuse, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("labels/old.txt") && err.contains("--exist-ok"), "{err}");
        let err = OutDir::open(&out, Existing::Resume, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("no run.json"), "{err}");
        let o = OutDir::open(&out, Existing::Replace, &mut |_| {}).unwrap();
        o.clear(&mut |_| {}).unwrap();
        assert!(!out.join("labels/old.txt").exists());
        assert_eq!(std::fs::read(out.join("notes.md")).unwrap(), b"mine");
        assert_eq!(std::fs::read(out.join("labels/mine.txt")).unwrap(), b"mine");
        let err = o.claim(&["mine".into()], true, false).unwrap_err().to_string();
        assert!(err.contains("labels/mine.txt exists and detnas did not write it"), "{err}");
    }

    #[test]
    fn a_file_or_unwritable_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = OutDir::open(&file, Existing::Refuse, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("is not a folder"), "{err}");
        let err = super::super::chain(&OutDir::open(&file.join("sub"), Existing::Refuse, &mut |_| {}).unwrap_err());
        assert!(err.contains("cannot create the folder"), "{err}");
    }
}

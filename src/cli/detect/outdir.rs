//! The `detect` output folder: checked before any work, never silently mixing two runs.
//!
//! A folder holding results of an earlier run is refused unless the run replaces them
//! (`--exist-ok`: every file `detect` writes is removed first, nothing else) or continues them
//! (`--resume`). Files that are not `detect`'s own are never touched.

use anyhow::{Context, Result, bail};
use detnas_core::fsutil::write_atomic;
use std::path::{Path, PathBuf};

/// Files `detect` writes at the top of its output folder.
pub const RESULT_FILES: [&str; 5] = ["detections.json", "images.json", "errors.json", "results.jsonl", "run.json"];
/// Folders `detect` fills (`--save-txt`, `--save-img`).
pub const RESULT_DIRS: [&str; 2] = ["labels", "images"];

/// What to do with results of an earlier run found in the output folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse the folder.
    Refuse,
    /// Remove them, then start afresh.
    Replace,
    /// Continue that run.
    Resume,
}

/// A checked, writable output folder.
#[derive(Debug)]
pub struct OutDir {
    pub path: PathBuf,
    /// Canonical path, so that input walking can skip it.
    pub canonical: PathBuf,
    /// Whether results of an earlier run are present.
    pub has_results: bool,
}

impl OutDir {
    /// Creates `path` if needed and checks that it is a writable folder, and that it holds no
    /// earlier results unless `existing` allows them. Removes nothing.
    pub fn open(path: &Path, existing: Existing) -> Result<OutDir> {
        if path.exists() && !path.is_dir() {
            bail!("--out {}: exists and is not a folder", path.display());
        }
        std::fs::create_dir_all(path).with_context(|| format!("--out {}: cannot create the folder", path.display()))?;
        let probe = path.join(".detnas-write-check");
        write_atomic(&probe, b"").with_context(|| format!("--out {}: the folder is not writable", path.display()))?;
        let _ = std::fs::remove_file(&probe);
        let found: Vec<&str> =
            RESULT_FILES.iter().chain(&RESULT_DIRS).copied().filter(|n| path.join(n).exists()).collect();
        let has_results = !found.is_empty();
        if has_results && existing == Existing::Refuse {
            bail!(
                "--out {} holds results of an earlier run ({}): pass --exist-ok to replace them, --resume to continue \
                 that run, or choose another --out",
                path.display(),
                found.join(", ")
            );
        }
        if existing == Existing::Resume && !path.join("run.json").exists() {
            bail!("--resume: {} holds no run to continue (no run.json)", path.display());
        }
        let canonical = std::fs::canonicalize(path).with_context(|| format!("--out {}", path.display()))?;
        Ok(OutDir { path: path.to_path_buf(), canonical, has_results })
    }

    /// Removes every file and folder `detect` writes (and only those).
    pub fn clear(&self) -> Result<()> {
        for name in RESULT_FILES {
            let p = self.path.join(name);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        for name in RESULT_DIRS {
            let p = self.path.join(name);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_results_are_refused_replaced_only_when_asked_and_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert!(!OutDir::open(&out, Existing::Refuse).unwrap().has_results);
        std::fs::create_dir_all(out.join("labels")).unwrap();
        std::fs::write(out.join("labels/old.txt"), b"0 0.5 0.5 1 1 0.9").unwrap();
        std::fs::write(out.join("notes.md"), b"mine").unwrap();
        let err = OutDir::open(&out, Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains("holds results of an earlier run (labels)") && err.contains("--exist-ok"), "{err}");
        let err = OutDir::open(&out, Existing::Resume).unwrap_err().to_string();
        assert!(err.contains("no run.json"), "{err}");
        let o = OutDir::open(&out, Existing::Replace).unwrap();
        o.clear().unwrap();
        assert!(!out.join("labels").exists());
        assert_eq!(std::fs::read(out.join("notes.md")).unwrap(), b"mine");
    }

    #[test]
    fn a_file_or_unwritable_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = OutDir::open(&file, Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains("is not a folder"), "{err}");
        let err = format!("{:#}", OutDir::open(&file.join("sub"), Existing::Refuse).unwrap_err());
        assert!(err.contains("cannot create the folder"), "{err}");
    }
}

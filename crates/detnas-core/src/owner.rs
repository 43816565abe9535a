//! Folder ownership: which `detnas` command wrote a folder, and exactly which files.
//!
//! Every command that writes a folder stamps it with [`RECORD`]: the command, a format version and
//! the files it wrote (relative, `/`-separated). A name is added **before** its file is written,
//! so a crash can leave a listed name without its file, never a file of ours that is not listed.
//! A listed name ending in `/` is a folder: one the command created (removed when it is empty),
//! or a folder owned by a command a pipeline ran (cleared by its own record).
//!
//! The rules, the same for every command ([`OwnedDir::open`]):
//! - a folder owned by another command is refused, naming that command;
//! - replacing (`--exist-ok`, `--overwrite`) removes exactly the listed files and nothing else;
//!   files the record does not list stay, and are reported ([`OwnedDir::replace`], [`kept_note`]);
//! - a folder with files but no record is never emptied: it is refused;
//! - temporary files of [`crate::fsutil::write_atomic`] left by a killed run are swept when the
//!   folder is opened again.

use crate::fsutil::{TEMP_PREFIX, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The ownership record inside a folder.
pub const RECORD: &str = ".detnas-owner.json";

/// Version of the record's layout.
pub const FORMAT: u32 = 1;

/// The record's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Version of the record's layout ([`FORMAT`]).
    pub format: u32,
    /// The command that owns the folder (`detect`, `train`, `search`, ...).
    pub command: String,
    /// Files (and `name/` folders) the command wrote, relative to the folder.
    pub files: BTreeSet<String>,
}

/// A folder that cannot be used, or a record that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The folder belongs to another command.
    #[error(
        "{path} holds the output of `detnas {owner}` ({RECORD}): choose another {flag} (it is never replaced by `detnas {command}`)"
    )]
    Foreign {
        /// The folder.
        path: PathBuf,
        /// The command that owns it.
        owner: String,
        /// The command asking for it.
        command: String,
        /// The flag that named the folder (`--out`, ...).
        flag: String,
    },
    /// The folder holds files but no ownership record.
    #[error(
        "{path} holds files detnas did not write ({sample}): detnas never writes results among them nor empties such a folder; choose a new or empty {flag}"
    )]
    Unowned {
        /// The folder.
        path: PathBuf,
        /// Some of the files found there.
        sample: String,
        /// The flag that named the folder.
        flag: String,
    },
    /// The folder holds an earlier run of the same command, and replacing was not asked for.
    #[error("{path} holds results of an earlier `detnas {command}` run ({sample}): {hint}")]
    Earlier {
        /// The folder.
        path: PathBuf,
        /// The command asking for it (and owning it).
        command: String,
        /// Some of the earlier run's files.
        sample: String,
        /// The flags that would replace or continue that run.
        hint: String,
    },
    /// The record or the folder cannot be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O or format error, as text.
        reason: String,
    },
}

impl OwnerError {
    fn io(path: &Path, reason: impl std::fmt::Display) -> Self {
        OwnerError::Io { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

/// What to do with an earlier run's results in the folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse the folder when it holds any.
    Refuse,
    /// Remove them (the listed files only), then start afresh.
    Replace,
    /// Keep them: the run continues.
    Resume,
}

/// The command's flags, for messages.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    /// The output flag (`--out`).
    pub out: &'static str,
    /// The flag that replaces earlier results (`--exist-ok` or `--overwrite`).
    pub replace: &'static str,
    /// The flag that continues them, if the command has one.
    pub resume: Option<&'static str>,
}

impl Flags {
    /// `--out`, `--overwrite`, `--resume`.
    pub const OVERWRITE_RESUME: Flags = Flags { out: "--out", replace: "--overwrite", resume: Some("--resume") };
}

/// A folder this process owns.
#[derive(Debug)]
pub struct OwnedDir {
    path: PathBuf,
    command: String,
}

/// The result of [`OwnedDir::open`].
#[derive(Debug)]
pub struct Opened {
    /// The folder, ready to record files.
    pub dir: OwnedDir,
    /// Files of an earlier run of this command are there.
    pub earlier: bool,
}

/// One line about files kept in `dir` because detnas did not write them, if any.
pub fn kept_note(dir: &Path, kept: &[String]) -> Option<String> {
    if kept.is_empty() {
        return None;
    }
    Some(format!("note: {} keeps {} file(s) detnas did not write: {}", dir.display(), kept.len(), sample(kept)))
}

/// Up to four names, then a count.
fn sample(names: &[String]) -> String {
    let mut s = names.iter().take(4).map(|n| crate::fsutil::escaped(n)).collect::<Vec<_>>().join(", ");
    if names.len() > 4 {
        s.push_str(&format!(" and {} more", names.len() - 4));
    }
    s
}

/// The record of `dir`, if it has one.
pub fn read_record(dir: &Path) -> Result<Option<Record>, OwnerError> {
    let path = dir.join(RECORD);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(OwnerError::io(&path, e)),
    };
    let record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| OwnerError::io(&path, format!("not a detnas folder record: {e}")))?;
    if record.format != FORMAT {
        return Err(OwnerError::io(
            &path,
            format!("record format {} is not supported (expected {FORMAT})", record.format),
        ));
    }
    // Only names inside the folder: a record is a file anyone can edit, and clearing follows it.
    if let Some(bad) = record.files.iter().find(|f| !inside(f)) {
        return Err(OwnerError::io(
            &path,
            format!("not a detnas folder record: `{}` is not a name inside the folder", crate::fsutil::escaped(bad)),
        ));
    }
    Ok(Some(record))
}

/// Whether `rel` names something inside a folder: relative, no `..`, not empty.
fn inside(rel: &str) -> bool {
    let trimmed = rel.trim_end_matches('/');
    let components: Vec<_> = Path::new(trimmed).components().collect();
    components.iter().any(|c| matches!(c, std::path::Component::Normal(_)))
        && components.iter().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

/// The command that owns `dir`, if a readable record says so.
pub fn owner_of(dir: &Path) -> Option<String> {
    read_record(dir).ok().flatten().map(|r| r.command)
}

fn write_record(dir: &Path, record: &Record) -> Result<(), OwnerError> {
    let path = dir.join(RECORD);
    let json = serde_json::to_vec_pretty(record).map_err(|e| OwnerError::io(&path, e))?;
    write_atomic(&path, &json).map_err(|e| OwnerError::io(&path, e))
}

/// Adds `files` to the record of `dir` before they are written; does nothing when `dir` has no
/// record (a library caller that does not stamp its folders).
pub fn note(dir: &Path, files: &[String]) -> Result<(), OwnerError> {
    if let Some(bad) = files.iter().find(|f| !inside(f)) {
        return Err(OwnerError::io(dir, format!("`{}` is not a name inside the folder", crate::fsutil::escaped(bad))));
    }
    let Some(mut record) = read_record(dir)? else { return Ok(()) };
    let before = record.files.len();
    record.files.extend(files.iter().cloned());
    if record.files.len() != before {
        write_record(dir, &record)?;
    }
    Ok(())
}

/// Adopts a folder an earlier detnas (before ownership records) wrote for `command`: when `dir`
/// has no record, writes one listing those of `files` that exist (the caller recognised them as
/// its own by their content, e.g. a checkpoint state that loads). Returns how many were listed;
/// 0 when `dir` already has a record or none of `files` exists. Other files stay unlisted.
pub fn adopt(dir: &Path, command: &str, files: &[String]) -> Result<usize, OwnerError> {
    if read_record(dir)?.is_some() {
        return Ok(0);
    }
    let present: BTreeSet<String> =
        files.iter().filter(|f| inside(f) && std::fs::symlink_metadata(dir.join(f)).is_ok()).cloned().collect();
    if present.is_empty() {
        return Ok(0);
    }
    let n = present.len();
    write_record(dir, &Record { format: FORMAT, command: command.into(), files: present })?;
    Ok(n)
}

/// Files under `dir` its record does not list (relative paths; all of them without a record).
pub fn unlisted(dir: &Path) -> Vec<String> {
    let listed = read_record(dir).ok().flatten().map(|r| r.files).unwrap_or_default();
    let mut out: Vec<String> = files_under(dir).into_iter().filter(|f| !listed.contains(f)).collect();
    out.retain(|f| !f.rsplit('/').next().is_some_and(|n| n.starts_with(TEMP_PREFIX)));
    out
}

/// Every file under `dir` (relative, `/`-separated), records left out; folders owned by a
/// command, other than `dir` itself, are listed as `name/` without their content.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && name == RECORD {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                stack.push((entry.path(), format!("{rel}/")));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// Up to `n` entries of `dir` (sorted names; folders with a `/`), without walking below it: enough
/// to show the user what a folder holds, however large it is.
fn first_entries(dir: &Path, n: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .take(10_000)
        .map(|e| {
            let dir = e.file_type().is_ok_and(|t| t.is_dir());
            format!("{}{}", e.file_name().to_string_lossy(), if dir { "/" } else { "" })
        })
        .collect();
    names.sort();
    names.truncate(n);
    names
}

/// Removes the temporary files of [`write_atomic`] under `dir` (left by a killed run).
fn sweep_temporaries(dir: &Path) {
    for rel in files_under(dir) {
        if rel.rsplit('/').next().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            let _ = std::fs::remove_file(dir.join(&rel));
        }
    }
}

/// Removes the listed files of `dir`'s record (listed folders: their own listed files, then the
/// folder if empty). The record itself stays unless `drop_record`.
fn clear(dir: &Path, drop_record: bool) -> Result<(), OwnerError> {
    let Some(record) = read_record(dir)? else { return Ok(()) };
    let root = std::fs::canonicalize(dir).map_err(|e| OwnerError::io(dir, e))?;
    // Only names whose folder is really inside `dir`: a listed folder replaced by a symbolic link
    // to somewhere else is not followed.
    let inside_dir =
        |path: &Path| path.parent().and_then(|p| std::fs::canonicalize(p).ok()).is_some_and(|p| p.starts_with(&root));
    // Files first; folders (listed with `/`, or found to be real folders) deepest last, so that
    // created folders are empty when their turn comes.
    let mut folders: Vec<(usize, PathBuf)> = Vec::new();
    for rel in &record.files {
        let name = rel.trim_end_matches('/');
        let path = dir.join(name);
        if !inside_dir(&path) {
            continue;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => folders.push((name.matches('/').count(), path)),
            Ok(_) if !rel.ends_with('/') => std::fs::remove_file(&path).map_err(|e| OwnerError::io(&path, e))?,
            _ => {}
        }
    }
    folders.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
    for (_, path) in folders {
        if read_record(&path).ok().flatten().is_some() {
            clear(&path, true)?;
        }
        let _ = std::fs::remove_dir(&path); // only when empty
    }
    if drop_record {
        let path = dir.join(RECORD);
        std::fs::remove_file(&path).map_err(|e| OwnerError::io(&path, e))?;
    }
    Ok(())
}

impl OwnedDir {
    /// Opens `path` for `command` (creating it when needed and stamping it), following the
    /// module's rules. Nothing is removed but temporaries: under `Existing::Replace` the caller
    /// calls [`OwnedDir::replace`] once it is ready to write (so that a run failing before then
    /// keeps the earlier results).
    pub fn open(path: &Path, command: &str, existing: Existing, flags: Flags) -> Result<Opened, OwnerError> {
        if path.exists() && !path.is_dir() {
            return Err(OwnerError::io(path, format!("{} exists and is not a folder", flags.out)));
        }
        std::fs::create_dir_all(path)
            .map_err(|e| OwnerError::io(path, format!("{}: cannot create the folder: {e}", flags.out)))?;
        let dir = OwnedDir { path: path.to_path_buf(), command: command.to_string() };
        let Some(record) = read_record(path)? else {
            let found = first_entries(path, 5);
            if !found.is_empty() {
                return Err(OwnerError::Unowned {
                    path: path.to_path_buf(),
                    sample: sample(&found),
                    flag: flags.out.into(),
                });
            }
            write_record(path, &Record { format: FORMAT, command: command.into(), files: BTreeSet::new() })
                .map_err(|e| OwnerError::io(path, format!("{}: the folder is not writable ({e})", flags.out)))?;
            return Ok(Opened { dir, earlier: false });
        };
        if record.command != command {
            return Err(OwnerError::Foreign {
                path: path.to_path_buf(),
                owner: record.command,
                command: command.into(),
                flag: flags.out.into(),
            });
        }
        sweep_temporaries(path);
        let present: Vec<String> = record
            .files
            .iter()
            .filter(|f| !f.ends_with('/') && std::fs::symlink_metadata(path.join(f)).is_ok())
            .cloned()
            .collect();
        let nested = record.files.iter().any(|f| f.ends_with('/') && path.join(f).is_dir());
        let earlier = !present.is_empty() || nested;
        match existing {
            Existing::Refuse if earlier => {
                let hint = match flags.resume {
                    Some(r) => format!(
                        "pass {} to replace them, {r} to continue that run, or choose another {}",
                        flags.replace, flags.out
                    ),
                    None => format!("pass {} to replace them, or choose another {}", flags.replace, flags.out),
                };
                let shown = if present.is_empty() { record.files.iter().cloned().collect() } else { present };
                Err(OwnerError::Earlier {
                    path: path.to_path_buf(),
                    command: command.into(),
                    sample: sample(&shown),
                    hint,
                })
            }
            _ => Ok(Opened { dir, earlier }),
        }
    }

    /// Removes the files of earlier runs (listed ones only) and empties the record; returns the
    /// files that stay because detnas did not write them.
    pub fn replace(&self) -> Result<Vec<String>, OwnerError> {
        clear(&self.path, false)?;
        let record = Record { format: FORMAT, command: self.command.clone(), files: BTreeSet::new() };
        write_record(&self.path, &record)?;
        Ok(files_under(&self.path))
    }

    /// [`OwnedDir::replace`], with the line about the files kept ([`kept_note`]) to show the user.
    pub fn replace_with_note(&self) -> Result<Option<String>, OwnerError> {
        Ok(kept_note(&self.path, &self.replace()?))
    }

    /// Adds `files` to the record (call before writing them); see [`note`].
    pub fn note(&self, files: &[String]) -> Result<(), OwnerError> {
        note(&self.path, files)
    }

    /// Records `rel`, then writes it atomically.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), OwnerError> {
        self.note(&[rel.to_string()])?;
        let path = self.path.join(rel);
        write_atomic(&path, bytes).map_err(|e| OwnerError::io(&path, e))
    }

    /// Records and creates the sub-folder `rel` (written `rel/` in the record).
    pub fn create_dir(&self, rel: &str) -> Result<PathBuf, OwnerError> {
        self.note(&[format!("{}/", rel.trim_end_matches('/'))])?;
        let path = self.path.join(rel);
        std::fs::create_dir_all(&path).map_err(|e| OwnerError::io(&path, e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: Flags = Flags { out: "--out", replace: "--exist-ok", resume: Some("--resume") };

    fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        files_under(dir).into_iter().map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap_or_default())).collect()
    }

    #[test]
    fn replace_removes_only_listed_files_and_reports_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let o = OwnedDir::open(&out, "detect", Existing::Refuse, FLAGS).unwrap();
        assert!(!o.earlier);
        o.dir.create_dir("images").unwrap();
        o.dir.write("images/a.jpg", b"ours").unwrap();
        o.dir.write("detections.json", b"[]").unwrap();
        std::fs::write(out.join("images/my-photo.jpg"), b"theirs").unwrap();
        std::fs::create_dir_all(out.join("images/deep")).unwrap();
        std::fs::write(out.join("images/deep/x.jpg"), b"theirs too").unwrap();
        std::fs::write(out.join("readme.md"), b"notes").unwrap();
        let err = OwnedDir::open(&out, "detect", Existing::Refuse, FLAGS).unwrap_err().to_string();
        assert!(err.contains("earlier `detnas detect` run") && err.contains("--exist-ok"), "{err}");
        let o = OwnedDir::open(&out, "detect", Existing::Replace, FLAGS).unwrap();
        assert!(o.earlier && out.join("images/a.jpg").exists(), "nothing is removed before replace()");
        assert!(read_record(&out).unwrap().unwrap().files.contains("images/a.jpg"));
        let kept = o.dir.replace().unwrap();
        assert_eq!(kept, ["images/deep/x.jpg", "images/my-photo.jpg", "readme.md"]);
        assert!(kept_note(&out, &kept).unwrap().contains("3 file(s) detnas did not write"));
        assert!(!out.join("images/a.jpg").exists() && !out.join("detections.json").exists());
        assert_eq!(std::fs::read(out.join("images/deep/x.jpg")).unwrap(), b"theirs too");
        assert_eq!(read_record(&out).unwrap().unwrap().files.len(), 0);
    }

    #[test]
    fn foreign_and_unowned_folders_are_refused_and_untouched() {
        let root = tempfile::tempdir().unwrap();
        let search = root.path().join("s");
        let o = OwnedDir::open(&search, "search", Existing::Refuse, FLAGS).unwrap();
        o.dir.write("state.json", b"{}").unwrap();
        let before = tree(&search);
        for existing in [Existing::Refuse, Existing::Replace, Existing::Resume] {
            let err = OwnedDir::open(&search, "train", existing, FLAGS).unwrap_err().to_string();
            assert!(err.contains("output of `detnas search`") && err.contains("choose another --out"), "{err}");
        }
        assert_eq!(tree(&search), before);
        let user = root.path().join("u");
        std::fs::create_dir_all(user.join("images")).unwrap();
        std::fs::write(user.join("images/x.jpg"), b"x").unwrap();
        for existing in [Existing::Refuse, Existing::Replace, Existing::Resume] {
            let err = OwnedDir::open(&user, "detect", existing, FLAGS).unwrap_err().to_string();
            assert!(err.contains("files detnas did not write (images/)"), "{err}");
        }
        assert!(!user.join(RECORD).exists());
        let file = root.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(
            OwnedDir::open(&file, "detect", Existing::Refuse, FLAGS).unwrap_err().to_string().contains("not a folder")
        );
    }

    #[test]
    fn nested_owned_folders_are_cleared_by_their_own_records_and_temporaries_swept() {
        let root = tempfile::tempdir().unwrap();
        let demo = root.path().join("demo");
        let o = OwnedDir::open(&demo, "demo", Existing::Refuse, Flags::OVERWRITE_RESUME).unwrap();
        o.dir.note(&["supernet/".into()]).unwrap();
        o.dir.write("report.md", b"r").unwrap();
        let sub = OwnedDir::open(&demo.join("supernet"), "train", Existing::Refuse, Flags::OVERWRITE_RESUME).unwrap();
        sub.dir.write("state.json", b"{}").unwrap();
        std::fs::write(demo.join("supernet/mine.txt"), b"keep").unwrap();
        let tmp = demo.join(format!("{TEMP_PREFIX}123-0"));
        std::fs::write(&tmp, b"partial").unwrap();
        let o = OwnedDir::open(&demo, "demo", Existing::Resume, Flags::OVERWRITE_RESUME).unwrap();
        assert!(o.earlier && !tmp.exists() && demo.join("report.md").exists());
        let o = OwnedDir::open(&demo, "demo", Existing::Replace, Flags::OVERWRITE_RESUME).unwrap();
        assert_eq!(o.dir.replace().unwrap(), ["supernet/mine.txt"]);
        assert!(!demo.join("report.md").exists() && !demo.join("supernet/state.json").exists());
        assert!(!demo.join("supernet").join(RECORD).exists());
    }

    #[test]
    fn symbolic_links_out_of_the_folder_are_not_followed_and_folders_are_found_without_a_slash() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let o = OwnedDir::open(&out, "demo", Existing::Refuse, Flags::OVERWRITE_RESUME).unwrap().dir;
        o.create_dir("images").unwrap();
        o.write("images/a.jpg", b"ours").unwrap();
        o.note(&["nested".into()]).unwrap();
        let nested = OwnedDir::open(&out.join("nested"), "detect", Existing::Refuse, FLAGS).unwrap().dir;
        nested.write("detections.json", b"[]").unwrap();
        // The user swaps our images/ for a link to their own photos, which hold an a.jpg.
        let photos = root.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::write(photos.join("a.jpg"), b"theirs").unwrap();
        std::fs::remove_dir_all(out.join("images")).unwrap();
        std::os::unix::fs::symlink(&photos, out.join("images")).unwrap();
        let o = OwnedDir::open(&out, "demo", Existing::Replace, Flags::OVERWRITE_RESUME).unwrap();
        o.dir.replace().unwrap();
        assert_eq!(std::fs::read(photos.join("a.jpg")).unwrap(), b"theirs");
        assert!(!out.join("nested").exists(), "a folder listed without a slash is cleared by its own record");
    }

    #[test]
    fn bad_records_are_errors_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(RECORD), b"{").unwrap();
        let err = OwnedDir::open(root.path(), "detect", Existing::Replace, FLAGS).unwrap_err().to_string();
        assert!(owner_of(root.path()).is_none());
        let outside = root.path().join("victim.txt");
        std::fs::write(&outside, b"keep").unwrap();
        let sub = root.path().join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        for bad in ["../victim.txt", "/etc/passwd", "a/../../victim.txt", ""] {
            let record = Record { format: FORMAT, command: "detect".into(), files: [bad.to_string()].into() };
            std::fs::write(sub.join(RECORD), serde_json::to_vec(&record).unwrap()).unwrap();
            let err = OwnedDir::open(&sub, "detect", Existing::Replace, FLAGS).unwrap_err().to_string();
            assert!(err.contains("is not a name inside the folder"), "{bad}: {err}");
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert!(err.contains(RECORD) && err.contains("not a detnas folder record"), "{err}");
        assert!(note(&root.path().join("none"), &["x".into()]).is_ok());
    }
}

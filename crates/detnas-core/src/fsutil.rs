//! Atomic file writes (a reader never sees a partial file, a crash leaves the old file or the new
//! one) and path identity (two spellings of one file).

use crate::error::{CoreError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every temporary file [`write_atomic`] makes: `.detnas-tmp-<pid>-<n>`, short whatever
/// the target's name (a 255-byte file name still gets a temporary name), and recognisable, so that
/// the temporaries a killed process left in a folder it owns can be swept ([`crate::owner`]).
pub const TEMP_PREFIX: &str = ".detnas-tmp-";

/// A fresh temporary name in `dir` for this process.
pub fn temp_path(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!("{TEMP_PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// The identity of `path` for comparisons: its canonical form; for a path that does not exist
/// (yet), the canonical form of its deepest existing ancestor joined with the rest. `None` when no
/// ancestor resolves.
pub fn identity(path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut here = path;
    loop {
        let probe = if here.as_os_str().is_empty() { Path::new(".") } else { here };
        if let Ok(p) = std::fs::canonicalize(probe) {
            return Some(rest.iter().rev().fold(p, |acc, part| acc.join(part)));
        }
        rest.push(here.file_name()?.to_os_string());
        here = here.parent()?;
    }
}

/// Whether `a` and `b` name the same file: the same inode when both exist (hard links and
/// symbolic links included), else the same [`identity`]. Spelling (`./x`, absolute, `..`) does
/// not matter.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (identity(a), identity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `text` with control characters shown as escapes (`\n`, `\t`, `\x1b`), for messages that name
/// files: a file name can hold any byte but `/` and NUL.
pub fn escaped(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s
}

/// Whether `path` itself is a symbolic link (not followed).
pub fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync, rename, fsync of
/// the directory. An existing file at `path` is replaced only once the new content is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.file_name().is_none() {
        return Err(CoreError::io(path, std::io::Error::other("not a file path")));
    }
    let tmp = temp_path(dir);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Makes the rename itself durable; some filesystems refuse fsync on directories.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CoreError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn a_name_at_the_length_limit_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x".repeat(250) + ".json");
        write_atomic(&path, b"ok").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");
    }

    #[test]
    fn same_file_sees_through_spellings_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.onnx");
        std::fs::write(&a, b"m").unwrap();
        let dotted = dir.path().join(".").join("a.onnx");
        assert!(same_file(&a, &dotted));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.onnx");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            assert!(same_file(&a, &link));
            let hard = dir.path().join("hard.onnx");
            std::fs::hard_link(&a, &hard).unwrap();
            assert!(same_file(&hard, &a));
        }
        let copy = dir.path().join("b.onnx");
        std::fs::write(&copy, b"m").unwrap();
        assert!(!same_file(&a, &copy));
        assert!(same_file(&dir.path().join("new.onnx"), &dir.path().join("./new.onnx")));
        // Neither the file nor its folder exists yet: the deepest existing ancestor decides.
        assert!(same_file(&dir.path().join("x/y.onnx"), &dir.path().join("./x/y.onnx")));
        assert_eq!(
            identity(&dir.path().join("x/y.onnx")),
            Some(std::fs::canonicalize(dir.path()).unwrap().join("x/y.onnx"))
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("a\nb\u{1b}[31m.jpg"), "a\\nb\\x1b[31m.jpg");
        assert_eq!(escaped("plain é.jpg"), "plain é.jpg");
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.json"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.json"));
    }
}

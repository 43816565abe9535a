//! Expands inputs (files, folders, globs) into the list of images to process, as
//! [`super::detect_folder`] does.
//!
//! Contract:
//! - every real file is listed once, however it is reached (several spellings, symbolic links,
//!   overlapping folders or globs); the first spelling met is kept;
//! - a folder reached twice (a symbolic-link loop, a link to a parent) is walked once;
//! - nothing that is not a regular file is ever opened (a FIFO named `x.jpg` is reported, not read);
//! - every entry that cannot be read is reported on its own, naming that entry, and the walk goes on;
//! - folders are walked in sorted order, recursively, keeping files with an image extension;
//! - the output folder (and anything below it) is never walked, nor is a folder holding an earlier
//!   run's output (an ownership record) met while walking, nor a `detect` output at all (its
//!   annotated copies are not inputs): a note says so. A data set folder named as an input is walked.

use super::Failure;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Extensions picked up when walking folders (files given explicitly are always tried).
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "jpe", "jfif"];

const NOT_REGULAR: &str = "not a regular file (a FIFO, socket or device): not read";

/// The images to process and the inputs or entries that could not be used.
#[derive(Debug, Default)]
pub struct Collected {
    /// Image files in discovery order, each real file once.
    pub files: Vec<PathBuf>,
    /// Inputs matching nothing and entries that could not be read.
    pub failures: Vec<Failure>,
    /// Folders skipped on purpose, one line each.
    pub notes: Vec<String>,
}

/// Expands `inputs`, never entering `skip` (the output folder, canonical).
pub fn collect_inputs(inputs: &[String], skip: Option<&Path>) -> Collected {
    let mut walker = Walker { skip, ..Walker::default() };
    for input in inputs {
        walker.input(input);
    }
    Collected { files: walker.files, failures: walker.failures, notes: walker.notes }
}

#[derive(Default)]
struct Walker<'a> {
    skip: Option<&'a Path>,
    seen_files: HashSet<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
    files: Vec<PathBuf>,
    failures: Vec<Failure>,
    notes: Vec<String>,
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl Walker<'_> {
    fn fail(&mut self, path: &Path, reason: impl std::fmt::Display) {
        self.failures.push(Failure::new(path.display().to_string(), format!("{}: {reason}", path.display())));
    }

    fn inside_output(&self, canonical: &Path) -> bool {
        self.skip.is_some_and(|out| canonical.starts_with(out))
    }

    fn input(&mut self, input: &str) {
        let path = Path::new(input);
        match fs::metadata(path) {
            Err(_) if input.contains(['*', '?', '[']) => self.glob(input),
            metadata => self.named(path, metadata),
        }
    }

    /// A path named by the user or matched by a glob: a folder is walked, a regular file listed,
    /// anything else reported.
    fn named(&mut self, path: &Path, metadata: std::io::Result<fs::Metadata>) {
        match metadata {
            Ok(m) if m.is_dir() => self.dir(path, true),
            Ok(m) if m.is_file() => self.file(path, true),
            Ok(_) => self.fail(path, NOT_REGULAR),
            Err(e) => self.missing(path, e),
        }
    }

    /// Reports an entry whose metadata cannot be read (missing, broken link, no permission).
    fn missing(&mut self, path: &Path, e: std::io::Error) {
        let dangling = detnas_core::fsutil::is_symlink(path);
        match e.kind() {
            std::io::ErrorKind::NotFound if dangling => self.fail(path, "broken symbolic link"),
            std::io::ErrorKind::NotFound => self.fail(path, "no such file or folder"),
            _ => self.fail(path, e),
        }
    }

    fn glob(&mut self, pattern: &str) {
        let entries = match glob::glob(pattern) {
            Ok(entries) => entries,
            Err(e) => return self.fail(Path::new(pattern), format!("invalid glob: {e}")),
        };
        let mut any = false;
        for entry in entries {
            any = true;
            match entry {
                Ok(p) => self.named(&p, fs::metadata(&p)),
                Err(e) => self.fail(e.path(), e.error()),
            }
        }
        if !any {
            self.fail(Path::new(pattern), "glob matched no file");
        }
    }

    /// Lists a regular file once. `explicit`: named by the user (reported when inside the output).
    fn file(&mut self, path: &Path, explicit: bool) {
        let canonical = match fs::canonicalize(path) {
            Ok(c) => c,
            Err(e) => return self.fail(path, e),
        };
        if self.inside_output(&canonical) {
            if explicit {
                self.fail(path, "inside the output folder: skipped");
            }
            return;
        }
        if self.seen_files.insert(canonical) {
            self.files.push(path.to_path_buf());
        }
    }

    /// Walks a folder. `named`: given by the user (or matched by a glob), not met while walking.
    fn dir(&mut self, path: &Path, named: bool) {
        let canonical = match fs::canonicalize(path) {
            Ok(c) => c,
            Err(e) => return self.fail(path, e),
        };
        if self.inside_output(&canonical) || !self.seen_dirs.insert(canonical) {
            return;
        }
        // An earlier run's output met while walking is not input (a data set folder the user
        // names is); a `detect` output never is (its images are annotated copies).
        if let Some(owner) = detnas_core::owner::owner_of(path).filter(|o| !named || o == "detect") {
            let why = if owner == "detect" {
                "a detect output is never an input: its images are annotated copies".to_string()
            } else {
                format!("it holds the output of an earlier `detnas {owner}` (name it as an input to detect in it)")
            };
            self.notes.push(format!("note: skipped {}: {why}", path.display()));
            return;
        }
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => return self.fail(path, format!("cannot read folder: {e}")),
        };
        let mut children = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => children.push(e.path()),
                Err(e) => self.fail(path, format!("cannot read folder entry: {e}")),
            }
        }
        children.sort();
        for child in children {
            match fs::metadata(&child) {
                Ok(m) if m.is_dir() => self.dir(&child, false),
                Ok(m) if m.is_file() => {
                    if has_image_extension(&child) {
                        self.file(&child, false)
                    }
                }
                Ok(_) if has_image_extension(&child) => self.fail(&child, NOT_REGULAR),
                Ok(_) => {}
                Err(e) if has_image_extension(&child) => self.missing(&child, e),
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Collected) -> Vec<String> {
        c.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn symlink_loops_and_spellings_visit_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::write(root.join("x.png"), b"x").unwrap();
        fs::write(root.join("d/e/y.jpg"), b"y").unwrap();
        std::os::unix::fs::symlink(".", root.join("self")).unwrap();
        std::os::unix::fs::symlink("..", root.join("d/up")).unwrap();
        std::os::unix::fs::symlink("x.png", root.join("link.png")).unwrap();
        let r = root.display();
        let inputs = vec![
            format!("{r}/x.png"),
            format!("{r}/./x.png"),
            format!("{r}/d/../x.png"),
            r.to_string(),
            format!("{r}/d"),
            format!("{r}/*/e"),
        ];
        let c = collect_inputs(&inputs, None);
        assert_eq!(names(&c), ["x.png", "y.jpg"], "{:?}", c.files);
        assert!(c.failures.is_empty(), "{:?}", c.failures);
    }

    #[test]
    fn unreadable_entries_are_reported_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("ok")).unwrap();
        fs::write(root.join("ok/a.jpg"), b"a").unwrap();
        std::os::unix::fs::symlink("nowhere.jpg", root.join("ok/dangling.jpg")).unwrap();
        let fifo = root.join("ok/pipe.jpg");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        let c = collect_inputs(&[root.display().to_string(), format!("{}/missing.png", root.display())], None);
        assert_eq!(names(&c), ["a.jpg"]);
        let errors: Vec<&str> = c.failures.iter().map(|f| f.error.as_str()).collect();
        assert!(errors.iter().any(|e| e.contains("dangling.jpg: broken symbolic link")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("missing.png: no such file or folder")), "{errors:?}");
        if made {
            assert!(errors.iter().any(|e| e.contains("pipe.jpg: not a regular file")), "{errors:?}");
        }
    }

    #[test]
    fn output_folder_is_never_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("out/images")).unwrap();
        fs::write(root.join("a.jpg"), b"a").unwrap();
        fs::write(root.join("out/images/a.jpg"), b"annotated").unwrap();
        let out = fs::canonicalize(root.join("out")).unwrap();
        let c = collect_inputs(&[root.display().to_string()], Some(&out));
        assert_eq!(c.files, [root.join("a.jpg")]);
        let c = collect_inputs(&[root.join("out/images/a.jpg").display().to_string()], Some(&out));
        assert!(c.files.is_empty());
        assert!(c.failures[0].error.contains("inside the output folder"), "{:?}", c.failures);
    }

    #[test]
    fn an_earlier_runs_output_inside_the_input_is_skipped_with_a_note() {
        use detnas_core::owner::{Existing, Flags, OwnedDir};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.jpg"), b"a").unwrap();
        let old = OwnedDir::open(&root.join("old-run"), "detect", Existing::Refuse, Flags::OVERWRITE_RESUME).unwrap();
        old.dir.create_dir("images").unwrap();
        old.dir.write("images/a.jpg", b"annotated").unwrap();
        let data =
            OwnedDir::open(&root.join("ds"), "data synthetic", Existing::Refuse, Flags::OVERWRITE_RESUME).unwrap();
        data.dir.write("b.png", b"b").unwrap();
        let c = collect_inputs(&[root.display().to_string()], None);
        assert_eq!(names(&c), ["a.jpg"], "outputs met while walking are skipped");
        assert!(c.notes.len() == 2 && c.notes.iter().any(|n| n.contains("old-run")), "{:?}", c.notes);
        let c =
            collect_inputs(&[root.join("ds").display().to_string(), root.join("old-run").display().to_string()], None);
        assert_eq!(names(&c), ["b.png"], "a data set named as an input is walked, a detect output is not");
    }
}

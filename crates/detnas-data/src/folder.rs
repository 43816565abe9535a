//! Classification data in the "image folder" layout: `root/<class>/**/<image>`.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// File extensions taken as images (case-insensitive), as `detnas detect` searches folders.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "gif", "bmp", "webp"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// A classification data set: one sub-folder of `root` per class.
///
/// Contract: `class_names` are the names of the sub-folders of `root` (hidden ones, starting with
/// `.`, skipped) sorted by byte order, label `k` being `class_names[k]`; `samples` are every
/// image file ([`IMAGE_EXTENSIONS`]) found recursively in each class folder, sorted by path
/// within a class, classes in label order. Every class has at least one image. Symbolic links to
/// class folders and to files are followed; linked folders inside a class folder are not entered
/// (no cycles). Files are not decoded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// The data set's folder.
    pub root: PathBuf,
    /// Class names (the sub-folders' names), in label order.
    pub class_names: Vec<String>,
    /// `(image file, label)`.
    pub samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    /// Scans `root`. Errors: `root` unreadable ([`DataError::Io`]), no class sub-folder
    /// ([`DataError::NoClasses`]), a class folder without any image ([`DataError::EmptyClass`],
    /// naming the class and its folder), a class folder name that is not UTF-8
    /// ([`DataError::Invalid`]).
    pub fn open(root: &Path) -> Result<ImageFolder> {
        let mut classes: Vec<(String, PathBuf)> = Vec::new();
        for entry in read_dir_sorted(root)? {
            let name = entry.file_name().and_then(|n| n.to_str()).map(str::to_owned);
            if !entry.is_dir() {
                continue;
            }
            match name {
                Some(name) if name.starts_with('.') => {}
                Some(name) => classes.push((name, entry)),
                None => return Err(DataError::invalid(&entry, "class folder name is not UTF-8")),
            }
        }
        if classes.is_empty() {
            return Err(DataError::NoClasses { path: root.to_path_buf() });
        }
        let mut samples = Vec::new();
        for (label, (name, dir)) in classes.iter().enumerate() {
            let mut files = Vec::new();
            collect_images(dir, &mut files)?;
            if files.is_empty() {
                return Err(DataError::EmptyClass { path: dir.clone(), class: name.clone() });
            }
            files.sort();
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        let class_names = classes.into_iter().map(|(name, _)| name).collect();
        Ok(ImageFolder { root: root.to_path_buf(), class_names, samples })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Number of images of each class, by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for &(_, label) in &self.samples {
            counts[label] += 1;
        }
        counts
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        paths.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Image files under `dir`, recursively; real folders are entered, linked folders are not.
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| DataError::io(&path, e))?;
        if meta.is_dir() {
            collect_images(&path, out)?;
        } else if is_image_path(&path) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn classes_sorted_samples_recursive_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("zebra/b.PNG"));
        touch(&root.join("zebra/a.jpg"));
        touch(&root.join("ant/deep/er/x.webp"));
        touch(&root.join("ant/notes.txt"));
        touch(&root.join(".cache/c.jpg"));
        touch(&root.join("README.md"));
        let folder = ImageFolder::open(root).unwrap();
        assert_eq!(folder.class_names, ["ant", "zebra"]);
        assert_eq!(
            folder.samples,
            vec![(root.join("ant/deep/er/x.webp"), 0), (root.join("zebra/a.jpg"), 1), (root.join("zebra/b.PNG"), 1)]
        );
        assert_eq!(folder.class_counts(), [1, 2]);
        assert_eq!(folder.num_classes(), 2);
    }

    #[test]
    fn empty_root_and_empty_class_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("loose.jpg"));
        let err = ImageFolder::open(root).unwrap_err();
        assert!(matches!(err, DataError::NoClasses { .. }), "{err}");
        assert!(err.to_string().contains(&root.display().to_string()), "{err}");

        touch(&root.join("cat/a.jpg"));
        touch(&root.join("dog/readme.txt"));
        let err = ImageFolder::open(root).unwrap_err();
        assert!(matches!(&err, DataError::EmptyClass { class, .. } if class == "dog"), "{err}");
        assert!(err.to_string().contains("class `dog`"), "{err}");
        assert!(err.to_string().contains(&root.join("dog").display().to_string()), "{err}");

        let err = ImageFolder::open(&root.join("missing")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn linked_folders_are_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("cat/a.jpg"));
        std::os::unix::fs::symlink(root.join("cat"), root.join("cat/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("cat/a.jpg"), root.join("cat/link.jpg")).unwrap();
        let folder = ImageFolder::open(root).unwrap();
        assert_eq!(folder.samples, vec![(root.join("cat/a.jpg"), 0), (root.join("cat/link.jpg"), 0)]);
    }
}

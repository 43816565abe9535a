//! Output files checked before any work: against the inputs of the same command by identity
//! (canonical path and inode, see [`detnas_core::fsutil::same_file`]), not by spelling (`./a.onnx`,
//! an absolute path, a symbolic or hard link to an input are all that input), and an existing file
//! is replaced only when it is an artefact of the kind the command writes.

use anyhow::{Result, bail};
use detnas_core::fsutil::same_file;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What an output file is: an existing file at its path is replaced only when it is one too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "infer", feature = "train")), allow(dead_code))]
pub enum Artefact {
    /// An exported model (ONNX with detnas metadata).
    Model,
    /// COCO results (a JSON array).
    Results,
    /// A latency table (a JSON object with a fingerprint).
    #[cfg_attr(not(feature = "infer"), allow(dead_code))]
    LatencyTable,
}

impl Artefact {
    fn name(self) -> &'static str {
        match self {
            Artefact::Model => "a detnas model",
            Artefact::Results => "COCO results",
            Artefact::LatencyTable => "a detnas latency table",
        }
    }

    /// Whether the existing file at `path` is of this kind: a regular file (never a device, FIFO
    /// or folder) that is empty (nothing is lost) or recognisably one; at most [`TAIL_BYTES`]
    /// are read.
    fn matches(self, path: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
        if !meta.is_file() {
            return false;
        }
        if meta.len() == 0 {
            return true;
        }
        let Ok(mut file) = std::fs::File::open(path) else { return false };
        match self {
            // Metadata entries follow the graph in the file: the tail holds `detnas.format`.
            Artefact::Model => {
                let mut tail = Vec::new();
                file.seek(SeekFrom::Start(meta.len().saturating_sub(TAIL_BYTES))).is_ok()
                    && file.take(TAIL_BYTES).read_to_end(&mut tail).is_ok()
                    && tail.windows(MODEL_MARK.len()).any(|w| w == MODEL_MARK)
            }
            Artefact::Results | Artefact::LatencyTable => {
                if meta.len() > TAIL_BYTES * 64 {
                    return false; // larger than any results or table detnas writes for a check
                }
                let mut text = Vec::new();
                if file.read_to_end(&mut text).is_err() {
                    return false;
                }
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) else { return false };
                match self {
                    // COCO results: an array, empty or of detections.
                    Artefact::Results => value.as_array().is_some_and(|a| {
                        a.first().is_none_or(|d| {
                            ["image_id", "category_id", "bbox", "score"].iter().all(|k| d.get(k).is_some())
                        })
                    }),
                    _ => value.get("fingerprint").is_some() && value.get("entries").is_some(),
                }
            }
        }
    }
}

/// Bytes at the end of a model searched for [`MODEL_MARK`] (metadata with the detector
/// configuration is a few kilobytes).
const TAIL_BYTES: u64 = 1 << 20;
/// A metadata key every model detnas writes carries.
const MODEL_MARK: &[u8] = detnas_core::detector::contract::keys::FORMAT.as_bytes();

/// Checks the output file `out` (given with `flag`) of kind `kind` before any work, so that
/// nothing is read, computed or written in vain: it is not a folder, its folder exists, it is none
/// of `inputs` (`(flag, path)` pairs), and an existing file there is of the same kind.
pub fn check_output(flag: &str, out: &Path, kind: Artefact, inputs: &[(&str, &Path)]) -> Result<()> {
    if out.is_dir() {
        bail!("{flag} {}: is a folder; give a file name", out.display());
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("{flag} {}: the folder {} does not exist", out.display(), parent.display());
    }
    for (input_flag, input) in inputs {
        if same_file(out, input) {
            bail!(
                "{flag} {}: that is {input_flag} {} (the same file); it would be overwritten: choose another {flag}",
                out.display(),
                input.display()
            );
        }
    }
    if std::fs::symlink_metadata(out).is_ok() && !kind.matches(out) {
        bail!(
            "{flag} {}: exists and is not {} detnas wrote; it is never replaced: remove it or choose another {flag}",
            out.display(),
            kind.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_links_of_an_input_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("a.onnx");
        std::fs::write(&model, b"m").unwrap();
        let link = dir.path().join("l.onnx");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        for out in [dir.path().join("./a.onnx"), dir.path().join("x/../a.onnx"), link] {
            std::fs::create_dir_all(dir.path().join("x")).unwrap();
            let err = check_output("--out", &out, Artefact::Model, &[("MODEL", &model)]).unwrap_err().to_string();
            assert!(err.contains("that is MODEL") && err.contains("choose another --out"), "{err}");
        }
        check_output("--out", &dir.path().join("b.onnx"), Artefact::Model, &[("MODEL", &model)]).unwrap();
        let err = check_output("--out", &dir.path().join("none/b.onnx"), Artefact::Model, &[]).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(
            check_output("--out", dir.path(), Artefact::Model, &[]).unwrap_err().to_string().contains("is a folder")
        );
    }

    #[test]
    fn an_existing_file_is_replaced_only_when_it_is_of_the_same_kind() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("photo.jpg");
        std::fs::write(&photo, b"\xff\xd8 a photo").unwrap();
        for kind in [Artefact::Model, Artefact::Results, Artefact::LatencyTable] {
            let err = check_output("--out", &photo, kind, &[]).unwrap_err().to_string();
            assert!(err.contains("is never replaced"), "{err}");
        }
        let toml = dir.path().join("Cargo.toml");
        std::fs::write(&toml, b"[package]\nname = \"x\"\n").unwrap();
        assert!(check_output("--save-dt", &toml, Artefact::Results, &[]).is_err());
        let results = dir.path().join("dt.json");
        std::fs::write(&results, b" [{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 0.5}]")
            .unwrap();
        check_output("--save-dt", &results, Artefact::Results, &[]).unwrap();
        assert!(check_output("--out", &results, Artefact::LatencyTable, &[]).is_err());
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, [b"graph bytes ".as_slice(), MODEL_MARK, b"1"].concat()).unwrap();
        check_output("--out", &model, Artefact::Model, &[]).unwrap();
        assert!(
            check_output("--out", Path::new("/dev/null"), Artefact::Model, &[]).is_err(),
            "devices are never replaced"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        check_output("--out", &empty, Artefact::LatencyTable, &[]).unwrap();
    }
}

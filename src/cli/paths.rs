//! Output paths checked against the inputs of the same command by identity (canonical path and
//! inode, see [`detnas_core::fsutil::same_file`]), not by spelling: `./a.onnx`, an absolute path,
//! a symbolic or hard link to an input are all that input.

use anyhow::{Result, bail};
use detnas_core::fsutil::same_file;
use std::path::Path;

/// Checks the output file `out` (given with `flag`) before any work, so that nothing is read,
/// computed or written in vain: it is not a folder, its folder exists, and it is none of
/// `inputs` (`(flag, path)` pairs).
pub fn check_output(flag: &str, out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
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
            let err = check_output("--out", &out, &[("MODEL", &model)]).unwrap_err().to_string();
            assert!(err.contains("that is MODEL") && err.contains("choose another --out"), "{err}");
        }
        check_output("--out", &dir.path().join("b.onnx"), &[("MODEL", &model)]).unwrap();
        let err = check_output("--out", &dir.path().join("none/b.onnx"), &[]).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(check_output("--out", dir.path(), &[]).unwrap_err().to_string().contains("is a folder"));
    }
}

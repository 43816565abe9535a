//! ONNX external data: initializers stored in a side file (`m.onnx` + `m.onnx.data`).
//!
//! A reference's `location` is a path relative to the model file's folder (the ONNX rule); one
//! that is absolute or climbs out with `..` is flagged by [`ExternalFile::leaves_model_folder`]
//! (ONNX Runtime refuses such paths).

use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{ModelProto, StringStringEntryProto};
use std::path::{Component, Path};

/// One tensor stored outside the model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalRef {
    /// The initializer's name.
    pub tensor: String,
    /// Path relative to the model's folder, as written in the model.
    pub location: String,
    /// Byte offset of the data in the file.
    pub offset: u64,
    /// Bytes; `None` when the model leaves it to the end of the file.
    pub length: Option<u64>,
}

/// The tensors one external file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalFile {
    /// Path relative to the model's folder, as written in the model.
    pub location: String,
    /// Tensors stored in it.
    pub tensors: usize,
    /// Sum of the declared lengths (saturating: a model may declare any length).
    pub bytes: u64,
}

impl ExternalFile {
    /// Whether `location` is absolute or climbs out of the model's folder with `..`.
    pub fn leaves_model_folder(&self) -> bool {
        leaves_folder(&self.location)
    }
}

/// Whether a relative `location` escapes the folder it is relative to.
pub fn leaves_folder(location: &str) -> bool {
    let path = Path::new(location);
    path.is_absolute() || location.starts_with('/') || location.starts_with('\\') || {
        let mut depth = 0i32;
        path.components().any(|c| {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            depth < 0
        })
    }
}

/// Every initializer of `model` stored as external data.
pub fn external_refs(model: &ModelProto) -> Vec<ExternalRef> {
    model
        .graph
        .initializer
        .iter()
        .filter(|t| t.data_location.enum_value() == Ok(DataLocation::EXTERNAL))
        .map(|t| {
            let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone());
            ExternalRef {
                tensor: t.name.clone(),
                location: get("location").unwrap_or_default(),
                offset: get("offset").and_then(|v| v.parse().ok()).unwrap_or(0),
                length: get("length").and_then(|v| v.parse().ok()),
            }
        })
        .collect()
}

/// [`external_refs`] grouped by file, in order of first use.
pub fn external_files(model: &ModelProto) -> Vec<ExternalFile> {
    let mut files: Vec<ExternalFile> = Vec::new();
    for r in external_refs(model) {
        let i = match files.iter().position(|f| f.location == r.location) {
            Some(i) => i,
            None => {
                files.push(ExternalFile { location: r.location.clone(), tensors: 0, bytes: 0 });
                files.len() - 1
            }
        };
        files[i].tensors += 1;
        files[i].bytes = files[i].bytes.saturating_add(r.length.unwrap_or(0));
    }
    files
}

/// Moves the raw data of every initializer of at least `min_bytes` into one external file named
/// `location` (relative to the model's folder) and returns that file's bytes.
pub fn externalize(model: &mut ModelProto, location: &str, min_bytes: usize) -> Vec<u8> {
    let mut data = Vec::new();
    for t in model.graph.mut_or_insert_default().initializer.iter_mut() {
        if t.raw_data.len() < min_bytes || t.raw_data.is_empty() {
            continue;
        }
        let raw = std::mem::take(&mut t.raw_data);
        let entry = |k: &str, v: String| {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v;
            e
        };
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", data.len().to_string()),
            entry("length", raw.len().to_string()),
        ];
        t.data_location = DataLocation::EXTERNAL.into();
        data.extend_from_slice(&raw);
    }
    data
}

/// Reads every external initializer of `model` back into it from the files beside the model
/// (`folder`), so that the model can be worked on in memory (quantization). Errors name the
/// tensor and the file: a location leaving the folder, a missing file, a range past its end.
pub fn internalize(model: &mut ModelProto, folder: &Path) -> Result<(), String> {
    let refs = external_refs(model);
    if refs.is_empty() {
        return Ok(());
    }
    let mut files: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
    for r in &refs {
        if leaves_folder(&r.location) {
            return Err(format!("tensor `{}`: external data `{}` is outside the model's folder", r.tensor, r.location));
        }
        if !files.contains_key(&r.location) {
            let path = folder.join(&r.location);
            let bytes = std::fs::read(&path).map_err(|e| format!("tensor `{}`: {}: {e}", r.tensor, path.display()))?;
            files.insert(r.location.clone(), bytes);
        }
    }
    let graph = model.graph.mut_or_insert_default();
    for (t, r) in
        graph.initializer.iter_mut().filter(|t| t.data_location.enum_value() == Ok(DataLocation::EXTERNAL)).zip(&refs)
    {
        let data = &files[&r.location];
        let start = usize::try_from(r.offset).unwrap_or(usize::MAX);
        let end = match r.length {
            Some(n) => start.checked_add(usize::try_from(n).unwrap_or(usize::MAX)),
            None => Some(data.len()),
        };
        let Some(bytes) = end.filter(|&e| start <= e && e <= data.len()).map(|e| &data[start..e]) else {
            return Err(format!(
                "tensor `{}`: bytes {}..{} are past the end of `{}` ({} bytes)",
                r.tensor,
                r.offset,
                r.length.map_or("end".to_string(), |n| (r.offset.saturating_add(n)).to_string()),
                r.location,
                data.len()
            ));
        };
        t.raw_data = bytes.to_vec();
        t.external_data.clear();
        t.data_location = DataLocation::DEFAULT.into();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, ElemType, GraphBuilder};

    #[test]
    fn externalize_moves_initializers_and_lists_them() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", ElemType::F32, &[Dim::Fixed(4)]).unwrap();
        let w = g.weight("w", &[4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let s = g.const_f32("s", &[], vec![2.0]).unwrap();
        let y = g.op("Mul", "y", &[&x, &w], vec![]);
        let z = g.op("Mul", "z", &[&y, &s], vec![]);
        g.output(&z, ElemType::F32, &[Dim::Fixed(4)]).unwrap();
        let mut model = g.build();
        let data = externalize(&mut model, "t.onnx.data", 8);
        assert_eq!(data.len(), 16, "only the 16-byte tensor moves");
        let refs = external_refs(&model);
        assert_eq!(
            refs,
            vec![ExternalRef { tensor: "w".into(), location: "t.onnx.data".into(), offset: 0, length: Some(16) }]
        );
        let files = external_files(&model);
        assert_eq!((files[0].tensors, files[0].bytes, files[0].leaves_model_folder()), (1, 16, false));
        let dir = tempfile::tempdir().unwrap();
        let mut back = model.clone();
        assert!(internalize(&mut back, dir.path()).unwrap_err().contains("t.onnx.data"));
        std::fs::write(dir.path().join("t.onnx.data"), &data[..8]).unwrap();
        assert!(internalize(&mut back, dir.path()).unwrap_err().contains("past the end"));
        std::fs::write(dir.path().join("t.onnx.data"), &data).unwrap();
        internalize(&mut back, dir.path()).unwrap();
        assert!(external_refs(&back).is_empty());
        assert_eq!(back.graph.initializer.iter().find(|t| t.name == "w").unwrap().raw_data.len(), 16);
    }

    #[test]
    fn paths_leaving_the_folder_are_flagged() {
        for bad in ["/etc/passwd", "../m.data", "a/../../m.data"] {
            assert!(leaves_folder(bad), "{bad}");
        }
        for ok in ["m.onnx.data", "weights/m.data", "a/../m.data", "./m.data"] {
            assert!(!leaves_folder(ok), "{ok}");
        }
    }

    /// Regression (fuzz target `onnx_model`, seed 0, case 1686): declared lengths whose sum
    /// overflows `u64` made listing the files panic (debug builds). The sum saturates.
    #[test]
    fn lengths_past_u64_saturate() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", ElemType::F32, &[Dim::Fixed(4)]).unwrap();
        let a = g.weight("a", &[4], vec![1.0; 4]).unwrap();
        let b = g.weight("b", &[4], vec![2.0; 4]).unwrap();
        let y = g.op("Mul", "y", &[&x, &a], vec![]);
        let z = g.op("Mul", "z", &[&y, &b], vec![]);
        g.output(&z, ElemType::F32, &[Dim::Fixed(4)]).unwrap();
        let mut model = g.build();
        externalize(&mut model, "t.onnx.data", 1);
        for t in model.graph.mut_or_insert_default().initializer.iter_mut() {
            t.external_data.retain(|e| e.key != "length");
            let mut e = StringStringEntryProto::new();
            (e.key, e.value) = ("length".into(), u64::MAX.to_string());
            t.external_data.push(e);
        }
        let files = external_files(&model);
        assert_eq!((files.len(), files[0].tensors, files[0].bytes), (1, 2, u64::MAX));
    }
}

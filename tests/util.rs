//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `detnas` binary built for these tests.
pub fn detnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detnas")).args(args).output().expect("detnas binary runs")
}

/// Runs `detnas` with extra environment variables.
pub fn detnas_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_detnas"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("detnas binary runs")
}

/// The ONNX Runtime library `tools/setup-native.sh` installs.
pub fn ort_library() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".native/python/onnxruntime/capi/libonnxruntime.so.1.31.1")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure with exactly one line of error output containing every `needle`.
pub fn assert_one_line_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
}

/// Asserts a usage error (exit 2) whose message is one line containing every `needle`; clap's
/// `For more information, try '--help'.` tip may follow it after a blank line.
pub fn assert_usage_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2; stderr: {err}");
    let message = err.split("\n\n").next().unwrap_or_default();
    assert!(message.starts_with("error: ") && message.trim_end().lines().count() == 1, "not one line: {err}");
    let rest = err[message.len()..].trim();
    assert!(rest.is_empty() || rest == "For more information, try '--help'.", "more than a message: {err}");
    for n in needles {
        assert!(message.contains(n), "`{n}` missing from: {err}");
    }
}

/// The project's Python (`.venv`, made by tools/setup-python.sh).
pub fn python(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = root.join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run tools/setup-python.sh", py.display());
    let out = Command::new(&py).args(args).current_dir(root).output().expect("python runs");
    assert!(out.status.success(), "python {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn write_f32(path: &Path, data: &[f32]) {
    std::fs::write(path, data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn read_i64(path: &Path) -> Vec<i64> {
    std::fs::read(path).unwrap().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// A small RetinaNet (random but non-trivial weights) exported once per test run:
/// `(model path, config)`. Input 128x160, two classes, detections on most images.
pub fn small_model() -> &'static (std::path::PathBuf, detnas_core::detector::DetectorConfig) {
    use detnas_core::detector::DetectorConfig;
    use detnas_core::detector::plan::{Paths, detector_params};
    static MODEL: std::sync::OnceLock<(std::path::PathBuf, DetectorConfig)> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let space = detnas_core::SearchSpace::detnas_300m();
        let arch = detnas_core::space::arch::Preset::by_name("coco-retinanet-300m").unwrap().resolve().1;
        let cfg = DetectorConfig {
            class_names: vec!["tree".into(), "bush".into()],
            input: detnas_core::InputSize::new(128, 160),
            fpn_channels: 32,
            head_channels: 32,
            head_convs: 2,
            ..DetectorConfig::default()
        };
        let weights = detnas_onnx::Weights::random_varied(&detector_params(&space, Paths::Single(&arch), &cfg), 7);
        let model = detnas_onnx::export_retinanet(&space, &arch, &cfg, &weights, &Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("small.onnx");
        std::fs::write(&path, detnas_onnx::graph::encode(&model).unwrap()).unwrap();
        (path, cfg)
    })
}

/// A textured RGB test image (deterministic).
pub fn textured(width: u32, height: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let v = (x.wrapping_mul(7 + seed) ^ y.wrapping_mul(13)) % 256;
        image::Rgb([v as u8, ((x + y * 3 + seed) % 256) as u8, ((x * y) % 251) as u8])
    })
}

/// CRC-32 (PNG chunks).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A 69-byte PNG whose header claims 100000 x 100000 pixels.
pub fn png_bomb() -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    }
    let mut ihdr = 100_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00]));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// Encodes an image in `format`.
pub fn encoded(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

/// Inserts an `eXIf` chunk with the given orientation after a PNG's IHDR.
pub fn with_png_exif_orientation(png: &[u8], orientation: u16) -> Vec<u8> {
    // big-endian TIFF header, one IFD entry: tag 0x0112 SHORT 1 value
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01".to_vec();
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut body = b"eXIf".to_vec();
    body.extend_from_slice(&tiff);
    let crc = crc32(&body);
    let mut chunk = (tiff.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc.to_be_bytes());
    let ihdr_end = 8 + 4 + 4 + 13 + 4;
    let mut out = png[..ihdr_end].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[ihdr_end..]);
    out
}

/// Asserts a failure whose last stderr line is the error, containing every `needle`.
pub fn assert_failure_ending_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure; stderr: {err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "last line is not the error: {err}");
    for n in needles {
        assert!(last.contains(n), "`{n}` missing from: {last}");
    }
}

/// Every file of a folder tree with its content, keyed by relative path.
pub fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The shipped sample tiles (`models/samples/*.jpg`), sorted.
pub fn sample_tiles() -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir("models/samples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v
}

//! Robustness of the parsers of `detnas-data` on damaged files ([`detnas_core::mutate`]): image
//! decoding (bytes, files, reduced-scale JPEG, PNG rows) and COCO / Pascal VOC detection sets.
//! Every case must end in `Ok` with the documented invariants or in a typed error naming the file,
//! within its heap budget; `tools/fuzz.sh` runs many more cases than the suite.
#![cfg(all(feature = "datasets", feature = "all-formats"))]

use detnas_core::mutate::{AllocBudget, Case, Outcome, Settings, TrackingAlloc, fuzz};
use detnas_data::image_io::{DecodeLimits, ImageError, LoadedImage, decode_image_fit, load_image};
use detnas_data::png_rows::PngRows;
use detnas_data::{DetectionDataset, ValidationPolicy, VocOptions};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// Small limits, so that a header claiming a huge image is refused or decoded within them.
const LIMITS: DecodeLimits =
    DecodeLimits { max_width: 4096, max_height: 4096, max_pixels: 4 << 20, max_alloc: 32 << 20 };

/// The decode limit, plus the encoded file (read, then held by the decoder) and small state.
const IMAGE_BUDGET: AllocBudget = AllocBudget { fixed: LIMITS.max_alloc + (4 << 20), per_input_byte: 4 };

/// Annotation loaders hold the text, its parsed form and the samples: a small multiple of the input.
const ANNOTATION_BUDGET: AllocBudget = AllocBudget { fixed: 16 << 20, per_input_byte: 256 };

/// A 40x30 image with gradients and a few hard edges, so every codec has real data to code.
fn picture() -> RgbImage {
    RgbImage::from_fn(40, 30, |x, y| {
        let edge = if (x / 8 + y / 8) % 2 == 0 { 60 } else { 0 };
        Rgb([((x * 6) as u8).wrapping_add(edge), (y * 8) as u8, ((x * y) % 251) as u8])
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("the test image encodes");
    out.into_inner()
}

/// An EXIF APP1 segment (little-endian TIFF, one entry: Orientation = 6) inserted after SOI.
fn with_exif_orientation_6(jpeg: &[u8]) -> Vec<u8> {
    const APP1: &[u8] = b"\xff\xe1\x00\x22Exif\x00\x00II\x2a\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00";
    [&jpeg[..2], APP1, &jpeg[2..]].concat()
}

/// Encoded images of every decoded format and colour type, and the repository's own JPEG fixtures.
fn image_corpus() -> Vec<Vec<u8>> {
    let rgb = DynamicImage::ImageRgb8(picture());
    let gray = DynamicImage::ImageLuma8(rgb.to_luma8());
    let rgba = DynamicImage::ImageRgba8(rgb.to_rgba8());
    let gray16 = DynamicImage::ImageLuma16(rgb.to_luma16());
    let rgb16 = DynamicImage::ImageRgb16(rgb.to_rgb16());
    let jpeg = encode(&rgb, ImageFormat::Jpeg);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/images");
    vec![
        encode(&rgb, ImageFormat::Png),
        encode(&rgba, ImageFormat::Png),
        encode(&gray16, ImageFormat::Png),
        encode(&rgb16, ImageFormat::Png),
        with_exif_orientation_6(&jpeg),
        jpeg,
        encode(&gray, ImageFormat::Jpeg),
        std::fs::read(fixtures.join("progressive.jpg")).unwrap(),
        std::fs::read(fixtures.join("cmyk.jpg")).unwrap(),
        encode(&rgba, ImageFormat::Gif),
        encode(&rgb, ImageFormat::Bmp),
        encode(&gray, ImageFormat::Bmp),
        encode(&rgba, ImageFormat::WebP),
    ]
}

/// CRC-32 (IEEE) of PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        (0..8).fold(crc ^ u32::from(b), |c, _| if c & 1 == 1 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 })
    })
}

/// Rewrites the CRC of every complete PNG chunk, so that a mutation inside a chunk reaches the
/// decoder instead of stopping at the checksum.
fn fix_png_crcs(data: &mut [u8]) {
    let mut at = 8;
    while let Some(len) = data.get(at..at + 4).map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize) {
        let end = at + 8 + len;
        if end + 4 > data.len() {
            break;
        }
        let crc = crc32(&data[at + 4..end]);
        data[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// What a decoded image must satisfy: inside the limits, and `full_size` its displayed size.
fn check_loaded(image: &LoadedImage, fit: Option<(u32, u32)>) -> Result<(), String> {
    let (w, h) = image.rgb.dimensions();
    let side = LIMITS.max_width.max(LIMITS.max_height);
    if w == 0 || h == 0 || w > side || h > side || !(1..=8).contains(&image.orientation) {
        return Err(format!("decoded {w}x{h}, orientation {}", image.orientation));
    }
    let (fw, fh) = image.full_size;
    if (fit.is_none() && (fw, fh) != (w, h)) || fw < w || fh < h {
        return Err(format!("full size {fw}x{fh} for decoded pixels {w}x{h} (fit {fit:?})"));
    }
    Ok(())
}

/// Every image error names the file it was given.
fn check_error(error: &ImageError, name: &str) -> Result<(), String> {
    if error.name() == name && error.to_string().contains(name) {
        Ok(())
    } else {
        Err(format!("error not naming {name}: {error}"))
    }
}

#[test]
fn fuzz_image_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.img");
    let name = path.display().to_string();
    let panics = Arc::new(AtomicUsize::new(0));
    let decoder_panics = Arc::clone(&panics);
    let check = move |case: &Case| {
        let mut bytes = case.bytes.clone();
        if case.index % 2 == 1 && bytes.starts_with(b"\x89PNG") {
            fix_png_crcs(&mut bytes);
        }
        std::fs::write(&path, &bytes).unwrap();
        let note = |e: &ImageError| {
            if e.to_string().contains("decoder panicked") {
                decoder_panics.fetch_add(1, Ordering::Relaxed);
            }
            check_error(e, &name)
        };
        let whole = match load_image(&path, &LIMITS) {
            Ok(image) => check_loaded(&image, None).map(|()| Some(image)),
            Err(e) => note(&e).map(|()| None),
        }?;
        match decode_image_fit(&bytes, &name, &LIMITS, Some((48, 48))) {
            Ok(image) => check_loaded(&image, Some((48, 48)))?,
            Err(e) => note(&e)?,
        }
        if let Some(mut rows) = PngRows::open(&path, &LIMITS).or_else(|e| note(&e).map(|()| None))? {
            let mut row = Vec::new();
            for _ in 0..rows.dimensions().1 {
                if let Err(e) = rows.read_row(&mut row) {
                    note(&e)?;
                    break;
                }
            }
        }
        Ok(if whole.is_some() { Outcome::Accepted } else { Outcome::Rejected })
    };
    let summary = fuzz("image_decode", image_corpus(), IMAGE_BUDGET, &Settings::from_env(500), check);
    eprintln!("image_decode: {} decoder panics caught as ImageError::Decode", panics.load(Ordering::Relaxed));
    assert!(summary.reached_both_outcomes(), "{summary}");
}

/// The invariants of a loaded [`DetectionDataset`] (its module docs): unique image ids, boxes
/// finite and inside their image with positive size, labels within the classes, one category id
/// per class.
fn check_dataset(data: &DetectionDataset) -> Result<Outcome, String> {
    let classes = data.class_names.len();
    if classes == 0 || data.category_ids.len() != classes {
        return Err(format!("{classes} classes and {} category ids", data.category_ids.len()));
    }
    let mut ids = std::collections::HashSet::new();
    for s in &data.samples {
        if !ids.insert(s.image_id) || s.boxes.len() != s.labels.len() || s.labels.iter().any(|&l| l >= classes) {
            return Err(format!(
                "image id {}: repeated id, or labels {:?} for {classes} classes",
                s.image_id, s.labels
            ));
        }
        let (w, h) = (s.width as f32, s.height as f32);
        let inside = |&[x1, y1, x2, y2]: &[f32; 4]| 0.0 <= x1 && x1 < x2 && x2 <= w && 0.0 <= y1 && y1 < y2 && y2 <= h;
        if let Some(b) = s.boxes.iter().find(|b| !inside(b)) {
            return Err(format!("image id {}: box {b:?} not inside {w}x{h}", s.image_id));
        }
    }
    Ok(Outcome::Accepted)
}

/// A lenient policy for the originals (which hold questionable records on purpose) and even
/// cases, strict for odd ones; images decoded fully on every fourth case.
fn policy(case: &Case) -> ValidationPolicy {
    let strict = !case.original && case.index % 2 == 1;
    let base = if strict { ValidationPolicy::strict() } else { ValidationPolicy::default() };
    ValidationPolicy { decode_images: case.index % 4 == 2, ..base }
}

fn write_png(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    DynamicImage::ImageRgb8(RgbImage::new(w, h)).save(path).unwrap();
}

#[test]
fn fuzz_coco_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("img");
    for (name, w, h) in [("a.png", 100, 80), ("b.png", 64, 48), ("c.png", 30, 30)] {
        write_png(&images.join(name), w, h);
    }
    let coco = serde_json::json!({
        "info": {"description": "fuzz corpus"},
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 12}],
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 64.0, "height": 48},
            {"id": 5, "file_name": "c.png"}
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [90.5, 70, 20, 20], "area": 400},
            {"id": 12, "image_id": 2, "category_id": 12, "bbox": [1.5, 2, 3.25, 4], "area": 13, "iscrowd": false},
            {"id": 13, "image_id": 2, "category_id": 3, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 1},
            {"image_id": 5, "category_id": 7, "bbox": [0, 0, 30, 30], "area": 900}
        ]
    });
    let corpus = vec![serde_json::to_vec_pretty(&coco).unwrap(), serde_json::to_vec(&coco).unwrap()];
    let json = dir.path().join("instances.json");
    let check = move |case: &Case| {
        std::fs::write(&json, &case.bytes).unwrap();
        match DetectionDataset::from_coco(&json, &images, &policy(case)) {
            Ok(data) => check_dataset(&data),
            Err(e) if e.to_string().contains(&json.display().to_string()) => Ok(Outcome::Rejected),
            Err(e) => Err(format!("error not naming {}: {e}", json.display())),
        }
    };
    let summary = fuzz("coco_dataset", corpus, ANNOTATION_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

#[test]
fn fuzz_voc_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("JPEGImages");
    write_png(&images.join("000001.png"), 100, 80);
    write_png(&images.join("000002.png"), 60, 50);
    let object = |name: &str, difficult: u8, [x1, y1, x2, y2]: [&str; 4]| {
        format!(
            "  <object>\n    <name>{name}</name>\n    <pose>Left</pose>\n    <difficult>{difficult}</difficult>\n    \
             <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>\n    \
             <part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>\n  \
             </object>\n"
        )
    };
    let voc = |file: &str, size: &str, objects: &[String]| {
        format!(
            "<?xml version=\"1.0\"?>\n<annotation>\n  <folder>VOC2012</folder>\n  <filename>{file}</filename>\n  \
             <source><database>fuzz</database></source>\n  {size}\n  <segmented>0</segmented>\n{}</annotation>\n",
            objects.concat()
        )
        .into_bytes()
    };
    let corpus = vec![
        voc(
            "000001.png",
            "<size><width>100</width><height>80</height><depth>3</depth></size>",
            &[object("dog", 0, ["1", "1", "20", "30"]), object("cat", 1, ["50", "40", "100", "80"])],
        ),
        voc("000002.png", "", &[object("Fish &amp; chips", 0, ["11.5", "11", "20", "20"])]),
        voc(
            "000001.png",
            "<size><width>100</width><height>80</height></size>",
            &[object("<![CDATA[dog]]>", 0, ["90", "70", "120", "90"])],
        ),
    ];
    let xml = dir.path().join("000001.xml");
    let check = move |case: &Case| {
        std::fs::write(&xml, &case.bytes).unwrap();
        let options = if case.index.is_multiple_of(3) {
            VocOptions { class_names: Some(vec!["dog".into(), "cat".into()]), one_based: false, skip_difficult: true }
        } else {
            VocOptions::default()
        };
        match DetectionDataset::from_voc(std::slice::from_ref(&xml), &images, &options, &policy(case)) {
            Ok(data) => check_dataset(&data),
            Err(e) if e.to_string().contains(&dir_name(&xml)) => Ok(Outcome::Rejected),
            Err(e) => Err(format!("error not naming {} or its folder: {e}", xml.display())),
        }
    };
    let summary = fuzz("voc_dataset", corpus, ANNOTATION_BUDGET, &Settings::from_env(300), check);
    assert!(summary.reached_both_outcomes(), "{summary}");
}

/// The folder of a VOC file: errors about the whole set name it, errors about the file name the file.
fn dir_name(file: &Path) -> String {
    file.parent().unwrap().display().to_string()
}

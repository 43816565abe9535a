//! Tests of Pascal VOC loading and validation.

use std::path::{Path, PathBuf};

use super::tests::write_png;
use super::*;

/// A VOC file: `filename`, optional size, objects as `(name, difficult, [xmin, ymin, xmax, ymax])`.
fn voc_xml(filename: Option<&str>, size: Option<(u32, u32)>, objects: &[(&str, u8, [&str; 4])]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<annotation>\n  <folder>VOC</folder>\n");
    if let Some(name) = filename {
        xml += &format!("  <filename>{name}</filename>\n");
    }
    if let Some((w, h)) = size {
        xml += &format!("  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n");
    }
    for (name, difficult, [x1, y1, x2, y2]) in objects {
        xml += &format!("  <object>\n    <name>{name}</name>\n    <difficult>{difficult}</difficult>\n");
        xml += &format!("    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>\n");
        xml += "    <part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>\n";
        xml += "  </object>\n";
    }
    xml + "</annotation>\n"
}

/// A VOC layout under `root` with one problem of each kind.
fn troubled_voc(root: &Path) -> Vec<PathBuf> {
    let ann = root.join("Annotations");
    let img = root.join("JPEGImages");
    std::fs::create_dir_all(&ann).unwrap();
    write_png(&img.join("000001.png"), 100, 80);
    write_png(&img.join("000002.png"), 60, 50);
    write_png(&img.join("000004.png"), 40, 30);
    let files: [(&str, String); 8] = [
        (
            "000001",
            voc_xml(
                Some("000001.png"),
                Some((100, 80)),
                &[
                    ("dog", 0, ["1", "1", "20", "30"]),
                    ("cat", 1, ["50", "40", "100", "80"]),
                    ("  cat ", 0, ["90", "70", "120", "90"]),
                    ("dog", 0, ["200", "10", "210", "20"]),
                    ("dog", 0, ["30", "10", "20", "20"]),
                    ("dog", 0, ["nan", "10", "20", "20"]),
                    ("dog", 0, ["1", "1", "x", "20"]),
                    ("Fish &amp; chips", 0, ["1", "1", "5", "5"]),
                ],
            ),
        ),
        ("000002", voc_xml(Some("000002.png"), None, &[("bird", 0, ["11", "11", "20", "20"])])),
        ("000003", voc_xml(Some("000003.png"), Some((10, 10)), &[("dog", 0, ["1", "1", "5", "5"])])),
        ("000004", voc_xml(Some("000004.png"), Some((40, 30)), &[])),
        ("000005", voc_xml(Some("000001.png"), Some((100, 80)), &[("dog", 0, ["1", "1", "5", "5"])])),
        ("000006", "<annotation><filename>x.png</filename></size></annotation>".to_owned()),
        ("000007", voc_xml(None, Some((10, 10)), &[("dog", 0, ["1", "1", "5", "5"])])),
        ("000008", String::new()),
    ];
    let mut paths = Vec::new();
    for (stem, text) in files {
        let path = ann.join(format!("{stem}.xml"));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    std::fs::write(ann.join("000009.xml"), [0xff, 0xfe, b'<']).unwrap();
    paths.push(ann.join("000009.xml"));
    std::fs::write(ann.join("notes.txt"), "not an annotation").unwrap();
    paths
}

#[test]
fn voc_every_problem_is_counted_and_the_rest_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = troubled_voc(root);
    assert_eq!(voc_files(&root.join("Annotations")).unwrap(), files);

    let data =
        DetectionDataset::from_voc(&files, &root.join("JPEGImages"), &VocOptions::default(), &Default::default())
            .unwrap();
    assert_eq!(data.class_names, ["Fish & chips", "bird", "cat", "dog"]);
    assert_eq!(data.category_ids, [1, 2, 3, 4]);
    let ids: Vec<u64> = data.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(ids, [1, 2, 4]);
    let first = &data.samples[0];
    assert_eq!(first.image, root.join("JPEGImages/000001.png"));
    assert_eq!(
        first.boxes,
        vec![[0.0, 0.0, 20.0, 30.0], [49.0, 39.0, 100.0, 80.0], [89.0, 69.0, 100.0, 80.0], [0.0, 0.0, 5.0, 5.0]]
    );
    assert_eq!(first.labels, [3, 2, 2, 0]);
    let second = &data.samples[1];
    assert_eq!((second.width, second.height), (60, 50), "size from the PNG header");
    assert_eq!(second.boxes, vec![[10.0, 10.0, 20.0, 20.0]]);

    let r = &data.report;
    let expected = [
        (Issue::BoxClipped, 1),
        (Issue::BoxOutside, 1),
        (Issue::BoxEmpty, 1),
        (Issue::BoxInvalid, 2),
        (Issue::MissingImageFile, 1),
        (Issue::BadImageRecord, 1),
        (Issue::BadAnnotationFile, 3),
        (Issue::DuplicateImageId, 1),
        (Issue::DifficultKept, 1),
        (Issue::ImageWithoutBoxes, 1),
    ];
    for (issue, n) in expected {
        assert_eq!(r.count(issue), n, "{issue:?} in\n{r}");
    }
    assert_eq!(r.counts.len(), expected.len(), "{r}");
    assert_eq!((r.images_read, r.samples, r.boxes), (9, 3, 5));
    let bad: Vec<&Example> = r.examples.iter().filter(|e| e.issue == Issue::BadAnnotationFile).collect();
    assert!(bad[0].file.ends_with("000006.xml") && bad[0].detail.contains("XML error"), "{:?}", bad[0]);
    assert!(bad[2].file.ends_with("000009.xml") && bad[2].detail.contains("UTF-8"), "{:?}", bad[2]);
    let clipped = r.examples.iter().find(|e| e.issue == Issue::BoxClipped).unwrap();
    assert_eq!(clipped.record, "object #3");
    assert!(clipped.file.ends_with("000001.xml"));
    assert!(clipped.detail.contains("90/70/120/90") && clipped.detail.contains("100x80"), "{clipped:?}");
    let dup = r.examples.iter().find(|e| e.issue == Issue::DuplicateImageId).unwrap();
    assert!(dup.file.ends_with("000005.xml") && dup.detail.contains("000001.xml"), "{dup:?}");
}

#[test]
fn voc_options_class_list_difficult_and_zero_based() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = troubled_voc(root);
    let options =
        VocOptions { class_names: Some(vec!["dog".into(), "cat".into()]), one_based: false, skip_difficult: true };
    let data = DetectionDataset::from_voc(&files, &root.join("JPEGImages"), &options, &Default::default()).unwrap();
    assert_eq!(data.class_names, ["dog", "cat"]);
    assert_eq!(data.category_ids, [1, 2]);
    assert_eq!(data.samples[0].boxes, vec![[1.0, 1.0, 20.0, 30.0], [90.0, 70.0, 100.0, 80.0]]);
    assert_eq!(data.samples[0].labels, [0, 1]);
    assert_eq!(data.report.count(Issue::DifficultSkipped), 1);
    assert_eq!(data.report.count(Issue::DifficultKept), 0);
    assert_eq!(data.report.count(Issue::UnknownCategory), 2, "Fish & chips and bird");
    let unknown = data.report.examples.iter().find(|e| e.issue == Issue::UnknownCategory).unwrap();
    assert!(unknown.detail.contains("\"Fish & chips\""), "{unknown:?}");

    let bad = VocOptions { class_names: Some(vec!["a".into(), "a".into()]), ..VocOptions::default() };
    let err = DetectionDataset::from_voc(&files, root, &bad, &Default::default()).unwrap_err();
    assert!(matches!(err, DataError::Argument(_)), "{err}");
}

#[test]
fn voc_strict_names_the_xml_file_and_object() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = troubled_voc(root);
    let strict = ValidationPolicy::strict();
    let err =
        DetectionDataset::from_voc(&files, &root.join("JPEGImages"), &VocOptions::default(), &strict).unwrap_err();
    // Files are all parsed first, so the first problem is the unparsable 000006.xml.
    assert!(matches!(err, DataError::Strict { issue: Issue::BadAnnotationFile, .. }), "{err}");
    assert!(err.to_string().contains("000006.xml"), "{err}");

    let err =
        DetectionDataset::from_voc(&files[..1], &root.join("JPEGImages"), &VocOptions::default(), &strict).unwrap_err();
    assert!(matches!(err, DataError::Strict { issue: Issue::BoxClipped, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("000001.xml: object #3:"), "{text}");

    // Clean file, difficult object: a note, not an error.
    let clean = root.join("clean.xml");
    std::fs::write(&clean, voc_xml(Some("000004.png"), Some((40, 30)), &[("dog", 1, ["1", "1", "5", "5"])])).unwrap();
    let data = DetectionDataset::from_voc(&[clean], &root.join("JPEGImages"), &VocOptions::default(), &strict).unwrap();
    assert_eq!(data.report.count(Issue::DifficultKept), 1);
    assert_eq!(data.samples[0].boxes, vec![[0.0, 0.0, 5.0, 5.0]]);
}

#[test]
fn voc_dir_layout_with_image_set() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    troubled_voc(root);
    let sets = root.join("ImageSets/Main");
    std::fs::create_dir_all(&sets).unwrap();
    std::fs::write(sets.join("train.txt"), "000004\n\n000002  1\n").unwrap();
    let data =
        DetectionDataset::from_voc_dir(root, Some("train"), &VocOptions::default(), &Default::default()).unwrap();
    let ids: Vec<u64> = data.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(ids, [1, 2], "positions in the image set");
    assert_eq!(data.samples[1].image, root.join("JPEGImages/000002.png"));
    assert_eq!(data.class_names, ["bird"]);

    let all = DetectionDataset::from_voc_dir(root, None, &VocOptions::default(), &Default::default()).unwrap();
    assert_eq!(all.samples.len(), 3);

    let err =
        DetectionDataset::from_voc_dir(root, Some("val"), &VocOptions::default(), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("ImageSets/Main/val.txt"), "{err}");
    let err = DetectionDataset::from_voc(&[], root, &VocOptions::default(), &Default::default()).unwrap_err();
    assert!(matches!(err, DataError::Invalid { .. }), "{err}");
}

//! Tests of the synthetic generator: byte determinism, exact boxes, class colours, spec checks.

use std::collections::BTreeMap;

use super::*;
use crate::detection::{Issue, ValidationPolicy};
use crate::image_io::{DecodeLimits, load_image};

fn small_spec(seed: u64) -> SyntheticSpec {
    SyntheticSpec { images: 6, width: 96, height: 80, classes: 8, max_objects: 6, seed, ..SyntheticSpec::default() }
}

/// Every file under `dir`, relative path -> bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let json = generate(a.path(), &small_spec(11)).unwrap();
    assert_eq!(json, a.path().join("annotations.json"));
    generate(b.path(), &small_spec(11)).unwrap();
    generate(c.path(), &small_spec(12)).unwrap();
    let (sa, sb, sc) = (snapshot(a.path()), snapshot(b.path()), snapshot(c.path()));
    assert_eq!(sa.len(), 7, "6 images and the JSON: {:?}", sa.keys());
    assert_eq!(sa, sb);
    for (name, bytes) in &sa {
        assert_ne!(Some(bytes), sc.get(name), "{} equal across seeds", name.display());
    }
}

#[test]
fn boxes_are_exact_and_drawn_in_the_class_colour() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SyntheticSpec { images: 12, classes: 8, max_objects: 6, seed: 5, ..SyntheticSpec::default() };
    let json = generate(dir.path(), &spec).unwrap();
    let data = DetectionDataset::from_coco(&json, dir.path(), &ValidationPolicy::strict()).unwrap();
    assert_eq!(data.samples.len(), 12);
    assert_eq!(data.class_names, CLASSES.map(|c| c.name.to_owned()));
    assert_eq!(data.category_ids, (1..=8).collect::<Vec<u64>>());
    assert_eq!(data.report.problems(), 0);
    assert!(data.report.count(Issue::ImageWithoutBoxes) == 0);
    let boxes = data.num_boxes();
    assert!((12..=72).contains(&boxes), "{boxes} boxes");
    let mut seen_labels = [false; 8];

    for sample in &data.samples {
        let rgb = load_image(&sample.image, &DecodeLimits::default()).unwrap().rgb;
        assert_eq!(rgb.dimensions(), (spec.width, spec.height));
        let is_class_colour = |p: &image::Rgb<u8>| p.0.iter().all(|&c| c == 30 || c == 225);
        for (b, &label) in sample.boxes.iter().zip(&sample.labels) {
            seen_labels[label] = true;
            let [x1, y1, x2, y2] = b.map(|v| v as u32);
            assert_eq!(b.map(|v| v.fract()), [0.0; 4]);
            let (w, h) = (x2 - x1, y2 - y1);
            assert!((spec.min_size..=spec.max_size).contains(&w) && (spec.min_size..=spec.max_size).contains(&h));
            let colour = CLASSES[label].colour;
            assert_eq!(rgb.get_pixel(x1 + w / 2, y1 + h / 2).0, colour, "centre of {b:?} in {:?}", sample.image);
            // The tight bounds of the class colour inside the box are the box.
            let (mut lo_x, mut lo_y, mut hi_x, mut hi_y) = (u32::MAX, u32::MAX, 0, 0);
            for y in y1..y2 {
                for x in x1..x2 {
                    let p = rgb.get_pixel(x, y);
                    if p.0 == colour {
                        (lo_x, lo_y, hi_x, hi_y) = (lo_x.min(x), lo_y.min(y), hi_x.max(x + 1), hi_y.max(y + 1));
                    } else {
                        assert!(!is_class_colour(p), "foreign class colour inside {b:?}");
                    }
                }
            }
            assert_eq!([lo_x, lo_y, hi_x, hi_y], [x1, y1, x2, y2], "{:?} label {label}", sample.image);
            if CLASSES[label].shape == Shape::Rectangle {
                assert!((y1..y2).all(|y| (x1..x2).all(|x| rgb.get_pixel(x, y).0 == colour)));
            }
        }
        // Outside every box: background only.
        for (x, y, p) in rgb.enumerate_pixels() {
            let inside = sample.boxes.iter().any(|b| {
                let (fx, fy) = (x as f32, y as f32);
                fx >= b[0] && fx < b[2] && fy >= b[1] && fy < b[3]
            });
            if !inside {
                assert!(p.0.iter().all(|c| (70..=185).contains(c)), "({x}, {y}) = {p:?}");
            }
        }
        for (i, a) in sample.boxes.iter().enumerate() {
            for b in &sample.boxes[i + 1..] {
                assert!(a[2] <= b[0] || b[2] <= a[0] || a[3] <= b[1] || b[3] <= a[1], "overlap {a:?} {b:?}");
            }
        }
    }
    assert!(seen_labels.iter().filter(|&&s| s).count() >= 6, "{seen_labels:?}");
}

#[test]
fn every_shape_spans_its_box_at_extreme_aspect_ratios() {
    for shape in [Shape::Rectangle, Shape::Ellipse, Shape::Cross] {
        for (w, h) in [(8, 8), (9, 8), (60, 12), (12, 60), (61, 13), (200, 8)] {
            let rows: Vec<bool> = (0..h).map(|y| (0..w).any(|x| covers(shape, x, y, w, h))).collect();
            let cols: Vec<bool> = (0..w).map(|x| (0..h).any(|y| covers(shape, x, y, w, h))).collect();
            let spans = rows[0] && rows[h as usize - 1] && cols[0] && cols[w as usize - 1];
            // The generator's own test (middle row and column reach the edges) agrees.
            let quick = covers(shape, 0, h / 2, w, h) && covers(shape, w / 2, 0, w, h);
            assert_eq!(spans, quick, "{shape:?} {w}x{h}");
            if shape != Shape::Ellipse || (w, h) != (200, 8) {
                assert!(spans, "{shape:?} {w}x{h}");
            }
        }
    }
}

#[test]
fn bad_specs_are_argument_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        SyntheticSpec { images: 0, ..SyntheticSpec::default() },
        SyntheticSpec { classes: 0, ..SyntheticSpec::default() },
        SyntheticSpec { classes: 9, ..SyntheticSpec::default() },
        SyntheticSpec { min_objects: 5, max_objects: 4, ..SyntheticSpec::default() },
        SyntheticSpec { min_size: 4, ..SyntheticSpec::default() },
        SyntheticSpec { min_size: 30, max_size: 20, ..SyntheticSpec::default() },
        SyntheticSpec { width: 50, ..SyntheticSpec::default() },
    ];
    for spec in bad {
        let err = generate(dir.path(), &spec).unwrap_err();
        assert!(matches!(err, DataError::Argument(_)) && err.to_string().contains("synthetic spec"), "{spec:?}: {err}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written for a bad spec");
    let spec: SyntheticSpec = serde_json::from_str(r#"{"images": 3, "seed": 9}"#).unwrap();
    assert_eq!(spec, SyntheticSpec { images: 3, seed: 9, ..SyntheticSpec::default() });
}

#[test]
fn clutter_and_occlusion_make_a_harder_set_and_leave_the_plain_one_unchanged() {
    let plain = |s: &SyntheticSpec| {
        let mut rng = Rng::seed(s.seed);
        draw_image(s, &mut rng)
    };
    let base = SyntheticSpec { images: 1, max_objects: 8, ..SyntheticSpec::default() };
    let (img, boxes, _) = plain(&base);
    let explicit_zero = SyntheticSpec { distractors: 0, occlusion_percent: 0, ..base.clone() };
    assert_eq!(plain(&explicit_zero).0, img, "0 clutter and 0 occlusion draw the plain set");
    assert!(!boxes.is_empty());

    let hard = SyntheticSpec { distractors: 6, occlusion_percent: 40, min_objects: 6, max_objects: 10, ..base.clone() };
    let mut overlapping = 0;
    let mut clutter_pixels = 0;
    for seed in 0..20 {
        let (img, boxes, _) = plain(&SyntheticSpec { seed, ..hard.clone() });
        clutter_pixels += img.pixels().filter(|p| DISTRACTOR_COLOURS.contains(&p.0)).count();
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
                let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
                let smaller = ((a[2] - a[0]) * (a[3] - a[1])).min((b[2] - b[0]) * (b[3] - b[1]));
                assert!(iw * ih <= 0.4 * smaller + 1e-3, "occlusion over 40%: {a:?} {b:?}");
                overlapping += usize::from(iw * ih > 0.0);
            }
        }
    }
    assert!(overlapping > 5, "objects overlap in the hard set ({overlapping} pairs)");
    assert!(clutter_pixels > 1000, "clutter is drawn ({clutter_pixels} pixels)");
    for colour in DISTRACTOR_COLOURS {
        assert!(CLASSES.iter().all(|c| c.colour != colour), "clutter never takes a class colour");
    }
    assert!(SyntheticSpec { occlusion_percent: 61, ..base.clone() }.validate().is_err());
    assert!(SyntheticSpec { distractors: 65, ..base.clone() }.validate().is_err());
    assert!(SyntheticSpec { max_objects: 257, ..base }.validate().is_err());
}

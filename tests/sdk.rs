//! The detection SDK on real exported models: loading and validation, detection geometry,
//! concurrency, batches with bad items, strict mode.

use crate::util::{encoded, png_bomb, small_model, textured};
use detnas_infer::{Detector, DetectorBuilder, DetectorOptions, Device, InferError};
use image::ImageFormat;
use std::sync::Arc;

/// The small test model (random weights, low scores): every score the graph gives by default.
fn builder() -> DetectorBuilder {
    Detector::builder().all_scores()
}

fn detector(builder: DetectorBuilder) -> Detector {
    builder.load(&small_model().0).expect("model loads")
}

#[test]
fn bad_model_files_are_rejected_with_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let err = Detector::from_file(&empty, DetectorOptions::default()).err().unwrap().to_string();
    assert!(err.contains("empty.onnx") && err.contains("empty file"), "{err}");

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x07garbage that is not protobuf \xff\xff\xff").unwrap();
    let err = Detector::from_file(&garbage, DetectorOptions::default()).err().unwrap().to_string();
    assert!(err.contains("garbage.onnx"), "{err}");

    let bytes = std::fs::read(&small_model().0).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Detector::from_file(&truncated, DetectorOptions::default()).err().unwrap().to_string();
    assert!(err.contains("truncated.onnx"), "{err}");

    let missing = Detector::from_file(dir.path().join("nope.onnx"), DetectorOptions::default()).err().unwrap();
    assert!(missing.to_string().contains("nope.onnx"));
}

#[test]
fn valid_onnx_with_the_wrong_interface_is_rejected_at_load_time() {
    use detnas_onnx::{Dim, ElemType, GraphBuilder, graph::encode};
    // right metadata, wrong input rank and missing outputs
    let cfg = &small_model().1;
    let mut g = GraphBuilder::new("wrong");
    let x = g.input("images", ElemType::F32, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(128)]).unwrap();
    let y = g.op("Relu", "y", &[&x], vec![]);
    g.output(&y, ElemType::F32, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(128)]).unwrap();
    g.metadata("detnas.config", serde_json::to_string(cfg).unwrap());
    let err =
        Detector::from_memory(&encode(&g.build()).unwrap(), "wrong.onnx", DetectorOptions::default()).err().unwrap();
    assert!(matches!(err, InferError::ModelContract { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("wrong.onnx") && msg.contains("expected") && msg.contains("[1, 3, 128, 160]"), "{msg}");

    // right input, no detnas metadata
    let mut g = GraphBuilder::new("plain");
    let x =
        g.input("images", ElemType::F32, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(128), Dim::Fixed(160)]).unwrap();
    let y = g.op("Relu", "y", &[&x], vec![]);
    g.output(&y, ElemType::F32, &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(128), Dim::Fixed(160)]).unwrap();
    let err = Detector::from_memory(&encode(&g.build()).unwrap(), "plain.onnx", DetectorOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("detnas.config"), "{err}");
}

#[test]
fn boxes_come_back_in_original_pixels() {
    let det = detector(builder());
    let cfg = &small_model().1;
    let (w, h) = (cfg.input.width as u32, cfg.input.height as u32);
    // a wide image: scaled by 0.4 into 160x40, the rest of the input is padding
    for img in [textured(400, 100, 1), textured(320, 256, 2), textured(37, 300, 3)] {
        let mut input = vec![0.0; 3 * (w * h) as usize];
        let lb = detnas_infer::preprocess::letterbox_into(&img, w, h, cfg.preprocess.pad_value, &mut input);
        let (raw, scores, _) = det.run(&input).unwrap();
        let got = det.detect(&img).unwrap();
        assert_eq!(got.detections.len(), raw.len());
        assert!(!raw.is_empty(), "the test model should detect something");
        let (sx, sy) = (img.width() as f32 / lb.resized_w as f32, img.height() as f32 / lb.resized_h as f32);
        for (d, (r, s)) in got.detections.iter().zip(raw.iter().zip(&scores)) {
            let expect = [
                (r[0] * sx).clamp(0.0, img.width() as f32),
                (r[1] * sy).clamp(0.0, img.height() as f32),
                (r[2] * sx).clamp(0.0, img.width() as f32),
                (r[3] * sy).clamp(0.0, img.height() as f32),
            ];
            assert_eq!(d.bbox, expect);
            assert_eq!(d.score, *s);
        }
        assert_eq!((got.width, got.height), (img.width(), img.height()));
        let scores: Vec<f32> = got.detections.iter().map(|d| d.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by decreasing score");
    }
}

#[test]
fn options_filter_classes_scores_and_counts() {
    let img = textured(200, 150, 3);
    let all = detector(builder()).detect(&img).unwrap().detections;
    let strict = detector(builder().confidence(0.2).max_detections(3)).detect(&img).unwrap().detections;
    assert!(strict.len() <= 3 && strict.iter().all(|d| d.score >= 0.2));
    let only1 = detector(builder().classes(["bush"])).detect(&img).unwrap().detections;
    assert!(only1.iter().all(|d| d.class_id == 1 && d.class_name == "bush"));
    assert_eq!(only1.len(), all.iter().filter(|d| d.class_id == 1).count());
    let nms = detector(builder().iou(0.1)).detect(&img).unwrap().detections;
    assert!(nms.len() <= all.len());
}

#[test]
fn concurrent_detection_gives_identical_results() {
    let det = Arc::new(detector(builder().threads(1)));
    let images: Vec<_> = (0..4).map(|i| textured(150 + 10 * i, 120, i)).collect();
    let sequential: Vec<_> = images.iter().map(|im| det.detect(im).unwrap().detections).collect();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let det = Arc::clone(&det);
            let images = images.clone();
            std::thread::spawn(move || {
                (0..images.len()).map(|i| det.detect(&images[(i + t) % 4]).unwrap().detections).collect::<Vec<_>>()
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        for (i, dets) in h.join().unwrap().into_iter().enumerate() {
            assert_eq!(dets, sequential[(i + t) % 4]);
        }
    }
}

#[test]
fn batch_survives_bad_items_and_strict_mode_rejects_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.png");
    std::fs::write(&good, encoded(&textured(90, 60, 1), ImageFormat::Png)).unwrap();
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, png_bomb()).unwrap();
    let jpeg = encoded(&textured(120, 90, 2), ImageFormat::Jpeg);
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &jpeg[..jpeg.len() * 2 / 3]).unwrap();

    let det = detector(builder());
    let results = det.detect_batch(&[good.clone(), bomb.clone(), truncated.clone()]);
    assert!(results[0].is_ok());
    let bomb_err = results[1].as_ref().err().unwrap().to_string();
    assert!(bomb_err.contains("bomb.png") && bomb_err.contains("100000"), "{bomb_err}");
    let lenient = results[2].as_ref().unwrap();
    assert!(!lenient.warnings.is_empty(), "truncated JPEG is reported as a warning");

    let strict = detector(builder().strict(true));
    let err = strict.detect_path(&truncated).err().unwrap().to_string();
    assert!(err.contains("truncated.jpg"), "{err}");
    assert!(strict.detect_path(&good).is_ok());
}

#[test]
fn the_pipeline_gives_what_detect_path_gives_for_every_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..7u32 {
        let p = dir.path().join(format!("{i}.jpg"));
        std::fs::write(&p, encoded(&textured(100 + 10 * i, 80, i), ImageFormat::Jpeg)).unwrap();
        paths.push(p);
    }
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not an image").unwrap();
    paths.insert(3, bad);
    for sessions in [1, 2] {
        let det = detector(builder().sessions(sessions).threads(1));
        let mut got: Vec<Option<Result<Vec<f32>, String>>> = vec![None; paths.len()];
        let summary = |d: detnas_infer::Detections| d.detections.iter().flat_map(|x| x.bbox).collect::<Vec<f32>>();
        det.detect_pipelined(
            &paths,
            1,
            |i, r| (i, r.map(summary).map_err(|e| e.to_string())),
            |(i, r)| {
                assert!(got[i].is_none(), "item {i} delivered twice");
                got[i] = Some(r);
            },
        );
        for (i, p) in paths.iter().enumerate() {
            let expected = det.detect_path(p).map(summary).map_err(|e| e.to_string());
            assert_eq!(got[i].as_ref(), Some(&expected), "item {i} with {sessions} session(s)");
        }
        assert!(got[3].as_ref().unwrap().as_ref().unwrap_err().contains("bad.png"));
    }
}

#[test]
fn unavailable_gpu_falls_back_or_fails_under_strict() {
    let lenient = detector(builder().device(Device::Cuda(0)));
    assert!(lenient.info().provider.starts_with("CPUExecutionProvider"), "{}", lenient.info().provider);
    let err = builder().device(Device::Cuda(0)).strict(true).load(&small_model().0).err().unwrap();
    assert!(matches!(err, InferError::Provider { .. }), "{err}");
    assert!(Device::parse("tpu").is_err());
}

#[test]
fn exif_orientation_is_applied_before_detection() {
    // the same scene stored rotated with EXIF orientation 6 vs. physically rotated pixels
    let upright = textured(160, 100, 5);
    let stored = image::imageops::rotate270(&upright); // orientation 6 rotates it back by 90 degrees cw
    let jpeg_upright = encoded(&upright, ImageFormat::Png);
    let mut png = encoded(&stored, ImageFormat::Png);
    png = crate::util::with_png_exif_orientation(&png, 6);
    let det = detector(builder());
    let a = det.detect_bytes(&jpeg_upright, "upright.png").unwrap();
    let b = det.detect_bytes(&png, "rotated.png").unwrap();
    assert_eq!((b.width, b.height), (160, 100));
    assert_eq!(a.detections, b.detections);
}

#[test]
fn python_onnxruntime_pipeline_gives_the_same_detections_as_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let cfg = &small_model().1;
    // exactly the network input size: both pipelines feed identical tensors
    let img = textured(cfg.input.width as u32, cfg.input.height as u32, 9);
    let path = images.join("scene.png");
    std::fs::write(&path, encoded(&img, ImageFormat::Png)).unwrap();
    let ours = detector(builder()).detect_path(&path).unwrap();
    let out = dir.path().join("py.json");
    crate::util::python(&[
        "tools/python_pipeline.py",
        small_model().0.to_str().unwrap(),
        images.to_str().unwrap(),
        out.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    let py: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let py = py.as_array().unwrap();
    assert_eq!(py.len(), ours.detections.len());
    assert!(!py.is_empty());
    for (p, d) in py.iter().zip(&ours.detections) {
        assert_eq!(p["category_id"].as_u64().unwrap() as usize, d.class_id + 1);
        assert!((p["score"].as_f64().unwrap() as f32 - d.score).abs() < 1e-6);
        let b: Vec<f32> = p["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let xywh = [d.bbox[0], d.bbox[1], d.bbox[2] - d.bbox[0], d.bbox[3] - d.bbox[1]];
        for i in 0..4 {
            assert!((b[i] - xywh[i]).abs() < 1e-3, "{b:?} vs {xywh:?}");
        }
    }
}

/// The shipped model and its two sample images.
fn shipped() -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let samples = ["neon-yell-1.jpg", "neon-yell-2.jpg"].map(|n| root.join("models/samples").join(n));
    (root.join("models/neon-trees.onnx"), samples.to_vec())
}

#[test]
fn default_confidence_keeps_what_a_user_wants_and_all_scores_keeps_the_graphs_output() {
    let (model, samples) = shipped();
    let default = Detector::builder().load(&model).unwrap();
    let all = Detector::builder().all_scores().load(&model).unwrap();
    assert_eq!(default.thresholds().confidence, detnas_infer::DEFAULT_CONFIDENCE);
    assert_eq!(all.thresholds().confidence, all.info().config.score_thresh);
    for image in &samples {
        let kept = default.detect_path(image).unwrap().detections;
        let everything = all.detect_path(image).unwrap().detections;
        assert!(!kept.is_empty() && kept.iter().all(|d| d.score >= 0.25), "{}", image.display());
        assert_eq!(everything.len(), all.info().config.detections_per_img, "the graph fills its cap at 0.05");
        assert_eq!(kept[..], everything[..kept.len()], "the same detections, cut at 0.25");
    }
}

#[test]
fn getters_builder_and_debug_describe_the_model() {
    let (model, _) = shipped();
    let d = Detector::builder().confidence(0.4).iou(0.3).max_detections(7).classes(["tree"]).load(&model).unwrap();
    assert_eq!(d.class_names(), ["tree"]);
    assert_eq!(d.input_size(), detnas_infer::InputSize::new(416, 416));
    let t = d.thresholds();
    assert_eq!((t.confidence, t.iou, t.max_detections), (0.4, 0.3, 7));
    assert_eq!(d.options().classes, Some(vec![0]));
    let loose = Detector::builder().iou(0.9).max_detections(10_000).load(&model).unwrap().thresholds();
    assert_eq!((loose.iou, loose.max_detections), (0.5, 150), "options only tighten the graph's own");
    let debug = format!("{d:?}");
    assert!(debug.contains("neon-trees.onnx") && debug.contains("tree") && debug.contains("416"), "{debug}");
    let runtime = &d.info().runtime;
    assert!(runtime.path.is_file() && runtime.version.starts_with("1.3"), "{runtime:?}");

    let err = Detector::builder().classes(["tree", "car"]).load(&model).unwrap_err();
    assert!(matches!(err, InferError::UnknownClass { .. }), "{err}");
    assert!(err.to_string().contains("\"car\"") && err.to_string().contains("[\"tree\"]"), "{err}");
}

#[test]
fn errors_are_one_line_and_keep_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x07garbage that is not protobuf \xff\xff\xff").unwrap();
    let missing = dir.path().join("missing.onnx");
    for err in [Detector::builder().load(&garbage).unwrap_err(), Detector::builder().load(&missing).unwrap_err()] {
        let source = std::error::Error::source(&err).expect("the underlying error is kept");
        for message in [err.to_string(), source.to_string()] {
            assert!(!message.ends_with('\n') && !message.is_empty(), "{message:?}");
        }
        assert!(!err.to_string().contains(&source.to_string()), "not repeated in the message: {err}");
    }
    let (model, samples) = shipped();
    let d = Detector::builder().load(&model).unwrap();
    let err = d.detect_bytes(b"just text", "note.txt").unwrap_err();
    assert!(matches!(err, InferError::Image(detnas_infer::ImageError::UnknownFormat { .. })), "{err}");
    // ONNX Runtime is loaded once per process: asking for another file is refused, the same is fine.
    let loaded = d.info().runtime.path.clone();
    assert!(detnas_infer::runtime::builder().library_path(&loaded).init().is_ok());
    let other = detnas_infer::runtime::builder().library_path(&samples[0]).init().unwrap_err();
    assert!(matches!(other, InferError::RuntimeConflict { .. }), "{other}");
}

#[test]
fn batch_calls_run_in_parallel_in_input_order_and_serialise() {
    let (model, samples) = shipped();
    let pooled = Detector::builder().sessions(2).threads(1).load(&model).unwrap();
    let single = Detector::builder().threads(1).load(&model).unwrap();
    let mut paths: Vec<_> = samples.iter().cycle().take(6).cloned().collect();
    paths.insert(3, std::path::PathBuf::from("no/such/image.jpg"));
    let one_by_one: Vec<_> = paths.iter().map(|p| single.detect_path(p).map(|r| r.detections)).collect();
    let batch = pooled.detect_batch(&paths);
    assert_eq!(batch.len(), paths.len());
    for (b, s) in batch.iter().zip(&one_by_one) {
        match (b, s) {
            (Ok(b), Ok(s)) => assert_eq!(&b.detections, s),
            (Err(b), Err(s)) => assert_eq!(b.to_string(), s.to_string()),
            _ => panic!("batch and single calls disagree"),
        }
    }
    assert!(batch[3].as_ref().unwrap_err().to_string().contains("no/such/image.jpg"));

    let bytes: Vec<Vec<u8>> = samples.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let from_bytes = pooled.detect_bytes_batch(&bytes);
    let images: Vec<_> = samples.iter().map(|p| image::open(p).unwrap().to_rgb8()).collect();
    let from_images = pooled.detect_images(&images);
    for i in 0..2 {
        let expected = one_by_one[i].as_ref().unwrap();
        assert_eq!(&from_bytes[i].as_ref().unwrap().detections, expected);
        assert_eq!(&from_images[i].as_ref().unwrap().detections, expected);
    }
    let garbage = pooled.detect_bytes_batch(&[b"xx".to_vec()]);
    assert!(garbage[0].as_ref().unwrap_err().to_string().contains("#0"));

    // JSON round trip, timings in milliseconds.
    let result = batch[0].as_ref().unwrap();
    let json = serde_json::to_value(result).unwrap();
    assert!(json["timings"]["inference_ms"].as_f64().unwrap() > 0.0);
    let back: detnas_infer::Detections = serde_json::from_value(json).unwrap();
    assert_eq!(back.detections, result.detections);
    let coco = result.to_coco(42);
    assert_eq!(coco.len(), result.detections.len());
    assert_eq!(
        (coco[0].image_id, coco[0].category_id, coco[0].bbox),
        (42, 1, result.detections[0].xywh().map(f64::from))
    );
}

/// Side of the mosaic's quadrants: the sample tiles cropped to a square.
const QUADRANT: u32 = 312;

/// A 2x2 mosaic of the two sample tiles (624x624) and the shipped model's detections on each
/// quadrant alone, moved to mosaic coordinates: the known boxes of the large image.
fn mosaic() -> (image::RgbImage, Vec<detnas_infer::Detection>, Detector) {
    mosaic_with(detnas_infer::Tta::None)
}

/// [`mosaic`] with test-time augmentation.
fn mosaic_with(tta: detnas_infer::Tta) -> (image::RgbImage, Vec<detnas_infer::Detection>, Detector) {
    let (model, samples) = shipped();
    let d = Detector::builder().confidence(0.3).threads(2).tta(tta).load(&model).unwrap();
    let tiles: Vec<image::RgbImage> = samples
        .iter()
        .map(|p| image::imageops::crop_imm(&image::open(p).unwrap().to_rgb8(), 0, 0, QUADRANT, QUADRANT).to_image())
        .collect();
    let q = QUADRANT;
    let mut big = image::RgbImage::new(2 * q, 2 * q);
    let mut known = Vec::new();
    for (q, (x, y)) in [(0u32, 0u32), (q, 0), (0, q), (q, q)].into_iter().enumerate() {
        let tile = &tiles[(q == 1 || q == 2) as usize];
        image::imageops::replace(&mut big, tile, x as i64, y as i64);
        for mut det in d.detect(tile).unwrap().detections {
            let b = det.bbox;
            det.bbox = [b[0] + x as f32, b[1] + y as f32, b[2] + x as f32, b[3] + y as f32];
            known.push(det);
        }
    }
    known.sort_by(|a, b| b.score.total_cmp(&a.score));
    (big, known, d)
}

#[test]
fn tiles_without_overlap_reproduce_each_windows_detections() {
    // with test-time augmentation too: every window gets its views
    for (tta, least) in [(detnas_infer::Tta::None, 40), (detnas_infer::Tta::Flips, 20)] {
        let (big, known, d) = mosaic_with(tta);
        let tiled = d.detect_tiled(&big, detnas_infer::Tiling::new(QUADRANT, 0.0).unwrap()).unwrap();
        assert_eq!((tiled.width, tiled.height), (2 * QUADRANT, 2 * QUADRANT));
        assert!(known.len() > least, "{tta:?}: {} known crowns", known.len());
        // the same detections; equal scores (the same tile twice) may come in either order
        let key = |d: &detnas_infer::Detection| (d.score.to_bits(), d.bbox.map(f32::to_bits));
        let (mut got, mut want) = (tiled.detections.clone(), known.clone());
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want, "{tta:?}");
    }
}

#[test]
fn overlapping_tiles_find_every_known_box_once() {
    use detnas_core::detector::boxes::iou;
    let (big, known, d) = mosaic();
    let tiled = d.detect_tiled(&big, detnas_infer::Tiling::new(QUADRANT, 0.25).unwrap()).unwrap().detections;
    // every confident crown away from the quadrant seams is found (windows across a seam see the
    // tree next to another scene, so their box may differ a little from the quadrant's own)
    let inner: Vec<_> =
        known.iter().filter(|k| k.score >= 0.5 && k.bbox.iter().all(|&v| (v - QUADRANT as f32).abs() > 10.0)).collect();
    for k in &inner {
        let best = tiled.iter().map(|t| iou(&t.bbox, &k.bbox)).fold(0.0f32, f32::max);
        assert!(best > 0.5, "{:?} not found (best IoU {best})", k.bbox);
    }
    // and nothing is reported twice
    for (i, a) in tiled.iter().enumerate() {
        for b in &tiled[i + 1..] {
            assert!(iou(&a.bbox, &b.bbox) <= 0.5, "duplicate {:?} / {:?}", a.bbox, b.bbox);
        }
    }
    let scores: Vec<f32> = tiled.iter().map(|t| t.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn pngs_are_tiled_row_by_row_past_the_pixel_limit_with_the_same_detections() {
    let (big, _, d) = mosaic();
    let (model, _) = shipped();
    let tiling = detnas_infer::Tiling::new(QUADRANT, 0.25).unwrap();
    let want = d.detect_tiled(&big, tiling).unwrap().detections;
    assert!(!want.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let png8 = dir.path().join("mosaic.png");
    big.save(&png8).unwrap();
    // 16-bit samples v * 257 round back to v
    let wide = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(big.width(), big.height(), |x, y| {
        image::Rgb(big.get_pixel(x, y).0.map(|v| u16::from(v) * 257))
    });
    let png16 = dir.path().join("mosaic16.png");
    wide.save(&png16).unwrap();
    let jpeg = dir.path().join("mosaic.jpg");
    big.save(&jpeg).unwrap();

    // a pixel limit under the mosaic's 624 x 624: whole decodes are refused, row reading is not
    let limits = detnas_infer::DecodeLimits { max_pixels: 100_000, ..Default::default() };
    let small = Detector::builder().confidence(0.3).threads(2).decode_limits(limits).load(&model).unwrap();
    for png in [&png8, &png16] {
        let got = small.detect_path_tiled(png, tiling).unwrap();
        assert_eq!(got.detections, want, "{}", png.display());
        assert_eq!((got.width, got.height), big.dimensions());
        assert!(got.timings.decode > std::time::Duration::ZERO);
    }
    let whole = small.detect_path(&png8).unwrap_err().to_string();
    assert!(whole.contains("mosaic.png") && whole.contains("over the decode limit"), "{whole}");
    let jpeg_err = small.detect_path_tiled(&jpeg, tiling).unwrap_err().to_string();
    assert!(jpeg_err.contains("mosaic.jpg") && jpeg_err.contains("over the decode limit"), "{jpeg_err}");

    // a band larger than the memory limit, and a truncated file, are errors naming the file
    let tight = detnas_infer::DecodeLimits { max_alloc: 100_000, ..Default::default() };
    let tight = Detector::builder().threads(1).decode_limits(tight).load(&model).unwrap();
    let band = tight.detect_path_tiled(&png8, tiling).unwrap_err().to_string();
    assert!(band.contains("mosaic.png") && band.contains("band of 312 rows"), "{band}");
    let bytes = std::fs::read(&png8).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = d.detect_path_tiled(&cut, tiling).unwrap_err().to_string();
    assert!(err.contains("cut.png") && err.contains("row"), "{err}");
}

#[test]
fn large_jpegs_decoded_at_a_reduced_scale_give_the_full_decodes_boxes() {
    use detnas_core::detector::boxes::iou;
    let (model, samples) = shipped();
    let tile = image::open(&samples[0]).unwrap().to_rgb8();
    let (w, h) = (tile.width() * 6, tile.height() * 6); // over 3 megapixels
    let big = image::imageops::resize(&tile, w, h, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&big).unwrap();
    // with test-time augmentation too (fused scores are lower: lower thresholds; a fused box
    // averages views that each moved a little: a lower IoU)
    let cases = [(detnas_infer::Tta::None, 0.3, 0.35, 0.7), (detnas_infer::Tta::Flips, 0.15, 0.25, 0.6)];
    for (tta, conf, sure, overlap) in cases {
        let builder = Detector::builder().confidence(conf).threads(2).tta(tta);
        let reduced = builder.clone().load(&model).unwrap();
        let full = builder.reduced_decode(false).load(&model).unwrap();
        let a = reduced.detect_bytes(&jpeg, "big.jpg").unwrap();
        let b = full.detect_bytes(&jpeg, "big.jpg").unwrap();
        assert_eq!((a.width, a.height), (w, h), "boxes and size in the full image's pixels");
        assert_eq!((b.width, b.height), (w, h));
        let confident: Vec<_> = b.detections.iter().filter(|d| d.score >= sure).collect();
        assert!(confident.len() >= 5, "{tta:?}: {} confident crowns", confident.len());
        for d in &confident {
            let best = a.detections.iter().map(|x| iou(&x.bbox, &d.bbox)).fold(0.0f32, f32::max);
            assert!(
                best > overlap,
                "{tta:?}: {:?} (score {}) not found by the reduced decode (IoU {best})",
                d.bbox,
                d.score
            );
        }
        let ratio = a.detections.len() as f32 / b.detections.len() as f32;
        assert!(
            (0.8..=1.25).contains(&ratio),
            "{tta:?}: {} against {} detections",
            a.detections.len(),
            b.detections.len()
        );
    }
}

/// `b` matches `a` in place and score.
fn same_detection(a: &detnas_infer::Detection, b: &detnas_infer::Detection) -> bool {
    a.class_id == b.class_id
        && (a.score - b.score).abs() < 1e-4
        && a.bbox.iter().zip(b.bbox).all(|(x, y)| (x - y).abs() < 1e-2)
}

#[test]
fn test_time_augmentation_fuses_views_and_commutes_with_the_symmetries_it_averages() {
    use detnas_infer::{Symmetry, Tta};
    let (model, samples) = shipped();
    let tile = image::open(&samples[0]).unwrap().to_rgb8();
    // not square: the quarter-turned views are letterboxed differently from the upright ones
    let img = image::imageops::crop_imm(&tile, 0, 0, tile.width(), tile.height() * 3 / 4).to_image();
    let plain = Detector::builder().all_scores().load(&model).unwrap().detect(&img).unwrap().detections;
    let d = Detector::builder().all_scores().tta(Tta::Dihedral).load(&model).unwrap();
    let fused = d.detect(&img).unwrap();
    let base = &fused.detections;
    assert_eq!((fused.width, fused.height), img.dimensions());
    assert!(!base.is_empty() && base.len() <= d.info().config.detections_per_img, "{}", base.len());
    assert!(base.windows(2).all(|p| p[0].score >= p[1].score), "highest score first");
    assert!(base.iter().all(|b| b.score >= d.thresholds().confidence), "fused scores keep the graph's floor");
    assert!(
        base.iter().all(|b| b.bbox[0] >= 0.0 && b.bbox[2] <= img.width() as f32 && b.bbox[3] <= img.height() as f32)
    );
    assert!(base[..5].iter().any(|b| !plain.iter().any(|p| same_detection(p, b))), "the views change the result");
    // the eight views of a turned or mirrored image are the eight views of the image itself
    for k in [1, 4, 7] {
        let s = Symmetry::new(k);
        let turned = d.detect(&s.image(&img)).unwrap().detections;
        assert_eq!(turned.len(), base.len(), "symmetry {k}");
        for b in base {
            let mut want = b.clone();
            want.bbox = s.bbox(&b.bbox, img.width(), img.height());
            assert!(turned.iter().any(|t| same_detection(t, &want)), "symmetry {k}: {want:?} not found");
        }
    }
    // four mirror views: a horizontal mirror is one of them
    let flips = Detector::builder().all_scores().tta(Tta::Flips).load(&model).unwrap();
    let (a, mirrored) =
        (flips.detect(&img).unwrap().detections, flips.detect(&Symmetry::new(4).image(&img)).unwrap().detections);
    assert_eq!(a.len(), mirrored.len());
    for b in &a {
        let mut want = b.clone();
        want.bbox = Symmetry::new(4).bbox(&b.bbox, img.width(), img.height());
        assert!(mirrored.iter().any(|t| same_detection(t, &want)), "{want:?}");
    }
}

#[test]
fn bench_times_the_model_run_and_the_detect_path_as_planned() {
    let (model, samples) = shipped();
    let detector = Detector::builder().threads(1).load(&model).unwrap();
    let image = std::fs::read(&samples[0]).unwrap();
    let timed = detector.bench(&image, &detnas_infer::TimingPlan::iterations(1, 3)).unwrap();
    assert_eq!((timed.model_run.iterations, timed.detect.iterations), (3, 3));
    assert!(timed.model_run.p50_ms > 0.0 && timed.detect.p50_ms > 0.0);
    assert!(timed.detect.min_ms <= timed.detect.p50_ms && timed.detect.p50_ms <= timed.detect.p99_ms);
    let e = detector.bench(b"not an image", &detnas_infer::TimingPlan::iterations(0, 1)).unwrap_err();
    assert!(e.to_string().contains("timed image"), "{e}");
    for plan in [
        detnas_infer::TimingPlan { min_seconds: f64::NAN, ..Default::default() },
        detnas_infer::TimingPlan { min_seconds: -1.0, ..Default::default() },
        detnas_infer::TimingPlan { min_iters: usize::MAX, ..Default::default() },
    ] {
        let e = detector.bench(&image, &plan).unwrap_err().to_string();
        assert!(e.contains("timing plan"), "{e}");
    }
}

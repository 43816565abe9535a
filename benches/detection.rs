//! Criterion benches of the detection path: letterbox pre-processing, NMS, and the SDK's `detect`
//! against a bare ONNX Runtime `Session::run` on the same model (the SDK overhead ratio).
//!
//! `cargo bench --bench detection` (release). Ratios, not absolute times, are what to compare.

use criterion::{Criterion, criterion_group, criterion_main};
use detnas_core::detector::boxes::{BBox, batched_nms};
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::detector::{DetectorConfig, HeadConv};
use detnas_core::rng::Rng;
use detnas_core::space::arch::Preset;
use detnas_infer::Detector;
use detnas_infer::ort::session::Session;
use detnas_infer::ort::value::TensorRef;
use detnas_infer::preprocess::letterbox_into;
use std::hint::black_box;
use std::time::Duration;

fn image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x ^ y) % 256) as u8]))
}

/// A bare ONNX Runtime session with the SDK's optimisation level and 2 intra-op threads.
fn bare_session(model: &[u8]) -> Session {
    let env = detnas_infer::runtime::environment().expect("runtime");
    Session::builder(env)
        .expect("builder")
        .with_optimization_level(detnas_infer::ort::session::builder::GraphOptimizationLevel::Level3)
        .expect("optimization level")
        .with_intra_threads(2)
        .expect("threads")
        .commit_from_memory(model)
        .expect("session")
}

fn preprocess(c: &mut Criterion) {
    let img = image(1280, 720);
    let mut buf = vec![0.0f32; 3 * 512 * 512];
    c.bench_function("letterbox 1280x720 -> 512x512", |b| {
        b.iter(|| black_box(letterbox_into(black_box(&img), 512, 512, 0.0, &mut buf)))
    });
}

fn nms(c: &mut Criterion) {
    let mut rng = Rng::seed(1);
    let n = 5000;
    let boxes: Vec<BBox> = (0..n)
        .map(|_| {
            let (x, y) = (rng.unit() as f32 * 500.0, rng.unit() as f32 * 500.0);
            [x, y, x + 10.0 + rng.unit() as f32 * 60.0, y + 10.0 + rng.unit() as f32 * 60.0]
        })
        .collect();
    let scores: Vec<f32> = (0..n).map(|_| rng.unit() as f32).collect();
    let labels: Vec<i64> = (0..n).map(|_| rng.below(5) as i64).collect();
    c.bench_function("batched_nms 5000 boxes 5 classes", |b| {
        b.iter(|| black_box(batched_nms(black_box(&boxes), &scores, &labels, 0.5)))
    });
}

fn sdk_overhead(c: &mut Criterion) {
    let (space, arch) = Preset::by_name("coco-retinanet-300m").expect("preset").resolve();
    let cfg = DetectorConfig { head_conv: HeadConv::Separable, ..DetectorConfig::default() };
    let weights = detnas_onnx::Weights::random_varied(&detector_params(&space, Paths::Single(&arch), &cfg), 1);
    let model = detnas_onnx::export_retinanet(&space, &arch, &cfg, &weights, &Default::default()).expect("export");
    let bytes = detnas_onnx::graph::encode(&model).expect("encode");
    let detector = Detector::builder().threads(2).all_scores().load_bytes(&bytes, "bench").expect("detector");
    let mut session = bare_session(&bytes);
    let img = image(1280, 720);
    let mut input = vec![0.0f32; 3 * 512 * 512];
    letterbox_into(&img, 512, 512, 0.0, &mut input);
    let mut group = c.benchmark_group("sdk overhead (512x512 separable head, 2 threads)");
    group.sample_size(20).measurement_time(Duration::from_secs(15));
    group.bench_function("bare Session::run", |b| {
        b.iter(|| {
            let x = ndarray::ArrayView4::from_shape((1, 3, 512, 512), &input[..]).expect("shape");
            let out = session
                .run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(x).expect("tensor")])
                .expect("run");
            black_box(out["scores"].try_extract_tensor::<f32>().expect("scores").1.len())
        })
    });
    group.bench_function("Detector::detect (letterbox + run + map back)", |b| {
        b.iter(|| black_box(detector.detect(&img).expect("detect").detections.len()))
    });
    group.finish();
}

/// The shipped model on a folder of 16 JPEGs (1280x720): bare runs of a prepared input
/// against `detect_pipelined` (decode + letterbox ahead of inference, bounded queue) and against
/// `detect_path` one after the other. 2 ONNX Runtime threads throughout.
fn sdk_pipelined(c: &mut Criterion) {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/neon-trees.onnx");
    let dir = tempfile::tempdir().expect("temp dir");
    let paths: Vec<std::path::PathBuf> = (0..16)
        .map(|i| {
            let p = dir.path().join(format!("{i}.jpg"));
            let img = image::RgbImage::from_fn(1280, 720, |x, y| {
                let v = ((x / 7 + y / 5 + i * 13) % 256) as u8;
                image::Rgb([v, v.wrapping_mul(3), 255 - v])
            });
            img.save(&p).expect("jpeg");
            p
        })
        .collect();
    let detector = Detector::builder().threads(2).load(model).expect("detector");
    let calm = Detector::builder().threads(2).spinning(false).load(model).expect("detector");
    let mut session = bare_session(&std::fs::read(model).expect("model"));
    let size = detector.input_size();
    let (w, h) = (size.width as usize, size.height as usize);
    let mut input = vec![0.0f32; 3 * w * h];
    letterbox_into(&image(1280, 720), w as u32, h as u32, 0.0, &mut input);
    let mut group = c.benchmark_group(format!("folder of 16 JPEGs, shipped {size} model, 2 threads"));
    group.sample_size(10).measurement_time(Duration::from_secs(15));
    group.bench_function("bare Session::run x16", |b| {
        b.iter(|| {
            for _ in 0..16 {
                let x = ndarray::ArrayView4::from_shape((1, 3, h, w), &input[..]).expect("shape");
                let out = session
                    .run(detnas_infer::ort::inputs!["images" => TensorRef::from_array_view(x).expect("tensor")])
                    .expect("run");
                black_box(out["scores"].try_extract_tensor::<f32>().expect("scores").1.len());
            }
        })
    });
    group.bench_function("Detector::detect_pipelined (decode ahead)", |b| {
        b.iter(|| {
            let mut n = 0;
            detector.detect_pipelined(&paths, 2, |_, r| r.expect("detect").detections.len(), |k| n += k);
            black_box(n)
        })
    });
    group.bench_function("Detector::detect_pipelined, threads not spinning", |b| {
        b.iter(|| {
            let mut n = 0;
            calm.detect_pipelined(&paths, 2, |_, r| r.expect("detect").detections.len(), |k| n += k);
            black_box(n)
        })
    });
    group.bench_function("Detector::detect_path one by one", |b| {
        b.iter(|| {
            black_box(paths.iter().map(|p| detector.detect_path(p).expect("detect").detections.len()).sum::<usize>())
        })
    });
    group.finish();
}

criterion_group!(benches, preprocess, nms, sdk_overhead, sdk_pipelined);
criterion_main!(benches);

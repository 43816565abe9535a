//! Embedding the detnas SDK: export a DetNAS RetinaNet (random weights, so the boxes are
//! meaningless — point `Detector::from_file` at a trained model instead), then detect objects in an
//! image and print them with per-stage timings.
//!
//! cargo run --example detect [-- IMAGE]

use detnas_core::arch::Preset;
use detnas_core::detector::DetectorConfig;
use detnas_core::plan::{Paths, detector_params};
use detnas_infer::{Detector, DetectorOptions};

fn main() -> anyhow::Result<()> {
    // 1. A model: here exported in memory from the published COCO-RetinaNet-300M architecture.
    let (space, arch) = Preset::by_name("coco-retinanet-300m")?.resolve();
    let cfg = DetectorConfig { class_names: vec!["tree".into()], score_thresh: 0.0, ..DetectorConfig::default() };
    let weights = detnas_onnx::Weights::random(&detector_params(&space, Paths::Single(&arch), &cfg), 0);
    let model = detnas_onnx::export_retinanet(&space, &arch, &cfg, &weights, &Default::default())?;
    let bytes = detnas_onnx::graph::encode(&model)?;

    // 2. The detector: thresholds and limits come from the model's metadata; options tighten them.
    let options = DetectorOptions { max_detections: Some(5), threads: Some(2), ..Default::default() };
    let detector = Detector::from_memory(&bytes, "in-memory model", options)?;

    // 3. Detect: from a file (any format, EXIF orientation applied) or an RgbImage.
    let result = match std::env::args().nth(1) {
        Some(path) => detector.detect_path(std::path::Path::new(&path))?,
        None => detector.detect(&image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 128])))?,
    };
    println!("{}x{} image, {} detections", result.width, result.height, result.detections.len());
    for d in &result.detections {
        println!(
            "  {:<6} {:.3} [{:.1}, {:.1}, {:.1}, {:.1}]",
            d.class_name, d.score, d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]
        );
    }
    let t = result.timings;
    println!(
        "decode {:?}, preprocess {:?}, inference {:?}, postprocess {:?}",
        t.decode, t.preprocess, t.inference, t.postprocess
    );
    Ok(())
}

//! Embedding the detnas SDK: load an exported model, detect objects in images, print them as
//! text and as JSON.
//!
//! cargo run --example detect [-- MODEL [IMAGE...]]
//!
//! Without arguments it runs the shipped tree-crown model on the sample images.

use detnas_infer::Detector;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "models/neon-trees.onnx".into());
    let mut images: Vec<String> = args.collect();
    if images.is_empty() {
        images = vec!["models/samples/neon-yell-1.jpg".into(), "models/samples/neon-yell-2.jpg".into()];
    }

    // Thresholds, input size and class names come from the model; options only tighten them.
    let detector = Detector::builder().confidence(0.3).max_detections(20).threads(2).load(&model)?;
    let runtime = &detector.info().runtime;
    println!(
        "{model}: classes {:?}, input {}, ONNX Runtime {} ({})",
        detector.class_names(),
        detector.input_size(),
        runtime.version,
        runtime.source
    );

    // One call for the whole batch; a bad image is an error of its own and the others go on.
    for (path, result) in images.iter().zip(detector.detect_batch(&images)) {
        match result {
            Ok(found) => {
                println!("{path}: {}x{}, {} objects", found.width, found.height, found.detections.len());
                for d in found.detections.iter().take(3) {
                    let [x, y, w, h] = d.xywh();
                    println!("  {:<6} {:.3} at x={x:.0} y={y:.0} w={w:.0} h={h:.0}", d.class_name, d.score);
                }
                println!("  as JSON: {}", serde_json::to_string(&found.timings)?);
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
    Ok(())
}

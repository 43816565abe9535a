//! What a detection returns: [`Detections`] of one image, each [`Detection`], per-stage
//! [`StageTimings`], and box conversions (xywh, normalised, COCO).
//!
//! All types are `Serialize + Deserialize`. Timings serialise as milliseconds
//! (`"inference_ms": 12.5`), boxes as `[x1, y1, x2, y2]` in original-image pixels.

use crate::image_io::ImageWarning;
use detnas_core::detector::boxes::BBox;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The evaluator's COCO result record ([`detnas_core::coco::Detection`]), under the SDK's name:
/// its `bbox` and `score` are `f64`, which [`Detection::to_coco`] widens exactly from this
/// crate's `f32` values.
pub use detnas_core::coco::Detection as CocoDetection;

/// One detected object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in original-image pixels (after EXIF orientation), `x1 <= x2`, `y1 <= y2`.
    pub bbox: BBox,
    /// Confidence in `[0, 1]`.
    pub score: f32,
    /// Index into the model's class names.
    pub class_id: usize,
    /// The class's name.
    pub class_name: String,
    /// The class's data-set category id (COCO `category_id`; `class_id + 1` unless the model
    /// records others).
    pub category_id: u64,
}

impl Detection {
    /// `[x, y, width, height]` in pixels: the top-left corner and the size (also COCO's `bbox`).
    pub fn xywh(&self) -> [f32; 4] {
        let [x1, y1, x2, y2] = self.bbox;
        [x1, y1, x2 - x1, y2 - y1]
    }

    /// `[cx, cy, width, height]` in pixels: the centre and the size.
    pub fn cxcywh(&self) -> [f32; 4] {
        let [x1, y1, x2, y2] = self.bbox;
        [(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1]
    }

    /// `[x1, y1, x2, y2]` divided by the image's width and height (each in `[0, 1]`).
    pub fn normalized(&self, width: u32, height: u32) -> [f32; 4] {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        let [x1, y1, x2, y2] = self.bbox;
        [x1 / w, y1 / h, x2 / w, y2 / h]
    }

    /// This detection as a COCO result entry of image `image_id`: its [`Detection::xywh`] box and
    /// its score widened (exactly) to `f64`, its category id.
    pub fn to_coco(&self, image_id: i64) -> CocoDetection {
        CocoDetection {
            image_id,
            category_id: self.category_id as i64,
            bbox: self.xywh().map(f64::from),
            score: self.score.into(),
        }
    }
}

/// Wall time of each stage of one detection (serialised in milliseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StageTimings {
    /// Reading and decoding the image (zero for an already decoded image).
    #[serde(rename = "decode_ms", with = "millis")]
    pub decode: Duration,
    /// Letterboxing into the network input.
    #[serde(rename = "preprocess_ms", with = "millis")]
    pub preprocess: Duration,
    /// The ONNX Runtime run, from the moment a session was free.
    #[serde(rename = "inference_ms", with = "millis")]
    pub inference: Duration,
    /// Filtering and mapping the boxes back to the image.
    #[serde(rename = "postprocess_ms", with = "millis")]
    pub postprocess: Duration,
}

impl StageTimings {
    /// The sum of the stages.
    pub fn total(&self) -> Duration {
        self.decode + self.preprocess + self.inference + self.postprocess
    }
}

/// Detections of one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Detections {
    /// Highest score first.
    pub detections: Vec<Detection>,
    /// Image width in pixels (after EXIF orientation).
    pub width: u32,
    /// Image height in pixels (after EXIF orientation).
    pub height: u32,
    /// Time spent in each stage.
    pub timings: StageTimings,
    /// Non-fatal problems of the image (e.g. a truncated JPEG).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ImageWarning>,
}

impl Detections {
    /// Every detection as a COCO result entry of image `image_id`.
    pub fn to_coco(&self, image_id: i64) -> Vec<CocoDetection> {
        self.detections.iter().map(|d| d.to_coco(image_id)).collect()
    }

    /// Every box normalised by this image's size (see [`Detection::normalized`]).
    pub fn normalized_boxes(&self) -> Vec<[f32; 4]> {
        self.detections.iter().map(|d| d.normalized(self.width, self.height)).collect()
    }
}

/// `Duration` as fractional milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Detections {
        let d = Detection {
            bbox: [10.0, 20.0, 50.0, 100.0],
            score: 0.75,
            class_id: 0,
            class_name: "tree".into(),
            category_id: 1,
        };
        let timings = StageTimings { inference: Duration::from_micros(12_500), ..Default::default() };
        Detections { detections: vec![d], width: 200, height: 400, timings, warnings: vec![] }
    }

    #[test]
    fn box_forms() {
        let r = sample();
        let d = &r.detections[0];
        assert_eq!(d.xywh(), [10.0, 20.0, 40.0, 80.0]);
        assert_eq!(d.cxcywh(), [30.0, 60.0, 40.0, 80.0]);
        assert_eq!(r.normalized_boxes(), vec![[0.05, 0.05, 0.25, 0.25]]);
        let coco = serde_json::to_value(r.to_coco(7)).unwrap();
        assert_eq!(
            coco,
            serde_json::json!([{"image_id": 7, "category_id": 1, "bbox": [10.0, 20.0, 40.0, 80.0], "score": 0.75}])
        );
    }

    #[test]
    fn json_round_trip_in_milliseconds() {
        let r = sample();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["timings"]["inference_ms"], 12.5);
        assert!(json.get("warnings").is_none(), "no warnings, no field");
        let back: Detections = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}

//! The serialised form of [`DetectorConfig`]: flat, with `kind` choosing the family.
//!
//! RetinaNet's settings are flat beside the common fields (the form of every model exported so
//! far); Faster R-CNN's are the `rpn` and `roi_heads` tables. A missing field takes the family's
//! default; an unknown field, or a field of the other family, is an error naming it.

use super::config::{DetectorConfig, HeadConv, Preprocess};
use super::heads::{DetectorHead, DetectorKind, RetinanetSettings, RoiHeadSettings, RpnSettings};
use crate::space::ChannelShuffle;
use crate::space::shape::InputSize;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize)]
struct Flat<'a> {
    kind: DetectorKind,
    class_names: &'a [String],
    category_ids: &'a [u64],
    input: InputSize,
    fpn_channels: u64,
    head_convs: usize,
    head_channels: u64,
    head_conv: HeadConv,
    #[serde(flatten)]
    head: HeadRef<'a>,
    score_thresh: f32,
    nms_thresh: f32,
    detections_per_img: usize,
    shuffle: ChannelShuffle,
    preprocess: &'a Preprocess,
    bn_eps: f32,
}

#[derive(Serialize)]
#[serde(untagged)]
enum HeadRef<'a> {
    Retinanet(&'a RetinanetSettings),
    FasterRcnn { rpn: &'a RpnSettings, roi_heads: &'a RoiHeadSettings },
}

impl Serialize for DetectorConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let head = match &self.head {
            DetectorHead::Retinanet(r) => HeadRef::Retinanet(r),
            DetectorHead::FasterRcnn(f) => HeadRef::FasterRcnn { rpn: &f.rpn, roi_heads: &f.roi_heads },
        };
        Flat {
            kind: self.kind(),
            class_names: &self.class_names,
            category_ids: &self.category_ids,
            input: self.input,
            fpn_channels: self.fpn_channels,
            head_convs: self.head_convs,
            head_channels: self.head_channels,
            head_conv: self.head_conv,
            head,
            score_thresh: self.score_thresh,
            nms_thresh: self.nms_thresh,
            detections_per_img: self.detections_per_img,
            shuffle: self.shuffle,
            preprocess: &self.preprocess,
            bn_eps: self.bn_eps,
        }
        .serialize(s)
    }
}

/// Every field any family has, each optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    kind: Option<DetectorKind>,
    class_names: Option<Vec<String>>,
    category_ids: Option<Vec<u64>>,
    input: Option<InputSize>,
    fpn_channels: Option<u64>,
    head_convs: Option<usize>,
    head_channels: Option<u64>,
    head_conv: Option<HeadConv>,
    score_thresh: Option<f32>,
    nms_thresh: Option<f32>,
    detections_per_img: Option<usize>,
    shuffle: Option<ChannelShuffle>,
    preprocess: Option<Preprocess>,
    bn_eps: Option<f32>,
    // RetinaNet
    anchor_sizes: Option<Vec<f32>>,
    scales_per_octave: Option<usize>,
    aspect_ratios: Option<Vec<f32>>,
    topk_candidates: Option<usize>,
    fg_iou_thresh: Option<f32>,
    bg_iou_thresh: Option<f32>,
    // Faster R-CNN
    rpn: Option<RpnSettings>,
    roi_heads: Option<RoiHeadSettings>,
}

impl<'de> Deserialize<'de> for DetectorConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d)?;
        let kind = raw.kind.unwrap_or_default();
        let mut cfg = DetectorConfig::new(kind);
        let foreign = |field: &str, family: DetectorKind| {
            serde::de::Error::custom(format!("`{field}` is a {family} setting, but `kind` is {kind}"))
        };
        match &mut cfg.head {
            DetectorHead::Retinanet(r) => {
                if raw.rpn.is_some() {
                    return Err(foreign("rpn", DetectorKind::FasterRcnn));
                }
                if raw.roi_heads.is_some() {
                    return Err(foreign("roi_heads", DetectorKind::FasterRcnn));
                }
                set(&mut r.anchor_sizes, raw.anchor_sizes);
                set(&mut r.scales_per_octave, raw.scales_per_octave);
                set(&mut r.aspect_ratios, raw.aspect_ratios);
                set(&mut r.topk_candidates, raw.topk_candidates);
                set(&mut r.fg_iou_thresh, raw.fg_iou_thresh);
                set(&mut r.bg_iou_thresh, raw.bg_iou_thresh);
            }
            DetectorHead::FasterRcnn(f) => {
                let retinanet_fields = [
                    ("anchor_sizes", raw.anchor_sizes.is_some()),
                    ("scales_per_octave", raw.scales_per_octave.is_some()),
                    ("aspect_ratios", raw.aspect_ratios.is_some()),
                    ("topk_candidates", raw.topk_candidates.is_some()),
                    ("fg_iou_thresh", raw.fg_iou_thresh.is_some()),
                    ("bg_iou_thresh", raw.bg_iou_thresh.is_some()),
                ];
                if let Some((field, _)) = retinanet_fields.iter().find(|(_, given)| *given) {
                    let hint = if *field == "topk_candidates" { "" } else { " (the RPN's are in `rpn`)" };
                    return Err(serde::de::Error::custom(format!(
                        "`{field}` is a retinanet setting, but `kind` is {kind}{hint}"
                    )));
                }
                set(&mut f.rpn, raw.rpn);
                set(&mut f.roi_heads, raw.roi_heads);
            }
        }
        set(&mut cfg.class_names, raw.class_names);
        set(&mut cfg.category_ids, raw.category_ids);
        set(&mut cfg.input, raw.input);
        set(&mut cfg.fpn_channels, raw.fpn_channels);
        set(&mut cfg.head_convs, raw.head_convs);
        set(&mut cfg.head_channels, raw.head_channels);
        set(&mut cfg.head_conv, raw.head_conv);
        set(&mut cfg.score_thresh, raw.score_thresh);
        set(&mut cfg.nms_thresh, raw.nms_thresh);
        set(&mut cfg.detections_per_img, raw.detections_per_img);
        set(&mut cfg.shuffle, raw.shuffle);
        set(&mut cfg.preprocess, raw.preprocess);
        set(&mut cfg.bn_eps, raw.bn_eps);
        Ok(cfg)
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retinanet_json_is_flat_and_round_trips() {
        let cfg = DetectorConfig { class_names: vec!["tree".into()], ..Default::default() };
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["kind"], "retinanet");
        assert_eq!(json["anchor_sizes"], serde_json::json!([32.0, 64.0, 128.0, 256.0, 512.0]));
        assert!(json.get("rpn").is_none());
        assert_eq!(serde_json::from_value::<DetectorConfig>(json).unwrap(), cfg);
    }

    #[test]
    fn missing_kind_and_fields_take_retinanet_defaults() {
        let cfg: DetectorConfig =
            serde_json::from_str(r#"{"class_names": ["a", "b"], "topk_candidates": 50}"#).unwrap();
        assert_eq!(cfg.kind(), DetectorKind::Retinanet);
        assert_eq!(cfg.retinanet().unwrap().topk_candidates, 50);
        assert_eq!(cfg.head_convs, 4);
    }

    #[test]
    fn faster_rcnn_has_its_tables_and_refuses_retinanet_fields() {
        let cfg: DetectorConfig =
            serde_json::from_str(r#"{"kind": "faster-rcnn", "rpn": {"post_nms_top_n_test": 300}}"#).unwrap();
        let f = cfg.faster_rcnn().unwrap();
        assert_eq!((f.rpn.post_nms_top_n_test, f.rpn.pre_nms_top_n_test), (300, 1000));
        assert_eq!(f.roi_heads.representation_size, 1024);
        assert_eq!(cfg.head_convs, 0, "torchvision's two fully connected layers by default");
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["kind"], "faster-rcnn");
        assert!(json.get("anchor_sizes").is_none() && json["rpn"]["anchor_sizes"].is_array());
        assert_eq!(serde_json::from_value::<DetectorConfig>(json).unwrap(), cfg);

        let e = serde_json::from_str::<DetectorConfig>(r#"{"kind": "faster-rcnn", "anchor_sizes": [1, 2, 3, 4, 5]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`anchor_sizes` is a retinanet setting") && e.contains("`rpn`"), "{e}");
        let e = serde_json::from_str::<DetectorConfig>(r#"{"rpn": {}}"#).unwrap_err().to_string();
        assert!(e.contains("`rpn` is a faster-rcnn setting, but `kind` is retinanet"), "{e}");
        let e = serde_json::from_str::<DetectorConfig>(r#"{"kind": "faster-rcnn", "rpn": {"nms": 0.7}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `nms`"), "{e}");
        let e = serde_json::from_str::<DetectorConfig>(r#"{"kind": "yolo"}"#).unwrap_err().to_string();
        assert!(e.contains("yolo"), "{e}");
    }

    #[test]
    fn toml_tables_work_for_both_families() {
        let cfg: DetectorConfig = toml_like(
            r#"{"kind": "faster-rcnn", "input": {"height": 320, "width": 320}, "roi_heads": {"sampling_ratio": 0}}"#,
        );
        assert_eq!(cfg.faster_rcnn().unwrap().roi_heads.sampling_ratio, 0);
    }

    fn toml_like(json: &str) -> DetectorConfig {
        serde_json::from_str(json).unwrap()
    }
}

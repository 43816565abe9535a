//! `detnas arch` and `detnas tour` end to end.

use crate::util::{assert_one_line_failure, assert_usage_error, detnas, stderr, stdout};
use detnas_core::InputSize;
use serde_json::Value;

fn info_json(args: &[&str]) -> Value {
    let mut full = vec!["arch", "info", "--json"];
    full.extend_from_slice(args);
    let out = detnas(&full);
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("valid JSON")
}

#[test]
fn info_json_has_exact_integer_costs() {
    let v = info_json(&["--space", "detnas-300m", "--arch", "coco-fpn-300m"]);
    for key in ["backbone_flops", "classifier_flops", "backbone_params", "classifier_params"] {
        assert!(v[key].is_u64(), "{key} is not an integer: {}", v[key]);
    }
    assert!(v["backbone_flops"].as_u64().unwrap() <= 300_000_000);
    assert_eq!((v["classifier_params"].as_u64().unwrap() as f64 / 1e5).round() / 10.0, 3.5);
    assert_eq!(v["stages"].as_array().unwrap().len(), 4);
    assert_eq!(v["layers"].as_array().unwrap().len(), 20);
}

#[test]
fn compact_and_comma_forms_agree_and_input_size_matters() {
    let comma = info_json(&["--arch", "2,1,2,0,2,1,1,2,3,3,1,3,0,0,3,1,3,1,3,2"]);
    let compact = info_json(&["--space", "detnas-300m", "--arch", "21202112331300313132"]);
    assert_eq!(comma["backbone_flops"], compact["backbone_flops"]);
    let wide = info_json(&["--arch", "coco-fpn-300m", "--input", "800x1216"]);
    let c5 = &wide["stages"][3];
    assert_eq!((c5["height"].as_u64(), c5["width"].as_u64()), (Some(25), Some(38)));
    assert!(wide["backbone_flops"].as_u64() > comma["backbone_flops"].as_u64());
}

#[test]
fn bad_info_inputs_fail_with_one_line() {
    let o = detnas(&["arch", "info", "--space", "detnas-9g", "--arch", "0123"]);
    assert_one_line_failure(&o, &["unknown search space", "detnas-9g"]);
    let o = detnas(&["arch", "info", "--space", "detnas-300m", "--arch", "2,1,2"]);
    assert_one_line_failure(&o, &["3 choices", "20 layers"]);
    let o = detnas(&["arch", "info", "--space", "detnas-300m", "--arch", "2,1,7,0"]);
    assert_one_line_failure(&o, &["`7`"]);
    let o = detnas(&["arch", "info", "--space", "detnas-300m", "--arch", ""]);
    assert_one_line_failure(&o, &["empty architecture"]);
    let o = detnas(&["arch", "info", "--arch", "coco-fpn-300m", "--input", "0x10"]);
    assert_usage_error(&o, &["--input", "input size", "0x10"]);
}

#[test]
fn sample_respects_the_budget_and_the_seed() {
    let run = |seed: &str| {
        let o = detnas(&[
            "arch",
            "sample",
            "--space",
            "detnas-300m",
            "--flops-max",
            "290M",
            "--count",
            "5",
            "--seed",
            seed,
            "--json",
        ]);
        assert!(o.status.success(), "{}", crate::util::stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()
    };
    let a = run("4");
    assert_eq!(a.as_array().unwrap().len(), 5);
    for item in a.as_array().unwrap() {
        assert!(item["backbone_flops"].as_u64().unwrap() <= 290_000_000);
    }
    assert_eq!(a, run("4"));
    assert_ne!(a, run("5"));
    let o = detnas(&["arch", "sample", "--flops-max", "1.3x"]);
    assert_usage_error(&o, &["--flops-max", "1.3x"]);
    let o = detnas(&["arch", "sample", "--flops-max", "100M"]);
    assert_one_line_failure(&o, &["no architecture of detnas-300m fits under 100.0M FLOPs: the smallest needs"]);
}

#[test]
fn impossible_budget_names_the_space_minimum_in_words() {
    let table =
        detnas_core::space::cost::FlopsTable::new(&detnas_core::SearchSpace::detnas_300m(), InputSize::IMAGENET);
    let (lo, hi) = table.unwrap().range(detnas_core::Convention::Backbone);
    let smallest = detnas_core::size::format_count(lo);
    for sampler in ["uniform", "binned"] {
        let o = detnas(&["arch", "sample", "--space", "detnas-300m", "--flops-max", "1M", "--sampler", sampler]);
        let want =
            format!("error: no architecture of detnas-300m fits under 1.00M FLOPs: the smallest needs {smallest}");
        assert_eq!(crate::util::stderr(&o).trim_end(), want);
        assert_eq!(o.status.code(), Some(1));
    }
    let o = detnas(&["arch", "sample", "--flops-min", "10G"]);
    let largest = detnas_core::size::format_count(hi);
    assert_one_line_failure(&o, &["no architecture of detnas-300m reaches 10.00G FLOPs", &largest]);
}

#[test]
fn list_and_tour_run() {
    let o = detnas(&["arch", "list", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let presets: Vec<&str> = v["presets"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for p in ["coco-fpn-300m", "coco-retinanet-300m", "coco-fpn-1.3g", "coco-fpn-3.8g", "spos-300m"] {
        assert!(presets.contains(&p), "{p}");
    }
    let o = detnas(&["tour"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("coco-retinanet-300m"));
}

#[test]
fn arch_info_reports_a_genomes_detector_by_part() {
    let o =
        detnas(&["arch", "info", "--arch", "coco-retinanet-300m:320:sep:head96x3:fpn96", "--classes", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let d = &v["detector"];
    assert_eq!(d["genome"], "23113213311133203333:fpn96:head96x3:sep:320x320");
    assert_eq!(v["input"]["height"], 320, "the genome's resolution is the report's");
    let part = |k: &str, p: &str| d[k][p].as_u64().unwrap();
    assert_eq!(part("flops", "backbone"), v["backbone_flops"].as_u64().unwrap());
    assert_eq!(part("params", "backbone"), v["backbone_params"].as_u64().unwrap());
    for k in ["flops", "params"] {
        assert_eq!(part(k, "total"), part(k, "backbone") + part(k, "fpn") + part(k, "head"), "{k}");
    }
    // a wider dense head costs more than the separable one, at the same backbone
    let o = detnas(&["arch", "info", "--arch", "coco-retinanet-300m:320:dense:head96x3:fpn96", "--json"]);
    let dense: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(dense["detector"]["flops"]["head"].as_u64().unwrap() > part("flops", "head"));
    // backbone-only strings keep today's report
    let o = detnas(&["arch", "info", "--arch", "coco-fpn-300m", "--json"]);
    let plain: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(plain.get("detector").is_none());
    assert_one_line_failure(
        &detnas(&["arch", "info", "--arch", "coco-fpn-300m:320", "--input", "224"]),
        &["--input and the genome's resolution"],
    );
    assert_usage_error(&detnas(&["arch", "info", "--arch", "coco-fpn-300m:wide"]), &["--arch", "unknown gene `wide`"]);
}

#[test]
fn faster_rcnn_report_splits_the_head_into_rpn_and_roi_head() {
    let v =
        info_json(&["--arch", "coco-fpn-300m", "--detector", "faster-rcnn", "--input", "512x512", "--classes", "2"]);
    let d = &v["detector"];
    assert_eq!(d["detector"], "faster-rcnn");
    let f = |k: &str| d["flops"][k].as_u64().unwrap();
    assert_eq!(f("total"), f("backbone") + f("fpn") + f("rpn") + f("roi_head"));
    assert_eq!(f("head"), f("rpn") + f("roi_head"));
    // 1000 proposals through fc6 (256*7*7 -> 1024), fc7, and the predictors of 3 classes
    assert_eq!(f("roi_head"), 1000 * (256 * 49 * 1024 + 1024 * 1024 + 1024 * 3 + 1024 * 12));
    let p = |k: &str| d["params"][k].as_u64().unwrap();
    assert_eq!(p("head"), p("rpn") + p("roi_head"));
    assert_eq!(p("total"), p("backbone") + p("fpn") + p("head"));
    // RetinaNet keeps one head
    let r = info_json(&["--arch", "coco-retinanet-300m", "--detector", "retinanet", "--input", "512x512"]);
    assert_eq!(r["detector"]["flops"]["rpn"], 0);
    assert!(r["detector"]["params"].get("rpn").is_none());
}

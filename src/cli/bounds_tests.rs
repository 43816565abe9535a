//! Every numeric flag of every command refuses out-of-range and non-finite numbers at parse time
//! (clap: exit 2, one line naming the flag), found by walking the whole `Cli` tree.
//!
//! A flag is numeric when its value parser yields a number, or when it is listed in
//! [`TEXT_NUMBERS`] (text that carries numbers: genomes, sizes, FLOPs); every other flag taking a
//! value must be a path, have possible values, or be listed in [`NOT_NUMERIC`], so a new flag is
//! classified before it ships.

use super::Cli;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use std::any::TypeId;

/// Values every numeric flag is fed; `--flag=VALUE`, so that `-1` reaches the value parser.
const BAD: [&str; 6] = ["0", "-1", "nan", "inf", "4294967296", "18446744073709551615"];

/// Genomes with a gene far over its maximum, fed to genome flags besides [`BAD`].
const HUGE_GENES: [&str; 4] = [
    "coco-fpn-300m:fpn100000",
    "coco-fpn-300m:head16x1000000000",
    "coco-fpn-300m:head4294967296x2",
    "coco-fpn-300m:99999999999999999999x320",
];

/// String flags that carry numbers (ids).
const TEXT_NUMBERS: [&str; 10] =
    ["ablate", "arch", "input", "flops_max", "flops_min", "flops_input", "size", "objects", "sizes", "budget"];

/// Genome flags among [`TEXT_NUMBERS`]: their genes are checked at parse time ([`HUGE_GENES`]);
/// a bare number is a backbone encoding, checked against the search space when the command runs
/// (exit 1, one line: `tests/cli_bounds.rs`).
const GENOME_FLAGS: [&str; 1] = ["arch"];

/// Flags taking a value that is not a number (ids): names, devices, paths and globs given as text,
/// test-time augmentation modes, addresses and tokens of a latency server.
const NOT_NUMERIC: [&str; 11] =
    ["space", "device", "classes", "metric", "calibrate", "inputs", "tta", "remote", "remote_token", "addr", "token"];

/// Numeric flags for which 0 is in range (ids): a count of none, a seed, a budget of none.
const ZERO_IN_RANGE: [&str; 15] = [
    "seed",
    "calibration_seed",
    "warmup",
    "calibration",
    "mutations",
    "crossovers",
    "float_layers",
    "sensitivity_images",
    "recalibrate",
    "head_convs",
    "distractors",
    "occlusion",
    "flops_max",
    "flops_min",
    "min_seconds",
];

/// Flags taking any `u64` (ids): seeds, and FLOPs budgets (2^64 - 1 FLOPs is no budget at all).
const ANY_U64: [&str; 4] = ["seed", "calibration_seed", "flops_max", "flops_min"];

/// Flags taking any fraction in [0, 1] (ids), for which `0` is in range.
const FRACTIONS: [&str; 6] = ["conf", "iou", "overlap", "match_iou", "min_score", "mutation_prob"];

/// Arguments that make a command line of `command` valid, before the flag under test.
fn base(command: &str, flag: &str) -> Vec<&'static str> {
    match (command, flag) {
        ("arch info", _) => vec!["--arch", "coco-fpn-300m"],
        ("data synthetic", _) => vec!["--out", "o"],
        ("bench", _) => vec!["--arch", "coco-fpn-300m"],
        ("latency build", _) => vec!["--out", "t.json"],
        ("latency predict", _) => vec!["--lut", "t.json", "--arch", "coco-fpn-300m"],
        ("latency check", _) => vec!["--lut", "t.json"],
        ("latency adapt", _) => vec!["--lut", "t.json", "--out", "a.json"],
        ("export", "rank") => vec!["--search", "s", "--out", "m.onnx"],
        ("export", _) => vec!["--arch", "coco-fpn-300m", "--out", "m.onnx"],
        ("quantize", _) => vec!["m.onnx"],
        ("eval", "threads") => vec!["--gt", "g.json", "--model", "m.onnx"],
        ("eval", "min_score") => vec!["--gt", "g.json", "--dt", "d.json", "--match-iou", "0.5"],
        ("eval", _) => vec!["--gt", "g.json", "--dt", "d.json"],
        ("detect", "overlap") => vec!["m.onnx", "a.png", "--out", "o", "--tile", "64"],
        ("detect", _) => vec!["m.onnx", "a.png", "--out", "o"],
        ("train eval", _) => vec!["--checkpoint", "c"],
        ("train bench-step", _) => vec!["--config", "c.toml"],
        ("train retinanet" | "train faster-rcnn" | "train det-supernet" | "train cls-supernet", _) => {
            vec!["--out", "o"]
        }
        ("search", "latency_max") => vec!["--checkpoint", "c", "--lut", "t.json"],
        ("search", _) => vec!["--checkpoint", "c"],
        _ => Vec::new(),
    }
}

/// A value in range: the flag's default, else one by id.
fn good(flag: &Flag) -> &str {
    if let Some(d) = &flag.default {
        return d;
    }
    match flag.id.as_str() {
        "arch" => "coco-fpn-300m",
        "ablate" => "fair:800",
        "input" | "inputs" => "64",
        "tile" => "64",
        "genomes" => "12",
        "supernet_iterations" | "retrain_iterations" => "100",
        "flops_max" | "flops_min" => "300M",
        "latency_max" | "budget" => "20ms",
        "conf" | "iou" | "overlap" | "match_iou" => "0.5",
        "seconds" => "1",
        _ => "1",
    }
}

const NUMBER_TYPES: [fn() -> TypeId; 10] = [
    TypeId::of::<u8>,
    TypeId::of::<u16>,
    TypeId::of::<u32>,
    TypeId::of::<u64>,
    TypeId::of::<usize>,
    TypeId::of::<i32>,
    TypeId::of::<i64>,
    TypeId::of::<f32>,
    TypeId::of::<f64>,
    TypeId::of::<u128>,
];

/// One flag that takes a value, with the command it belongs to.
struct Flag {
    command: String,
    id: String,
    long: String,
    default: Option<String>,
}

/// The value-taking flags of every command: `(numeric, rest)`; `unclassified` gathers string flags
/// neither list names.
fn flags(cmd: &clap::Command, path: &str, numeric: &mut Vec<Flag>, unclassified: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if !arg.get_action().takes_values() || ["help", "version"].contains(&id) {
            continue;
        }
        let ty = arg.get_value_parser().type_id();
        let is_number = NUMBER_TYPES.iter().any(|t| ty == t());
        let text_number = ty == TypeId::of::<String>() && TEXT_NUMBERS.contains(&id);
        if is_number || text_number {
            let long = arg.get_long().map(str::to_string).unwrap_or_default();
            assert!(!long.is_empty(), "{path}: numeric positional argument {id} is not walked");
            let default = arg.get_default_values().first().map(|d| d.to_string_lossy().into_owned());
            numeric.push(Flag { command: path.to_string(), id: id.to_string(), long, default });
            continue;
        }
        let path_like = ty == TypeId::of::<std::path::PathBuf>();
        let enumerated = !arg.get_possible_values().is_empty();
        if !path_like && !enumerated && !NOT_NUMERIC.contains(&id) {
            unclassified.push(format!("{path}: {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        let sub_path = if path.is_empty() { sub.get_name().to_string() } else { format!("{path} {}", sub.get_name()) };
        flags(sub, &sub_path, numeric, unclassified);
    }
}

fn argv(flag: &Flag, value: &str) -> Vec<String> {
    let mut v = vec!["detnas".to_string()];
    v.extend(flag.command.split(' ').map(str::to_string));
    let base = base(&flag.command, &flag.id);
    let mut i = 0;
    while i < base.len() {
        // the flag under test replaces its own value in the base line
        if base[i] == format!("--{}", flag.long) {
            i += 2;
            continue;
        }
        v.push(base[i].to_string());
        i += 1;
    }
    v.push(format!("--{}={value}", flag.long));
    v
}

/// Whether `value` is in range for `flag` by the stated lists (any other accepted value fails).
fn in_range(flag: &Flag, value: &str) -> bool {
    let id = flag.id.as_str();
    if GENOME_FLAGS.contains(&id) {
        return !value.contains(':');
    }
    match value {
        "0" => ZERO_IN_RANGE.contains(&id) || FRACTIONS.contains(&id),
        "4294967296" | "18446744073709551615" => ANY_U64.contains(&id),
        _ => false,
    }
}

#[test]
fn every_numeric_flag_refuses_out_of_range_values_at_parse_time() {
    let (mut numeric, mut unclassified) = (Vec::new(), Vec::new());
    flags(&Cli::command(), "", &mut numeric, &mut unclassified);
    assert!(unclassified.is_empty(), "string flags neither numeric nor listed in NOT_NUMERIC: {unclassified:#?}");
    assert!(numeric.len() > 60, "only {} numeric flags found", numeric.len());
    let mut problems = Vec::new();
    for flag in &numeric {
        let good = argv(flag, good(flag));
        if let Err(e) = Cli::try_parse_from(&good) {
            problems.push(format!("{good:?} should parse (fix base()/good()): {}", e.render()));
            continue;
        }
        let mut values: Vec<&str> = BAD.to_vec();
        if GENOME_FLAGS.contains(&flag.id.as_str()) {
            values.extend(HUGE_GENES);
        }
        for value in values {
            let line = argv(flag, value);
            match Cli::try_parse_from(&line) {
                Ok(_) if in_range(flag, value) => {}
                Ok(_) => problems.push(format!("{line:?} was accepted")),
                Err(e) => {
                    let text = e.render().to_string();
                    let message = text.split("\n\n").next().unwrap_or_default();
                    let named = message.contains(&format!("--{}", flag.long));
                    let kind = matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue);
                    if !kind || e.exit_code() != 2 || !named || message.lines().count() != 1 {
                        problems.push(format!("{line:?}: {:?}, exit {}: {text}", e.kind(), e.exit_code()));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn seeds_take_every_u64_and_nothing_else() {
    let line = |v: &str| ["detnas", "arch", "sample", "--seed", v].map(str::to_string).to_vec();
    for v in ["0", "4294967296", "18446744073709551615"] {
        Cli::try_parse_from(line(v)).unwrap();
    }
    for v in ["-1", "18446744073709551616", "nan", "1e3"] {
        assert_eq!(Cli::try_parse_from(line(v)).unwrap_err().exit_code(), 2, "{v}");
    }
}

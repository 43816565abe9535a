//! Value parsers for command-line numbers: non-finite and out-of-range values are refused by clap
//! with a message naming the flag, before any work starts.
//!
//! Every number of every flag goes through one of these: counts, sizes and widths with stated
//! maxima (genes, classes and genome counts from [`detnas_core::limits`], synthetic-set bounds from
//! [`detnas_data::synthetic`]), threads capped at the machine's cores. Seeds take any `u64`.

use clap::builder::TypedValueParser;
use detnas_core::InputSize;
use detnas_core::detector::INPUT_DIVISOR;
use detnas_core::limits;
use detnas_core::search::genome::GeneOverrides;
use detnas_core::size::parse_count;
use detnas_data::image_io::DecodeLimits;
use detnas_data::synthetic;
use detnas_onnx::export::MAX_BATCH;
use std::ffi::OsStr;

/// A finite number in `[0, 1]` (scores, IoU thresholds).
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `detect --conf`
pub fn fraction(s: &str) -> Result<f32, String> {
    probability(s).map(|v| v as f32)
}

/// A finite probability in `[0, 1]`.
pub fn probability(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(format!("`{s}` is out of range: expected a number from 0 to 1"));
    }
    Ok(v)
}

/// Longest `--seconds` accepted (a day).
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `bench --seconds`
pub const MAX_SECONDS: f64 = 86_400.0;

/// A finite duration in seconds, more than 0 and at most [`MAX_SECONDS`].
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > MAX_SECONDS {
        return Err(format!("`{s}` is out of range: expected more than 0 and at most {MAX_SECONDS} seconds"));
    }
    Ok(v)
}

/// Longest `--min-seconds` of a latency measurement (an hour): a table holds hundreds of them.
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `latency build/check --min-seconds`
pub const MAX_MIN_SECONDS: f64 = 3600.0;

/// A finite duration in seconds from 0 to [`MAX_MIN_SECONDS`].
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub fn min_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=MAX_MIN_SECONDS).contains(&v) {
        return Err(format!("`{s}` is out of range: expected 0 to {MAX_MIN_SECONDS} seconds"));
    }
    Ok(v)
}

/// Repetitions of a latency measurement: 1 to [`MAX_REPETITIONS`](detnas_infer::latency::protocol::MAX_REPETITIONS).
#[cfg(feature = "infer")]
pub fn repetitions(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, detnas_infer::latency::protocol::MAX_REPETITIONS)
}

/// Genomes a `latency adapt` measures: 3 (the fewest a correction fits on) to 10000.
#[cfg(feature = "infer")]
pub fn adapt_samples(s: &str) -> Result<usize, String> {
    whole_usize(s, detnas_infer::latency::adapt::MIN_ADAPT_SAMPLES, 10_000)
}

/// The largest model a latency server accepts, in MiB: 1 to 4096.
#[cfg(feature = "infer")]
pub fn model_mib(s: &str) -> Result<u64, String> {
    whole(s, 1, detnas_infer::latency::serve::MAX_MODEL_BYTES >> 20)
}

/// A drift tolerance in percent: finite, more than 0 and at most 10000.
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| format!("`{s}` is not a percentage"))?;
    if !v.is_finite() || v <= 0.0 || v > 10_000.0 {
        return Err(format!("`{s}` is out of range: expected more than 0 and at most 10000 percent"));
    }
    Ok(v)
}

/// `s` as a whole number from `min` to `max`. Negative, fractional, non-finite and over-long
/// numbers are refused with the range, never wrapped or saturated.
fn whole(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.strip_prefix('+').unwrap_or(t);
    let value =
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) { digits.parse().ok() } else { None };
    match value {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a whole number from {min} to {max}")),
    }
}

/// [`whole`] as a `usize`.
fn whole_usize(s: &str, min: usize, max: usize) -> Result<usize, String> {
    whole(s, min as u64, max as u64).map(|v| v as usize)
}

/// Most threads or workers a flag takes before the cap at [`cores`]: a `u32`, what every runtime's
/// thread setting holds (a larger number is refused, never wrapped).
#[cfg_attr(not(any(feature = "train", feature = "infer")), allow(dead_code))]
const MAX_THREADS: usize = limits::MAX_THREADS;

/// Threads (or workers) of a flag: a whole number from 1 to [`MAX_THREADS`], capped at this
/// machine's [`cores`] with one warning line naming the flag when the user gave it (more threads
/// than cores only contend: 1000 threads took 94 s for 2 images).
#[cfg_attr(not(any(feature = "train", feature = "infer")), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub struct Threads;

impl TypedValueParser for Threads {
    type Value = usize;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<usize, clap::Error> {
        let threads = |s: &str| whole_usize(s, 1, MAX_THREADS);
        let n = threads.parse_ref(cmd, arg, value)?;
        let cores = cores();
        // A default the user never typed is capped silently (2 workers on a 1-core machine).
        let default = arg.is_some_and(|a| a.get_default_values().iter().any(|d| d.as_os_str() == value));
        if n > cores && !default {
            let flag = arg.and_then(clap::Arg::get_long).map_or_else(|| "threads".to_string(), |l| format!("--{l}"));
            eprintln!("warning: {flag} {n} is more than the {cores} core(s) of this machine: using {cores}");
        }
        Ok(n.min(cores))
    }
}

/// Classes of a detector: 1 to [`limits::MAX_CLASSES`].
pub fn classes(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, limits::MAX_CLASSES)
}

/// Genomes drawn, measured or held at once (samples, a population, a rank among finalists): 1 to
/// [`limits::MAX_GENOMES`].
pub fn genomes(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, limits::MAX_GENOMES)
}

/// As [`genomes`], 0 allowed (none).
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `search`, `latency build`
pub fn genomes_or_none(s: &str) -> Result<usize, String> {
    whole_usize(s, 0, limits::MAX_GENOMES)
}

/// Most generations of a search: 500 times DetNAS's 20.
#[cfg_attr(not(feature = "search"), allow(dead_code))]
pub const MAX_GENERATIONS: usize = 10_000;

/// Generations of a search: 1 to [`MAX_GENERATIONS`].
#[cfg_attr(not(feature = "search"), allow(dead_code))]
pub fn generations(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, MAX_GENERATIONS)
}

/// Most timed runs or optimisation steps: ten million, a month of training at a step of 0.25 s.
#[cfg_attr(not(any(feature = "train", feature = "infer")), allow(dead_code))]
pub const MAX_ITERATIONS: usize = 10_000_000;

/// Timed runs or optimisation steps: 1 to [`MAX_ITERATIONS`].
#[cfg_attr(not(any(feature = "train", feature = "infer")), allow(dead_code))]
pub fn iterations(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, MAX_ITERATIONS)
}

/// Untimed runs before timing: 0 to [`MAX_ITERATIONS`].
#[cfg_attr(not(any(feature = "train", feature = "infer")), allow(dead_code))]
pub fn warmup(s: &str) -> Result<usize, String> {
    whole_usize(s, 0, MAX_ITERATIONS)
}

/// Most BN recalibration batches: 50 times the default 20; a search holds them all in memory
/// (see [`limits::image_batches_bytes`]).
#[cfg_attr(not(feature = "train"), allow(dead_code))]
pub const MAX_RECAL_BATCHES: usize = 1_000;

/// BN recalibration batches: 1 to [`MAX_RECAL_BATCHES`].
#[cfg_attr(not(feature = "search"), allow(dead_code))]
pub fn recal_batches(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, MAX_RECAL_BATCHES)
}

/// As [`recal_batches`], 0 allowed (no recalibration).
#[cfg_attr(not(feature = "train"), allow(dead_code))]
pub fn recal_batches_or_none(s: &str) -> Result<usize, String> {
    whole_usize(s, 0, MAX_RECAL_BATCHES)
}

/// Images per batch (training, an exported model's batch): 1 to [`MAX_BATCH`], the export's limit.
pub fn batch_size(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, MAX_BATCH)
}

/// Images of a set or a calibration: 1 to [`synthetic::MAX_IMAGES`].
pub fn images(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, synthetic::MAX_IMAGES)
}

/// As [`images`], 0 allowed (a pass skipped).
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub fn images_or_none(s: &str) -> Result<usize, String> {
    whole_usize(s, 0, synthetic::MAX_IMAGES)
}

/// Most convolutions a flag may name (kept in float): more than any detector of these spaces has.
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
const MAX_LAYERS: usize = 10_000;

/// A number of convolutions: 0 to [`MAX_LAYERS`].
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub fn layers(s: &str) -> Result<usize, String> {
    whole_usize(s, 0, MAX_LAYERS)
}

/// Most detections kept per image: a hundred times torchvision's 1000 candidates per level.
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
const MAX_DETECTIONS: usize = limits::MAX_DETECTIONS;

/// Detections kept per image: 1 to [`MAX_DETECTIONS`].
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub fn detections(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, MAX_DETECTIONS)
}

/// Smallest detection window (`detect --tile`): the tiler's own minimum.
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
const MIN_TILE: u64 = limits::MIN_TILE as u64;

/// A detection window side in pixels: [`MIN_TILE`] to the widest image that decodes at all
/// ([`DecodeLimits::default`]), beyond which every image is one window.
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub fn tile(s: &str) -> Result<u32, String> {
    let widest = DecodeLimits::default().max_width.max(DecodeLimits::default().max_height);
    whole(s, MIN_TILE, widest.into()).map(|v| v as u32)
}

/// Most FLOPs bins of the binned sampler: far more than its default 10, each still reachable.
const MAX_BINS: usize = 10_000;

/// FLOPs bins: 1 to [`MAX_BINS`].
pub fn bins(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, MAX_BINS)
}

/// Most draws per sample before a sampler gives up: a thousand times the default 10 000 (seconds
/// per sample).
const MAX_TRIES: usize = 10_000_000;

/// Draws per sample: 1 to [`MAX_TRIES`].
pub fn tries(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, MAX_TRIES)
}

/// FPN or head width in channels: 1 to [`limits::MAX_WIDTH`].
pub fn width(s: &str) -> Result<u64, String> {
    whole(s, 1, limits::MAX_WIDTH)
}

/// Convs per head tower: 0 (Faster R-CNN's fully connected box head) to [`limits::MAX_HEAD_CONVS`].
pub fn head_convs(s: &str) -> Result<usize, String> {
    whole_usize(s, 0, limits::MAX_HEAD_CONVS)
}

/// Shape classes of a synthetic set: 1 to the [`synthetic::CLASSES`] it draws.
pub fn shape_classes(s: &str) -> Result<usize, String> {
    whole_usize(s, 1, synthetic::CLASSES.len())
}

/// Clutter shapes per synthetic image: 0 to [`synthetic::MAX_DISTRACTORS`].
pub fn distractors(s: &str) -> Result<usize, String> {
    whole_usize(s, 0, synthetic::MAX_DISTRACTORS)
}

/// Occlusion of synthetic objects in percent: 0 to [`synthetic::MAX_OCCLUSION_PERCENT`].
pub fn occlusion(s: &str) -> Result<u32, String> {
    whole(s, 0, synthetic::MAX_OCCLUSION_PERCENT.into()).map(|v| v as u32)
}

/// `MIN..MAX` with both ends from `lo` to `hi` and `MIN <= MAX`; returned as given.
fn span(s: &str, lo: u64, hi: u64) -> Result<String, String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("`{s}` is not MIN..MAX"))?;
    let (a, b) = (whole(a, lo, hi)?, whole(b, lo, hi)?);
    if a > b {
        return Err(format!("`{s}`: MIN is more than MAX"));
    }
    Ok(s.to_string())
}

/// Object counts per synthetic image, `MIN..MAX`, each 0 to [`synthetic::MAX_OBJECTS`].
pub fn object_counts(s: &str) -> Result<String, String> {
    span(s, 0, synthetic::MAX_OBJECTS as u64)
}

/// Object sides of a synthetic set, `MIN..MAX` pixels, each [`synthetic::MIN_OBJECT_SIZE`] to
/// [`synthetic::MAX_SIDE`].
pub fn object_sizes(s: &str) -> Result<String, String> {
    span(s, synthetic::MIN_OBJECT_SIZE.into(), synthetic::MAX_SIDE.into())
}

/// A synthetic image size `WxH`, each side 1 to [`synthetic::MAX_SIDE`]; returned as given.
pub fn image_size(s: &str) -> Result<String, String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("`{s}` is not WxH"))?;
    whole(w, 1, synthetic::MAX_SIDE.into())?;
    whole(h, 1, synthetic::MAX_SIDE.into())?;
    Ok(s.to_string())
}

/// A network input `HxW` or `N` (square), each side 1 to [`limits::MAX_INPUT_SIDE`]; returned as
/// given (the command parses it again where it is used).
pub fn input_size(s: &str) -> Result<String, String> {
    let input = InputSize::parse(s).map_err(|e| e.to_string())?;
    if input.height > limits::MAX_INPUT_SIDE || input.width > limits::MAX_INPUT_SIDE {
        return Err(format!("{input} is over the most, {} pixels a side", limits::MAX_INPUT_SIDE));
    }
    Ok(s.to_string())
}

/// One supernet of `detnas study --ablate`, `METHOD[:ITERATIONS[:LR]]`, checked (bounds included)
/// at parse time and kept as text; the study fills in its own defaults.
#[cfg(feature = "search")]
pub fn ablation(s: &str) -> Result<String, String> {
    detnas_search::study_ablation::AblationSpec::parse(s, (1000, 0.02)).map_err(|e| format!("{e:#}"))?;
    Ok(s.trim().to_string())
}

/// Largest square input of `detnas study`: its supernets train at every input of the list.
#[cfg_attr(not(feature = "search"), allow(dead_code))]
const MAX_STUDY_INPUT: u64 = 2048;

/// A square input side of `detnas study --inputs`: a multiple of [`INPUT_DIVISOR`] from
/// [`INPUT_DIVISOR`] to [`MAX_STUDY_INPUT`].
#[cfg_attr(not(feature = "search"), allow(dead_code))]
pub fn study_input(s: &str) -> Result<u64, String> {
    let d = INPUT_DIVISOR;
    let range = || format!("`{s}` is not one of the multiples of {d} from {d} to {MAX_STUDY_INPUT}");
    whole(s, d, MAX_STUDY_INPUT).map_err(|_| range()).and_then(|v| if v % d == 0 { Ok(v) } else { Err(range()) })
}

/// A genome (backbone, then genes): its genes checked against [`limits`] (each gene once, widths,
/// depth and resolution within their maxima); returned as given, the command resolves the backbone
/// in its search space.
pub fn genome(s: &str) -> Result<String, String> {
    GeneOverrides::parse(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// A FLOPs count such as `300M`, `1.3G` or `2.5e8`: finite and non-negative; returned as given.
pub fn flops(s: &str) -> Result<String, String> {
    parse_count(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// Longest latency budget in milliseconds (an hour): no detector of these spaces takes longer per
/// image.
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// Parses a latency: `20ms`, `0.02s` or `20` (milliseconds); finite, positive and at most
/// [`MAX_LATENCY_MS`].
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `search --latency-max`, `latency check --budget`
pub fn milliseconds(s: &str) -> Result<f64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e3)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = number.trim().parse().map_err(|_| format!("`{s}` is not a latency such as 20ms or 0.02s"))?;
    let ms = v * scale;
    if !ms.is_finite() || ms <= 0.0 || ms > MAX_LATENCY_MS {
        return Err(format!("`{s}` is out of range: expected more than 0 and at most {MAX_LATENCY_MS} ms"));
    }
    Ok(ms)
}

/// Cores this process may use.
#[cfg_attr(not(any(feature = "train", feature = "infer")), allow(dead_code))] // `Threads`
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_numbers_are_checked_and_kept_as_given() {
        assert_eq!(genome("coco-fpn-300m:fpn96:320"), Ok("coco-fpn-300m:fpn96:320".into()));
        for bad in ["x:fpn100000", "x:head16x1000000000", "x:head4294967296x2", "x:8192", "x:fpn0"] {
            assert!(genome(bad).is_err(), "{bad}");
        }
        assert_eq!(input_size("4096x32"), Ok("4096x32".into()));
        for bad in ["4097", "0x10", "nan", "-1", "18446744073709551615"] {
            assert!(input_size(bad).is_err(), "{bad}");
        }
        assert!(flops("nan").is_err() && flops("inf").is_err() && flops("-1").is_err());
        assert_eq!(flops("1.3G"), Ok("1.3G".into()));
        assert_eq!(object_counts("1..4"), Ok("1..4".into()));
        for bad in ["4..1", "1..257", "-1..2", "1..nan", "3"] {
            assert!(object_counts(bad).is_err(), "{bad}");
        }
        assert!(object_sizes("7..60").is_err() && image_size("16385x8").is_err() && image_size("0x8").is_err());
    }

    #[test]
    fn threads_are_capped_at_the_cores_and_never_wrap() {
        let cmd = clap::Command::new("t").arg(clap::Arg::new("threads").long("threads").value_parser(Threads));
        let parse = |s: &str| {
            let m = cmd.clone().try_get_matches_from(["t", &format!("--threads={s}")])?;
            Ok::<usize, clap::Error>(*m.get_one::<usize>("threads").expect("given"))
        };
        assert_eq!(parse("1").unwrap(), 1);
        assert_eq!(parse("1000").unwrap(), cores());
        assert_eq!(parse("4294967295").unwrap(), cores());
        for bad in ["0", "-1", "nan", "inf", "4294967296", "4294967297", "18446744073709551615"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_finite_and_out_of_range_values_are_refused() {
        for bad in ["nan", "NaN", "inf", "-0.1", "1.5", "x"] {
            assert!(fraction(bad).is_err(), "{bad}");
        }
        assert_eq!(fraction("0.25"), Ok(0.25));
        for bad in ["nan", "inf", "0", "-1", "1e9"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("2.5"), Ok(2.5));
        for bad in ["0", "-3", "nan", "inf", "1.5", "4294967296", "18446744073709551615", "99999999999999999999999"] {
            assert!(genomes(bad).is_err(), "{bad}");
        }
        assert_eq!(genomes("4"), Ok(4));
        assert_eq!(genomes(" +4 "), Ok(4));
        assert_eq!(genomes_or_none("0"), Ok(0));
        let e = classes("10001").unwrap_err();
        assert!(e.contains("from 1 to 10000"), "{e}");
        assert_eq!(tile("31").unwrap_err(), "`31` is not a whole number from 32 to 20000");
        assert_eq!(study_input("96"), Ok(96));
        assert!(study_input("100").is_err() && study_input("4096").is_err());
        assert_eq!(milliseconds("20ms"), Ok(20.0));
        assert_eq!(milliseconds("0.02s"), Ok(20.0));
        assert_eq!(milliseconds(" 15 "), Ok(15.0));
        for bad in ["nan", "-1ms", "0", "fast", "infs", "3600.1s", "4294967296"] {
            assert!(milliseconds(bad).is_err(), "{bad}");
        }
    }
}

//! `detnas bench`: latency of the bare model run and of the full detect path, with the device
//! fingerprint. Reports p50/p90/p99/mean over timed iterations after warm-up
//! ([`detnas_infer::timing`]). The model is a file, or a genome built in memory with random weights.
//! With `--remote`, the model run is timed on a latency server (the target machine) instead.

use anyhow::{Context, Result, bail};
use clap::Args;
use detnas_core::search::genome::Genome;
use detnas_core::space::ChannelShuffle;
use detnas_infer::fingerprint::cpu_model;
use detnas_infer::latency::{ModelKind, Remote, base_config, random_detector};
use detnas_infer::timing::TimingPlan;
use detnas_infer::{Detector, DetectorOptions, Device, Tta};
use detnas_onnx::{DetectionLoad, Layout};
use image::{ImageFormat, RgbImage};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Exported model (.onnx); or give --arch instead.
    #[arg(required_unless_present = "arch")]
    model: Option<PathBuf>,
    /// A genome (backbone plus optional genes, e.g. `coco-retinanet-300m:fpn96:head96x2:sep:320`) to
    /// build in memory with random weights and time, instead of a model file.
    #[arg(long, conflicts_with = "model", value_parser = super::values::genome)]
    arch: Option<String>,
    /// Search space of --arch (optional for presets).
    #[arg(long, requires = "arch")]
    space: Option<String>,
    /// Classes of the --arch model.
    #[arg(long, default_value_t = 1, requires = "arch", value_parser = super::values::classes)]
    classes: usize,
    /// Detections the post-processing of the --arch model handles: cap (every anchor above the
    /// score threshold: the most any image costs, as `latency build` measures by default) or none
    /// (random weights score below every threshold).
    #[arg(long, default_value = "cap", requires = "arch", value_parser = ["cap", "none"])]
    detections: String,
    /// How the --arch model writes the backbone's channel shuffle: as trained (strided slices),
    /// or shuffle-free (folded into the weights; contiguous splits only).
    #[arg(long, default_value = "shuffle", requires = "arch", value_parser = ["shuffle", "shuffle-free"])]
    layout: String,
    /// Precision of the --arch model: fp32, or int8 quantized for timing as INT8 latency tables
    /// are (every conv but the stem, fixed activation ranges: the speed of a quantized model, not
    /// its accuracy).
    #[arg(long, default_value = "fp32", requires = "arch", value_parser = ["fp32", "int8"])]
    precision: String,
    /// Inference device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", conflicts_with = "remote")]
    device: String,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long, value_parser = super::values::Threads, conflicts_with = "remote")]
    threads: Option<usize>,
    /// Time the model run on a latency server instead (the detect path, which needs the image
    /// here, is not timed).
    #[command(flatten)]
    remote: super::latency::RemoteArgs,
    /// Untimed runs of each path before timing.
    #[arg(long, default_value_t = 3, value_parser = super::values::warmup)]
    warmup: usize,
    /// Timed iterations (default 20 unless --seconds is given).
    #[arg(long, conflicts_with = "seconds", value_parser = super::values::iterations)]
    iters: Option<usize>,
    /// Time for at least this many seconds per measured path (the two paths alternate); more than
    /// 0 and at most a day.
    #[arg(long, value_parser = super::values::seconds)]
    seconds: Option<f64>,
    /// Image for the detect path (default: a synthetic 1280x720 JPEG).
    #[arg(long, conflicts_with = "remote")]
    image: Option<PathBuf>,
    /// Decode the --image JPEG at full resolution in the detect path (default: at a reduced DCT
    /// scale when it is at least twice the network input).
    #[arg(long, conflicts_with = "remote")]
    full_decode: bool,
    /// Test-time augmentation of the detect path (as `detect --tta`): one model run per view.
    #[arg(long, default_value = "none", value_name = "none|flips|dihedral", conflicts_with = "remote")]
    tta: Tta,
    /// Fail instead of falling back when the requested device is unavailable.
    #[arg(long, conflicts_with = "remote")]
    strict: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The detector to time, with the full detect path's options (every score, the device and
/// threads asked), and its name: the model file, or the genome built in memory with random
/// weights.
fn bench_detector(args: &BenchArgs) -> Result<(Detector, String)> {
    let mut options = DetectorOptions::default();
    // The full detect path as `detect` runs it without --conf: everything the graph returns.
    options.score_threshold = None;
    options.threads = args.threads;
    options.device = Device::parse(&args.device)?;
    options.strict = args.strict;
    options.reduced_decode = !args.full_decode;
    options.tta = args.tta;
    Ok(match (&args.model, &args.arch) {
        (Some(path), _) => (Detector::from_file(path, options)?, path.display().to_string()),
        (None, Some(text)) => {
            let genome = Genome::parse(args.space.as_deref(), text)?;
            let cfg = genome.detector_config(&base_config(args.classes, ChannelShuffle::default()))?;
            detnas_core::limits::check_model_memory("bench --arch", &genome.space, &genome.arch, &cfg, 1)?;
            let name = genome.complete(&cfg).to_string();
            let bytes = arch_model(&genome, &cfg, args)?;
            (Detector::from_memory(&bytes, &name, options)?, name)
        }
        (None, None) => anyhow::bail!("give a MODEL file or --arch"),
    })
}

/// The encoded image of the detect path: `--image`, else a synthetic 1280x720 JPEG.
fn bench_image(args: &BenchArgs) -> Result<Vec<u8>> {
    Ok(match &args.image {
        Some(p) => std::fs::read(p)?,
        None => {
            let img = RgbImage::from_fn(1280, 720, |x, y| {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
            });
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, ImageFormat::Jpeg)?;
            buf.into_inner()
        }
    })
}

/// The timing plan of the arguments: `--iters` iterations, or at least `--seconds` (and 3
/// iterations), else 20 iterations; after `--warmup` untimed runs.
fn timing_plan(args: &BenchArgs) -> TimingPlan {
    match (args.iters, args.seconds) {
        (Some(n), _) => TimingPlan::iterations(args.warmup, n),
        (None, Some(s)) => TimingPlan { warmup: args.warmup, min_iters: 3, min_seconds: s, max_iters: usize::MAX },
        (None, None) => TimingPlan::iterations(args.warmup, 20),
    }
}

/// `detnas bench`: times the bare model run and the full detect path and prints the latencies
/// (one JSON object with `--json`).
pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(remote) = args.remote.open()? {
        return run_remote(&args, &remote);
    }
    let (detector, name) = bench_detector(&args)?;
    if let Some(w) = detector.device_warning() {
        eprintln!("warning: {w}");
    }
    let cfg = detector.info().config.clone();
    let encoded = bench_image(&args)?;
    let timed = detector.bench(&encoded, &timing_plan(&args))?;
    let (model, full) = (timed.model_run, timed.detect);
    let threads = args.threads.map(|t| t.to_string()).unwrap_or_else(|| "default".into());
    let report = json!({
        "model": name,
        "input": cfg.input.to_string(),
        "tta": args.tta,
        "device": {
            "cpu": cpu_model(),
            "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "threads": threads,
            "onnxruntime": detnas_infer::runtime::version()?,
            "provider": detector.info().provider,
        },
        "model_run": model,
        "detect": full,
        "detect_over_model_run_p50": full.p50_ms / model.p50_ms,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let views = args.tta.symmetries().len();
    let tta = if views > 1 { format!(", detect with {views} views") } else { String::new() };
    println!("model    {name} (input {}{tta})", cfg.input);
    println!(
        "device   {} | threads {} | ONNX Runtime {} | {}",
        cpu_model(),
        threads,
        report["device"]["onnxruntime"].as_str().unwrap_or(""),
        detector.info().provider
    );
    for (name, l) in [("model run", &model), ("detect", &full)] {
        println!(
            "{name:<9} p50 {:8.2} ms  p90 {:8.2} ms  p99 {:8.2} ms  mean {:8.2} ms  ({} iterations)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.mean_ms, l.iterations
        );
    }
    println!("detect / model run (p50): {:.3}x", full.p50_ms / model.p50_ms);
    Ok(())
}

/// `detnas bench --remote`: the model run timed on the latency server; the model is sent as it is
/// (a file, refused here when over the server's size limit) or built here from --arch.
fn run_remote(args: &BenchArgs, remote: &Remote) -> Result<()> {
    let info = remote.info()?;
    let (bytes, name) = match (&args.model, &args.arch) {
        (Some(path), _) => {
            let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
            if meta.len() > info.max_model_bytes {
                bail!(
                    "{}: {} bytes, over the {} bytes the latency server {} takes (its --max-model-mib)",
                    path.display(),
                    meta.len(),
                    info.max_model_bytes,
                    remote.url()
                );
            }
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            (bytes, path.display().to_string())
        }
        (None, Some(text)) => {
            let genome = Genome::parse(args.space.as_deref(), text)?;
            let cfg = genome.detector_config(&base_config(args.classes, ChannelShuffle::default()))?;
            detnas_core::limits::check_model_memory("bench --arch", &genome.space, &genome.arch, &cfg, 1)?;
            (arch_model(&genome, &cfg, args)?, genome.complete(&cfg).to_string())
        }
        (None, None) => bail!("give a MODEL file or --arch"),
    };
    let measured = remote.measure(&bytes, ModelKind::Detector, &timing_plan(args))?;
    let model = &measured.latency;
    let f = &info.fingerprint;
    if args.json {
        let report = json!({
            "model": name,
            "remote": remote.url(),
            "device": {
                "cpu": f.cpu,
                "logical_cpus": f.logical_cores,
                "gpu": f.gpu,
                "threads": f.threads.map_or("default".to_string(), |t| t.to_string()),
                "onnxruntime": f.onnxruntime,
                "provider": measured.provider,
            },
            "model_run": model,
            "detect": null,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("model    {name}");
    println!("device   latency server {}: {}", remote.url(), super::latency::server_line(&info));
    println!(
        "model run p50 {:8.2} ms  p90 {:8.2} ms  p99 {:8.2} ms  mean {:8.2} ms  ({} iterations)",
        model.p50_ms, model.p90_ms, model.p99_ms, model.mean_ms, model.iterations
    );
    println!("detect   not timed on a latency server (it needs the image there): run bench on the target for it");
    Ok(())
}

/// The --arch model with random weights, as `--detections`, `--layout` and `--precision` say.
fn arch_model(genome: &Genome, cfg: &detnas_core::detector::DetectorConfig, args: &BenchArgs) -> Result<Vec<u8>> {
    let bytes = random_detector(&genome.space, &genome.arch, cfg, 0, detections(args)?, layout(args)?)?;
    Ok(match args.precision.as_str() {
        "int8" => {
            use detnas_onnx::onnx_protobuf::Message;
            let model = detnas_onnx::ModelProto::parse_from_bytes(&bytes)?;
            detnas_onnx::graph::encode(&detnas_onnx::quantize::quantize_for_timing(&model, true)?)?
        }
        _ => bytes,
    })
}

/// The `--layout` of the --arch model.
fn layout(args: &BenchArgs) -> Result<Layout> {
    Layout::from_name(&args.layout).ok_or_else(|| anyhow::anyhow!("--layout {}: not a layout", args.layout))
}

/// The `--detections` of the --arch model.
fn detections(args: &BenchArgs) -> Result<DetectionLoad> {
    DetectionLoad::parse(&args.detections).map_err(anyhow::Error::msg)
}

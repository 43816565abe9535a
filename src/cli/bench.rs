//! `detnas bench`: latency of the bare model run and of the full detect path, with the device
//! fingerprint. Reports p50/p90/p99/mean over timed iterations after warm-up.

use anyhow::Result;
use clap::Args;
use detnas_infer::{Detector, DetectorOptions, Device};
use image::{ImageFormat, RgbImage};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Exported model (.onnx).
    model: PathBuf,
    /// Inference device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long, value_parser = super::values::count)]
    threads: Option<usize>,
    /// Untimed runs of each path before timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed iterations (default 20 unless --seconds is given).
    #[arg(long, conflicts_with = "seconds", value_parser = super::values::count)]
    iters: Option<usize>,
    /// Time for at least this many seconds per measured path (the two paths alternate); more than
    /// 0 and at most a day.
    #[arg(long, value_parser = super::values::seconds)]
    seconds: Option<f64>,
    /// Image for the detect path (default: a synthetic 1280x720 JPEG).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Fail instead of falling back when the requested device is unavailable.
    #[arg(long)]
    strict: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Summary statistics in milliseconds.
#[derive(serde::Serialize)]
pub struct Latency {
    pub iterations: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
}

impl Latency {
    fn from(mut d: Vec<Duration>) -> Self {
        d.sort();
        let ms = |x: Duration| x.as_secs_f64() * 1e3;
        let q = |p: f64| ms(d[((d.len() - 1) as f64 * p).round() as usize]);
        Latency {
            iterations: d.len(),
            mean_ms: d.iter().map(|x| ms(*x)).sum::<f64>() / d.len() as f64,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            min_ms: ms(d[0]),
        }
    }
}

/// Times `a` and `b` alternately (a, b, a, b, ...) so that drift and background load hit both alike.
fn time_pair(
    warmup: usize,
    iters: Option<usize>,
    seconds: Option<f64>,
    mut a: impl FnMut() -> Result<()>,
    mut b: impl FnMut() -> Result<()>,
) -> Result<(Latency, Latency)> {
    for _ in 0..warmup {
        a()?;
        b()?;
    }
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    let start = Instant::now();
    loop {
        let t = Instant::now();
        a()?;
        sa.push(t.elapsed());
        let t = Instant::now();
        b()?;
        sb.push(t.elapsed());
        let done = match (iters, seconds) {
            (Some(n), _) => sa.len() >= n,
            (None, Some(s)) => start.elapsed().as_secs_f64() >= 2.0 * s && sa.len() >= 3,
            (None, None) => sa.len() >= 20,
        };
        if done {
            return Ok((Latency::from(sa), Latency::from(sb)));
        }
    }
}

/// CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(args: BenchArgs) -> Result<()> {
    let options = DetectorOptions {
        threads: args.threads,
        device: Device::parse(&args.device)?,
        strict: args.strict,
        ..Default::default()
    };
    let detector = Detector::from_file(&args.model, options)?;
    if let Some(w) = detector.device_warning() {
        eprintln!("warning: {w}");
    }
    let cfg = detector.info().config.clone();
    let encoded = match &args.image {
        Some(p) => std::fs::read(p)?,
        None => {
            let img = RgbImage::from_fn(1280, 720, |x, y| {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
            });
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, ImageFormat::Jpeg)?;
            buf.into_inner()
        }
    };
    let input = vec![114.0f32; 3 * (cfg.input.height * cfg.input.width) as usize];
    let (model, full) = time_pair(
        args.warmup,
        args.iters,
        args.seconds,
        || detector.run(&input).map(|_| ()).map_err(Into::into),
        || detector.detect_bytes(&encoded, "bench image").map(|_| ()).map_err(Into::into),
    )?;
    let threads = args.threads.map(|t| t.to_string()).unwrap_or_else(|| "default".into());
    let report = json!({
        "model": args.model.display().to_string(),
        "input": cfg.input.to_string(),
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
    println!("model    {} (input {})", args.model.display(), cfg.input);
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

//! `detnas latency build | predict | check | adapt | serve`: latency lookup tables measured with
//! ONNX Runtime on this device or on a latency server, predictions from them, their validation
//! against whole-model measurements, and the server that measures on a target machine.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use detnas_core::InputSize;
use detnas_core::detector::DetectorConfig;
use detnas_core::search::genome::{GeneSpace, Genome};
use detnas_core::space::{ChannelShuffle, SearchSpace};
use detnas_infer::latency::protocol::Drift;
use detnas_infer::latency::remote::{Remote, ServerInfo, TOKEN_ENV};
use detnas_infer::latency::serve::{ServeOptions, serve};
use detnas_infer::latency::trained::{MAX_IMAGES, TrainedCheck, check_trained};
use detnas_infer::latency::{
    AdaptOptions, BuildOptions, LatencyTable, Protocol, Runner, adapt_table, base_config, build_table, check_table,
};
use detnas_infer::{Device, Precision, TimingPlan};
use detnas_onnx::{DetectionLoad, Layout};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum LatencyCommand {
    /// Measure a table: every block choice at each layer's input shape, the stem, the FPN, head
    /// layers and predictors with post-processing for each gene value; then calibration genomes.
    Build(BuildArgs),
    /// Predicted latency of a genome, with the per-part breakdown.
    Predict(PredictArgs),
    /// Predicted vs measured latency of random held-out genomes (share within ±10%, MAPE, Kendall τ),
    /// beside the measurements' own noise ceiling.
    Check(CheckArgs),
    /// Adapt a table to this device or thread count from a few genomes measured end to end here
    /// (its parts stay; the correction of their sum is refitted).
    Adapt(AdaptArgs),
    /// Serve latency measurements on this machine over HTTP, for `--remote` builds, checks,
    /// searches and benches running elsewhere: models are sent, timed here one at a time, and the
    /// timings answered as JSON.
    Serve(ServeArgs),
}

/// Where measurements run: here, or on a latency server on the target machine.
#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// Measure on a latency server (`detnas latency serve` on the target machine) at this address,
    /// `http://HOST:PORT`, instead of here: models are built here and timed there, with its device
    /// and threads.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// The server's token (default: the DETNAS_REMOTE_TOKEN environment variable).
    #[arg(long, requires = "remote", value_name = "TOKEN")]
    remote_token: Option<String>,
}

impl RemoteArgs {
    /// The latency server asked for, if any, once it has answered (one line on stderr names it and
    /// where it measures).
    pub fn open(&self) -> Result<Option<Remote>> {
        let Some(url) = &self.remote else { return Ok(None) };
        let token = self.remote_token.clone().or_else(token_from_env);
        let remote = Remote::new(url, token)?;
        let info = remote.info()?;
        eprintln!("measuring on latency server {}: {}", remote.url(), server_line(&info));
        Ok(Some(remote))
    }

    /// Whether a server was asked for.
    #[cfg_attr(not(feature = "search"), allow(dead_code))]
    pub fn given(&self) -> bool {
        self.remote.is_some()
    }
}

fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())
}

/// Where a server measures, in one line.
pub fn server_line(info: &ServerInfo) -> String {
    let f = &info.fingerprint;
    format!(
        "{} ({} logical cores), {} threads, {}, ONNX Runtime {}",
        f.gpu.as_deref().unwrap_or(&f.cpu),
        f.logical_cores,
        f.threads.map_or("all".to_string(), |t| t.to_string()),
        f.provider,
        f.onnxruntime
    )
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the bound address is printed). Another
    /// machine reaches it only on a non-loopback address, e.g. 0.0.0.0:8765: give a --token then.
    #[arg(long, default_value = "127.0.0.1:8765")]
    addr: String,
    /// Device the models run on: cpu, cuda or cuda:N (never a fallback).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long, value_parser = super::values::Threads)]
    threads: Option<usize>,
    /// Requests must carry this token (`Authorization: Bearer TOKEN`; clients give it with
    /// --remote-token). Default: the DETNAS_REMOTE_TOKEN environment variable, if set.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Largest model accepted, in MiB (1 to 4096).
    #[arg(long, default_value_t = 256, value_parser = super::values::model_mib)]
    max_model_mib: u64,
}

/// Timing flags shared by `build` and `check`.
#[derive(Args, Debug)]
pub struct TimingArgs {
    /// Untimed runs before each measurement.
    #[arg(long, default_value_t = 3, value_parser = super::values::warmup)]
    warmup: usize,
    /// Timed runs per measurement: at least this many ...
    #[arg(long, default_value_t = 10, value_parser = super::values::iterations)]
    min_iters: usize,
    /// ... and at least this many seconds (0 to 3600).
    #[arg(long, default_value_t = 0.2, value_parser = super::values::min_seconds)]
    min_seconds: f64,
    /// Independent repetitions of every measurement (a fresh session each, warm-up and timed runs
    /// as above), interleaved round-robin so that a slow spell hits every item alike (1 to 100).
    #[arg(long, default_value_t = 3, value_parser = super::values::repetitions)]
    repetitions: usize,
    /// Measurements taken while the drift reference (the stem, timed around every 8 measurements)
    /// was more than this many percent above its fastest timing are measured again (up to 2 more
    /// passes).
    #[arg(long, default_value_t = Drift::TOLERANCE_PCT, value_parser = super::values::percent)]
    drift_tolerance: f64,
}

impl TimingArgs {
    fn plan(&self) -> TimingPlan {
        TimingPlan { warmup: self.warmup, min_iters: self.min_iters, min_seconds: self.min_seconds, max_iters: 2000 }
    }

    fn protocol(&self) -> Protocol {
        Protocol { repetitions: self.repetitions, plan: self.plan() }
    }
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Search space.
    #[arg(long, default_value = "detnas-300m")]
    space: String,
    /// Resolutions HxW (comma separated); replaces the gene space's `input` list.
    #[arg(long, value_delimiter = ',', value_parser = super::values::input_size)]
    input: Vec<String>,
    /// Gene space (TOML: `fpn_channels = [64, 96]`, `head_channels`, `head_convs = [1, 2]`,
    /// `head_conv = ["separable", "dense"]`, `input = [{ height = 320, width = 320 }]`); default:
    /// widths 64-256, depths 1-4, dense and separable heads.
    #[arg(long)]
    genes: Option<PathBuf>,
    /// Classes of the measured predictors.
    #[arg(long, default_value_t = 1, value_parser = super::values::classes)]
    classes: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", conflicts_with = "remote")]
    device: String,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long, value_parser = super::values::Threads, conflicts_with = "remote")]
    threads: Option<usize>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Refuse the build when measurements are still taken in slow spells of the machine after the
    /// re-measurement passes (`--drift-tolerance`). (A table is always measured on the device it
    /// names: an unavailable device fails the build whether or not this is given.)
    #[arg(long)]
    strict: bool,
    /// Precision of the measured models: fp32, or int8 (quantized as `detnas quantize` does: every
    /// convolution but the stem). Recorded in the table's fingerprint.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "int8"])]
    precision: String,
    /// Detections the measured post-processing handles: cap (every anchor above the score
    /// threshold: the most post-processing any image costs, so a budget holds for every image), or
    /// none (random weights score below every threshold: the network alone). Recorded in the
    /// table; check, adapt and search --measure follow it.
    #[arg(long, default_value = "cap", value_parser = ["cap", "none"])]
    detections: String,
    /// How the measured blocks and calibration genomes write the channel shuffle: as trained
    /// (strided slices) or shuffle-free (folded into the weights), as the models to be predicted
    /// are exported (`export --layout`).
    #[arg(long, default_value = "shuffle", value_parser = ["shuffle", "shuffle-free"])]
    layout: String,
    /// Genomes measured end to end to fit the correction of the additive sum (0: none).
    #[arg(long, default_value_t = 20, value_parser = super::values::genomes_or_none)]
    calibration: usize,
    /// Seed of the calibration genomes (use another for `check`).
    #[arg(long, default_value_t = 1)]
    calibration_seed: u64,
    #[command(flatten)]
    timing: TimingArgs,
    /// Output table (JSON).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Latency table (`detnas latency build`).
    #[arg(long)]
    lut: PathBuf,
    /// Genome: backbone plus optional genes (`23113213311133203333:fpn96:head96x2:sep:320`).
    #[arg(long, value_parser = super::values::genome)]
    arch: String,
    /// Search space (default: the table's).
    #[arg(long)]
    space: Option<String>,
    /// Fail when this machine's fingerprint differs from the table's.
    #[arg(long)]
    strict: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Latency table (`detnas latency build`).
    #[arg(long)]
    lut: PathBuf,
    /// Random genomes to measure.
    #[arg(long, default_value_t = 20, value_parser = super::values::genomes)]
    samples: usize,
    /// Seed of the genomes (held out: differs from the table's calibration seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    timing: TimingArgs,
    /// A latency budget (`20ms`, or `median`: the median measured genome's): report how many
    /// genomes measured within ±10% of it the table puts on the wrong side.
    #[arg(long, value_parser = budget)]
    budget: Option<String>,
    /// Also check these exported trained models (repeatable): each one's genome predicted by the
    /// table beside its model run measured here on --images, under the same protocol.
    #[arg(long, requires = "images", conflicts_with = "remote")]
    model: Vec<PathBuf>,
    /// Folder of real images (JPEG, PNG; the first 32 by name) the --model models run on.
    #[arg(long, requires = "model")]
    images: Option<PathBuf>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Fail when the fingerprint of where it measures (this machine or --remote) differs from the
    /// table's.
    #[arg(long)]
    strict: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct AdaptArgs {
    /// The base table (built on another device or thread count).
    #[arg(long)]
    lut: PathBuf,
    /// Genomes measured end to end here (3 to 10000; 10 is the usual few-shot).
    #[arg(long, default_value_t = 10, value_parser = super::values::adapt_samples)]
    samples: usize,
    /// Seed of the genomes (use another for `check`).
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Device of the target: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", conflicts_with = "remote")]
    device: String,
    /// ONNX Runtime intra-op threads of the target (default: all cores).
    #[arg(long, value_parser = super::values::Threads, conflicts_with = "remote")]
    threads: Option<usize>,
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    timing: TimingArgs,
    /// Output table (JSON).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: LatencyCommand) -> Result<()> {
    match cmd {
        LatencyCommand::Build(args) => build(args),
        LatencyCommand::Predict(args) => predict(args),
        LatencyCommand::Check(args) => check(args),
        LatencyCommand::Adapt(args) => adapt(args),
        LatencyCommand::Serve(args) => serve_here(args),
    }
}

fn load_genes(path: Option<&Path>) -> Result<GeneSpace> {
    let Some(path) = path else { return Ok(GeneSpace::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid gene space {}", path.display()))
}

fn build(args: BuildArgs) -> Result<()> {
    let inputs: Vec<(&str, &std::path::Path)> = args.genes.as_deref().map(|g| ("--genes", g)).into_iter().collect();
    super::paths::check_output("--out", &args.out, super::paths::Artefact::LatencyTable, &inputs)?;
    let mut genes = load_genes(args.genes.as_deref())?;
    if !args.input.is_empty() {
        genes.input = args.input.iter().map(|s| InputSize::parse(s)).collect::<detnas_core::Result<_>>()?;
    }
    let device = Device::parse(&args.device)?;
    let opts = BuildOptions {
        space: SearchSpace::by_name(&args.space)?,
        genes,
        classes: args.classes,
        shuffle: ChannelShuffle::default(),
        runner: Runner {
            device,
            threads: args.threads,
            // Never a silent CPU fallback: the table would name a device it never ran on.
            strict: true,
            timing: args.timing.plan(),
            precision: Precision::parse(&args.precision)?,
            remote: args.remote.open()?,
            detections: DetectionLoad::parse(&args.detections).map_err(anyhow::Error::msg)?,
            layout: Layout::from_name(&args.layout).expect("clap checks the layout"),
        },
        repetitions: args.timing.repetitions,
        drift_tolerance_pct: args.timing.drift_tolerance,
        strict_drift: args.strict,
        calibration: args.calibration,
        calibration_seed: args.calibration_seed,
    };
    let start = std::time::Instant::now();
    let mut table = build_table(&opts, &mut |line| eprintln!("{line}"))?;
    table.save(&args.out)?;
    let entries: usize = table.entries.values().map(|e| e.len()).sum();
    let correction = table.correction.as_ref().map_or_else(
        || "no correction".to_string(),
        |c| {
            format!(
                "correction {:.4} x sum {:+.3} ms ({}: best on held-out genomes)",
                c.scale,
                c.offset_ms,
                c.form.name()
            )
        },
    );
    for d in [&table.drift, &table.calibration_drift].into_iter().flatten() {
        eprintln!("{}", drift_line(d));
    }
    println!(
        "wrote {}: {entries} entries at {} in {:.1} s, {correction} ({} calibration genomes), hash {}",
        args.out.display(),
        table.entries.keys().cloned().collect::<Vec<_>>().join(", "),
        start.elapsed().as_secs_f64(),
        table.calibration.len(),
        table.hash
    );
    Ok(())
}

/// Loads a table and holds its fingerprint against where it will measure: `remote`, else this
/// machine ([`LatencyTable::check_on`]): one warning line, or an error under `strict`.
fn load_checked(path: &Path, remote: Option<Remote>, strict: bool) -> Result<(LatencyTable, Runner)> {
    let table = LatencyTable::load(path)?;
    if let Some(warning) = table.check_on(remote.as_ref(), strict)? {
        eprintln!("{warning}");
    }
    let runner = Runner { remote, ..table.runner(strict)? };
    Ok((table, runner))
}

fn predict(args: PredictArgs) -> Result<()> {
    let (table, _) = load_checked(&args.lut, None, args.strict)?;
    let genome = Genome::parse(Some(args.space.as_deref().unwrap_or(&table.space)), &args.arch)?;
    let cfg = genome.detector_config(&base_config(table.classes, table.shuffle))?;
    let p = table.predict(&genome.space, &genome.arch, &cfg)?;
    let genome = genome.complete(&cfg);
    if args.json {
        let mut report = serde_json::to_value(&p)?;
        report["genome"] = json!(genome.to_string());
        report["table"] = json!({ "path": args.lut.display().to_string(), "hash": table.hash });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let b = &p.parts;
    println!("genome     {genome}");
    let how = if p.corrected { "corrected additive sum" } else { "additive sum" };
    println!("latency    {:.3} ms ({how}; plain sum {:.3} ms)", p.latency_ms, p.additive_ms);
    println!(
        "parts      stem {:.3} | backbone {:.3} | fpn {:.3} | head {:.3} | predictors+post {:.3} ms",
        b.stem, b.backbone, b.fpn, b.head, b.predictors
    );
    let blocks: Vec<String> = p.blocks_ms.iter().map(|v| format!("{v:.3}")).collect();
    println!("blocks     {} ms", blocks.join(" "));
    Ok(())
}

fn adapt(args: AdaptArgs) -> Result<()> {
    super::paths::check_output(
        "--out",
        &args.out,
        super::paths::Artefact::LatencyTable,
        &[("--lut", args.lut.as_path())],
    )?;
    let base = LatencyTable::load(&args.lut)?;
    let runner = Runner {
        device: Device::parse(&args.device)?,
        threads: args.threads,
        strict: true,
        timing: args.timing.plan(),
        precision: base.precision()?,
        remote: args.remote.open()?,
        detections: base.detections,
        layout: base.layout,
    };
    let opts = AdaptOptions {
        runner: &runner,
        protocol: args.timing.protocol(),
        samples: args.samples,
        seed: args.seed,
        drift_tolerance_pct: args.timing.drift_tolerance,
    };
    let mut table = adapt_table(&base, &opts, &mut |line| eprintln!("{line}"))?;
    if let Some(d) = &table.calibration_drift {
        eprintln!("{}", drift_line(d));
    }
    table.save(&args.out)?;
    let c = table.correction.as_ref().expect("an adapted table has a correction");
    println!(
        "wrote {}: {} adapted to {} threads from {} genomes measured {}, correction {:.4} x sum {:+.3} ms ({}), hash {}",
        args.out.display(),
        args.lut.display(),
        table.fingerprint.threads.map_or("all".to_string(), |t| t.to_string()),
        table.calibration.len(),
        args.remote.remote.as_deref().map_or("here".to_string(), |u| format!("on {u}")),
        c.scale,
        c.offset_ms,
        c.form.name(),
        table.hash
    );
    Ok(())
}

/// One line on what the drift reference saw.
fn drift_line(d: &Drift) -> String {
    let left = if d.disturbed > 0 {
        format!("; {} still in a slow spell: consider measuring again when the machine is quieter", d.disturbed)
    } else {
        String::new()
    };
    format!(
        "drift reference ({}) moved {:.0}% over {} timings; {} measurement(s) taken again in slow spells (over {}% above its fastest){left}",
        d.reference,
        d.drift_pct,
        d.times_ms.len(),
        d.remeasured,
        d.tolerance_pct
    )
}

/// `latency check --budget`: a latency (`20ms`, bounded as `search --latency-max`) or `median`
/// (the median measured genome's).
fn budget(s: &str) -> Result<String, String> {
    if s.trim() == "median" { Ok("median".into()) } else { super::values::milliseconds(s).map(|ms| ms.to_string()) }
}

fn check(args: CheckArgs) -> Result<()> {
    let (table, runner) = load_checked(&args.lut, args.remote.open()?, args.strict)?;
    if args.seed == table.calibration_seed && !table.calibration.is_empty() {
        eprintln!("warning: seed {} is the table's calibration seed: these genomes are not held out", args.seed);
    }
    let space = SearchSpace::by_name(&table.space)?;
    let protocol = args.timing.protocol();
    let log = &mut |line: &str| eprintln!("{line}");
    // a latency already parsed and bounded by `budget`, or `median`
    let ms = args.budget.as_deref().and_then(|b| b.parse::<f64>().ok());
    // the trained models' inputs are checked before anything is measured: no model twice (under
    // any spelling), images in the folder
    for (i, a) in args.model.iter().enumerate() {
        if let Some(b) = args.model[..i].iter().find(|b| detnas_core::fsutil::same_file(a, b)) {
            anyhow::bail!(
                "--model {} and --model {} are the same file: give each model once",
                b.display(),
                a.display()
            );
        }
    }
    let images = args.images.as_deref().map(trained_images).transpose()?;
    let how = (&runner, &protocol, args.timing.drift_tolerance);
    let mut report = check_table(&table, &space, (args.samples, args.seed), how, ms, log)?;
    let trained = match &images {
        Some(images) => Some(check_models(&table, &space, &runner, &args, images, log)?),
        None => None,
    };
    if args.budget.as_deref() == Some("median") {
        let measured: Vec<f64> = report.genomes.iter().map(|g| g.measured_ms).collect();
        let median = detnas_infer::latency::protocol::median(&measured);
        let predicted: Vec<f64> = report.genomes.iter().map(|g| g.predicted_ms).collect();
        let reps: Vec<Vec<f64>> = report.genomes.iter().map(|g| g.repetitions_ms.clone()).collect();
        report.budget = Some(detnas_infer::latency::score::budget_decisions(median, &predicted, &reps));
    }
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["table"] = json!({ "path": args.lut.display().to_string(), "hash": table.hash });
        if let Some((models, drift)) = &trained {
            value["trained"] = json!({ "models": models, "drift": drift });
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "{} held-out genomes (seed {}), {} repetitions each, table {}",
        report.samples,
        report.seed,
        report.repetitions,
        args.lut.display()
    );
    let line = |name: &str, m: &detnas_infer::latency::Metrics| {
        println!(
            "{name:<10} within ±10% {:5.1}%   MAPE {:5.2}%   bias {:+5.1}%   spread {:4.1}%   Kendall τ {}   RMSE {:.3} ms",
            100.0 * m.within_10pct,
            m.mape,
            m.bias_pct,
            m.error_sd_pct,
            m.kendall_tau.map_or("undefined (fewer than 2 distinct genomes)".to_string(), |t| format!("{t:.3}")),
            m.rmse_ms
        )
    };
    line("additive", &report.additive);
    if let Some(c) = &report.corrected {
        line("corrected", c);
    }
    if let Some(c) = &report.ceiling {
        println!(
            "ceiling    within ±10% {:5.1}%   MAPE {:5.2}%   Kendall τ {}   (repetition against repetition; CV {:.1}%; a \
             perfect predictor: {:.1}% against the mean)",
            100.0 * c.repeat_within_10pct,
            c.repeat_mape,
            c.repeat_kendall_tau.map_or("undefined".to_string(), |t| format!("{t:.3}")),
            c.repeat_cv_pct,
            100.0 * c.perfect_within_10pct
        );
    }
    if let Some(b) = &report.budget {
        let ceiling = b.repeat_wrong_side.map_or(String::new(), |r| format!(" (repetitions disagree on {r:.1})"));
        println!(
            "budget     {:.3} ms: {} genomes measured within ±10% of it, {} predicted on the wrong side{ceiling}",
            b.budget_ms, b.near, b.wrong_side
        );
    }
    if let Some(d) = &report.drift {
        println!("drift      {}", drift_line(d));
    }
    if let Some(noisy) = report.too_noisy(0.95) {
        println!("note: {noisy}");
    }
    if let Some((models, _)) = &trained {
        for m in models {
            println!(
                "trained    {}: {} predicted {:.3} ms, measured {:.3} ms on the images ({:+.1}%)",
                m.model, m.genome, m.predicted_ms, m.measured_ms, m.error_pct
            );
        }
        let held = models.iter().filter(|m| m.measured_ms <= m.predicted_ms).count();
        println!("trained    {held} of {} ran within their prediction", models.len());
    }
    Ok(())
}

/// The images of `check --images folder`: its first [`MAX_IMAGES`] JPEG and PNG files by name
/// (none is an error naming the folder).
fn trained_images(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("--images {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    if images.is_empty() {
        anyhow::bail!("--images {}: no JPEG or PNG image in it", folder.display());
    }
    images.sort();
    images.truncate(MAX_IMAGES);
    Ok(images)
}

/// `check --model`: the trained models against the table on `images`, with the check's protocol.
fn check_models(
    table: &LatencyTable,
    space: &SearchSpace,
    runner: &Runner,
    args: &CheckArgs,
    images: &[PathBuf],
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<TrainedCheck>, Drift)> {
    let protocol = args.timing.protocol();
    let runner = Runner { timing: protocol.plan, ..runner.clone() };
    let stem = DetectorConfig { input: table.genes.input[0], ..base_config(table.classes, table.shuffle) };
    let mut reference = runner.stem_reference(space, &stem, args.timing.drift_tolerance, None);
    Ok(check_trained(table, &args.model, images, (&runner, &protocol, &mut reference), log)?)
}

/// `latency serve`: the latency server on this machine, until Ctrl-C or SIGTERM.
fn serve_here(args: ServeArgs) -> Result<()> {
    let token = args.token.clone().or_else(token_from_env);
    let loopback =
        args.addr.rsplit_once(':').is_some_and(|(host, _)| ["127.0.0.1", "localhost", "[::1]"].contains(&host.trim()));
    if token.is_none() && !loopback {
        eprintln!(
            "warning: listening on {} without --token: anyone who reaches this port can make this machine run models",
            args.addr
        );
    }
    let opts = ServeOptions {
        addr: args.addr.clone(),
        device: Device::parse(&args.device)?,
        threads: args.threads,
        token: token.clone(),
        max_model_bytes: args.max_model_mib << 20,
    };
    serve(
        opts,
        |addr, info| {
            use std::io::Write;
            println!("listening on http://{addr}");
            let _ = std::io::stdout().flush();
            let token = if token.is_some() { "a token" } else { "no token" };
            eprintln!(
                "measuring on {}; models up to {} MiB, one at a time, {token} required",
                server_line(info),
                info.max_model_bytes >> 20
            );
        },
        |line| eprintln!("{line}"),
    )?;
    Ok(())
}

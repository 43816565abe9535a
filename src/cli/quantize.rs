//! `detnas quantize`: static INT8 quantization (QDQ) of an exported float detector, calibrated on a
//! folder of real images; also the `--int8` path of `detnas export`.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use detnas_core::fsutil::write_atomic;
use detnas_infer::DecodeLimits;
use detnas_infer::folder::inputs::collect_inputs;
use detnas_infer::quantize::{CalibMethod, QuantizeOptions, calibration_inputs, quantize_detector};
use detnas_onnx::ModelProto;
use detnas_onnx::graph::encode;
use detnas_onnx::onnx_protobuf::Message;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MethodArg {
    /// Smallest and largest values seen.
    Minmax,
    /// The 99.99th percentile of the values (and the 0.01th).
    Percentile,
    /// The KL-optimal clipping threshold (TensorRT's entropy calibration).
    Entropy,
}

/// Calibration settings shared by `quantize` and `export --int8`.
#[derive(Args, Debug, Clone)]
pub struct CalibArgs {
    /// Calibration images: a folder (walked recursively), files or globs; use images like those the
    /// model will see (letterboxed exactly as at inference).
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub calibrate: Vec<String>,
    /// Images used, evenly spaced over the sorted list.
    #[arg(long, default_value_t = 32, value_parser = super::values::images)]
    calib_images: usize,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value = "percentile")]
    calib_method: MethodArg,
    /// The most sensitive convolutions (by the per-layer sensitivity pass) kept in float, besides
    /// the input stem.
    #[arg(long, default_value_t = 2, value_parser = super::values::layers)]
    float_layers: usize,
    /// Images of the sensitivity pass (0 skips it).
    #[arg(long, default_value_t = 4, value_parser = super::values::images_or_none)]
    sensitivity_images: usize,
    /// 7-bit weights, for CPUs whose int8 dot products saturate in 16 bits.
    #[arg(long)]
    reduce_range: bool,
    /// ONNX Runtime threads for calibration (default: all cores).
    #[arg(long, value_parser = super::values::Threads)]
    calib_threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The float model (exported by `detnas export`).
    model: PathBuf,
    /// Output file (default: `<model>.int8.onnx`, or `.fp16.onnx`, beside the input).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Half precision instead (network in float16, float32 inputs, outputs and post-processing),
    /// for GPU execution providers; needs no calibration.
    #[arg(long, conflicts_with = "calibrate")]
    fp16: bool,
    /// Write the backbone's channel shuffle this way before converting (`detnas export
    /// --layout`): shuffle-free folds it into the weights, which makes INT8 faster on CPUs
    /// (default: as the model has it).
    #[arg(long, value_parser = ["shuffle", "shuffle-free"])]
    layout: Option<String>,
    #[command(flatten)]
    calib: CalibArgs,
}

/// Every `step`-th image of the sorted list, `n` of them.
fn spread(mut files: Vec<PathBuf>, n: usize) -> Vec<PathBuf> {
    files.sort();
    if files.len() <= n {
        return files;
    }
    (0..n).map(|i| files[i * files.len() / n].clone()).collect()
}

/// Quantizes `model` with the calibration settings; prints the sensitivity and what was kept float.
pub fn quantize(model: &ModelProto, calib: &CalibArgs) -> Result<ModelProto> {
    if calib.calibrate.is_empty() {
        bail!("--calibrate DIR is required: INT8 ranges come from real images");
    }
    if detnas_onnx::quantize::metadata(model, detnas_infer::quantize::QUANTIZATION_KEY).is_some() {
        bail!("the model is already quantized");
    }
    if detnas_onnx::quantize::metadata(model, detnas_onnx::half::PRECISION_KEY).is_some() {
        bail!("the model is float16: quantize its float32 original");
    }
    let collected = collect_inputs(&calib.calibrate, None);
    for f in &collected.failures {
        eprintln!("warning: {}", f.error);
    }
    if collected.files.is_empty() {
        bail!("no images found in {}", calib.calibrate.join(", "));
    }
    let paths = spread(collected.files, calib.calib_images);
    let (inputs, failures) = calibration_inputs(model, &paths, &DecodeLimits::default())?;
    for f in &failures {
        eprintln!("warning: skipped calibration image {f}");
    }
    if inputs.is_empty() {
        bail!("none of the {} calibration images could be read", paths.len());
    }
    let method = match calib.calib_method {
        MethodArg::Minmax => CalibMethod::MinMax,
        MethodArg::Percentile => CalibMethod::Percentile(99.99),
        MethodArg::Entropy => CalibMethod::Entropy,
    };
    let opts = QuantizeOptions {
        method,
        float_layers: calib.float_layers,
        sensitivity_images: calib.sensitivity_images,
        reduce_range: calib.reduce_range,
        threads: calib.calib_threads,
    };
    eprintln!(
        "calibrating on {} images ({}), sensitivity on {}",
        inputs.len(),
        method.name(),
        opts.sensitivity_images.min(inputs.len())
    );
    let report = quantize_detector(model, &inputs, &opts)?;
    if !report.sensitivity.is_empty() {
        eprintln!("most sensitive convolutions (head-output error when quantized alone):");
        for s in report.sensitivity.iter().take(5) {
            eprintln!("  {:<60} {:.2e}", s.layer, s.error);
        }
    }
    eprintln!(
        "quantized {} of {} convolutions; float: {}; head-output error {:.2e} (all but the stem: {:.2e})",
        report.quantized,
        report.convolutions,
        report.float_layers.join(", "),
        report.error_final,
        report.error_all
    );
    Ok(report.model)
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.model, if args.fp16 { "fp16" } else { "int8" }));
    let mut inputs = vec![("MODEL", args.model.as_path())];
    inputs.extend(args.calib.calibrate.iter().map(|c| ("--calibrate", Path::new(c))));
    super::paths::check_output("--out", &out, super::paths::Artefact::Model, &inputs)?;
    let (model, bytes) = read_model(&args.model)?;
    let model = match args.layout.as_deref() {
        Some(layout) => relayout_model(&model, &args.model, layout)?,
        None => model,
    };
    let q = if args.fp16 { to_fp16(&model) } else { quantize(&model, &args.calib) }
        .with_context(|| format!("quantizing {}", args.model.display()))?;
    let encoded = encode(&q)?;
    write_atomic(&out, &encoded)?;
    eprintln!("wrote {} ({:.1} MB, float {:.1} MB)", out.display(), encoded.len() as f64 / 1e6, bytes as f64 / 1e6);
    Ok(())
}

/// An ONNX model file with any external data read in (as ONNX Runtime would), and its size.
pub fn read_model(path: &Path) -> Result<(ModelProto, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut model =
        ModelProto::parse_from_bytes(&bytes).with_context(|| format!("{}: not an ONNX model", path.display()))?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    detnas_onnx::external::internalize(&mut model, folder).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((model, bytes.len()))
}

/// `model` (read from `path`) with its channel shuffle written as `layout` says
/// ([`detnas_onnx::relayout`]).
pub fn relayout_model(model: &ModelProto, path: &Path, layout: &str) -> Result<ModelProto> {
    let layout = detnas_onnx::Layout::from_name(layout).context("clap checks the layout")?;
    Ok(detnas_onnx::relayout::relayout(model, &path.display().to_string(), layout)?)
}

fn default_out(model: &Path, precision: &str) -> PathBuf {
    let stem = model.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned());
    model.with_file_name(format!("{stem}.{precision}.onnx"))
}

/// The float16 version of an exported float model ([`detnas_onnx::half`]).
pub fn to_fp16(model: &ModelProto) -> Result<ModelProto> {
    if detnas_onnx::quantize::metadata(model, detnas_infer::quantize::QUANTIZATION_KEY).is_some()
        || detnas_onnx::quantize::metadata(model, detnas_onnx::half::PRECISION_KEY).is_some()
    {
        bail!("the model is not float32 (already converted)");
    }
    let half = detnas_onnx::half::to_fp16(model)?;
    eprintln!("converted the network to float16; inputs, outputs and post-processing stay float32");
    Ok(half)
}

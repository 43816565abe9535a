//! `detnas export`: a DetNAS detector (RetinaNet or FPN Faster R-CNN) to a self-contained ONNX model.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use detnas_core::detector::{DetectorConfig, DetectorKind, HeadConv, detector_flops};
use detnas_core::size::format_count;
use detnas_core::space::ChannelShuffle;
use detnas_core::{InputSize, fsutil::write_atomic};
#[cfg(feature = "infer")]
use detnas_onnx::ModelProto;
use detnas_onnx::graph::encode;
use detnas_onnx::source::{ExportRequest, Overrides, Prepared, Source};
use detnas_onnx::{ExportOptions, Layout};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum HeadConvArg {
    /// Dense 3x3 convs (torchvision's RetinaNet head).
    Dense,
    /// Depthwise 3x3 + pointwise 1x1: far cheaper.
    Separable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DetectorArg {
    /// One-stage RetinaNet on P3-P7.
    Retinanet,
    /// Two-stage FPN Faster R-CNN on P2-P6 (RPN, RoIAlign and box head in the graph).
    FasterRcnn,
}

impl DetectorArg {
    fn kind(self) -> DetectorKind {
        match self {
            DetectorArg::Retinanet => DetectorKind::Retinanet,
            DetectorArg::FasterRcnn => DetectorKind::FasterRcnn,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ShuffleArg {
    /// Even channels kept, odd ones processed (the DetNAS authors' code).
    EvenOdd,
    /// First half kept, second half processed, outputs interleaved.
    HalfInterleave,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Search space (optional when --arch is a preset or --checkpoint is given).
    #[arg(long)]
    space: Option<String>,
    /// Encoding, preset name or full genome (`23113213311133203333:fpn96:head96x3:sep:320x320`:
    /// its genes set the FPN / head width, depth, conv type and input); optional for a single-path
    /// checkpoint. From a supernet checkpoint every tensor is sliced to the genome's shapes.
    #[arg(long, value_parser = super::values::genome)]
    arch: Option<String>,
    /// Weights (safetensors, names from detnas_core::detector::plan); DetNAS random initialisation when absent.
    #[arg(long, conflicts_with = "checkpoint")]
    weights: Option<PathBuf>,
    /// A training checkpoint folder (`detnas train ...`): its weights, space, architecture and
    /// detector configuration.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A search folder (`detnas search --out`): exports its best finalist (or --rank N) from the
    /// searched supernet, with the BN statistics the search recalibrated and scored it with.
    #[arg(long, conflicts_with_all = ["checkpoint", "weights", "arch"])]
    search: Option<PathBuf>,
    /// An exported float model written again with its own genome, configuration and weights
    /// (e.g. `--layout shuffle-free` for a model exported before, or shipped without its
    /// checkpoint); its batch size and raw outputs are kept.
    #[arg(long, conflicts_with_all = ["checkpoint", "weights", "arch", "search", "config", "detector", "input",
        "classes", "head_conv", "head_convs", "fpn_channels", "shuffle", "batch", "raw_outputs", "space"])]
    model: Option<PathBuf>,
    /// Rank of the finalist to export with --search (1 = best).
    #[arg(long, default_value_t = 1, requires = "search", value_parser = super::values::genomes)]
    rank: usize,
    /// Output ONNX file.
    #[arg(long)]
    out: PathBuf,
    /// Detector family, with its torchvision defaults as the base configuration (default
    /// retinanet; a --config file, a checkpoint or a search names its own, which this must match).
    #[arg(long, value_enum)]
    detector: Option<DetectorArg>,
    /// Detector configuration (TOML, fields of DetectorConfig); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Network input HxW; both sides multiples of 32 (the backbone's largest stride).
    #[arg(long, value_parser = super::values::input_size)]
    input: Option<String>,
    /// Class names, comma separated; non-empty and distinct.
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// Convolution type of the head towers.
    #[arg(long, value_enum)]
    head_conv: Option<HeadConvArg>,
    /// Convs per head tower (RetinaNet: classification and regression each; Faster R-CNN: 3x3
    /// convs of the box head before its fully connected layer, 0 for two fully connected layers).
    #[arg(long, value_parser = super::values::head_convs)]
    head_convs: Option<usize>,
    /// FPN and head channels.
    #[arg(long, value_parser = super::values::width)]
    fpn_channels: Option<u64>,
    /// Channel split of stride-1 blocks; must match how the weights were trained.
    #[arg(long, value_enum)]
    shuffle: Option<ShuffleArg>,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Quantize to INT8 (QDQ, as `detnas quantize`), calibrated on --calibrate images.
    #[cfg(feature = "infer")]
    #[arg(long, requires = "calibrate")]
    int8: bool,
    /// Half precision for GPU execution providers: the network in float16, inputs, outputs and
    /// post-processing in float32.
    #[cfg(feature = "infer")]
    #[arg(long, conflicts_with = "int8")]
    fp16: bool,
    #[cfg(feature = "infer")]
    #[command(flatten)]
    calib: super::quantize::CalibArgs,
    /// Images per run (RetinaNet): input `[N, 3, H, W]`, post-processing per image in the graph and
    /// a `batch_index` output, for GPU throughput with ONNX Runtime directly (the SDK runs batch-1
    /// models).
    #[arg(long, default_value_t = 1, value_parser = super::values::batch_size)]
    batch: usize,
    /// Also output the raw tensors: RetinaNet's head outputs `cls_logits` and `bbox_regression`,
    /// Faster R-CNN's `proposals` and `proposal_scores`.
    #[arg(long)]
    raw_outputs: bool,
    /// How the backbone's channel shuffle is written: as trained (strided slices), or
    /// shuffle-free (folded into the weights, contiguous splits only; the same outputs, faster
    /// at INT8 on CPUs).
    #[arg(long, default_value = "shuffle", value_parser = ["shuffle", "shuffle-free"])]
    layout: String,
}

/// Reads a TOML detector configuration (unknown fields rejected).
fn load_config(path: &Path) -> Result<DetectorConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid detector config {}", path.display()))
}

impl ExportArgs {
    /// The library's request for these flags.
    fn request(&self) -> Result<ExportRequest> {
        let source = match (&self.search, &self.checkpoint, &self.weights) {
            (Some(dir), _, _) => Source::Search { dir: dir.clone(), rank: self.rank },
            (None, Some(dir), _) => Source::Checkpoint { dir: dir.clone(), arch: self.arch.clone() },
            (None, None, weights) => {
                let arch = self.arch.clone().context("--arch is required")?;
                match weights {
                    Some(path) => Source::Weights { path: path.clone(), space: self.space.clone(), arch },
                    None => Source::Random { space: self.space.clone(), arch, seed: self.seed },
                }
            }
        };
        let overrides = Overrides {
            config: self.config.as_ref().map(|p| Ok::<_, anyhow::Error>((p.clone(), load_config(p)?))).transpose()?,
            detector: self.detector.map(DetectorArg::kind),
            input: self.input.as_deref().map(InputSize::parse).transpose()?,
            classes: self.classes.clone(),
            head_conv: self.head_conv.map(|h| match h {
                HeadConvArg::Dense => HeadConv::Dense,
                HeadConvArg::Separable => HeadConv::Separable,
            }),
            head_convs: self.head_convs,
            fpn_channels: self.fpn_channels,
            shuffle: self.shuffle.map(|s| match s {
                ShuffleArg::EvenOdd => ChannelShuffle::EvenOdd,
                ShuffleArg::HalfInterleave => ChannelShuffle::HalfInterleave,
            }),
        };
        let layout = Layout::from_name(&self.layout).expect("clap checks the layout");
        let options = ExportOptions { raw_outputs: self.raw_outputs, batch: self.batch, layout };
        Ok(ExportRequest { source, overrides, options })
    }
}

/// Checks that `--out` overwrites none of the files the export reads (`--weights`, `--config`,
/// the checkpoint and its weights, the calibration images).
fn check_out_path(args: &ExportArgs, prepared: &Prepared) -> Result<()> {
    let mut inputs: Vec<(&str, &Path)> = prepared.reads();
    inputs.extend(args.config.as_deref().map(|c| ("--config", c)));
    #[cfg(feature = "infer")]
    inputs.extend(args.calib.calibrate.iter().map(|c| ("--calibrate", Path::new(c))));
    super::paths::check_output("--out", &args.out, super::paths::Artefact::Model, &inputs)
}

/// `model` converted as asked: quantized with `--int8`, half precision with `--fp16`, else as it
/// is (and `--calibrate` without `--int8` is an error).
#[cfg(feature = "infer")]
fn convert_precision(model: ModelProto, args: &ExportArgs) -> Result<ModelProto> {
    Ok(if args.int8 {
        super::quantize::quantize(&model, &args.calib)?
    } else if args.fp16 {
        super::quantize::to_fp16(&model)?
    } else {
        if !args.calib.calibrate.is_empty() {
            anyhow::bail!("--calibrate is for --int8 exports");
        }
        model
    })
}

/// `detnas export --model`: the exported model written again with `--layout` (and converted as
/// asked).
#[cfg(feature = "infer")]
fn export_model(args: &ExportArgs, path: &Path) -> Result<()> {
    let mut inputs = vec![("--model", path)];
    inputs.extend(args.calib.calibrate.iter().map(|c| ("--calibrate", Path::new(c))));
    super::paths::check_output("--out", &args.out, super::paths::Artefact::Model, &inputs)?;
    let (model, _) = super::quantize::read_model(path)?;
    let model = super::quantize::relayout_model(&model, path, &args.layout)?;
    let model = convert_precision(model, args)?;
    let bytes = encode(&model)?;
    write_atomic(&args.out, &bytes)?;
    eprintln!(
        "wrote {} ({:.1} MB): {} written {}",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        path.display(),
        args.layout
    );
    Ok(())
}

/// `detnas export --model` needs the inference build (it reads models with the converters').
#[cfg(not(feature = "infer"))]
fn export_model(_: &ExportArgs, _: &Path) -> Result<()> {
    anyhow::bail!("--model needs a build with the `infer` feature")
}

/// `detnas export`: resolves the architecture, configuration and weights from the arguments (a
/// search finalist, a checkpoint or flags) through [`detnas_onnx::source`], exports and converts
/// the model, writes it atomically to `--out` and prints a summary (and any warning about the
/// checkpoint) on stderr.
pub fn run(args: ExportArgs) -> Result<()> {
    if let Some(path) = &args.model {
        return export_model(&args, path);
    }
    let prepared = args.request()?.prepare()?;
    check_out_path(&args, &prepared)?;
    let exported = prepared.export()?;
    #[cfg(feature = "infer")]
    let model = convert_precision(exported.model, &args)?;
    #[cfg(not(feature = "infer"))]
    let model = exported.model;
    let bytes = encode(&model)?;
    write_atomic(&args.out, &bytes)?;
    if let Some(w) = &exported.warning {
        eprintln!("{w}");
    }
    let (space, arch, cfg) = (&exported.space, &exported.arch, &exported.config);
    let flops = detector_flops(space, arch, cfg)?;
    eprintln!(
        "wrote {} ({:.1} MB): {} {} {} {} classes, input {}, {} FLOPs (backbone {}), weights: {}",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        space.name,
        arch,
        cfg.kind(),
        cfg.num_classes(),
        cfg.input,
        format_count(flops.total),
        format_count(flops.backbone),
        exported.weights_source
    );
    Ok(())
}

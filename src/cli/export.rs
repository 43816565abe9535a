//! `detnas export`: a DetNAS detector (RetinaNet or FPN Faster R-CNN) to a self-contained ONNX model.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use detnas_core::detector::{DetectorConfig, DetectorKind, HeadConv, detector_flops};
use detnas_core::genome::{DetectorGenes, Genome};
use detnas_core::pareto::Finalists;
use detnas_core::plan::{ParamSpec, Paths, detector_params};
use detnas_core::size::format_count;
use detnas_core::space::ChannelShuffle;
use detnas_core::{InputSize, fsutil::write_atomic};
#[cfg(feature = "infer")]
use detnas_onnx::ModelProto;
use detnas_onnx::graph::encode;
use detnas_onnx::{ExportOptions, Weights, export_detector};
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
    /// Weights (safetensors, names from detnas_core::plan); DetNAS random initialisation when absent.
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
}

/// Reads a TOML detector configuration (unknown fields rejected).
pub fn load_config(path: &Path) -> Result<DetectorConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid detector config {}", path.display()))
}

/// Space, architecture, detector configuration and weights file of a checkpoint folder.
fn read_checkpoint(dir: &Path, arch: Option<&str>) -> Result<(String, String, DetectorConfig, PathBuf)> {
    let state = detnas_core::checkpoint::load_state(dir)?;
    let arch = state.arch_or(dir, arch)?;
    let detector = state.detector_config(dir)?;
    Ok((state.space, arch, detector, dir.join(state.weights)))
}

/// What a checkpoint can export: its own classes (another list would take the wrong logit
/// channels); a checkpoint trained without `[genes]` has one FPN and head, so slicing it to other
/// widths or depths would export weights nobody trained and only the input resolution may differ;
/// a genes supernet slices to any genome, with a warning for genes outside the space it trained.
/// Returns the warning to print once the export succeeded, if any.
fn check_against_checkpoint(dir: &Path, trained: &DetectorConfig, cfg: &DetectorConfig) -> Result<Option<String>> {
    if cfg.class_names != trained.class_names {
        anyhow::bail!(
            "{}: trained for the classes [{}], --classes asks for [{}]: export the classes the checkpoint was trained with",
            dir.display(),
            trained.class_names.join(", "),
            cfg.class_names.join(", ")
        );
    }
    let state = detnas_core::checkpoint::load_state(dir)?;
    let trained_genes = DetectorGenes::of(trained);
    let asked = DetectorGenes { input: trained_genes.input, ..DetectorGenes::of(cfg) };
    let Some(genes) = state.config.get("genes") else {
        if asked != trained_genes {
            anyhow::bail!(
                "{}: trained with the fixed detector {trained_genes} (no [genes]): only the input resolution may change, asked for {}",
                dir.display(),
                DetectorGenes::of(cfg)
            );
        }
        return Ok(None);
    };
    if let Ok(space) = serde_json::from_value::<detnas_core::genome::GeneSpace>(genes.clone()) {
        let asked =
            DetectorGenes { input: space.input.first().copied().unwrap_or(cfg.input), ..DetectorGenes::of(cfg) };
        if !space.contains(&asked) {
            return Ok(Some(format!(
                "warning: {}: the supernet never trained the detector genes {} (outside its [genes]); their weights are sliced from wider ones",
                dir.display(),
                DetectorGenes::of(cfg)
            )));
        }
    }
    Ok(None)
}

/// The checkpoint, candidate and recalibrated BN statistics of a search's finalist.
fn search_finalist(dir: &Path, rank: usize) -> Result<(PathBuf, String, PathBuf)> {
    let finalists = Finalists::read(dir)?;
    let f = finalists.rank(rank, dir)?;
    Ok((finalists.checkpoint.clone(), f.candidate.clone(), dir.join(&f.bn)))
}

/// A checkpoint folder's space, architecture, detector configuration and weights file
/// ([`read_checkpoint`]).
type CheckpointParts = (String, String, DetectorConfig, PathBuf);

/// Checks that `--out` overwrites none of the files the export reads (`--weights`, `--config`,
/// the checkpoint and its weights, the calibration images).
fn check_out_path(
    args: &ExportArgs,
    checkpoint: Option<&Path>,
    from_checkpoint: Option<&CheckpointParts>,
) -> Result<()> {
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    inputs.extend(args.weights.as_deref().map(|w| ("--weights", w)));
    inputs.extend(args.config.as_deref().map(|c| ("--config", c)));
    inputs.extend(from_checkpoint.map(|(_, _, _, w)| ("the checkpoint's weights", w.as_path())));
    inputs.extend(checkpoint.map(|c| ("--checkpoint", c)));
    #[cfg(feature = "infer")]
    inputs.extend(args.calib.calibrate.iter().map(|c| ("--calibrate", Path::new(c))));
    super::paths::check_output("--out", &args.out, super::paths::Artefact::Model, &inputs)
}

/// The detector configuration before the genome and the flags: `--config`, else the checkpoint's,
/// else the defaults of `--detector` (RetinaNet). An error when `--detector` names another family.
fn base_config(args: &ExportArgs, from_checkpoint: Option<&CheckpointParts>) -> Result<DetectorConfig> {
    let base = match (&args.config, from_checkpoint) {
        (Some(p), _) => load_config(p)?,
        (None, Some((_, _, det, _))) => det.clone(),
        (None, None) => DetectorConfig::new(args.detector.map_or(DetectorKind::Retinanet, DetectorArg::kind)),
    };
    if let Some(asked) = args.detector.map(DetectorArg::kind).filter(|&k| k != base.kind()) {
        let origin = args.config.as_ref().map_or("the checkpoint".to_string(), |p| p.display().to_string());
        anyhow::bail!("--detector {asked} contradicts {origin}, which describes a {} detector", base.kind());
    }
    Ok(base)
}

/// Applies the flags that override the configuration (`--input`, `--classes`, `--head-conv`,
/// `--head-convs`, `--fpn-channels`, `--shuffle`) to `cfg`; nothing is validated here but the
/// input size's syntax.
fn apply_flags(cfg: &mut DetectorConfig, args: &ExportArgs) -> Result<()> {
    if let Some(i) = &args.input {
        cfg.input = InputSize::parse(i)?;
    }
    if let Some(c) = &args.classes {
        // Empty and duplicate names are refused by `validate` below, not dropped.
        cfg.class_names = c.iter().map(|s| s.trim().to_string()).collect();
        cfg.category_ids.clear();
    }
    if let Some(h) = args.head_conv {
        cfg.head_conv = match h {
            HeadConvArg::Dense => HeadConv::Dense,
            HeadConvArg::Separable => HeadConv::Separable,
        };
    }
    if let Some(n) = args.head_convs {
        cfg.head_convs = n;
    }
    if let Some(c) = args.fpn_channels {
        cfg.fpn_channels = c;
        cfg.head_channels = c;
    }
    if let Some(s) = args.shuffle {
        cfg.shuffle = match s {
            ShuffleArg::EvenOdd => ChannelShuffle::EvenOdd,
            ShuffleArg::HalfInterleave => ChannelShuffle::HalfInterleave,
        };
    }
    Ok(())
}

/// The weights of `params`: `--weights`, else the checkpoint's (with the finalist's recalibrated
/// BN statistics over them for a search), sliced to the genome's shapes; else a random
/// initialisation from `--seed`.
fn export_weights(
    args: &ExportArgs,
    from_checkpoint: Option<&CheckpointParts>,
    finalist: Option<&(PathBuf, String, PathBuf)>,
    params: &[ParamSpec],
) -> Result<Weights> {
    // A supernet (every choice; an elastic FPN and head) holds each genome's tensors as leading
    // blocks of its own: slicing is the identity for tensors of exactly the right shape.
    Ok(match (&args.weights, from_checkpoint) {
        (Some(p), _) => Weights::load(p)?.sliced_to(params)?,
        (None, Some((_, _, _, p))) => {
            let mut w = Weights::load(p)?;
            if let Some((_, _, bn)) = finalist {
                w.overlay(Weights::load(bn)?);
                w.source = format!("{} with BN statistics {}", w.source, bn.display());
            }
            w.sliced_to(params)?
        }
        (None, None) => Weights::random(params, args.seed),
    })
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

/// `detnas export`: resolves the architecture, configuration and weights from the arguments (a
/// search finalist, a checkpoint or flags), exports and converts the model, writes it atomically
/// to `--out` and prints a summary (and any warning about the checkpoint) on stderr.
pub fn run(args: ExportArgs) -> Result<()> {
    let finalist = args.search.as_deref().map(|d| search_finalist(d, args.rank)).transpose()?;
    let checkpoint = finalist.as_ref().map(|f| f.0.clone()).or_else(|| args.checkpoint.clone());
    let arch_text = finalist.as_ref().map(|f| f.1.clone()).or_else(|| args.arch.clone());
    let from_checkpoint = checkpoint.as_deref().map(|d| read_checkpoint(d, arch_text.as_deref())).transpose()?;
    check_out_path(&args, checkpoint.as_deref(), from_checkpoint.as_ref())?;
    let genome = match &from_checkpoint {
        Some((space, arch, _, _)) => Genome::parse(Some(space), arch)?,
        None => Genome::parse(args.space.as_deref(), arch_text.as_deref().context("--arch is required")?)?,
    };
    let (space, arch) = (&genome.space, &genome.arch);
    let base = base_config(&args, from_checkpoint.as_ref())?;
    let mut cfg = genome.detector_config(&base)?;
    apply_flags(&mut cfg, &args)?;
    cfg.validate()?;
    detnas_core::limits::check_export_size("export", space, arch, &cfg)?;
    let warning = match (&checkpoint, &from_checkpoint) {
        (Some(dir), Some((_, _, trained, _))) => check_against_checkpoint(dir, trained, &cfg)?,
        _ => None,
    };
    let params = detector_params(space, Paths::Single(arch), &cfg);
    let weights = export_weights(&args, from_checkpoint.as_ref(), finalist.as_ref(), &params)?;
    let model = export_detector(
        space,
        arch,
        &cfg,
        &weights,
        &ExportOptions { raw_outputs: args.raw_outputs, batch: args.batch },
    )?;
    #[cfg(feature = "infer")]
    let model = convert_precision(model, &args)?;
    let bytes = encode(&model)?;
    write_atomic(&args.out, &bytes)?;
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let flops = detector_flops(space, arch, &cfg)?;
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
        weights.source
    );
    Ok(())
}

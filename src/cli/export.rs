//! `detnas export`: a DetNAS RetinaNet to a self-contained ONNX model.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use detnas_core::arch::resolve;
use detnas_core::detector::{DetectorConfig, HeadConv, detector_flops};
use detnas_core::plan::{Paths, detector_params};
use detnas_core::size::format_count;
use detnas_core::space::ChannelShuffle;
use detnas_core::{InputSize, fsutil::write_atomic};
use detnas_onnx::graph::encode;
use detnas_onnx::{ExportOptions, Weights, export_retinanet};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum HeadConvArg {
    Dense,
    Separable,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ShuffleArg {
    EvenOdd,
    HalfInterleave,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Search space (optional when --arch is a preset).
    #[arg(long)]
    space: Option<String>,
    /// Encoding or preset name.
    #[arg(long)]
    arch: String,
    /// Weights (safetensors, names from detnas_core::plan); DetNAS random initialisation when absent.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Output ONNX file.
    #[arg(long)]
    out: PathBuf,
    /// Detector configuration (TOML, fields of DetectorConfig); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Network input HxW (multiple of 32).
    #[arg(long)]
    input: Option<String>,
    /// Class names, comma separated.
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    #[arg(long, value_enum)]
    head_conv: Option<HeadConvArg>,
    #[arg(long)]
    head_convs: Option<usize>,
    #[arg(long)]
    fpn_channels: Option<u64>,
    #[arg(long, value_enum)]
    shuffle: Option<ShuffleArg>,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also output the raw head tensors `cls_logits` and `bbox_regression`.
    #[arg(long)]
    raw_outputs: bool,
}

/// Reads a TOML detector configuration (unknown fields rejected).
pub fn load_config(path: &Path) -> Result<DetectorConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid detector config {}", path.display()))
}

pub fn run(args: ExportArgs) -> Result<()> {
    let (space, arch) = resolve(args.space.as_deref(), &args.arch)?;
    let mut cfg = match &args.config {
        Some(p) => load_config(p)?,
        None => DetectorConfig::default(),
    };
    if let Some(i) = &args.input {
        cfg.input = InputSize::parse(i)?;
    }
    if let Some(c) = args.classes {
        cfg.class_names = c.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
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
    cfg.validate().map_err(|e| anyhow::anyhow!("invalid detector configuration: {e}"))?;
    let weights = match &args.weights {
        Some(p) => Weights::load(p)?,
        None => Weights::random(&detector_params(&space, Paths::Single(&arch), &cfg), args.seed),
    };
    let model = export_retinanet(&space, &arch, &cfg, &weights, &ExportOptions { raw_outputs: args.raw_outputs })?;
    let bytes = encode(&model)?;
    write_atomic(&args.out, &bytes)?;
    let flops = detector_flops(&space, &arch, &cfg)?;
    eprintln!(
        "wrote {} ({:.1} MB): {} {} RetinaNet {} classes, input {}, {} FLOPs (backbone {}), weights: {}",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        space.name,
        arch,
        cfg.num_classes(),
        cfg.input,
        format_count(flops.total),
        format_count(flops.backbone),
        weights.source
    );
    Ok(())
}

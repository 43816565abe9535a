//! `detnas data ...`: data set utilities.

use anyhow::Result;
use clap::{Args, Subcommand};
use detnas_data::detection::{DetectionDataset, ValidationPolicy};
use detnas_data::synthetic::{SyntheticSpec, generate};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Generate a seeded synthetic detection set (PNG images + COCO JSON) for quick experiments.
    Synthetic(SyntheticArgs),
    /// Load a COCO JSON with validation, decode every image, and print what was found (counts of
    /// every problem, undecodable images included).
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct SyntheticArgs {
    /// Output folder (PNG images in images/, COCO JSON next to them).
    #[arg(long)]
    out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 32)]
    images: usize,
    /// Image size WxH.
    #[arg(long, default_value = "128x128")]
    size: String,
    /// Number of shape classes.
    #[arg(long, default_value_t = 3)]
    classes: usize,
    /// Seed of shapes, colours and positions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// COCO instances JSON.
    #[arg(long)]
    coco: PathBuf,
    /// Image folder (default: the JSON's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Treat every problem as an error.
    #[arg(long)]
    strict: bool,
    /// Read only each image's header instead of decoding it fully (faster; misses corrupt or
    /// truncated pixel data, which training then skips).
    #[arg(long)]
    headers_only: bool,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Synthetic(a) => {
            let (w, h) =
                a.size.split_once(['x', 'X']).ok_or_else(|| anyhow::anyhow!("--size must be WxH, got `{}`", a.size))?;
            let spec = SyntheticSpec {
                images: a.images,
                width: w.parse()?,
                height: h.parse()?,
                classes: a.classes,
                seed: a.seed,
                ..SyntheticSpec::default()
            };
            let json = generate(&a.out, &spec)?;
            println!("{}", json.display());
            Ok(())
        }
        DataCommand::Check(a) => {
            let policy = ValidationPolicy {
                decode_images: !a.headers_only,
                ..if a.strict { ValidationPolicy::strict() } else { ValidationPolicy::default() }
            };
            let dir = a.images.unwrap_or_else(|| a.coco.parent().map(PathBuf::from).unwrap_or_default());
            let ds = DetectionDataset::from_coco(&a.coco, &dir, &policy)?;
            println!(
                "{} images, {} boxes, {} classes: {}",
                ds.samples.len(),
                ds.num_boxes(),
                ds.num_classes(),
                ds.class_names.join(", ")
            );
            let report = ds.report.to_string();
            if !report.trim().is_empty() {
                println!("{report}");
            }
            Ok(())
        }
    }
}

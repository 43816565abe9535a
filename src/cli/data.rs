//! `detnas data ...`: data set utilities.

use anyhow::Result;
use clap::{Args, Subcommand};
use detnas_data::detection::{DetectionDataset, ValidationPolicy};
use detnas_data::synthetic::{SyntheticSpec, write_set};
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
    /// Output folder (PNG images in images/, COCO JSON next to them): new, empty, or a set this
    /// command wrote (with --overwrite).
    #[arg(long)]
    out: PathBuf,
    /// Replace a set this command wrote in --out (its own files only).
    #[arg(long)]
    overwrite: bool,
    /// Number of images.
    #[arg(long, default_value_t = 32, value_parser = super::values::images)]
    images: usize,
    /// Image size WxH.
    #[arg(long, default_value = "128x128", value_parser = super::values::image_size)]
    size: String,
    /// Number of shape classes.
    #[arg(long, default_value_t = 3, value_parser = super::values::shape_classes)]
    classes: usize,
    /// Seed of shapes, colours and positions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Object count range per image, `MIN..MAX` (default 1..4).
    #[arg(long, default_value = "1..4", value_parser = super::values::object_counts)]
    objects: String,
    /// Object side range in pixels, `MIN..MAX` (default 12..60).
    #[arg(long, default_value = "12..60", value_parser = super::values::object_sizes)]
    sizes: String,
    /// Up to this many unlabelled clutter shapes per image, in colours of no class.
    #[arg(long, default_value_t = 0, value_parser = super::values::distractors)]
    distractors: usize,
    /// Percentage of an earlier object's box a later one may cover (0: no overlap; at most 60).
    #[arg(long, default_value_t = 0, value_parser = super::values::occlusion)]
    occlusion: u32,
}

/// `MIN..MAX` as two numbers.
fn range(flag: &str, text: &str) -> Result<(u32, u32)> {
    let parse = || -> Option<(u32, u32)> {
        let (a, b) = text.split_once("..")?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    parse().ok_or_else(|| anyhow::anyhow!("--{flag} must be MIN..MAX, got `{text}`"))
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
            let (min_objects, max_objects) = range("objects", &a.objects)?;
            let (min_size, max_size) = range("sizes", &a.sizes)?;
            let spec = SyntheticSpec {
                images: a.images,
                width: w.parse()?,
                height: h.parse()?,
                classes: a.classes,
                seed: a.seed,
                min_objects: min_objects as usize,
                max_objects: max_objects as usize,
                min_size,
                max_size,
                distractors: a.distractors,
                occlusion_percent: a.occlusion,
            };
            let (json, note) = write_set(&a.out, &spec, a.overwrite)?;
            if let Some(note) = note {
                eprintln!("{note}");
            }
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

//! What an export starts from — a training checkpoint folder, a search finalist, a weights file or
//! a random initialisation — resolved to one architecture, detector configuration and weights:
//! what `detnas export` runs, for a Rust program too.
//!
//! ```no_run
//! use detnas_onnx::source::{ExportRequest, Source};
//! let request = ExportRequest::new(Source::Checkpoint { dir: "runs/retinanet".into(), arch: None });
//! let exported = request.prepare()?.export()?;
//! std::fs::write("model.onnx", detnas_onnx::graph::encode(&exported.model)?).unwrap();
//! # Ok::<(), detnas_onnx::OnnxError>(())
//! ```

use crate::error::{OnnxError, Result};
use crate::{ExportOptions, ModelProto, Weights, export_detector};
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::detector::{DetectorConfig, DetectorKind, HeadConv};
use detnas_core::search::genome::{DetectorGenes, GeneSpace, Genome};
use detnas_core::search::pareto::Finalists;
use detnas_core::space::ChannelShuffle;
use detnas_core::{Arch, InputSize, SearchSpace};
use std::path::{Path, PathBuf};

/// Where the architecture and weights come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A training checkpoint folder (`detnas train ...`): its weights, space, architecture and
    /// detector configuration. `arch` is required for a supernet (every tensor is sliced to its
    /// shapes) and optional for a single path.
    Checkpoint {
        /// The folder.
        dir: PathBuf,
        /// Encoding, preset or full genome.
        arch: Option<String>,
    },
    /// Finalist `rank` (1 = best) of a search folder, from the searched supernet with the BN
    /// statistics the search recalibrated and scored it with.
    Search {
        /// The search folder.
        dir: PathBuf,
        /// Rank of the finalist.
        rank: usize,
    },
    /// A safetensors file (names from [`detnas_core::detector::plan`]), sliced to the architecture's shapes.
    Weights {
        /// The file.
        path: PathBuf,
        /// Search space (optional when `arch` is a preset).
        space: Option<String>,
        /// Encoding, preset or full genome.
        arch: String,
    },
    /// DetNAS random initialisation.
    Random {
        /// Search space (optional when `arch` is a preset).
        space: Option<String>,
        /// Encoding, preset or full genome.
        arch: String,
        /// Seed of the initialisation.
        seed: u64,
    },
}

/// Settings over the source's detector configuration (each `None` keeps it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// A whole configuration replacing the source's: the file it was read from (named in errors)
    /// and its contents.
    pub config: Option<(PathBuf, DetectorConfig)>,
    /// Detector family: the defaults of this family when the source names none; an error when it
    /// names another.
    pub detector: Option<DetectorKind>,
    /// Network input.
    pub input: Option<InputSize>,
    /// Class names (non-empty, distinct).
    pub classes: Option<Vec<String>>,
    /// Convolution type of the head towers.
    pub head_conv: Option<HeadConv>,
    /// Convs per head tower.
    pub head_convs: Option<usize>,
    /// FPN and head channels.
    pub fpn_channels: Option<u64>,
    /// Channel split of stride-1 blocks (must match the weights' training).
    pub shuffle: Option<ChannelShuffle>,
}

/// One export: a source, overrides and graph options.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportRequest {
    /// Where the architecture and weights come from.
    pub source: Source,
    /// Settings over the configuration.
    pub overrides: Overrides,
    /// Raw outputs, batch size.
    pub options: ExportOptions,
}

impl ExportRequest {
    /// An export of `source` as it is (no overrides, batch 1, no raw outputs).
    pub fn new(source: Source) -> Self {
        ExportRequest { source, overrides: Overrides::default(), options: ExportOptions::default() }
    }

    /// Reads the source (checkpoint state, finalists) and resolves the genome and configuration,
    /// validated and bounded, before any weights are read.
    pub fn prepare(&self) -> Result<Prepared> {
        let finalist = match &self.source {
            Source::Search { dir, rank } => Some(search_finalist(dir, *rank)?),
            _ => None,
        };
        let (checkpoint, arch_text) = match (&self.source, &finalist) {
            (_, Some((ck, candidate, _))) => (Some(ck.clone()), Some(candidate.clone())),
            (Source::Checkpoint { dir, arch }, None) => (Some(dir.clone()), arch.clone()),
            (Source::Weights { arch, .. } | Source::Random { arch, .. }, None) => (None, Some(arch.clone())),
            (Source::Search { .. }, None) => unreachable!("a search source has a finalist"),
        };
        let from_checkpoint = checkpoint.as_deref().map(|d| read_checkpoint(d, arch_text.as_deref())).transpose()?;
        let genome = match (&from_checkpoint, &self.source) {
            (Some(c), _) => Genome::parse(Some(&c.space), &c.arch)?,
            (None, Source::Weights { space, arch, .. } | Source::Random { space, arch, .. }) => {
                Genome::parse(space.as_deref(), arch)?
            }
            (None, _) => unreachable!("checkpoint and search sources read a checkpoint"),
        };
        let base = self.base_config(from_checkpoint.as_ref())?;
        let mut config = genome.detector_config(&base)?;
        self.overrides.apply(&mut config);
        config.validate()?;
        detnas_core::limits::check_export_size("export", &genome.space, &genome.arch, &config)?;
        let warning = match (&checkpoint, &from_checkpoint) {
            (Some(dir), Some(c)) => check_against_checkpoint(dir, &c.detector, &config)?,
            _ => None,
        };
        Ok(Prepared {
            request: self.clone(),
            space: genome.space,
            arch: genome.arch,
            config,
            checkpoint: checkpoint.zip(from_checkpoint.map(|c| c.weights)),
            bn: finalist.map(|f| f.2),
            warning,
        })
    }

    /// The configuration before the genome and the overrides: the overriding configuration, else
    /// the checkpoint's, else the family's defaults (RetinaNet). An error when `detector` names
    /// another family.
    fn base_config(&self, from_checkpoint: Option<&CheckpointParts>) -> Result<DetectorConfig> {
        let o = &self.overrides;
        let base = match (&o.config, from_checkpoint) {
            (Some((_, c)), _) => c.clone(),
            (None, Some(c)) => c.detector.clone(),
            (None, None) => DetectorConfig::new(o.detector.unwrap_or(DetectorKind::Retinanet)),
        };
        if let Some(asked) = o.detector.filter(|&k| k != base.kind()) {
            let origin = o.config.as_ref().map_or("the checkpoint".to_string(), |(p, _)| p.display().to_string());
            return Err(OnnxError::Options(format!(
                "--detector {asked} contradicts {origin}, which describes a {} detector",
                base.kind()
            )));
        }
        Ok(base)
    }
}

impl Overrides {
    /// Applies every set override to `cfg` (nothing validated here).
    fn apply(&self, cfg: &mut DetectorConfig) {
        if let Some(i) = self.input {
            cfg.input = i;
        }
        if let Some(c) = &self.classes {
            // Empty and duplicate names are refused by `validate`, not dropped.
            cfg.class_names = c.iter().map(|s| s.trim().to_string()).collect();
            cfg.category_ids.clear();
        }
        if let Some(h) = self.head_conv {
            cfg.head_conv = h;
        }
        if let Some(n) = self.head_convs {
            cfg.head_convs = n;
        }
        if let Some(c) = self.fpn_channels {
            cfg.fpn_channels = c;
            cfg.head_channels = c;
        }
        if let Some(s) = self.shuffle {
            cfg.shuffle = s;
        }
    }
}

/// A resolved export: what will be built, before any weights are read.
#[derive(Clone, Debug)]
pub struct Prepared {
    request: ExportRequest,
    /// The search space.
    pub space: SearchSpace,
    /// The backbone path.
    pub arch: Arch,
    /// The detector configuration (validated).
    pub config: DetectorConfig,
    /// The checkpoint folder and its weights file, when exporting from one.
    pub checkpoint: Option<(PathBuf, PathBuf)>,
    /// The finalist's recalibrated BN statistics, when exporting a search finalist.
    pub bn: Option<PathBuf>,
    /// A warning to show once the export succeeded (genes outside the trained space).
    pub warning: Option<String>,
}

/// A built model with what it was built from.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The model.
    pub model: ModelProto,
    /// The search space.
    pub space: SearchSpace,
    /// The backbone path.
    pub arch: Arch,
    /// The detector configuration.
    pub config: DetectorConfig,
    /// Where the weights came from (file, with BN statistics, or random seed).
    pub weights_source: String,
    /// A warning to show (genes outside the trained space).
    pub warning: Option<String>,
}

impl Prepared {
    /// The files the export reads, named as a user gave them (an output must overwrite none).
    pub fn reads(&self) -> Vec<(&'static str, &Path)> {
        let mut v: Vec<(&'static str, &Path)> = Vec::new();
        if let Source::Weights { path, .. } = &self.request.source {
            v.push(("--weights", path));
        }
        if let Some((dir, weights)) = &self.checkpoint {
            v.push(("the checkpoint's weights", weights));
            v.push(("--checkpoint", dir));
        }
        if let Some(bn) = &self.bn {
            v.push(("the finalist's BN statistics", bn));
        }
        v
    }

    /// Reads and slices the weights and builds the model.
    pub fn export(self) -> Result<Exported> {
        let params = detector_params(&self.space, Paths::Single(&self.arch), &self.config);
        // A supernet (every choice; an elastic FPN and head) holds each genome's tensors as leading
        // blocks of its own: slicing is the identity for tensors of exactly the right shape.
        let weights = match (&self.request.source, &self.checkpoint) {
            (Source::Weights { path, .. }, _) => Weights::load(path)?.sliced_to(&params)?,
            (_, Some((_, path))) => {
                let mut w = Weights::load(path)?;
                if let Some(bn) = &self.bn {
                    w.overlay(Weights::load(bn)?);
                    w.source = format!("{} with BN statistics {}", w.source, bn.display());
                }
                w.sliced_to(&params)?
            }
            (Source::Random { seed, .. }, None) => Weights::random(&params, *seed),
            (_, None) => unreachable!("checkpoint and search sources have a checkpoint"),
        };
        let model = export_detector(&self.space, &self.arch, &self.config, &weights, &self.request.options)?;
        Ok(Exported {
            model,
            space: self.space,
            arch: self.arch,
            config: self.config,
            weights_source: weights.source,
            warning: self.warning,
        })
    }
}

/// A checkpoint folder's space, architecture text, detector configuration and weights file.
struct CheckpointParts {
    space: String,
    arch: String,
    detector: DetectorConfig,
    weights: PathBuf,
}

/// Reads a checkpoint folder's state.
fn read_checkpoint(dir: &Path, arch: Option<&str>) -> Result<CheckpointParts> {
    let state = detnas_core::checkpoint::load_state(dir)?;
    let arch = state.arch_or(dir, arch)?;
    let detector = state.detector_config(dir)?;
    Ok(CheckpointParts { space: state.space, arch, detector, weights: dir.join(state.weights) })
}

/// The checkpoint, candidate and recalibrated BN statistics of a search's finalist.
fn search_finalist(dir: &Path, rank: usize) -> Result<(PathBuf, String, PathBuf)> {
    let finalists = Finalists::read(dir)?;
    let f = finalists.rank(rank, dir)?;
    match (&finalists.checkpoint, &f.bn) {
        (Some(checkpoint), Some(bn)) => Ok((checkpoint.clone(), f.candidate.clone(), dir.join(bn))),
        _ => Err(OnnxError::Options(format!(
            "{}: a training-free search ranked its candidates without weights, so there is nothing to export; train \
             the finalist (`detnas train det --arch '{}'`) and export its checkpoint",
            dir.display(),
            f.candidate
        ))),
    }
}

/// What a checkpoint can export: its own classes (another list would take the wrong logit
/// channels); a checkpoint trained without `[genes]` has one FPN and head, so slicing it to other
/// widths or depths would export weights nobody trained and only the input resolution may differ;
/// a genes supernet slices to any genome, with a warning for genes outside the space it trained.
/// Returns the warning to show once the export succeeded, if any.
fn check_against_checkpoint(dir: &Path, trained: &DetectorConfig, cfg: &DetectorConfig) -> Result<Option<String>> {
    let refuse = |reason: String| Err(OnnxError::Options(format!("{}: {reason}", dir.display())));
    if cfg.class_names != trained.class_names {
        return refuse(format!(
            "trained for the classes [{}], --classes asks for [{}]: export the classes the checkpoint was trained with",
            trained.class_names.join(", "),
            cfg.class_names.join(", ")
        ));
    }
    let state = detnas_core::checkpoint::load_state(dir)?;
    let trained_genes = DetectorGenes::of(trained);
    let asked = DetectorGenes { input: trained_genes.input, ..DetectorGenes::of(cfg) };
    let Some(genes) = state.config.get("genes") else {
        if asked != trained_genes {
            return refuse(format!(
                "trained with the fixed detector {trained_genes} (no [genes]): only the input resolution may change, asked for {}",
                DetectorGenes::of(cfg)
            ));
        }
        return Ok(None);
    };
    if let Ok(space) = serde_json::from_value::<GeneSpace>(genes.clone()) {
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

//! Training configurations (TOML, unknown fields rejected) and their hashes.

use crate::data::Augment;
use crate::optim::LrSchedule;
use detnas_core::detector::DetectorConfig;
use detnas_core::search::genome::GeneSpace;
use detnas_core::space::{Choice, SearchSpace};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where detection data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// COCO instances JSON.
    pub coco: Option<PathBuf>,
    /// Folder the COCO `file_name`s are relative to (default: the JSON's folder).
    pub images: Option<PathBuf>,
    /// Pascal VOC root (`Annotations/`, `JPEGImages/`) instead of COCO.
    pub voc: Option<PathBuf>,
}

/// Optimiser settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Optim {
    /// Learning rate schedule.
    pub lr: LrSchedule,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Weight decay on 1-D tensors (BN, biases) too.
    pub decay_1d: bool,
    /// Clip the global gradient norm (none by default).
    pub clip_grad_norm: Option<f64>,
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            lr: LrSchedule::WarmupStep {
                base: 0.01,
                warmup_iters: 100,
                warmup_factor: 1.0 / 3.0,
                milestones: vec![],
                gamma: 0.1,
            },
            momentum: 0.9,
            weight_decay: 1e-4,
            decay_1d: true,
            clip_grad_norm: Some(10.0),
        }
    }
}

/// Detection training: a single path (`arch`) or the supernet with a uniform path per step.
///
/// `arch` may be a full genome (`23113213311133203333:fpn96:head96x3:sep:320x320`, see
/// [`detnas_core::search::genome`]): its genes replace those of `detector`. With a `genes` section the
/// supernet is a genes supernet: every step also samples the detector genes (FPN / head width,
/// head depth, conv type, input resolution) uniformly from it ([`crate::net::RetinaNet::with_genes`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetTrainConfig {
    /// Search space name.
    pub space: String,
    /// Encoding, preset or full genome; absent = supernet.
    pub arch: Option<String>,
    /// Training data (required to train).
    pub data: Option<DataSource>,
    /// Held-out data for evaluation (absent: a seeded `holdout` fraction of `data`).
    pub val: Option<DataSource>,
    /// Fraction of `data` held out for evaluation when `val` is absent (0: none).
    pub holdout: f64,
    /// The detector configuration (its class names come from the data).
    pub detector: DetectorConfig,
    /// Images per step.
    pub batch_size: usize,
    /// Optimisation steps.
    pub iterations: usize,
    /// Optimiser settings.
    pub optim: Optim,
    /// Training augmentation.
    pub augment: Augment,
    /// Seed of the data order, augmentation, path sampling and held-out split.
    pub seed: u64,
    /// Steps between log entries.
    pub log_every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Initial weights (safetensors with plan names, e.g. a pretrained supernet); missing tensors keep
    /// their initialisation.
    pub init: Option<PathBuf>,
    /// Abort after this many consecutive non-finite losses.
    pub max_bad_steps: usize,
    /// Detector genes sampled per step by the supernet (TOML `[genes]`, fields of [`GeneSpace`]);
    /// absent: the FPN and head of `detector` only. Not serialised when absent, so configuration
    /// hashes of runs without genes are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genes: Option<GeneSpace>,
    /// How a supernet is built and trained (TOML `[supernet]`); not serialised at its defaults, so
    /// configuration hashes of earlier runs are unchanged.
    #[serde(default, skip_serializing_if = "SupernetSettings::is_default")]
    pub supernet: SupernetSettings,
}

/// Path sampling of a supernet step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// One path per step, each layer's choice drawn uniformly (SPOS, DetNAS).
    #[default]
    Uniform,
    /// Strict fairness (FairNAS): each step trains every choice of every layer exactly once — as
    /// many paths as choices, each layer's choices a random permutation across them — with their
    /// gradients accumulated into one update.
    Fair,
}

/// `[supernet]`: the choices a supernet holds and how its steps sample paths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupernetSettings {
    /// The choices the supernet holds and samples (default: the space's): one choice makes the
    /// supernet a single network, trained exactly as that path stand-alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
    /// A diagnostic of the ranking signal: the main branch of these choices' blocks outputs zeros
    /// (the block keeps only its passthrough half, or at stride 2 its projection branch), so a
    /// path of them is a crippled network and a sound fitness ranks it below the others. Never for
    /// a model to keep: export builds the blocks whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crippled: Vec<Choice>,
    /// Path sampling per step.
    #[serde(default, skip_serializing_if = "is_uniform")]
    pub sampling: Sampling,
    /// `false`: the BNs inside choice blocks keep scale 1 and shift 0 (SPOS: BN without affine
    /// parameters in the supernet, so no path's scale is learnt into weights another path shares
    /// the statistics of). Default `true`.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub block_bn_affine: bool,
    /// The sandwich rule with in-place distillation (BigNAS, OFA) for the detector genes: each step
    /// trains, on its backbone path and input size, the largest genome of `[genes]` on the labels
    /// and the smallest and the step's sampled genome on the largest's outputs (its class scores as
    /// soft targets, its box regressions on foreground anchors), gradients accumulated into one
    /// update. Needs `[genes]`, a RetinaNet and uniform sampling. Default `false`.
    #[serde(default, skip_serializing_if = "is_no")]
    pub sandwich: bool,
}

fn is_no(v: &bool) -> bool {
    !*v
}

fn yes() -> bool {
    true
}

fn is_yes(v: &bool) -> bool {
    *v
}

fn is_uniform(s: &Sampling) -> bool {
    *s == Sampling::Uniform
}

impl Default for SupernetSettings {
    fn default() -> Self {
        SupernetSettings {
            choices: Vec::new(),
            crippled: Vec::new(),
            sampling: Sampling::Uniform,
            block_bn_affine: true,
            sandwich: false,
        }
    }
}

impl SupernetSettings {
    /// Whether every setting is at its default.
    pub fn is_default(&self) -> bool {
        *self == SupernetSettings::default()
    }
}

impl Default for DetTrainConfig {
    fn default() -> Self {
        DetTrainConfig {
            space: "detnas-300m".into(),
            arch: None,
            data: None,
            val: None,
            holdout: 0.2,
            detector: DetectorConfig::default(),
            batch_size: 4,
            iterations: 1000,
            optim: Optim::default(),
            augment: Augment::default(),
            seed: 0,
            log_every: 20,
            checkpoint_every: 200,
            init: None,
            max_bad_steps: 20,
            genes: None,
            supernet: SupernetSettings::default(),
        }
    }
}

impl DetTrainConfig {
    /// The search space the network is built on: `space`, holding only `[supernet] choices` when
    /// given. Errors name a choice the space does not allow, or a crippled one not held.
    pub fn search_space(&self) -> crate::Result<SearchSpace> {
        let mut space = SearchSpace::by_name(&self.space)?;
        let s = &self.supernet;
        let name = space.name.clone();
        let bad = |what: &str, c: &Choice| {
            crate::TrainError::Config(format!("[supernet] {what}: {} is not a choice of {name}", c.name()))
        };
        if let Some(c) = s.choices.iter().find(|c| !space.allowed.contains(c)) {
            return Err(bad("choices", c));
        }
        if !s.choices.is_empty() {
            space.allowed.retain(|c| s.choices.contains(c));
        }
        if let Some(c) = s.crippled.iter().find(|c| !space.allowed.contains(c)) {
            return Err(bad("crippled", c));
        }
        if s.sandwich {
            let refuse = |why: &str| Err(crate::TrainError::Config(format!("[supernet] sandwich = true {why}")));
            if self.genes.is_none() {
                return refuse("needs a [genes] space: it trains the largest and smallest genome of it");
            }
            if self.detector.kind() != detnas_core::detector::DetectorKind::Retinanet {
                return refuse("distils RetinaNet outputs: give a RetinaNet [detector]");
            }
            if s.sampling != Sampling::Uniform {
                return refuse("trains one backbone path per step: leave sampling uniform");
            }
        }
        Ok(space)
    }

    /// Reads a TOML file.
    pub fn load(path: &std::path::Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::TrainError::Data { path: path.into(), reason: e.to_string() })?;
        toml::from_str(&text)
            .map_err(|e| crate::TrainError::Data { path: path.into(), reason: format!("invalid config: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detnas_core::InputSize;
    use detnas_core::detector::HeadConv;

    #[test]
    fn a_genes_section_parses_and_its_absence_keeps_the_serialised_config() {
        let cfg: DetTrainConfig = toml::from_str(
            r#"
            [genes]
            fpn_channels = [64, 96]
            head_convs = [1, 2]
            head_conv = ["separable"]
            input = [{ height = 256, width = 256 }]
            "#,
        )
        .unwrap();
        let genes = cfg.genes.clone().unwrap();
        assert_eq!((genes.fpn_channels, genes.head_convs), (vec![64, 96], vec![1, 2]));
        assert_eq!((genes.head_conv, genes.input), (vec![HeadConv::Separable], vec![InputSize::new(256, 256)]));
        assert_eq!(genes.head_channels, GeneSpace::default().head_channels, "missing genes keep the defaults");
        let back: DetTrainConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let plain = serde_json::to_value(DetTrainConfig::default()).unwrap();
        assert!(plain.get("genes").is_none(), "no `genes` key: hashes of existing runs are unchanged");
        assert!(toml::from_str::<DetTrainConfig>("[genes]\nwidth = [1]\n").is_err(), "unknown gene fields refused");
    }
}

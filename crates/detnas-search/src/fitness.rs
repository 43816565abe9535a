//! Fitness of a candidate: the [`SearchFitness`] trait a search ranks with; its supernet
//! implementation ([`SupernetScorer`]: the candidate's path inherits the supernet's weights, its
//! BN statistics are recalibrated on fixed training batches at the candidate's input, and its
//! held-out COCO AP (or AP50) is the fitness); and the training-free scores ([`TrainingFree`]).

use crate::options::FitnessChoice;
use anyhow::{Context, Result, bail};
use detnas_core::detector::DetectorConfig;
use detnas_core::detector::plan::{Paths, detector_params};
use detnas_core::search::evolution::Fitness;
use detnas_core::search::genome::{Candidate, DetectorGenes};
use detnas_core::search::training_free;
use detnas_core::space::arch::Arch;
use detnas_core::{InputSize, SearchSpace};
use detnas_data::detection::DetectionDataset;
use detnas_train::checkpoint::{self, OpenCheckpoint};
use detnas_train::modules::BnUpdate;
use detnas_train::search::{Metric, SupernetFitness};
use detnas_train::tch::Tensor;
use detnas_train::trainer;
use detnas_train::zen::{ZenOptions, zen_score};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// What a search needs of a fitness beside scoring: its cost, and what a finalist carries to
/// export. New fitnesses (training-free scores) implement this and [`Fitness`].
pub trait SearchFitness: Fitness<Error = anyhow::Error> {
    /// Mean wall time of one evaluation so far.
    fn mean_time(&self) -> Duration;

    /// Whether a finalist carries weights to export ([`Self::save_finalist`]); a training-free
    /// fitness has none: its finalists are genomes to train.
    fn has_weights(&self) -> bool {
        true
    }

    /// Writes what `candidate` needs at export into the file `path` (the supernet: its path's
    /// recalibrated BN statistics, as safetensors), in the state its scoring left it. Called only
    /// when [`Self::has_weights`].
    fn save_finalist(&mut self, candidate: &Candidate, path: &Path) -> Result<()>;
}

/// A training-free fitness ([`FitnessChoice::Madnas`], `Zen`, `Params`, `Flops`) of candidates on
/// `space` whose genes apply to `base`. Higher is better for each (a larger score, count or cost).
pub struct TrainingFree {
    choice: FitnessChoice,
    space: SearchSpace,
    base: DetectorConfig,
    seed: u64,
    evaluations: u32,
    time: Duration,
}

impl TrainingFree {
    /// A scorer of `choice` (a training-free one; the supernet is an error); `seed` seeds the
    /// Zen-score's random weights and images (the same for every candidate).
    pub fn new(choice: FitnessChoice, space: SearchSpace, base: DetectorConfig, seed: u64) -> Result<Self> {
        if choice.needs_checkpoint() {
            bail!("the supernet fitness is not training-free");
        }
        Ok(TrainingFree { choice, space, base, seed, evaluations: 0, time: Duration::ZERO })
    }

    /// The score of `candidate`.
    pub fn score(&self, c: &Candidate) -> Result<f64> {
        let cfg = c.detector_config(&self.base);
        let (space, arch) = (&self.space, &c.arch);
        Ok(match self.choice {
            FitnessChoice::Madnas => training_free::madnas(space, arch, &cfg)?.total,
            FitnessChoice::Params => training_free::params(space, arch, &cfg) as f64,
            FitnessChoice::Flops => training_free::flops(space, arch, &cfg)? as f64,
            FitnessChoice::Zen => {
                zen_score(space, arch, &cfg, ZenOptions { seed: self.seed, ..ZenOptions::default() })?
            }
            FitnessChoice::Supernet { .. } => unreachable!("refused by TrainingFree::new"),
        })
    }
}

impl Fitness for TrainingFree {
    type Error = anyhow::Error;

    fn evaluate(&mut self, arch: &Arch) -> Result<f64> {
        self.evaluate_candidate(&Candidate::backbone(arch.clone()))
    }

    fn evaluate_candidate(&mut self, c: &Candidate) -> Result<f64> {
        let t = Instant::now();
        let v = self.score(c)?;
        self.evaluations += 1;
        self.time += t.elapsed();
        Ok(v)
    }
}

impl SearchFitness for TrainingFree {
    fn mean_time(&self) -> Duration {
        self.time.checked_div(self.evaluations).unwrap_or_default()
    }

    fn has_weights(&self) -> bool {
        false
    }

    fn save_finalist(&mut self, _: &Candidate, _: &Path) -> Result<()> {
        bail!("a training-free fitness has no weights to save")
    }
}

/// Scores candidates of a supernet checkpoint: backbone paths at the checkpoint's detector, or
/// whole genomes of a genes supernet (recalibration batches built once per input resolution and
/// kept for the whole search).
pub struct SupernetScorer<'a> {
    paths: SupernetFitness<'a>,
    ck: &'a OpenCheckpoint,
    train: &'a DetectionDataset,
    batch_size: usize,
    batches: usize,
    seed: u64,
    by_input: HashMap<InputSize, Vec<Tensor>>,
}

/// The recalibration of [`SupernetScorer`].
#[derive(Clone, Copy, Debug)]
pub struct Recalibration {
    /// Batches per candidate.
    pub batches: usize,
    /// Exact average or moving average.
    pub update: BnUpdate,
    /// Seed of the batches' images and augmentation.
    pub seed: u64,
}

impl<'a> SupernetScorer<'a> {
    /// A scorer of `ck`'s supernet on `val`, recalibrating on `train`. A backbone-only search
    /// (`joint` false) builds its batches here, at the checkpoint's input; a joint one at each
    /// candidate's input, when first met.
    pub fn new(
        ck: &'a OpenCheckpoint,
        (train, val): (&'a DetectionDataset, &'a DetectionDataset),
        metric: Metric,
        recal: Recalibration,
        joint: bool,
    ) -> Result<Self> {
        let batch_size = ck.config.batch_size;
        let batches = if joint {
            Vec::new()
        } else {
            let det = &ck.config.detector;
            trainer::recalibration_batches(train, det, recal.batches, batch_size, recal.seed, ck.net.device())?
        };
        Ok(SupernetScorer {
            paths: SupernetFitness {
                net: &ck.net,
                batches,
                val,
                update: recal.update,
                metric,
                evaluations: 0,
                time: Duration::ZERO,
            },
            ck,
            train,
            batch_size,
            batches: recal.batches,
            seed: recal.seed,
            by_input: HashMap::new(),
        })
    }

    /// Builds the fixed recalibration batches at `genes`' input, once per input.
    fn prepare(&mut self, genes: &DetectorGenes) -> Result<()> {
        if !self.by_input.contains_key(&genes.input) {
            let net = &self.ck.net;
            let det = genes.apply(net.cfg());
            let b = trainer::recalibration_batches(
                self.train,
                &det,
                self.batches,
                self.batch_size,
                self.seed,
                net.device(),
            )?;
            self.by_input.insert(genes.input, b);
        }
        Ok(())
    }
}

impl Fitness for SupernetScorer<'_> {
    type Error = anyhow::Error;

    fn evaluate(&mut self, arch: &Arch) -> Result<f64> {
        Ok(self.paths.evaluate(arch)?)
    }

    fn evaluate_candidate(&mut self, c: &Candidate) -> Result<f64> {
        let Some(genes) = c.detector_genes() else { return self.evaluate(&c.arch) };
        let t = Instant::now();
        self.prepare(&genes)?;
        let (val, update, metric) = (self.paths.val, self.paths.update, self.paths.metric);
        let net = &self.ck.net;
        let stats = trainer::score_genome(net, &c.arch, &genes, &self.by_input[&genes.input], val, update)?;
        self.paths.evaluations += 1;
        self.paths.time += t.elapsed();
        let v = match metric {
            Metric::Ap => stats.stats[0],
            Metric::Ap50 => stats.stats[1],
        };
        Ok(v.max(0.0))
    }
}

impl SearchFitness for SupernetScorer<'_> {
    fn mean_time(&self) -> Duration {
        self.paths.mean_time()
    }

    /// Recalibrates the candidate's path as its scoring did and saves its BN statistics.
    fn save_finalist(&mut self, c: &Candidate, path: &Path) -> Result<()> {
        let net = &self.ck.net;
        let genes = c.detector_genes().unwrap_or_else(|| net.default_genes());
        if c.detector_genes().is_some() {
            self.prepare(&genes)?;
        }
        let batches = match c.detector_genes() {
            Some(g) => &self.by_input[&g.input],
            None => &self.paths.batches,
        };
        detnas_train::recal::recalibrate_genome(net, &c.arch, &genes, batches, self.paths.update)?;
        let cfg = genes.apply(net.cfg());
        let variables = self.ck.vs.variables();
        let named: Vec<(String, Tensor)> = detector_params(&self.ck.space, Paths::Single(&c.arch), &cfg)
            .into_iter()
            .filter(|p| p.buffer)
            .map(|p| {
                let t = variables
                    .get(&p.name)
                    .with_context(|| format!("BN statistics `{}` not in the supernet", p.name))?;
                Ok((p.name, t.shallow_clone()))
            })
            .collect::<Result<_>>()?;
        checkpoint::write_tensors(path, &named)?;
        Ok(())
    }
}

//! Evolutionary architecture search (DetNAS / SPOS), generic over the accuracy oracle ([`Fitness`])
//! and a set of hard [`Constraint`]s.
//!
//! Each generation evaluates a population of new, never-seen candidates; the top-k of everything
//! evaluated so far (elitism) are the parents of the next generation, which is made of
//! `mutations` mutated parents, `crossovers` gene-wise crossovers and random paths filling the rest.
//! Candidates violating a constraint or already evaluated are rejected and redrawn, with a bounded
//! number of tries: when a population cannot be filled the shortfall is reported, and when nothing
//! can be found the search stops with [`CoreError::Unsatisfiable`].
//!
//! With a state file the whole state (generation, population, cache of evaluated archs, top-k, RNG,
//! config hash) is written atomically after every evaluation; a killed run resumes from it and gives
//! the same result as an uninterrupted one when the fitness is deterministic.

use crate::error::{CoreError, Result};
use crate::fsutil::write_atomic;
use crate::rng::Rng;
use crate::search::genome::{Candidate, DetectorGenes, GeneSpace};
use crate::size::format_count;
use crate::space::SearchSpace;
use crate::space::arch::Arch;
use crate::space::cost::{Convention, FlopsTable};
use crate::space::sample::uniform;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// Search hyper-parameters (defaults: the DetNAS paper's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolutionConfig {
    /// Candidates evaluated per generation.
    pub population: usize,
    /// Generations to run.
    pub generations: usize,
    /// Parents kept from everything evaluated so far.
    pub top_k: usize,
    /// Children made by mutating a parent, per generation after the first.
    pub mutations: usize,
    /// Children made by crossing two parents, per generation after the first.
    pub crossovers: usize,
    /// Probability that a mutation resamples each gene.
    pub mutation_prob: f64,
    /// Draws allowed per population slot before the slot is given up.
    pub max_tries: usize,
    /// Seed of the search's random stream.
    pub seed: u64,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig {
            population: 50,
            generations: 20,
            top_k: 10,
            mutations: 20,
            crossovers: 20,
            mutation_prob: 0.1,
            max_tries: 100,
            seed: 0,
        }
    }
}

impl EvolutionConfig {
    /// Random paths added per generation after the first (`population - mutations - crossovers`).
    pub fn random_fill(&self) -> usize {
        self.population - self.mutations - self.crossovers
    }

    /// Checks the counts are consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::BadConfig(m));
        if self.population == 0 || self.generations == 0 || self.top_k == 0 || self.max_tries == 0 {
            return bad("population, generations, top_k and max_tries must be positive".into());
        }
        let most = crate::limits::MAX_GENOMES;
        if self.population > most || self.top_k > most {
            return bad(format!("population ({}) and top_k ({}) must be at most {most}", self.population, self.top_k));
        }
        if self.mutations.saturating_add(self.crossovers) > self.population {
            return bad(format!(
                "mutations ({}) + crossovers ({}) exceed the population ({})",
                self.mutations, self.crossovers, self.population
            ));
        }
        if !(0.0..=1.0).contains(&self.mutation_prob) {
            return bad(format!("mutation_prob {} is not in [0, 1]", self.mutation_prob));
        }
        Ok(())
    }
}

/// The accuracy oracle: higher is better. Called at most once per candidate.
pub trait Fitness {
    /// The oracle's error, reported with the candidate it failed on ([`CoreError::Fitness`]).
    type Error: Display;
    /// Fitness of a backbone path (detector fixed).
    fn evaluate(&mut self, arch: &Arch) -> std::result::Result<f64, Self::Error>;
    /// Fitness of a candidate. The default scores the backbone alone: a joint search (with detector
    /// genes) needs an oracle that overrides this.
    fn evaluate_candidate(&mut self, candidate: &Candidate) -> std::result::Result<f64, Self::Error> {
        self.evaluate(&candidate.arch)
    }
}

impl<E: Display, F: FnMut(&Arch) -> std::result::Result<f64, E>> Fitness for F {
    type Error = E;
    fn evaluate(&mut self, arch: &Arch) -> std::result::Result<f64, E> {
        self(arch)
    }
}

/// A hard filter on candidates.
pub trait Constraint {
    /// Short name used in rejection statistics (`flops`, `latency`).
    fn name(&self) -> &str;
    /// Full description; part of the config hash, so resuming with another budget is refused.
    fn describe(&self) -> String;
    /// `Err(reason)` when `arch` violates the constraint.
    fn check(&self, arch: &Arch) -> std::result::Result<(), String>;
    /// `Err(reason)` when `candidate` violates the constraint; the default checks its backbone.
    fn check_candidate(&self, candidate: &Candidate) -> std::result::Result<(), String> {
        self.check(&candidate.arch)
    }
}

/// `FLOPs(arch) <= max` under a convention at a fixed input size.
pub struct FlopsConstraint {
    /// Per-layer FLOPs of the space at the input size.
    pub table: FlopsTable,
    /// Which layers count.
    pub convention: Convention,
    /// The largest FLOPs allowed.
    pub max: u64,
    /// Human context for [`Constraint::describe`] (space and input size).
    pub context: String,
}

impl Constraint for FlopsConstraint {
    fn name(&self) -> &str {
        "flops"
    }

    fn describe(&self) -> String {
        format!("flops {:?} <= {} ({})", self.convention, self.max, self.context)
    }

    fn check(&self, arch: &Arch) -> std::result::Result<(), String> {
        let f = self.table.flops(arch, self.convention);
        if f <= self.max { Ok(()) } else { Err(format!("{} FLOPs > {}", format_count(f), format_count(self.max))) }
    }
}

/// A latency predictor: milliseconds, or why the candidate cannot be predicted.
pub type PredictLatency<'a> = Box<dyn Fn(&Candidate) -> std::result::Result<f64, String> + 'a>;

/// `latency(candidate) <= max_ms` for a latency predictor (a measured table, a model, ...).
pub struct LatencyConstraint<'a> {
    /// Predicted latency; a candidate that cannot be predicted is rejected.
    pub predict: PredictLatency<'a>,
    /// The largest latency allowed, in milliseconds.
    pub max_ms: f64,
    /// What the predictions come from (table hash, device fingerprint): part of the config hash, so
    /// a search is never resumed under another table.
    pub source: String,
}

impl Constraint for LatencyConstraint<'_> {
    fn name(&self) -> &str {
        "latency"
    }

    fn describe(&self) -> String {
        format!("latency <= {} ms ({})", self.max_ms, self.source)
    }

    fn check(&self, arch: &Arch) -> std::result::Result<(), String> {
        self.check_candidate(&Candidate::backbone(arch.clone()))
    }

    fn check_candidate(&self, candidate: &Candidate) -> std::result::Result<(), String> {
        let ms = (self.predict)(candidate)?;
        if ms <= self.max_ms { Ok(()) } else { Err(format!("{ms:.2} ms > {} ms", self.max_ms)) }
    }
}

/// An evaluated candidate (field `arch` for the state files of backbone-only searches).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The candidate.
    pub arch: Candidate,
    /// Its fitness.
    pub fitness: f64,
}

/// One evaluation, in the order the search made them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The candidate evaluated.
    pub candidate: Candidate,
    /// The generation that evaluated it.
    pub generation: usize,
    /// Its fitness.
    pub fitness: f64,
}

/// What happened in one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationSummary {
    /// The generation (0-based).
    pub generation: usize,
    /// Candidates evaluated in it (not seen before).
    pub evaluated: usize,
    /// The best candidate found so far.
    pub best: Scored,
    /// Mean fitness of the generation's population.
    pub mean_fitness: f64,
    /// Slots of the population that could not be filled within the try budget.
    pub shortfall: usize,
}

/// Counts of rejected draws, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejections {
    /// Draws of a candidate already in the population or evaluated.
    pub duplicate: u64,
    /// Per constraint name.
    pub constraint: BTreeMap<String, u64>,
}

impl std::fmt::Display for Rejections {
    /// `rejected: 12 duplicates, 30 by flops`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rejected: {} duplicates", self.duplicate)?;
        for (name, n) in &self.constraint {
            write!(f, ", {n} by {name}")?;
        }
        Ok(())
    }
}

/// Everything needed to resume a search exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvolutionState {
    /// Version of the state format (a reader refuses any other).
    pub format: u32,
    /// Hash of the search's configuration: a search resumes only under the same.
    pub config_hash: String,
    /// Generation whose population is being evaluated (== generations when finished).
    pub generation: usize,
    /// The population of the current generation.
    pub population: Vec<Candidate>,
    /// Fitness of every candidate evaluated so far, by [`Candidate::key`].
    pub evaluated: BTreeMap<String, f64>,
    /// Every evaluation in order (empty in state files of earlier versions).
    #[serde(default)]
    pub log: Vec<Evaluation>,
    /// The best candidates evaluated so far, best first.
    pub top_k: Vec<Scored>,
    /// The random stream, where the search stands in it.
    pub rng: Rng,
    /// One summary per finished generation.
    pub history: Vec<GenerationSummary>,
    /// Rejected draws so far.
    pub rejections: Rejections,
}

const STATE_FORMAT: u32 = 1;

/// Progress notifications for front ends.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A candidate was evaluated.
    Evaluated {
        /// The generation being evaluated.
        generation: usize,
        /// The candidate.
        arch: &'a Candidate,
        /// Its fitness.
        fitness: f64,
        /// Candidates of the population done so far (this one included).
        done: usize,
        /// Candidates in the population.
        total: usize,
    },
    /// A generation ended.
    Generation(&'a GenerationSummary),
}

/// Final outcome of a search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchOutcome {
    /// The best candidate.
    pub best: Scored,
    /// The best candidates, best first.
    pub top_k: Vec<Scored>,
    /// Candidates evaluated.
    pub evaluations: usize,
    /// One summary per generation.
    pub history: Vec<GenerationSummary>,
    /// Rejected draws.
    pub rejections: Rejections,
}

/// The search engine.
pub struct Evolution<'c> {
    space: SearchSpace,
    /// Detector genes searched jointly with the backbone (`None`: backbone only).
    genes: Option<GeneSpace>,
    config: EvolutionConfig,
    constraints: Vec<Box<dyn Constraint + 'c>>,
    state: EvolutionState,
    state_path: Option<PathBuf>,
}

/// FNV-1a, 64 bit: a stable hash for configuration fingerprints.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl<'c> Evolution<'c> {
    /// A fresh search; the first population is drawn at once.
    pub fn new(
        space: SearchSpace,
        config: EvolutionConfig,
        constraints: Vec<Box<dyn Constraint + 'c>>,
    ) -> Result<Self> {
        Self::joint(space, None, config, constraints)
    }

    /// A fresh search over backbone paths and, with `genes`, the detector genes too: random
    /// candidates draw every gene, mutation resamples each gene (backbone layer or detector gene)
    /// with `mutation_prob`, crossover takes each gene from either parent.
    pub fn joint(
        space: SearchSpace,
        genes: Option<GeneSpace>,
        config: EvolutionConfig,
        constraints: Vec<Box<dyn Constraint + 'c>>,
    ) -> Result<Self> {
        config.validate()?;
        let config_hash = Self::hash(&space, genes.as_ref(), &config, &constraints);
        let state = EvolutionState {
            format: STATE_FORMAT,
            config_hash,
            generation: 0,
            population: Vec::new(),
            evaluated: BTreeMap::new(),
            log: Vec::new(),
            top_k: Vec::new(),
            rng: Rng::seed(config.seed),
            history: Vec::new(),
            rejections: Rejections::default(),
        };
        let mut engine = Evolution { space, genes, config, constraints, state, state_path: None };
        engine.state.population = engine.next_population()?;
        Ok(engine)
    }

    /// Makes `fitness` (a name and its settings) part of the configuration hash, so a state scored
    /// by another fitness is refused on resume. Call before [`Self::with_state_file`]; a search
    /// that never calls it keeps the hash it always had.
    pub fn scored_by(mut self, fitness: &str) -> Self {
        let text = format!("{} scored by {fitness}", self.state.config_hash);
        self.state.config_hash = format!("{:016x}", fnv1a64(text.as_bytes()));
        self
    }

    /// Persists state to `path` after every step; if `path` exists, resumes from it, refusing a state
    /// written by a different configuration or one this search could not have written (a
    /// generation past the run, a population or parents over their sizes, a candidate outside the
    /// space or the gene space): the error names the file.
    pub fn with_state_file(mut self, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if path.exists() {
            let state = load_state(&path)?;
            if state.config_hash != self.state.config_hash {
                return Err(CoreError::State {
                    path,
                    reason: format!(
                        "written by a different configuration (hash {}, this run {}); use the original \
                         config or a new state file",
                        state.config_hash, self.state.config_hash
                    ),
                });
            }
            if let Err(reason) = self.check_resumed(&state) {
                return Err(CoreError::State { path, reason: format!("{reason}: edited or corrupted") });
            }
            self.state = state;
        }
        self.state_path = Some(path);
        Ok(self)
    }

    /// What a state written by this search always satisfies, checked before resuming from one
    /// (the configuration hash does not cover the state's own content): the generation within the
    /// run, a population of at most `population` candidates (none when finished, at least one
    /// otherwise), finite fitnesses, at most `top_k` parents sorted best first and each among the
    /// evaluated with its fitness, and every candidate a path of this space with genes from this
    /// gene space (or none, for a backbone-only search).
    fn check_resumed(&self, state: &EvolutionState) -> std::result::Result<(), String> {
        let (generations, population) = (self.config.generations, self.config.population);
        if state.generation > generations {
            return Err(format!("generation {} is past the run's {generations} generations", state.generation));
        }
        let finished = state.generation == generations;
        if state.population.len() > population || state.population.is_empty() != finished {
            let expected = if finished { "none, the run is finished".to_owned() } else { format!("1 to {population}") };
            return Err(format!("{} candidates in the population (expected {expected})", state.population.len()));
        }
        if state.top_k.len() > self.config.top_k {
            return Err(format!("{} parents in top_k (at most {})", state.top_k.len(), self.config.top_k));
        }
        if let Some((key, value)) = state.evaluated.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("candidate {key} has the non-finite fitness {value}"));
        }
        for s in &state.top_k {
            if state.evaluated.get(&s.arch.key()) != Some(&s.fitness) {
                return Err(format!("parent {} with fitness {} is not among the evaluated", s.arch, s.fitness));
            }
        }
        if state.top_k.windows(2).any(|p| p[0].fitness < p[1].fitness) {
            return Err("top_k is not sorted best first".to_owned());
        }
        let candidates = state.population.iter().chain(state.top_k.iter().map(|s| &s.arch));
        for c in candidates {
            c.arch.validate(&self.space).map_err(|e| format!("candidate {c}: {e}"))?;
            match (&self.genes, c.detector_genes()) {
                (None, None) => {}
                (Some(space), Some(g)) if space.contains(&g) => {}
                (Some(_), Some(_)) => return Err(format!("candidate {c} has genes outside the gene space")),
                (Some(_), None) => return Err(format!("candidate {c} has no detector genes (a joint search)")),
                (None, Some(_)) => return Err(format!("candidate {c} has detector genes (a backbone search)")),
            }
        }
        Ok(())
    }

    /// The current state (for inspection and tests).
    pub fn state(&self) -> &EvolutionState {
        &self.state
    }

    fn hash(
        space: &SearchSpace,
        genes: Option<&GeneSpace>,
        config: &EvolutionConfig,
        constraints: &[Box<dyn Constraint + 'c>],
    ) -> String {
        let described: Vec<String> = constraints.iter().map(|c| c.describe()).collect();
        let mut canonical = serde_json::json!({ "space": space, "config": config, "constraints": described });
        if let Some(g) = genes {
            canonical["genes"] = serde_json::json!(g);
        }
        format!("{:016x}", fnv1a64(canonical.to_string().as_bytes()))
    }

    fn save(&self) -> Result<()> {
        if let Some(path) = &self.state_path {
            let json = serde_json::to_vec_pretty(&self.state).expect("state serializes");
            write_atomic(path, &json)?;
        }
        Ok(())
    }

    /// Runs (or resumes) the search to the last generation.
    pub fn run<F: Fitness>(
        &mut self,
        fitness: &mut F,
        mut progress: impl FnMut(Progress<'_>),
    ) -> Result<SearchOutcome> {
        self.save()?;
        while self.state.generation < self.config.generations {
            let population = self.state.population.clone();
            for (i, arch) in population.iter().enumerate() {
                let key = arch.key();
                if self.state.evaluated.contains_key(&key) {
                    continue;
                }
                let value = fitness
                    .evaluate_candidate(arch)
                    .map_err(|e| CoreError::Fitness { arch: arch.to_string(), reason: e.to_string() })?;
                if !value.is_finite() {
                    return Err(CoreError::Fitness {
                        arch: arch.to_string(),
                        reason: format!("non-finite fitness {value}"),
                    });
                }
                self.state.evaluated.insert(key, value);
                let generation = self.state.generation;
                self.state.log.push(Evaluation { candidate: arch.clone(), generation, fitness: value });
                self.save()?;
                progress(Progress::Evaluated {
                    generation: self.state.generation,
                    arch,
                    fitness: value,
                    done: i + 1,
                    total: population.len(),
                });
            }
            let summary = self.finish_generation();
            progress(Progress::Generation(&summary));
            self.state.generation += 1;
            self.state.population =
                if self.state.generation < self.config.generations { self.next_population()? } else { Vec::new() };
            self.save()?;
        }
        let best = self
            .state
            .top_k
            .first()
            .cloned()
            .ok_or_else(|| CoreError::Unsatisfiable { tries: 0, detail: "no candidate was evaluated".into() })?;
        Ok(SearchOutcome {
            best,
            top_k: self.state.top_k.clone(),
            evaluations: self.state.evaluated.len(),
            history: self.state.history.clone(),
            rejections: self.state.rejections.clone(),
        })
    }

    fn finish_generation(&mut self) -> GenerationSummary {
        let scored: Vec<Scored> = self
            .state
            .population
            .iter()
            .map(|a| Scored { arch: a.clone(), fitness: self.state.evaluated[&a.key()] })
            .collect();
        let mut pool = self.state.top_k.clone();
        pool.extend(scored.iter().cloned());
        pool.sort_by(|a, b| b.fitness.total_cmp(&a.fitness).then_with(|| a.arch.cmp(&b.arch)));
        pool.dedup_by(|a, b| a.arch == b.arch);
        pool.truncate(self.config.top_k);
        self.state.top_k = pool;
        let mean = scored.iter().map(|s| s.fitness).sum::<f64>() / scored.len().max(1) as f64;
        let summary = GenerationSummary {
            generation: self.state.generation,
            evaluated: scored.len(),
            best: self.state.top_k[0].clone(),
            mean_fitness: mean,
            shortfall: self.config.population - scored.len(),
        };
        self.state.history.push(summary.clone());
        summary
    }

    /// Accepts `arch` if it is new and satisfies every constraint; counts the rejection otherwise
    /// (counts saturate: a resumed state may hold any value).
    fn accept(&mut self, arch: &Candidate, taken: &BTreeSet<String>) -> bool {
        let key = arch.key();
        if taken.contains(&key) || self.state.evaluated.contains_key(&key) {
            self.state.rejections.duplicate = self.state.rejections.duplicate.saturating_add(1);
            return false;
        }
        for c in &self.constraints {
            if c.check_candidate(arch).is_err() {
                let count = self.state.rejections.constraint.entry(c.name().to_string()).or_default();
                *count = count.saturating_add(1);
                return false;
            }
        }
        true
    }

    fn mutate(&mut self) -> Candidate {
        let parent = self.state.rng.pick(&self.state.top_k).arch.clone();
        let p = self.config.mutation_prob;
        let choices = parent
            .choices()
            .iter()
            .map(|&c| if self.state.rng.unit() < p { *self.state.rng.pick(&self.space.allowed) } else { c })
            .collect();
        let genes = match (&self.genes, parent.detector_genes()) {
            (Some(space), Some(g)) => {
                let fresh = space.sample(&mut self.state.rng);
                Some(g.pick(&fresh, || self.state.rng.unit() >= p))
            }
            _ => None,
        };
        Self::candidate(Arch::new(choices), genes)
    }

    fn crossover(&mut self) -> Candidate {
        let a = self.state.rng.pick(&self.state.top_k).arch.clone();
        let b = self.state.rng.pick(&self.state.top_k).arch.clone();
        let rng = &mut self.state.rng;
        let choices =
            a.choices().iter().zip(b.choices()).map(|(&x, &y)| if rng.below(2) == 0 { x } else { y }).collect();
        let genes = match (a.detector_genes(), b.detector_genes()) {
            (Some(x), Some(y)) => Some(x.pick(&y, || rng.below(2) == 0)),
            _ => None,
        };
        Self::candidate(Arch::new(choices), genes)
    }

    fn random(&mut self) -> Candidate {
        let arch = uniform(&self.space, &mut self.state.rng);
        let genes = self.genes.as_ref().map(|g| g.sample(&mut self.state.rng));
        Self::candidate(arch, genes)
    }

    fn candidate(arch: Arch, genes: Option<DetectorGenes>) -> Candidate {
        match genes {
            Some(g) => Candidate::joint(arch, g),
            None => Candidate::backbone(arch),
        }
    }

    /// Draws the population of the current generation.
    fn next_population(&mut self) -> Result<Vec<Candidate>> {
        let mut taken = BTreeSet::new();
        let mut out = Vec::with_capacity(self.config.population);
        let has_parents = !self.state.top_k.is_empty();
        let (mutations, crossovers) =
            if has_parents { (self.config.mutations, self.config.crossovers) } else { (0, 0) };
        let tries = self.config.max_tries;
        let mut draw = |engine: &mut Self, count: usize, kind: u8, out: &mut Vec<Candidate>| {
            let mut added = 0;
            let mut attempts = 0;
            while added < count && attempts < count * tries {
                attempts += 1;
                let arch = match kind {
                    0 => engine.mutate(),
                    1 => engine.crossover(),
                    _ => engine.random(),
                };
                if engine.accept(&arch, &taken) {
                    taken.insert(arch.key());
                    out.push(arch);
                    added += 1;
                }
            }
        };
        draw(self, mutations, 0, &mut out);
        draw(self, crossovers, 1, &mut out);
        let fill = self.config.population - out.len();
        draw(self, fill, 2, &mut out);
        if out.is_empty() {
            let described: Vec<String> = self.constraints.iter().map(|c| c.describe()).collect();
            return Err(CoreError::Unsatisfiable {
                tries: self.config.population * tries,
                detail: format!(
                    "generation {}: every draw was a duplicate or violated [{}] ({})",
                    self.state.generation,
                    described.join("; "),
                    self.state.rejections
                ),
            });
        }
        Ok(out)
    }
}

/// Reads a state file written by [`Evolution`].
pub fn load_state(path: &Path) -> Result<EvolutionState> {
    let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
    let state: EvolutionState = serde_json::from_slice(&bytes)
        .map_err(|e| CoreError::State { path: path.to_path_buf(), reason: format!("not a valid search state: {e}") })?;
    if state.format != STATE_FORMAT {
        return Err(CoreError::State {
            path: path.to_path_buf(),
            reason: format!("state format {} is not supported (expected {STATE_FORMAT})", state.format),
        });
    }
    Ok(state)
}

#[cfg(test)]
#[path = "evolution_tests.rs"]
mod tests;

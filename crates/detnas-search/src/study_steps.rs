//! The study's steps beyond the supernet: training-free fitness of the pool and its searches, and
//! the sanity ladder's two ends (a one-choice supernet against the same path stand-alone; a
//! supernet with a crippled choice). See [`crate::study`].

use crate::fitness::TrainingFree;
use crate::options::{FitnessChoice, SearchOptions};
use crate::setup::{Ctx, Record, SPACE, train, train_config, under_budget, write_toml};
use crate::study_ablation::inherited_scores;
use anyhow::{Context, Result};
use detnas_core::SearchSpace;
use detnas_core::search::genome::{Candidate, DetectorGenes, GeneSpace, Genome};
use detnas_core::space::ChannelShuffle;
use detnas_core::space::Choice;
use detnas_core::space::arch::Arch;
use detnas_infer::latency::base_config;
use detnas_train::config::SupernetSettings;
use detnas_train::modules::BnUpdate;
use detnas_train::run::Start;
use detnas_train::trainer::{self, EvalOptions};
use detnas_train::{checkpoint, device};
use serde::{Deserialize, Serialize};

/// The training-free fitnesses the study compares, baselines last.
pub const FREE: [FitnessChoice; 4] =
    [FitnessChoice::Madnas, FitnessChoice::Zen, FitnessChoice::Params, FitnessChoice::Flops];

/// One training-free fitness: its scores of the pool and the genome its search found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FreeRun {
    /// `madnas`, `zen`, `params` or `flops`.
    pub fitness: String,
    /// Score of every pool genome, in pool order.
    pub scores: Vec<f64>,
    /// The search's selected genome under the budget.
    pub genome: String,
    /// Mean seconds to score one candidate in the search.
    pub seconds_per_candidate: f64,
}

/// Scores the pool with the training-free `fitness`, then searches under `budget_ms` with it
/// (`population` x `generations`) into `free-<fitness>/`.
pub fn training_free<S: Record>(
    d: &mut Ctx<S>,
    fitness: FitnessChoice,
    pool: &[String],
    budget_ms: f64,
    size: (usize, usize),
) -> Result<FreeRun> {
    let space = SearchSpace::by_name(SPACE)?;
    let base = base_config(d.schedule.classes, ChannelShuffle::default());
    let scorer = TrainingFree::new(fitness, space, base, d.seed)?;
    let scores = pool.iter().map(|g| scorer.score(&Candidate::parse(g)?)).collect::<Result<Vec<f64>>>()?;
    let opts = SearchOptions::training_free(fitness, d.p.path(&format!("free-{}", fitness.name())));
    let opts = under_budget(d, opts, budget_ms, size)?;
    let outcome = d.p.search(&opts)?;
    let genome = outcome.selected.finalist.candidate;
    eprintln!("{}: scored {} genomes; its search found {genome}", fitness.name(), pool.len());
    Ok(FreeRun { fitness: fitness.name().into(), scores, genome, seconds_per_candidate: outcome.seconds_per_candidate })
}

/// The sanity ladder's two ends as the study measures them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ladder {
    /// The genome of the first rung (all `shufflenet_3x3`, the median genome's detector genes).
    pub genome: String,
    /// Held-out AP50 of that path in a supernet holding only its choice (no recalibration).
    pub one_choice_inherited: f64,
    /// Held-out AP50 of the same genome trained stand-alone on the same schedule and seed.
    pub standalone: f64,
    /// Inherited AP50 (BN recalibrated) of each uniform path of a supernet whose
    /// `xception_3x3` is crippled (half the supernet's schedule), in choice order (the last is the
    /// crippled one).
    pub crippled_supernet: Vec<f64>,
}

/// Runs the ladder into `ladder/` for the detector genes of `median` (resumable: a finished
/// training is continued, not repeated).
pub fn ladder<S: Record>(d: &mut Ctx<S>, median: &str, recal_batches: usize) -> Result<Ladder> {
    let space = SearchSpace::by_name(SPACE)?;
    let genes = median.split_once(':').map(|(_, g)| g).context("a full genome")?;
    let genome = format!("{}:{genes}", Arch::uniform(&space, Choice::Shufflenet3x3).compact());
    let parsed = Genome::parse(Some(SPACE), &genome)?;
    // Rung 1: one choice per layer and fixed genes = that path, on the stand-alone schedule.
    let mut single = train_config(d, false);
    single.detector = parsed.detector_config(&single.detector)?;
    let mut one = single.clone();
    one.supernet.choices = vec![Choice::Shufflenet3x3];
    write_toml(&d.p.path("ladder-one-choice.toml"), &one)?;
    let resume = ["--resume".to_string()];
    train(d, &one, ("ladder-one-choice.toml", "ladder/one-choice"), Start::Resume, "det-supernet", &resume)?;
    single.arch = Some(parsed.arch.to_string());
    write_toml(&d.p.path("ladder-single.toml"), &single)?;
    train(d, &single, ("ladder-single.toml", "ladder/single"), Start::Resume, "retinanet", &resume)?;
    let ap50 = |d: &Ctx<S>, dir: &str, arch: Option<&str>| -> Result<f64> {
        let ck = checkpoint::open(&d.p.path(dir), arch, device::parse("cpu")?)?;
        Ok(trainer::evaluate_checkpoint(&ck, &EvalOptions { val: None, recalibrate: 0 })?.stats.stats[1].max(0.0))
    };
    let arch_text = parsed.arch.to_string();
    let one_choice_inherited = ap50(d, "ladder/one-choice", Some(&arch_text))?;
    let standalone = ap50(d, "ladder/single", None)?;
    // The crippled rung: a genes supernet with xception_3x3 crippled, on half the supernet's
    // schedule (a diagnostic: the crippled paths must rank last well before the knee).
    let full = d.schedule.supernet_iterations;
    d.schedule.supernet_iterations = (full / 2).max(10);
    let mut crippled = train_config(d, true);
    d.schedule.supernet_iterations = full;
    crippled.supernet.crippled = vec![Choice::Xception3x3];
    write_toml(&d.p.path("ladder-crippled.toml"), &crippled)?;
    train(d, &crippled, ("ladder-crippled.toml", "ladder/crippled"), Start::Resume, "det-supernet", &resume)?;
    let dev = device::parse("cpu")?;
    let ck = checkpoint::open(&d.p.path("ladder/crippled"), None, dev)?;
    let (train_set, val) = ck.datasets(None)?;
    let det_genes = parsed.genes.over(ck.net.cfg());
    let det = det_genes.apply(ck.net.cfg());
    let batches = trainer::recalibration_batches(&train_set, &det, recal_batches, ck.config.batch_size, d.seed, dev)?;
    let mut crippled_supernet = Vec::new();
    for c in Choice::ALL {
        let arch = Arch::uniform(&space, c);
        let stats = trainer::score_genome(&ck.net, &arch, &det_genes, &batches, &val, BnUpdate::Cumulative)?;
        crippled_supernet.push(stats.stats[1].max(0.0));
    }
    Ok(Ladder { genome, one_choice_inherited, standalone, crippled_supernet })
}

/// The dimensions of the ladder's middle rungs, elastic one at a time, then all at once.
pub const RUNGS: [&str; 7] =
    ["backbone choices", "FPN width", "head width", "head depth", "head conv type", "input resolution", "all"];

/// A middle rung of the ladder: the first rung's genome inside a supernet where one dimension of
/// the search space is elastic and every other is fixed at the genome's value, trained on the
/// stand-alone schedule. Where its AP50 falls below the stand-alone one is where weight sharing
/// breaks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rung {
    /// The elastic dimension (one of [`RUNGS`]).
    pub dimension: String,
    /// Held-out AP50 of the genome's path with the supernet's running BN statistics.
    pub running_ap50: f64,
    /// Held-out AP50 of the genome's path after exact BN recalibration (the schedule's batches).
    pub recal_ap50: f64,
}

/// The gene space of the rung `dimension` around `fixed`, and whether the backbone keeps every
/// choice.
fn rung_space(dimension: &str, fixed: &DetectorGenes, full: &GeneSpace) -> Result<(GeneSpace, bool)> {
    let mut g = GeneSpace {
        fpn_channels: vec![fixed.fpn_channels],
        head_channels: vec![fixed.head_channels],
        head_convs: vec![fixed.head_convs],
        head_conv: vec![fixed.head_conv],
        input: vec![fixed.input],
    };
    match dimension {
        "backbone choices" => return Ok((g, true)),
        "FPN width" => g.fpn_channels = full.fpn_channels.clone(),
        "head width" => g.head_channels = full.head_channels.clone(),
        "head depth" => g.head_convs = full.head_convs.clone(),
        "head conv type" => g.head_conv = full.head_conv.clone(),
        "input resolution" => g.input = full.input.clone(),
        "all" => return Ok((full.clone(), true)),
        other => anyhow::bail!("unknown ladder rung {other:?}"),
    }
    Ok((g, false))
}

/// Trains the ladder rung `dimension` for the genome `genome` (all `shufflenet_3x3` and fixed
/// detector genes, the first rung's) into `ladder/<dimension>` on the stand-alone schedule
/// (resumable), and scores the genome's path in it.
pub fn rung<S: Record>(d: &mut Ctx<S>, genome: &str, dimension: &str, recal_batches: usize) -> Result<Rung> {
    let parsed = Genome::parse(Some(SPACE), genome)?;
    let full_iterations = d.schedule.supernet_iterations;
    d.schedule.supernet_iterations = d.schedule.retrain_iterations;
    let mut cfg = train_config(d, true);
    d.schedule.supernet_iterations = full_iterations;
    let fixed = parsed.genes.over(&cfg.detector);
    let (space, every_choice) = rung_space(dimension, &fixed, &d.schedule.gene_space())?;
    cfg.detector = fixed.apply(&cfg.detector);
    cfg.detector.fpn_channels = *space.fpn_channels.iter().max().context("widths")?;
    cfg.detector.head_channels = *space.head_channels.iter().max().context("widths")?;
    cfg.detector.head_convs = *space.head_convs.iter().max().context("depths")?;
    cfg.detector.input = *space.input.iter().max_by_key(|s| s.height * s.width).context("inputs")?;
    cfg.genes = Some(space);
    // the default method whatever the study's, as the first rung: only the elastic dimension differs
    cfg.supernet = SupernetSettings {
        choices: if every_choice { Vec::new() } else { vec![Choice::Shufflenet3x3] },
        ..SupernetSettings::default()
    };
    let slug = dimension.replace(' ', "-");
    let (config, dir) = (format!("ladder-{slug}.toml"), format!("ladder/{slug}"));
    write_toml(&d.p.path(&config), &cfg)?;
    train(d, &cfg, (&config, &dir), Start::Resume, "det-supernet", &["--resume".to_string()])?;
    // the genome's path with the supernet's running statistics, then recalibrated (a fresh load each)
    let dir = d.p.path(&dir);
    let [running, recal] = [0, recal_batches]
        .map(|batches| inherited_scores(&dir, &[genome.to_string()], batches, false, d.seed).map(|s| s[0].1));
    let r = Rung { dimension: dimension.into(), running_ap50: running?, recal_ap50: recal? };
    eprintln!("ladder rung {dimension}: AP50 {:.3} (running BN), {:.3} (recalibrated)", r.running_ap50, r.recal_ap50);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::{RUNGS, rung_space};
    use crate::setup::Schedule;
    use detnas_core::search::genome::Genome;

    #[test]
    fn each_middle_rung_frees_exactly_its_own_dimension() {
        let full = Schedule::full().gene_space();
        let genome = Genome::parse(Some("detnas-300m"), "00000000000000000000:fpn48:head48x1:dense:96x96").unwrap();
        let fixed = genome.genes.over(&detnas_core::detector::DetectorConfig::default());
        let sizes = |g: &detnas_core::search::genome::GeneSpace| {
            [g.fpn_channels.len(), g.head_channels.len(), g.head_convs.len(), g.head_conv.len(), g.input.len()]
        };
        for (i, dimension) in RUNGS.iter().enumerate() {
            let (space, every_choice) = rung_space(dimension, &fixed, &full).unwrap();
            assert!(space.contains(&fixed), "{dimension}: the rung's genome is in its space");
            let elastic = sizes(&space).iter().filter(|&&n| n > 1).count();
            match *dimension {
                "backbone choices" => assert_eq!((elastic, every_choice), (0, true)),
                "all" => assert_eq!((space, every_choice), (full.clone(), true)),
                _ => {
                    assert_eq!((elastic, every_choice), (1, false), "{dimension}");
                    assert_eq!(sizes(&space)[i - 1], sizes(&full)[i - 1], "{dimension} is the one freed");
                }
            }
        }
        assert!(rung_space("depth of field", &fixed, &full).is_err());
    }
}

//! The study's ablation of how the genes supernet trains: more supernets on the study's data,
//! each with another method, length or learning rate, scored on the same pool against the same
//! stand-alone yardstick (which is what costs hours, and is trained once); in each, the study's
//! main search runs under the same budget and its genome is retrained stand-alone with every seed
//! (a search and `--seeds` retrainings per run). `detnas study --resume --ablate
//! fair:800,uniform:6400:0.005` adds runs to a finished study. See [`crate::study`].

use crate::setup::{Ctx, Record, train, train_config, write_toml};
use anyhow::{Context, Result, bail, ensure};
use detnas_core::search::genome::Candidate;
use detnas_train::config::{Sampling, SupernetSettings};
use detnas_train::modules::BnUpdate;
use detnas_train::optim::LrSchedule;
use detnas_train::run::Start;
use detnas_train::{checkpoint, device, trainer};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Supernet iterations an ablation run may ask for.
pub const ITERATIONS: std::ops::RangeInclusive<usize> = 10..=100_000;

/// Base learning rates an ablation run may ask for.
pub const LEARNING_RATES: std::ops::RangeInclusive<f64> = 1e-5..=1.0;

/// The supernet training method `name`: `uniform` (single-path, SPOS / DetNAS), `fair` (strict
/// fairness, FairNAS), `sandwich` (the sandwich rule with in-place distillation for the detector
/// genes, BigNAS / OFA) or `no-affine` (choice-block BN without scale and shift, SPOS).
pub fn supernet_method(name: &str) -> Result<SupernetSettings> {
    let mut s = SupernetSettings::default();
    match name {
        "uniform" => {}
        "fair" => s.sampling = Sampling::Fair,
        "sandwich" => s.sandwich = true,
        "no-affine" => s.block_bn_affine = false,
        other => bail!("unknown supernet method {other:?} (uniform, fair, sandwich, no-affine)"),
    }
    Ok(s)
}

/// One supernet of the ablation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationSpec {
    /// The method ([`supernet_method`]).
    pub method: String,
    /// Updates (iterations); the learning rate decays by 10x at three quarters of them.
    pub iterations: usize,
    /// Base learning rate of the warm-up-and-step schedule.
    pub lr: f64,
}

impl AblationSpec {
    /// Parses `METHOD[:ITERATIONS[:LR]]` (e.g. `fair`, `uniform:6400`, `uniform:6400:0.005`); left
    /// out, iterations and learning rate are `default`'s.
    pub fn parse(text: &str, default: (usize, f64)) -> Result<AblationSpec> {
        let mut parts = text.trim().split(':');
        let method = parts.next().unwrap_or_default().to_string();
        supernet_method(&method).with_context(|| format!("--ablate {text:?}"))?;
        let iterations = match parts.next() {
            Some(n) => n.parse().ok().filter(|n| ITERATIONS.contains(n)).with_context(|| {
                format!("--ablate {text:?}: iterations are a whole number from 10 to 100000 (got {n:?})")
            })?,
            None => default.0,
        };
        let lr = match parts.next() {
            Some(v) => v.parse().ok().filter(|v| LEARNING_RATES.contains(v)).with_context(|| {
                format!("--ablate {text:?}: the learning rate is a number from 0.00001 to 1 (got {v:?})")
            })?,
            None => default.1,
        };
        ensure!(parts.next().is_none(), "--ablate {text:?}: METHOD[:ITERATIONS[:LR]]");
        Ok(AblationSpec { method, iterations, lr })
    }

    /// The run's folder and file stem, e.g. `fair-800-lr0.02`.
    pub fn slug(&self) -> String {
        format!("{}-{}-lr{}", self.method, self.iterations, self.lr)
    }

    /// The run's checkpoint folder inside the study.
    pub fn folder(&self) -> String {
        format!("ablation/{}", self.slug())
    }

    /// The folder of the search in this run's supernet.
    pub fn search_folder(&self) -> String {
        format!("ablation/{}-search", self.slug())
    }

    /// The folder of the stand-alone retraining of this run's searched genome with `seed`.
    pub fn retrain_folder(&self, seed: u64) -> String {
        format!("ablation/{}-searched-seed{seed}", self.slug())
    }

    /// Paths forward and backward per update ([`paths_per_step`]).
    pub fn paths_per_step(&self, choices: usize) -> usize {
        supernet_method(&self.method).map_or(1, |s| paths_per_step(&s, choices))
    }
}

/// Paths forward and backward per update of a supernet trained with `s` whose layers have
/// `choices` choices: the cost of one iteration in single-path steps (strict fairness: one per
/// choice; the sandwich rule: the largest, the smallest and the sampled genome).
pub fn paths_per_step(s: &SupernetSettings, choices: usize) -> usize {
    match (s.sampling, s.sandwich) {
        (Sampling::Fair, _) => choices,
        (Sampling::Uniform, true) => 3,
        (Sampling::Uniform, false) => 1,
    }
}

/// One trained supernet of the ablation, the pool's inherited AP50 in it, and what a search in it
/// found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblationRun {
    /// What was trained.
    pub spec: AblationSpec,
    /// Paths per update ([`AblationSpec::paths_per_step`]).
    pub paths_per_step: usize,
    /// Held-out AP50 of every pool genome, BN recalibrated as the study's searches do.
    pub inherited: Vec<f64>,
    /// The study's main search in this supernet and its genome retrained stand-alone (absent in
    /// records from before searches were part of the ablation; the study adds it on `--resume`).
    #[serde(default)]
    pub search: Option<AblationSearch>,
}

/// What a search in one supernet found, and how that genome does when trained stand-alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationSearch {
    /// The searched genome.
    pub genome: String,
    /// Its inherited AP50 (the search's fitness).
    pub inherited_ap50: f64,
    /// Its held-out AP50 retrained stand-alone, one per seed of the study, in seed order.
    pub standalone_ap50: Vec<f64>,
}

/// What the report says of Welch's t beside a verdict.
pub const WELCH: &str = "\nWelch t: the difference of the means over its standard error; with 3 seeds on each side a \
     difference unlikely by chance (p < 0.05, two-sided) needs |t| above about 3.\n\n";

/// Mean and largest deviation from it (the report's "mean ± spread").
pub fn mean_spread(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let spread = v.iter().map(|x| (x - mean).abs()).fold(0.0, f64::max);
    (mean, spread)
}

/// The report's line on the AP50 runs `runs` (one per seed) against the median random genome's
/// `median`: [`versus_median`]'s verdict, both means and Welch's t of the difference (left out
/// with fewer than 2 runs on either side).
pub fn versus_median_line(runs: &[f64], median: &[f64]) -> String {
    let (a, m) = (mean_spread(runs), mean_spread(median));
    let t = detnas_core::search::stats::welch_t(runs, median);
    let t = if t.is_finite() { format!("; Welch t {t:.1}") } else { String::new() };
    format!("{} ({:.3} vs {:.3}{t})", versus_median(a, m), a.0, m.0)
}

/// How the AP50 runs `a` compare with the median random genome's runs `median` (each a mean ±
/// spread over seeds): a win or a loss only when the means differ by more than the larger spread.
pub fn versus_median(a: (f64, f64), median: (f64, f64)) -> &'static str {
    if a.0 - median.0 > a.1.max(median.1) {
        "beats the median random genome by more than the seed spread"
    } else if median.0 - a.0 > a.1.max(median.1) {
        "loses to the median random genome by more than the seed spread"
    } else {
        "is within the seed spread of the median random genome"
    }
}

/// Seconds of training at the median logged speed (robust to a slow spell or a paused run) and
/// the last window's (total, box) loss, from the log of the checkpoint in `dir`.
pub fn training_log(dir: &Path) -> Result<(f64, (f64, f64))> {
    let state = checkpoint::load_state(dir)?;
    let batch = state.config.get("batch_size").and_then(|b| b.as_u64()).unwrap_or(1) as f64;
    let mut speeds: Vec<f64> = state.history.iter().map(|e| e.images_per_s).filter(|s| *s > 0.0).collect();
    speeds.sort_by(f64::total_cmp);
    let median = speeds.get(speeds.len() / 2).copied().unwrap_or(f64::NAN);
    let last = state.history.last().context("an empty training log")?;
    let box_loss = last.parts.iter().find(|p| p.name == "box").map_or(f64::NAN, |p| p.value);
    Ok((state.step as f64 * batch / median, (last.loss, box_loss)))
}

/// Held-out (AP, AP50) of every genome of `pool` in the supernet checkpoint `dir`, after BN
/// recalibration on `batches` training batches (`0`: the supernet's running statistics), exact or
/// as an exponential moving average.
pub fn inherited_scores(dir: &Path, pool: &[String], batches: usize, ema: bool, seed: u64) -> Result<Vec<(f64, f64)>> {
    let dev = device::parse("cpu")?;
    // a fresh supernet: recalibration rewrites the BN statistics it touches
    let ck = checkpoint::open(dir, None, dev)?;
    let (train, val) = ck.datasets(None)?;
    let update = if ema { BnUpdate::Ema(0.1) } else { BnUpdate::Cumulative };
    let mut scores = Vec::new();
    for g in pool {
        let c = Candidate::parse(g)?;
        let genes = c.detector_genes().context("a genome of the genes supernet")?;
        let stats = if batches == 0 {
            trainer::evaluate_genome_dataset(&ck.net, &c.arch, &genes, &val, ck.config.batch_size)?.0
        } else {
            let det = genes.apply(ck.net.cfg());
            let b = trainer::recalibration_batches(&train, &det, batches, ck.config.batch_size, seed, dev)?;
            trainer::score_genome(&ck.net, &c.arch, &genes, &b, &val, update)?
        };
        scores.push((stats.stats[0].max(0.0), stats.stats[1].max(0.0)));
    }
    Ok(scores)
}

/// Trains the supernet `spec` into `ablation/<slug>` (resumable) and scores `pool` in it with
/// `recal_batches` of exact recalibration.
pub fn ablate<S: Record>(
    d: &mut Ctx<S>,
    spec: &AblationSpec,
    pool: &[String],
    recal_batches: usize,
) -> Result<AblationRun> {
    let saved = d.schedule.clone();
    d.schedule.supernet = supernet_method(&spec.method)?;
    d.schedule.supernet_iterations = spec.iterations;
    let mut cfg = train_config(d, true);
    d.schedule = saved;
    if let LrSchedule::WarmupStep { base, .. } = &mut cfg.optim.lr {
        *base = spec.lr;
    }
    let slug = spec.slug();
    let (config, dir) = (format!("ablation-{slug}.toml"), spec.folder());
    write_toml(&d.p.path(&config), &cfg)?;
    train(d, &cfg, (&config, &dir), Start::Resume, "det-supernet", &["--resume".to_string()])?;
    let dir = d.p.path(&dir);
    let (seconds, (loss, box_loss)) = training_log(&dir)?;
    let inherited = inherited_scores(&dir, pool, recal_batches, false, d.seed)?.into_iter().map(|s| s.1).collect();
    let choices = detnas_core::SearchSpace::by_name(crate::setup::SPACE)?.allowed.len();
    eprintln!("ablation {slug}: {seconds:.0} s of training, final loss {loss:.3} (box {box_loss:.3})");
    Ok(AblationRun { spec: spec.clone(), paths_per_step: spec.paths_per_step(choices), inherited, search: None })
}

/// One row of the ablation's table: a trained supernet, the pool's inherited AP50 in it and the
/// stand-alone AP50 of the genome its search found.
pub struct Row<'a> {
    /// The supernet in words.
    pub name: String,
    /// Its updates.
    pub iterations: usize,
    /// Paths per update.
    pub paths_per_step: usize,
    /// Training seconds and the last logged (total, box) loss ([`training_log`]).
    pub log: (f64, (f64, f64)),
    /// Inherited AP50 of each pool genome.
    pub inherited: &'a [f64],
    /// The genome its search found, that genome's inherited AP50 (the search's fitness) and its
    /// stand-alone AP50 per seed, if searched.
    pub searched: Option<(&'a str, f64, &'a [f64])>,
}

impl<'a> Row<'a> {
    /// The row of an ablation run whose checkpoint is in `dir`.
    pub fn of(run: &'a AblationRun, dir: &Path) -> Row<'a> {
        let s = &run.spec;
        Row {
            name: format!("{}, base learning rate {}", s.method, s.lr),
            iterations: s.iterations,
            paths_per_step: run.paths_per_step,
            log: training_log(dir).unwrap_or((f64::NAN, (f64::NAN, f64::NAN))),
            inherited: &run.inherited,
            searched: run.search.as_ref().map(|x| (x.genome.as_str(), x.inherited_ap50, x.standalone_ap50.as_slice())),
        }
    }
}

/// The median over genomes of inherited AP50 as a fraction of stand-alone AP50 (genomes whose
/// stand-alone AP50 is 0 left out).
pub fn median_ratio(inherited: &[f64], standalone: &[f64]) -> f64 {
    let mut r: Vec<f64> = inherited.iter().zip(standalone).filter(|(_, s)| **s > 0.0).map(|(i, s)| i / s).collect();
    r.sort_by(f64::total_cmp);
    match r.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => r[n / 2],
        n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
    }
}

/// The report's section on how the supernet trains: each supernet's cost, final loss, inherited
/// AP50 as a share of stand-alone, ranking fidelity against `yardstick` (with `ceiling`, the
/// yardstick's seed-to-seed τ), and the stand-alone AP50 of the genome its search found against
/// `median`, the median random genome's AP50 over the same seeds.
pub fn section(r: &mut String, rows: &[Row<'_>], yardstick: &[f64], ceiling: Option<f64>, median: &[f64], seed: u64) {
    use detnas_core::search::stats::{bootstrap, kendall_tau, spearman};
    use std::fmt::Write;
    let _ = writeln!(r, "## (e) How the supernet trains\n");
    let _ = writeln!(
        r,
        "Every supernet on the same data, scored on the same {} genomes against the same yardstick (BN recalibrated \
         as the searches do; seed-to-seed ceiling τ {}). Cost: updates x paths per update, and training minutes \
         at the median speed of the training log. Median share: inherited AP50 as a share of stand-alone AP50, \
         the median over genomes. Searched: the study's main search run in that supernet under the same budget, \
         its genome retrained stand-alone (mean ± largest deviation over seeds; inherited AP50 in brackets).\n",
        yardstick.len(),
        ceiling.map_or("-".into(), |t| format!("{t:.2}"))
    );
    r.push_str(
        "| supernet | updates x paths | minutes | final loss (box) | median share | Kendall τ | Spearman ρ | searched, stand-alone AP50 |\n",
    );
    r.push_str("|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let (tau, rho) = (kendall_tau(row.inherited, yardstick), spearman(row.inherited, yardstick));
        let ti = bootstrap(row.inherited, yardstick, kendall_tau, 2000, seed);
        let ri = bootstrap(row.inherited, yardstick, spearman, 2000, seed);
        let (secs, (loss, box_loss)) = row.log;
        let searched = match row.searched {
            Some((_, inherited, runs)) if !runs.is_empty() => {
                let (m, sp) = mean_spread(runs);
                let seeds = if runs.len() == 1 { "1 seed".into() } else { format!("{} seeds", runs.len()) };
                format!("{m:.3} ± {sp:.3} ({seeds}; inherited {inherited:.3})")
            }
            _ => "-".into(),
        };
        let _ = writeln!(
            r,
            "| {} | {} x {} | {:.0} | {loss:.3} ({box_loss:.3}) | {:.0}% | {tau:.2} [{:.2}, {:.2}] | {rho:.2} [{:.2}, {:.2}] | {searched} |",
            row.name,
            row.iterations,
            row.paths_per_step,
            secs / 60.0,
            100.0 * median_ratio(row.inherited, yardstick),
            ti.lo,
            ti.hi,
            ri.lo,
            ri.hi
        );
    }
    r.push('\n');
    if !median.is_empty() {
        for row in rows {
            let Some((genome, _, runs)) = row.searched.filter(|(_, _, runs)| !runs.is_empty()) else { continue };
            let (name, line) = (&row.name, versus_median_line(runs, median));
            let cost = format!("{} x {}", row.iterations, row.paths_per_step);
            let _ = writeln!(r, "- {name} ({cost}): its searched genome `{genome}` {line}.");
        }
        r.push_str(WELCH);
    }
    r.push_str(
        "More rows: `detnas study --resume --ablate METHOD[:ITERATIONS[:LR]],...` on the same folder (the yardstick \
         is not retrained).\n\n",
    );
}

#[cfg(test)]
mod tests {
    use super::{AblationSpec, mean_spread, median_ratio, versus_median};

    #[test]
    fn a_searched_genome_wins_or_loses_only_beyond_the_larger_seed_spread() {
        let (mean, spread) = mean_spread(&[0.1, 0.3]);
        assert!((mean - 0.2).abs() < 1e-12 && (spread - 0.1).abs() < 1e-12, "{mean} ± {spread}");
        let median = (0.20, 0.04);
        assert!(versus_median((0.25, 0.01), median).starts_with("beats"));
        assert!(versus_median((0.23, 0.01), median).starts_with("is within"), "0.03 < the median's spread");
        assert!(versus_median((0.15, 0.06), median).starts_with("is within"), "0.05 < this one's spread");
        assert!(versus_median((0.10, 0.06), median).starts_with("loses"));
    }

    #[test]
    fn the_median_share_leaves_out_genomes_that_scored_nothing() {
        assert_eq!(median_ratio(&[0.1, 0.2, 0.3], &[0.2, 0.2, 0.0]), 0.75);
        assert_eq!(median_ratio(&[0.1, 0.4, 0.3], &[0.2, 0.4, 0.3]), 1.0);
        assert!(median_ratio(&[0.1], &[0.0]).is_nan());
    }

    #[test]
    fn specs_parse_with_defaults_and_refuse_what_is_out_of_bounds() {
        let d = (3200, 0.02);
        let s = AblationSpec::parse("fair", d).unwrap();
        assert_eq!((s.method.as_str(), s.iterations, s.lr), ("fair", 3200, 0.02));
        let s = AblationSpec::parse("uniform:6400:0.005", d).unwrap();
        assert_eq!((s.iterations, s.lr, s.slug().as_str()), (6400, 0.005, "uniform-6400-lr0.005"));
        assert_eq!(s.paths_per_step(4), 1);
        assert_eq!(AblationSpec::parse("fair:800", d).unwrap().paths_per_step(4), 4);
        for bad in [
            "",
            "greedy",
            "fair:0",
            "fair:-1",
            "fair:100001",
            "fair:800:0",
            "fair:800:nan",
            "fair:800:inf",
            "fair:8:0.1:x",
        ] {
            assert!(AblationSpec::parse(bad, d).is_err(), "{bad:?} accepted");
        }
    }
}

//! Scoring latency predictions against repeated measurements, and the noise ceiling of those
//! measurements themselves.
//!
//! A predictor can agree with a measurement no better than the measurement agrees with itself: if
//! one measurement has a coefficient of variation `c`, a perfect predictor lands within ±10% of it
//! with probability 2Φ(0.1/c) − 1 (68% at c = 10%), and within ±10% of the mean of `K`
//! repetitions with 2Φ(0.1·√K/c) − 1. So every score here comes with the same metrics between
//! two repetitions of the same models ([`Ceiling`]), and the predictor is scored against the mean
//! of the repetitions.

use detnas_core::search::stats::kendall_tau_defined;
use serde::Serialize;

/// Agreement of predictions with measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Share (0-1) of genomes predicted within ±10% of their measurement.
    pub within_10pct: f64,
    /// Mean absolute percentage error, in percent.
    pub mape: f64,
    /// Kendall's τ-b between predicted and measured (rank agreement, -1..1); `None` (JSON `null`)
    /// when undefined: fewer than 2 genomes, or either series constant.
    pub kendall_tau: Option<f64>,
    /// Root mean square error, in milliseconds.
    pub rmse_ms: f64,
    /// Bias: the mean signed error (predicted − measured) / measured, in percent.
    pub bias_pct: f64,
    /// Spread: the standard deviation of the signed percentage errors around the bias, in percent.
    pub error_sd_pct: f64,
}

/// [`Metrics`] of `predicted` against `measured` (milliseconds, same order).
pub fn metrics(predicted: &[f64], measured: &[f64]) -> Metrics {
    let n = predicted.len().min(measured.len()).max(1) as f64;
    let signed: Vec<f64> = predicted.iter().zip(measured).map(|(p, m)| (p - m) / m).collect();
    let sq: f64 = predicted.iter().zip(measured).map(|(p, m)| (p - m) * (p - m)).sum();
    let bias = signed.iter().sum::<f64>() / n;
    let var = signed.iter().map(|s| (s - bias) * (s - bias)).sum::<f64>() / n;
    Metrics {
        within_10pct: signed.iter().filter(|r| r.abs() <= 0.10).count() as f64 / n,
        mape: 100.0 * signed.iter().map(|s| s.abs()).sum::<f64>() / n,
        kendall_tau: kendall_tau_defined(predicted, measured),
        rmse_ms: (sq / n).sqrt(),
        bias_pct: 100.0 * bias,
        error_sd_pct: 100.0 * var.sqrt(),
    }
}

/// How well repeated measurements of the same genomes agree: the ceiling of any predictor scored
/// against them. Flattened into a check's JSON as `repeat_*` fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ceiling {
    /// Share within ±10% between two repetitions (one as the prediction of the other), averaged
    /// over every pair of repetitions.
    pub repeat_within_10pct: f64,
    /// MAPE between two repetitions, in percent, averaged over the pairs.
    pub repeat_mape: f64,
    /// Kendall's τ between two repetitions, averaged over the pairs where it is defined.
    pub repeat_kendall_tau: Option<f64>,
    /// The median over genomes of the coefficient of variation of their repetitions, in percent.
    pub repeat_cv_pct: f64,
    /// The share a perfect predictor would have within ±10% of the mean of the repetitions, were
    /// each genome's noise normal with its measured coefficient of variation: the mean over
    /// genomes of 2Φ(0.1·√K/c) − 1. The predictor's `within_10pct` is to be read against it.
    pub perfect_within_10pct: f64,
}

/// The [`Ceiling`] of `repetitions` (per genome, each repetition's time; genomes may have
/// different counts: each pair of repetitions is compared over the genomes that have both);
/// `None` when no genome has two.
pub fn ceiling(repetitions: &[Vec<f64>]) -> Option<Ceiling> {
    let k = repetitions.iter().map(Vec::len).max()?;
    if k < 2 {
        return None;
    }
    let pair = |i: usize, j: usize| {
        let both: Vec<&Vec<f64>> = repetitions.iter().filter(|g| g.len() > j).collect();
        let (a, b): (Vec<f64>, Vec<f64>) = both.iter().map(|g| (g[j], g[i])).unzip();
        (!a.is_empty()).then(|| metrics(&a, &b))
    };
    let pairs: Vec<Metrics> =
        (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).filter_map(|(i, j)| pair(i, j)).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let taus: Vec<f64> = pairs.iter().filter_map(|m| m.kendall_tau).collect();
    let repeated: Vec<&Vec<f64>> = repetitions.iter().filter(|g| g.len() >= 2).collect();
    let cvs: Vec<f64> = repeated.iter().map(|g| super::protocol::cv(g)).collect();
    let perfect = repeated
        .iter()
        .zip(&cvs)
        .map(|(g, &c)| if c <= 0.0 { 1.0 } else { 2.0 * normal_cdf(0.1 * (g.len() as f64).sqrt() / c) - 1.0 })
        .collect::<Vec<f64>>();
    Some(Ceiling {
        repeat_within_10pct: mean(&pairs.iter().map(|m| m.within_10pct).collect::<Vec<_>>()),
        repeat_mape: mean(&pairs.iter().map(|m| m.mape).collect::<Vec<_>>()),
        repeat_kendall_tau: (!taus.is_empty()).then(|| mean(&taus)),
        repeat_cv_pct: 100.0 * super::protocol::median(&cvs),
        perfect_within_10pct: mean(&perfect),
    })
}

/// Budget decisions near a latency budget: of the genomes whose measured time is within ±10% of
/// the budget, how many the predictor puts on the other side of it than the measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetDecisions {
    /// The budget, in milliseconds.
    pub budget_ms: f64,
    /// Genomes measured within ±10% of the budget.
    pub near: usize,
    /// Of those, the genomes predicted on the wrong side (under when measured over, or over when
    /// measured under).
    pub wrong_side: usize,
    /// The ceiling: of the same genomes, how many land on different sides in two repetitions,
    /// averaged over every pair of repetitions (`None` with one repetition).
    pub repeat_wrong_side: Option<f64>,
}

/// [`BudgetDecisions`] at `budget_ms` of `predicted` against the mean of `repetitions` (per genome).
pub fn budget_decisions(budget_ms: f64, predicted: &[f64], repetitions: &[Vec<f64>]) -> BudgetDecisions {
    let measured: Vec<f64> = repetitions.iter().map(|r| r.iter().sum::<f64>() / r.len().max(1) as f64).collect();
    let near: Vec<usize> =
        (0..measured.len()).filter(|&i| (measured[i] - budget_ms).abs() <= 0.1 * budget_ms).collect();
    let under = |ms: f64| ms <= budget_ms;
    let wrong_side = near.iter().filter(|&&i| under(predicted[i]) != under(measured[i])).count();
    let k = repetitions.iter().map(Vec::len).max().unwrap_or(0);
    let pairs: Vec<(usize, usize)> = (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).collect();
    let repeat_wrong_side = (!pairs.is_empty()).then(|| {
        // over the genomes that have both repetitions
        let flips = |(a, b): (usize, usize)| {
            let r = |g: usize| &repetitions[g];
            near.iter().filter(|&&g| r(g).len() > b && under(r(g)[a]) != under(r(g)[b])).count() as f64
        };
        pairs.iter().map(|&p| flips(p)).sum::<f64>() / pairs.len() as f64
    });
    BudgetDecisions { budget_ms, near: near.len(), wrong_side, repeat_wrong_side }
}

/// The standard normal distribution function Φ (Abramowitz and Stegun 7.1.26 for erf: absolute
/// error under 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detnas_core::rng::Rng;

    #[test]
    fn metrics_split_bias_from_spread() {
        let measured = [10.0, 20.0, 40.0, 80.0];
        let m = metrics(&[10.5, 25.0, 40.0, 70.0], &measured);
        assert_eq!(m.within_10pct, 0.5);
        assert!((m.mape - 100.0 * (0.05 + 0.25 + 0.0 + 0.125) / 4.0).abs() < 1e-9, "{m:?}");
        assert_eq!(m.kendall_tau, Some(1.0));
        assert_eq!(metrics(&[10.0], &[11.0]).kendall_tau, None, "undefined for one genome");
        // every prediction 20% high: all bias, no spread
        let m = metrics(&[12.0, 24.0, 48.0], &[10.0, 20.0, 40.0]);
        assert!((m.bias_pct - 20.0).abs() < 1e-9 && m.error_sd_pct.abs() < 1e-9, "{m:?}");
        // +10% and -10%: no bias, 10% spread
        let m = metrics(&[11.0, 18.0], &[10.0, 20.0]);
        assert!(m.bias_pct.abs() < 1e-9 && (m.error_sd_pct - 10.0).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn the_normal_distribution_function() {
        for (x, phi) in [(0.0, 0.5), (1.0, 0.841_344_7), (-1.959_964, 0.025), (3.0, 0.998_650_1)] {
            assert!((normal_cdf(x) - phi).abs() < 2e-7, "Φ({x}) = {} not {phi}", normal_cdf(x));
        }
    }

    /// `genomes` true times from 5 to 50 ms, each measured `k` times with normal noise of
    /// coefficient of variation `cv`.
    fn noisy(genomes: usize, k: usize, cv: f64, seed: u64) -> (Vec<f64>, Vec<Vec<f64>>) {
        let mut rng = Rng::seed(seed);
        let truth: Vec<f64> = (0..genomes).map(|i| 5.0 + 45.0 * i as f64 / genomes as f64).collect();
        let mut gauss = move || {
            // Box-Muller
            let (u, v) = (rng.unit().max(1e-12), rng.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let reps = truth.iter().map(|t| (0..k).map(|_| t * (1.0 + cv * gauss())).collect()).collect();
        (truth, reps)
    }

    #[test]
    fn the_ceiling_of_measurements_with_known_noise() {
        // CV 5%: two measurements agree within ±10% with 2Φ(0.1/(0.05·√2)) − 1 = 84.3%; a
        // perfect predictor is within ±10% of the mean of 3 with 2Φ(0.1·√3/0.05) − 1 = 99.95%
        let (truth, reps) = noisy(3000, 3, 0.05, 1);
        let c = ceiling(&reps).unwrap();
        assert!((c.repeat_within_10pct - 0.843).abs() < 0.02, "{c:?}");
        // E|X − Y| / m for two N(m, (0.05 m)²): 0.05·√2·√(2/π) = 5.64%
        assert!((c.repeat_mape - 5.64).abs() < 0.3, "{c:?}");
        // the sample CV of 3 draws has the median √(ln 2)·c = 0.833 c (s²/σ² is χ²₂/2)
        assert!((c.repeat_cv_pct - 0.833 * 5.0).abs() < 0.3, "{c:?}");
        assert!(c.perfect_within_10pct > 0.98, "{c:?}");
        let mean: Vec<f64> = reps.iter().map(|r| r.iter().sum::<f64>() / 3.0).collect();
        let perfect = metrics(&truth, &mean);
        assert!(perfect.within_10pct > 0.99 && perfect.bias_pct.abs() < 0.2, "{perfect:?}");
        // CV 10%: 52.0% between repetitions; a perfect predictor against the mean of 3: 91.6%
        let (truth, reps) = noisy(3000, 3, 0.10, 2);
        let c = ceiling(&reps).unwrap();
        assert!((c.repeat_within_10pct - 0.520).abs() < 0.03, "{c:?}");
        assert!((c.perfect_within_10pct - 0.916).abs() < 0.05, "{c:?}");
        let mean: Vec<f64> = reps.iter().map(|r| r.iter().sum::<f64>() / 3.0).collect();
        assert!((metrics(&truth, &mean).within_10pct - 0.916).abs() < 0.02);
        assert!(ceiling(&[vec![1.0], vec![2.0]]).is_none(), "one repetition has no ceiling");
        // genomes with fewer repetitions (slow ones left out) take part in the pairs they have
        let c = ceiling(&[vec![10.0, 10.0, 10.0], vec![20.0], vec![30.0, 36.0]]).unwrap();
        assert!((c.repeat_within_10pct - (0.5 + 1.0 + 1.0) / 3.0).abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn budget_decisions_count_wrong_sides_near_the_budget() {
        // measured 9.5, 10.5, 10.2 (near 10 ms) and 20 (far); predictions 10.5 (wrong), 10.6 (right),
        // 9.9 (wrong), 5 (far: not counted)
        let reps = vec![vec![9.5, 9.5], vec![10.5, 10.5], vec![9.9, 10.5], vec![20.0, 20.0]];
        let d = budget_decisions(10.0, &[10.5, 10.6, 9.9, 5.0], &reps);
        assert_eq!((d.near, d.wrong_side), (3, 2), "{d:?}");
        assert_eq!(d.repeat_wrong_side, Some(1.0), "the third genome's repetitions straddle the budget");
    }
}

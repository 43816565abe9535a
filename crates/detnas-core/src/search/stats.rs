//! Rank statistics of paired samples, used wherever a ranking is judged (latency-table checks,
//! the study, search reports): Kendall's τ-b, Spearman's ρ (average ranks for ties) and percentile
//! bootstrap intervals.

use crate::rng::Rng;

/// A two-sided 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// Ranks from 1, tied values sharing their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = rank;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation: Pearson's correlation of the ranks; 0 when either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "paired samples");
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 { 0.0 } else { cov / (va * vb).sqrt() }
}

/// Percentile bootstrap (2.5% and 97.5%) of `stat` over `resamples` resamplings of the pairs
/// with replacement, seeded.
pub fn bootstrap(a: &[f64], b: &[f64], stat: fn(&[f64], &[f64]) -> f64, resamples: usize, seed: u64) -> Interval {
    let n = a.len();
    let mut rng = Rng::seed(seed);
    let mut values: Vec<f64> = (0..resamples)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.below(n as u64) as usize).collect();
            let (x, y): (Vec<f64>, Vec<f64>) = idx.iter().map(|&i| (a[i], b[i])).unzip();
            stat(&x, &y)
        })
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return Interval { lo: f64::NAN, hi: f64::NAN };
    }
    let at = |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    Interval { lo: at(0.025), hi: at(0.975) }
}

/// Kendall's τ-b of two equally long series (0 when either is constant or shorter than 2; see
/// [`kendall_tau_defined`]).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    kendall_tau_defined(a, b).unwrap_or(0.0)
}

/// Kendall's τ-b of two equally long series; `None` when undefined (either constant or shorter
/// than 2).
pub fn kendall_tau_defined(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len());
    let (mut s, mut ties_a, mut ties_b, mut pairs) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        for j in i + 1..n {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            pairs += 1.0;
            if da == 0.0 {
                ties_a += 1.0;
            }
            if db == 0.0 {
                ties_b += 1.0;
            }
            s += (da.signum() * db.signum()) * f64::from(da != 0.0 && db != 0.0);
        }
    }
    let denominator = ((pairs - ties_a) * (pairs - ties_b)).sqrt();
    (denominator > 0.0).then(|| s / denominator)
}

/// Welch's t statistic of the difference between the means of `a` and `b` (each with its own
/// sample variance, n - 1): the difference over its standard error. NaN when either series has
/// fewer than 2 values or neither varies.
pub fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    if a.len() < 2 || b.len() < 2 {
        return f64::NAN;
    }
    let moments = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        (n, mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0))
    };
    let ((na, ma, va), (nb, mb, vb)) = (moments(a), moments(b));
    let se = (va / na + vb / nb).sqrt();
    if se > 0.0 { (ma - mb) / se } else { f64::NAN }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_t_is_the_mean_difference_over_its_standard_error() {
        // means 2 and 5, sample variances 1 and 1: t = -3 / sqrt(1/3 + 1/3)
        let t = welch_t(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert!((t + 3.0 / (2.0f64 / 3.0).sqrt()).abs() < 1e-12, "{t}");
        // unequal sizes and variances: b's variance is 4, its mean 2
        let t = welch_t(&[1.0, 1.0, 1.0, 3.0], &[0.0, 2.0, 4.0]);
        assert!((t - (1.5 - 2.0) / (1.0 / 4.0 + 4.0 / 3.0f64).sqrt()).abs() < 1e-12, "{t}");
        assert!(welch_t(&[1.0], &[1.0, 2.0]).is_nan() && welch_t(&[1.0, 1.0], &[2.0, 2.0]).is_nan());
    }

    #[test]
    fn spearman_matches_hand_computed_values() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // d = (0, 0, -1, 1, 0): 1 - 6 * 2 / (5 * 24) = 0.9
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 2.0, 4.0, 3.0, 5.0]) - 0.9).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0, 3.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
    }

    #[test]
    fn bootstrap_intervals_are_seeded_and_hold_the_statistic() {
        let a: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x + if (*x as i64) % 3 == 0 { 3.0 } else { 0.0 }).collect();
        let i1 = bootstrap(&a, &b, spearman, 500, 7);
        assert_eq!(i1, bootstrap(&a, &b, spearman, 500, 7));
        let rho = spearman(&a, &b);
        assert!(i1.lo <= rho && rho <= i1.hi && i1.hi <= 1.0, "{i1:?} {rho}");
        let perfect = bootstrap(&a, &a, spearman, 200, 1);
        assert!(perfect.lo > 0.99, "{perfect:?}");
    }

    #[test]
    fn kendall_tau_of_known_orders() {
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]), 1.0);
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]), -1.0);
        // one discordant pair of six: (5 - 1) / 6
        assert!((kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(kendall_tau(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }
}

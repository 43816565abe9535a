//! The measurement protocol behind every number of a latency table and of its check: each item
//! (a part, a whole detector) is measured in `K` independent repetitions — a fresh ONNX Runtime
//! session each time, warm-up, then the [`TimingPlan`]'s runs, summarised by their mean — and the
//! items are interleaved round-robin (round 1 measures every item, then round 2, ...), so that a
//! slow spell of the machine hits all items alike instead of one. Each item keeps its
//! repetitions, so its spread is on record and a check can report its own noise ceiling: how well
//! two repetitions of the same model agree ([`super::check`]).

use crate::timing::{Latency, TimingPlan};
use serde::{Deserialize, Serialize};

/// Most repetitions a protocol may ask for.
pub const MAX_REPETITIONS: usize = 100;

/// How every item is measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// Independent repetitions per item (1 to [`MAX_REPETITIONS`]), interleaved round-robin.
    pub repetitions: usize,
    /// Warm-up and timed runs of one repetition.
    pub plan: TimingPlan,
}

impl Default for Protocol {
    /// Three repetitions of the default [`TimingPlan`].
    fn default() -> Self {
        Protocol { repetitions: 3, plan: TimingPlan::default() }
    }
}

impl Protocol {
    /// Refuses 0 or more than [`MAX_REPETITIONS`] repetitions and a plan
    /// [`TimingPlan::validate`] refuses.
    pub fn validate(&self) -> crate::Result<()> {
        if !(1..=MAX_REPETITIONS).contains(&self.repetitions) {
            let m = format!("{} repetitions: from 1 to {MAX_REPETITIONS}", self.repetitions);
            return Err(crate::InferError::Config(m));
        }
        self.plan.validate()
    }

    /// Measures `items` items with `measure(item)` (one repetition: it times the item under
    /// [`Self::plan`]) in [`Self::repetitions`] rounds, each round over every item in order; returns
    /// each item's repetitions combined ([`combine`]). `log` gets each measurement as
    /// `(round, item, latency)`. The first error stops the measurement.
    pub fn round_robin<E>(
        &self,
        items: usize,
        mut measure: impl FnMut(usize) -> Result<Latency, E>,
        log: &mut dyn FnMut(usize, usize, &Latency),
    ) -> Result<Vec<Latency>, E> {
        let mut reps: Vec<Vec<Latency>> = vec![Vec::with_capacity(self.repetitions); items];
        for round in 0..self.repetitions {
            for (item, r) in reps.iter_mut().enumerate() {
                let l = measure(item)?;
                log(round, item, &l);
                r.push(l);
            }
        }
        Ok(reps.iter().map(|r| combine(r)).collect())
    }
}

/// One latency from the repetitions of the same item: `mean_ms` is the **median of the
/// repetitions' means** (one slow spell moves it less than a pooled mean), `p50_ms`, `p90_ms` and
/// `p99_ms` the medians of theirs, `min_ms` the least, `iterations` the sum, and
/// `repetitions_ms` every repetition's mean in the order measured. One repetition is returned as
/// it is, with its mean as the only repetition.
///
/// # Panics
/// On no repetitions.
pub fn combine(reps: &[Latency]) -> Latency {
    assert!(!reps.is_empty(), "no repetitions to combine");
    let median = |f: fn(&Latency) -> f64| median(&reps.iter().map(f).collect::<Vec<f64>>());
    Latency {
        iterations: reps.iter().map(|l| l.iterations).sum(),
        mean_ms: median(|l| l.mean_ms),
        p50_ms: median(|l| l.p50_ms),
        p90_ms: median(|l| l.p90_ms),
        p99_ms: median(|l| l.p99_ms),
        min_ms: reps.iter().map(|l| l.min_ms).fold(f64::INFINITY, f64::min),
        repetitions_ms: reps.iter().map(|l| l.mean_ms).collect(),
    }
}

/// The median of `values` (the mean of the two middle ones for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Spread of an item's repetitions: (largest − smallest) / median, in percent (0 for one).
pub fn spread_pct(repetitions_ms: &[f64]) -> f64 {
    let (lo, hi) =
        repetitions_ms.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if repetitions_ms.len() < 2 { 0.0 } else { 100.0 * (hi - lo) / median(repetitions_ms) }
}

/// Coefficient of variation of an item's repetitions (sample standard deviation over mean; 0
/// for fewer than two).
pub fn cv(repetitions_ms: &[f64]) -> f64 {
    let n = repetitions_ms.len();
    if n < 2 {
        return 0.0;
    }
    let mean = repetitions_ms.iter().sum::<f64>() / n as f64;
    let var = repetitions_ms.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    var.sqrt() / mean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(mean: f64) -> Latency {
        Latency::from_ms(vec![mean]).unwrap()
    }

    #[test]
    fn repetitions_run_round_robin_and_combine_by_medians() {
        let p = Protocol { repetitions: 3, plan: TimingPlan::iterations(0, 1) };
        let mut order = Vec::new();
        let times = [[1.0, 5.0, 2.0], [10.0, 11.0, 30.0]];
        let mut calls = [0usize; 2];
        let out = p
            .round_robin(
                2,
                |i| {
                    order.push(i);
                    calls[i] += 1;
                    Ok::<_, ()>(latency(times[i][calls[i] - 1]))
                },
                &mut |_, _, _| {},
            )
            .unwrap();
        assert_eq!(order, [0, 1, 0, 1, 0, 1], "interleaved round by round");
        assert_eq!(out[0].repetitions_ms, [1.0, 5.0, 2.0]);
        assert_eq!((out[0].mean_ms, out[0].min_ms, out[0].iterations), (2.0, 1.0, 3));
        assert_eq!(out[1].mean_ms, 11.0, "one slow repetition does not move the median");
        assert!((spread_pct(&out[1].repetitions_ms) - 100.0 * 20.0 / 11.0).abs() < 1e-9);
        assert_eq!(spread_pct(&[4.0]), 0.0);
        assert!((cv(&[9.0, 10.0, 11.0]) - 0.1).abs() < 1e-12);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
        let err = p.round_robin(2, |i| if i == 1 { Err("boom") } else { Ok(latency(1.0)) }, &mut |_, _, _| {});
        assert_eq!(err.unwrap_err(), "boom");
        assert!(Protocol { repetitions: 0, ..p }.validate().is_err());
        assert!(Protocol { repetitions: MAX_REPETITIONS + 1, ..p }.validate().is_err());
        assert!(p.validate().is_ok());
    }
}

//! The measurement protocol behind every number of a latency table and of its check: each item
//! (a part, a whole detector) is measured in `K` independent repetitions — a fresh ONNX Runtime
//! session each time, warm-up, then the [`TimingPlan`]'s runs, summarised by their mean — and the
//! items are interleaved round-robin (round 1 measures every item, then round 2, ...), so that a
//! slow spell of the machine hits all items alike instead of one. Each item keeps its
//! repetitions, so its spread is on record and a check can report its own noise ceiling: how well
//! two repetitions of the same model agree ([`super::check`]).
//!
//! A **drift reference** — one fixed sub-graph — is timed before and after every few
//! measurements. On a shared machine the slow spells are long (tens of seconds) and add about the
//! same milliseconds to every run of whatever is measured during them (measured here: +9 ms on
//! models of 11 to 77 ms, the reference from 0.27 to 0.86 ms, and the slow state lasted most of
//! some builds). Interference only ever slows a run down, so the quiet machine is the reference's
//! *fastest* timing: the measurements taken while the reference was more than the tolerance above
//! it are measured again, up to [`Drift::PASSES`] more times, and the table or check records how
//! many were and how many are still disturbed.

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
    /// [`Self::plan`]) in [`Self::repetitions`] rounds, each round over every item in order, with
    /// `reference` timed around every [`Drift::EVERY`] measurements and the measurements taken
    /// while it was more than `tolerance_pct` above its fastest timing measured again (see the
    /// module documentation); returns each item's repetitions combined ([`combine`]: those taken in
    /// quiet stretches when the item has any, else all) and the drift seen.
    /// `log` gets each measurement as `(round, item, latency)`, re-measurements included. The
    /// first error stops the measurement.
    pub fn round_robin<E>(
        &self,
        items: usize,
        mut measure: impl FnMut(usize) -> Result<Latency, E>,
        reference: &mut Reference<'_, E>,
        log: &mut dyn FnMut(usize, usize, &Latency),
    ) -> Result<(Vec<Latency>, Drift), E> {
        let mut reps: Vec<Vec<Option<Latency>>> = vec![vec![None; self.repetitions]; items];
        let mut drift = Drift {
            reference: reference.name.clone(),
            times_ms: Vec::new(),
            drift_pct: 0.0,
            tolerance_pct: reference.tolerance_pct,
            remeasured: 0,
            disturbed: 0,
        };
        let mut queue: Vec<(usize, usize)> =
            (0..self.repetitions).flat_map(|round| (0..items).map(move |item| (round, item))).collect();
        for pass in 0..=Drift::PASSES {
            if pass > 0 {
                drift.remeasured += queue.len();
            }
            // chunk i lies between reference timings `first + i` and `first + i + 1`
            let first = drift.times_ms.len();
            drift.times_ms.push((reference.time)()?);
            for chunk in queue.chunks(Drift::EVERY) {
                for &(round, item) in chunk {
                    let l = measure(item)?;
                    log(round, item, &l);
                    reps[item][round] = Some(l);
                }
                drift.times_ms.push((reference.time)()?);
            }
            let quiet = drift.times_ms.iter().copied().fold(f64::INFINITY, f64::min);
            let off = |t: f64| (t / quiet - 1.0) * 100.0 > reference.tolerance_pct;
            let t = &drift.times_ms;
            queue = queue
                .chunks(Drift::EVERY)
                .enumerate()
                .filter(|(i, _)| off(t[first + i]) || off(t[first + i + 1]))
                .flat_map(|(_, chunk)| chunk.to_vec())
                .collect();
            if queue.is_empty() {
                break;
            }
        }
        drift.disturbed = queue.len();
        drift.drift_pct = spread_pct(&drift.times_ms);
        // a repetition still taken in a slow spell is left out where its item has a quiet one
        let slow: std::collections::HashSet<(usize, usize)> = queue.into_iter().collect();
        let combined = reps.iter().enumerate().map(|(item, r)| {
            let all: Vec<(usize, Latency)> =
                r.iter().enumerate().map(|(round, l)| (round, l.clone().expect("measured"))).collect();
            let quiet: Vec<Latency> =
                all.iter().filter(|(round, _)| !slow.contains(&(*round, item))).map(|(_, l)| l.clone()).collect();
            combine(&if quiet.is_empty() { all.into_iter().map(|(_, l)| l).collect() } else { quiet })
        });
        Ok((combined.collect(), drift))
    }
}

/// The drift reference of a measurement: a fixed sub-graph timed throughout.
pub struct Reference<'a, E> {
    /// What it is (`stem 320x320`), recorded.
    pub name: String,
    /// Times it once; its median run in milliseconds.
    pub time: Box<dyn FnMut() -> Result<f64, E> + 'a>,
    /// Measurements taken while it was more than this many percent above its fastest timing are
    /// measured again.
    pub tolerance_pct: f64,
}

/// How much the machine itself moved while something was measured: the drift reference timed
/// before and after every [`Drift::EVERY`] measurements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// The reference part (`stem 96x96`).
    pub reference: String,
    /// Its median run time at each timing, in order, in milliseconds.
    pub times_ms: Vec<f64>,
    /// (slowest − fastest) / median of `times_ms`, in percent: how far the machine moved.
    pub drift_pct: f64,
    /// Measurements taken while the reference was more than this many percent above its fastest
    /// timing were measured again.
    pub tolerance_pct: f64,
    /// Measurements taken again (each counted once per pass).
    pub remeasured: usize,
    /// Measurements still taken in a disturbed stretch after the last pass.
    pub disturbed: usize,
}

impl Drift {
    /// Measurements between two timings of the reference.
    pub const EVERY: usize = 8;
    /// Passes of re-measurement at most.
    pub const PASSES: usize = 2;
    /// The default tolerance, in percent.
    pub const TOLERANCE_PCT: f64 = 20.0;
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

/// The mean of an item's repetitions ([`combine`] keeps at least one): what checks and measured
/// finalists are scored by; the latency's own mean for a timing without repetitions.
pub fn repetition_mean(latency: &Latency) -> f64 {
    let r = &latency.repetitions_ms;
    if r.is_empty() { latency.mean_ms } else { r.iter().sum::<f64>() / r.len() as f64 }
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

    /// A reference that always times `ms`.
    fn steady<'a>(ms: f64) -> Reference<'a, &'static str> {
        Reference { name: "steady".into(), time: Box::new(move || Ok(ms)), tolerance_pct: 20.0 }
    }

    #[test]
    fn repetitions_run_round_robin_and_combine_by_medians() {
        let p = Protocol { repetitions: 3, plan: TimingPlan::iterations(0, 1) };
        let mut order = Vec::new();
        let times = [[1.0, 5.0, 2.0], [10.0, 11.0, 30.0]];
        let mut calls = [0usize; 2];
        let (out, drift) = p
            .round_robin(
                2,
                |i| {
                    order.push(i);
                    calls[i] += 1;
                    Ok(latency(times[i][calls[i] - 1]))
                },
                &mut steady(1.0),
                &mut |_, _, _| {},
            )
            .unwrap();
        assert_eq!(order, [0, 1, 0, 1, 0, 1], "interleaved round by round");
        assert_eq!(out[0].repetitions_ms, [1.0, 5.0, 2.0]);
        assert_eq!((out[0].mean_ms, out[0].min_ms, out[0].iterations), (2.0, 1.0, 3));
        assert_eq!(out[1].mean_ms, 11.0, "one slow repetition does not move the median");
        assert_eq!((drift.times_ms.len(), drift.remeasured, drift.disturbed, drift.drift_pct), (2, 0, 0, 0.0));
        assert!((spread_pct(&out[1].repetitions_ms) - 100.0 * 20.0 / 11.0).abs() < 1e-9);
        assert_eq!(spread_pct(&[4.0]), 0.0);
        assert!((cv(&[9.0, 10.0, 11.0]) - 0.1).abs() < 1e-12);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
        let err = p.round_robin(
            2,
            |i| if i == 1 { Err("boom") } else { Ok(latency(1.0)) },
            &mut steady(1.0),
            &mut |_, _, _| {},
        );
        assert_eq!(err.unwrap_err(), "boom");
        assert!(Protocol { repetitions: 0, ..p }.validate().is_err());
        assert!(Protocol { repetitions: MAX_REPETITIONS + 1, ..p }.validate().is_err());
        assert!(p.validate().is_ok());
    }

    /// 20 items measured once, in chunks of 8, 8 and 4, on a machine slow (+10 ms on every run,
    /// the reference 1 -> 3 ms) at the reference timings numbered `slow_timings` (from 1) and for
    /// the measurements after the timings numbered `slow_after`.
    fn spell(
        slow_timings: std::ops::RangeInclusive<usize>,
        slow_after: std::ops::RangeInclusive<usize>,
    ) -> (Vec<Latency>, Drift) {
        let p = Protocol { repetitions: 1, plan: TimingPlan::iterations(0, 1) };
        let clock = std::cell::Cell::new(0usize); // reference timings so far
        let mut reference = Reference {
            name: "clock".into(),
            time: Box::new(|| {
                clock.set(clock.get() + 1);
                Ok::<_, ()>(if slow_timings.contains(&clock.get()) { 3.0 } else { 1.0 })
            }),
            tolerance_pct: 20.0,
        };
        let time_of =
            |i: usize| if slow_after.contains(&clock.get()) { 10.0 + i as f64 + 10.0 } else { 10.0 + i as f64 };
        p.round_robin(20, |i| Ok(latency(time_of(i))), &mut reference, &mut |_, _, _| {}).unwrap()
    }

    #[test]
    fn measurements_in_a_slow_spell_are_measured_again() {
        // slow at the 2nd reference timing and through the second chunk, quiet from the 3rd timing
        // on: chunks 1 and 2 touch the slow timing (the 2nd bounds both)
        let (out, drift) = spell(2..=2, 2..=2);
        assert_eq!((drift.remeasured, drift.disturbed), (16, 0), "{drift:?}");
        for (i, l) in out.iter().enumerate() {
            assert_eq!(l.mean_ms, 10.0 + i as f64, "item {i} holds its quiet time");
        }
        assert!((drift.drift_pct - 200.0).abs() < 1e-9, "{drift:?}");
        // slow for most of the first pass (reference timings 1 to 3 of 4): the quiet machine is
        // still the fastest timing, and the slow chunks are the ones measured again
        let (out, drift) = spell(1..=3, 1..=2);
        assert_eq!((drift.remeasured, drift.disturbed), (20, 0), "{drift:?}");
        assert!(out.iter().enumerate().all(|(i, l)| l.mean_ms == 10.0 + i as f64), "{out:?}");
    }
}

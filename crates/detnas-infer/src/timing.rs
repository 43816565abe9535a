//! Timing hygiene shared by `detnas bench` and the latency tables: warm-up runs, then timed runs
//! until both a minimum count and a minimum duration are reached (capped), summarised as
//! p50/p90/p99/mean/min in milliseconds.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long to time a function.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingPlan {
    /// Untimed runs first (caches, allocator, ONNX Runtime's lazy initialisation).
    pub warmup: usize,
    /// Timed runs: at least this many ...
    pub min_iters: usize,
    /// ... and at least this many seconds of timed runs (per function when two alternate) ...
    pub min_seconds: f64,
    /// ... but never more runs than this (at least `min_iters`).
    pub max_iters: usize,
}

impl Default for TimingPlan {
    /// 3 warm-up runs, then 10 runs and 0.2 s at least, 2000 runs at most.
    fn default() -> Self {
        TimingPlan { warmup: 3, min_iters: 10, min_seconds: 0.2, max_iters: 2000 }
    }
}

/// Most warm-up or timed runs of a [`TimingPlan`] a program may ask for (as the command line's
/// `--warmup` / `--iters`).
pub const MAX_RUNS: usize = 10_000_000;

/// Longest minimum timing of a [`TimingPlan`], in seconds (a day, as `bench --seconds`).
pub const MAX_MIN_SECONDS: f64 = 86_400.0;

impl TimingPlan {
    /// Refuses a plan no timing should run: more than [`MAX_RUNS`] warm-up or minimum runs, or a
    /// minimum duration that is not a finite number of seconds from 0 to [`MAX_MIN_SECONDS`].
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::InferError::Config(format!("timing plan: {m}")));
        if self.warmup > MAX_RUNS || self.min_iters > MAX_RUNS {
            return bad(format!("{} warm-up / {} timed runs: at most {MAX_RUNS}", self.warmup, self.min_iters));
        }
        if !(self.min_seconds.is_finite() && (0.0..=MAX_MIN_SECONDS).contains(&self.min_seconds)) {
            return bad(format!("min_seconds {} is not from 0 to {MAX_MIN_SECONDS}", self.min_seconds));
        }
        Ok(())
    }

    /// Exactly `n` timed runs after `warmup`.
    pub fn iterations(warmup: usize, n: usize) -> Self {
        TimingPlan { warmup, min_iters: n, min_seconds: 0.0, max_iters: n }
    }

    fn done(&self, runs: usize, elapsed: Duration, functions: usize) -> bool {
        let enough = runs >= self.min_iters.max(1) && elapsed.as_secs_f64() >= self.min_seconds * functions as f64;
        enough || runs >= self.max_iters.max(self.min_iters).max(1)
    }
}

/// Summary statistics in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Timed runs summarised (non-finite times dropped); at least 1.
    pub iterations: usize,
    /// Mean run time, in milliseconds.
    pub mean_ms: f64,
    /// Median run time (nearest rank), in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile run time (nearest rank), in milliseconds.
    pub p90_ms: f64,
    /// 99th percentile run time (nearest rank), in milliseconds.
    pub p99_ms: f64,
    /// Fastest run, in milliseconds.
    pub min_ms: f64,
    /// The mean of each independent repetition, when this latency combines several
    /// ([`crate::latency::protocol::combine`]); empty for one timing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repetitions_ms: Vec<f64>,
}

impl Latency {
    /// Statistics of the given run times; `None` for no runs. Quantiles are nearest-rank
    /// (index `round((n - 1) q)` of the sorted times).
    pub fn from_durations(times: &[Duration]) -> Option<Self> {
        Self::from_ms(times.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    /// [`Latency::from_durations`] for times in milliseconds (non-finite values are dropped).
    pub fn from_ms(mut ms: Vec<f64>) -> Option<Self> {
        ms.retain(|v| v.is_finite());
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        Some(Latency {
            iterations: ms.len(),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            min_ms: ms[0],
            repetitions_ms: Vec::new(),
        })
    }
}

/// Times `f` under `plan`; the first error stops timing and is returned.
pub fn time<E>(plan: &TimingPlan, mut f: impl FnMut() -> Result<(), E>) -> Result<Latency, E> {
    for _ in 0..plan.warmup {
        f()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while !plan.done(times.len(), start.elapsed(), 1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    Ok(Latency::from_durations(&times).expect("at least one timed run"))
}

/// Times `a` and `b` alternately (a, b, a, b, ...) so that drift and background load hit both alike;
/// `plan.min_seconds` is per function.
pub fn time_pair<E>(
    plan: &TimingPlan,
    mut a: impl FnMut() -> Result<(), E>,
    mut b: impl FnMut() -> Result<(), E>,
) -> Result<(Latency, Latency), E> {
    for _ in 0..plan.warmup {
        a()?;
        b()?;
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while !plan.done(ta.len(), start.elapsed(), 2) {
        let t = Instant::now();
        a()?;
        ta.push(t.elapsed());
        let t = Instant::now();
        b()?;
        tb.push(t.elapsed());
    }
    let stats = |t: &[Duration]| Latency::from_durations(t).expect("at least one timed run");
    Ok((stats(&ta), stats(&tb)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_known_durations() {
        let times: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::from_durations(&times).unwrap();
        assert_eq!(l.iterations, 100);
        assert!((l.mean_ms - 50.5).abs() < 1e-9, "{l:?}");
        // nearest rank over 1..=100 ms: index round(99 q)
        assert!((l.p50_ms - 51.0).abs() < 1e-9 && (l.p90_ms - 90.0).abs() < 1e-9, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 1e-9 && (l.min_ms - 1.0).abs() < 1e-9, "{l:?}");
        assert!(Latency::from_durations(&[]).is_none());
        assert_eq!(Latency::from_ms(vec![f64::NAN, 2.0]).unwrap().p50_ms, 2.0);
    }

    #[test]
    fn plans_bound_the_runs_and_errors_stop_timing() {
        let mut calls = 0;
        let l = time(&TimingPlan::iterations(2, 5), || {
            calls += 1;
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!((l.iterations, calls), (5, 7));
        let capped = TimingPlan { warmup: 0, min_iters: 3, min_seconds: 1e9, max_iters: 4 };
        assert_eq!(time(&capped, || Ok::<_, ()>(())).unwrap().iterations, 4);
        let seconds = TimingPlan { warmup: 0, min_iters: 1, min_seconds: 0.02, max_iters: 1_000_000 };
        let l = time(&seconds, || {
            std::thread::sleep(Duration::from_millis(2));
            Ok::<_, ()>(())
        })
        .unwrap();
        assert!(l.iterations >= 5 && l.min_ms >= 2.0, "{l:?}");
        let mut n = 0;
        let err = time(&TimingPlan::default(), || {
            n += 1;
            if n == 2 { Err("boom") } else { Ok(()) }
        });
        assert_eq!(err.unwrap_err(), "boom");
        let order = std::cell::RefCell::new(String::new());
        let push = |c: char| {
            order.borrow_mut().push(c);
            Ok::<_, ()>(())
        };
        let (a, b) = time_pair(&TimingPlan::iterations(1, 2), || push('a'), || push('b')).unwrap();
        assert_eq!((a.iterations, b.iterations), (2, 2));
        assert_eq!(order.borrow().as_str(), "ababab");
    }
}

/// Latency of a detector's bare model run and of its full detect path (decode, letterbox, run,
/// post-processing) of one image, timed interleaved ([`time_pair`]) so that drift hits both alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorLatency {
    /// The model run on a constant grey input of the network's size.
    pub model_run: Latency,
    /// The full detect path of the image.
    pub detect: Latency,
}

impl crate::Detector {
    /// Times [`crate::Detector::run`] on a grey input and [`crate::Detector::detect_bytes`] of
    /// `image` (encoded) as `plan` says ([`TimingPlan::validate`] first), interleaved after
    /// warm-up. Any run's error ends the timing.
    pub fn bench(&self, image: &[u8], plan: &TimingPlan) -> crate::Result<DetectorLatency> {
        plan.validate()?;
        let input = self.info().config.input;
        let grey = vec![114.0f32; 3 * (input.height * input.width) as usize];
        let (model_run, detect) =
            time_pair(plan, || self.run(&grey).map(drop), || self.detect_bytes(image, "timed image").map(drop))?;
        Ok(DetectorLatency { model_run, detect })
    }
}

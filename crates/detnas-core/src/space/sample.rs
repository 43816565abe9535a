//! Path samplers: uniform, uniform under a FLOPs window, and FLOPs-binned (SPOS) with bounded
//! rejection.

use crate::error::{CoreError, Result};
use crate::rng::Rng;
use crate::size::format_count;
use crate::space::SearchSpace;
use crate::space::arch::Arch;
use crate::space::cost::{Convention, FlopsTable};

/// A uniformly random path: every layer uniform over the space's allowed choices.
pub fn uniform(space: &SearchSpace, rng: &mut Rng) -> Arch {
    Arch::new((0..space.num_layers()).map(|_| *rng.pick(&space.allowed)).collect())
}

/// Refuses a FLOPs window that no path of the table's space can meet, naming the space's extremes.
fn check_window(table: &FlopsTable, convention: Convention, min: u64, max: u64) -> Result<()> {
    let (lo, hi) = table.range(convention);
    if min > max {
        let (min, max) = (format_count(min), format_count(max));
        return Err(CoreError::BadConfig(format!("the FLOPs minimum {min} is above the maximum {max}")));
    }
    if max < lo {
        return Err(CoreError::BudgetBelowMinimum { space: table.space.clone(), budget: max, smallest: lo });
    }
    if min > hi {
        return Err(CoreError::FloorAboveMaximum { space: table.space.clone(), floor: min, largest: hi });
    }
    Ok(())
}

/// Uniform paths restricted to a FLOPs window, by rejection with a bounded number of tries.
#[derive(Clone, Debug)]
pub struct FlopsWindowSampler {
    /// Per-layer FLOPs of the space at the input size.
    pub table: FlopsTable,
    /// Which layers count.
    pub convention: Convention,
    /// Fewest FLOPs accepted.
    pub min: u64,
    /// Most FLOPs accepted.
    pub max: u64,
    /// Uniform draws allowed per sample before giving up.
    pub max_tries: usize,
}

impl FlopsWindowSampler {
    /// Fails at once when the window is outside the space's reachable range.
    pub fn new(table: FlopsTable, convention: Convention, min: u64, max: u64, max_tries: usize) -> Result<Self> {
        check_window(&table, convention, min, max)?;
        Ok(FlopsWindowSampler { table, convention, min, max, max_tries })
    }

    /// One path whose FLOPs lie in the window.
    pub fn sample(&self, space: &SearchSpace, rng: &mut Rng) -> Result<Arch> {
        for _ in 0..self.max_tries {
            let arch = uniform(space, rng);
            let f = self.table.flops(&arch, self.convention);
            if (self.min..=self.max).contains(&f) {
                return Ok(arch);
            }
        }
        Err(CoreError::Unsatisfiable {
            tries: self.max_tries,
            detail: format!("no uniform path fell in FLOPs [{}, {}]", format_count(self.min), format_count(self.max)),
        })
    }
}

/// SPOS-style sampler: choose one of `bins` equal FLOPs bins uniformly, then rejection-sample uniform
/// paths (at most `tries_per_bin`) until one falls in it; a bin that is not hit gives way to another
/// bin, at most `bins` times, before the sampler reports failure.
#[derive(Clone, Debug)]
pub struct FlopsBinnedSampler {
    /// Per-layer FLOPs of the space at the input size.
    pub table: FlopsTable,
    /// Which layers count.
    pub convention: Convention,
    /// The `bins + 1` bin edges, ascending.
    pub edges: Vec<u64>,
    /// Uniform draws tried per bin before moving to another bin.
    pub tries_per_bin: usize,
}

impl FlopsBinnedSampler {
    /// Splits `[space minimum, min(space maximum, max)]` into `bins` equal bins.
    pub fn new(table: FlopsTable, convention: Convention, bins: usize, max: Option<u64>) -> Result<Self> {
        if bins == 0 {
            return Err(CoreError::BadConfig("the number of FLOPs bins must be positive".into()));
        }
        check_window(&table, convention, 0, max.unwrap_or(u64::MAX))?;
        let (lo, hi) = table.range(convention);
        let hi = max.map_or(hi, |m| m.min(hi));
        let edges = (0..=bins).map(|i| lo + ((hi - lo) as u128 * i as u128 / bins as u128) as u64).collect();
        Ok(FlopsBinnedSampler { table, convention, edges, tries_per_bin: 500 })
    }

    /// One path from a uniformly chosen bin.
    pub fn sample(&self, space: &SearchSpace, rng: &mut Rng) -> Result<Arch> {
        let bins = self.edges.len() - 1;
        for _ in 0..bins.max(1) {
            let b = rng.below(bins as u64) as usize;
            let (lo, hi) = (self.edges[b], self.edges[b + 1]);
            for _ in 0..self.tries_per_bin {
                let arch = uniform(space, rng);
                let f = self.table.flops(&arch, self.convention);
                if f >= lo && (f < hi || (b + 1 == bins && f == hi)) {
                    return Ok(arch);
                }
            }
        }
        Err(CoreError::Unsatisfiable {
            tries: bins * self.tries_per_bin,
            detail: "no FLOPs bin was hit; use fewer bins".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::cost::InputSize;

    #[test]
    fn window_sampler_respects_the_budget() {
        let space = SearchSpace::detnas_300m();
        let table = FlopsTable::new(&space, InputSize::IMAGENET).unwrap();
        let s = FlopsWindowSampler::new(table.clone(), Convention::Backbone, 0, 280_000_000, 10_000).unwrap();
        let mut rng = Rng::seed(1);
        for _ in 0..50 {
            let a = s.sample(&space, &mut rng).unwrap();
            assert!(table.flops(&a, Convention::Backbone) <= 280_000_000);
        }
    }

    #[test]
    fn impossible_budget_is_reported_not_spun_on() {
        let space = SearchSpace::detnas_300m();
        let table = FlopsTable::new(&space, InputSize::IMAGENET).unwrap();
        let err = FlopsWindowSampler::new(table.clone(), Convention::Backbone, 0, 1_000_000, 10).unwrap_err();
        let (lo, hi) = table.range(Convention::Backbone);
        let want =
            format!("no architecture of detnas-300m fits under 1.00M FLOPs: the smallest needs {}", format_count(lo));
        assert_eq!(err.to_string(), want);
        let err = FlopsBinnedSampler::new(table.clone(), Convention::Backbone, 4, Some(1_000_000)).unwrap_err();
        assert_eq!(err.to_string(), want);
        let err = FlopsWindowSampler::new(table.clone(), Convention::Backbone, hi + 1, u64::MAX, 10).unwrap_err();
        assert!(err.to_string().contains(&format!("the largest needs {}", format_count(hi))), "{err}");
        // reachable, but far in the tail: bounded tries then a clear error
        let (lo, _) = table.range(Convention::Backbone);
        let s = FlopsWindowSampler::new(table, Convention::Backbone, 0, lo, 100).unwrap();
        assert!(s.sample(&space, &mut Rng::seed(0)).is_err());
    }

    #[test]
    fn binned_sampler_covers_low_and_high_bins() {
        let space = SearchSpace::detnas_300m();
        let table = FlopsTable::new(&space, InputSize::IMAGENET).unwrap();
        let s = FlopsBinnedSampler::new(table.clone(), Convention::Backbone, 4, None).unwrap();
        let mut rng = Rng::seed(5);
        let mut hits = [0; 4];
        for _ in 0..200 {
            if let Ok(a) = s.sample(&space, &mut rng) {
                let f = table.flops(&a, Convention::Backbone);
                let b = s.edges.windows(2).position(|w| f >= w[0] && f <= w[1]).unwrap();
                hits[b] += 1;
            }
        }
        // uniform sampling alone concentrates in the middle bins; binning reaches the outer ones
        assert!(hits[0] > 0 && hits[3] > 0, "{hits:?}");
    }
}

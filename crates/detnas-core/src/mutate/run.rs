//! The case runner of [`fuzz`]: cases derived from a seed, run one after another on a watched
//! worker thread, failures reported with everything needed to reproduce them.

use super::{Mutation, Mutator, alloc};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a target's check makes of a case whose parser returned (panics are the runner's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The parser returned `Ok` (and whatever the check verified of the value held).
    Accepted,
    /// The parser returned its typed error (and the check found it well formed: naming the file...).
    Rejected,
}

/// One input given to a target's check.
#[derive(Clone, Debug)]
pub struct Case {
    /// For a mutated case, its number in the campaign (`DETNAS_FUZZ_CASE` reruns it alone); for
    /// an original, its corpus index.
    pub index: usize,
    /// Whether the bytes are a corpus entry as given (no mutation).
    pub original: bool,
    /// The corpus entry the bytes were derived from.
    pub entry: usize,
    /// The input.
    pub bytes: Vec<u8>,
    /// The mutations applied, in order (empty for an original).
    pub mutations: Vec<Mutation>,
}

/// The most heap one case may hold at once: `fixed + per_input_byte * input length` bytes, counted
/// on the thread running the case when [`super::TrackingAlloc`] is the global allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocBudget {
    /// Bytes allowed whatever the input.
    pub fixed: u64,
    /// Bytes allowed per byte of input.
    pub per_input_byte: u64,
}

impl AllocBudget {
    /// The budget of an input of `len` bytes.
    pub fn limit(&self, len: usize) -> u64 {
        self.fixed.saturating_add(self.per_input_byte.saturating_mul(len as u64))
    }
}

/// How many cases to run and from which seed (see the module docs of [`super`] for the
/// environment variables).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Mutated cases to run (the originals run first, in addition).
    pub cases: usize,
    /// The campaign seed: case `i` is a pure function of `(seed, i)` and the corpus.
    pub seed: u64,
    /// Stop starting cases after this long.
    pub seconds: Option<f64>,
    /// Run this mutated case alone (no originals).
    pub only: Option<usize>,
    /// A case still running after this long is reported as a hang.
    pub case_timeout: Duration,
    /// Where the input of a failing case is saved.
    pub out_dir: PathBuf,
}

impl Settings {
    /// `default_cases` cases from seed 0, unless the `DETNAS_FUZZ_*` variables say otherwise; an
    /// unreadable value is a panic naming the variable.
    pub fn from_env(default_cases: usize) -> Settings {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            let text = std::env::var(name).ok()?;
            Some(text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")))
        }
        let seconds: Option<f64> = var("DETNAS_FUZZ_SECONDS");
        let unbounded = if seconds.is_some() { usize::MAX } else { default_cases };
        Settings {
            cases: var("DETNAS_FUZZ_CASES").unwrap_or(unbounded),
            seed: var("DETNAS_FUZZ_SEED").unwrap_or(0),
            seconds,
            only: var("DETNAS_FUZZ_CASE"),
            case_timeout: Duration::from_secs(60),
            out_dir: var("DETNAS_FUZZ_OUT").unwrap_or_else(|| std::env::temp_dir().join("detnas-fuzz")),
        }
    }
}

/// What a campaign ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The target's name.
    pub target: String,
    /// The campaign's seed.
    pub seed: u64,
    /// Cases run, originals included.
    pub cases: usize,
    /// Of which corpus originals (all accepted).
    pub originals: usize,
    /// Cases the target accepted.
    pub accepted: usize,
    /// Cases the target rejected with an error.
    pub rejected: usize,
    /// Wall time of the campaign.
    pub elapsed: Duration,
    /// The slowest case: its index, whether it was an original, and its time.
    pub slowest: (usize, bool, Duration),
    /// The largest peak heap of one case, when counted ([`super::TrackingAlloc`]).
    pub peak_alloc: Option<u64>,
}

impl Summary {
    /// Whether the mutated cases reached both outcomes, some accepted and some rejected, as a
    /// campaign over a valid corpus does; `true` for runs of fewer than 100 mutated cases (a case
    /// rerun alone, ...), too few to expect it.
    pub fn reached_both_outcomes(&self) -> bool {
        self.cases - self.originals < 100 || (self.accepted > self.originals && self.rejected > 0)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (index, original, time) = self.slowest;
        let which = if original { "original" } else { "case" };
        write!(
            f,
            "fuzz {}: {} cases in {:.1} s (seed {}): {} accepted, {} rejected; slowest {which} {index} {:.0} ms",
            self.target,
            self.cases,
            self.elapsed.as_secs_f64(),
            self.seed,
            self.accepted,
            self.rejected,
            time.as_secs_f64() * 1e3
        )?;
        match self.peak_alloc {
            Some(bytes) => write!(f, "; largest peak heap of a case {:.1} kB", bytes as f64 / 1e3),
            None => write!(f, "; heap not counted"),
        }
    }
}

/// Mutated case `index` of a campaign: the corpus entry and donor it comes from and its bytes.
fn mutated_case(corpus: &[Vec<u8>], seed: u64, index: usize) -> Case {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).rotate_left(32) ^ index as u64;
    let mut m = Mutator::new(mixed);
    let entry = m.rng().below(corpus.len() as u64) as usize;
    let donor = m.rng().below(corpus.len() as u64) as usize;
    let (bytes, mutations) = m.mutate_with(&corpus[entry], &corpus[donor]);
    Case { index, original: false, entry, bytes, mutations }
}

enum Message {
    Started { index: usize, original: bool },
    Done { outcome: Outcome, time: Duration, peak: Option<u64> },
    Failed { case: Box<Case>, reason: String },
    Finished,
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic payload)".to_owned())
}

/// Runs `check` on every original of `corpus`, then on `settings.cases` mutated cases (or for
/// `settings.seconds`), on a worker thread, and returns what ran.
///
/// Panics (fails the calling test) at the first case that: panics inside `check`; returns
/// `Err(reason)` from `check` (a contract the check verifies: an error naming the file, a value
/// breaking its invariants); takes longer than `settings.case_timeout` (a hang: the worker is
/// left behind); holds more heap than `budget` allows; or is an original that `check` does not
/// accept (the corpus must be valid inputs). The message names the target, seed and case, the
/// mutations applied, and the file the case's input was saved to.
pub fn fuzz<F>(target: &str, corpus: Vec<Vec<u8>>, budget: AllocBudget, settings: &Settings, check: F) -> Summary
where
    F: FnMut(&Case) -> Result<Outcome, String> + Send + 'static,
{
    assert!(!corpus.is_empty(), "fuzz {target}: empty corpus");
    let corpus: Arc<Vec<Vec<u8>>> = Arc::new(corpus);
    let (tx, rx) = mpsc::channel();
    let worker = {
        let (corpus, settings) = (Arc::clone(&corpus), settings.clone());
        std::thread::Builder::new()
            .name(format!("fuzz {target}"))
            .spawn(move || work(&corpus, &settings, budget, check, &tx))
            .expect("a fuzz worker thread starts")
    };
    let start = Instant::now();
    let mut summary = Summary {
        target: target.to_owned(),
        seed: settings.seed,
        cases: 0,
        originals: 0,
        accepted: 0,
        rejected: 0,
        elapsed: Duration::ZERO,
        slowest: (0, false, Duration::ZERO),
        peak_alloc: None,
    };
    let mut running = None;
    loop {
        match rx.recv_timeout(settings.case_timeout) {
            Ok(Message::Started { index, original }) => running = Some((index, original)),
            Ok(Message::Done { outcome, time, peak }) => {
                let (index, original) = running.take().expect("a case was started");
                summary.cases += 1;
                summary.originals += usize::from(original);
                match outcome {
                    Outcome::Accepted => summary.accepted += 1,
                    Outcome::Rejected => summary.rejected += 1,
                }
                if time > summary.slowest.2 {
                    summary.slowest = (index, original, time);
                }
                if let Some(p) = peak {
                    summary.peak_alloc = Some(summary.peak_alloc.unwrap_or(0).max(p));
                }
            }
            Ok(Message::Failed { case, reason }) => fail(target, settings, &case, &reason),
            Ok(Message::Finished) => break,
            Err(_) => {
                let Some((index, original)) = running else {
                    panic!("fuzz {target}: the worker stopped without a result");
                };
                let case = if original {
                    Case { index, original, entry: index, bytes: corpus[index].clone(), mutations: Vec::new() }
                } else {
                    mutated_case(&corpus, settings.seed, index)
                };
                let reason = format!("no result after {:?} (a hang)", settings.case_timeout);
                fail(target, settings, &case, &reason);
            }
        }
    }
    worker.join().expect("the fuzz worker catches every panic");
    summary.elapsed = start.elapsed();
    eprintln!("{summary}");
    summary
}

fn work<F>(corpus: &[Vec<u8>], settings: &Settings, budget: AllocBudget, mut check: F, tx: &mpsc::Sender<Message>)
where
    F: FnMut(&Case) -> Result<Outcome, String>,
{
    let start = Instant::now();
    let originals = if settings.only.is_some() { 0 } else { corpus.len() };
    let mutated: Box<dyn Iterator<Item = usize>> = match settings.only {
        Some(index) => Box::new(std::iter::once(index)),
        None => Box::new(0..settings.cases),
    };
    let original_cases = (0..originals).map(|entry| Case {
        index: entry,
        original: true,
        entry,
        bytes: corpus[entry].clone(),
        mutations: Vec::new(),
    });
    let cases = original_cases.chain(mutated.map(|index| mutated_case(corpus, settings.seed, index)));
    for case in cases {
        let out_of_time = settings.seconds.is_some_and(|s| start.elapsed().as_secs_f64() >= s);
        if out_of_time && !case.original {
            break;
        }
        let _ = tx.send(Message::Started { index: case.index, original: case.original });
        let counting = alloc::start();
        let began = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| check(&case)));
        let time = began.elapsed();
        let peak = alloc::stop();
        let limit = budget.limit(case.bytes.len());
        let verdict = match result {
            Err(payload) => Err(format!("panicked: {}", panic_text(payload.as_ref()))),
            Ok(Err(reason)) => Err(reason),
            Ok(Ok(_)) if counting && peak > limit => {
                Err(format!("held {peak} bytes of heap at once, over the budget of {limit} bytes"))
            }
            Ok(Ok(Outcome::Rejected)) if case.original => Err("a corpus original was rejected".to_owned()),
            Ok(Ok(outcome)) => Ok(outcome),
        };
        match verdict {
            Ok(outcome) => {
                let _ = tx.send(Message::Done { outcome, time, peak: counting.then_some(peak) });
            }
            Err(reason) => {
                let _ = tx.send(Message::Failed { case: Box::new(case), reason });
                return;
            }
        }
    }
    let _ = tx.send(Message::Finished);
}

/// Saves the case's input and panics with everything needed to reproduce it.
fn fail(target: &str, settings: &Settings, case: &Case, reason: &str) -> ! {
    let which = if case.original { format!("original {}", case.index) } else { format!("case {}", case.index) };
    let file = settings.out_dir.join(format!("{target}-seed{}-{}.bin", settings.seed, which.replace(' ', "")));
    let saved =
        std::fs::create_dir_all(&settings.out_dir).and_then(|()| std::fs::write(&file, &case.bytes)).map_or_else(
            |e| format!("could not be saved to {}: {e}", file.display()),
            |()| format!("saved to {}", file.display()),
        );
    let head: String =
        case.bytes.iter().take(96).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
    panic!(
        "fuzz {target}: {which} (seed {seed}, from corpus entry {entry}, mutations {mutations:?}): {reason}\n\
         input: {len} bytes, {saved}; starts \"{head}\"\n\
         reproduce: rerun this test with DETNAS_FUZZ_SEED={seed} DETNAS_FUZZ_CASE={index}",
        seed = settings.seed,
        entry = case.entry,
        mutations = case.mutations,
        len = case.bytes.len(),
        index = case.index,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cases: usize) -> Settings {
        let out_dir = std::env::temp_dir().join(format!("detnas-fuzz-selftest-{}", std::process::id()));
        Settings { cases, seed: 5, seconds: None, only: None, case_timeout: Duration::from_secs(20), out_dir }
    }

    const NO_LIMIT: AllocBudget = AllocBudget { fixed: u64::MAX, per_input_byte: 0 };

    #[test]
    fn runs_originals_then_mutated_cases_and_counts_outcomes() {
        let corpus = vec![b"12345".to_vec(), b"abc".to_vec()];
        let s = fuzz("selftest", corpus, NO_LIMIT, &settings(200), |case| {
            let text = std::str::from_utf8(&case.bytes).map_err(|_| "never fails".to_owned());
            Ok(if case.original || text.is_ok_and(|t| t.len() > 3) { Outcome::Accepted } else { Outcome::Rejected })
        });
        assert_eq!((s.cases, s.originals), (202, 2));
        assert_eq!(s.accepted + s.rejected, 202);
        assert!(s.accepted > 2 && s.rejected > 0 && s.reached_both_outcomes(), "{s}");
        let all_accepted = Summary { rejected: 0, accepted: 202, ..s.clone() };
        assert!(!all_accepted.reached_both_outcomes());
        assert!(Summary { cases: 50, ..all_accepted }.reached_both_outcomes(), "too few cases to expect both");
    }

    #[test]
    fn a_panicking_case_fails_with_its_seed_and_saved_input() {
        let corpus = vec![b"0123456789".to_vec()];
        let cfg = settings(500);
        let out_dir = cfg.out_dir.clone();
        let result = std::panic::catch_unwind(|| {
            fuzz("selftest-panic", corpus, NO_LIMIT, &cfg, |case| {
                assert!(case.original || case.bytes.len() == 10, "length changed");
                Ok(Outcome::Accepted)
            })
        });
        let message = panic_text(result.unwrap_err().as_ref());
        assert!(message.contains("panicked: length changed"), "{message}");
        assert!(message.contains("DETNAS_FUZZ_SEED=5 DETNAS_FUZZ_CASE="), "{message}");
        let saved = std::fs::read_dir(&out_dir).unwrap().filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("selftest-panic-seed5-case")
        });
        assert!(saved, "the failing input was not saved in {}", out_dir.display());
    }

    #[test]
    fn a_rejected_original_and_a_hang_are_failures() {
        let corpus = vec![b"x".to_vec()];
        let rejected = std::panic::catch_unwind(|| {
            fuzz("selftest-original", corpus.clone(), NO_LIMIT, &settings(1), |_| Ok(Outcome::Rejected))
        });
        assert!(panic_text(rejected.unwrap_err().as_ref()).contains("a corpus original was rejected"));
        let quick = Settings { case_timeout: Duration::from_millis(200), ..settings(3) };
        let hang = std::panic::catch_unwind(|| {
            fuzz("selftest-hang", corpus, NO_LIMIT, &quick, |case| {
                if !case.original {
                    std::thread::sleep(Duration::from_secs(3));
                }
                Ok(Outcome::Accepted)
            })
        });
        let message = panic_text(hang.unwrap_err().as_ref());
        assert!(message.contains("(a hang)") && message.contains("case 0"), "{message}");
    }
}

//! Seeded byte mutations for robustness ("fuzz") tests of the parsers users feed files to: image
//! decoding, COCO and VOC annotations, ONNX models, latency tables, checkpoint and search states.
//!
//! Stable Rust, no dependency: a [`Mutator`] turns a valid input into a damaged one with a few
//! stacked mutations drawn from a seed, and [`fuzz`] runs a parser on many such cases, each in a
//! watched worker thread, and fails with the seed, the case and the saved bytes when one panics,
//! hangs, breaks the caller's contract or allocates over its budget ([`TrackingAlloc`]). The
//! cases are a pure function of the seed and the case index, so every failure reproduces.
//!
//! Environment (read by [`Settings::from_env`]; `tools/fuzz.sh` sets them):
//! - `DETNAS_FUZZ_CASES`: cases per target (default: the test's own, a few hundred);
//! - `DETNAS_FUZZ_SEED`: the campaign seed (default 0);
//! - `DETNAS_FUZZ_SECONDS`: run cases until this much time has passed (`DETNAS_FUZZ_CASES`
//!   still caps the count when given);
//! - `DETNAS_FUZZ_CASE`: run this one case index only (to reproduce a failure);
//! - `DETNAS_FUZZ_OUT`: where failing inputs are saved (default `<temp>/detnas-fuzz`).

mod alloc;
mod json;
mod run;

pub use alloc::TrackingAlloc;
pub use json::JsonEdit;
pub use run::{AllocBudget, Case, Outcome, Settings, Summary, fuzz};

use crate::rng::Rng;

/// Values that sit on the edges of integer types: written over single bytes.
const INTERESTING_BYTES: [u8; 6] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];

/// Values that sit on the edges of 16- and 32-bit fields (sizes, lengths, offsets).
const INTERESTING_WORDS: [u32; 8] = [0, 1, 0x7f, 0x80, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/// Replacements for a number written as text: too large for every integer type, negative,
/// non-finite, denormal, fractional.
const NUMBER_TEXTS: [&str; 12] = [
    "99999999999",
    "-1",
    "1e400",
    "nan",
    "0",
    "-0",
    "18446744073709551616",
    "-9223372036854775809",
    "4294967296",
    "1e-400",
    "0.5",
    "inf",
];

/// One kind of mutation ([`Mutator::apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// One bit flipped.
    FlipBit,
    /// One byte overwritten with 0x00, 0xff, 0x7f, 0x80, 0x01 or 0xfe.
    InterestingByte,
    /// A 16- or 32-bit edge value (0, 0x7fff_ffff, 0xffff_ffff, ...) written little- or big-endian.
    InterestingWord,
    /// One byte overwritten with a random value.
    RandomByte,
    /// The data cut at a random length (possibly empty).
    Truncate,
    /// A slice copied and inserted elsewhere.
    Duplicate,
    /// 1 to 16 random bytes inserted.
    Insert,
    /// A slice removed.
    Remove,
    /// A run of ASCII digits replaced with `99999999999`, `-1`, `1e400`, `nan`, ...
    NumberText,
    /// A slice of the donor input written over the data ([`Mutator::mutate_with`]).
    Splice,
    /// One value of a JSON document changed, the document written back as JSON.
    Json(JsonEdit),
}

/// A seeded generator of damaged inputs.
#[derive(Clone, Debug)]
pub struct Mutator {
    rng: Rng,
}

impl Mutator {
    /// A mutator whose whole sequence of mutations is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Mutator { rng: Rng::seed(seed) }
    }

    /// The underlying generator, for choices a caller makes with the same seed.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A damaged copy of `input`: 1 to 8 stacked mutations (mostly 1 or 2), and the list applied.
    pub fn mutate(&mut self, input: &[u8]) -> (Vec<u8>, Vec<Mutation>) {
        self.mutate_with(input, &[])
    }

    /// [`Mutator::mutate`] where one of the mutations may splice in a slice of `donor` (another
    /// valid input of the same kind), which mixes structures that each parse on their own.
    ///
    /// Half of the time a JSON document (object or array) is mutated as a tree instead: 1 to 8
    /// values changed ([`JsonEdit`]), then written back, compact or pretty, so the case gets past
    /// the syntax to the checks behind it.
    pub fn mutate_with(&mut self, input: &[u8], donor: &[u8]) -> (Vec<u8>, Vec<Mutation>) {
        let count = 1 + self.rng.below(8).trailing_zeros().min(7) as usize;
        let mut applied = Vec::with_capacity(count);
        if self.rng.below(2) == 0
            && let Ok(mut doc @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) =
                serde_json::from_slice::<serde_json::Value>(input)
        {
            for _ in 0..count {
                applied.push(Mutation::Json(json::edit(&mut self.rng, &mut doc)));
            }
            let text = if self.rng.below(2) == 0 { serde_json::to_vec(&doc) } else { serde_json::to_vec_pretty(&doc) };
            return (text.expect("a JSON value serializes"), applied);
        }
        let mut data = input.to_vec();
        for _ in 0..count {
            let m = if !donor.is_empty() && self.rng.below(8) == 0 {
                self.splice(&mut data, donor);
                Mutation::Splice
            } else {
                self.apply(&mut data)
            };
            applied.push(m);
        }
        (data, applied)
    }

    /// Applies one random mutation (other than [`Mutation::Splice`]) to `data` and says which.
    /// Mutations that need bytes to work on fall back to [`Mutation::Insert`] on empty data, and
    /// [`Mutation::NumberText`] falls back to [`Mutation::FlipBit`] when there is no digit.
    pub fn apply(&mut self, data: &mut Vec<u8>) -> Mutation {
        const KINDS: [Mutation; 9] = [
            Mutation::FlipBit,
            Mutation::InterestingByte,
            Mutation::InterestingWord,
            Mutation::RandomByte,
            Mutation::Truncate,
            Mutation::Duplicate,
            Mutation::Insert,
            Mutation::Remove,
            Mutation::NumberText,
        ];
        let kind = *self.rng.pick(&KINDS);
        if data.is_empty() {
            self.insert(data);
            return Mutation::Insert;
        }
        match kind {
            Mutation::FlipBit => self.flip_bit(data),
            Mutation::InterestingByte => {
                let at = self.index(data.len());
                data[at] = *self.rng.pick(&INTERESTING_BYTES);
            }
            Mutation::InterestingWord => self.interesting_word(data),
            Mutation::RandomByte => {
                let at = self.index(data.len());
                data[at] = self.rng.next_u64() as u8;
            }
            Mutation::Truncate => {
                let len = self.index(data.len());
                data.truncate(len);
            }
            Mutation::Duplicate => {
                let (start, len) = self.slice(data.len());
                let copy = data[start..start + len].to_vec();
                let at = self.index(data.len() + 1);
                data.splice(at..at, copy);
            }
            Mutation::Insert => self.insert(data),
            Mutation::Remove => {
                let (start, len) = self.slice(data.len());
                data.drain(start..start + len);
            }
            Mutation::NumberText => {
                if !self.number_text(data) {
                    self.flip_bit(data);
                    return Mutation::FlipBit;
                }
            }
            Mutation::Splice | Mutation::Json(_) => unreachable!("not in KINDS"),
        }
        kind
    }

    fn index(&mut self, len: usize) -> usize {
        self.rng.below(len as u64) as usize
    }

    /// A non-empty slice `(start, len)` of data of length `len > 0`, mostly short.
    fn slice(&mut self, total: usize) -> (usize, usize) {
        let start = self.index(total);
        let longest = (total - start).min(if self.rng.below(4) == 0 { total } else { 32 });
        (start, 1 + self.index(longest))
    }

    fn flip_bit(&mut self, data: &mut [u8]) {
        let at = self.index(data.len());
        data[at] ^= 1 << self.rng.below(8);
    }

    fn interesting_word(&mut self, data: &mut [u8]) {
        let value = *self.rng.pick(&INTERESTING_WORDS);
        let wide = self.rng.below(2) == 0;
        let bytes: Vec<u8> = match (wide, self.rng.below(2) == 0) {
            (true, true) => value.to_le_bytes().to_vec(),
            (true, false) => value.to_be_bytes().to_vec(),
            (false, true) => (value as u16).to_le_bytes().to_vec(),
            (false, false) => (value as u16).to_be_bytes().to_vec(),
        };
        let at = self.index(data.len());
        for (d, b) in data[at..].iter_mut().zip(bytes) {
            *d = b;
        }
    }

    fn insert(&mut self, data: &mut Vec<u8>) {
        let n = 1 + self.rng.below(16) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
        let at = self.index(data.len() + 1);
        data.splice(at..at, bytes);
    }

    /// Replaces one run of ASCII digits; `false` when there is none.
    fn number_text(&mut self, data: &mut Vec<u8>) -> bool {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < data.len() {
            if data[i].is_ascii_digit() {
                let start = i;
                while i < data.len() && data[i].is_ascii_digit() {
                    i += 1;
                }
                runs.push((start, i));
            } else {
                i += 1;
            }
        }
        if runs.is_empty() {
            return false;
        }
        let (start, end) = *self.rng.pick(&runs);
        let text = self.rng.pick(&NUMBER_TEXTS).as_bytes();
        data.splice(start..end, text.iter().copied());
        true
    }

    fn splice(&mut self, data: &mut Vec<u8>, donor: &[u8]) {
        let (start, len) = self.slice(donor.len());
        let at = self.index(data.len() + 1);
        let end = (at + len).min(data.len());
        data.splice(at..end, donor[start..start + len].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mutations_and_different_seeds_differ() {
        let input = br#"{"width": 640, "height": 480, "boxes": [[1, 2, 3, 4]]}"#;
        let a: Vec<_> = (0..50).map(|s| Mutator::new(s).mutate(input)).collect();
        let b: Vec<_> = (0..50).map(|s| Mutator::new(s).mutate(input)).collect();
        assert_eq!(a, b, "a case is a pure function of its seed");
        let distinct: std::collections::BTreeSet<&Vec<u8>> = a.iter().map(|(d, _)| d).collect();
        assert!(distinct.len() > 40, "only {} distinct cases of 50", distinct.len());
        let changed = a.iter().filter(|(d, _)| d.as_slice() != input.as_slice()).count();
        assert!(changed > 45, "only {changed} of 50 cases differ from the input");
    }

    #[test]
    fn every_mutation_kind_is_drawn_and_numbers_become_hostile_text() {
        let input = b"size 640 x 480, offset 12".to_vec();
        let mut seen = std::collections::BTreeSet::new();
        let mut hostile = false;
        for seed in 0..400 {
            let (out, applied) = Mutator::new(seed).mutate_with(&input, b"<donor>");
            for m in &applied {
                seen.insert(format!("{m:?}"));
            }
            let text = String::from_utf8_lossy(&out);
            hostile |= applied == [Mutation::NumberText] && NUMBER_TEXTS.iter().any(|n| text.contains(n));
        }
        assert_eq!(seen.len(), 10, "kinds drawn: {seen:?}");
        let json = br#"{"images": [{"id": 1, "width": 640}]}"#;
        let structural = (0..100).filter(|&seed| {
            let (out, applied) = Mutator::new(seed).mutate(json);
            let parses = serde_json::from_slice::<serde_json::Value>(&out).is_ok();
            matches!(applied[0], Mutation::Json(_)) && parses
        });
        assert!(structural.count() > 30, "JSON documents are mutated as trees about half of the time");
        assert!(hostile, "a number was never replaced with a hostile one");
    }

    #[test]
    fn empty_and_one_byte_inputs_are_mutated_without_panicking() {
        for seed in 0..200 {
            let mut m = Mutator::new(seed);
            let mut data = Vec::new();
            assert_eq!(m.apply(&mut data), Mutation::Insert);
            assert!(!data.is_empty());
            let (_, applied) = m.mutate(&[0x42]);
            assert!(!applied.is_empty());
        }
    }
}

//! Detector genomes: a backbone path plus the detector's own genes (FPN width, head width and
//! depth, head conv type, input resolution), the unit the latency-aware search explores.
//!
//! Text form: the backbone (comma list, compact digits or preset name, as [`crate::space::arch::resolve`]
//! takes) followed by any of these genes, each after a `:`, in any order:
//!
//! | gene | form | example |
//! |---|---|---|
//! | FPN width | `fpn<N>` | `fpn96` |
//! | head width and depth (convs per tower) | `head<C>x<D>` | `head96x3` |
//! | head conv type | `dense` or `sep` | `sep` |
//! | input resolution | `<H>x<W>` or `<N>` (square) | `320x320`, `320` |
//!
//! `23113213311133203333:fpn96:head96x3:sep:320x320` is a full genome; `coco-retinanet-300m:320`
//! changes only the resolution. Genes left out keep the detector configuration's values, so a
//! backbone-only string (every existing encoding and preset) is a genome that changes nothing.
//! [`Genome`]'s `to_string` ([`Display`](std::fmt::Display)) writes the canonical form: compact
//! backbone, then every gene in the order of the table.

use crate::detector::{DetectorConfig, HeadConv};
use crate::error::{CoreError, Result};
use crate::limits::{MAX_HEAD_CONVS, MAX_INPUT_SIDE, MAX_WIDTH};
use crate::rng::Rng;
use crate::space::SearchSpace;
use crate::space::arch::{Arch, resolve};
use crate::space::shape::InputSize;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares the detector genes once. Each gene is a field of [`DetectorConfig`] with the same name
/// and type; from the list come [`DetectorGenes`] (one value of each), [`GeneSpace`] (the values a
/// search may take), reading them from and applying them to a configuration, drawing, picking
/// between two genomes (mutation, crossover), membership and the checks of a gene space. The
/// order of the list is the order genes are drawn in (part of a seeded search's reproducibility).
/// The text form (`fpn96:head96x3:sep:320`) and [`DetectorGenesKey`] are written by hand below.
macro_rules! detector_genes {
    ($($gene:ident: $ty:ty => $doc:literal, $space_doc:literal;)+) => {
        /// The detector genes of a genome.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub struct DetectorGenes {
            $(#[doc = $doc] pub $gene: $ty,)+
        }

        /// The values each detector gene may take in a search.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct GeneSpace {
            $(#[doc = $space_doc] pub $gene: Vec<$ty>,)+
        }

        impl DetectorGenes {
            /// The genes a detector configuration has.
            pub fn of(cfg: &DetectorConfig) -> Self {
                DetectorGenes { $($gene: cfg.$gene,)+ }
            }

            /// `cfg` with these genes.
            pub fn apply(&self, cfg: &DetectorConfig) -> DetectorConfig {
                DetectorConfig { $($gene: self.$gene,)+ ..cfg.clone() }
            }

            /// Each gene from `self` where `take_self` (called once per gene, in draw order)
            /// says so, else from `other`: mutation against fresh genes, crossover of two parents.
            pub fn pick(&self, other: &Self, mut take_self: impl FnMut() -> bool) -> Self {
                DetectorGenes { $($gene: if take_self() { self.$gene } else { other.$gene },)+ }
            }
        }

        impl GeneSpace {
            /// Genes drawn uniformly, one value per gene, in draw order.
            pub fn sample(&self, rng: &mut Rng) -> DetectorGenes {
                DetectorGenes { $($gene: self.$gene[rng.below(self.$gene.len() as u64) as usize],)+ }
            }

            /// Whether `genes` uses only values of this space.
            pub fn contains(&self, genes: &DetectorGenes) -> bool {
                true $(&& self.$gene.contains(&genes.$gene))+
            }

            /// The genes of this space with a value `trained` does not have, in draw order.
            pub fn outside(&self, trained: &GeneSpace) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if !self.$gene.iter().all(|v| trained.$gene.contains(v)) {
                    out.push(stringify!($gene));
                })+
                out
            }

            /// The first gene without a value.
            fn first_empty(&self) -> Option<&'static str> {
                $(if self.$gene.is_empty() {
                    return Some(stringify!($gene));
                })+
                None
            }
        }
    };
}

detector_genes! {
    fpn_channels: u64 => "FPN channels.", "FPN channels.";
    head_channels: u64 => "Head tower channels.", "Head tower channels.";
    head_convs: usize => "Convs per head tower (classification and regression each).", "Convs per head tower.";
    head_conv: HeadConv => "Convolution type of the head towers.", "Head convolution types.";
    input: InputSize => "Network input size.", "Network input sizes.";
}

impl fmt::Display for DetectorGenes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conv = match self.head_conv {
            HeadConv::Dense => "dense",
            HeadConv::Separable => "sep",
        };
        write!(f, "fpn{}:head{}x{}:{conv}:{}", self.fpn_channels, self.head_channels, self.head_convs, self.input)
    }
}

/// Genes given in a genome's text; `None` keeps the configuration's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GeneOverrides {
    /// FPN channels (`fpn<C>`).
    pub fpn_channels: Option<u64>,
    /// Head tower channels and convs per tower (`head<C>x<N>`).
    pub head: Option<(u64, usize)>,
    /// Head convolution type (`dense` / `sep`).
    pub head_conv: Option<HeadConv>,
    /// Network input size (`HxW`, or `S` for a square).
    pub input: Option<InputSize>,
}

impl GeneOverrides {
    /// Whether no gene is given.
    pub fn is_empty(&self) -> bool {
        *self == GeneOverrides::default()
    }

    /// The genes of `cfg` with these overrides.
    pub fn over(&self, cfg: &DetectorConfig) -> DetectorGenes {
        let base = DetectorGenes::of(cfg);
        let (head_channels, head_convs) = self.head.unwrap_or((base.head_channels, base.head_convs));
        DetectorGenes {
            fpn_channels: self.fpn_channels.unwrap_or(base.fpn_channels),
            head_channels,
            head_convs,
            head_conv: self.head_conv.unwrap_or(base.head_conv),
            input: self.input.unwrap_or(base.input),
        }
    }
}

/// A backbone path of a space with optional detector genes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genome {
    /// The search space.
    pub space: SearchSpace,
    /// The backbone path.
    pub arch: Arch,
    /// The detector genes the text gives.
    pub genes: GeneOverrides,
}

fn bad(text: &str, reason: impl Into<String>) -> CoreError {
    CoreError::BadGenome { text: text.to_string(), reason: reason.into() }
}

fn number<T: std::str::FromStr>(text: &str, digits: &str, what: &str) -> Result<T> {
    digits.parse().map_err(|_| bad(text, format!("`{digits}` is not a whole number ({what})")))
}

/// A gene value from 1 to `max` ([`crate::limits`]); digits too many for the type are over `max` too.
fn positive<T>(text: &str, digits: &str, what: &str, max: T) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + Default + fmt::Display,
{
    let over = || bad(text, format!("{what} {digits} is over the most, {max}"));
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let v: T = if all_digits { digits.parse().map_err(|_| over())? } else { number(text, digits, what)? };
    if v == T::default() {
        return Err(bad(text, format!("{what} must be at least 1")));
    }
    if v > max {
        return Err(over());
    }
    Ok(v)
}

/// Parses the genes after the backbone (`parts`: the `:`-separated pieces); `text` is the whole
/// genome, for messages. Each gene may appear once.
fn parse_genes<'a>(text: &str, parts: impl Iterator<Item = &'a str>) -> Result<GeneOverrides> {
    let mut genes = GeneOverrides::default();
    for part in parts {
        let p = part.trim().to_ascii_lowercase();
        let twice = |what: &str| bad(text, format!("the {what} is given twice"));
        if let Some(n) = p.strip_prefix("fpn") {
            if genes.fpn_channels.replace(positive(text, n, "FPN width", MAX_WIDTH)?).is_some() {
                return Err(twice("FPN width"));
            }
        } else if let Some(rest) = p.strip_prefix("head") {
            let (c, d) = rest.split_once('x').ok_or_else(|| bad(text, format!("`{part}`: expected head<C>x<D>")))?;
            let head = (positive(text, c, "head width", MAX_WIDTH)?, positive(text, d, "head depth", MAX_HEAD_CONVS)?);
            if genes.head.replace(head).is_some() {
                return Err(twice("head"));
            }
        } else if p == "dense" || p == "sep" || p == "separable" {
            let conv = if p == "dense" { HeadConv::Dense } else { HeadConv::Separable };
            if genes.head_conv.replace(conv).is_some() {
                return Err(twice("head conv type"));
            }
        } else if p.starts_with(|c: char| c.is_ascii_digit()) {
            let input = InputSize::parse(&p).map_err(|e| bad(text, e.to_string()))?;
            if input.height > MAX_INPUT_SIDE || input.width > MAX_INPUT_SIDE {
                return Err(bad(text, format!("input resolution {input} is over the most, {MAX_INPUT_SIDE} a side")));
            }
            if genes.input.replace(input).is_some() {
                return Err(twice("input resolution"));
            }
        } else {
            return Err(bad(
                text,
                format!("unknown gene `{part}`: expected fpn<N>, head<C>x<D>, dense, sep or <H>x<W>"),
            ));
        }
    }
    Ok(genes)
}

impl GeneOverrides {
    /// The genes of a genome's text (the parts after the backbone), checked as [`Genome::parse`]
    /// checks them (each once, each within [`crate::limits`]), without resolving the backbone.
    pub fn parse(text: &str) -> Result<GeneOverrides> {
        parse_genes(text, text.trim().split(':').skip(1))
    }
}

impl Genome {
    /// Parses the text form (see the module docs); `space` as for [`crate::space::arch::resolve`].
    /// Each gene may appear once; unknown genes are errors naming the accepted forms.
    pub fn parse(space: Option<&str>, text: &str) -> Result<Genome> {
        let mut parts = text.trim().split(':');
        let backbone = parts.next().unwrap_or_default();
        let (space, arch) = resolve(space, backbone)?;
        let genes = parse_genes(text, parts)?;
        Ok(Genome { space, arch, genes })
    }

    /// The detector configuration of this genome: `base` with its genes, validated.
    pub fn detector_config(&self, base: &DetectorConfig) -> Result<DetectorConfig> {
        let cfg = self.genes.over(base).apply(base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// The full genome over `base`: every gene set.
    pub fn complete(&self, base: &DetectorConfig) -> Genome {
        let g = self.genes.over(base);
        let genes = GeneOverrides {
            fpn_channels: Some(g.fpn_channels),
            head: Some((g.head_channels, g.head_convs)),
            head_conv: Some(g.head_conv),
            input: Some(g.input),
        };
        Genome { genes, ..self.clone() }
    }
}

impl fmt::Display for Genome {
    /// Compact backbone, then the given genes in canonical order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.arch.compact())?;
        if let Some(n) = self.genes.fpn_channels {
            write!(f, ":fpn{n}")?;
        }
        if let Some((c, d)) = self.genes.head {
            write!(f, ":head{c}x{d}")?;
        }
        match self.genes.head_conv {
            Some(HeadConv::Dense) => write!(f, ":dense")?,
            Some(HeadConv::Separable) => write!(f, ":sep")?,
            None => {}
        }
        if let Some(i) = self.genes.input {
            write!(f, ":{i}")?;
        }
        Ok(())
    }
}

impl Default for GeneSpace {
    /// Widths 64-256, depths 1-4, both conv types, square inputs 256-512: from a head a CPU runs in
    /// milliseconds to torchvision's default.
    fn default() -> Self {
        GeneSpace {
            fpn_channels: vec![64, 96, 128, 192, 256],
            head_channels: vec![64, 96, 128, 192, 256],
            head_convs: vec![1, 2, 3, 4],
            head_conv: vec![HeadConv::Separable, HeadConv::Dense],
            input: [256, 320, 384, 448, 512].map(|n| InputSize::new(n, n)).to_vec(),
        }
    }
}

impl GeneSpace {
    /// Every gene has at least one value; every value is valid in a detector configuration.
    pub fn validate(&self, base: &DetectorConfig) -> Result<()> {
        if let Some(what) = self.first_empty() {
            return Err(CoreError::BadGeneSpace(format!("`{what}` has no value")));
        }
        let [smallest, largest] = self.corners();
        smallest.apply(base).validate()?;
        largest.apply(base).validate()?;
        // Inputs are not ordered by the corners (a side can be out of range in a mid-sized area):
        // each is checked on the smallest detector, with one class (classes are checked above).
        let one_class = DetectorConfig { class_names: vec!["class".into()], category_ids: Vec::new(), ..base.clone() };
        for &input in &self.input {
            DetectorGenes { input, ..smallest }.apply(&one_class).validate()?;
        }
        Ok(())
    }

    /// Every combination of the gene values (input outermost, then FPN width, head width, head
    /// depth, conv type).
    pub fn combinations(&self) -> Vec<DetectorGenes> {
        let mut out = Vec::new();
        for &input in &self.input {
            for &fpn_channels in &self.fpn_channels {
                for &head_channels in &self.head_channels {
                    for &head_convs in &self.head_convs {
                        for &head_conv in &self.head_conv {
                            out.push(DetectorGenes { fpn_channels, head_channels, head_convs, head_conv, input });
                        }
                    }
                }
            }
        }
        out
    }

    /// The smallest and largest value of every gene (for validation).
    fn corners(&self) -> [DetectorGenes; 2] {
        let min = |v: &[u64]| *v.iter().min().expect("non-empty");
        let max = |v: &[u64]| *v.iter().max().expect("non-empty");
        let area = |i: &InputSize| u128::from(i.height) * u128::from(i.width);
        let by_area = |a: &&InputSize, b: &&InputSize| area(a).cmp(&area(b));
        [
            DetectorGenes {
                fpn_channels: min(&self.fpn_channels),
                head_channels: min(&self.head_channels),
                head_convs: *self.head_convs.iter().min().expect("non-empty"),
                head_conv: self.head_conv[0],
                input: *self.input.iter().min_by(by_area).expect("non-empty"),
            },
            DetectorGenes {
                fpn_channels: max(&self.fpn_channels),
                head_channels: max(&self.head_channels),
                head_convs: *self.head_convs.iter().max().expect("non-empty"),
                head_conv: *self.head_conv.last().expect("non-empty"),
                input: *self.input.iter().max_by(by_area).expect("non-empty"),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_backbone_only_strings_change_nothing() {
        let g = Genome::parse(None, "coco-retinanet-300m:320:sep:head96x3:fpn128").unwrap();
        assert_eq!(g.to_string(), "23113213311133203333:fpn128:head96x3:sep:320x320");
        assert_eq!(Genome::parse(None, &g.to_string()).unwrap(), g);
        let cfg = g.detector_config(&DetectorConfig::default()).unwrap();
        assert_eq!((cfg.fpn_channels, cfg.head_channels, cfg.head_convs), (128, 96, 3));
        assert_eq!((cfg.head_conv, cfg.input), (HeadConv::Separable, InputSize::new(320, 320)));

        let base = DetectorConfig::default();
        for text in ["2,3,1,1,3,2,1,3,3,1,1,1,3,3,2,0,3,3,3,3", "coco-fpn-300m", "21202112331300313132"] {
            let g = Genome::parse(None, text).unwrap();
            assert!(g.genes.is_empty());
            assert_eq!(g.detector_config(&base).unwrap(), base);
        }
        let full = Genome::parse(None, "coco-fpn-300m:512").unwrap().complete(&base);
        assert_eq!(full.to_string(), "21202112331300313132:fpn256:head256x4:dense:512x512");
    }

    #[test]
    fn bad_genes_are_named() {
        for (text, needle) in [
            ("coco-fpn-300m:fpn0", "FPN width must be at least 1"),
            ("coco-fpn-300m:head96", "expected head<C>x<D>"),
            ("coco-fpn-300m:fpn64:fpn96", "FPN width is given twice"),
            ("coco-fpn-300m:wide", "unknown gene `wide`"),
            ("coco-fpn-300m:320x", "320x"),
            ("coco-fpn-300m:fpn100000", "FPN width 100000 is over the most, 1024"),
            ("coco-fpn-300m:head16x1000000000", "head depth 1000000000 is over the most, 16"),
            ("coco-fpn-300m:head99999999999999999999999x2", "head width 99999999999999999999999 is over the most"),
            ("coco-fpn-300m:8192", "8192x8192 is over the most, 4096 a side"),
        ] {
            let e = Genome::parse(None, text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let g = Genome::parse(None, "coco-fpn-300m:500").unwrap();
        assert!(g.detector_config(&DetectorConfig::default()).unwrap_err().to_string().contains("multiple of 32"));
    }

    #[test]
    fn gene_space_samples_its_own_values() {
        let space = GeneSpace::default();
        space.validate(&DetectorConfig::default()).unwrap();
        let mut rng = Rng::seed(3);
        let genes: Vec<DetectorGenes> = (0..200).map(|_| space.sample(&mut rng)).collect();
        assert!(genes.iter().all(|g| space.contains(g)));
        let all = space.combinations();
        assert_eq!(all.len(), 5 * 5 * 4 * 2 * 5);
        assert!(all.iter().all(|g| space.contains(g)) && genes.iter().all(|g| all.contains(g)));
        assert!(genes.iter().any(|g| g.head_conv == HeadConv::Dense));
        assert!(genes.iter().any(|g| g.input == InputSize::new(256, 256)));
        let empty = GeneSpace { head_convs: vec![], ..GeneSpace::default() };
        assert!(empty.validate(&DetectorConfig::default()).unwrap_err().to_string().contains("head_convs"));
    }

    /// Regression (fuzz target `latency_table`, seed 0, case 1809): a gene space with an input of
    /// huge sides overflowed while the corners were ordered by area (a panic in debug builds); and
    /// an input between the corners escaped validation.
    #[test]
    fn every_input_of_a_gene_space_is_validated_whatever_its_size() {
        let base = DetectorConfig::default();
        let huge = GeneSpace {
            input: vec![InputSize::new(u64::MAX, u64::MAX), InputSize::new(320, 320)],
            ..Default::default()
        };
        let e = huge.validate(&base).unwrap_err().to_string();
        assert!(e.contains("18446744073709551615x18446744073709551615"), "{e}");
        let inputs = [256, 100, 512].map(|n| InputSize::new(n, n)).to_vec();
        let e = GeneSpace { input: inputs, ..Default::default() }.validate(&base).unwrap_err().to_string();
        assert!(e.contains("100x100 is not a multiple of 32"), "{e}");
        let narrow = [InputSize::new(64, 64), InputSize::new(32, 8192), InputSize::new(4096, 4096)].to_vec();
        assert!(GeneSpace { input: narrow, ..Default::default() }.validate(&base).is_err());
    }
}

/// One candidate of a search: a backbone path and, in a joint search, every detector gene.
///
/// Its text form is its identity (the search's cache key): the comma-form backbone alone, or the
/// compact backbone followed by the five genes (`2311...:fpn96:head96x3:sep:320x320`). It
/// dereferences to its [`Arch`], so backbone-only code takes it as is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Candidate {
    /// The backbone path.
    pub arch: Arch,
    /// The detector genes of a joint search; `None` in a backbone-only search.
    pub genes: Option<DetectorGenesKey>,
}

/// [`DetectorGenes`] with a total order (for sorting candidates deterministically).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DetectorGenesKey {
    fpn_channels: u64,
    head_channels: u64,
    head_convs: usize,
    separable: bool,
    height: u64,
    width: u64,
}

impl From<DetectorGenes> for DetectorGenesKey {
    fn from(g: DetectorGenes) -> Self {
        DetectorGenesKey {
            fpn_channels: g.fpn_channels,
            head_channels: g.head_channels,
            head_convs: g.head_convs,
            separable: g.head_conv == HeadConv::Separable,
            height: g.input.height,
            width: g.input.width,
        }
    }
}

impl From<DetectorGenesKey> for DetectorGenes {
    fn from(k: DetectorGenesKey) -> Self {
        DetectorGenes {
            fpn_channels: k.fpn_channels,
            head_channels: k.head_channels,
            head_convs: k.head_convs,
            head_conv: if k.separable { HeadConv::Separable } else { HeadConv::Dense },
            input: InputSize::new(k.height, k.width),
        }
    }
}

impl Candidate {
    /// A backbone-only candidate.
    pub fn backbone(arch: Arch) -> Self {
        Candidate { arch, genes: None }
    }

    /// A joint candidate.
    pub fn joint(arch: Arch, genes: DetectorGenes) -> Self {
        Candidate { arch, genes: Some(genes.into()) }
    }

    /// The search's cache key: the compact backbone, then the genes if any.
    pub fn key(&self) -> String {
        match self.detector_genes() {
            None => self.arch.compact(),
            Some(g) => format!("{}:{g}", self.arch.compact()),
        }
    }

    /// The detector genes, if any.
    pub fn detector_genes(&self) -> Option<DetectorGenes> {
        self.genes.map(Into::into)
    }

    /// The detector configuration of this candidate: `base` with its genes (if any).
    pub fn detector_config(&self, base: &DetectorConfig) -> DetectorConfig {
        self.detector_genes().map_or_else(|| base.clone(), |g| g.apply(base))
    }

    /// Parses the text form; genes, when present, must all be given.
    pub fn parse(text: &str) -> Result<Candidate> {
        let (backbone, genes) = match text.split_once(':') {
            Some((b, g)) => (b, Some(g)),
            None => (text, None),
        };
        let arch = Arch::parse(backbone)?;
        let Some(genes_text) = genes else { return Ok(Candidate::backbone(arch)) };
        let o = parse_genes(text, genes_text.split(':'))?;
        match (o.fpn_channels, o.head, o.head_conv, o.input) {
            (Some(fpn_channels), Some((head_channels, head_convs)), Some(head_conv), Some(input)) => {
                Ok(Candidate::joint(arch, DetectorGenes { fpn_channels, head_channels, head_convs, head_conv, input }))
            }
            _ => Err(bad(text, "a search candidate gives all five genes (fpn, head, conv type, input) or none")),
        }
    }
}

impl std::ops::Deref for Candidate {
    type Target = Arch;
    fn deref(&self) -> &Arch {
        &self.arch
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detector_genes() {
            None => write!(f, "{}", self.arch),
            Some(g) => write!(f, "{}:{g}", self.arch.compact()),
        }
    }
}

impl Serialize for Candidate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Candidate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Candidate::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod candidate_tests {
    use super::*;

    #[test]
    fn candidates_round_trip_through_text_and_json() {
        let arch = Arch::parse("23113213311133203333").unwrap();
        let plain = Candidate::backbone(arch.clone());
        assert_eq!(plain.to_string(), "2,3,1,1,3,2,1,3,3,1,1,1,3,3,2,0,3,3,3,3", "today's state files");
        let genes = DetectorGenes {
            fpn_channels: 96,
            head_channels: 64,
            head_convs: 2,
            head_conv: HeadConv::Separable,
            input: InputSize::new(320, 320),
        };
        let joint = Candidate::joint(arch, genes);
        assert_eq!(joint.to_string(), "23113213311133203333:fpn96:head64x2:sep:320x320");
        for c in [&plain, &joint] {
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(&serde_json::from_str::<Candidate>(&json).unwrap(), c);
        }
        assert_eq!(joint.detector_config(&DetectorConfig::default()).head_channels, 64);
        let e = Candidate::parse("23113213311133203333:fpn96").unwrap_err().to_string();
        assert!(e.contains("all five genes"), "{e}");
    }
}

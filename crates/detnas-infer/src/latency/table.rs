//! The latency table: measured parts per input resolution, the device fingerprint, the gene space it
//! covers, an optional correction of the additive sum, and the additive predictor.
//!
//! A detector's latency is predicted as the sum of its parts ([`genome_terms`]): the stem, each
//! block at its layer's exact input shape, the FPN, each head tower layer (times two: the
//! classification and regression branches), and the predictors with post-processing; then, when
//! the table has one, `scale * sum + offset` ([`Correction`]).
//!
//! Parts are summed by their *mean* times (p50, p90 and p99 are recorded too). Background load
//! interrupts a long whole-model run almost always but a sub-millisecond part only now and then,
//! so p50s of parts filter out interference that the whole model cannot; measured on a loaded
//! 2-core machine, sums of p50s came out at half the whole-model time, sums of means within a few
//! percent. On a quiet machine the two agree.

pub use super::protocol::Drift;
use crate::error::{InferError, Result};
use crate::fingerprint::Fingerprint;
use crate::timing::{Latency, TimingPlan};
use detnas_core::detector::{DetectorConfig, HeadConv};
use detnas_core::search::genome::GeneSpace;
use detnas_core::space::arch::Arch;
use detnas_core::space::cost::cost;
use detnas_core::space::{ChannelShuffle, Choice, SearchSpace};
use detnas_onnx::DetectionLoad;
use detnas_onnx::Part;
use detnas_onnx::layout::{BlockLayout, Layout, LayoutPlan};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// The `format` field of a table file.
pub const TABLE_FORMAT: &str = "detnas-latency-table";
/// The table layout version this build reads and writes.
pub const TABLE_VERSION: u32 = 2;

/// `scale * additive + offset_ms`, fitted on genomes measured end to end while building
/// ([`super::correction`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correction {
    /// Factor on the additive sum (1 for an [`CorrectionForm::Offset`]).
    pub scale: f64,
    /// Added after scaling, in milliseconds (may be negative; 0 for a [`CorrectionForm::Scale`]).
    pub offset_ms: f64,
    /// Which parameters were fitted: the form that predicted held-out calibration genomes best.
    /// Absent in tables from before the choice (all affine).
    #[serde(default, skip_serializing_if = "CorrectionForm::is_affine")]
    pub form: CorrectionForm,
}

/// The parameters of a [`Correction`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorrectionForm {
    /// `sum + offset`: an overhead per model that the parts do not pay.
    Offset,
    /// `scale × sum`: every part off by the same factor.
    Scale,
    /// `scale × sum + offset`.
    #[default]
    Affine,
}

impl CorrectionForm {
    /// Whether this is [`CorrectionForm::Affine`] (tables leave it out then).
    pub fn is_affine(&self) -> bool {
        *self == CorrectionForm::Affine
    }

    /// `offset`, `scale` or `affine`.
    pub fn name(self) -> &'static str {
        match self {
            CorrectionForm::Offset => "offset",
            CorrectionForm::Scale => "scale",
            CorrectionForm::Affine => "affine",
        }
    }
}

impl Correction {
    /// The corrected latency of an additive sum.
    pub fn apply(&self, additive_ms: f64) -> f64 {
        self.scale * additive_ms + self.offset_ms
    }
}

/// One genome measured end to end while building (the correction's data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPoint {
    /// The genome with every gene given (its display form).
    pub genome: String,
    /// The table's plain additive sum of parts for it, in milliseconds.
    pub additive_ms: f64,
    /// Its mean end-to-end time ([`Runner::detector`](super::measure::Runner::detector)), in milliseconds.
    pub measured_ms: f64,
}

/// A latency lookup table (see the module docs); one file, versioned, with a content hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    /// Always [`TABLE_FORMAT`]; [`LatencyTable::load`] refuses anything else.
    pub format: String,
    /// The layout version, [`TABLE_VERSION`]; [`LatencyTable::load`] refuses any other.
    pub version: u32,
    /// FNV-1a 64 (hex) of the table's compact JSON with this field empty; checked on load.
    pub hash: String,
    /// Name of the measured search space; [`LatencyTable::predict`] refuses another.
    pub space: String,
    /// Classes of the measured predictors.
    pub classes: usize,
    /// Channel shuffle of the measured blocks; [`LatencyTable::predict`] refuses another.
    pub shuffle: ChannelShuffle,
    /// The device and runtime the table was measured on (see [`LatencyTable::fingerprint_matches`]).
    pub fingerprint: Fingerprint,
    /// The gene values measured; `input` lists the resolutions.
    pub genes: GeneSpace,
    /// The timing plan of one repetition of every part and calibration genome.
    pub timing: TimingPlan,
    /// Repetitions of every measurement, interleaved round-robin
    /// ([`crate::latency::protocol`]); each entry keeps its repetitions' means.
    pub repetitions: usize,
    /// The detections the measured post-processing handled (`predictors+post` parts, calibration
    /// genomes): none, or the detector's cap (every anchor above the threshold, the most any image
    /// costs). Absent in tables measured without detections.
    #[serde(default, skip_serializing_if = "DetectionLoad::is_none")]
    pub detections: DetectionLoad,
    /// How the measured blocks and genomes wrote the channel shuffle; absent for the shuffle as
    /// trained. Shuffle-free block keys name their `Split`'s pieces (`split7`): the count
    /// depends on the block's place in its stage.
    #[serde(default, skip_serializing_if = "Layout::is_default")]
    pub layout: Layout,
    /// Resolution (`320x320`) -> part key (`block <choice> <cin>-><cout> s<stride> <h>x<w>`, ...) -> measured latency.
    pub entries: BTreeMap<String, BTreeMap<String, Latency>>,
    /// The drift reference's timings while the parts were measured.
    pub drift: Option<Drift>,
    /// The drift reference's timings while the calibration genomes were measured (`None` without
    /// calibration).
    pub calibration_drift: Option<Drift>,
    /// Applied to the additive sum by [`LatencyTable::predict`]; `None` when none was kept: fewer than 3
    /// calibration genomes, degenerate data, or a fit no better than the plain sum on held-out genomes.
    pub correction: Option<Correction>,
    /// Seed of the calibration genomes (held-out checks should use another).
    pub calibration_seed: u64,
    /// The genomes measured end to end to fit the correction (empty when none were).
    pub calibration: Vec<CalibrationPoint>,
    /// For a table adapted to this device from another's parts (`detnas latency adapt`): the
    /// base it came from.
    pub adapted: Option<super::adapt::Adapted>,
    /// Where the table was loaded from (for errors); not stored.
    #[serde(skip)]
    pub source: String,
}

/// The group of parts a term belongs to in a prediction's breakdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// The stem conv, with the in-graph normalisation.
    Stem,
    /// The backbone blocks, one term per layer.
    Backbone,
    /// The FPN.
    Fpn,
    /// Head tower layers (both branches).
    Head,
    /// Both predictor convs and the post-processing.
    Predictors,
}

/// One term of the additive prediction: `count` times the part measured under `key`.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// The breakdown group the term adds to.
    pub group: Group,
    /// The graph measured for it.
    pub part: Part,
    /// Its entry at each resolution in [`LatencyTable::entries`] (`stem`, `block ...`, `fpn 96`, `head sep 96->96`,
    /// `predictors+post 96`).
    pub key: String,
    /// Times the part runs: 2 for a head layer (both branches), else 1.
    pub count: f64,
}

fn conv_name(conv: HeadConv) -> &'static str {
    match conv {
        HeadConv::Dense => "dense",
        HeadConv::Separable => "sep",
    }
}

/// The table key of a block: choice, channels, stride and input size (`block shufflenet3x3
/// 64->160 s2 80x80`), and for a shuffle-free stride-1 block the pieces of its split (` split7`);
/// layers with the same key run graphs of the same shapes (shuffle-free ones: and as many split
/// pieces, whose sizes may differ slightly).
fn block_key(space: &SearchSpace, layer: usize, choice: Choice, in_hw: (u64, u64), pieces: Option<&[usize]>) -> String {
    let l = space.layers()[layer];
    let key = format!("block {choice} {}->{} s{} {}x{}", l.in_channels, l.out_channels, l.stride, in_hw.0, in_hw.1);
    match pieces.map(|p| p[layer]) {
        Some(n) if n > 0 => format!("{key} split{n}"),
        _ => key,
    }
}

/// The pieces of each block's `Split` in `space`'s shuffle-free plan with `shuffle` (0 for a
/// stride-2 block), planned once per process: predictions run thousands of times in a search.
fn split_pieces(space: &SearchSpace, shuffle: ChannelShuffle) -> Arc<Vec<usize>> {
    type Cache = Mutex<HashMap<String, Arc<Vec<usize>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = format!("{} {} {:?} {shuffle:?}", space.name, space.stem_channels, space.stages);
    let mut cache = CACHE.get_or_init(Cache::default).lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(key)
        .or_insert_with(|| {
            let blocks = LayoutPlan::new(space, shuffle).blocks;
            Arc::new(
                blocks
                    .iter()
                    .map(|b| match b {
                        BlockLayout::Stride1 { split, .. } => split.len(),
                        BlockLayout::Stride2 { .. } => 0,
                    })
                    .collect(),
            )
        })
        .clone()
}

/// The terms of a detector: `arch` in `space` with `cfg`'s genes, at `cfg.input`, its blocks
/// written as `layout` says.
pub fn genome_terms(space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig, layout: Layout) -> Result<Vec<Term>> {
    let report = cost(space, arch, cfg.input)?;
    let pieces = (layout == Layout::ShuffleFree).then(|| split_pieces(space, cfg.shuffle));
    let term = |group, part, key: String, count| Term { group, part, key, count };
    let mut out = vec![term(Group::Stem, Part::Stem, "stem".into(), 1.0)];
    for (layer, (&choice, lc)) in arch.choices().iter().zip(&report.layers).enumerate() {
        let key = block_key(space, layer, choice, lc.in_hw, pieces.as_deref().map(Vec::as_slice));
        out.push(term(Group::Backbone, Part::Block { layer, choice }, key, 1.0));
    }
    let fpn = cfg.fpn_channels;
    out.push(term(Group::Fpn, Part::Fpn { channels: fpn }, format!("fpn {fpn}"), 1.0));
    let mut cin = fpn;
    for _ in 0..cfg.head_convs {
        let (cout, conv) = (cfg.head_channels, cfg.head_conv);
        let key = format!("head {} {cin}->{cout}", conv_name(conv));
        out.push(term(Group::Head, Part::HeadLayer { cin, cout, conv }, key, 2.0));
        cin = cout;
    }
    out.push(term(Group::Predictors, Part::Predictors { cin }, format!("predictors+post {cin}"), 1.0));
    Ok(out)
}

/// Every part a table over `genes` needs at `cfg.input` (every layer with every allowed choice,
/// every gene combination), by key, blocks written as `layout` says.
pub fn table_parts(
    space: &SearchSpace,
    genes: &GeneSpace,
    cfg: &DetectorConfig,
    layout: Layout,
) -> Result<BTreeMap<String, Part>> {
    let mut parts = BTreeMap::new();
    for &choice in &space.allowed {
        for t in genome_terms(space, &Arch::uniform(space, choice), cfg, layout)? {
            if matches!(t.group, Group::Stem | Group::Backbone) {
                parts.insert(t.key, t.part);
            }
        }
    }
    let arch = Arch::uniform(space, space.allowed[0]);
    for g in (GeneSpace { input: vec![cfg.input], ..genes.clone() }).combinations() {
        for t in genome_terms(space, &arch, &g.apply(cfg), layout)? {
            parts.insert(t.key, t.part);
        }
    }
    Ok(parts)
}

/// Milliseconds per group of a prediction.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Breakdown {
    /// The stem.
    pub stem: f64,
    /// All backbone blocks (the sum of [`Prediction::blocks_ms`]).
    pub backbone: f64,
    /// The FPN.
    pub fpn: f64,
    /// Head tower layers of both branches.
    pub head: f64,
    /// Both predictors and the post-processing.
    pub predictors: f64,
}

/// A predicted latency and its parts (milliseconds; the mean of each part, see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The prediction: the corrected sum when the table has a correction, else the sum.
    pub latency_ms: f64,
    /// The plain sum of the parts.
    pub additive_ms: f64,
    /// Whether the table's [`Correction`] gave `latency_ms`.
    pub corrected: bool,
    /// The plain sum by group (uncorrected: the groups add up to `additive_ms`).
    pub parts: Breakdown,
    /// Each block, in layer order.
    pub blocks_ms: Vec<f64>,
}

fn list<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

impl LatencyTable {
    fn err(&self, reason: impl Into<String>) -> InferError {
        InferError::LatencyTable { path: self.source.clone(), reason: reason.into(), source: None }
    }

    fn missing(&self, what: String, holds: String) -> InferError {
        InferError::NotInTable { path: self.source.clone(), what, holds }
    }

    /// The hash [`LatencyTable::save`] records: FNV-1a 64 of the compact JSON with `hash` empty.
    pub fn content_hash(&self) -> String {
        let blank = LatencyTable { hash: String::new(), ..self.clone() };
        let json = serde_json::to_string(&blank).expect("a latency table serializes");
        format!("{:016x}", detnas_core::search::evolution::fnv1a64(json.as_bytes()))
    }

    /// Reads a table; refuses another format or version, a content that does not match its hash
    /// (an edited or truncated file), a class count outside 1 to
    /// [`MAX_CLASSES`](detnas_core::limits::MAX_CLASSES) and a gene space that is not one
    /// `latency build` measures (a gene without values, a value no detector takes:
    /// [`GeneSpace::validate`]), naming the file.
    pub fn load(path: &Path) -> Result<LatencyTable> {
        let name = path.display().to_string();
        let bad = |reason: String| InferError::LatencyTable { path: name.clone(), reason, source: None };
        let caused = |reason: &str, e: Box<dyn std::error::Error + Send + Sync>| InferError::LatencyTable {
            path: name.clone(),
            reason: reason.into(),
            source: Some(e),
        };
        let text = std::fs::read_to_string(path).map_err(|e| caused("cannot read it", e.into()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| caused("not a JSON latency table", e.into()))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(TABLE_FORMAT) {
            return Err(bad(format!("not a latency table (no `\"format\": \"{TABLE_FORMAT}\"`)")));
        }
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(TABLE_VERSION)) {
            let found = version.map_or_else(|| "none".into(), |v| v.to_string());
            return Err(bad(format!(
                "table version {found}; this build reads version {TABLE_VERSION}: rebuild it with `detnas latency build`"
            )));
        }
        let mut table: LatencyTable =
            serde_json::from_value(value).map_err(|e| caused("not a valid latency table", e.into()))?;
        table.source = name;
        let expected = table.content_hash();
        if table.hash != expected {
            let reason = format!(
                "content hash {} does not match its content ({expected}): edited or corrupted; rebuild it with `detnas latency build`",
                table.hash
            );
            return Err(table.err(reason));
        }
        let most = detnas_core::limits::MAX_CLASSES;
        if table.classes == 0 || table.classes > most {
            return Err(table.err(format!("{} classes: a table measures 1 to {most}", table.classes)));
        }
        if let Err(e) = table.genes.validate(&crate::latency::base_config(table.classes, table.shuffle)) {
            return Err(table.err(format!("its gene space is not one a table is built for: {e}")));
        }
        Ok(table)
    }

    /// Sets the content hash and writes the table atomically as pretty JSON.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.hash = self.content_hash();
        let text = serde_json::to_string_pretty(self).expect("a latency table serializes");
        detnas_core::fsutil::write_atomic(path, text.as_bytes())?;
        self.source = path.display().to_string();
        Ok(())
    }

    /// Whether `current` (this machine) matches the table's fingerprint.
    pub fn fingerprint_matches(&self, current: &Fingerprint) -> bool {
        self.fingerprint.differences(current).is_empty()
    }

    /// Predicts the latency of `arch` in `space` as configured by `cfg` (its genes and input).
    /// Errors name what is not in the table and what the table holds: another space, class count
    /// or shuffle, a resolution or gene value it has not measured.
    pub fn predict(&self, space: &SearchSpace, arch: &Arch, cfg: &DetectorConfig) -> Result<Prediction> {
        if space.name != self.space {
            return Err(self.missing(format!("space {}", space.name), format!("space {}", self.space)));
        }
        if cfg.num_classes() != self.classes {
            return Err(self.missing(format!("{} classes", cfg.num_classes()), format!("{} classes", self.classes)));
        }
        if cfg.shuffle != self.shuffle {
            return Err(self.missing(format!("shuffle {}", cfg.shuffle.name()), self.shuffle.name().to_string()));
        }
        let input = cfg.input.to_string();
        let entries = self.entries.get(&input).ok_or_else(|| {
            let holds: Vec<&str> = self.entries.keys().map(String::as_str).collect();
            self.missing(format!("resolution {input}"), format!("resolutions {}", holds.join(", ")))
        })?;
        let g = &self.genes;
        let conv_names: Vec<&str> = g.head_conv.iter().map(|&c| conv_name(c)).collect();
        let values = [
            (
                g.fpn_channels.contains(&cfg.fpn_channels),
                "FPN width",
                cfg.fpn_channels.to_string(),
                list(&g.fpn_channels),
            ),
            (
                g.head_channels.contains(&cfg.head_channels),
                "head width",
                cfg.head_channels.to_string(),
                list(&g.head_channels),
            ),
            (g.head_convs.contains(&cfg.head_convs), "head depth", cfg.head_convs.to_string(), list(&g.head_convs)),
            (
                g.head_conv.contains(&cfg.head_conv),
                "head conv",
                conv_name(cfg.head_conv).to_string(),
                conv_names.join(", "),
            ),
        ];
        if let Some((_, kind, value, holds)) = values.into_iter().find(|v| !v.0) {
            return Err(self.missing(format!("{kind} {value} at {input}"), format!("{kind} {holds}")));
        }
        let mut parts = Breakdown::default();
        let mut blocks_ms = Vec::new();
        for t in genome_terms(space, arch, cfg, self.layout)? {
            let entry = entries.get(&t.key).ok_or_else(|| {
                self.missing(format!("entry `{}` at {input}", t.key), format!("{} entries at {input}", entries.len()))
            })?;
            let ms = entry.mean_ms * t.count;
            match t.group {
                Group::Stem => parts.stem += ms,
                Group::Backbone => {
                    parts.backbone += ms;
                    blocks_ms.push(ms);
                }
                Group::Fpn => parts.fpn += ms,
                Group::Head => parts.head += ms,
                Group::Predictors => parts.predictors += ms,
            }
        }
        let additive_ms = parts.stem + parts.backbone + parts.fpn + parts.head + parts.predictors;
        let latency_ms = self.correction.as_ref().map_or(additive_ms, |c| c.apply(additive_ms));
        Ok(Prediction { latency_ms, additive_ms, corrected: self.correction.is_some(), parts, blocks_ms })
    }
}

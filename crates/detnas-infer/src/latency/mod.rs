//! Latency lookup tables (FBNet / Once-for-All style) for latency-aware search, on the device and
//! runtime they are built on.
//!
//! - [`build`]: every part of a detector ([`detnas_onnx::parts`]: stem, each block choice at each
//!   layer's exact input shape, FPN per width, head tower layers per (Cin, Cout, conv type), the
//!   predictors with post-processing) timed with ONNX Runtime at each resolution of a
//!   [`detnas_core::search::genome::GeneSpace`], then calibration genomes measured end to end and a
//!   correction of the additive sum fitted on them;
//! - [`table`]: the table file (versioned JSON with a content hash and the device
//!   [`crate::Fingerprint`]) and the predictor [`LatencyTable::predict`];
//! - [`check`]: held-out genomes predicted and measured end to end (share within ±10%, MAPE,
//!   Kendall's τ);
//! - [`trained`]: exported trained models checked against a table on real images;
//! - [`measure`]: timing one part or one whole random-weight detector, here or on a latency
//!   server ([`remote`]; the server itself is [`serve`] under the `serve` feature).
//!
//! ```no_run
//! # fn main() -> detnas_infer::Result<()> {
//! use detnas_core::search::genome::Genome;
//! use detnas_infer::latency::{LatencyTable, base_config};
//! let table = LatencyTable::load("lut.json".as_ref())?;
//! let genome = Genome::parse(Some("detnas-300m"), "coco-retinanet-300m:fpn96:head96x2:sep:320")?;
//! let cfg = genome.detector_config(&base_config(table.classes, table.shuffle))?;
//! let p = table.predict(&genome.space, &genome.arch, &cfg)?;
//! println!("{:.2} ms (backbone {:.2} ms)", p.latency_ms, p.parts.backbone);
//! # Ok(()) }
//! ```

pub mod adapt;
pub mod build;
pub mod check;
pub mod correction;
mod here;
pub mod measure;
pub mod protocol;
pub mod remote;
pub mod score;
#[cfg(feature = "serve")]
pub mod serve;
pub mod table;
pub mod trained;

pub use adapt::{AdaptOptions, adapt_table};
pub use build::{BuildOptions, build_table};
pub use check::{CheckReport, CheckSample, check_table, fit_correction, fit_validated_correction, sample_genomes};
pub use measure::{ModelKind, Runner, base_config, random_detector};
pub use protocol::Protocol;
pub use remote::Remote;
pub use score::{BudgetDecisions, Ceiling, Metrics, metrics};
pub use table::{
    Breakdown, Correction, CorrectionForm, LatencyTable, Prediction, TABLE_FORMAT, TABLE_VERSION, genome_terms,
};

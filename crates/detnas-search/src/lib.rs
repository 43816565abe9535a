//! DetNAS step 3 as a library: an evolutionary search on a trained detection supernet, over
//! backbone paths or, on a supernet trained with `[genes]`, whole genomes (backbone + FPN/head
//! widths, depth, conv type, input resolution), under FLOPs and latency budgets.
//!
//! ```no_run
//! use detnas_search::{LatencyBudget, SearchOptions};
//! let mut opts = SearchOptions::new("runs/supernet", "runs/search");
//! opts.latency = Some(LatencyBudget {
//!     table: "lut.json".into(),
//!     max_ms: 12.0,
//!     precision: None,
//!     measure: false,
//!     strict: false,
//!     remote: None,
//! });
//! let outcome = detnas_search::run(&opts)?;
//! println!("{} ({} evaluations)", outcome.selected.finalist.candidate, outcome.evolution.evaluations);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! The search folder holds the resumable state, every evaluated candidate
//! (`candidates.csv`/`.json`), the Pareto front (`pareto.csv`, `pareto.png`), `best.json`, and the
//! finalists (`finalists.json`) with their recalibrated BN statistics (`bn/rank-N.safetensors`),
//! which `detnas export --search DIR` folds into the exported model. The folder is owned
//! ([`detnas_core::owner`]): a folder of another command or of the user's files is refused.
//!
//! Its own crate because it needs both native libraries: libtorch (the supernet fitness, through
//! `detnas-train`) and ONNX Runtime (latency tables and measurement, through `detnas-infer`).
#![warn(missing_docs)]

pub mod demo;
pub mod finalists;
pub mod fitness;
pub mod latency;
pub mod options;
pub mod pipeline;
pub mod plot;
pub mod report;
mod run;
pub mod setup;
pub mod study;
pub mod study_ablation;
pub mod study_steps;

pub use detnas_train::search::Metric;
pub use fitness::{SearchFitness, SupernetScorer};
pub use options::{FitnessChoice, LatencyBudget, SearchOptions};
pub use run::{Event, SearchOutcome, Selected, print_event, restricted_genes, run, run_with};

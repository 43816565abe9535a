//! The one integration-test binary (one link of libtorch and ONNX Runtime instead of many).

mod cli_arch;
mod cli_bounds;
#[cfg(feature = "search")]
mod cli_demo;
#[cfg(feature = "infer")]
mod cli_detect;
#[cfg(feature = "infer")]
mod cli_detect_reliability;
#[cfg(feature = "search")]
mod cli_study;
#[cfg(feature = "search")]
mod cli_train;
#[cfg(feature = "search")]
mod cuda_cpu;
#[cfg(feature = "search")]
mod docs;
#[cfg(feature = "infer")]
mod export_faster_rcnn;
#[cfg(feature = "infer")]
mod export_parity;
#[cfg(feature = "infer")]
mod folder_api;
#[cfg(feature = "infer")]
mod latency;
#[cfg(feature = "infer")]
mod latency_remote;
#[cfg(feature = "infer")]
mod ownership;
#[cfg(feature = "infer")]
mod quantize;
#[cfg(feature = "infer")]
mod reliability_model;
#[cfg(feature = "search")]
mod reliability_train;
#[cfg(feature = "train")]
mod roi_align;
#[cfg(feature = "infer")]
mod sdk;
#[cfg(feature = "search")]
mod search_api;
#[cfg(feature = "search")]
mod search_latency;
#[cfg(feature = "search")]
mod search_training_free;
#[cfg(feature = "infer")]
mod serve;
#[cfg(feature = "infer")]
mod shuffle_free;
#[cfg(feature = "infer")]
mod silent_results;
#[cfg(feature = "search")]
mod supernet_genes;
#[cfg(feature = "search")]
mod supernet_ladder;
#[cfg(feature = "infer")]
mod toolchain_ort;
#[cfg(feature = "train")]
mod toolchain_tch;
#[cfg(feature = "search")]
mod train_detection;
#[cfg(feature = "train")]
mod train_faster_rcnn;
#[cfg(feature = "search")]
mod train_parity;
mod util;

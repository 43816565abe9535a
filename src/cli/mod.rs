//! Command-line definitions and dispatch.

mod arch;
#[cfg(feature = "infer")]
mod bench;
#[cfg(test)]
mod bounds_tests;
mod data;
#[cfg(feature = "search")]
mod demo;
#[cfg(feature = "infer")]
mod detect;
mod env;
mod eval;
mod export;
mod inspect;
#[cfg(feature = "infer")]
mod latency;
mod paths;
#[cfg(feature = "infer")]
mod quantize;
#[cfg(feature = "search")]
mod search;
#[cfg(feature = "search")]
mod study;
mod tour;
#[cfg(feature = "train")]
mod train;
mod values;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "detnas", version, about = "DetNAS: backbone search for object detection, ONNX export and detection")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Search spaces and architectures: FLOPs, parameters, shapes, sampling.
    #[command(subcommand)]
    Arch(arch::ArchCommand),
    /// Data sets: synthetic generation, validation reports.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Detect objects in images, folders or globs with an exported model.
    #[cfg(feature = "infer")]
    Detect(detect::DetectArgs),
    /// Latency of a model (bare run and full detect path) on this machine.
    #[cfg(feature = "infer")]
    Bench(bench::BenchArgs),
    /// Latency lookup tables: build on the target device, predict genomes, check against measurements.
    #[cfg(feature = "infer")]
    #[command(subcommand)]
    Latency(latency::LatencyCommand),
    /// Export a DetNAS detector (RetinaNet or FPN Faster R-CNN) to ONNX: from a checkpoint, a search
    /// finalist, a weights file, or a random DetNAS initialisation.
    Export(export::ExportArgs),
    /// Static INT8 quantization (QDQ) of an exported model, calibrated on real images, with a
    /// per-layer sensitivity pass that keeps the layers that suffer most in float.
    #[cfg(feature = "infer")]
    Quantize(quantize::QuantizeArgs),
    /// Inputs, outputs, metadata, parameters and FLOPs of an ONNX model.
    Inspect(inspect::InspectArgs),
    /// COCO bbox evaluation (pycocotools semantics) of results against ground truth.
    Eval(eval::EvalArgs),
    /// Train (supernet fine-tuning, stand-alone RetinaNet or Faster R-CNN) and evaluate checkpoints
    /// (libtorch).
    #[cfg(feature = "train")]
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Evolutionary search on a trained detection supernet (BN recalibration + held-out AP fitness).
    #[cfg(feature = "search")]
    Search(search::SearchArgs),
    /// The whole DetNAS pipeline in miniature, into one folder: synthetic data, a genes supernet,
    /// this machine's latency table, a search under a derived budget, retraining of the winner and
    /// of a baseline, export, detection and a report (about 8 minutes on 2 cores in a release
    /// build; --quick: a minute or two).
    #[cfg(feature = "search")]
    Demo(demo::DemoArgs),
    /// Does the search find better detectors? Ranking fidelity of the supernet, the searched genome
    /// against baselines, and the effect of recalibration and search budget, on a harder synthetic
    /// set: report.md, CSVs and plots in one folder (about 40 minutes on 2 cores in a release build;
    /// --quick: minutes).
    #[cfg(feature = "search")]
    Study(study::StudyArgs),
    /// A guided tour of the search spaces and published architectures.
    Tour,
    /// Native libraries in use: ONNX Runtime and libtorch versions, CUDA availability.
    Env(env::EnvArgs),
}

/// A progress bar on stderr at `done` of `total` drawn with `template` (indicatif's), hidden
/// unless stderr is a terminal.
#[cfg(feature = "infer")]
fn progress_bar(total: usize, done: usize, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total as u64);
    b.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
    b.set_position(done as u64);
    b
}

/// Runs a command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Arch(cmd) => arch::run(cmd).map(|_| 0),
        Command::Data(cmd) => data::run(cmd).map(|_| 0),
        #[cfg(feature = "infer")]
        Command::Detect(args) => detect::run(args),
        #[cfg(feature = "infer")]
        Command::Bench(args) => bench::run(args).map(|_| 0),
        #[cfg(feature = "infer")]
        Command::Latency(cmd) => latency::run(cmd).map(|_| 0),
        Command::Export(args) => export::run(args).map(|_| 0),
        #[cfg(feature = "infer")]
        Command::Quantize(args) => quantize::run(args).map(|_| 0),
        Command::Inspect(args) => inspect::run(args).map(|_| 0),
        Command::Eval(args) => eval::run(args).map(|_| 0),
        #[cfg(feature = "train")]
        Command::Train(cmd) => train::run(cmd).map(|_| 0),
        #[cfg(feature = "search")]
        Command::Search(args) => search::run(args).map(|_| 0),
        #[cfg(feature = "search")]
        Command::Demo(args) => demo::run(args).map(|_| 0),
        #[cfg(feature = "search")]
        Command::Study(args) => study::run(args).map(|_| 0),
        Command::Tour => tour::run().map(|_| 0),
        Command::Env(args) => env::run(args).map(|_| 0),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Flags and positional arguments without help text, as `command path: --flag`.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = ["help", "version"].contains(&arg.get_id().as_str());
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path}: {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() {
                out.push(format!("{path} {}: no description", sub.get_name()));
            }
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_and_flag_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "detnas", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}

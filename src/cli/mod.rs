//! Command-line definitions and dispatch.

mod arch;
mod env;
mod tour;

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
    /// A guided tour of the search spaces and published architectures (the built-in default job).
    Tour,
    /// Native libraries in use: ONNX Runtime and libtorch versions, CUDA availability.
    Env(env::EnvArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Arch(cmd) => arch::run(cmd),
        Command::Tour => tour::run(),
        Command::Env(args) => env::run(args),
    }
}

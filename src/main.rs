//! `detnas`: DetNAS backbone search, export and detection from the command line.
//!
//! Exit codes: 0 success; 1 the command failed (the message names the problem); 2 invalid usage;
//! 3 `detect --strict` finished but some inputs failed.

mod cli;

use clap::Parser;

fn main() {
    // Must precede every libtorch call so CUDA kernels register (no-op without a GPU).
    #[cfg(feature = "train")]
    detnas_train::device::init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::exit(1);
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

//! `detnas`: DetNAS backbone search, export and detection from the command line.
//!
//! Exit codes: 0 success; 1 the command failed (the message names the problem); 2 invalid usage
//! (an out-of-range number, or a request too large for its memory limit); 3 `detect --strict`
//! finished but some inputs failed.

mod cli;

use clap::Parser;

fn main() {
    quiet_on_broken_pipe();
    // Must precede every libtorch call so CUDA kernels register (no-op without a GPU).
    #[cfg(feature = "train")]
    detnas_train::device::init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::exit(exit_code(&e));
        }
    }
}

/// 2 for a request too large to run (numbers each in range that together need more memory than a
/// stated limit: bad usage, as an out-of-range number is), else 1.
fn exit_code(e: &anyhow::Error) -> i32 {
    use detnas_core::CoreError::TooLarge;
    // A library error wrapping a core one transparently hides it from the chain: look inside.
    let too_large = |c: &(dyn std::error::Error + 'static)| {
        matches!(c.downcast_ref::<detnas_core::CoreError>(), Some(TooLarge { .. }))
            || matches!(c.downcast_ref::<detnas_onnx::OnnxError>(), Some(detnas_onnx::OnnxError::Core(TooLarge { .. })))
    };
    if e.chain().any(too_large) { 2 } else { 1 }
}

/// Restores the default SIGPIPE action, so that output piped into a reader that stops early
/// (`detnas arch sample --count 5000 | head -1`) ends the process quietly, as it does for other
/// command-line tools, instead of a panic on the next print. Files are never written through pipes,
/// so no result is cut short by this.
fn quiet_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The error and its causes on one line, control characters (of file names, say) escaped so that
/// no name can break the line or drive the terminal.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = detnas_core::fsutil::escaped(&cause.to_string());
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

//! The process-wide ONNX Runtime environment (ONNX Runtime allows one per process).

use crate::error::{InferError, Result};
use ort::environment::Environment;
use std::path::PathBuf;
use std::sync::OnceLock;

static ENVIRONMENT: OnceLock<std::result::Result<Environment, InferError>> = OnceLock::new();

/// Where the ONNX Runtime library is looked for: `ORT_DYLIB_PATH` at run time, else the path baked in
/// at build time (`.cargo/config.toml` points it at `.native/`, filled by `tools/setup-native.sh`).
pub fn library_path() -> Option<PathBuf> {
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| option_env!("ORT_DYLIB_PATH").map(PathBuf::from))
}

fn load() -> std::result::Result<Environment, InferError> {
    let path =
        library_path().ok_or_else(|| InferError::RuntimeMissing { path: PathBuf::from("(ORT_DYLIB_PATH unset)") })?;
    if !path.is_file() {
        return Err(InferError::RuntimeMissing { path });
    }
    let builder =
        ort::init_from(&path).map_err(|e| InferError::RuntimeLoad { path: path.clone(), reason: e.to_string() })?;
    builder.with_name("detnas").build().map_err(|e| InferError::RuntimeLoad { path, reason: e.to_string() })
}

/// The shared environment, loaded on first use. Every later call returns the same environment or
/// the same load error.
pub fn environment() -> Result<&'static Environment> {
    match ENVIRONMENT.get_or_init(load) {
        Ok(env) => Ok(env),
        Err(InferError::RuntimeMissing { path }) => Err(InferError::RuntimeMissing { path: path.clone() }),
        Err(InferError::RuntimeLoad { path, reason }) => {
            Err(InferError::RuntimeLoad { path: path.clone(), reason: reason.clone() })
        }
        Err(other) => Err(InferError::Ort(other.to_string())),
    }
}

/// ONNX Runtime's version (`1.31.1`), as the loaded library reports it.
pub fn version() -> Result<String> {
    environment()?;
    let path = library_path().expect("environment() succeeded, so the path is known");
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| InferError::RuntimeMissing { path: path.clone() })?;
    // SAFETY: the library is already loaded (this returns the same handle); `OrtGetApiBase` is its
    // documented entry point and `GetVersionString` returns a static NUL-terminated string.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return Err(InferError::RuntimeLoad { path, reason: "library is not loaded".into() });
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        if symbol.is_null() {
            return Err(InferError::RuntimeLoad { path, reason: "no OrtGetApiBase symbol".into() });
        }
        let get_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase = std::mem::transmute(symbol);
        let base = get_base();
        let version = std::ffi::CStr::from_ptr(((*base).GetVersionString)());
        Ok(version.to_string_lossy().into_owned())
    }
}

/// A session builder with the SDK's settings: full graph optimisation, `threads` intra-op threads
/// (`None`: ONNX Runtime's default) and the provider for `device` ([`crate::device::register`]:
/// CPU fallback with a warning, an error under `strict`). `name` identifies the model in errors.
pub fn session_builder(
    threads: Option<usize>,
    device: crate::device::Device,
    strict: bool,
    name: &str,
) -> Result<(ort::session::builder::SessionBuilder, crate::device::ProviderChoice)> {
    use ort::session::{
        Session,
        builder::{GraphOptimizationLevel, SessionBuilder},
    };
    let model_err =
        |e: ort::Error<SessionBuilder>| InferError::Model { path: PathBuf::from(name), reason: e.to_string() };
    let mut builder =
        Session::builder(environment()?)?.with_optimization_level(GraphOptimizationLevel::Level3).map_err(model_err)?;
    if let Some(t) = threads {
        builder = builder.with_intra_threads(t.max(1)).map_err(model_err)?;
    }
    let choice = crate::device::register(&mut builder, device, strict)?;
    Ok((builder, choice))
}

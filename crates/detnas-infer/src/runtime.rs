//! Finding and loading ONNX Runtime (one environment per process, as ONNX Runtime requires; its
//! own log is silent unless the `ORT_LOG` environment variable asks for a level).
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`), on the first detector or on an
//! explicit [`RuntimeBuilder::init`]. It is looked for in this order:
//!
//! 1. a path given in code: [`RuntimeBuilder::library_path`] (a file, or a folder holding it);
//! 2. the `ORT_DYLIB_PATH` environment variable (a file or a folder);
//! 3. the system loader's search: `LD_LIBRARY_PATH` (or `DYLD_LIBRARY_PATH` / `PATH`), the
//!    executable's rpath and the system folders, by the library's usual names;
//! 4. the executable's own folder;
//! 5. a default path baked in at build time, only when the build asked for one by setting
//!    `DETNAS_ORT_LIBRARY` (this workspace does, for its own binaries and tests).
//!
//! Steps 1 and 2 are instructions: when they name something unusable, loading fails with that
//! path instead of silently using another library. [`RuntimeInfo`] says which library was used
//! and how it was found (also in [`crate::ModelInfo::runtime`]).
//!
//! ```no_run
//! // Ship `libonnxruntime.so.1.31.1` in `lib/` beside the executable and load it from there.
//! let exe_dir = std::env::current_exe()?.parent().unwrap().to_path_buf();
//! let info = detnas_infer::runtime::builder().library_path(exe_dir.join("lib")).init()?;
//! println!("ONNX Runtime {} from {} ({})", info.version, info.path.display(), info.source);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::{InferError, Result};
use ort::environment::Environment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Oldest ONNX Runtime minor version this build works with (`1.MIN_MINOR_VERSION`).
pub const MIN_MINOR_VERSION: u32 = ort::MINOR_VERSION;

/// How the ONNX Runtime library in use was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LibrarySource {
    /// Given in code ([`RuntimeBuilder::library_path`]).
    Explicit,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The system loader's search (`LD_LIBRARY_PATH`, rpath, system folders).
    SystemLoader,
    /// The folder of the running executable.
    ExecutableDir,
    /// The default baked in at build time (`DETNAS_ORT_LIBRARY`).
    BuildDefault,
}

impl std::fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LibrarySource::Explicit => "path given in code",
            LibrarySource::EnvVar => "ORT_DYLIB_PATH",
            LibrarySource::SystemLoader => "system loader search",
            LibrarySource::ExecutableDir => "executable's folder",
            LibrarySource::BuildDefault => "build-time default",
        })
    }
}

/// The ONNX Runtime library this process uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// The library file as loaded.
    pub path: PathBuf,
    /// How it was found.
    pub source: LibrarySource,
    /// Its version, as it reports it (`1.31.1`).
    pub version: String,
}

/// Options for loading ONNX Runtime; see [`builder`].
#[derive(Clone, Debug, Default)]
#[must_use = "call `init()` to load the library"]
pub struct RuntimeBuilder {
    library: Option<PathBuf>,
}

/// Starts configuring how ONNX Runtime is loaded (before the first detector).
pub fn builder() -> RuntimeBuilder {
    RuntimeBuilder::default()
}

impl RuntimeBuilder {
    /// Loads the library from this file, or from this folder (which must hold it). Takes
    /// precedence over `ORT_DYLIB_PATH` and every search.
    pub fn library_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.library = Some(path.into());
        self
    }

    /// Loads ONNX Runtime now. Once loaded, the library stays for the life of the process: a
    /// later call returns the same [`RuntimeInfo`], or [`InferError::RuntimeConflict`] when it
    /// asks for a different file. A failed attempt can be retried (with another path).
    pub fn init(self) -> Result<&'static RuntimeInfo> {
        load(self.library.as_deref()).map(|rt| &rt.info)
    }
}

struct Runtime {
    environment: Environment,
    info: RuntimeInfo,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

fn load(explicit: Option<&Path>) -> Result<&'static Runtime> {
    let _serial = LOADING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        if let Some(requested) = explicit {
            let wanted = find_in(requested).unwrap_or_else(|| requested.to_path_buf());
            if !same_file(&wanted, &rt.info.path) {
                let (loaded, requested) = (rt.info.path.clone(), requested.to_path_buf());
                return Err(InferError::RuntimeConflict { loaded, requested });
            }
        }
        return Ok(rt);
    }
    let runtime = discover(explicit)?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// The shared environment, loading ONNX Runtime with the default search on first use.
pub fn environment() -> Result<&'static Environment> {
    Ok(&load(None)?.environment)
}

/// The library in use, loading it with the default search on first use.
pub fn info() -> Result<&'static RuntimeInfo> {
    load(None).map(|rt| &rt.info)
}

/// ONNX Runtime's version (`1.31.1`), as the loaded library reports it.
pub fn version() -> Result<String> {
    info().map(|i| i.version.clone())
}

/// Copies the library in use into `dir` (created if needed), under its own file name, so that an
/// application shipped from `dir` finds it beside its executable. Returns the new file.
pub fn copy_library_to(dir: impl AsRef<Path>) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let loaded = &info()?.path;
    let source = std::fs::canonicalize(loaded).map_err(|e| InferError::Io { path: loaded.clone(), source: e })?;
    let name = source.file_name().expect("a library file has a name");
    std::fs::create_dir_all(dir).map_err(|e| InferError::Io { path: dir.to_path_buf(), source: e })?;
    let target = dir.join(name);
    let partial = dir.join(format!(".{}.partial", name.to_string_lossy()));
    std::fs::copy(&source, &partial)
        .and_then(|_| std::fs::rename(&partial, &target))
        .map_err(|e| InferError::Io { path: target.clone(), source: e })?;
    Ok(target)
}

/// The library's file name on this platform, as the error messages name it.
pub fn library_file_name() -> String {
    if cfg!(target_os = "windows") {
        "onnxruntime.dll".into()
    } else if cfg!(target_os = "macos") {
        "libonnxruntime.dylib (libonnxruntime.1.MINOR.PATCH.dylib)".into()
    } else {
        "libonnxruntime.so.1 (libonnxruntime.so.1.MINOR.PATCH)".into()
    }
}

/// Names the system loader is asked for, most specific first.
fn loader_names() -> &'static [&'static str] {
    if cfg!(target_os = "windows") {
        &["onnxruntime.dll"]
    } else if cfg!(target_os = "macos") {
        &["libonnxruntime.dylib"]
    } else {
        &["libonnxruntime.so.1", "libonnxruntime.so"]
    }
}

/// The version numbers in a library file name (`libonnxruntime.so.1.31.1` → `[1, 31, 1]`,
/// `libonnxruntime.so` → `[]`), or `None` when the name is not ONNX Runtime's.
fn library_version(name: &str) -> Option<Vec<u32>> {
    let numbers = |s: &str| -> Option<Vec<u32>> {
        if s.is_empty() {
            return Some(Vec::new());
        }
        s.split('.').map(|p| p.parse().ok()).collect()
    };
    if cfg!(target_os = "windows") {
        return (name.eq_ignore_ascii_case("onnxruntime.dll")).then(Vec::new);
    }
    if cfg!(target_os = "macos") {
        let middle = name.strip_prefix("libonnxruntime")?.strip_suffix(".dylib")?;
        return if middle.is_empty() { Some(Vec::new()) } else { numbers(middle.strip_prefix('.')?) };
    }
    let rest = name.strip_prefix("libonnxruntime.so")?;
    if rest.is_empty() { Some(Vec::new()) } else { numbers(rest.strip_prefix('.')?) }
}

/// `path` itself when it is a file; the ONNX Runtime library in it (highest version first) when it
/// is a folder; else `None`.
fn find_in(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = library_version(e.file_name().to_str()?)?;
            e.path().is_file().then(|| (version, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Tries each place in order; the first library that loads wins. A path given in code or in
/// `ORT_DYLIB_PATH` that does not load is an error of its own.
fn discover(explicit: Option<&Path>) -> Result<Runtime> {
    let env_path = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()).map(PathBuf::from);
    for (given, source) in
        [(explicit.map(Path::to_path_buf), LibrarySource::Explicit), (env_path, LibrarySource::EnvVar)]
    {
        if let Some(given) = given {
            let Some(file) = find_in(&given) else {
                let found = if given.exists() { "holds no ONNX Runtime library" } else { "does not exist" };
                let searched = vec![format!("{source}: {} {found}", given.display())];
                return Err(InferError::RuntimeNotFound { searched });
            };
            return open(&file, source).map_err(|e| InferError::RuntimeLoad {
                path: file,
                source_kind: source,
                error: Arc::new(e),
            });
        }
    }
    let mut searched =
        vec![format!("{}: not set", LibrarySource::Explicit), format!("{}: not set", LibrarySource::EnvVar)];
    let mut candidates: Vec<(PathBuf, LibrarySource)> = Vec::new();
    for name in loader_names() {
        match system_lookup(name) {
            Some(path) => candidates.push((path, LibrarySource::SystemLoader)),
            None => searched.push(format!("{}: no {name}", LibrarySource::SystemLoader)),
        }
    }
    // The loader knows only exact names; library folders often hold just the versioned file.
    for dir in std::env::var_os(search_path_variable()).iter().flat_map(std::env::split_paths) {
        if let Some(file) = find_in(&dir).filter(|_| dir.is_dir()) {
            candidates.push((file, LibrarySource::SystemLoader));
        }
    }
    match std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        Some(dir) => match find_in(&dir) {
            Some(file) => candidates.push((file, LibrarySource::ExecutableDir)),
            None => searched.push(format!("{}: nothing in {}", LibrarySource::ExecutableDir, dir.display())),
        },
        None => searched.push(format!("{}: unknown", LibrarySource::ExecutableDir)),
    }
    if let Some(baked) = option_env!("DETNAS_ORT_LIBRARY") {
        match find_in(Path::new(baked)) {
            Some(file) => candidates.push((file, LibrarySource::BuildDefault)),
            None => searched.push(format!("{}: {baked} is missing", LibrarySource::BuildDefault)),
        }
    }
    for (file, source) in candidates {
        match open(&file, source) {
            Ok(runtime) => return Ok(runtime),
            Err(e) => searched.push(format!("{source}: {} did not load ({e})", file.display())),
        }
    }
    Err(InferError::RuntimeNotFound { searched })
}

fn search_path_variable() -> &'static str {
    if cfg!(target_os = "windows") {
        "PATH"
    } else if cfg!(target_os = "macos") {
        "DYLD_LIBRARY_PATH"
    } else {
        "LD_LIBRARY_PATH"
    }
}

/// Loads one library file and creates the environment.
fn open(file: &Path, source: LibrarySource) -> std::result::Result<Runtime, LoadFailure> {
    let builder = ort::init_from(file).map_err(LoadFailure::Library)?;
    let environment = builder.with_name("detnas").build().map_err(LoadFailure::Environment)?;
    // ONNX Runtime's own log lines would double every error we return (and break one-line
    // messages): kept off stderr unless asked for with ORT_LOG (fatal|error|warning|info|verbose).
    if std::env::var_os("ORT_LOG").is_none() {
        environment.set_log_level(ort::logging::LogLevel::Fatal);
    }
    let version = loaded_version(file).unwrap_or_else(|| "unknown".into());
    Ok(Runtime { environment, info: RuntimeInfo { path: file.to_path_buf(), source, version } })
}

/// Why one library file did not give an environment (the source of [`InferError::RuntimeLoad`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    /// The file is not a usable ONNX Runtime library (not loadable, too old, no API).
    #[error(transparent)]
    Library(ort::LoadDynamicError),
    /// The library loaded but refused to create an environment.
    #[error(transparent)]
    Environment(ort::Error),
}

/// Asks the system loader for `name`; returns the file it picks.
#[cfg(unix)]
fn system_lookup(name: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: dlopen/dlsym/dladdr with valid NUL-terminated strings; the handle is not closed
    // (the library is about to be loaded anyway) and `info` is read only when dladdr succeeds.
    unsafe {
        let handle = libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let mut info: libc::Dl_info = std::mem::zeroed();
        if symbol.is_null() || libc::dladdr(symbol, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let path = std::ffi::CStr::from_ptr(info.dli_fname);
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes())))
    }
}

#[cfg(not(unix))]
fn system_lookup(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The version string of the already loaded library at `file`.
#[cfg(unix)]
fn loaded_version(file: &Path) -> Option<String> {
    let c_path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: the library is loaded (RTLD_NOLOAD returns its handle); `OrtGetApiBase` is its
    // documented entry point and `GetVersionString` returns a static NUL-terminated string.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        if symbol.is_null() {
            return None;
        }
        let get_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase = std::mem::transmute(symbol);
        let base = get_base();
        let version = std::ffi::CStr::from_ptr(((*base).GetVersionString)());
        Some(version.to_string_lossy().into_owned())
    }
}

#[cfg(not(unix))]
fn loaded_version(_file: &Path) -> Option<String> {
    None
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
    use ort::session::{Session, builder::GraphOptimizationLevel};
    let model_err = |e: ort::Error<ort::session::builder::SessionBuilder>| InferError::ModelLoad {
        path: name.into(),
        source: e.into(),
    };
    let mut builder =
        Session::builder(environment()?)?.with_optimization_level(GraphOptimizationLevel::Level3).map_err(model_err)?;
    if let Some(t) = threads {
        builder = builder.with_intra_threads(t.max(1)).map_err(model_err)?;
    }
    let choice = crate::device::register(&mut builder, device, strict)?;
    Ok((builder, choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn library_names_and_versions() {
        assert_eq!(library_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(library_version("libonnxruntime.so.1"), Some(vec![1]));
        assert_eq!(library_version("libonnxruntime.so.1.31.1"), Some(vec![1, 31, 1]));
        assert_eq!(library_version("libonnxruntime_providers_shared.so"), None);
        assert_eq!(library_version("libonnxruntime.so.1.x"), None);
        assert_eq!(library_version("libonnxruntime.so1"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_folder_yields_its_newest_library() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["libonnxruntime.so.1.9.0", "libonnxruntime.so.1.31.1", "libonnxruntime.so", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(find_in(dir.path()), Some(dir.path().join("libonnxruntime.so.1.31.1")));
        let file = dir.path().join("notes.txt");
        assert_eq!(find_in(&file), Some(file));
        assert_eq!(find_in(&dir.path().join("missing")), None);
    }
}

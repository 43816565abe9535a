//! Device selection and libtorch's CUDA library.

use crate::error::{Result, TrainError};
use std::ffi::CString;
use std::sync::OnceLock;
use tch::Device;

static CUDA_LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Loads `libtorch_cuda.so` (global symbols) so that libtorch registers its CUDA kernels.
///
/// The linker drops the library because no symbol of it is referenced directly; without this call
/// libtorch reports no CUDA even on a GPU machine. Call it first thing in `main`, before any other
/// `tch` call (an earlier `tch::Cuda::is_available()` caches "no CUDA" for the whole process).
/// Returns whether the library was loaded; on a machine without CUDA it fails harmlessly
/// ([`cuda_library`] says why).
pub fn init() -> bool {
    cuda_library().is_ok()
}

/// Loads libtorch's CUDA library once ([`init`]); the error is the dynamic loader's reason for the
/// last candidate tried (e.g. `libcublas.so.13: cannot open shared object file`).
pub fn cuda_library() -> std::result::Result<(), String> {
    CUDA_LOADED
        .get_or_init(|| {
            let mut candidates = vec!["libtorch_cuda.so".to_string()];
            if let Some(dir) = option_env!("LIBTORCH") {
                candidates.push(format!("{dir}/lib/libtorch_cuda.so"));
            }
            let mut reason = String::from("libtorch_cuda.so not found");
            for name in &candidates {
                let Ok(c) = CString::new(name.as_str()) else { continue };
                // SAFETY: dlopen with a valid NUL-terminated path; the handle is intentionally leaked
                // so the library stays loaded for the life of the process. dlerror returns a
                // NUL-terminated string owned by the loader (or null), read at once.
                unsafe {
                    let handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
                    if !handle.is_null() {
                        return Ok(());
                    }
                    let e = libc::dlerror();
                    if !e.is_null() {
                        reason = std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned();
                    }
                }
            }
            Err(reason)
        })
        .clone()
}

/// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N` and checks the device exists.
pub fn parse(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    let device = match s.as_str() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" | "gpu" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => return Err(TrainError::BadDevice(spec.to_string())),
        },
    };
    let Device::Cuda(index) = device else { unreachable!() };
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(TrainError::DeviceUnavailable {
            requested: spec.to_string(),
            reason: format!("libtorch sees {count} CUDA device(s)"),
        });
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(parse("cpu").unwrap(), Device::Cpu);
        assert!(matches!(parse("tpu"), Err(TrainError::BadDevice(_))));
        assert!(matches!(parse("cuda:x"), Err(TrainError::BadDevice(_))));
        if tch::Cuda::device_count() == 0 {
            let err = parse("cuda:0").unwrap_err().to_string();
            assert!(err.contains("0 CUDA device"), "{err}");
        }
    }
}

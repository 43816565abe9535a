//! Execution devices: parsing `--device`, registering the provider, and the one warning a
//! fallback to CPU produces.

use crate::error::{InferError, Result};
use ort::session::builder::SessionBuilder;

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    /// ONNX Runtime's CPU execution provider (the default).
    Cpu,
    /// CUDA execution provider on GPU `n` (requires the `cuda` feature and a CUDA build of ONNX Runtime).
    Cuda(i32),
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| InferError::Config(format!("invalid device `{s}`: expected cpu, cuda or cuda:N"))),
        }
    }
}

/// The provider that runs a session, and the warning when it is not the one requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderChoice {
    /// `CPUExecutionProvider` or `CUDAExecutionProvider:N`.
    pub provider: String,
    /// One line, set when the requested device was unavailable and the CPU runs instead.
    pub warning: Option<String>,
}

const CPU: &str = "CPUExecutionProvider";

/// Registers the provider for `device` on `builder`. Unavailable CUDA is an error under `strict`,
/// else a CPU fallback with a warning.
pub fn register(builder: &mut SessionBuilder, device: Device, strict: bool) -> Result<ProviderChoice> {
    match device {
        Device::Cpu => Ok(ProviderChoice { provider: CPU.into(), warning: None }),
        Device::Cuda(id) => match register_cuda(builder, id).map_err(|r| one_line(&r)) {
            Ok(provider) => Ok(ProviderChoice { provider, warning: None }),
            Err(reason) if strict => Err(InferError::Provider { requested: format!("cuda:{id}"), reason }),
            Err(reason) => {
                let warning = format!("device cuda:{id} unavailable ({reason}); running on CPU");
                Ok(ProviderChoice { provider: CPU.into(), warning: Some(warning) })
            }
        },
    }
}

/// One line, whatever the provider's own message looks like (line breaks, and the escaped one
/// ONNX Runtime ends some messages with).
fn one_line(reason: &str) -> String {
    reason.trim_end().trim_end_matches("\\n").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The execution providers the loaded ONNX Runtime was built with that this build can use
/// (`CPUExecutionProvider`, and `CUDAExecutionProvider` with the `cuda` feature and a GPU build of
/// ONNX Runtime); a provider being listed does not mean a device is present.
pub fn providers() -> Result<Vec<String>> {
    use ort::ep::ExecutionProvider;
    crate::runtime::environment()?;
    let mut out = Vec::new();
    if ort::ep::CPU::is_available().map_err(|e| InferError::Config(e.to_string()))? {
        out.push(CPU.to_string());
    }
    #[cfg(feature = "cuda")]
    if ort::ep::CUDA::is_available().map_err(|e| InferError::Config(e.to_string()))? {
        out.push("CUDAExecutionProvider".to_string());
    }
    Ok(out)
}

#[cfg(feature = "cuda")]
fn register_cuda(builder: &mut SessionBuilder, id: i32) -> std::result::Result<String, String> {
    use ort::ep::ExecutionProvider;
    let ep = ort::ep::CUDA::default().with_device_id(id);
    ep.register(builder).map(|()| format!("CUDAExecutionProvider:{id}")).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(_: &mut SessionBuilder, _id: i32) -> std::result::Result<String, String> {
    Err("this build has no CUDA support: rebuild with the `cuda` feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::parse("CUDA:1").unwrap(), Device::Cuda(1));
        assert_eq!(Device::parse("gpu").unwrap(), Device::Cuda(0));
        assert!(Device::parse("tpu").unwrap_err().to_string().contains("tpu"));
    }
}

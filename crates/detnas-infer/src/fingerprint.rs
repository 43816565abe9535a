//! The device fingerprint a latency measurement is valid for: CPU model, logical cores and the ISA
//! extensions the kernels dispatch on (or the GPU name for CUDA), ONNX Runtime version, execution
//! provider, thread count and precision.

use crate::device::Device;
use serde::{Deserialize, Serialize};

/// ISA extensions recorded from `/proc/cpuinfo` (x86 `flags`, Arm `Features`) when present.
pub const ISA_FLAGS: [&str; 16] = [
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
];

/// Where and how a latency was measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    /// `cpu` or `cuda:N`, as requested.
    pub device: String,
    /// CPU model name from `/proc/cpuinfo` ([`cpu_model`]; `unknown` when absent).
    pub cpu: String,
    /// Logical cores available to the process (1 when unknown).
    pub logical_cores: usize,
    /// The [`ISA_FLAGS`] the CPU reports, in that order ([`isa_flags`]); empty when `/proc/cpuinfo` lists none.
    pub isa: Vec<String>,
    /// GPU name when a CUDA provider runs.
    pub gpu: Option<String>,
    /// ONNX Runtime version of the loaded library (`1.31.1`; `unknown` when it cannot be loaded).
    pub onnxruntime: String,
    /// The execution provider that actually ran (`CPUExecutionProvider`, `CUDAExecutionProvider:0`).
    pub provider: String,
    /// ONNX Runtime intra-op threads (`None`: its default, all cores).
    pub threads: Option<usize>,
    /// Numeric precision of the measured models ([`Precision::name`]).
    pub precision: String,
}

/// Numeric precision of the models a latency table measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Float32 throughout.
    #[default]
    Fp32,
    /// Static INT8 in QDQ form, as `detnas quantize` writes it: every convolution but the input
    /// stem quantized, post-processing in float.
    Int8,
}

impl Precision {
    /// `fp32` or `int8`.
    pub fn parse(text: &str) -> crate::Result<Self> {
        match text {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            other => Err(crate::InferError::Config(format!("unknown precision {other:?} (fp32, int8)"))),
        }
    }

    /// The name [`Precision::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

fn cpuinfo() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
}

/// CPU model name from `/proc/cpuinfo` (`unknown` when absent).
pub fn cpu_model() -> String {
    cpuinfo()
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The [`ISA_FLAGS`] this CPU reports, in that order.
pub fn isa_flags() -> Vec<String> {
    let info = cpuinfo();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default();
    ISA_FLAGS.iter().filter(|f| flags.contains(f)).map(|f| f.to_string()).collect()
}

/// Name of NVIDIA GPU `index` from the driver's `/proc` entries, ordered by bus id.
fn gpu_name(index: i32) -> Option<String> {
    let mut dirs: Vec<_> = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    let info = std::fs::read_to_string(dirs.get(usize::try_from(index).ok()?)?.join("information")).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Model:")).map(|m| m.trim().to_string())
}

impl Fingerprint {
    /// This machine with `device`, `threads` and the `provider` a session reported; the ONNX
    /// Runtime version is read from the loaded library (`unknown` when it cannot be loaded).
    pub fn current(device: Device, threads: Option<usize>, provider: &str, precision: Precision) -> Self {
        let device_name = match device {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(n) => format!("cuda:{n}"),
        };
        let gpu = match device {
            Device::Cuda(n) if provider.starts_with("CUDA") => Some(gpu_name(n).unwrap_or_else(|| "unknown".into())),
            _ => None,
        };
        Fingerprint {
            device: device_name,
            cpu: cpu_model(),
            logical_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            isa: isa_flags(),
            gpu,
            onnxruntime: crate::runtime::version().unwrap_or_else(|_| "unknown".into()),
            provider: provider.to_string(),
            threads,
            precision: precision.name().into(),
        }
    }

    /// The fields that differ, as `name: this vs other`; empty when the fingerprints match.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        let threads = |v: Option<usize>| v.map_or_else(|| "default".into(), |t| t.to_string());
        [
            ("device", self.device.clone(), other.device.clone()),
            ("cpu", self.cpu.clone(), other.cpu.clone()),
            ("logical cores", self.logical_cores.to_string(), other.logical_cores.to_string()),
            ("isa", self.isa.join(","), other.isa.join(",")),
            ("gpu", opt(&self.gpu), opt(&other.gpu)),
            ("onnxruntime", self.onnxruntime.clone(), other.onnxruntime.clone()),
            ("provider", self.provider.clone(), other.provider.clone()),
            ("threads", threads(self.threads), threads(other.threads)),
            ("precision", self.precision.clone(), other.precision.clone()),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name}: {a} vs {b}"))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field() {
        let a = Fingerprint {
            device: "cpu".into(),
            cpu: "AMD EPYC".into(),
            logical_cores: 2,
            isa: vec!["avx2".into(), "fma".into()],
            gpu: None,
            onnxruntime: "1.31.1".into(),
            provider: "CPUExecutionProvider".into(),
            threads: Some(2),
            precision: "fp32".into(),
        };
        assert!(a.differences(&a.clone()).is_empty());
        let b = Fingerprint { cpu: "Intel Xeon".into(), threads: None, ..a.clone() };
        assert_eq!(a.differences(&b), ["cpu: AMD EPYC vs Intel Xeon", "threads: 2 vs default"]);
    }

    #[test]
    fn this_machine_has_a_cpu_fingerprint() {
        let f = Fingerprint {
            onnxruntime: String::new(),
            ..Fingerprint::current(Device::Cpu, Some(1), "CPU", Precision::Fp32)
        };
        assert!(f.logical_cores >= 1 && f.gpu.is_none() && f.device == "cpu" && f.precision == "fp32");
        assert!(f.isa.iter().all(|i| ISA_FLAGS.contains(&i.as_str())));
    }
}

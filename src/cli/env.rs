//! `detnas env`: which native libraries this binary uses.

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Copy the ONNX Runtime library this binary uses into DIR (e.g. beside your application's
    /// executable, where it is found with no environment variable).
    #[cfg(feature = "infer")]
    #[arg(long, value_name = "DIR")]
    copy_runtime: Option<std::path::PathBuf>,
}

pub fn run(args: EnvArgs) -> Result<()> {
    let mut info = serde_json::Map::new();
    #[cfg(feature = "infer")]
    {
        // A missing runtime is this command's failure: it exists to check the installation.
        let runtime = detnas_infer::runtime::info()?;
        info.insert("onnxruntime_path".into(), serde_json::json!(runtime.path.display().to_string()));
        info.insert("onnxruntime_found_by".into(), serde_json::json!(runtime.source.to_string()));
        info.insert("onnxruntime_version".into(), serde_json::json!(runtime.version));
        info.insert("onnxruntime_providers".into(), serde_json::json!(detnas_infer::device::providers()?));
        if let Some(dir) = &args.copy_runtime {
            let copied = detnas_infer::runtime::copy_library_to(dir)?;
            eprintln!("copied {} to {}", runtime.path.display(), copied.display());
        }
    }
    #[cfg(feature = "train")]
    {
        use detnas_train::tch;
        let cuda = detnas_train::device::cuda_library();
        info.insert("libtorch_cuda_loaded".into(), serde_json::json!(cuda.is_ok()));
        if let Err(reason) = cuda {
            info.insert("libtorch_cuda_error".into(), serde_json::json!(reason));
        }
        info.insert("cuda_devices".into(), serde_json::json!(tch::Cuda::device_count()));
        info.insert("cudnn_available".into(), serde_json::json!(tch::Cuda::cudnn_is_available()));
        info.insert("gpus".into(), serde_json::json!(gpus()));
        info.insert("libtorch_threads".into(), serde_json::json!(tch::get_num_threads()));
    }
    info.insert("features".into(), serde_json::json!(enabled_features()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        for (k, v) in &info {
            println!("{k:<22} {}", v.to_string().trim_matches('"'));
        }
    }
    Ok(())
}

/// The GPUs `nvidia-smi` lists (name, memory, compute capability), one string each; none when it is
/// absent or lists none.
#[cfg(feature = "train")]
fn gpus() -> Vec<String> {
    let query = ["--query-gpu=index,name,memory.total,compute_cap", "--format=csv,noheader"];
    match std::process::Command::new("nvidia-smi").args(query).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

fn enabled_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "infer") {
        v.push("infer");
    }
    if cfg!(feature = "train") {
        v.push("train");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

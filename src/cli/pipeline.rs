//! A resumable sequence of steps into one folder, each made of `detnas` commands run in this
//! process (`detnas demo`, `detnas study`). The record (`<name>.json`) is written atomically after
//! every step with the commands run so far; `--resume` skips finished steps and refuses a folder
//! made with other settings; `--overwrite` removes only a folder that holds such a record.

use anyhow::{Context, Result, bail};
use clap::Parser;
use detnas_core::fsutil::write_atomic;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What the record file holds: the settings that made the folder, finished steps with their
/// seconds, every command run, and the pipeline's own results `data`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record<S> {
    pub settings: serde_json::Value,
    pub steps: Vec<(String, f64)>,
    pub commands: Vec<String>,
    pub data: S,
}

pub struct Pipeline<S> {
    pub out: PathBuf,
    pub rec: Record<S>,
    file: &'static str,
}

impl<S> Pipeline<S> {
    /// `p` inside the folder.
    pub fn path(&self, p: &str) -> PathBuf {
        self.out.join(p)
    }

    /// `path(p)` as a command-line argument.
    pub fn arg(&self, p: &str) -> String {
        self.path(p).display().to_string()
    }
}

impl<S: Serialize + DeserializeOwned + Default> Pipeline<S> {
    /// Opens `out` for a pipeline recorded in `file` with `settings`, as the flags ask: a
    /// non-empty folder needs `resume` (and a record made with the same settings) or `overwrite`
    /// (and a record: a foreign folder is never removed).
    pub fn open(
        out: &Path,
        file: &'static str,
        settings: serde_json::Value,
        resume: bool,
        overwrite: bool,
    ) -> Result<Self> {
        let record = out.join(file);
        let pipeline = |rec| Pipeline { out: out.to_path_buf(), rec, file };
        if resume && record.is_file() {
            let rec: Record<S> = serde_json::from_slice(&std::fs::read(&record)?)
                .with_context(|| format!("{}: not a record of this command", record.display()))?;
            if rec.settings != settings {
                bail!(
                    "{}: made with other settings ({}); use another --out or --overwrite",
                    out.display(),
                    rec.settings
                );
            }
            return Ok(pipeline(rec));
        }
        let non_empty = out.is_dir() && std::fs::read_dir(out)?.next().is_some();
        if non_empty && resume {
            bail!("{} holds files but no {file}: nothing to resume there; use another --out", out.display());
        }
        if non_empty {
            if !overwrite {
                bail!(
                    "{} already holds files: --resume to continue there, --overwrite to start over, or another --out",
                    out.display()
                );
            }
            if !record.is_file() {
                bail!("{} holds no {file}: refusing to remove it with --overwrite", out.display());
            }
            std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
        }
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        Ok(pipeline(Record { settings, steps: Vec::new(), commands: Vec::new(), data: S::default() }))
    }

    /// Writes the record atomically.
    pub fn save(&self) -> Result<()> {
        write_atomic(&self.path(self.file), serde_json::to_string_pretty(&self.rec)?.as_bytes())?;
        Ok(())
    }

    /// Marks step `name` finished after `secs` seconds and saves the record.
    fn finish(&mut self, name: &str, secs: f64) -> Result<()> {
        eprintln!("== {name}: {secs:.0} s");
        self.rec.steps.push((name.to_string(), secs));
        self.save()
    }

    fn is_done(&self, name: &str) -> bool {
        self.rec.steps.iter().any(|(n, _)| n == name)
    }

    /// Runs `detnas ARGS` in this process, recording the command line; a non-zero exit is an error.
    pub fn detnas(&mut self, args: &[String]) -> Result<()> {
        let line = format!("detnas {}", args.join(" "));
        eprintln!("$ {line}");
        self.rec.commands.push(line.clone());
        let cli = super::Cli::try_parse_from(std::iter::once("detnas".to_string()).chain(args.iter().cloned()))
            .with_context(|| format!("an invalid command was built: {line}"))?;
        let code = super::run(cli)?;
        if code != 0 {
            bail!("`{line}` exited with {code}");
        }
        Ok(())
    }

    /// `commands.sh`: every command run, in order.
    pub fn write_commands(&self, what: &str) -> Result<()> {
        let mut s = format!("#!/bin/sh\n# The commands `detnas {what}` ran, in order.\nset -e\n");
        for c in &self.rec.commands {
            s.push_str(c);
            s.push('\n');
        }
        write_atomic(&self.path("commands.sh"), s.as_bytes())?;
        Ok(())
    }
}

/// A pipeline's context: whatever the steps need beside the [`Pipeline`].
pub trait Steps {
    type Data: Serialize + DeserializeOwned + Default;
    fn pipeline(&mut self) -> &mut Pipeline<Self::Data>;
}

/// A named step of a pipeline over context `T`.
pub type Step<'a, T> = (&'a str, fn(&mut T) -> Result<()>);

/// Runs `steps` in order on `ctx`, skipping those its record says are finished.
pub fn run_steps<T: Steps>(ctx: &mut T, steps: &[Step<'_, T>]) -> Result<()> {
    let total = steps.len();
    for (i, (name, f)) in steps.iter().enumerate() {
        if ctx.pipeline().is_done(name) {
            eprintln!("== {}/{total} {name}: done before, skipped", i + 1);
            continue;
        }
        eprintln!("== {}/{total} {name}", i + 1);
        let t = Instant::now();
        f(ctx).with_context(|| format!("step `{name}`"))?;
        ctx.pipeline().finish(name, t.elapsed().as_secs_f64())?;
    }
    Ok(())
}

/// Owned strings of `v`.
pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

//! A resumable sequence of steps into one folder, each a library call recorded as its equivalent
//! `detnas` command (`detnas demo`, `detnas study`). The record (`<name>.json`) is written atomically after
//! every step with the commands run so far; `--resume` skips finished steps and refuses a folder
//! made with other settings. The folder is owned ([`detnas_core::owner`]): every path the
//! pipeline names inside it is listed in its ownership record before use, so `--overwrite`
//! removes exactly what the pipeline and the commands it ran wrote, and nothing else.

use anyhow::{Context, Result, bail};
use detnas_core::fsutil::write_atomic;
use detnas_core::owner::{Existing, Flags, OwnedDir};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What the record file holds: the settings that made the folder, finished steps with their
/// seconds, every command run, and the pipeline's own results `data`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record<S> {
    /// The settings that made the folder (a resume must match them).
    pub settings: serde_json::Value,
    /// Finished steps with their seconds.
    pub steps: Vec<(String, f64)>,
    /// Every command run (or its equivalent for library calls), in order.
    pub commands: Vec<String>,
    /// The pipeline's own results.
    pub data: S,
}

/// A resumable pipeline writing into its own (owned) folder.
pub struct Pipeline<S> {
    /// The folder.
    pub out: PathBuf,
    /// Its record, saved after every step.
    pub rec: Record<S>,
    file: &'static str,
    owned: OwnedDir,
}

impl<S> Pipeline<S> {
    /// `p` inside the folder, listed (with its parent folders) in the folder's ownership record.
    /// A record that cannot be written only means the file would be kept by `--overwrite`; the
    /// next [`Pipeline::save`] reports the unwritable folder.
    pub fn path(&self, p: &str) -> PathBuf {
        let mut names: Vec<String> = p.match_indices('/').map(|(i, _)| format!("{}/", &p[..i])).collect();
        names.push(p.to_string());
        let _ = self.owned.note(&names);
        self.out.join(p)
    }

    /// `path(p)` as a command-line argument.
    pub fn arg(&self, p: &str) -> String {
        self.path(p).display().to_string()
    }
}

impl<S: Serialize + DeserializeOwned + Default> Pipeline<S> {
    /// Opens `out` for a pipeline recorded in `file` (`demo.json`: owned by `demo`) with
    /// `settings`, as the flags ask: earlier results need `resume` (and a record made with the
    /// same settings) or `overwrite` (which removes the listed files only); a folder of another
    /// command or of the user's files is refused.
    pub fn open(
        out: &Path,
        file: &'static str,
        settings: serde_json::Value,
        resume: bool,
        overwrite: bool,
    ) -> Result<Self> {
        let command = file.trim_end_matches(".json");
        let existing = match (resume, overwrite) {
            (true, _) => Existing::Resume,
            (false, true) => Existing::Replace,
            (false, false) => Existing::Refuse,
        };
        let opened = OwnedDir::open(out, command, existing, Flags::OVERWRITE_RESUME)?;
        let record = out.join(file);
        let pipeline = |rec, owned| Pipeline { out: out.to_path_buf(), rec, file, owned };
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
            return Ok(pipeline(rec, opened.dir));
        }
        if resume && opened.earlier {
            bail!("{} holds no {file}: nothing to resume there; use --overwrite or another --out", out.display());
        }
        if overwrite
            && opened.earlier
            && let Some(note) = opened.dir.replace_with_note()?
        {
            eprintln!("{note}");
        }
        let fresh = Record { settings, steps: Vec::new(), commands: Vec::new(), data: S::default() };
        let p = pipeline(fresh, opened.dir);
        p.path(file);
        Ok(p)
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

    /// Records `detnas ARGS` (each argument quoted for the shell where it needs it), the command
    /// equivalent to the library call that follows, and returns the line.
    fn record(&mut self, args: &[String]) -> String {
        let line =
            std::iter::once("detnas".to_string()).chain(args.iter().map(|a| shell_quoted(a))).collect::<Vec<_>>();
        let line = line.join(" ");
        eprintln!("$ {line}");
        self.rec.commands.push(line.clone());
        line
    }

    /// Runs `f`, a library call, after recording `detnas ARGS`, its equivalent command.
    pub fn call(&mut self, args: &[String], f: impl FnOnce() -> Result<()>) -> Result<()> {
        let line = self.record(args);
        f().with_context(|| format!("`{line}`"))
    }

    /// Runs the search `opts` describes through the library (events on stderr), recording the
    /// equivalent command.
    pub fn search(&mut self, opts: &crate::SearchOptions) -> Result<crate::SearchOutcome> {
        let args: Vec<String> = std::iter::once("search".to_string()).chain(opts.command_line()).collect();
        self.record(&args);
        crate::run_with(opts, &mut crate::print_event)
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
    /// The pipeline's results.
    type Data: Serialize + DeserializeOwned + Default;
    /// The pipeline the steps run in.
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

/// `arg` as a POSIX shell reads it back: as it is when it holds only characters the shell leaves
/// alone, else in single quotes (a `'` inside as `'\''`).
pub fn shell_quoted(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quoted;

    #[test]
    fn arguments_are_quoted_only_where_the_shell_needs_it() {
        assert_eq!(shell_quoted("runs/demo/latency.json"), "runs/demo/latency.json");
        assert_eq!(shell_quoted("00112233:fpn48:head32x2:sep:96x96"), "00112233:fpn48:head32x2:sep:96x96");
        assert_eq!(shell_quoted("/tmp/my runs/demo"), "'/tmp/my runs/demo'");
        assert_eq!(shell_quoted("it's"), "'it'\\''s'");
        assert_eq!(shell_quoted(""), "''");
        assert_eq!(shell_quoted("$HOME;rm"), "'$HOME;rm'");
    }
}

//! The one optimisation-step loop of both trainers (detection and classification): what to do with
//! an existing checkpoint in the output folder, non-finite losses, gradient clipping, the learning
//! rate schedule, the log window and checkpointing.

use crate::checkpoint::{self, CheckpointState, LogEntry, LossPart};
use crate::error::{Result, TrainError};
use crate::optim::{LrSchedule, PathParam, PathSgd, clip_grad_norm};
use detnas_core::owner::{self, Existing, Flags, OwnedDir};
use std::path::Path;
use std::time::{Duration, Instant};

/// The command that owns training folders ([`detnas_core::owner`]).
pub const COMMAND: &str = "train";
use tch::{Tensor, nn};

/// What a run does with a checkpoint already in its output folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// Start a new run; a folder that already holds a checkpoint is refused
    /// ([`TrainError::CheckpointExists`]), so no earlier work is lost.
    #[default]
    Fresh,
    /// Continue the checkpoint in the folder exactly (same configuration required); start a new
    /// run when there is none.
    Resume,
    /// Remove the checkpoint files of the folder (state, weights, optimizer buffers; nothing else)
    /// and start a new run.
    Overwrite,
}

impl Start {
    /// From the `--resume` / `--overwrite` flags (which the command line makes exclusive).
    pub fn from_flags(resume: bool, overwrite: bool) -> Self {
        match (resume, overwrite) {
            (true, _) => Start::Resume,
            (false, true) => Start::Overwrite,
            (false, false) => Start::Fresh,
        }
    }

    /// What the ownership rules make of this start ([`detnas_core::owner`]).
    fn existing(self) -> Existing {
        match self {
            Start::Fresh => Existing::Refuse,
            Start::Resume => Existing::Resume,
            Start::Overwrite => Existing::Replace,
        }
    }

    /// Opens `out` as a training folder (created and stamped when new) and refuses what this
    /// start may not use: a folder of another command, a folder of files detnas did not write,
    /// or, for a fresh start, a folder that holds a checkpoint. Call before any expensive work.
    pub fn check(self, out: &Path) -> Result<OwnedDir> {
        // A checkpoint an earlier detnas wrote (before ownership records): its own files, as its
        // state names them, are adopted; anything else in the folder stays the user's.
        if owner::owner_of(out).is_none()
            && let Ok(state) = checkpoint::load_state(out)
        {
            let files =
                [detnas_core::checkpoint::STATE_FILE.to_string(), state.weights.clone(), state.optimizer.clone()];
            owner::adopt(out, COMMAND, &files)?;
        }
        if self == Start::Fresh && checkpoint::exists(out) && owner::owner_of(out).as_deref() == Some(COMMAND) {
            let step = checkpoint::load_state(out).map(|s| s.step).unwrap_or(0);
            return Err(TrainError::CheckpointExists { path: out.to_path_buf(), step });
        }
        Ok(OwnedDir::open(out, COMMAND, self.existing(), Flags::OVERWRITE_RESUME)?.dir)
    }
}

/// How long a run lasts, how it optimises, and how often it logs and saves.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Optimisation steps.
    pub iterations: usize,
    /// Steps between log entries.
    pub log_every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Learning rate schedule.
    pub lr: LrSchedule,
    /// Clip the global gradient norm of the step's parameters.
    pub clip_grad_norm: Option<f64>,
    /// Abort after this many consecutive non-finite losses; `None`: skip them forever.
    pub max_bad_steps: Option<usize>,
}

/// The loss of one step: the minimised total and its named parts (logged as window means).
pub struct StepLoss {
    /// The loss minimised.
    pub total: Tensor,
    /// Its named parts.
    pub parts: Vec<(&'static str, Tensor)>,
}

/// Sums over the steps since the last log entry.
struct Window {
    start: Instant,
    images: usize,
    loss: f64,
    parts: Vec<(&'static str, f64)>,
    waited: Duration,
}

impl Window {
    fn new() -> Self {
        Window { start: Instant::now(), images: 0, loss: 0.0, parts: Vec::new(), waited: Duration::ZERO }
    }
}

/// The training loop's state between steps: checkpoint state, optimizer, log window.
///
/// Contract of [`StepLoop::step`] for step `s` (0-based): gradients of the step's parameters are
/// zeroed, the loss computed; a non-finite loss skips the update (counted in
/// `skipped_steps`, fatal after `max_bad_steps` in a row); otherwise backward, clipping, SGD at
/// `lr.at(s)`. A log entry is written when `s + 1` is a multiple of `log_every` or the last
/// iteration, a checkpoint when it is a multiple of `checkpoint_every` or the last iteration.
pub struct StepLoop<'a> {
    schedule: Schedule,
    out: &'a Path,
    /// The checkpoint state: step, history, skipped steps and images.
    pub state: CheckpointState,
    opt: PathSgd,
    window: Window,
    bad_in_a_row: usize,
    saved_at: Option<usize>,
    fixed_parts: Vec<LossPart>,
}

impl<'a> StepLoop<'a> {
    /// Prepares `out` as `start` says (resuming weights, optimizer buffers and state into `vs`,
    /// `opt` and `state`, or removing an old checkpoint) and returns the loop at the first step to
    /// run (`state.step`).
    pub fn start(
        start: Start,
        out: &'a Path,
        vs: &mut nn::VarStore,
        mut opt: PathSgd,
        mut state: CheckpointState,
        schedule: Schedule,
    ) -> Result<Self> {
        let owned = start.check(out)?;
        match start {
            Start::Fresh => {}
            Start::Resume => {
                checkpoint::resume(out, vs, &mut opt, &mut state)?;
            }
            Start::Overwrite => {
                owned.replace()?;
            }
        }
        Ok(StepLoop {
            schedule,
            out,
            state,
            opt,
            window: Window::new(),
            bad_in_a_row: 0,
            saved_at: None,
            fixed_parts: Vec::new(),
        })
    }

    /// Entries added to every log line's parts (not loss means: constants such as a class count).
    pub fn with_fixed_parts(mut self, parts: Vec<LossPart>) -> Self {
        self.fixed_parts = parts;
        self
    }

    /// The next step to run.
    pub fn next_step(&self) -> usize {
        self.state.step
    }

    /// Whether every iteration has run.
    pub fn done(&self) -> bool {
        self.state.step >= self.schedule.iterations
    }

    /// Runs step `step` on `images` images (see the type's contract); `forward` computes the loss
    /// after the gradients of `params` were zeroed. `data_wait` is how long the step waited for its
    /// batch. Returns the log entry written by this step, if any.
    pub fn step(
        &mut self,
        vs: &nn::VarStore,
        step: usize,
        params: &[PathParam],
        images: usize,
        data_wait: Duration,
        forward: impl FnOnce() -> Result<StepLoss>,
    ) -> Result<Option<LogEntry>> {
        PathSgd::zero_grad(params);
        let loss = forward()?;
        let value = loss.total.double_value(&[]);
        self.state.step = step + 1;
        self.window.waited += data_wait;
        if !value.is_finite() {
            self.state.skipped_steps += 1;
            self.bad_in_a_row += 1;
            if self.schedule.max_bad_steps.is_some_and(|max| self.bad_in_a_row >= max) {
                return Err(TrainError::NonFinite(format!(
                    "the loss of {} consecutive steps (last: {step})",
                    self.bad_in_a_row
                )));
            }
            return Ok(None);
        }
        self.bad_in_a_row = 0;
        loss.total.backward();
        if let Some(max) = self.schedule.clip_grad_norm {
            clip_grad_norm(params, max);
        }
        let lr = self.schedule.lr.at(step);
        self.opt.step(params, lr);
        self.add_to_window(images, value, &loss.parts);
        let entry = self.is_due(self.schedule.log_every).then(|| self.log(lr));
        if self.is_due(self.schedule.checkpoint_every) {
            self.save(vs)?;
        }
        Ok(entry)
    }

    /// Passes over step `step` without an update (its batch had no usable image).
    pub fn skip(&mut self, step: usize, data_wait: Duration) {
        self.state.step = step + 1;
        self.window.waited += data_wait;
    }

    /// Saves the final checkpoint unless the last step already did, and returns the state.
    pub fn finish(mut self, vs: &nn::VarStore) -> Result<CheckpointState> {
        if self.saved_at != Some(self.state.step) || self.state.weights.is_empty() {
            self.save(vs)?;
        }
        Ok(self.state)
    }

    fn add_to_window(&mut self, images: usize, value: f64, parts: &[(&'static str, Tensor)]) {
        self.window.images += images;
        self.window.loss += value;
        if self.window.parts.is_empty() {
            self.window.parts = parts.iter().map(|(name, _)| (*name, 0.0)).collect();
        }
        for ((_, sum), (_, t)) in self.window.parts.iter_mut().zip(parts) {
            *sum += t.double_value(&[]);
        }
    }

    /// Whether the step just completed is a multiple of `every` or the last one.
    fn is_due(&self, every: usize) -> bool {
        self.state.step.is_multiple_of(every.max(1)) || self.state.step == self.schedule.iterations
    }

    /// The window's means (over every step of the window, skipped ones included) as a log entry,
    /// kept in the history; the window restarts.
    fn log(&mut self, lr: f64) -> LogEntry {
        let n = ((self.state.step - 1) % self.schedule.log_every.max(1) + 1) as f64;
        let w = std::mem::replace(&mut self.window, Window::new());
        let mut parts: Vec<LossPart> =
            w.parts.iter().map(|(name, sum)| LossPart { name: (*name).to_string(), value: sum / n }).collect();
        parts.extend(self.fixed_parts.iter().cloned());
        let entry = LogEntry {
            step: self.state.step,
            loss: w.loss / n,
            parts,
            lr,
            images_per_s: w.images as f64 / w.start.elapsed().as_secs_f64().max(1e-9),
            data_wait_ms: w.waited.as_secs_f64() * 1e3 / n,
        };
        self.state.history.push(entry.clone());
        entry
    }

    fn save(&mut self, vs: &nn::VarStore) -> Result<()> {
        checkpoint::save(self.out, vs, &self.opt, &mut self.state)?;
        self.saved_at = Some(self.state.step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn schedule(iterations: usize, max_bad_steps: Option<usize>) -> Schedule {
        Schedule {
            iterations,
            log_every: 2,
            checkpoint_every: 3,
            lr: LrSchedule::Linear { base: 0.1, total: 100 },
            clip_grad_norm: Some(1.0),
            max_bad_steps,
        }
    }

    /// A one-tensor model `w` and a loop over it into `out`.
    fn setup<'a>(out: &'a Path, start: Start, sched: Schedule) -> Result<(nn::VarStore, Tensor, StepLoop<'a>)> {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let state = CheckpointState::new(
            crate::checkpoint::CheckpointKind::Classifier,
            "detnas-300m",
            None,
            &serde_json::json!({ "x": 1 }),
        );
        let run = StepLoop::start(start, out, &mut vs, PathSgd::new(0.0, 0.0, false), state, sched)?;
        Ok((vs, w, run))
    }

    fn loss_of(w: &Tensor, nan: bool) -> Result<StepLoss> {
        let l = (w * w).sum(Kind::Float);
        let total = if nan { &l * f64::NAN } else { l.shallow_clone() };
        Ok(StepLoss { total, parts: vec![("half", &l * 0.5)] })
    }

    #[test]
    fn steps_update_skip_non_finite_log_means_and_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, w, mut run) = setup(dir.path(), Start::Fresh, schedule(4, None)).unwrap();
        let params = vec![PathParam::whole("w".to_string(), w.shallow_clone())];
        let mut logs = Vec::new();
        for step in 0..4 {
            let nan = step == 2;
            let before = Vec::<f32>::try_from(&w).unwrap();
            let entry = run.step(&vs, step, &params, 3, Duration::ZERO, || loss_of(&w, nan)).unwrap();
            let after = Vec::<f32>::try_from(&w).unwrap();
            assert_eq!(before == after, nan, "step {step}: only a finite loss updates");
            logs.extend(entry);
        }
        assert_eq!(run.state.skipped_steps, 1);
        assert_eq!(logs.iter().map(|e| e.step).collect::<Vec<_>>(), [2, 4]);
        // step 1: loss 2.0, clipped update (|g| = 2.83 -> 1) with lr 0.1; window of steps 1-2
        assert!((logs[0].parts[0].value - logs[0].loss / 2.0).abs() < 1e-9, "{:?}", logs[0]);
        assert!(logs[0].loss > 1.8 && logs[0].loss < 2.0, "{:?}", logs[0]);
        assert_eq!(logs[0].parts[0].name, "half");
        assert_eq!(detnas_core::checkpoint::load_state(dir.path()).unwrap().step, 4, "saved at the last step");
        let state = run.finish(&vs).unwrap();
        assert_eq!((state.step, state.history.len()), (4, 2));
    }

    #[test]
    fn consecutive_non_finite_losses_abort_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, w, mut run) = setup(dir.path(), Start::Fresh, schedule(10, Some(2))).unwrap();
        let params = vec![PathParam::whole("w".to_string(), w.shallow_clone())];
        assert!(run.step(&vs, 0, &params, 1, Duration::ZERO, || loss_of(&w, true)).unwrap().is_none());
        let err = run.step(&vs, 1, &params, 1, Duration::ZERO, || loss_of(&w, true)).unwrap_err().to_string();
        assert!(err.contains("2 consecutive steps"), "{err}");
        assert!(!checkpoint::exists(dir.path()), "nothing saved");
    }

    /// Trains 3 steps into `dir` (a checkpoint at step 3); returns the trained weights.
    fn trained(dir: &Path) -> Tensor {
        let (vs, w, mut run) = setup(dir, Start::Fresh, schedule(3, None)).unwrap();
        let params = vec![PathParam::whole("w".to_string(), w.shallow_clone())];
        for step in 0..3 {
            run.step(&vs, step, &params, 1, Duration::ZERO, || loss_of(&w, false)).unwrap();
        }
        run.finish(&vs).unwrap();
        w
    }

    #[test]
    fn an_existing_checkpoint_is_refused_resumed_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let w = trained(dir.path());
        let err = setup(dir.path(), Start::Fresh, schedule(3, None)).err().unwrap().to_string();
        assert!(err.contains("step 3") && err.contains("--resume") && err.contains("--overwrite"), "{err}");
        let (_, resumed_w, resumed) = setup(dir.path(), Start::Resume, schedule(5, None)).unwrap();
        assert_eq!(resumed.next_step(), 3);
        assert_eq!(Vec::<f32>::try_from(&resumed_w).unwrap(), Vec::<f32>::try_from(&w).unwrap());
        let (_, fresh_w, fresh) = setup(dir.path(), Start::Overwrite, schedule(5, None)).unwrap();
        assert_eq!(fresh.next_step(), 0);
        assert_eq!(Vec::<f32>::try_from(&fresh_w).unwrap(), [1.0, 1.0]);
        assert!(!checkpoint::exists(dir.path()), "the old checkpoint files are gone");
    }

    #[test]
    fn a_checkpoint_of_an_earlier_detnas_without_a_record_is_adopted_and_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let _trained = trained(dir.path());
        std::fs::remove_file(dir.path().join(owner::RECORD)).unwrap(); // as an earlier version left it
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let (_, _, resumed) = setup(dir.path(), Start::Resume, schedule(5, None)).unwrap();
        assert_eq!(resumed.next_step(), 3);
        let listed = owner::read_record(dir.path()).unwrap().unwrap().files;
        assert_eq!(listed.len(), 3, "state, weights and optimizer: {listed:?}");
        let _fresh = setup(dir.path(), Start::Overwrite, schedule(5, None)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");
        assert!(!checkpoint::exists(dir.path()));
    }

    #[test]
    fn folders_of_other_commands_or_of_the_user_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let search = dir.path().join("search");
        let owned = OwnedDir::open(&search, "search", Existing::Refuse, Flags::OVERWRITE_RESUME).unwrap().dir;
        owned.write("state.json", b"{\"search\": true}").unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("weights-final.safetensors"), b"mine").unwrap();
        for start in [Start::Fresh, Start::Resume, Start::Overwrite] {
            let err = setup(&search, start, schedule(3, None)).err().unwrap().to_string();
            assert!(err.contains("output of `detnas search`"), "{err}");
            let err = setup(&user, start, schedule(3, None)).err().unwrap().to_string();
            assert!(err.contains("files detnas did not write (weights-final.safetensors)"), "{err}");
        }
        assert_eq!(std::fs::read(search.join("state.json")).unwrap(), b"{\"search\": true}");
        assert_eq!(std::fs::read(user.join("weights-final.safetensors")).unwrap(), b"mine");
    }
}

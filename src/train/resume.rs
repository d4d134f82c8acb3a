//! The resume state: the loop's position and sums (`LoopState`), and the crash-consistent pair
//! of files that holds it with the weights.
//!
//! A checkpoint is two files, `last.safetensors` (the weights, loadable by PyTorch as they are)
//! and `last.optim.safetensors` (the optimizer's state in [`crate::train::optim::state`]'s
//! format, and the loop state with the learning-rate schedule's), that carry the same
//! `checkpoint_id`. One rename cannot replace two files, so [`save_last`] keeps the previous
//! optimizer file until the new pair is in place:
//!
//! 1. both new files are written to synced temporary files (a full disk fails here, with
//!    nothing replaced);
//! 2. `last.optim.safetensors` is renamed to `previous.optim.safetensors`;
//! 3. the new momentum file, then the new weights, are renamed into place;
//! 4. `previous.optim.safetensors` is removed.
//!
//! Whatever step a crash interrupts, the weights on disk have an optimizer file with their id:
//! `last.optim.safetensors` or, between 2 and 3, `previous.optim.safetensors`. [`load_last`]
//! takes whichever matches, so `--resume` always continues from the last complete pair.
//!
//! [`initial_state`] is where every run's first step comes from: that pair, or for a new run
//! fresh weights, given weights (`--init-from`) or a PyTorch training checkpoint.
//!
//! Optimizer files written before Adam existed hold SGD's momentum buffers by parameter name
//! (and no `optimizer` metadata): they are read as SGD state with the run's settings.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::formats::atomic;
use crate::formats::safetensors::{self as checkpoint, CheckpointError, Metadata};
use crate::formats::state_dict;
use crate::formats::training_checkpoint::TrainingCheckpoint;
use crate::train::metrics::{EpochMetrics, EpochSums};
use crate::train::optim::lr_scheduler::LrScheduler;
use crate::train::optim::state::METADATA_KEY;
use crate::train::optim::{Optimizer, SavedState};
use crate::train::optimizer_setup;
use crate::train::run_dir::{self, RunDir, Start, LAST_CHECKPOINT, LAST_OPTIMIZER, PREVIOUS_OPTIMIZER};

// Where a PyTorch run continues from and ours goes to PyTorch; re-exported where they were.
pub use crate::train::pytorch_run::{config_of_pytorch_checkpoint, last_as_training_checkpoint};

/// Where the loop stands: stored in `last.optim.safetensors` so that `--resume` continues.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoopState {
    /// 0-based epoch in progress (or next to start when `step == 0`).
    pub epoch: usize,
    /// Steps already done in `epoch`.
    pub step: usize,
    pub sums: EpochSums,
    pub history: Vec<EpochMetrics>,
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    pub seconds: f64,
    pub checkpoint_id: String,
    /// The learning-rate schedule, stepped as far as the loop (absent: a constant learning
    /// rate, and runs saved before schedules existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<LrScheduler>,
}

/// Test-only fault injection: `TCH_ALEXNET_FAILPOINT=between-checkpoint-writes:N` aborts the
/// process (as a power loss would stop it) during the N-th (1-based) checkpoint save, after
/// the new momentum file is in place and before the new weights are.
fn failpoint_between_writes() {
    static SAVES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Ok(spec) = std::env::var("TCH_ALEXNET_FAILPOINT") else { return };
    let nth = SAVES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if spec.strip_prefix("between-checkpoint-writes:").and_then(|n| n.parse::<usize>().ok()) == Some(nth) {
        eprintln!("failpoint: aborting between the two checkpoint writes (save {nth})");
        std::process::abort();
    }
}

/// A checkpoint error, with the disk named when the storage is what failed.
pub fn explain(err: CheckpointError) -> anyhow::Error {
    match err {
        CheckpointError::Write { path, err } => run_dir::storage_error(&path, err),
        other => other.into(),
    }
}

/// Saves the weights, the optimizer's state and `state` as a crash-consistent pair (see the
/// module header), then `metrics.jsonl`. A failure replaces nothing. `metadata` goes into both
/// files' headers (the network's name, ...), beside the pair's id and position.
pub fn save_last(
    run_dir: &Path,
    vs: &nn::VarStore,
    optimizer: &dyn Optimizer,
    metadata: &Metadata,
    state: &mut LoopState,
) -> Result<()> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    state.checkpoint_id = format!("{}-{}-{}-{nanos}", state.epoch, state.step, std::process::id());
    let mut meta = metadata.clone();
    meta.insert("checkpoint_id".into(), state.checkpoint_id.clone());
    meta.insert("epoch".into(), state.epoch.to_string());
    meta.insert("step".into(), state.step.to_string());
    let mut optim_meta = meta.clone();
    optim_meta.insert("loop_state".into(), serde_json::to_string(state)?);
    let saved = optimizer.save_state();
    optim_meta.insert(METADATA_KEY.into(), saved.settings.to_string());

    let optim_path = run_dir.join(LAST_OPTIMIZER);
    let weights_path = run_dir.join(LAST_CHECKPOINT);
    let previous_path = run_dir.join(PREVIOUS_OPTIMIZER);
    let write_temp = |path: &Path, bytes: Vec<u8>| {
        atomic::write_synced_temp(path, &bytes).map_err(|e| run_dir::storage_error(path, e))
    };
    // 1. Both files as synced temporaries, one at a time (each is the size of the weights).
    let tensors = saved.tensors.iter().map(|(k, v)| (k.as_str(), v));
    let bytes = checkpoint::serialize_tensors(&optim_path, tensors, &optim_meta).map_err(explain)?;
    let optim_tmp = write_temp(&optim_path, bytes)?;
    let variables: std::collections::BTreeMap<String, tch::Tensor> = vs.variables().into_iter().collect();
    let weights_tmp =
        checkpoint::serialize_tensors(&weights_path, variables.iter().map(|(k, v)| (k.as_str(), v)), &meta)
            .map_err(explain)
            .and_then(|bytes| write_temp(&weights_path, bytes));
    let weights_tmp = match weights_tmp {
        Ok(tmp) => tmp,
        Err(e) => {
            let _ = std::fs::remove_file(&optim_tmp);
            return Err(e);
        }
    };
    // 2.-4. Renames only: no new data blocks are needed from here on.
    let renamed = (|| {
        if optim_path.exists() {
            atomic::rename_synced(&optim_path, &previous_path)?;
        }
        atomic::rename_synced(&optim_tmp, &optim_path)?;
        failpoint_between_writes();
        atomic::rename_synced(&weights_tmp, &weights_path)?;
        match std::fs::remove_file(&previous_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })();
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&optim_tmp);
        let _ = std::fs::remove_file(&weights_tmp);
        return Err(run_dir::storage_error(&weights_path, e));
    }
    run_dir::write_metrics(run_dir, &state.history)
}

/// The loop state and optimizer state stored in one optimizer file.
fn read_optimizer(path: &Path) -> Result<(LoopState, checkpoint::LoadedTensors)> {
    let optim = checkpoint::load_tensors(path)?;
    let state: LoopState = optim
        .metadata
        .get("loop_state")
        .and_then(|s| serde_json::from_str(s).ok())
        .with_context(|| format!("{} has no valid loop state", path.display()))?;
    Ok((state, optim))
}

/// Leaves the matching optimizer file as `last.optim.safetensors` and no other, so that the next
/// save's step 2 never moves a stale file over the only matching one.
fn settle_pair(run_dir: &Path, matching: &str) -> Result<()> {
    let previous = run_dir.join(PREVIOUS_OPTIMIZER);
    let result = if matching == PREVIOUS_OPTIMIZER {
        atomic::rename_synced(&previous, &run_dir.join(LAST_OPTIMIZER))
    } else {
        std::fs::remove_file(&previous)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
    };
    result.with_context(|| format!("cannot tidy the checkpoint files in {}", run_dir.display()))
}

/// The last complete checkpoint pair of a run folder, read from disk.
pub(crate) struct LastPair {
    pub(crate) weights: BTreeMap<String, tch::Tensor>,
    optimizer: checkpoint::LoadedTensors,
    pub(crate) state: LoopState,
    /// The optimizer file that matched the weights.
    optimizer_file: &'static str,
}

impl LastPair {
    /// The optimizer state of the pair for `optimizer`: as saved, or, from a file written
    /// before other optimizers than SGD existed, its momentum buffers with the run's settings.
    pub(crate) fn saved_state(&self, optimizer: &dyn Optimizer) -> Result<SavedState> {
        let tensors = self.optimizer.tensors.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
        match self.optimizer.metadata.get(METADATA_KEY) {
            Some(json) => Ok(SavedState {
                tensors,
                settings: serde_json::from_str(json)
                    .with_context(|| format!("{}: metadata `{METADATA_KEY}` is not JSON", self.optimizer_file))?,
            }),
            None => optimizer_setup::momentum_as_saved_state(optimizer, &tensors),
        }
    }
}

/// Reads the weights and whichever optimizer file carries their `checkpoint_id`.
pub(crate) fn read_last(run_dir: &Path) -> Result<LastPair> {
    let weights = checkpoint::load_tensors(&run_dir.join(LAST_CHECKPOINT))?;
    let id = weights.metadata.get("checkpoint_id").cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for name in [LAST_OPTIMIZER, PREVIOUS_OPTIMIZER] {
        let path = run_dir.join(name);
        if !path.exists() {
            continue;
        }
        match read_optimizer(&path) {
            Ok((state, optim)) if state.checkpoint_id == id => {
                return Ok(LastPair { weights: weights.tensors, optimizer: optim, state, optimizer_file: name })
            }
            Ok(_) => problems.push(format!("{name} belongs to another checkpoint")),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if problems.is_empty() {
        problems.push(format!("{LAST_OPTIMIZER} is missing"));
    }
    bail!(
        "no complete checkpoint in {}: no optimizer file matches {LAST_CHECKPOINT} ({})",
        run_dir.display(),
        problems.join("; ")
    )
}

/// Loads the last complete checkpoint pair into `vs` and `optimizer` and returns its loop
/// state: the weights, and whichever optimizer file carries their `checkpoint_id`.
pub fn load_last(run_dir: &Path, vs: &nn::VarStore, optimizer: &mut dyn Optimizer) -> Result<LoopState> {
    let pair = read_last(run_dir)?;
    checkpoint::copy_into_var_store(vs, &run_dir.join(LAST_CHECKPOINT), &pair.weights)?;
    let optimizer_path = run_dir.join(pair.optimizer_file);
    let saved = pair.saved_state(optimizer)?;
    optimizer
        .load_state(&saved)
        .with_context(|| format!("cannot restore the optimizer from {}", optimizer_path.display()))?;
    settle_pair(run_dir, pair.optimizer_file)?;
    Ok(pair.state)
}

/// Refuses a resume whose schedule would not be the saved one's continuation: a changed
/// `--epochs` changes the length of a cosine or one-cycle schedule.
fn check_schedule(run: &RunDir, saved: Option<&LrScheduler>, fresh: Option<&LrScheduler>) -> Result<()> {
    match (saved, fresh) {
        (Some(saved), Some(fresh)) if saved.horizon() != fresh.horizon() => bail!(
            "cannot resume {}: its learning-rate schedule spans {} steps, and the new --epochs would make it {}; \
             resume with the --epochs the run started with",
            run.path.display(),
            saved.horizon().map_or("an open number of".into(), |h| h.to_string()),
            fresh.horizon().map_or("open".into(), |h| h.to_string()),
        ),
        (None, Some(_)) => {
            bail!("cannot resume {}: its checkpoint has no learning-rate schedule state", run.path.display())
        }
        _ => Ok(()),
    }
}

/// Puts `vs` and `optimizer` where `run` starts, and returns the loop state to start from;
/// `schedule` is the run's schedule as built for a fresh start, which a resumed run's saved
/// one replaces; `build_schedule` builds it again on the optimizer as loaded.
pub fn initial_state(
    run: &RunDir,
    vs: &nn::VarStore,
    optimizer: &mut dyn Optimizer,
    schedule: Option<LrScheduler>,
    build_schedule: &dyn Fn(&mut dyn Optimizer) -> Result<Option<LrScheduler>>,
    log: &mut dyn FnMut(&str),
) -> Result<LoopState> {
    if run.resume {
        let mut state = load_last(&run.path, vs, optimizer)?;
        if state.schedule.is_none() && state.epoch == 0 && state.step == 0 && schedule.is_some() {
            // Saved before the first step (`--epochs 0`, which builds no schedule): the schedule
            // starts now, and sets the first learning rate (a warm-up's) on the loaded optimizer.
            state.schedule = build_schedule(optimizer)?;
        }
        check_schedule(run, state.schedule.as_ref(), schedule.as_ref())?;
        run_dir::check_metrics(&run.path, &state.history)?;
        log(&format!("Resuming {} at epoch {}, step {}", run.path.display(), state.epoch + 1, state.step));
        return Ok(state);
    }
    match &run.start {
        Start::Fresh => Ok(LoopState { schedule, ..LoopState::default() }),
        Start::Weights { path, key } => {
            state_dict::load_into_var_store(vs, path, key.as_deref())?;
            log(&format!("Starting from the weights in {}", path.display()));
            Ok(LoopState { schedule, ..LoopState::default() })
        }
        Start::PytorchCheckpoint { path } => {
            let ckpt = TrainingCheckpoint::read_pytorch(path)?;
            checkpoint::copy_into_var_store(vs, path, &ckpt.model)?;
            optimizer
                .load_state_dict(&ckpt.optimizer)
                .with_context(|| format!("cannot restore the optimizer from {}", path.display()))?;
            let mut schedule = schedule;
            match (schedule.as_mut(), &ckpt.scheduler) {
                (Some(s), Some(state)) => {
                    let ours = s.horizon();
                    s.load_state_dict(state)
                        .with_context(|| format!("cannot restore the schedule from {}", path.display()))?;
                    if s.horizon() != ours {
                        bail!(
                            "{}: the PyTorch run's schedule spans {} steps, and this run's would span {}; \
                             give the --epochs (and --schedule-per) the PyTorch run was made with",
                            path.display(),
                            s.horizon().map_or("an open number of".into(), |h| h.to_string()),
                            ours.map_or("an open number of".into(), |h| h.to_string()),
                        );
                    }
                    if let Some(groups) = ckpt.optimizer.get("param_groups") {
                        s.load_param_group_entries(groups)
                            .with_context(|| format!("cannot restore the schedule from {}", path.display()))?;
                    }
                }
                (None, None) => {}
                (Some(_), None) => bail!(
                    "{} has no 'scheduler' state, but this run has a schedule; leave --schedule and the warm-up out",
                    path.display()
                ),
                (None, Some(_)) => bail!(
                    "{} holds a 'scheduler' state: give the --schedule (and warm-up) the PyTorch run was made with",
                    path.display()
                ),
            }
            log(&format!(
                "Continuing the PyTorch run in {} after epoch {} ({}{})",
                path.display(),
                ckpt.epoch,
                optimizer.name(),
                if schedule.is_some() { " with its schedule" } else { "" }
            ));
            Ok(LoopState { epoch: ckpt.epoch, schedule, ..LoopState::default() })
        }
    }
}

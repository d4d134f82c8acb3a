//! The resume state: the loop's position and sums (`LoopState`), and the crash-consistent pair
//! of files that holds it with the weights.
//!
//! A checkpoint is two files, `last.safetensors` (the weights, loadable by PyTorch as they are)
//! and `last.optim.safetensors` (momentum buffers and the loop state), that carry the same
//! `checkpoint_id`. One rename cannot replace two files, so [`save_last`] keeps the previous
//! momentum file until the new pair is in place:
//!
//! 1. both new files are written to synced temporary files (a full disk fails here, with
//!    nothing replaced);
//! 2. `last.optim.safetensors` is renamed to `previous.optim.safetensors`;
//! 3. the new momentum file, then the new weights, are renamed into place;
//! 4. `previous.optim.safetensors` is removed.
//!
//! Whatever step a crash interrupts, the weights on disk have a momentum file with their id:
//! `last.optim.safetensors` or, between 2 and 3, `previous.optim.safetensors`. [`load_last`]
//! takes whichever matches, so `--resume` always continues from the last complete pair.
//!
//! [`initial_state`] is where every run's first step comes from: that pair, or for a new run
//! fresh weights, given weights (`--init-from`) or a PyTorch training checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::formats::atomic;
use crate::formats::safetensors::{self as checkpoint, CheckpointError, Metadata};
use crate::formats::state_dict;
use crate::formats::training_checkpoint::{SgdSettings, TrainingCheckpoint};
use crate::model;
use crate::train::metrics::{EpochMetrics, EpochSums};
use crate::train::run_dir::{self, RunDir, Start, LAST_CHECKPOINT, LAST_OPTIMIZER, PREVIOUS_OPTIMIZER};
use crate::train::sgd::{Sgd, SgdConfig};

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

/// Saves the weights, momentum buffers and `state` as a crash-consistent pair (see the module
/// header), then `metrics.jsonl`. A failure replaces nothing.
pub fn save_last(run_dir: &Path, vs: &nn::VarStore, sgd: &Sgd, state: &mut LoopState) -> Result<()> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    state.checkpoint_id = format!("{}-{}-{}-{nanos}", state.epoch, state.step, std::process::id());
    let mut meta = Metadata::new();
    meta.insert("checkpoint_id".into(), state.checkpoint_id.clone());
    meta.insert("epoch".into(), state.epoch.to_string());
    meta.insert("step".into(), state.step.to_string());
    let mut optim_meta = meta.clone();
    optim_meta.insert("loop_state".into(), serde_json::to_string(state)?);

    let optim_path = run_dir.join(LAST_OPTIMIZER);
    let weights_path = run_dir.join(LAST_CHECKPOINT);
    let previous_path = run_dir.join(PREVIOUS_OPTIMIZER);
    let write_temp = |path: &Path, bytes: Vec<u8>| {
        atomic::write_synced_temp(path, &bytes).map_err(|e| run_dir::storage_error(path, e))
    };
    // 1. Both files as synced temporaries, one at a time (each is the size of the weights).
    let buffers = sgd.momentum_buffers();
    let bytes = checkpoint::serialize_tensors(&optim_path, buffers.iter().map(|(k, v)| (k.as_str(), v)), &optim_meta)
        .map_err(explain)?;
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

/// The loop state and momentum buffers stored in one momentum file.
fn read_optimizer(path: &Path) -> Result<(LoopState, checkpoint::LoadedTensors)> {
    let optim = checkpoint::load_tensors(path)?;
    let state: LoopState = optim
        .metadata
        .get("loop_state")
        .and_then(|s| serde_json::from_str(s).ok())
        .with_context(|| format!("{} has no valid loop state", path.display()))?;
    Ok((state, optim))
}

/// Leaves the matching momentum file as `last.optim.safetensors` and no other, so that the next
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
struct LastPair {
    weights: BTreeMap<String, tch::Tensor>,
    momentum: BTreeMap<String, tch::Tensor>,
    state: LoopState,
    /// The momentum file that matched the weights.
    momentum_file: &'static str,
}

/// Reads the weights and whichever momentum file carries their `checkpoint_id`.
fn read_last(run_dir: &Path) -> Result<LastPair> {
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
                return Ok(LastPair { weights: weights.tensors, momentum: optim.tensors, state, momentum_file: name })
            }
            Ok(_) => problems.push(format!("{name} belongs to another checkpoint")),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if problems.is_empty() {
        problems.push(format!("{LAST_OPTIMIZER} is missing"));
    }
    bail!(
        "no complete checkpoint in {}: no momentum file matches {LAST_CHECKPOINT} ({})",
        run_dir.display(),
        problems.join("; ")
    )
}

/// Loads the last complete checkpoint pair into `vs` and `sgd` and returns its loop state:
/// the weights, and whichever momentum file carries their `checkpoint_id`.
pub fn load_last(run_dir: &Path, vs: &nn::VarStore, sgd: &mut Sgd) -> Result<LoopState> {
    let pair = read_last(run_dir)?;
    checkpoint::copy_into_var_store(vs, &run_dir.join(LAST_CHECKPOINT), &pair.weights)?;
    let momentum_path = run_dir.join(pair.momentum_file);
    sgd.set_momentum_buffers(&pair.momentum).map_err(|e| anyhow::anyhow!("{}: {e}", momentum_path.display()))?;
    settle_pair(run_dir, pair.momentum_file)?;
    Ok(pair.state)
}

/// Puts `vs` and `sgd` where `run` starts, and returns the loop state to start from.
pub fn initial_state(run: &RunDir, vs: &nn::VarStore, sgd: &mut Sgd, log: &mut dyn FnMut(&str)) -> Result<LoopState> {
    if run.resume {
        let state = load_last(&run.path, vs, sgd)?;
        run_dir::check_metrics(&run.path, &state.history)?;
        log(&format!("Resuming {} at epoch {}, step {}", run.path.display(), state.epoch + 1, state.step));
        return Ok(state);
    }
    match &run.start {
        Start::Fresh => Ok(LoopState::default()),
        Start::Weights { path, key } => {
            state_dict::load_into_var_store(vs, path, key.as_deref())?;
            log(&format!("Starting from the weights in {}", path.display()));
            Ok(LoopState::default())
        }
        Start::PytorchCheckpoint { path } => {
            let ckpt = TrainingCheckpoint::read_pytorch(path, &model::parameter_names())?;
            checkpoint::copy_into_var_store(vs, path, &ckpt.model)?;
            sgd.set_momentum_buffers(&ckpt.momentum).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            log(&format!(
                "Continuing the PyTorch run in {} after epoch {} ({} momentum buffers)",
                path.display(),
                ckpt.epoch,
                ckpt.momentum.len()
            ));
            Ok(LoopState { epoch: ckpt.epoch, ..LoopState::default() })
        }
    }
}

/// The SGD settings of a PyTorch training checkpoint, which a run continuing it must use.
pub fn pytorch_checkpoint_sgd(path: &Path) -> Result<SgdConfig> {
    let ckpt = TrainingCheckpoint::read_pytorch(path, &model::parameter_names())?;
    Ok(SgdConfig { lr: ckpt.sgd.lr, momentum: ckpt.sgd.momentum, weight_decay: ckpt.sgd.weight_decay })
}

/// The last complete checkpoint of a run folder as a PyTorch training checkpoint: weights,
/// momentum, the run's SGD settings and its completed epochs.
pub fn last_as_training_checkpoint(run_dir: &Path, sgd: SgdConfig) -> Result<(TrainingCheckpoint, LoopState)> {
    let pair = read_last(run_dir)?;
    let settings = SgdSettings { lr: sgd.lr, momentum: sgd.momentum, weight_decay: sgd.weight_decay };
    let ckpt =
        TrainingCheckpoint { model: pair.weights, momentum: pair.momentum, sgd: settings, epoch: pair.state.epoch };
    Ok((ckpt, pair.state))
}

//! PyTorch training checkpoints, `{'model': model.state_dict(), 'optimizer':
//! optimizer.state_dict(), 'scheduler': scheduler.state_dict() (optional), 'epoch':
//! completed_epochs}`, in both directions: a run continues in Python from ours (`convert
//! RUN_DIR OUT.pth`), and a Python run continues here (`train --resume FILE.pth`).
//!
//! The optimizer's and the scheduler's state dicts are carried as they are ([`PtValue`]s): the
//! training layer reads and writes them (`Optimizer::load_state_dict`,
//! `LrScheduler::load_state_dict`), so that this layer depends on nothing above it. What it
//! does tell is the optimizer's class, from its `param_groups`' keys ([`PytorchOptimizer`]).
//! The state is indexed by position in `model.parameters()` order;
//! [`crate::model::parameter_names`] gives that order by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::formats::pytorch::{self, PtValue, PytorchError};
use crate::formats::state_dict::{self, WeightsError};

/// Everything a run needs to continue: weights, optimizer and schedule state, position.
#[derive(Debug)]
pub struct TrainingCheckpoint {
    /// The model's state dict (parameters and BatchNorm buffers).
    pub model: BTreeMap<String, Tensor>,
    /// `optimizer.state_dict()`: `{'state': {id: {...}}, 'param_groups': [{...}, ...]}`.
    pub optimizer: PtValue,
    /// `scheduler.state_dict()`, when the run has a schedule.
    pub scheduler: Option<PtValue>,
    /// Epochs completed: a run continues at the next one.
    pub epoch: usize,
}

/// The optimizer class a state dict was written by, told from its `param_groups`' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PytorchOptimizer {
    Sgd,
    Adam,
    AdamW,
}

/// What can go wrong with a training checkpoint; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TrainingCheckpointError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Pytorch(#[from] PytorchError),
    #[error(
        "{path} is not a training checkpoint: {reason} (expected {{'model': model.state_dict(), \
         'optimizer': optimizer.state_dict(), 'epoch': n}}, optionally with 'scheduler')"
    )]
    Layout { path: PathBuf, reason: String },
}

impl TrainingCheckpoint {
    /// Reads a PyTorch training checkpoint and checks its layout (the optimizer's contents are
    /// checked when an optimizer loads them).
    pub fn read_pytorch(path: &Path) -> Result<Self, TrainingCheckpointError> {
        let value = pytorch::load(path)?;
        let layout = |reason: String| TrainingCheckpointError::Layout { path: path.to_path_buf(), reason };
        let model = state_dict::strip_module_prefix(state_dict::select_state_dict(path, &value, Some("model"))?);
        let epoch = match value.get("epoch").map(PtValue::as_int) {
            Some(Some(e)) if e >= 0 => e as usize,
            Some(_) => return Err(layout("'epoch' is not a non-negative integer".into())),
            None => return Err(layout("it has no entry 'epoch' (the number of completed epochs)".into())),
        };
        let (PtValue::Dict(mut items) | PtValue::OrderedDict(mut items)) = value else {
            return Err(layout("it is not a dict".into()));
        };
        let optimizer = take(&mut items, "optimizer").ok_or_else(|| layout("it has no entry 'optimizer'".into()))?;
        let scheduler = take(&mut items, "scheduler").filter(|v| !matches!(v, PtValue::None));
        let ckpt = Self { model, optimizer, scheduler, epoch };
        if ckpt.param_groups().is_empty() {
            return Err(layout("the optimizer has no 'param_groups'".into()));
        }
        ckpt.optimizer_class().map_err(layout)?;
        Ok(ckpt)
    }

    /// The optimizer's `param_groups` (empty when it has none).
    pub fn param_groups(&self) -> &[PtValue] {
        self.optimizer.get("param_groups").and_then(PtValue::as_list).unwrap_or_default()
    }

    /// The optimizer's class: `betas` makes Adam (AdamW with `decoupled_weight_decay=True`,
    /// as torch 2.13 writes AdamW's groups), `momentum` SGD.
    pub fn optimizer_class(&self) -> Result<PytorchOptimizer, String> {
        let group = self.param_groups().first().ok_or("the optimizer has no parameter group")?;
        if group.get("betas").is_some() {
            let decoupled = group.get("decoupled_weight_decay").and_then(PtValue::as_bool) == Some(true);
            Ok(if decoupled { PytorchOptimizer::AdamW } else { PytorchOptimizer::Adam })
        } else if group.get("momentum").is_some() {
            Ok(PytorchOptimizer::Sgd)
        } else {
            Err("the optimizer is neither SGD (no 'momentum') nor Adam/AdamW (no 'betas')".into())
        }
    }

    /// Writes the checkpoint as `torch.save` would, for `model.load_state_dict(ckpt['model'])`,
    /// `optimizer.load_state_dict(ckpt['optimizer'])` and, with a schedule,
    /// `scheduler.load_state_dict(ckpt['scheduler'])` (all strict).
    pub fn write_pytorch(self, path: &Path) -> Result<(), TrainingCheckpointError> {
        let mut entries = vec![
            ("model".into(), PtValue::state_dict(self.model.iter().map(|(k, v)| (k.as_str(), v)))),
            ("optimizer".into(), self.optimizer),
        ];
        if let Some(scheduler) = self.scheduler {
            entries.push(("scheduler".into(), scheduler));
        }
        entries.push(("epoch".into(), PtValue::Int(self.epoch as i64)));
        pytorch::save(path, &PtValue::Dict(entries))?;
        Ok(())
    }
}

/// Removes and returns the value under the string key `key`.
fn take(items: &mut Vec<(PtValue, PtValue)>, key: &str) -> Option<PtValue> {
    let i = items.iter().position(|(k, _)| k.as_str() == Some(key))?;
    Some(items.remove(i).1)
}

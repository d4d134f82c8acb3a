//! PyTorch training checkpoints, `{'model': model.state_dict(), 'optimizer':
//! optimizer.state_dict(), 'epoch': completed_epochs}`, in both directions: a run continues in
//! Python from ours (`convert RUN_DIR OUT.pth`), and a Python run continues here
//! (`train --resume FILE.pth`).
//!
//! `torch.optim.SGD.state_dict()` is `{'state': {i: {'momentum_buffer': t}}, 'param_groups':
//! [{'lr', 'momentum', 'dampening', 'weight_decay', 'nesterov', 'maximize', 'foreach',
//! 'differentiable', 'fused', 'params': [0, 1, ...]}]}`, where `i` indexes the parameters in
//! `model.parameters()` order; [`crate::model::parameter_names`] gives that order by name.
//! Parameters PyTorch has not stepped yet have no state (no momentum buffer), as here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::formats::pytorch::{self, PtValue, PytorchError};
use crate::formats::state_dict::{self, WeightsError};

/// The SGD hyperparameters a checkpoint carries (`param_groups[0]`); the formats layer keeps
/// its own type so that it depends on nothing of the training layer above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdSettings {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// Everything a run needs to continue: weights, momentum, hyperparameters, position.
#[derive(Debug)]
pub struct TrainingCheckpoint {
    /// The model's state dict (parameters and BatchNorm buffers).
    pub model: BTreeMap<String, Tensor>,
    /// Momentum buffers by parameter name (only those that exist).
    pub momentum: BTreeMap<String, Tensor>,
    pub sgd: SgdSettings,
    /// Epochs completed: a run continues at the next one.
    pub epoch: usize,
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
         'optimizer': optimizer.state_dict(), 'epoch': n}} with torch.optim.SGD)"
    )]
    Layout { path: PathBuf, reason: String },
    #[error("{path}: {what} is not supported here (only plain SGD: dampening 0, nesterov False, maximize False)")]
    Unsupported { path: PathBuf, what: String },
}

impl TrainingCheckpoint {
    /// Reads a PyTorch training checkpoint; `parameter_names` is the model's parameters in
    /// `model.parameters()` order, which the optimizer state is indexed by.
    pub fn read_pytorch(path: &Path, parameter_names: &[String]) -> Result<Self, TrainingCheckpointError> {
        let value = pytorch::load(path)?;
        let layout = |reason: String| TrainingCheckpointError::Layout { path: path.to_path_buf(), reason };
        let model = state_dict::strip_module_prefix(state_dict::select_state_dict(path, &value, Some("model"))?);
        let optimizer = value.get("optimizer").ok_or_else(|| layout("it has no entry 'optimizer'".into()))?;
        let epoch = match value.get("epoch").map(PtValue::as_int) {
            Some(Some(e)) if e >= 0 => e as usize,
            Some(_) => return Err(layout("'epoch' is not a non-negative integer".into())),
            None => return Err(layout("it has no entry 'epoch' (the number of completed epochs)".into())),
        };
        let groups = optimizer.get("param_groups").and_then(PtValue::as_list).unwrap_or_default();
        let [group] = groups else {
            return Err(layout(format!("the optimizer has {} parameter groups, one is expected", groups.len())));
        };
        let float = |name: &str| {
            group
                .get(name)
                .and_then(PtValue::as_float)
                .ok_or_else(|| layout(format!("param_groups[0] has no number '{name}'")))
        };
        let sgd = SgdSettings { lr: float("lr")?, momentum: float("momentum")?, weight_decay: float("weight_decay")? };
        let unsupported = |what: String| TrainingCheckpointError::Unsupported { path: path.to_path_buf(), what };
        if group.get("dampening").and_then(PtValue::as_float).is_some_and(|d| d != 0.0) {
            return Err(unsupported("dampening other than 0".into()));
        }
        for flag in ["nesterov", "maximize"] {
            if group.get(flag).and_then(PtValue::as_bool) == Some(true) {
                return Err(unsupported(format!("{flag}=True")));
            }
        }
        let ids: Vec<i64> = group
            .get("params")
            .and_then(PtValue::as_list)
            .map(|l| l.iter().filter_map(PtValue::as_int).collect())
            .unwrap_or_default();
        if ids.len() != parameter_names.len() {
            return Err(layout(format!(
                "the optimizer has {} parameters, the model {}",
                ids.len(),
                parameter_names.len()
            )));
        }
        let mut momentum = BTreeMap::new();
        for (id, state) in optimizer.get("state").and_then(PtValue::as_dict).unwrap_or_default() {
            let position = id.as_int().and_then(|id| ids.iter().position(|&p| p == id));
            let name = position
                .map(|p| parameter_names[p].clone())
                .ok_or_else(|| layout("the optimizer state names a parameter its group does not have".into()))?;
            if let Some(buffer) = state.get("momentum_buffer").and_then(PtValue::as_tensor) {
                momentum.insert(name, buffer.shallow_clone());
            }
        }
        Ok(Self { model, momentum, sgd, epoch })
    }

    /// Writes the checkpoint as `torch.save` would, for `model.load_state_dict(ckpt['model'])`
    /// and `optimizer.load_state_dict(ckpt['optimizer'])` with `torch.optim.SGD` (both strict).
    pub fn write_pytorch(&self, path: &Path, parameter_names: &[String]) -> Result<(), TrainingCheckpointError> {
        let state: Vec<(PtValue, PtValue)> = parameter_names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let buffer = self.momentum.get(name)?;
                let entry = PtValue::Dict(vec![("momentum_buffer".into(), buffer.shallow_clone().into())]);
                Some((PtValue::Int(i as i64), entry))
            })
            .collect();
        let group = PtValue::Dict(vec![
            ("lr".into(), self.sgd.lr.into()),
            ("momentum".into(), self.sgd.momentum.into()),
            ("dampening".into(), PtValue::Int(0)),
            ("weight_decay".into(), self.sgd.weight_decay.into()),
            ("nesterov".into(), false.into()),
            ("maximize".into(), false.into()),
            ("foreach".into(), PtValue::None),
            ("differentiable".into(), false.into()),
            ("fused".into(), PtValue::None),
            ("params".into(), PtValue::List((0..parameter_names.len() as i64).map(PtValue::Int).collect())),
        ]);
        let optimizer = PtValue::Dict(vec![
            ("state".into(), PtValue::Dict(state)),
            ("param_groups".into(), PtValue::List(vec![group])),
        ]);
        let value = PtValue::Dict(vec![
            ("model".into(), PtValue::state_dict(self.model.iter().map(|(k, v)| (k.as_str(), v)))),
            ("optimizer".into(), optimizer),
            ("epoch".into(), PtValue::Int(self.epoch as i64)),
        ]);
        pytorch::save(path, &value)?;
        Ok(())
    }
}

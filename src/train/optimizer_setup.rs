//! The optimizer and learning-rate schedule a run's settings ask for, built as a PyTorch
//! script builds them: the parameters in `model.parameters()` order
//! ([`crate::model::Network::parameter_names`]), one group (or two, without weight decay on biases and
//! BatchNorm), then the schedule on the optimizer.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tch::{nn, Tensor};

use crate::train::config::{OptimizerKind, TrainConfig};
use crate::train::optim::lr_scheduler::{LrScheduler, MomentumKey, ScheduleSpec};
use crate::train::optim::{ordered_parameters, param_groups, Adam, AdamConfig, Optimizer, SavedState, Sgd, SgdConfig};

/// The key under which SGD keeps its per-parameter state (PyTorch's `momentum_buffer`).
const MOMENTUM_BUFFER: &str = "momentum_buffer";

/// The optimizer of `config` over the trainable variables of `vs`, in the order of
/// `parameter_names` (PyTorch's `model.parameters()` order, see [`crate::model::Network`]).
pub fn build_optimizer(
    vs: &nn::VarStore,
    parameter_names: &[String],
    config: &TrainConfig,
) -> Result<Box<dyn Optimizer>> {
    let params = ordered_parameters(vs, parameter_names)?;
    let split = config.no_decay_on_norm_and_bias;
    let optimizer: Box<dyn Optimizer> = match config.optimizer {
        OptimizerKind::Sgd => {
            let sgd = SgdConfig {
                lr: config.lr,
                momentum: config.momentum,
                dampening: config.dampening,
                weight_decay: config.weight_decay,
                nesterov: config.nesterov,
                ..SgdConfig::default()
            };
            Box::new(Sgd::new(param_groups(params, sgd, split))?)
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let base =
                if config.optimizer == OptimizerKind::Adamw { AdamConfig::adamw() } else { AdamConfig::default() };
            let adam = AdamConfig {
                lr: config.lr,
                betas: config.betas,
                eps: config.eps,
                weight_decay: config.weight_decay,
                amsgrad: config.amsgrad,
                ..base
            };
            Box::new(Adam::new(param_groups(params, adam, split))?)
        }
    };
    Ok(optimizer)
}

/// Which key `onecycle` cycles: SGD's momentum or Adam's first beta.
pub fn momentum_key(kind: OptimizerKind) -> MomentumKey {
    match kind {
        OptimizerKind::Sgd => MomentumKey::Momentum,
        OptimizerKind::Adam | OptimizerKind::Adamw => MomentumKey::Betas,
    }
}

/// The schedule of `config` on `optimizer` (whose learning rates its constructor sets, as
/// PyTorch's do), for a run whose ranks take `steps_per_epoch` optimizer steps per epoch;
/// `None` for a constant learning rate.
pub fn build_schedule(
    optimizer: &mut dyn Optimizer,
    config: &TrainConfig,
    steps_per_epoch: usize,
) -> Result<Option<LrScheduler>> {
    if config.schedule == ScheduleSpec::default() || config.epochs == 0 {
        // A constant learning rate; or no step at all, which PyTorch's schedulers refuse.
        return Ok(None);
    }
    config
        .schedule
        .build(optimizer, config.epochs as i64, steps_per_epoch as i64, momentum_key(config.optimizer))
        .context("cannot build the learning-rate schedule")
}

/// The learning rate of every parameter group.
pub fn learning_rates(optimizer: &dyn Optimizer) -> Vec<f64> {
    (0..optimizer.group_count()).map(|g| optimizer.lr(g)).collect()
}

/// SGD's momentum buffers by parameter name (empty for other optimizers): what run folders
/// saved before Adam existed hold, and what tests compare with PyTorch.
pub fn momentum_buffers(optimizer: &dyn Optimizer) -> BTreeMap<String, Tensor> {
    momentum_from_saved(&optimizer.save_state())
}

/// The momentum buffers of a saved SGD state, by parameter name.
pub fn momentum_from_saved(saved: &SavedState) -> BTreeMap<String, Tensor> {
    let suffix = format!(".{MOMENTUM_BUFFER}");
    saved
        .tensors
        .iter()
        .filter_map(|(key, t)| Some((key.strip_suffix(&suffix)?.to_string(), t.shallow_clone())))
        .collect()
}

/// Momentum buffers by parameter name as this crate's saved state of `optimizer` (which must
/// be SGD), with its current settings: how older checkpoints are read.
pub fn momentum_as_saved_state(optimizer: &dyn Optimizer, buffers: &BTreeMap<String, Tensor>) -> Result<SavedState> {
    if optimizer.name() != "SGD" {
        anyhow::bail!(
            "the saved optimizer state holds SGD momentum buffers only (a run made before other optimizers \
             existed), but this run uses {}",
            optimizer.name()
        );
    }
    let mut saved = optimizer.save_state();
    saved.tensors = buffers.iter().map(|(name, t)| (format!("{name}.{MOMENTUM_BUFFER}"), t.shallow_clone())).collect();
    Ok(saved)
}

//! A PyTorch run continued here, and ours handed to PyTorch: the settings a PyTorch training
//! checkpoint (`{'model', 'optimizer', 'scheduler', 'epoch'}`) implies, and a run folder's last
//! checkpoint written as one (what `convert RUN_DIR out.pth` does).

use std::path::Path;

use anyhow::{bail, Result};

use crate::formats::pytorch::PtValue;
use crate::formats::training_checkpoint::{PytorchOptimizer, TrainingCheckpoint};
use crate::train::config::{OptimizerKind, TrainConfig};
use crate::train::experiment::Experiment;
use crate::train::optim::lr_scheduler::LrScheduler;
use crate::train::optim::param_groups::Hyper;
use crate::train::optim::{AdamConfig, SgdConfig};
use crate::train::optimizer_setup;
use crate::train::resume::{read_last, LoopState};

/// `config` with the optimizer of a PyTorch training checkpoint, which a run continuing it
/// must use: its class, its first group's settings (the learning rate before any schedule,
/// `initial_lr`, where a schedule set one), and two groups as "no weight decay on 1-dim
/// parameters".
pub fn config_of_pytorch_checkpoint(path: &Path, config: &TrainConfig) -> Result<TrainConfig> {
    let ckpt = TrainingCheckpoint::read_pytorch(path)?;
    let class = ckpt.optimizer_class().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let groups = ckpt.param_groups();
    let group = &groups[0];
    let bad = |e: String| anyhow::anyhow!("{}: optimizer param_groups[0]: {e}", path.display());
    let mut config = TrainConfig { no_decay_on_norm_and_bias: groups.len() == 2, ..config.clone() };
    if groups.len() > 2 {
        bail!("{}: the optimizer has {} parameter groups; one or two are supported", path.display(), groups.len());
    }
    match class {
        PytorchOptimizer::Sgd => {
            let sgd = SgdConfig::from_pytorch(group).map_err(bad)?;
            config.optimizer = OptimizerKind::Sgd;
            (config.lr, config.momentum, config.weight_decay) = (sgd.lr, sgd.momentum, sgd.weight_decay);
            (config.dampening, config.nesterov) = (sgd.dampening, sgd.nesterov);
        }
        PytorchOptimizer::Adam | PytorchOptimizer::AdamW => {
            let adam = AdamConfig::from_pytorch(group).map_err(bad)?;
            config.optimizer =
                if class == PytorchOptimizer::AdamW { OptimizerKind::Adamw } else { OptimizerKind::Adam };
            (config.lr, config.momentum, config.weight_decay) = (adam.lr, 0.0, adam.weight_decay);
            (config.betas, config.eps, config.amsgrad) = (adam.betas, adam.eps, adam.amsgrad);
            (config.dampening, config.nesterov) = (0.0, false);
        }
    }
    if let Some(initial) = group.get("initial_lr").and_then(PtValue::as_float) {
        config.lr = initial;
    }
    Ok(config)
}

/// The last complete checkpoint of a run folder as a PyTorch training checkpoint: weights,
/// the optimizer's state dict (with the schedule's keys in its `param_groups`, as PyTorch
/// keeps them), the schedule's state dict, and the completed epochs.
pub fn last_as_training_checkpoint(
    experiment: &dyn Experiment,
    run_dir: &Path,
    config: &TrainConfig,
) -> Result<(TrainingCheckpoint, LoopState)> {
    let pair = read_last(run_dir)?;
    let (vs, net) = crate::train::setup::build_network(experiment, config, tch::Device::Cpu, false)?;
    let mut optimizer = optimizer_setup::build_optimizer(&vs, &net.parameter_names(), config)?;
    optimizer.load_state(&pair.saved_state(optimizer.as_ref())?)?;
    let mut state_dict = optimizer.state_dict();
    if let Some(schedule) = &pair.state.schedule {
        merge_group_entries(&mut state_dict, &schedule.param_group_entries());
    }
    let scheduler = pair.state.schedule.as_ref().map(LrScheduler::state_dict);
    let ckpt = TrainingCheckpoint { model: pair.weights, optimizer: state_dict, scheduler, epoch: pair.state.epoch };
    Ok((ckpt, pair.state))
}

/// Writes a schedule's keys (`initial_lr`, …) into each of an optimizer state dict's
/// `param_groups`, before `params` as in PyTorch's (replacing a key the group has already).
fn merge_group_entries(state_dict: &mut PtValue, entries: &[Vec<(&'static str, f64)>]) {
    let PtValue::Dict(items) = state_dict else { return };
    let Some((_, PtValue::List(groups))) = items.iter_mut().find(|(k, _)| k.as_str() == Some("param_groups")) else {
        return;
    };
    for (group, entries) in groups.iter_mut().zip(entries) {
        let PtValue::Dict(keys) = group else { continue };
        for (key, value) in entries {
            match keys.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
                Some((_, v)) => *v = PtValue::Float(*value),
                None => {
                    let at = keys.iter().position(|(k, _)| k.as_str() == Some("params")).unwrap_or(keys.len());
                    keys.insert(at, (PtValue::from(*key), PtValue::Float(*value)));
                }
            }
        }
    }
}

//! `OneCycleLR`, as torch 2.13 writes it: its construction (which sets `initial_lr`, `max_lr`,
//! `min_lr` and, when it cycles momentum, `momentum` or `betas[0]`, `max_momentum` and
//! `base_momentum` in every parameter group) and its `get_lr()`, which interpolates between two
//! of those group entries along `_schedule_phases` and, as a side effect, sets the momentum.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::{exact, GroupEntries, ScheduleError};
use crate::train::optim::LrGroups;

/// `anneal_strategy`: `'cos'` (PyTorch's default) or `'linear'`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnnealStrategy {
    #[default]
    Cos,
    Linear,
}

impl AnnealStrategy {
    /// The name PyTorch stores as `_anneal_func_type`.
    pub fn name(self) -> &'static str {
        match self {
            AnnealStrategy::Cos => "cos",
            AnnealStrategy::Linear => "linear",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [AnnealStrategy::Cos, AnnealStrategy::Linear].into_iter().find(|a| a.name() == name)
    }

    /// `_annealing_cos` / `_annealing_linear`: from `start` to `end` as `pct` goes from 0 to 1.
    fn anneal(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            AnnealStrategy::Cos => {
                let cos_out = (PI * pct).cos() + 1.0;
                end + (start - end) / 2.0 * cos_out
            }
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }
}

/// Which key of the parameter groups holds the momentum that `OneCycleLR` cycles: SGD's
/// `momentum`, or Adam's and AdamW's `betas[0]` (PyTorch's `use_beta1`, which it decides from
/// `'betas' in optimizer.defaults`: the [`LrGroups`] seam cannot tell, so the caller says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MomentumKey {
    #[default]
    Momentum,
    Betas,
}

/// `OneCycleLR`'s arguments, with PyTorch's defaults from [`OneCycleConfig::new`]. The
/// per-group values (`max_lr`, `base_momentum`, `max_momentum`) hold one value for all groups
/// or one per group, as PyTorch's float-or-list.
#[derive(Clone, Debug, PartialEq)]
pub struct OneCycleConfig {
    pub max_lr: Vec<f64>,
    /// PyTorch's `total_steps`, or `epochs * steps_per_epoch`.
    pub total_steps: i64,
    pub pct_start: f64,
    pub anneal_strategy: AnnealStrategy,
    pub cycle_momentum: bool,
    pub base_momentum: Vec<f64>,
    pub max_momentum: Vec<f64>,
    pub div_factor: f64,
    pub final_div_factor: f64,
    pub three_phase: bool,
    pub momentum_key: MomentumKey,
}

impl OneCycleConfig {
    /// `OneCycleLR(optimizer, max_lr, total_steps)` with every other argument at its default:
    /// `pct_start=0.3, anneal_strategy='cos', cycle_momentum=True, base_momentum=0.85,
    /// max_momentum=0.95, div_factor=25, final_div_factor=1e4, three_phase=False`.
    pub fn new(max_lr: f64, total_steps: i64, momentum_key: MomentumKey) -> Self {
        OneCycleConfig {
            max_lr: vec![max_lr],
            total_steps,
            pct_start: 0.3,
            anneal_strategy: AnnealStrategy::Cos,
            cycle_momentum: true,
            base_momentum: vec![0.85],
            max_momentum: vec![0.95],
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            momentum_key,
        }
    }
}

/// A parameter-group key that a phase reads its ends from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKey {
    InitialLr,
    MaxLr,
    MinLr,
    MaxMomentum,
    BaseMomentum,
}

impl EntryKey {
    pub const ALL: [EntryKey; 5] =
        [EntryKey::InitialLr, EntryKey::MaxLr, EntryKey::MinLr, EntryKey::MaxMomentum, EntryKey::BaseMomentum];

    /// The key's name in `param_groups`.
    pub fn name(self) -> &'static str {
        match self {
            EntryKey::InitialLr => "initial_lr",
            EntryKey::MaxLr => "max_lr",
            EntryKey::MinLr => "min_lr",
            EntryKey::MaxMomentum => "max_momentum",
            EntryKey::BaseMomentum => "base_momentum",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One of `_schedule_phases`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    #[serde(with = "exact")]
    pub end_step: f64,
    pub start_lr: EntryKey,
    pub end_lr: EntryKey,
    pub start_momentum: EntryKey,
    pub end_momentum: EntryKey,
}

/// `OneCycleLR`'s own state (what its `state_dict()` holds besides the base scheduler's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OneCycleLr {
    pub total_steps: i64,
    pub phases: Vec<Phase>,
    pub anneal: AnnealStrategy,
    pub cycle_momentum: bool,
    /// `use_beta1`, which PyTorch sets only when `cycle_momentum` is true.
    pub use_beta1: Option<bool>,
}

/// `_format_param`: one value for every group, or exactly one per group.
fn per_group(name: &str, values: &[f64], groups: usize) -> Result<Vec<f64>, ScheduleError> {
    match values.len() {
        1 => Ok(vec![values[0]; groups]),
        n if n == groups => Ok(values.to_vec()),
        n => Err(ScheduleError::Invalid(format!(
            "{name} must have the same length as optimizer.param_groups: {name} has {n} values, \
             param_groups has {groups}"
        ))),
    }
}

fn phase(end_step: f64, lr: [EntryKey; 2], momentum: [EntryKey; 2]) -> Phase {
    Phase { end_step, start_lr: lr[0], end_lr: lr[1], start_momentum: momentum[0], end_momentum: momentum[1] }
}

/// `_schedule_phases` for `total_steps` steps.
fn phases(total_steps: i64, pct_start: f64, three_phase: bool) -> Vec<Phase> {
    use EntryKey::*;
    let total = total_steps as f64;
    let last = (total_steps - 1) as f64;
    if three_phase {
        vec![
            phase(pct_start * total - 1.0, [InitialLr, MaxLr], [MaxMomentum, BaseMomentum]),
            phase(2.0 * pct_start * total - 2.0, [MaxLr, InitialLr], [BaseMomentum, MaxMomentum]),
            phase(last, [InitialLr, MinLr], [MaxMomentum, MaxMomentum]),
        ]
    } else {
        vec![
            phase(pct_start * total - 1.0, [InitialLr, MaxLr], [MaxMomentum, BaseMomentum]),
            phase(last, [MaxLr, MinLr], [BaseMomentum, MaxMomentum]),
        ]
    }
}

impl OneCycleLr {
    /// The part of `OneCycleLR.__init__` before `LRScheduler.__init__`: validates the arguments,
    /// writes `initial_lr`, `max_lr`, `min_lr` (and the momentum entries) into every group, and
    /// sets each group's momentum to `max_momentum`.
    pub fn setup(
        config: &OneCycleConfig,
        groups: &mut dyn LrGroups,
        entries: &mut [GroupEntries],
    ) -> Result<OneCycleLr, ScheduleError> {
        if config.total_steps <= 0 {
            return Err(ScheduleError::Invalid(format!(
                "OneCycleLR: expected positive integer total_steps, but got {}",
                config.total_steps
            )));
        }
        if !(0.0..=1.0).contains(&config.pct_start) {
            return Err(ScheduleError::Invalid(format!(
                "OneCycleLR: expected float between 0 and 1 pct_start, but got {}",
                config.pct_start
            )));
        }
        let n = entries.len();
        let max_lrs = per_group("max_lr", &config.max_lr, n)?;
        for (entry, max_lr) in entries.iter_mut().zip(&max_lrs) {
            let initial_lr = max_lr / config.div_factor;
            entry.initial_lr = Some(initial_lr);
            entry.max_lr = Some(*max_lr);
            entry.min_lr = Some(initial_lr / config.final_div_factor);
        }
        if config.cycle_momentum {
            if (0..n).any(|i| groups.momentum(i).is_none()) {
                return Err(ScheduleError::NoMomentum);
            }
            let max_momentums = per_group("max_momentum", &config.max_momentum, n)?;
            let base_momentums = per_group("base_momentum", &config.base_momentum, n)?;
            for (i, entry) in entries.iter_mut().enumerate() {
                groups.set_momentum(i, max_momentums[i]);
                entry.max_momentum = Some(max_momentums[i]);
                entry.base_momentum = Some(base_momentums[i]);
            }
        }
        Ok(OneCycleLr {
            total_steps: config.total_steps,
            phases: phases(config.total_steps, config.pct_start, config.three_phase),
            anneal: config.anneal_strategy,
            cycle_momentum: config.cycle_momentum,
            use_beta1: config.cycle_momentum.then_some(config.momentum_key == MomentumKey::Betas),
        })
    }

    /// `OneCycleLR.get_lr()` at step `step_num` (`last_epoch`); sets each group's momentum when
    /// it cycles momentum.
    pub fn get_lr(
        &self,
        step_num: i64,
        groups: &mut dyn LrGroups,
        entries: &[GroupEntries],
    ) -> Result<Vec<f64>, ScheduleError> {
        if step_num > self.total_steps {
            return Err(ScheduleError::PastEnd { step: step_num, total_steps: self.total_steps });
        }
        let mut lrs = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let (lr, momentum) = self.at(step_num, entry)?;
            lrs.push(lr);
            if let Some(momentum) = momentum {
                groups.set_momentum(i, momentum);
            }
        }
        Ok(lrs)
    }

    /// The learning rate (and momentum) of one group at `step_num`.
    fn at(&self, step_num: i64, entry: &GroupEntries) -> Result<(f64, Option<f64>), ScheduleError> {
        let step = step_num as f64;
        let mut start_step = 0.0;
        for (i, phase) in self.phases.iter().enumerate() {
            let end_step = phase.end_step;
            if step <= end_step || i == self.phases.len() - 1 {
                if end_step - start_step == 0.0 {
                    return Err(ScheduleError::Invalid(format!(
                        "OneCycleLR: phase {i} is empty (it ends at step {end_step}): float division by zero"
                    )));
                }
                let pct = (step - start_step) / (end_step - start_step);
                let lr = self.anneal.anneal(entry.get(phase.start_lr)?, entry.get(phase.end_lr)?, pct);
                let momentum = match self.cycle_momentum {
                    true => {
                        Some(self.anneal.anneal(entry.get(phase.start_momentum)?, entry.get(phase.end_momentum)?, pct))
                    }
                    false => None,
                };
                return Ok((lr, momentum));
            }
            start_step = phase.end_step;
        }
        Err(ScheduleError::State("OneCycleLR has no _schedule_phases".into()))
    }
}

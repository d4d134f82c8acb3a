//! PyTorch's learning-rate schedules, ported from torch 2.13's `torch/optim/lr_scheduler.py`
//! operation for operation, so that every learning rate is PyTorch's to the last bit: `StepLR`,
//! `MultiStepLR`, `ExponentialLR`, `CosineAnnealingLR`, `LinearLR`, `OneCycleLR` and
//! `SequentialLR` (of any of the others).
//!
//! Each scheduler steps with its own recursive `get_lr()` (what `scheduler.step()` does), not a
//! textbook closed form, whose values drift from PyTorch's in the last bits; the closed forms
//! are used only where PyTorch uses them (`SequentialLR` at a milestone).
//!
//! A schedule acts on an optimizer through [`LrGroups`], as PyTorch's act on
//! `optimizer.param_groups`. Part of its state lives in those groups in PyTorch (`initial_lr`,
//! and `OneCycleLR`'s `max_lr`, `min_lr`, `max_momentum`, `base_momentum`): here the
//! [`LrScheduler`] keeps them ([`GroupEntries`]) and hands them to the optimizer's export
//! ([`LrScheduler::param_group_entries`]) and takes them back from a PyTorch checkpoint's
//! `param_groups` ([`LrScheduler::load_param_group_entries`]).
//!
//! State, both ways: [`LrScheduler::state_dict`] / [`LrScheduler::load_state_dict`] are
//! PyTorch's `scheduler.state_dict()` / `load_state_dict()` as [`PtValue`]s; serde (JSON) is our
//! own format, exact to the bit (floats as round-trip strings).
//!
//! Order when resuming, as PyTorch recommends: build the optimizer, build the schedule (its
//! constructor writes the groups' `lr`), then restore the optimizer's state (its `lr`s and
//! momenta) and the schedule's.
//!
//! - [`rules`] — the chainable schedulers' `get_lr()` and closed forms.
//! - [`one_cycle`] — `OneCycleLR`.
//! - [`leaf`] — the base class's stepping around one scheduler.
//! - [`sequential`] — `SequentialLR`.
//! - [`state_dict`] — the `state_dict()` layouts.
//! - [`spec`] — the `--schedule` strings (`cosine`, `step:30:0.1`, …) and warm-up, per epoch or
//!   per batch.

mod exact;
pub mod leaf;
pub mod one_cycle;
pub mod rules;
pub mod sequential;
pub mod spec;
pub mod state_dict;

use serde::{Deserialize, Serialize};

pub use leaf::{SchedulerConfig, LINEAR_LR_START_FACTOR};
pub use one_cycle::{AnnealStrategy, EntryKey, MomentumKey, OneCycleConfig};
pub use spec::{Decay, ScheduleSpec, SpecError, StepUnit, Warmup, WarmupLength};

use super::LrGroups;
use crate::formats::pytorch::PtValue;
use leaf::{Leaf, Rule};
use sequential::Sequential;

/// What can go wrong building, stepping or restoring a schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
    #[error("OneCycleLR: tried to step {step} times; the specified number of total steps is {total_steps}")]
    PastEnd { step: i64, total_steps: i64 },
    #[error("OneCycleLR with cycle_momentum needs an optimizer with momentum or betas in every parameter group")]
    NoMomentum,
    #[error("the optimizer has {optimizer} parameter groups, the schedule was made for {schedule}")]
    GroupCount { optimizer: usize, schedule: usize },
    #[error("a parameter group has no `{key}` (the schedule's constructor sets it)")]
    MissingEntry { key: &'static str },
    #[error("scheduler state: {0}")]
    State(String),
}

/// The keys a schedule keeps in one of PyTorch's `param_groups` (`None`: absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupEntries {
    #[serde(with = "exact")]
    pub initial_lr: Option<f64>,
    #[serde(with = "exact")]
    pub max_lr: Option<f64>,
    #[serde(with = "exact")]
    pub min_lr: Option<f64>,
    #[serde(with = "exact")]
    pub max_momentum: Option<f64>,
    #[serde(with = "exact")]
    pub base_momentum: Option<f64>,
}

impl GroupEntries {
    fn slot(&mut self, key: EntryKey) -> &mut Option<f64> {
        match key {
            EntryKey::InitialLr => &mut self.initial_lr,
            EntryKey::MaxLr => &mut self.max_lr,
            EntryKey::MinLr => &mut self.min_lr,
            EntryKey::MaxMomentum => &mut self.max_momentum,
            EntryKey::BaseMomentum => &mut self.base_momentum,
        }
    }

    fn value(&self, key: EntryKey) -> Option<f64> {
        match key {
            EntryKey::InitialLr => self.initial_lr,
            EntryKey::MaxLr => self.max_lr,
            EntryKey::MinLr => self.min_lr,
            EntryKey::MaxMomentum => self.max_momentum,
            EntryKey::BaseMomentum => self.base_momentum,
        }
    }

    /// `group[key]`; an error where PyTorch would raise `KeyError`.
    pub fn get(&self, key: EntryKey) -> Result<f64, ScheduleError> {
        self.value(key).ok_or(ScheduleError::MissingEntry { key: key.name() })
    }

    /// The present entries, in the order PyTorch adds them to a group.
    pub fn present(&self) -> Vec<(&'static str, f64)> {
        EntryKey::ALL.into_iter().filter_map(|k| Some((k.name(), self.value(k)?))).collect()
    }
}

/// A scheduler or a `SequentialLR`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Schedule {
    Single(Leaf),
    Sequential(Sequential),
}

/// A learning-rate schedule attached (through [`LrGroups`]) to an optimizer: PyTorch's
/// scheduler object, plus the entries it keeps in the optimizer's `param_groups`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrScheduler {
    schedule: Schedule,
    entries: Vec<GroupEntries>,
}

impl LrScheduler {
    /// `Scheduler(optimizer, ...)` for one scheduler: sets the groups' `initial_lr` (where a
    /// previous schedule did not), does PyTorch's initial step, which writes the groups' `lr`
    /// (and, for `OneCycleLR`, their momentum).
    pub fn new(groups: &mut dyn LrGroups, config: &SchedulerConfig) -> Result<Self, ScheduleError> {
        let mut entries = vec![GroupEntries::default(); groups.group_count()];
        let leaf = Leaf::new(config, groups, &mut entries)?;
        Ok(LrScheduler { schedule: Schedule::Single(leaf), entries })
    }

    /// The schedulers built in order on the same optimizer, then `SequentialLR(optimizer,
    /// schedulers, milestones)`.
    pub fn sequential(
        groups: &mut dyn LrGroups,
        configs: &[SchedulerConfig],
        milestones: Vec<i64>,
    ) -> Result<Self, ScheduleError> {
        let mut entries = vec![GroupEntries::default(); groups.group_count()];
        let sequential = Sequential::new(configs, milestones, groups, &mut entries)?;
        Ok(LrScheduler { schedule: Schedule::Sequential(sequential), entries })
    }

    /// `scheduler.step()`: the next learning rate of every group (and momentum, for
    /// `OneCycleLR`). `OneCycleLR` stepped past `total_steps` is an error, as in PyTorch.
    pub fn step(&mut self, groups: &mut dyn LrGroups) -> Result<(), ScheduleError> {
        if groups.group_count() != self.entries.len() {
            return Err(ScheduleError::GroupCount { optimizer: groups.group_count(), schedule: self.entries.len() });
        }
        match &mut self.schedule {
            Schedule::Single(leaf) => leaf.step(groups, &self.entries),
            Schedule::Sequential(sequential) => sequential.step(groups, &self.entries),
        }
    }

    /// `scheduler.get_last_lr()`.
    pub fn last_lr(&self) -> &[f64] {
        match &self.schedule {
            Schedule::Single(leaf) => &leaf.base.last_lr,
            Schedule::Sequential(sequential) => &sequential.last_lr,
        }
    }

    /// `scheduler.last_epoch`: how many times the schedule has been stepped.
    pub fn last_epoch(&self) -> i64 {
        match &self.schedule {
            Schedule::Single(leaf) => leaf.base.last_epoch,
            Schedule::Sequential(sequential) => sequential.last_epoch,
        }
    }

    /// The schedule's length where it has one that a run's length decides: `T_max` of a
    /// `CosineAnnealingLR`, `total_steps` of a `OneCycleLR` (the last such scheduler's). A
    /// resume that would change it should be refused.
    pub fn horizon(&self) -> Option<i64> {
        self.leaves().iter().rev().find_map(|leaf| match &leaf.rule {
            Rule::CosineAnnealing(r) => Some(r.t_max),
            Rule::OneCycle(r) => Some(r.total_steps),
            _ => None,
        })
    }

    fn leaves(&self) -> &[Leaf] {
        match &self.schedule {
            Schedule::Single(leaf) => std::slice::from_ref(leaf),
            Schedule::Sequential(sequential) => &sequential.schedulers,
        }
    }

    /// What the schedule keeps in each of the optimizer's `param_groups`, in PyTorch's order
    /// (`initial_lr`, then `OneCycleLR`'s `max_lr`, `min_lr`, `max_momentum`,
    /// `base_momentum`): the optimizer's export writes these into its `param_groups`.
    pub fn param_group_entries(&self) -> Vec<Vec<(&'static str, f64)>> {
        self.entries.iter().map(GroupEntries::present).collect()
    }

    /// Reads back, from a PyTorch optimizer state dict's `param_groups` (a list of dicts), the
    /// entries this schedule keeps there. Every key the schedule has must be present.
    pub fn load_param_group_entries(&mut self, param_groups: &PtValue) -> Result<(), ScheduleError> {
        let bad = |m: String| ScheduleError::State(format!("optimizer param_groups: {m}"));
        let list = param_groups.as_list().ok_or_else(|| bad(format!("a {}, not a list", param_groups.type_name())))?;
        if list.len() != self.entries.len() {
            return Err(ScheduleError::GroupCount { optimizer: list.len(), schedule: self.entries.len() });
        }
        let mut entries = self.entries.clone();
        for (group, (entry, dict)) in entries.iter_mut().zip(list).enumerate() {
            for key in EntryKey::ALL {
                let slot = entry.slot(key);
                if slot.is_none() {
                    continue;
                }
                let value =
                    dict.get(key.name()).ok_or_else(|| bad(format!("group {group} has no `{}`", key.name())))?;
                *slot = Some(value.as_float().ok_or_else(|| {
                    bad(format!("group {group}: `{}` is a {}, not a float", key.name(), value.type_name()))
                })?);
            }
        }
        self.entries = entries;
        Ok(())
    }
}

//! One scheduler that is not a container (every one but `SequentialLR`), with the base class's
//! state and stepping: `LRScheduler.__init__` (`initial_lr`, `base_lrs`, the initial step),
//! `step()`, `_update_lr(epoch)` and `_initial_step()`, as torch 2.13 writes them.

use serde::{Deserialize, Serialize};

use super::one_cycle::{OneCycleConfig, OneCycleLr};
use super::rules::{Context, CosineAnnealingLr, ExponentialLr, LinearLr, MultiStepLr, StepLr};
use super::{exact, GroupEntries, ScheduleError};
use crate::train::optim::LrGroups;

/// The arguments of one PyTorch scheduler (its constructor's, after the optimizer).
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerConfig {
    /// `StepLR(step_size, gamma)`.
    StepLr { step_size: i64, gamma: f64 },
    /// `MultiStepLR(milestones, gamma)`.
    MultiStepLr { milestones: Vec<i64>, gamma: f64 },
    /// `ExponentialLR(gamma)`.
    ExponentialLr { gamma: f64 },
    /// `CosineAnnealingLR(T_max, eta_min)`.
    CosineAnnealingLr { t_max: i64, eta_min: f64 },
    /// `LinearLR(start_factor, end_factor, total_iters)`.
    LinearLr { start_factor: f64, end_factor: f64, total_iters: i64 },
    /// `OneCycleLR(...)`.
    OneCycleLr(OneCycleConfig),
}

/// `LinearLR`'s default `start_factor`, `1./3`.
pub const LINEAR_LR_START_FACTOR: f64 = 1.0 / 3.0;

impl SchedulerConfig {
    /// `LinearLR(optimizer, start_factor, total_iters=total_iters)`: a warm-up to the base lr.
    pub fn warmup(start_factor: f64, total_iters: i64) -> Self {
        SchedulerConfig::LinearLr { start_factor, end_factor: 1.0, total_iters }
    }
}

/// A scheduler's own rule and state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    Step(StepLr),
    MultiStep(MultiStepLr),
    Exponential(ExponentialLr),
    CosineAnnealing(CosineAnnealingLr),
    Linear(LinearLr),
    OneCycle(OneCycleLr),
}

impl Rule {
    /// PyTorch's class name, for messages.
    pub fn class_name(&self) -> &'static str {
        match self {
            Rule::Step(_) => "StepLR",
            Rule::MultiStep(_) => "MultiStepLR",
            Rule::Exponential(_) => "ExponentialLR",
            Rule::CosineAnnealing(_) => "CosineAnnealingLR",
            Rule::Linear(_) => "LinearLR",
            Rule::OneCycle(_) => "OneCycleLR",
        }
    }
}

/// `LRScheduler`'s own attributes (`base_lrs`, `last_epoch`, `_step_count`, `_last_lr`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Base {
    #[serde(with = "exact")]
    pub base_lrs: Vec<f64>,
    pub last_epoch: i64,
    pub step_count: i64,
    #[serde(with = "exact")]
    pub last_lr: Vec<f64>,
}

/// A scheduler: its rule and the base class's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Leaf {
    pub rule: Rule,
    pub base: Base,
}

fn invalid(message: String) -> Result<(), ScheduleError> {
    Err(ScheduleError::Invalid(message))
}

/// The checks of PyTorch's constructors, plus those of arguments that PyTorch would only trip
/// over at the first step (a zero `step_size` or `T_max` is a division by zero there).
fn validate(config: &SchedulerConfig) -> Result<(), ScheduleError> {
    match config {
        SchedulerConfig::StepLr { step_size, .. } if *step_size < 1 => {
            invalid(format!("StepLR: step_size must be at least 1, got {step_size}"))
        }
        SchedulerConfig::CosineAnnealingLr { t_max, .. } if *t_max < 1 => {
            invalid(format!("CosineAnnealingLR: T_max must be at least 1, got {t_max}"))
        }
        SchedulerConfig::LinearLr { start_factor, end_factor, total_iters } => {
            if !(*start_factor > 0.0 && *start_factor <= 1.0) {
                return invalid(format!(
                    "LinearLR: starting multiplicative factor expected to be greater than 0 and less or \
                     equal to 1, got {start_factor}"
                ));
            }
            if !(0.0..=1.0).contains(end_factor) {
                return invalid(format!(
                    "LinearLR: ending multiplicative factor expected to be between 0 and 1, got {end_factor}"
                ));
            }
            match *total_iters < 1 {
                true => invalid(format!("LinearLR: total_iters must be at least 1, got {total_iters}")),
                false => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

impl Leaf {
    /// The scheduler's constructor with `last_epoch=-1`: its own setup, then
    /// `LRScheduler.__init__` (`initial_lr` set in each group where it is not yet, `base_lrs`
    /// from them, and the initial step, which leaves `last_epoch` at 0).
    pub fn new(
        config: &SchedulerConfig,
        groups: &mut dyn LrGroups,
        entries: &mut [GroupEntries],
    ) -> Result<Leaf, ScheduleError> {
        validate(config)?;
        let rule = match config {
            SchedulerConfig::StepLr { step_size, gamma } => Rule::Step(StepLr { step_size: *step_size, gamma: *gamma }),
            SchedulerConfig::MultiStepLr { milestones, gamma } => {
                Rule::MultiStep(MultiStepLr { milestones: MultiStepLr::counter(milestones), gamma: *gamma })
            }
            SchedulerConfig::ExponentialLr { gamma } => Rule::Exponential(ExponentialLr { gamma: *gamma }),
            SchedulerConfig::CosineAnnealingLr { t_max, eta_min } => {
                Rule::CosineAnnealing(CosineAnnealingLr { t_max: *t_max, eta_min: *eta_min })
            }
            SchedulerConfig::LinearLr { start_factor, end_factor, total_iters } => Rule::Linear(LinearLr {
                start_factor: *start_factor,
                end_factor: *end_factor,
                total_iters: *total_iters,
            }),
            SchedulerConfig::OneCycleLr(config) => Rule::OneCycle(OneCycleLr::setup(config, groups, entries)?),
        };
        // `group.setdefault("initial_lr", group["lr"])`.
        let base_lrs = entries.iter_mut().enumerate().map(|(i, e)| *e.initial_lr.get_or_insert(groups.lr(i))).collect();
        let mut leaf = Leaf { rule, base: Base { base_lrs, last_epoch: -1, step_count: 0, last_lr: Vec::new() } };
        leaf.initial_step(groups, entries)?;
        Ok(leaf)
    }

    /// `_initial_step()`: `_step_count = 0`, then `step()` in initial mode.
    pub fn initial_step(&mut self, groups: &mut dyn LrGroups, entries: &[GroupEntries]) -> Result<(), ScheduleError> {
        self.base.step_count = 0;
        self.step_as(groups, entries, true)
    }

    /// `step()` (without an epoch: the chainable form).
    pub fn step(&mut self, groups: &mut dyn LrGroups, entries: &[GroupEntries]) -> Result<(), ScheduleError> {
        self.step_as(groups, entries, false)
    }

    fn step_as(
        &mut self,
        groups: &mut dyn LrGroups,
        entries: &[GroupEntries],
        is_initial: bool,
    ) -> Result<(), ScheduleError> {
        self.base.step_count += 1;
        self.base.last_epoch += 1;
        let values = self.get_lr(groups, entries, is_initial)?;
        self.apply(groups, &values);
        Ok(())
    }

    /// `_update_lr(epoch)`: `last_epoch = epoch`, then the closed form where the scheduler has
    /// one (every one here but `OneCycleLR`), else `get_lr()`. `_step_count` is not changed.
    pub fn update_lr_at(
        &mut self,
        epoch: i64,
        groups: &mut dyn LrGroups,
        entries: &[GroupEntries],
    ) -> Result<(), ScheduleError> {
        self.base.last_epoch = epoch;
        let lrs: Vec<f64> = (0..entries.len()).map(|i| groups.lr(i)).collect();
        let c = self.context(&lrs, false);
        let values = match &self.rule {
            Rule::Step(r) => r.closed_form(&c),
            Rule::MultiStep(r) => r.closed_form(&c),
            Rule::Exponential(r) => r.closed_form(&c),
            Rule::CosineAnnealing(r) => r.closed_form(&c),
            Rule::Linear(r) => r.closed_form(&c),
            Rule::OneCycle(_) => self.get_lr(groups, entries, false)?,
        };
        self.apply(groups, &values);
        Ok(())
    }

    fn context<'a>(&'a self, lrs: &'a [f64], is_initial: bool) -> Context<'a> {
        Context {
            last_epoch: self.base.last_epoch,
            step_count: self.base.step_count,
            is_initial,
            base_lrs: &self.base.base_lrs,
            lrs,
        }
    }

    fn get_lr(
        &self,
        groups: &mut dyn LrGroups,
        entries: &[GroupEntries],
        is_initial: bool,
    ) -> Result<Vec<f64>, ScheduleError> {
        let lrs: Vec<f64> = (0..entries.len()).map(|i| groups.lr(i)).collect();
        let c = self.context(&lrs, is_initial);
        Ok(match &self.rule {
            Rule::Step(r) => r.get_lr(&c),
            Rule::MultiStep(r) => r.get_lr(&c),
            Rule::Exponential(r) => r.get_lr(&c),
            Rule::CosineAnnealing(r) => r.get_lr(&c),
            Rule::Linear(r) => r.get_lr(&c),
            Rule::OneCycle(r) => r.get_lr(self.base.last_epoch, groups, entries)?,
        })
    }

    /// Writes the new learning rates into the groups; `_last_lr` is read back from them.
    fn apply(&mut self, groups: &mut dyn LrGroups, values: &[f64]) {
        for (i, lr) in values.iter().enumerate() {
            groups.set_lr(i, *lr);
        }
        self.base.last_lr = (0..values.len()).map(|i| groups.lr(i)).collect();
    }
}

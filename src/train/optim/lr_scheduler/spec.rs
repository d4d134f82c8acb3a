//! The schedule a run asks for on the command line: a decay (`constant`, `cosine`,
//! `step:30:0.1`, `multistep:30,60:0.1`, `exponential:0.95`, `onecycle:0.1`), an optional
//! linear warm-up, and whether it is stepped once per epoch or once per batch. [`ScheduleSpec::build`]
//! turns it into PyTorch's schedulers for a run of a given length:
//!
//! - no warm-up: the decay's scheduler alone (`constant`: none);
//! - a warm-up of `w` steps: `SequentialLR([LinearLR(start_factor, total_iters=w), decay],
//!   milestones=[w])` (`constant`: the `LinearLR` alone), as PyTorch's recipes chain them;
//! - `cosine` anneals over what the warm-up leaves: `T_max = total - w`; `step` and `multistep`
//!   count from the end of the warm-up (PyTorch's `SequentialLR` restarts the next scheduler
//!   at 0); `onecycle` spans the whole run and has its own warm-up, so a second one is refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::leaf::{SchedulerConfig, LINEAR_LR_START_FACTOR};
use super::one_cycle::{MomentumKey, OneCycleConfig};
use super::{LrScheduler, ScheduleError};
use crate::train::optim::LrGroups;

/// What is wrong with a schedule's description.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown schedule `{0}`; expected one of: {USAGE}")]
    Unknown(String),
    #[error("schedule `{spec}`: {reason} (usage: {usage})")]
    Malformed { spec: String, reason: String, usage: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

const USAGE: &str = "constant, cosine[:ETA_MIN], step:STEP_SIZE[:GAMMA], multistep:M1,M2,...[:GAMMA], \
                     exponential:GAMMA, onecycle:MAX_LR";

/// How the learning rate decays over the run (the `--schedule` string).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Decay {
    /// No schedule: the optimizer's learning rate throughout (the recipe's default).
    #[default]
    Constant,
    /// `CosineAnnealingLR(T_max = steps after the warm-up, eta_min)`.
    Cosine { eta_min: f64 },
    /// `StepLR(step_size, gamma)` (gamma defaults to PyTorch's 0.1).
    Step { step_size: i64, gamma: f64 },
    /// `MultiStepLR(milestones, gamma)` (gamma defaults to PyTorch's 0.1).
    MultiStep { milestones: Vec<i64>, gamma: f64 },
    /// `ExponentialLR(gamma)`.
    Exponential { gamma: f64 },
    /// `OneCycleLR(max_lr, total_steps = the whole run)`, PyTorch's other defaults.
    OneCycle { max_lr: f64 },
}

/// Whether the schedule is stepped after every epoch or after every optimizer step (batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepUnit {
    #[default]
    Epoch,
    Batch,
}

impl FromStr for StepUnit {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "epoch" => Ok(StepUnit::Epoch),
            "batch" => Ok(StepUnit::Batch),
            _ => Err(SpecError::Invalid(format!("schedule step unit `{s}`: expected `epoch` or `batch`"))),
        }
    }
}

/// The length of a warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmupLength {
    Epochs(i64),
    /// Optimizer steps (batches); needs a schedule stepped per batch.
    Steps(i64),
}

/// A linear warm-up: `LinearLR(start_factor, end_factor=1, total_iters=length)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warmup {
    pub length: WarmupLength,
    pub start_factor: f64,
}

impl Warmup {
    /// A warm-up with PyTorch's default `start_factor`, 1/3.
    pub fn new(length: WarmupLength) -> Self {
        Warmup { length, start_factor: LINEAR_LR_START_FACTOR }
    }
}

/// A run's whole schedule: decay, warm-up, step unit. Checked when made. The default is the
/// recipe's: a constant learning rate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub decay: Decay,
    pub warmup: Option<Warmup>,
    pub unit: StepUnit,
}

fn malformed(spec: &str, reason: impl Into<String>, usage: &'static str) -> SpecError {
    SpecError::Malformed { spec: spec.to_string(), reason: reason.into(), usage }
}

/// Parses the `:`-separated arguments of one schedule.
struct Args<'a> {
    spec: &'a str,
    usage: &'static str,
    parts: Vec<&'a str>,
}

impl Args<'_> {
    fn count(&self, min: usize, max: usize) -> Result<(), SpecError> {
        let n = self.parts.len();
        if n < min || n > max {
            let expected = if min == max { format!("{min}") } else { format!("{min} to {max}") };
            return Err(malformed(self.spec, format!("{n} arguments, expected {expected}"), self.usage));
        }
        Ok(())
    }

    fn float(&self, i: usize, what: &str, default: f64, min: f64, min_inclusive: bool) -> Result<f64, SpecError> {
        let Some(text) = self.parts.get(i) else { return Ok(default) };
        let value: f64 = text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| malformed(self.spec, format!("{what} `{text}` is not a number"), self.usage))?;
        if value < min || (!min_inclusive && value == min) {
            let bound = if min_inclusive { ">=" } else { ">" };
            return Err(malformed(self.spec, format!("{what} must be {bound} {min}, got {value}"), self.usage));
        }
        Ok(value)
    }

    fn positive_int(&self, text: &str, what: &str) -> Result<i64, SpecError> {
        match text.parse::<i64>() {
            Ok(v) if v >= 1 => Ok(v),
            _ => Err(malformed(self.spec, format!("{what} `{text}` is not a positive integer"), self.usage)),
        }
    }
}

impl FromStr for Decay {
    type Err = SpecError;
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let mut parts = spec.split(':');
        let name = parts.next().unwrap_or_default();
        let usage = match name {
            "constant" => "constant",
            "cosine" => "cosine[:ETA_MIN]",
            "step" => "step:STEP_SIZE[:GAMMA]",
            "multistep" => "multistep:M1,M2,...[:GAMMA]",
            "exponential" => "exponential:GAMMA",
            "onecycle" => "onecycle:MAX_LR",
            _ => return Err(SpecError::Unknown(spec.to_string())),
        };
        let a = Args { spec, usage, parts: parts.collect() };
        Ok(match name {
            "constant" => {
                a.count(0, 0)?;
                Decay::Constant
            }
            "cosine" => {
                a.count(0, 1)?;
                Decay::Cosine { eta_min: a.float(0, "ETA_MIN", 0.0, 0.0, true)? }
            }
            "step" => {
                a.count(1, 2)?;
                Decay::Step {
                    step_size: a.positive_int(a.parts[0], "STEP_SIZE")?,
                    gamma: a.float(1, "GAMMA", 0.1, 0.0, false)?,
                }
            }
            "multistep" => {
                a.count(1, 2)?;
                let milestones =
                    a.parts[0].split(',').map(|m| a.positive_int(m, "milestone")).collect::<Result<Vec<_>, _>>()?;
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(malformed(spec, "the milestones must be increasing", usage));
                }
                Decay::MultiStep { milestones, gamma: a.float(1, "GAMMA", 0.1, 0.0, false)? }
            }
            "exponential" => {
                a.count(1, 1)?;
                Decay::Exponential { gamma: a.float(0, "GAMMA", 0.0, 0.0, false)? }
            }
            _ => {
                a.count(1, 1)?;
                Decay::OneCycle { max_lr: a.float(0, "MAX_LR", 0.0, 0.0, false)? }
            }
        })
    }
}

impl fmt::Display for Decay {
    /// The canonical form, which parses back to the same value (floats print exactly).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Decay::Constant => write!(f, "constant"),
            Decay::Cosine { eta_min } if *eta_min == 0.0 => write!(f, "cosine"),
            Decay::Cosine { eta_min } => write!(f, "cosine:{eta_min}"),
            Decay::Step { step_size, gamma } => write!(f, "step:{step_size}:{gamma}"),
            Decay::MultiStep { milestones, gamma } => {
                let list: Vec<String> = milestones.iter().map(i64::to_string).collect();
                write!(f, "multistep:{}:{gamma}", list.join(","))
            }
            Decay::Exponential { gamma } => write!(f, "exponential:{gamma}"),
            Decay::OneCycle { max_lr } => write!(f, "onecycle:{max_lr}"),
        }
    }
}

impl TryFrom<String> for Decay {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<Decay> for String {
    fn from(d: Decay) -> String {
        d.to_string()
    }
}

impl ScheduleSpec {
    /// Checks that the parts fit together: no warm-up before `onecycle`, a warm-up in steps
    /// only with a schedule stepped per batch, a `start_factor` in (0, 1]. A warm-up of length
    /// 0 is no warm-up.
    pub fn new(decay: Decay, warmup: Option<Warmup>, unit: StepUnit) -> Result<Self, SpecError> {
        let warmup = warmup.filter(|w| !matches!(w.length, WarmupLength::Epochs(0) | WarmupLength::Steps(0)));
        if let Some(w) = &warmup {
            if matches!(decay, Decay::OneCycle { .. }) {
                return Err(SpecError::Invalid(
                    "onecycle has its own warm-up (its first pct_start of the run); drop the warm-up".into(),
                ));
            }
            if let (WarmupLength::Steps(_), StepUnit::Epoch) = (w.length, unit) {
                return Err(SpecError::Invalid(
                    "a warm-up in steps needs a schedule stepped per batch; give the warm-up in epochs".into(),
                ));
            }
            let (WarmupLength::Epochs(n) | WarmupLength::Steps(n)) = w.length;
            if n < 0 {
                return Err(SpecError::Invalid(format!("the warm-up length must not be negative, got {n}")));
            }
            if !(w.start_factor > 0.0 && w.start_factor <= 1.0) {
                return Err(SpecError::Invalid(format!(
                    "the warm-up start factor must be in (0, 1], got {}",
                    w.start_factor
                )));
            }
        }
        Ok(ScheduleSpec { decay, warmup, unit })
    }

    /// How many times the schedule is stepped in a run of `epochs` epochs of `steps_per_epoch`
    /// optimizer steps.
    pub fn total_steps(&self, epochs: i64, steps_per_epoch: i64) -> i64 {
        match self.unit {
            StepUnit::Epoch => epochs,
            StepUnit::Batch => epochs.saturating_mul(steps_per_epoch),
        }
    }

    /// The warm-up's length in the schedule's steps (0 without one).
    pub fn warmup_steps(&self, steps_per_epoch: i64) -> i64 {
        match (self.warmup.map(|w| w.length), self.unit) {
            (None, _) => 0,
            (Some(WarmupLength::Epochs(n)), StepUnit::Epoch) | (Some(WarmupLength::Steps(n)), _) => n,
            (Some(WarmupLength::Epochs(n)), StepUnit::Batch) => n.saturating_mul(steps_per_epoch),
        }
    }

    /// The decay's scheduler for a run of `total` steps, `warmup` of which are the warm-up.
    fn decay_config(&self, total: i64, warmup: i64, momentum_key: MomentumKey) -> Option<SchedulerConfig> {
        Some(match &self.decay {
            Decay::Constant => return None,
            Decay::Cosine { eta_min } => {
                SchedulerConfig::CosineAnnealingLr { t_max: total - warmup, eta_min: *eta_min }
            }
            Decay::Step { step_size, gamma } => SchedulerConfig::StepLr { step_size: *step_size, gamma: *gamma },
            Decay::MultiStep { milestones, gamma } => {
                SchedulerConfig::MultiStepLr { milestones: milestones.clone(), gamma: *gamma }
            }
            Decay::Exponential { gamma } => SchedulerConfig::ExponentialLr { gamma: *gamma },
            Decay::OneCycle { max_lr } => {
                SchedulerConfig::OneCycleLr(OneCycleConfig::new(*max_lr, total, momentum_key))
            }
        })
    }

    /// PyTorch's schedulers for a run of `epochs` epochs of `steps_per_epoch` optimizer steps,
    /// built on the optimizer's groups (which they change, as PyTorch's constructors do).
    /// `None` for a constant learning rate without warm-up. `momentum_key` says which key
    /// `onecycle` cycles (SGD: `Momentum`, Adam/AdamW: `Betas`).
    pub fn build(
        &self,
        groups: &mut dyn LrGroups,
        epochs: i64,
        steps_per_epoch: i64,
        momentum_key: MomentumKey,
    ) -> Result<Option<LrScheduler>, SpecError> {
        let total = self.total_steps(epochs, steps_per_epoch);
        if total < 1 {
            return Err(SpecError::Invalid(format!(
                "the run has {total} schedule steps ({epochs} epochs of {steps_per_epoch} batches)"
            )));
        }
        let w = self.warmup_steps(steps_per_epoch);
        if w >= total {
            return Err(SpecError::Invalid(format!(
                "the warm-up ({w} steps) must be shorter than the run ({total} steps)"
            )));
        }
        let decay = self.decay_config(total, w, momentum_key);
        let start_factor = self.warmup.map_or(LINEAR_LR_START_FACTOR, |w| w.start_factor);
        let warmup = SchedulerConfig::warmup(start_factor, w);
        Ok(Some(match (w, decay) {
            (0, None) => return Ok(None),
            (0, Some(decay)) => LrScheduler::new(groups, &decay)?,
            (_, None) => LrScheduler::new(groups, &warmup)?,
            (_, Some(decay)) => LrScheduler::sequential(groups, &[warmup, decay], vec![w])?,
        }))
    }
}

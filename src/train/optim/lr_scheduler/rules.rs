//! The chainable schedulers' own `get_lr()` and `_get_closed_form_lr()`, as torch 2.13's
//! `torch/optim/lr_scheduler.py` writes them, operation for operation (the order of the float
//! operations is PyTorch's, so that the values are PyTorch's to the last bit): `StepLR`,
//! `MultiStepLR`, `ExponentialLR`, `CosineAnnealingLR` and `LinearLR`.
//!
//! `get_lr()` is the recursive form that `scheduler.step()` uses: it scales each group's current
//! learning rate. The closed form is used only where PyTorch uses it: when `SequentialLR`
//! reaches a milestone and calls the next scheduler's `_update_lr(0)`.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::exact;

/// `StepLR(step_size, gamma)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLr {
    pub step_size: i64,
    #[serde(with = "exact")]
    pub gamma: f64,
}

/// `MultiStepLR(milestones, gamma)`. PyTorch keeps the milestones as a `Counter` (milestone →
/// how many times it was given, in first-seen order): a milestone given twice decays by gamma².
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiStepLr {
    pub milestones: Vec<(i64, i64)>,
    #[serde(with = "exact")]
    pub gamma: f64,
}

/// `ExponentialLR(gamma)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExponentialLr {
    #[serde(with = "exact")]
    pub gamma: f64,
}

/// `CosineAnnealingLR(T_max, eta_min)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineAnnealingLr {
    pub t_max: i64,
    #[serde(with = "exact")]
    pub eta_min: f64,
}

/// `LinearLR(start_factor, end_factor, total_iters)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearLr {
    #[serde(with = "exact")]
    pub start_factor: f64,
    #[serde(with = "exact")]
    pub end_factor: f64,
    pub total_iters: i64,
}

/// What a chainable `get_lr()` sees: PyTorch's `self.last_epoch`, `self._step_count`,
/// `self._is_initial`, `self.base_lrs` and the groups' current `lr`s.
pub struct Context<'a> {
    pub last_epoch: i64,
    pub step_count: i64,
    pub is_initial: bool,
    pub base_lrs: &'a [f64],
    pub lrs: &'a [f64],
}

impl MultiStepLr {
    /// `Counter(milestones)`: counts, in first-seen order.
    pub fn counter(milestones: &[i64]) -> Vec<(i64, i64)> {
        let mut counter: Vec<(i64, i64)> = Vec::new();
        for &m in milestones {
            match counter.iter_mut().find(|(k, _)| *k == m) {
                Some((_, n)) => *n += 1,
                None => counter.push((m, 1)),
            }
        }
        counter
    }

    fn count(&self, epoch: i64) -> Option<i64> {
        self.milestones.iter().find(|(k, _)| *k == epoch).map(|(_, n)| *n)
    }
}

impl StepLr {
    pub fn get_lr(&self, c: &Context) -> Vec<f64> {
        if c.last_epoch == 0 || c.last_epoch.rem_euclid(self.step_size) != 0 {
            return c.lrs.to_vec();
        }
        c.lrs.iter().map(|lr| lr * self.gamma).collect()
    }

    pub fn closed_form(&self, c: &Context) -> Vec<f64> {
        let exponent = c.last_epoch.div_euclid(self.step_size) as f64;
        c.base_lrs.iter().map(|base_lr| base_lr * self.gamma.powf(exponent)).collect()
    }
}

impl MultiStepLr {
    pub fn get_lr(&self, c: &Context) -> Vec<f64> {
        match self.count(c.last_epoch) {
            None => c.lrs.to_vec(),
            Some(n) => c.lrs.iter().map(|lr| lr * self.gamma.powf(n as f64)).collect(),
        }
    }

    pub fn closed_form(&self, c: &Context) -> Vec<f64> {
        // `bisect_right(sorted(milestones.elements()), last_epoch)`: the milestones, with their
        // repeats, that are <= last_epoch.
        let passed: i64 = self.milestones.iter().filter(|(m, _)| *m <= c.last_epoch).map(|(_, n)| (*n).max(0)).sum();
        c.base_lrs.iter().map(|base_lr| base_lr * self.gamma.powf(passed as f64)).collect()
    }
}

impl ExponentialLr {
    pub fn get_lr(&self, c: &Context) -> Vec<f64> {
        // PyTorch: "when loading from a checkpoint, we don't want _initial_step ... to update
        // the lr one more step ahead of itself".
        if c.is_initial {
            return c.lrs.to_vec();
        }
        c.lrs.iter().map(|lr| lr * self.gamma).collect()
    }

    pub fn closed_form(&self, c: &Context) -> Vec<f64> {
        c.base_lrs.iter().map(|base_lr| base_lr * self.gamma.powf(c.last_epoch as f64)).collect()
    }
}

impl CosineAnnealingLr {
    pub fn get_lr(&self, c: &Context) -> Vec<f64> {
        let (eta_min, t_max) = (self.eta_min, self.t_max as f64);
        let epoch = c.last_epoch as f64;
        if c.is_initial {
            c.lrs.to_vec()
        } else if c.step_count == 1 && c.last_epoch > 0 {
            c.base_lrs
                .iter()
                .map(|base_lr| eta_min + (base_lr - eta_min) * (1.0 + (epoch * PI / t_max).cos()) / 2.0)
                .collect()
        } else if (c.last_epoch - 1 - self.t_max).rem_euclid(2 * self.t_max) == 0 {
            c.lrs
                .iter()
                .zip(c.base_lrs)
                .map(|(lr, base_lr)| lr + (base_lr - eta_min) * (1.0 - (PI / t_max).cos()) / 2.0)
                .collect()
        } else {
            let ratio = (1.0 + (PI * epoch / t_max).cos()) / (1.0 + (PI * (epoch - 1.0) / t_max).cos());
            c.lrs.iter().map(|lr| ratio * (lr - eta_min) + eta_min).collect()
        }
    }

    pub fn closed_form(&self, c: &Context) -> Vec<f64> {
        let (eta_min, t_max) = (self.eta_min, self.t_max as f64);
        let cos = (PI * c.last_epoch as f64 / t_max).cos();
        c.base_lrs.iter().map(|base_lr| eta_min + (base_lr - eta_min) * (1.0 + cos) / 2.0).collect()
    }
}

impl LinearLr {
    pub fn get_lr(&self, c: &Context) -> Vec<f64> {
        if c.last_epoch == 0 {
            return c.lrs.iter().map(|lr| lr * self.start_factor).collect();
        }
        if c.is_initial || c.last_epoch > self.total_iters {
            return c.lrs.to_vec();
        }
        let (start, end) = (self.start_factor, self.end_factor);
        let factor =
            1.0 + (end - start) / (self.total_iters as f64 * start + (c.last_epoch - 1) as f64 * (end - start));
        c.lrs.iter().map(|lr| lr * factor).collect()
    }

    pub fn closed_form(&self, c: &Context) -> Vec<f64> {
        let (start, end, total) = (self.start_factor, self.end_factor, self.total_iters);
        // `(end - start) * min(total, last_epoch) / total`, evaluated left to right as in Python.
        let ramp = (end - start) * self.total_iters.min(c.last_epoch) as f64 / total as f64;
        c.base_lrs.iter().map(|base_lr| base_lr * (start + ramp)).collect()
    }
}

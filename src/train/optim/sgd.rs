//! `torch.optim.SGD`, operation by operation as torch 2.13's `_single_tensor_sgd` (the path it
//! takes on the CPU), with momentum, dampening, Nesterov, weight decay and `maximize`:
//!
//! ```text
//! grad = -grad                                  if maximize
//! grad = grad.add(param, alpha=weight_decay)    if weight_decay != 0
//! if momentum != 0:
//!     buf = grad.detach().clone()               on the first step (no dampening)
//!     buf.mul_(momentum).add_(grad, alpha=1 - dampening)   afterwards
//!     grad = grad.add(buf, alpha=momentum) if nesterov else buf
//! param.add_(grad, alpha=-lr)
//! ```
//!
//! The state is `momentum_buffer` per parameter, only with `momentum != 0`, as in PyTorch.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::optimizer::{like_param, Optim, ParamState, Rule};
use super::param_groups::{bool_key, first_failure, float_key, option_bool_key, option_bool_value, Hyper};
use super::OptimError;
use crate::ffi::optim as ops;
use crate::formats::pytorch::PtValue;

/// The settings of an SGD parameter group, with `torch.optim.SGD`'s names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub maximize: bool,
    /// Carried for PyTorch's `state_dict`; the update is always the single-tensor one.
    pub foreach: Option<bool>,
    /// Carried for PyTorch's `state_dict`; the update is always the single-tensor one, which
    /// differs from PyTorch's fused SGD by float rounding only.
    pub fused: Option<bool>,
}

impl Default for SgdConfig {
    /// `torch.optim.SGD`'s defaults (`lr=1e-3`, no momentum, no weight decay).
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
            foreach: None,
            fused: None,
        }
    }
}

impl Hyper for SgdConfig {
    const KEYS: &'static [&'static str] =
        &["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach", "differentiable", "fused"];
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn momentum(&self) -> Option<f64> {
        Some(self.momentum)
    }
    fn set_momentum(&mut self, momentum: f64) {
        self.momentum = momentum;
    }
    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }
    fn set_weight_decay(&mut self, weight_decay: f64) {
        self.weight_decay = weight_decay;
    }

    fn validate(&self) -> Result<(), String> {
        // The checks and messages of `SGD.__init__`.
        first_failure([
            (self.lr >= 0.0, format!("Invalid learning rate: {}", self.lr)),
            (self.momentum >= 0.0, format!("Invalid momentum value: {}", self.momentum)),
            (self.weight_decay >= 0.0, format!("Invalid weight_decay value: {}", self.weight_decay)),
            (
                !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
                "Nesterov momentum requires a momentum and zero dampening".into(),
            ),
            (
                !(self.fused == Some(true) && self.foreach == Some(true)),
                "`fused` and `foreach` cannot be `True` together.".into(),
            ),
        ])
    }

    fn to_pytorch(&self) -> Vec<(&'static str, PtValue)> {
        vec![
            ("lr", self.lr.into()),
            ("momentum", self.momentum.into()),
            ("dampening", self.dampening.into()),
            ("weight_decay", self.weight_decay.into()),
            ("nesterov", self.nesterov.into()),
            ("maximize", self.maximize.into()),
            ("foreach", option_bool_value(self.foreach)),
            ("differentiable", false.into()),
            ("fused", option_bool_value(self.fused)),
        ]
    }

    fn from_pytorch(group: &PtValue) -> Result<Self, String> {
        if bool_key(group, "differentiable", false)? {
            return Err("differentiable=True is not supported".into());
        }
        Ok(Self {
            lr: float_key(group, "lr")?,
            momentum: float_key(group, "momentum")?,
            dampening: float_key(group, "dampening")?,
            weight_decay: float_key(group, "weight_decay")?,
            nesterov: bool_key(group, "nesterov", false)?,
            maximize: bool_key(group, "maximize", false)?,
            foreach: option_bool_key(group, "foreach")?,
            fused: option_bool_key(group, "fused")?,
        })
    }
}

/// The momentum buffer of one parameter.
#[derive(Debug)]
pub struct SgdState {
    pub momentum_buffer: Tensor,
}

impl ParamState for SgdState {
    type Config = SgdConfig;
    fn entries(&self) -> Vec<(&'static str, &Tensor)> {
        vec![("momentum_buffer", &self.momentum_buffer)]
    }
    fn from_entries(get: &dyn Fn(&str) -> Option<Tensor>, param: &Tensor, _: &SgdConfig) -> Result<Self, String> {
        let buf = get("momentum_buffer").ok_or("it has no tensor 'momentum_buffer'")?;
        Ok(Self { momentum_buffer: like_param(&buf, param).map_err(|e| format!("'momentum_buffer' has {e}"))? })
    }
}

/// The update rule of [`Sgd`].
pub struct SgdRule;

/// `torch.optim.SGD`.
pub type Sgd = Optim<SgdRule>;

impl Rule for SgdRule {
    type Config = SgdConfig;
    type State = SgdState;

    fn name(_: &SgdConfig) -> &'static str {
        "SGD"
    }

    fn step_group(
        c: &SgdConfig,
        params: &mut [(String, Tensor)],
        state: &mut [Option<SgdState>],
    ) -> Result<(), OptimError> {
        for ((_, param), state) in params.iter_mut().zip(state) {
            let grad = param.grad();
            if grad.defined() {
                sgd_update(c, param, grad, state)?;
            }
        }
        Ok(())
    }
}

/// One parameter's update: `_single_tensor_sgd`'s loop body.
fn sgd_update(c: &SgdConfig, param: &mut Tensor, grad: Tensor, state: &mut Option<SgdState>) -> Result<(), OptimError> {
    let mut grad = if c.maximize { grad.neg() } else { grad };
    if c.weight_decay != 0.0 {
        grad = ops::add(&grad, param, c.weight_decay)?;
    }
    if c.momentum != 0.0 {
        match state {
            None => {
                let buf = grad.detach().copy();
                *state = Some(SgdState { momentum_buffer: buf });
            }
            Some(s) => {
                let _ = s.momentum_buffer.g_mul_scalar_(c.momentum);
                ops::add_(&mut s.momentum_buffer, &grad, 1.0 - c.dampening)?;
            }
        }
        let buf = &state.as_ref().expect("set just above").momentum_buffer;
        grad = if c.nesterov { ops::add(&grad, buf, c.momentum)? } else { buf.shallow_clone() };
    }
    ops::add_(param, &grad, -c.lr)?;
    Ok(())
}

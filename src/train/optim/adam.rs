//! `torch.optim.Adam` and `torch.optim.AdamW` (in torch 2.13, AdamW is Adam with
//! `decoupled_weight_decay=True`), operation by operation as `_single_tensor_adam` (PyTorch's
//! CPU default), or with `fused: Some(true)` through the very kernels of
//! `Adam(..., fused=True)` (`torch._fused_adam_` / `_fused_adamw_`: one pass per tensor, about
//! six times faster on the CPU; its results differ from the single-tensor path by float rounding
//! only, as in PyTorch). The single-tensor path, per parameter:
//!
//! ```text
//! grad = -grad if maximize
//! step += 1                                           # a float32 0-dim tensor
//! param.mul_(1 - lr * weight_decay)                   if decoupled (AdamW)
//! grad = grad.add(param, alpha=weight_decay)          otherwise, if weight_decay != 0
//! exp_avg.lerp_(grad, 1 - beta1)
//! exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
//! bias_correction1 = 1 - beta1 ** step                # Python floats (f64)
//! bias_correction2 = 1 - beta2 ** step
//! step_size = lr / bias_correction1
//! bias_correction2_sqrt = bias_correction2 ** 0.5
//! torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)   if amsgrad
//! denom = ((max_exp_avg_sq if amsgrad else exp_avg_sq).sqrt() / bias_correction2_sqrt).add_(eps)
//! param.addcdiv_(exp_avg, denom, value=-step_size)
//! ```

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::optimizer::{like_param, step_tensor, Optim, ParamState, Rule};
use super::param_groups::{bool_key, first_failure, float_key, option_bool_key, option_bool_value, Hyper};
use super::OptimError;
use crate::ffi::optim::{self as ops, FusedAdamScalars, FusedAdamTensors};
use crate::formats::pytorch::PtValue;

/// The settings of an Adam or AdamW parameter group, with PyTorch's names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    pub amsgrad: bool,
    pub maximize: bool,
    /// Carried for PyTorch's `state_dict`; the update is the single-tensor or the fused one.
    pub foreach: Option<bool>,
    /// Carried for PyTorch's `state_dict` (the update is the non-capturable one).
    pub capturable: bool,
    /// `Some(true)`: PyTorch's fused kernels (fast); otherwise the single-tensor path.
    pub fused: Option<bool>,
    /// AdamW's weight decay (`param *= 1 - lr * weight_decay`) instead of Adam's L2 term.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    /// `torch.optim.Adam`'s defaults.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            foreach: None,
            capturable: false,
            fused: None,
            decoupled_weight_decay: false,
        }
    }
}

impl AdamConfig {
    /// `torch.optim.AdamW`'s defaults (weight decay 0.01, decoupled).
    pub fn adamw() -> Self {
        Self { weight_decay: 0.01, decoupled_weight_decay: true, ..Self::default() }
    }

    fn is_fused(&self) -> bool {
        self.fused == Some(true)
    }
}

impl Hyper for AdamConfig {
    const KEYS: &'static [&'static str] = &[
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "amsgrad",
        "maximize",
        "foreach",
        "capturable",
        "differentiable",
        "fused",
        "decoupled_weight_decay",
    ];
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn momentum(&self) -> Option<f64> {
        Some(self.betas.0)
    }
    fn set_momentum(&mut self, momentum: f64) {
        self.betas.0 = momentum;
    }
    fn weight_decay(&self) -> f64 {
        self.weight_decay
    }
    fn set_weight_decay(&mut self, weight_decay: f64) {
        self.weight_decay = weight_decay;
    }

    fn validate(&self) -> Result<(), String> {
        // The checks and messages of `Adam.__init__`.
        let (b1, b2) = self.betas;
        let checks = [
            (self.lr >= 0.0, format!("Invalid learning rate: {}", self.lr)),
            (self.eps >= 0.0, format!("Invalid epsilon value: {}", self.eps)),
            ((0.0..1.0).contains(&b1), format!("Invalid beta parameter at index 0: {b1}")),
            ((0.0..1.0).contains(&b2), format!("Invalid beta parameter at index 1: {b2}")),
            (self.weight_decay >= 0.0, format!("Invalid weight_decay value: {}", self.weight_decay)),
            (
                !(self.is_fused() && self.foreach == Some(true)),
                "`fused` and `foreach` cannot be `True` together.".into(),
            ),
        ];
        first_failure(checks)
    }

    fn to_pytorch(&self) -> Vec<(&'static str, PtValue)> {
        vec![
            ("lr", self.lr.into()),
            ("betas", PtValue::Tuple(vec![self.betas.0.into(), self.betas.1.into()])),
            ("eps", self.eps.into()),
            ("weight_decay", self.weight_decay.into()),
            ("amsgrad", self.amsgrad.into()),
            ("maximize", self.maximize.into()),
            ("foreach", option_bool_value(self.foreach)),
            ("capturable", self.capturable.into()),
            ("differentiable", false.into()),
            ("fused", option_bool_value(self.fused)),
            ("decoupled_weight_decay", self.decoupled_weight_decay.into()),
        ]
    }

    fn from_pytorch(group: &PtValue) -> Result<Self, String> {
        if bool_key(group, "differentiable", false)? {
            return Err("differentiable=True is not supported".into());
        }
        let betas = match group.get("betas").and_then(PtValue::as_list) {
            Some([b1, b2]) => match (b1.as_float(), b2.as_float()) {
                (Some(b1), Some(b2)) => (b1, b2),
                _ => return Err("'betas' does not hold two numbers".into()),
            },
            _ => return Err("it has no 'betas' pair (is it an Adam or AdamW state?)".into()),
        };
        Ok(Self {
            lr: float_key(group, "lr")?,
            betas,
            eps: float_key(group, "eps")?,
            weight_decay: float_key(group, "weight_decay")?,
            amsgrad: bool_key(group, "amsgrad", false)?,
            maximize: bool_key(group, "maximize", false)?,
            foreach: option_bool_key(group, "foreach")?,
            capturable: bool_key(group, "capturable", false)?,
            fused: option_bool_key(group, "fused")?,
            decoupled_weight_decay: bool_key(group, "decoupled_weight_decay", false)?,
        })
    }
}

/// The state of one parameter, as PyTorch keeps it.
#[derive(Debug)]
pub struct AdamState {
    /// Steps taken, a float32 0-dim tensor (on the CPU; on the parameter's device when fused).
    pub step: Tensor,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    /// Only with `amsgrad`.
    pub max_exp_avg_sq: Option<Tensor>,
}

/// Where PyTorch keeps `step`: beside the parameter for the fused and capturable paths, else on
/// the CPU (it is read back as a Python float every step).
fn step_device(param: &Tensor, c: &AdamConfig) -> Device {
    if c.is_fused() || c.capturable {
        param.device()
    } else {
        Device::Cpu
    }
}

impl AdamState {
    /// The state `_init_group` creates at a parameter's first step.
    fn new(param: &Tensor, c: &AdamConfig) -> Self {
        Self {
            step: Tensor::from(0f32).to_device(step_device(param, c)),
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
            max_exp_avg_sq: c.amsgrad.then(|| param.zeros_like()),
        }
    }
}

impl ParamState for AdamState {
    type Config = AdamConfig;
    fn entries(&self) -> Vec<(&'static str, &Tensor)> {
        let mut e = vec![("step", &self.step), ("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)];
        e.extend(self.max_exp_avg_sq.as_ref().map(|t| ("max_exp_avg_sq", t)));
        e
    }

    fn from_entries(get: &dyn Fn(&str) -> Option<Tensor>, param: &Tensor, c: &AdamConfig) -> Result<Self, String> {
        let tensor = |key: &str| {
            let t = get(key).ok_or_else(|| format!("it has no tensor '{key}'"))?;
            like_param(&t, param).map_err(|e| format!("'{key}' has {e}"))
        };
        let step = get("step").ok_or("it has no 'step'")?;
        Ok(Self {
            step: step_tensor(&step, step_device(param, c))?,
            exp_avg: tensor("exp_avg")?,
            exp_avg_sq: tensor("exp_avg_sq")?,
            max_exp_avg_sq: if c.amsgrad { Some(tensor("max_exp_avg_sq")?) } else { None },
        })
    }
}

/// The update rule of [`Adam`].
pub struct AdamRule;

/// `torch.optim.Adam`, or `torch.optim.AdamW` with [`AdamConfig::adamw`].
pub type Adam = Optim<AdamRule>;

impl Rule for AdamRule {
    type Config = AdamConfig;
    type State = AdamState;

    fn name(c: &AdamConfig) -> &'static str {
        if c.decoupled_weight_decay {
            "AdamW"
        } else {
            "Adam"
        }
    }

    fn step_group(
        c: &AdamConfig,
        params: &mut [(String, Tensor)],
        state: &mut [Option<AdamState>],
    ) -> Result<(), OptimError> {
        let mut stepped = Vec::new();
        for ((_, param), state) in params.iter_mut().zip(state.iter_mut()) {
            let grad = param.grad();
            if !grad.defined() {
                continue;
            }
            let s = state.get_or_insert_with(|| AdamState::new(param, c));
            if c.amsgrad && s.max_exp_avg_sq.is_none() {
                // PyTorch fails here too (KeyError 'max_exp_avg_sq').
                let reason = "amsgrad was switched on after the first step: there is no max_exp_avg_sq".into();
                return Err(OptimError::Config { optimizer: Self::name(c), reason });
            }
            if c.is_fused() {
                stepped.push((param.shallow_clone(), grad, &*s));
            } else {
                adam_update(c, param, &grad, s)?;
            }
        }
        if c.is_fused() && !stepped.is_empty() {
            fused_adam(c, &stepped)?;
        }
        Ok(())
    }
}

/// One parameter's update: `_single_tensor_adam`'s loop body (non-capturable branch).
fn adam_update(c: &AdamConfig, param: &mut Tensor, grad: &Tensor, s: &mut AdamState) -> Result<(), OptimError> {
    let (beta1, beta2) = c.betas;
    let mut grad = if c.maximize { grad.neg() } else { grad.shallow_clone() };
    let _ = s.step.g_add_scalar_(1);
    if c.weight_decay != 0.0 {
        if c.decoupled_weight_decay {
            let _ = param.g_mul_scalar_(1.0 - c.lr * c.weight_decay);
        } else {
            grad = ops::add(&grad, param, c.weight_decay)?;
        }
    }
    let _ = s.exp_avg.lerp_(&grad, 1.0 - beta1);
    let _ = s.exp_avg_sq.g_mul_scalar_(beta2);
    ops::addcmul_(&mut s.exp_avg_sq, &grad, &grad, 1.0 - beta2)?;
    // `_get_value(step_t)`: the float32 step as a Python float, then Python's float power (the C
    // library's `pow`, which Rust's `powf` calls too).
    let step = s.step.double_value(&[]);
    let bias_correction1 = 1.0 - beta1.powf(step);
    let bias_correction2 = 1.0 - beta2.powf(step);
    let step_size = c.lr / bias_correction1;
    // `bias_correction2 ** 0.5` is `pow(x, 0.5)` in Python; `black_box` keeps the compiler from
    // turning a constant exponent 0.5 into `sqrt`, which can round differently.
    let bias_correction2_sqrt = bias_correction2.powf(std::hint::black_box(0.5));
    let second_moment = match &mut s.max_exp_avg_sq {
        Some(max) => {
            let _ = max.maximum_out(max, &s.exp_avg_sq);
            &*max
        }
        None => &s.exp_avg_sq,
    };
    let mut denom = second_moment.sqrt().g_div_scalar(bias_correction2_sqrt);
    let _ = denom.g_add_scalar_(c.eps);
    ops::addcdiv_(param, &s.exp_avg, &denom, -step_size)?;
    Ok(())
}

/// `torch.optim.adam._fused_adam` over the stepped parameters of one group.
fn fused_adam(c: &AdamConfig, stepped: &[(Tensor, Tensor, &AdamState)]) -> Result<(), OptimError> {
    for (_, _, s) in stepped {
        let _ = s.step.shallow_clone().g_add_scalar_(1);
    }
    let params: Vec<&Tensor> = stepped.iter().map(|(p, _, _)| p).collect();
    let grads: Vec<&Tensor> = stepped.iter().map(|(_, g, _)| g).collect();
    let exp_avgs: Vec<&Tensor> = stepped.iter().map(|(_, _, s)| &s.exp_avg).collect();
    let exp_avg_sqs: Vec<&Tensor> = stepped.iter().map(|(_, _, s)| &s.exp_avg_sq).collect();
    let max_exp_avg_sqs: Vec<&Tensor> = stepped.iter().filter_map(|(_, _, s)| s.max_exp_avg_sq.as_ref()).collect();
    let steps: Vec<&Tensor> = stepped.iter().map(|(_, _, s)| &s.step).collect();
    let tensors = FusedAdamTensors {
        params: &params,
        grads: &grads,
        exp_avgs: &exp_avgs,
        exp_avg_sqs: &exp_avg_sqs,
        max_exp_avg_sqs: &max_exp_avg_sqs,
        steps: &steps,
    };
    let scalars = FusedAdamScalars {
        lr: c.lr,
        beta1: c.betas.0,
        beta2: c.betas.1,
        weight_decay: c.weight_decay,
        eps: c.eps,
        amsgrad: c.amsgrad,
        maximize: c.maximize,
        decoupled: c.decoupled_weight_decay,
    };
    Ok(ops::fused_adam_(&tensors, scalars)?)
}

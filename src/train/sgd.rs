//! SGD with momentum and weight decay, step for step as `torch.optim.SGD` computes it.
//!
//! tch's `nn::Sgd` wraps libtorch's C++ optimizer, whose momentum buffers cannot be read or
//! restored; `--resume` needs them, so the update is written out here. It follows PyTorch's
//! single-tensor path (`dampening = 0`, no Nesterov):
//!
//! ```text
//! g   = grad + weight_decay * p
//! buf = g                        on the first step
//! buf = momentum * buf + g       afterwards
//! p  -= lr * buf
//! ```

use std::collections::BTreeMap;

use tch::{nn, Tensor};

/// Hyperparameters of [`Sgd`]; defaults are the recipe's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 0.005, momentum: 0.9, weight_decay: 0.005 }
    }
}

/// The optimizer: the trainable parameters of a `VarStore`, by name, and their momentum buffers.
pub struct Sgd {
    config: SgdConfig,
    params: Vec<(String, Tensor)>,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Optimizes every trainable variable of `vs` (weight decay on all of them, as the recipe's
    /// `SGD(model.parameters(), ...)` does).
    pub fn new(vs: &nn::VarStore, config: SgdConfig) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = params.iter().map(|_| None).collect();
        Self { config, params, buffers }
    }

    pub fn config(&self) -> SgdConfig {
        self.config
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Drops the gradients before the next backward pass, as PyTorch's `zero_grad()` does by
    /// default (`set_to_none=True`): until backward, no memory is held for them, and backward
    /// hands its result over instead of adding it to a zeroed tensor.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            crate::ffi::clear_grad(p).expect("libtorch failed to drop a gradient");
        }
    }

    /// Applies one update from the gradients of the last backward pass.
    pub fn step(&mut self) {
        let SgdConfig { lr, momentum, weight_decay } = self.config;
        tch::no_grad(|| {
            for ((_, p), buf) in self.params.iter_mut().zip(self.buffers.iter_mut()) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = if weight_decay != 0.0 { grad.g_add(&(&*p * weight_decay)) } else { grad };
                let update = if momentum != 0.0 {
                    match buf {
                        Some(b) => {
                            let _ = b.g_mul_scalar_(momentum).g_add_(&grad);
                            b.shallow_clone()
                        }
                        None => {
                            let b = grad.detach().copy();
                            *buf = Some(b.shallow_clone());
                            b
                        }
                    }
                } else {
                    grad
                };
                let _ = p.g_add_(&(update * -lr));
            }
        });
    }

    /// The optimized parameters by name (handles on the same tensors), in name order.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.params.iter().map(|(n, p)| (n.clone(), p.shallow_clone())).collect()
    }

    /// The momentum buffers by parameter name (those that exist yet).
    pub fn momentum_buffers(&self) -> BTreeMap<String, Tensor> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|((name, _), b)| b.as_ref().map(|b| (name.clone(), b.shallow_clone())))
            .collect()
    }

    /// Restores momentum buffers saved by [`Sgd::momentum_buffers`]; a name that is not a
    /// parameter, or a wrong shape, is an error.
    pub fn set_momentum_buffers(&mut self, buffers: &BTreeMap<String, Tensor>) -> Result<(), String> {
        let mut restored: Vec<Option<Tensor>> = self.params.iter().map(|_| None).collect();
        for (name, value) in buffers {
            let i = self
                .params
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| format!("momentum buffer for `{name}`, which is not a parameter"))?;
            let p = &self.params[i].1;
            if value.size() != p.size() {
                return Err(format!("momentum buffer `{name}` has shape {:?}, expected {:?}", value.size(), p.size()));
            }
            restored[i] = Some(value.to_device(p.device()).to_kind(p.kind()));
        }
        self.buffers = restored;
        Ok(())
    }
}

//! Gradient clipping by total norm, `torch.nn.utils.clip_grad_norm_` with its defaults
//! (`error_if_nonfinite=False`), operation by operation as torch 2.13 does it on the CPU:
//!
//! ```text
//! norms = [torch.linalg.vector_norm(g, norm_type) for g in grads]     # _foreach_norm
//! total_norm = torch.linalg.vector_norm(torch.stack(norms), norm_type)
//! clip_coef = max_norm / (total_norm + 1e-6)          # Tensor.__rtruediv__: reciprocal() * max_norm
//! clip_coef_clamped = torch.clamp(clip_coef, max=1.0)
//! for g in grads: g.mul_(clip_coef_clamped)           # _foreach_mul_
//! ```
//!
//! As in PyTorch, a non-finite total norm is returned and not an error: the gradients are then
//! multiplied by NaN (or left unchanged by an infinite norm's coefficient 0 → zeroed), and the
//! caller decides, e.g. by skipping the step.

use tch::Tensor;

use crate::ffi::optim::{self as ops, OpError};

/// Scales the gradients of `params` in place so that their total `norm_type`-norm (`2.0`,
/// `1.0`, `f64::INFINITY`, …) is at most `max_norm`; returns the total norm before clipping,
/// a 0-dim tensor (0 when no parameter has a gradient). Parameters without a gradient are
/// skipped.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64, norm_type: f64) -> Result<Tensor, OpError> {
    let mut grads = gradients(params);
    tch::no_grad(|| {
        let total_norm = total_norm(&grads, norm_type)?;
        if grads.is_empty() {
            return Ok(total_norm);
        }
        let clip_coef = total_norm.g_add_scalar(1e-6).reciprocal().g_mul_scalar(max_norm);
        let clip_coef_clamped = clip_coef.clamp_max(1.0);
        for g in &mut grads {
            let _ = g.g_mul_(&clip_coef_clamped.to_device(g.device()));
        }
        Ok(total_norm)
    })
}

/// The total norm of the gradients of `params`, without clipping them
/// (`torch.nn.utils.get_total_norm` of the gradients), e.g. for logging.
pub fn grad_norm(params: &[Tensor], norm_type: f64) -> Result<Tensor, OpError> {
    tch::no_grad(|| total_norm(&gradients(params), norm_type))
}

/// The gradients that exist, as handles on them (scaling one scales the parameter's gradient).
fn gradients(params: &[Tensor]) -> Vec<Tensor> {
    params.iter().map(Tensor::grad).filter(Tensor::defined).collect()
}

/// `_get_total_norm`: the norm of the per-tensor norms, on the first tensor's device.
fn total_norm(tensors: &[Tensor], norm_type: f64) -> Result<Tensor, OpError> {
    let Some(first) = tensors.first() else {
        return Ok(Tensor::from(0f32));
    };
    let device = first.device();
    let norms = tensors
        .iter()
        .map(|g| ops::vector_norm(g, norm_type).map(|n| n.to_device(device)))
        .collect::<Result<Vec<_>, _>>()?;
    ops::vector_norm(&Tensor::stack(&norms, 0), norm_type)
}

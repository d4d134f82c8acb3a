//! `nn.Linear`: AlexNet's, and the general one in PyTorch's order of draws.

use std::borrow::Borrow;

use tch::nn;

use super::init::{bias_bound, kaiming_uniform_bound, symmetric_uniform, torch_default_init};

/// `nn.Linear(n_in, n_out)` (with bias), initialised as PyTorch does, drawing the bias before
/// the weight (AlexNet's order; see the module header). `[N, n_in] → [N, n_out]`.
pub fn linear(p: nn::Path, n_in: i64, n_out: i64) -> nn::Linear {
    let config =
        nn::LinearConfig { ws_init: torch_default_init(n_in), bs_init: Some(torch_default_init(n_in)), bias: true };
    nn::linear(p, n_in, n_out, config)
}

/// `nn.Linear(n_in, n_out, bias=bias)` under `p`, initialised as PyTorch does and in its order:
/// the weight from U(±[`kaiming_uniform_bound`]`(n_in)`), then the bias from U(±1/sqrt(n_in)).
/// `[N, n_in] → [N, n_out]`; `n_in` ≥ 1 (PyTorch's bound 1/sqrt(n_in) is infinite at 0).
pub fn linear_with<'a>(p: impl Borrow<nn::Path<'a>>, n_in: i64, n_out: i64, bias: bool) -> nn::Linear {
    let p = p.borrow();
    let ws = p.var("weight", &[n_out, n_in], symmetric_uniform(kaiming_uniform_bound(n_in)));
    let bs = bias.then(|| p.var("bias", &[n_out], symmetric_uniform(bias_bound(n_in))));
    nn::Linear { ws, bs }
}

//! PyTorch-compatible building blocks: the layers of `torch.nn` that this model is made of,
//! with PyTorch's default initialisation and `state_dict()` names, for porting other networks.
//!
//! tch's own constructors differ from PyTorch's in ways that change training or break
//! checkpoints: its conv and linear weights use Kaiming-uniform with ReLU gain and a zero bias,
//! its BatchNorm weight is drawn uniformly, and its BatchNorm has no `num_batches_tracked`.
//! The functions here build the same tensors as PyTorch:
//!
//! | PyTorch | here | variables under the path |
//! |---|---|---|
//! | `nn.Conv2d(c_in, c_out, k, stride, padding)` | [`conv2d`] | `weight [c_out, c_in, k, k]`, `bias [c_out]` |
//! | `nn.Linear(n_in, n_out)` | [`linear`] | `weight [n_out, n_in]`, `bias [n_out]` |
//! | `nn.BatchNorm2d(c)` | [`BatchNorm2d::new`] | `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked` |
//! | `nn.Dropout(p)` | [`Dropout`] | none |
//! | `nn.MaxPool2d(k, s)` | [`max_pool2d`] | none |
//!
//! Names follow the `nn::Path` they are built under, so `nn.Sequential` indices become path
//! segments: `conv_block1.0.weight` is `conv2d(&p / "conv_block1" / "0", …)`.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// PyTorch's default init for `Conv2d` and `Linear`: `kaiming_uniform_(a = sqrt(5))` for the
/// weight, which reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
pub fn torch_default_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Conv2d(c_in, c_out, kernel, stride, padding)` (square kernel, with bias), initialised as
/// PyTorch does. Input `[N, c_in, H, W]`, output `[N, c_out, H', W']`.
pub fn conv2d(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let fan_in = c_in * kernel * kernel;
    let config = nn::ConvConfig {
        stride,
        padding,
        ws_init: torch_default_init(fan_in),
        bs_init: torch_default_init(fan_in),
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, kernel, config)
}

/// `nn.Linear(n_in, n_out)` (with bias), initialised as PyTorch does. `[N, n_in] → [N, n_out]`.
pub fn linear(p: nn::Path, n_in: i64, n_out: i64) -> nn::Linear {
    let config =
        nn::LinearConfig { ws_init: torch_default_init(n_in), bs_init: Some(torch_default_init(n_in)), bias: true };
    nn::linear(p, n_in, n_out, config)
}

/// `nn.BatchNorm2d(channels)` as PyTorch builds it: weight ones, bias zeros, running stats
/// 0/1, eps 1e-5, momentum 0.1, and the `num_batches_tracked` counter that PyTorch's
/// `load_state_dict(strict=True)` expects. Training mode normalises with the batch statistics
/// and updates the running ones; eval mode uses the running ones.
#[derive(Debug)]
pub struct BatchNorm2d {
    inner: nn::BatchNorm,
    num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    pub fn new(p: nn::Path, channels: i64) -> Self {
        let config =
            nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), bs_init: nn::Init::Const(0.0), ..Default::default() };
        let inner = nn::batch_norm2d(&p, channels, config);
        let counter = Tensor::zeros([], (Kind::Int64, p.device()));
        let num_batches_tracked = p.add("num_batches_tracked", counter, false);
        Self { inner, num_batches_tracked }
    }
}

impl ModuleT for BatchNorm2d {
    /// `[N, C, H, W] → [N, C, H, W]`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            // PyTorch counts every training-mode forward; only used with momentum=None,
            // but kept so that checkpoints carry the same value as PyTorch's.
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
        }
        self.inner.forward_t(xs, train)
    }
}

/// `nn.Dropout(p)`: zeroes each element with probability `p` in training mode and scales the
/// others by `1 / (1 - p)`; the identity in eval mode. Draws from libtorch's generator.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f64,
}

impl ModuleT for Dropout {
    /// Any shape, unchanged.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.dropout(self.p, train)
    }
}

/// `nn.MaxPool2d(kernel, stride)` (no padding, floor mode). `[N, C, H, W] → [N, C, H', W']`.
pub fn max_pool2d(xs: &Tensor, kernel: i64, stride: i64) -> Tensor {
    xs.max_pool2d([kernel, kernel], [stride, stride], [0, 0], [1, 1], false)
}

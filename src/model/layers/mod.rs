//! PyTorch-compatible building blocks: the layers of `torch.nn` that common networks are made
//! of, with PyTorch's default initialisation and `state_dict()` names, for porting networks.
//!
//! tch's own constructors differ from PyTorch's in ways that change training or break
//! checkpoints: its conv and linear weights use Kaiming-uniform with ReLU gain and a zero bias,
//! its BatchNorm weight is drawn uniformly, and its BatchNorm has no `num_batches_tracked`.
//! The functions here build the same tensors as PyTorch:
//!
//! | PyTorch | here | variables under the path |
//! |---|---|---|
//! | `nn.Conv2d(c_in, c_out, k, stride, padding, dilation, groups, bias)` | [`conv2d_with`], [`Conv2dConfig`] | `weight [c_out, c_in/groups, kh, kw]`, `bias [c_out]` if `bias` |
//! | `nn.Conv2d(c_in, c_out, k, stride, padding)` (AlexNet's) | [`conv2d`] | `weight [c_out, c_in, k, k]`, `bias [c_out]` |
//! | `nn.Linear(n_in, n_out, bias)` | [`linear_with`] | `weight [n_out, n_in]`, `bias [n_out]` if `bias` |
//! | `nn.Linear(n_in, n_out)` (AlexNet's) | [`linear`] | `weight [n_out, n_in]`, `bias [n_out]` |
//! | `nn.BatchNorm1d(c)`, `nn.BatchNorm2d(c)` | [`BatchNorm1d::new`], [`BatchNorm2d::new`] | `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked` |
//! | `nn.Dropout(p)` | [`Dropout`] | none |
//! | `nn.MaxPool2d(k, s, padding, dilation, ceil_mode=...)` | [`MaxPool2d`], [`max_pool2d`] | none |
//! | `nn.AvgPool2d(k, s, padding, ceil_mode, count_include_pad, divisor_override)`, `F.avg_pool2d` | [`AvgPool2d`] | none |
//! | `nn.AdaptiveAvgPool2d(size)` | [`AdaptiveAvgPool2d`] | none |
//!
//! [`ParameterOrder`] builds layers and records their parameters' names as it goes: PyTorch's
//! `model.parameters()` order, for a constructor that follows the PyTorch `__init__`.
//!
//! Names follow the `nn::Path` they are built under, so `nn.Sequential` indices become path
//! segments: `conv_block1.0.weight` is `conv2d(&p / "conv_block1" / "0", …)`.
//!
//! Two orders of random draws: [`conv2d`] and [`linear`] draw the bias before the weight (tch's
//! order), which AlexNet was built with and which its bit-for-bit golden runs depend on;
//! [`conv2d_with`] and [`linear_with`] draw the weight, then the bias, with PyTorch's bounds to
//! the last bit, so that a network built of them after `tch::manual_seed(s)` starts from the
//! very numbers PyTorch draws after `torch.manual_seed(s)` (tests/resnet_tests.rs checks it).

mod conv;
mod init;
mod linear;
mod norm;
mod order;
mod pool;

use tch::nn::ModuleT;
use tch::Tensor;

pub use conv::{conv2d, conv2d_with, Conv2dConfig};
pub use init::{bias_bound, kaiming_uniform_bound, torch_default_init, IntOrPair};
pub use linear::{linear, linear_with};
pub use norm::{BatchNorm1d, BatchNorm2d, BatchNormNd};
pub use order::ParameterOrder;
pub use pool::{max_pool2d, AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};

/// Settings of a layer that PyTorch (or libtorch, at the first forward) refuses.
#[derive(Debug, thiserror::Error)]
#[error("{layer}: {reason}")]
pub struct LayerError {
    /// The layer and, for layers with variables, where it is: "Conv2d `layer1.0.conv1`".
    pub layer: String,
    pub reason: String,
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

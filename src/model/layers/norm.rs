//! `nn.BatchNorm1d` and `nn.BatchNorm2d` as PyTorch builds them, `num_batches_tracked` included.

use std::borrow::Borrow;

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// `nn.BatchNorm{D}d(channels)` as PyTorch builds it: weight ones, bias zeros, running stats
/// 0/1, eps 1e-5, momentum 0.1, and the `num_batches_tracked` counter that PyTorch's
/// `load_state_dict(strict=True)` expects. Training mode normalises with the batch statistics
/// and updates the running ones; eval mode uses the running ones. Nothing is drawn at random.
/// (`momentum=None`, `affine=False` and `track_running_stats=False` are not supported.)
#[derive(Debug)]
pub struct BatchNormNd<const D: usize> {
    inner: nn::BatchNorm,
    num_batches_tracked: Tensor,
}

/// `nn.BatchNorm1d(c)`: input `[N, C]` or `[N, C, L]`, normalised per channel.
pub type BatchNorm1d = BatchNormNd<1>;
/// `nn.BatchNorm2d(c)`: input `[N, C, H, W]`, normalised per channel.
pub type BatchNorm2d = BatchNormNd<2>;

impl<const D: usize> BatchNormNd<D> {
    pub fn new<'a>(p: impl Borrow<nn::Path<'a>>, channels: i64) -> Self {
        let p = p.borrow();
        let config =
            nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), bs_init: nn::Init::Const(0.0), ..Default::default() };
        let inner = match D {
            1 => nn::batch_norm1d(p, channels, config),
            2 => nn::batch_norm2d(p, channels, config),
            _ => nn::batch_norm3d(p, channels, config),
        };
        let counter = Tensor::zeros([], (Kind::Int64, p.device()));
        let num_batches_tracked = p.add("num_batches_tracked", counter, false);
        Self { inner, num_batches_tracked }
    }
}

impl<const D: usize> ModuleT for BatchNormNd<D> {
    /// `[N, C, …] → [N, C, …]` (panics, as tch's BatchNorm does, on a rank it does not take).
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

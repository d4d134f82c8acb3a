//! Building layers while recording PyTorch's `model.parameters()` order, which tch's VarStore
//! does not keep and PyTorch's optimizer state is indexed by.

use std::borrow::Borrow;

use tch::nn;

use super::{conv2d_with, linear_with, BatchNorm1d, BatchNorm2d, Conv2dConfig, LayerError};

/// Builds layers and records the names of their trainable parameters in the order they are
/// built. PyTorch's `named_parameters()` lists a module's parameters in registration order
/// (`__init__`'s assignment order, depth first), and each of these layers registers `weight`
/// before `bias`; so a constructor that builds its layers in the order of the PyTorch
/// `__init__` ends with `[n for n, _ in model.named_parameters()]`.
#[derive(Debug, Default)]
pub struct ParameterOrder {
    names: Vec<String>,
}

impl ParameterOrder {
    /// [`conv2d_with`], recording `weight` (and `bias`).
    pub fn conv2d<'a>(
        &mut self,
        p: impl Borrow<nn::Path<'a>>,
        c_in: i64,
        c_out: i64,
        config: Conv2dConfig,
    ) -> Result<nn::Conv2D, LayerError> {
        let conv = conv2d_with(p.borrow(), c_in, c_out, config)?;
        self.record(p.borrow(), &["weight", "bias"][..1 + usize::from(config.bias)]);
        Ok(conv)
    }

    /// [`linear_with`], recording `weight` (and `bias`).
    pub fn linear<'a>(&mut self, p: impl Borrow<nn::Path<'a>>, n_in: i64, n_out: i64, bias: bool) -> nn::Linear {
        let linear = linear_with(p.borrow(), n_in, n_out, bias);
        self.record(p.borrow(), &["weight", "bias"][..1 + usize::from(bias)]);
        linear
    }

    /// [`BatchNorm2d::new`], recording `weight` and `bias` (the buffers are not parameters).
    pub fn batch_norm2d<'a>(&mut self, p: impl Borrow<nn::Path<'a>>, channels: i64) -> BatchNorm2d {
        let bn = BatchNorm2d::new(p.borrow(), channels);
        self.record(p.borrow(), &["weight", "bias"]);
        bn
    }

    /// [`BatchNorm1d::new`], recording `weight` and `bias`.
    pub fn batch_norm1d<'a>(&mut self, p: impl Borrow<nn::Path<'a>>, channels: i64) -> BatchNorm1d {
        let bn = BatchNorm1d::new(p.borrow(), channels);
        self.record(p.borrow(), &["weight", "bias"]);
        bn
    }

    /// The names recorded, in order.
    pub fn into_names(self) -> Vec<String> {
        self.names
    }

    fn record(&mut self, p: &nn::Path, leaves: &[&str]) {
        self.names.extend(leaves.iter().map(|leaf| p.path(leaf)));
    }
}

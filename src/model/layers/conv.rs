//! `nn.Conv2d`: AlexNet's square convolution with bias, and the general one (rectangular
//! kernels, stride, padding, dilation, groups, optional bias).

use std::borrow::Borrow;

use tch::nn;

use super::init::{
    bias_bound, int_or_pair_setters, kaiming_uniform_bound, symmetric_uniform, torch_default_init, IntOrPair,
};
use super::LayerError;

/// `nn.Conv2d(c_in, c_out, kernel, stride, padding)` (square kernel, with bias), initialised as
/// PyTorch does, drawing the bias before the weight (AlexNet's order; see the module header).
/// Input `[N, c_in, H, W]`, output `[N, c_out, H', W']`.
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

/// The keyword arguments of `nn.Conv2d`, with its defaults. Sizes are `[h, w]`; the setters take
/// an int or a pair as PyTorch does: `Conv2dConfig::new(3).stride(2).padding(1).bias(false)` is
/// `nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub kernel: [i64; 2],
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub dilation: [i64; 2],
    pub groups: i64,
    pub bias: bool,
}

impl Conv2dConfig {
    /// `kernel_size` with PyTorch's defaults: stride 1, padding 0, dilation 1, groups 1, bias.
    pub fn new(kernel: impl IntOrPair) -> Self {
        Self { kernel: kernel.pair(), stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, bias: true }
    }

    int_or_pair_setters!(
        stride,
        /// Zero padding on each side (PyTorch's `padding_mode='zeros'`; the other modes and
        /// `padding='same'` are not supported).
        padding,
        dilation,
    );

    pub fn groups(self, groups: i64) -> Self {
        Self { groups, ..self }
    }

    pub fn bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }

    /// What PyTorch's constructor refuses (groups that do not divide the channels), and sizes
    /// that libtorch would refuse at the first forward.
    fn check(&self, c_in: i64, c_out: i64) -> Result<(), String> {
        let positive = [("in_channels", c_in), ("out_channels", c_out), ("groups", self.groups)]
            .into_iter()
            .chain(self.kernel.map(|k| ("kernel_size", k)))
            .chain(self.stride.map(|s| ("stride", s)))
            .chain(self.dilation.map(|d| ("dilation", d)));
        for (name, value) in positive {
            if value < 1 {
                return Err(format!("{name} must be positive, got {value}"));
            }
        }
        if let Some(&pad) = self.padding.iter().find(|&&pad| pad < 0) {
            return Err(format!("padding must be non-negative, got {pad}"));
        }
        if c_in % self.groups != 0 || c_out % self.groups != 0 {
            return Err(format!(
                "in_channels ({c_in}) and out_channels ({c_out}) must be divisible by groups ({})",
                self.groups
            ));
        }
        Ok(())
    }
}

/// `nn.Conv2d(c_in, c_out, **config)` under `p`, initialised as PyTorch does and in its order:
/// the weight from U(±[`kaiming_uniform_bound`]), then the bias from U(±1/sqrt(fan_in)), with
/// fan_in = c_in / groups × kh × kw. Input `[N, c_in, H, W]`, output `[N, c_out, H', W']`.
pub fn conv2d_with<'a>(
    p: impl Borrow<nn::Path<'a>>,
    c_in: i64,
    c_out: i64,
    config: Conv2dConfig,
) -> Result<nn::Conv2D, LayerError> {
    let p = p.borrow();
    config.check(c_in, c_out).map_err(|reason| LayerError {
        layer: format!("Conv2d `{}`", p.components().collect::<Vec<_>>().join(".")),
        reason,
    })?;
    let fan_in = c_in / config.groups * config.kernel[0] * config.kernel[1];
    // tch creates the bias before the weight; building without one and adding it after keeps
    // PyTorch's order of draws.
    let tch_config = nn::ConvConfigND::<[i64; 2]> {
        stride: config.stride,
        padding: config.padding,
        dilation: config.dilation,
        groups: config.groups,
        bias: false,
        ws_init: symmetric_uniform(kaiming_uniform_bound(fan_in)),
        ..Default::default()
    };
    let mut conv = nn::conv(p, c_in, c_out, config.kernel, tch_config);
    if config.bias {
        conv.bs = Some(p.var("bias", &[c_out], symmetric_uniform(bias_bound(fan_in))));
    }
    Ok(conv)
}

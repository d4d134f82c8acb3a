//! Pooling without variables: `nn.MaxPool2d`, `nn.AvgPool2d` (and `F.avg_pool2d`),
//! `nn.AdaptiveAvgPool2d`, with PyTorch's arguments and defaults.
//!
//! Each is a plain value that implements `nn::Module`. Like tch's layers, `forward` panics on
//! settings libtorch refuses; `check()` gives the same refusal as an error beforehand, for
//! settings that come from a user.

use tch::nn::Module;
use tch::Tensor;

use super::init::{int_or_pair_setters, IntOrPair};

/// `nn.MaxPool2d(kernel, stride)` (no padding, floor mode). `[N, C, H, W] → [N, C, H', W']`.
pub fn max_pool2d(xs: &Tensor, kernel: i64, stride: i64) -> Tensor {
    xs.max_pool2d([kernel, kernel], [stride, stride], [0, 0], [1, 1], false)
}

/// `nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False)`; the stride
/// defaults to the kernel, as in PyTorch. `[N, C, H, W] → [N, C, H', W']` (or without N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pub kernel: [i64; 2],
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub dilation: [i64; 2],
    pub ceil_mode: bool,
}

impl MaxPool2d {
    pub fn new(kernel: impl IntOrPair) -> Self {
        let kernel = kernel.pair();
        Self { kernel, stride: kernel, padding: [0, 0], dilation: [1, 1], ceil_mode: false }
    }

    int_or_pair_setters!(
        stride,
        /// Implicit negative-infinity padding on each side, at most half the kernel.
        padding,
        dilation,
    );

    pub fn ceil_mode(self, ceil_mode: bool) -> Self {
        Self { ceil_mode, ..self }
    }

    /// libtorch's refusals: sizes not positive, padding above half the kernel.
    pub fn check(&self) -> Result<(), super::LayerError> {
        check_pool("MaxPool2d", self.kernel, self.stride, self.dilation, self.padding)
    }
}

impl Module for MaxPool2d {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.max_pool2d(self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode)
    }
}

/// `nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
/// divisor_override=None)`, which is also `F.avg_pool2d`; the stride defaults to the kernel.
/// `[N, C, H, W] → [N, C, H', W']` (or without N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    pub kernel: [i64; 2],
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub ceil_mode: bool,
    /// Whether the zero padding counts in the divisor.
    pub count_include_pad: bool,
    /// A fixed divisor in place of the window's size.
    pub divisor_override: Option<i64>,
}

impl AvgPool2d {
    pub fn new(kernel: impl IntOrPair) -> Self {
        let kernel = kernel.pair();
        Self {
            kernel,
            stride: kernel,
            padding: [0, 0],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }

    int_or_pair_setters!(
        stride,
        /// Implicit zero padding on each side, at most half the kernel.
        padding,
    );

    pub fn ceil_mode(self, ceil_mode: bool) -> Self {
        Self { ceil_mode, ..self }
    }

    pub fn count_include_pad(self, count_include_pad: bool) -> Self {
        Self { count_include_pad, ..self }
    }

    pub fn divisor_override(self, divisor: Option<i64>) -> Self {
        Self { divisor_override: divisor, ..self }
    }

    /// libtorch's refusals: sizes not positive, padding above half the kernel, a zero divisor.
    pub fn check(&self) -> Result<(), super::LayerError> {
        check_pool("AvgPool2d", self.kernel, self.stride, [1, 1], self.padding)?;
        match self.divisor_override {
            Some(0) => Err(pool_error("AvgPool2d", "divisor_override must be non-zero".into())),
            _ => Ok(()),
        }
    }
}

impl Module for AvgPool2d {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.avg_pool2d(
            self.kernel,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )
    }
}

/// `nn.AdaptiveAvgPool2d(output_size)`: averages over the windows PyTorch computes so that the
/// output is `output_size` whatever the input. `[N, C, H, W] → [N, C, oh, ow]` (or without N).
/// (`None` for one side, which keeps the input's size there, is not supported.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    pub output_size: [i64; 2],
}

impl AdaptiveAvgPool2d {
    pub fn new(output_size: impl IntOrPair) -> Self {
        Self { output_size: output_size.pair() }
    }

    /// libtorch's refusal: a negative output size.
    pub fn check(&self) -> Result<(), super::LayerError> {
        match self.output_size.iter().find(|&&s| s < 0) {
            Some(s) => Err(pool_error("AdaptiveAvgPool2d", format!("output_size must be non-negative, got {s}"))),
            None => Ok(()),
        }
    }
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.adaptive_avg_pool2d(self.output_size)
    }
}

fn pool_error(layer: &str, reason: String) -> super::LayerError {
    super::LayerError { layer: layer.to_string(), reason }
}

/// The checks libtorch's `pool2d_shape_check` makes of the settings: positive kernel, stride and
/// dilation, and padding between 0 and half the kernel (half the kernel, not of the dilated
/// one, which libtorch also checks, but which is never the smaller).
fn check_pool(
    layer: &str,
    kernel: [i64; 2],
    stride: [i64; 2],
    dilation: [i64; 2],
    padding: [i64; 2],
) -> Result<(), super::LayerError> {
    let sizes = [("kernel_size", kernel), ("stride", stride), ("dilation", dilation)];
    if let Some((name, size)) = sizes.iter().find(|(_, size)| size.iter().any(|&s| s < 1)) {
        return Err(pool_error(layer, format!("{name} must be positive, got {size:?}")));
    }
    for i in 0..2 {
        if padding[i] < 0 || padding[i] > kernel[i] / 2 {
            let reason =
                format!("padding must be between 0 and half the kernel ({}), got {:?}", kernel[i] / 2, padding);
            return Err(pool_error(layer, reason));
        }
    }
    Ok(())
}

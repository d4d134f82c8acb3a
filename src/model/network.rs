//! The seam between the networks and the trainer: what a network must tell about itself beyond
//! `ModuleT`, and the input check the networks share.

use std::ops::RangeInclusive;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::ModelError;

/// A network the trainer can train: a ModuleT with PyTorch's names, and its parameters' names
/// in PyTorch's `model.parameters()` order (tch's VarStore keeps no order; PyTorch's optimizer
/// state is indexed by it).
pub trait Network: ModuleT {
    /// The trainable parameters' `state_dict()` names, in `model.parameters()` order.
    fn parameter_names(&self) -> Vec<String>;

    /// Checks the input batch shape/kind with a clear error (expected [N, C, H, W]).
    fn check_input(&self, xs: &Tensor) -> Result<(), ModelError>;

    /// `forward_t` with the input checked first: a clear error instead of a libtorch shape
    /// error deep inside the network.
    fn try_forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.check_input(xs)?;
        Ok(self.forward_t(xs, train))
    }
}

/// The image batches a network takes: `[N, channels, H, W]` floats with N ≥ 1 and H, W in
/// `sides`.
#[derive(Debug, Clone)]
pub struct ImageBatchSpec {
    /// The network's name in messages ("AlexNet", "ResNet-18").
    pub network: &'static str,
    pub channels: i64,
    pub sides: RangeInclusive<i64>,
    /// What to do about a wrong size (empty, or starting with a space).
    pub hint: &'static str,
}

impl ImageBatchSpec {
    /// The shapes taken, for messages: `[N, 3, 227, 227]`, `[N, 3, H, W] with 25 ≤ H, W ≤ 56`.
    pub fn expected(&self) -> String {
        let (lo, hi, c) = (self.sides.start(), self.sides.end(), self.channels);
        if lo == hi {
            format!("[N, {c}, {lo}, {lo}]")
        } else {
            format!("[N, {c}, H, W] with {lo} ≤ H, W ≤ {hi}")
        }
    }

    /// `Ok` for a batch of this shape in a floating-point kind.
    pub fn check(&self, xs: &Tensor) -> Result<(), ModelError> {
        let size = xs.size();
        let fits = matches!(size[..], [n, c, h, w]
            if n >= 1 && c == self.channels && self.sides.contains(&h) && self.sides.contains(&w));
        if !fits {
            return Err(ModelError::InputShape {
                network: self.network,
                expected: self.expected(),
                got: size,
                hint: self.hint,
            });
        }
        if !xs.is_floating_point() {
            return Err(ModelError::InputKind(xs.kind()));
        }
        Ok(())
    }
}

/// Number of trainable parameters (58,325,066 for AlexNet with 10 classes, 11,173,962 for
/// ResNet-18).
pub fn trainable_parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

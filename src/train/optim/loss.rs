//! The classification loss with label smoothing, `F.cross_entropy(logits, target,
//! label_smoothing=eps)` (= `nn.CrossEntropyLoss(label_smoothing=eps)`): libtorch's own
//! `cross_entropy_loss`, which PyTorch's Python function calls, with a mean over the batch, no
//! class weights and no ignored index (PyTorch's defaults). `label_smoothing = 0` is the plain
//! cross entropy the recipe uses.

use tch::{Reduction, Tensor};

/// PyTorch's default `ignore_index`.
const IGNORE_INDEX: i64 = -100;

/// What [`cross_entropy`] refuses.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("label_smoothing must be in [0, 1], got {0}")]
    Smoothing(f64),
    #[error("cross entropy of logits {logits:?} and targets {targets:?}: {reason}")]
    Shapes { logits: Vec<i64>, targets: Vec<i64>, reason: String },
}

/// The mean cross entropy of `logits` (`[N, C]`) against class indices `targets` (`[N]`),
/// with targets smoothed as `(1 - label_smoothing) * one_hot + label_smoothing / C`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, label_smoothing: f64) -> Result<Tensor, LossError> {
    // PyTorch's own check and message (torch/nn/functional.py raises the same).
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(LossError::Smoothing(label_smoothing));
    }
    logits
        .f_cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, IGNORE_INDEX, label_smoothing)
        .map_err(|e| LossError::Shapes { logits: logits.size(), targets: targets.size(), reason: e.to_string() })
}

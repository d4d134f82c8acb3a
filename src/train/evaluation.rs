//! Evaluation: loss, accuracy and confusion matrix of a model on one split, accumulated on the
//! device and read back once at the end.

use anyhow::{Context, Result};
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::data::batches::Batches;
use crate::ffi::autocast_bf16;

/// What one evaluation pass measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalResult {
    pub images: i64,
    pub loss: f64,
    pub accuracy: f64,
    /// `confusion[true_class][predicted_class]`: image counts.
    pub confusion: Vec<Vec<i64>>,
}

impl EvalResult {
    /// The result of `images` images whose losses add up to `loss_sum`, from a flat
    /// `classes × classes` confusion matrix.
    pub fn from_sums(images: i64, loss_sum: f64, confusion: &[i64], classes: usize) -> Self {
        let confusion: Vec<Vec<i64>> = confusion.chunks(classes.max(1)).map(<[i64]>::to_vec).collect();
        let correct: i64 = (0..classes.min(confusion.len())).map(|c| confusion[c][c]).sum();
        let denom = images.max(1) as f64;
        EvalResult { images, loss: loss_sum / denom, accuracy: correct as f64 / denom, confusion }
    }

    /// Accuracy of each true class (NaN for a class with no image).
    pub fn per_class_accuracy(&self) -> Vec<f64> {
        self.confusion.iter().enumerate().map(|(c, row)| row[c] as f64 / row.iter().sum::<i64>() as f64).collect()
    }
}

/// Runs `model`, a classifier of `classes` classes, in eval mode (running BatchNorm statistics,
/// no dropout) over `batches`.
/// `amp` runs the pass in bf16 autocast on the batches' device (CPU or CUDA). On a terminal a
/// bar shows the batches done and the time left (a pass over 10,000 images takes minutes on a
/// CPU).
pub fn evaluate(model: &dyn ModuleT, classes: i64, batches: Batches<'_>, amp: bool) -> Result<EvalResult> {
    let bar = crate::progress::steps_bar(batches.steps() as u64, "evaluating".to_string());
    let result = evaluate_quietly(model, classes, batches, amp, || bar.inc(1));
    bar.finish_and_clear();
    result
}

/// [`evaluate`] with `on_batch` called after each batch instead of a bar.
pub fn evaluate_quietly(
    model: &dyn ModuleT,
    classes: i64,
    batches: Batches<'_>,
    amp: bool,
    mut on_batch: impl FnMut(),
) -> Result<EvalResult> {
    let device = batches.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    let mut confusion = Tensor::zeros([classes * classes], (Kind::Int64, device));
    let mut images = 0i64;
    // One autocast region around the whole pass: the weights are cast to bf16 once and cached
    // until it ends (they do not change while evaluating), not once per batch.
    autocast_bf16(device, amp, || {
        tch::no_grad(|| {
            for batch in batches {
                let logits = model.forward_t(&batch.images, false).to_kind(Kind::Float);
                let n = batch.labels.size()[0];
                images += n;
                loss_sum += logits.cross_entropy_for_logits(&batch.labels).to_kind(Kind::Double) * n as f64;
                let predicted = logits.argmax(-1, false);
                confusion += (&batch.labels * classes + predicted).bincount::<Tensor>(None, classes * classes);
                on_batch();
            }
        })
    })?;
    let confusion: Vec<i64> =
        Vec::try_from(confusion.to_device(tch::Device::Cpu)).context("reading the confusion counts")?;
    Ok(EvalResult::from_sums(images, loss_sum.double_value(&[]), &confusion, classes as usize))
}

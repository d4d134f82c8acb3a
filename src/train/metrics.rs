//! What a run measures: per-epoch metrics (`metrics.jsonl`), the running sums of the epoch in
//! progress (kept on the device, read about once a second) and the final `summary.json`.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::train::evaluation::EvalResult;

/// The line of `metrics.jsonl` for one epoch (1-based). Without validation images the
/// validation values are NaN, which JSON writes as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_acc: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_acc: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Data-parallel runs: rank 0's seconds spent averaging gradients over the ranks this
    /// epoch, and its steps (absent for one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// The test set's loss and accuracy after this epoch, with `test_every_epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc: Option<f64>,
}

/// Reads `null` (how serde_json writes NaN) back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Sums over the steps done so far in the current epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub loss_sum: f64,
    pub correct: i64,
    pub seen: i64,
    pub train_seconds: f64,
}

impl EpochSums {
    /// These sums followed by `later` ones.
    pub fn plus(&self, later: &EpochSums) -> EpochSums {
        EpochSums {
            loss_sum: self.loss_sum + later.loss_sum,
            correct: self.correct + later.correct,
            seen: self.seen + later.seen,
            train_seconds: self.train_seconds + later.train_seconds,
        }
    }

    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }

    pub fn images_per_sec(&self) -> f64 {
        self.seen as f64 / self.train_seconds.max(1e-9)
    }
}

/// Written at the end as `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub test_acc_best: f64,
    pub test_acc_last: f64,
    pub test_loss_best: f64,
    pub test_loss_last: f64,
    pub test_images: i64,
    pub best_epoch: Option<usize>,
    /// The accuracy the best epoch was chosen by: validation, or without a validation split
    /// the test set's (`test_every_epoch`); `None` when the last epoch is taken as the best.
    pub best_val_acc: Option<f64>,
    pub epochs: usize,
    pub total_seconds: f64,
}

impl Summary {
    /// The test results of the best and the last model, with the run's totals.
    pub fn new(
        best: &EvalResult,
        last: &EvalResult,
        (best_epoch, best_val_acc): (Option<usize>, Option<f64>),
        epochs: usize,
        total_seconds: f64,
    ) -> Self {
        Summary {
            test_acc_best: best.accuracy,
            test_acc_last: last.accuracy,
            test_loss_best: best.loss,
            test_loss_last: last.loss,
            test_images: last.images,
            best_epoch,
            best_val_acc,
            epochs,
            total_seconds,
        }
    }
}

/// Loss and accuracy sums of the current epoch, kept on the device, plus a device-side step
/// counter and the first step whose loss was not finite (-1 while none).
pub struct DeviceSums {
    loss_sum: Tensor,
    correct: Tensor,
    seen: i64,
    step: Tensor,
    first_bad_step: Tensor,
}

impl DeviceSums {
    pub fn new(device: Device, first_step: usize) -> Self {
        Self {
            loss_sum: Tensor::zeros([], (Kind::Double, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            seen: 0,
            step: Tensor::full([], first_step as i64, (Kind::Int64, device)),
            first_bad_step: Tensor::full([], -1, (Kind::Int64, device)),
        }
    }

    pub fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) {
        let n = labels.size()[0];
        self.seen += n;
        tch::no_grad(|| {
            let loss = loss.to_kind(Kind::Double);
            self.loss_sum += &loss * n as f64;
            self.correct += logits.argmax(-1, false).eq_tensor(labels).sum(Kind::Int64);
            let newly_bad = loss.isfinite().logical_not().logical_and(&self.first_bad_step.lt(0));
            self.first_bad_step = self.step.where_self(&newly_bad, &self.first_bad_step);
            self.step += 1;
        });
    }

    /// Reads the device sums (one synchronisation), added to `base` (the sums restored from a
    /// checkpoint). `Err(step)` (0-based) when a step's loss was not finite.
    pub fn read_into(&self, base: &EpochSums, seconds: f64) -> std::result::Result<EpochSums, i64> {
        let bad = self.first_bad_step.int64_value(&[]);
        if bad >= 0 {
            return Err(bad);
        }
        Ok(EpochSums {
            loss_sum: base.loss_sum + self.loss_sum.double_value(&[]),
            correct: base.correct + self.correct.int64_value(&[]),
            seen: base.seen + self.seen,
            train_seconds: base.train_seconds + seconds,
        })
    }
}

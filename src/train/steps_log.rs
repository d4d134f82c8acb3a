//! `steps.jsonl`: one line per optimizer step, `{"epoch", "step", "lr", "loss"}`.
//!
//! - `epoch`: 1-based, as in `metrics.jsonl`;
//! - `step`: the global optimizer step, 1-based (`epoch_index × steps_per_epoch + step`);
//! - `lr`: the learning rate that step used, of the first parameter group (`lr_groups` lists
//!   every group's when there are several);
//! - `loss`: that batch's mean loss (under data parallelism rank 0's batch, not the mean over
//!   the ranks, which would cost a collective per step); `null` when not finite.
//!
//! The losses stay on the device until the loop reads its sums (about once a second, see
//! [`crate::train::trainer`]): [`StepsLog::flush`] then reads all pending ones at once, so a
//! step costs no host synchronisation. A checkpoint is saved after a flush; lines written after
//! the last checkpoint are dropped on resume ([`truncate_after`]), so the file of a resumed run
//! is that of an uninterrupted one. [`StepsLog::flush`] returns the steps it wrote, so that
//! TensorBoard's scalars ([`crate::train::tensorboard`]) are these very values.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// The file's name in the run folder.
pub const STEPS_FILE: &str = "steps.jsonl";

#[derive(Serialize)]
struct Line<'a> {
    epoch: usize,
    step: usize,
    lr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lr_groups: Option<&'a [f64]>,
    loss: f64,
}

/// One step as written to the file: 1-based `epoch`, global 1-based `step`, the learning rate
/// of each parameter group, and the batch's mean loss as read from the device (a loss that is
/// not finite is written as `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub epoch: usize,
    pub step: usize,
    pub lr: Vec<f64>,
    pub loss: f64,
}

/// Steps not written yet: their position and learning rates, and their losses on the device.
pub struct StepsLog {
    /// `None` on ranks other than 0, which write nothing.
    path: Option<PathBuf>,
    pending: Vec<(usize, usize, Vec<f64>)>,
    losses: Vec<Tensor>,
}

impl StepsLog {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, pending: Vec::new(), losses: Vec::new() }
    }

    /// Records a step (1-based `epoch`, global 1-based `step`) whose update used `lr` (per
    /// group); `loss` is the batch's detached loss, left on the device.
    pub fn push(&mut self, epoch: usize, step: usize, lr: Vec<f64>, loss: &Tensor) {
        if self.path.is_some() {
            self.pending.push((epoch, step, lr));
            self.losses.push(loss.shallow_clone());
        }
    }

    /// Reads the pending losses (one synchronisation), appends their lines and returns their
    /// steps (none on ranks other than 0).
    pub fn flush(&mut self) -> Result<Vec<StepRecord>> {
        let Some(path) = &self.path else { return Ok(Vec::new()) };
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let losses = Tensor::stack(&self.losses, 0).to_kind(Kind::Double).to_device(Device::Cpu);
        let losses = Vec::<f64>::try_from(&losses)?;
        let records: Vec<StepRecord> = self
            .pending
            .drain(..)
            .zip(losses)
            .map(|((epoch, step, lr), loss)| StepRecord { epoch, step, lr, loss })
            .collect();
        self.losses.clear();
        let mut text = String::new();
        for r in &records {
            let lr_groups = (r.lr.len() > 1).then_some(r.lr.as_slice());
            let lr = r.lr.first().copied().unwrap_or(f64::NAN);
            let line = Line { epoch: r.epoch, step: r.step, lr, lr_groups, loss: r.loss };
            text.push_str(&serde_json::to_string(&line)?);
            text.push('\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(records)
    }
}

/// Keeps the lines of `dir`'s `steps.jsonl` up to global step `last_step` (the resumed
/// checkpoint's): the steps after it are about to be taken again.
pub fn truncate_after(dir: &Path, last_step: usize) -> Result<()> {
    let path = dir.join(STEPS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let kept: String = text
        .lines()
        .take_while(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step")?.as_u64())
                .is_some_and(|s| s as usize <= last_step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    if kept.len() != text.len() {
        crate::formats::atomic::write_atomically(&path, kept.as_bytes())
            .with_context(|| format!("cannot rewrite {}", path.display()))?;
    }
    Ok(())
}

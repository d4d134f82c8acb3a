//! A run's TensorBoard event file: the trainer's steps, epochs and test results as scalars, with
//! the tags a PyTorch Lightning user knows, and the run's settings and remaining time as text.
//!
//! | tag | when (step axis: the global optimizer step of `steps.jsonl`) | value |
//! |---|---|---|
//! | `train/loss` | every [`log_every`]-th step | that batch's loss, as in `steps.jsonl` |
//! | `lr-SGD` (`lr-SGD/pg1`, `lr-SGD/pg2` with two parameter groups) | idem | the learning rate that step used (LearningRateMonitor's names; `Adam`, `AdamW` likewise) |
//! | `time/images_per_sec` | the last logged step of each read (about once a second), and the session's first | the epoch's throughput so far, as the progress bar shows it |
//! | `train/loss_epoch`, `train/acc`, `val/loss`, `val/acc`, `epoch`, `time/epoch_seconds` (`time/allreduce_seconds`) | the epoch's last step | the epoch's line of `metrics.jsonl` |
//! | `test/acc`, `test/loss`, `test/acc_best`, `test/loss_best` | the run's last step | `summary.json` (the last model, and the best epoch's) |
//! | `config/text_summary` | the file's first step | the settings, as a table |
//! | `eta/text_summary` | each quarter of an epoch | the whole run's remaining time |
//! | `_hparams_/session_start_info` | step 0 of a new run | the settings, for the HPARAMS tab |
//!
//! Values are float32 (TensorBoard's scalars); a value that is not finite (the validation
//! metrics of a run without validation images) is left out. Under data parallelism only rank 0
//! writes, and a step's loss is rank 0's batch's, as in `steps.jsonl`.
//!
//! A resumed run opens a new file that begins with `SessionLog.START` at its first step, so that
//! TensorBoard drops what an earlier file logged after the checkpoint the run resumed from (the
//! steps read after it, before a crash), as `steps.jsonl` is truncated for the same reason.
//! TensorBoard's fast loader (its Rust data server, the default where installed) ignores
//! `SessionLog.START` and drops a curve's points from the first step that the curve logs again:
//! every curve that can hold such points is written again at or before them (the per-step ones
//! from the first step on, the epoch and quarter ones at the same steps), so both loaders show
//! the same curves.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::train::config::TrainConfig;
use crate::train::metrics::{EpochMetrics, Summary};
use crate::train::optim::Optimizer;
use crate::train::run_dir;
use crate::train::steps_log::StepRecord;
use crate::train::tensorboard::event_file::{self, EventFile};
use crate::train::tensorboard::proto::{self, hparam_value::Kind, Event, HParamValue};

/// Points of a per-step curve beyond which steps are thinned out: every step up to 20,000
/// steps (the recipe's 20 epochs are 14,080), about 1.5 MB of events; beyond that every n-th
/// step, so a file stays under about 2 MB for any run. TensorBoard's UI samples 1,000 points
/// per curve anyway (`--samples_per_plugin scalars=N` for more), and `steps.jsonl` has them all.
pub const MAX_POINTS_PER_CURVE: usize = 20_000;

/// Settings that say where a run reads and how many threads it uses, not what it trains: left
/// out of the hyper-parameters.
const LOCAL_SETTINGS: [&str; 3] = ["data_dir", "download", "threads"];

/// Every how many steps the per-step scalars are written for a run of `total_steps`.
pub fn log_every(total_steps: usize) -> usize {
    total_steps.div_ceil(MAX_POINTS_PER_CURVE).max(1)
}

/// The learning-rate tags of Lightning's `LearningRateMonitor`: `lr-<class>`, or with several
/// parameter groups `lr-<class>/pg1`, `lr-<class>/pg2`, ...
pub fn lr_tags(optimizer: &str, groups: usize) -> Vec<String> {
    match groups {
        1 => vec![format!("lr-{optimizer}")],
        n => (1..=n).map(|g| format!("lr-{optimizer}/pg{g}")).collect(),
    }
}

/// Where a run starts, for its event file.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    /// A `--resume` of this run folder (a new file with `SessionLog.START`).
    pub resumed: bool,
    /// Optimizer steps already done (those of the checkpoint the run resumes from).
    pub steps_done: usize,
    pub steps_per_epoch: usize,
}

/// Rank 0's event file (nothing on the other ranks).
#[derive(Debug)]
pub struct RunWriter {
    file: Option<EventFile>,
    lr_tags: Vec<String>,
    log_every: usize,
    steps_per_epoch: usize,
    epochs: usize,
    /// Whether [`RunWriter::log_steps`] has written a step yet in this session.
    logged_a_step: Cell<bool>,
}

impl RunWriter {
    /// A writer that writes nothing (ranks other than 0).
    pub fn disabled() -> Self {
        Self {
            file: None,
            lr_tags: Vec::new(),
            log_every: 1,
            steps_per_epoch: 1,
            epochs: 0,
            logged_a_step: Cell::new(false),
        }
    }

    /// Opens a new event file in the run folder `dir` and writes its opening events: the file
    /// version, `SessionLog.START` when resumed, the settings (and for a new run, the hparams).
    pub fn open(dir: &Path, opening: Opening, config: &TrainConfig, optimizer: &dyn Optimizer) -> Result<Self> {
        let now = wall_time();
        let file = EventFile::create(dir, &proto::file_version(now))
            .map_err(|e| run_dir::storage_error(&dir.join(format!("{}*", event_file::FILE_PREFIX)), e))?;
        let writer = Self {
            file: Some(file),
            lr_tags: lr_tags(optimizer.name(), optimizer.group_count()),
            log_every: log_every(config.epochs * opening.steps_per_epoch),
            steps_per_epoch: opening.steps_per_epoch.max(1),
            epochs: config.epochs,
            logged_a_step: Cell::new(false),
        };
        let settings = serde_json::to_value(config)?;
        let mut events = Vec::new();
        if opening.resumed {
            let first = opening.steps_done as i64 + 1;
            events.push(proto::session_start(now, first));
            let at = format!("Resumed after step {} (epoch {}).", opening.steps_done, writer.epoch_of(first as usize));
            events.push(proto::text(now, first, "config", &settings_table(&settings, &at)));
        } else {
            events.push(proto::text(now, 0, "config", &settings_table(&settings, "New run.")));
            events.push(proto::hparams(now, 0, hparams(&settings)));
        }
        writer.append(&events)?;
        Ok(writer)
    }

    /// Writes the steps `steps.jsonl` just received: every [`log_every`]-th step's loss and
    /// learning rates, the throughput at the last of them (and at the session's first step, so
    /// that a resumed run's curve starts where the run resumed), and the run's remaining time
    /// `eta` at the last quarter of an epoch among them.
    pub fn log_steps(&self, steps: &[StepRecord], images_per_sec: f64, eta: Option<Duration>) -> Result<()> {
        if self.file.is_none() || steps.is_empty() {
            return Ok(());
        }
        let now = wall_time();
        let logged: Vec<&StepRecord> = steps.iter().filter(|r| r.step.is_multiple_of(self.log_every)).collect();
        let first_of_session = !logged.is_empty() && !self.logged_a_step.replace(true);
        let mut events: Vec<Event> = Vec::with_capacity(logged.len() + 1);
        for (i, r) in logged.iter().enumerate() {
            let mut values: Vec<(&str, f64)> = vec![("train/loss", r.loss)];
            values.extend(self.lr_tags.iter().map(String::as_str).zip(r.lr.iter().copied()));
            if i + 1 == logged.len() || (i == 0 && first_of_session) {
                values.push(("time/images_per_sec", images_per_sec));
            }
            events.push(scalars(now, r.step, &values));
        }
        if let Some(r) = steps.iter().rev().find(|r| self.is_quarter(r)) {
            let in_epoch = r.step - (r.epoch - 1) * self.steps_per_epoch;
            let text = format!(
                "**{}** left in the run (at epoch {}/{}, step {in_epoch}/{}; {images_per_sec:.0} img/s)",
                crate::progress::hms(eta),
                r.epoch,
                self.epochs,
                self.steps_per_epoch
            );
            events.push(proto::text(now, r.step as i64, "eta", &text));
        }
        self.append(&events)
    }

    /// Writes an epoch's metrics at its last step, and syncs the file before the checkpoint.
    pub fn log_epoch(&self, m: &EpochMetrics) -> Result<()> {
        let mut values = vec![
            ("train/loss_epoch", m.train_loss),
            ("train/acc", m.train_acc),
            ("val/loss", m.val_loss),
            ("val/acc", m.val_acc),
            ("epoch", m.epoch as f64),
            ("time/epoch_seconds", m.seconds),
        ];
        if let Some(seconds) = m.allreduce_seconds {
            values.push(("time/allreduce_seconds", seconds));
        }
        // `test_every_epoch` (pytorch-cifar's loop): the test set after each epoch.
        if let (Some(loss), Some(acc)) = (m.test_loss, m.test_acc) {
            values.extend([("test/loss_epoch", loss), ("test/acc_epoch", acc)]);
        }
        self.append(&[scalars(wall_time(), m.epoch * self.steps_per_epoch, &values)])?;
        self.sync()
    }

    /// Writes the test results at the run's last step (`steps_done`), and syncs the file.
    pub fn log_test(&self, summary: &Summary, steps_done: usize) -> Result<()> {
        let values = [
            ("test/acc", summary.test_acc_last),
            ("test/loss", summary.test_loss_last),
            ("test/acc_best", summary.test_acc_best),
            ("test/loss_best", summary.test_loss_best),
        ];
        self.append(&[scalars(wall_time(), steps_done, &values)])?;
        self.sync()
    }

    /// The 1-based epoch of global step `step` (1-based).
    fn epoch_of(&self, step: usize) -> usize {
        step.saturating_sub(1) / self.steps_per_epoch + 1
    }

    /// Whether `r` ends a quarter of its epoch (where the trainer prints its plain lines).
    fn is_quarter(&self, r: &StepRecord) -> bool {
        let in_epoch = r.step - (r.epoch.max(1) - 1) * self.steps_per_epoch;
        in_epoch.is_multiple_of(self.steps_per_epoch.div_ceil(4).max(1)) || in_epoch == self.steps_per_epoch
    }

    fn append(&self, events: &[Event]) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        file.append(events).map_err(|e| run_dir::storage_error(file.path(), e))
    }

    fn sync(&self) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        file.sync().map_err(|e| run_dir::storage_error(file.path(), e))
    }
}

/// An event of the finite `values` at `step`.
fn scalars(wall_time: f64, step: usize, values: &[(&str, f64)]) -> Event {
    let finite: Vec<(&str, f64)> = values.iter().copied().filter(|(_, v)| v.is_finite()).collect();
    proto::scalars(wall_time, step as i64, &finite)
}

/// Seconds since the Unix epoch, as events record their time.
fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The settings as a markdown table (the text plugin renders markdown), after `heading`.
fn settings_table(settings: &serde_json::Value, heading: &str) -> String {
    let mut text = format!("{heading}\n\n| setting | value |\n|---|---|\n");
    for (key, value) in settings.as_object().into_iter().flatten() {
        text += &format!("| {key} | `{}` |\n", value.to_string().replace('|', "\\|"));
    }
    text
}

/// The settings as hyper-parameters: numbers, booleans and strings as they are, other values
/// (the schedule, the betas) as their JSON; unset ones and [`LOCAL_SETTINGS`] left out.
fn hparams(settings: &serde_json::Value) -> BTreeMap<String, HParamValue> {
    use serde_json::Value;
    let mut hparams = BTreeMap::new();
    for (key, value) in settings.as_object().into_iter().flatten() {
        let kind = match value {
            _ if LOCAL_SETTINGS.contains(&key.as_str()) => continue,
            Value::Null => continue,
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Kind::StringValue(s.clone()),
            other => Kind::StringValue(other.to_string()),
        };
        hparams.insert(key.clone(), HParamValue { kind: Some(kind) });
    }
    hparams
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_tags_are_lightnings_learning_rate_monitor_names() {
        assert_eq!(lr_tags("SGD", 1), ["lr-SGD"]);
        assert_eq!(lr_tags("AdamW", 2), ["lr-AdamW/pg1", "lr-AdamW/pg2"]);
    }

    #[test]
    fn per_step_scalars_are_thinned_only_beyond_the_cap() {
        assert_eq!(log_every(14_080), 1);
        assert_eq!(log_every(MAX_POINTS_PER_CURVE), 1);
        assert_eq!(log_every(MAX_POINTS_PER_CURVE + 1), 2);
        assert_eq!(log_every(1_000_000), 50);
        assert_eq!(log_every(0), 1);
    }

    #[test]
    fn quarters_are_where_the_trainer_prints_its_plain_lines() {
        let writer = RunWriter { steps_per_epoch: 10, epochs: 2, ..RunWriter::disabled() };
        let record = |step| StepRecord { epoch: (step - 1) / 10 + 1, step, lr: vec![0.1], loss: 1.0 };
        let quarters: Vec<usize> = (1..=20).filter(|&s| writer.is_quarter(&record(s))).collect();
        // ceil(10 / 4) = 3: steps 3, 6, 9 and the epoch's last.
        assert_eq!(quarters, [3, 6, 9, 10, 13, 16, 19, 20]);
        assert_eq!(writer.epoch_of(10), 1);
        assert_eq!(writer.epoch_of(11), 2);
    }

    #[test]
    fn settings_become_hparams_of_their_own_kind() {
        let settings = serde_json::json!({"lr": 0.005, "nesterov": false, "optimizer": "sgd",
            "betas": [0.9, 0.999], "clip_grad_norm": null, "data_dir": "data"});
        let hparams = hparams(&settings);
        assert_eq!(hparams.keys().collect::<Vec<_>>(), ["betas", "lr", "nesterov", "optimizer"]);
        assert_eq!(hparams["lr"].kind, Some(Kind::NumberValue(0.005)));
        assert_eq!(hparams["nesterov"].kind, Some(Kind::BoolValue(false)));
        assert_eq!(hparams["betas"].kind, Some(Kind::StringValue("[0.9,0.999]".into())));
    }
}

//! An epoch of the loop: its training pass (saving on `--save-every` and on a stop request),
//! then validation, the epoch's metrics, the schedule's epoch step and the checkpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;
use tch::Tensor;

use crate::data::batches::{Batch, Batches};
use crate::data::split;
use crate::formats::safetensors::{self as checkpoint, Metadata};
use crate::train::metrics::{DeviceSums, EpochMetrics, EpochSums};
use crate::train::optim::lr_scheduler::StepUnit;
use crate::train::optimizer_setup;
use crate::train::resume;
use crate::train::run_dir::{BEST_CHECKPOINT, CURVES_FILE};
use crate::train::step::{step_seed, train_step_with, StepSettings};

use super::{EpochEnd, Trainer, READ_INTERVAL};

impl Trainer<'_> {
    /// Trains the rest of the current epoch (this rank's share of it), saving on
    /// `--save-every` and on a stop request.
    pub(super) fn train_epoch(
        &mut self,
        stop: &AtomicBool,
        run_started: Instant,
        log: &mut dyn FnMut(&str),
    ) -> Result<EpochEnd> {
        let (config, data) = (self.config, &self.setup.data);
        let epoch = self.state.epoch;
        let plan = self.setup.preprocess.epoch_plan(self.subsets.train.len(), config.seed, epoch);
        let plan = self.dp.shard_epoch(plan);
        let steps = split::steps_per_epoch(plan.order.len(), config.batch_size);
        let batches = Batches::for_epoch(
            &data.train_images,
            &data.train_labels,
            &self.subsets.train,
            &plan,
            config.augment,
            config.batch_size,
            &self.setup.preprocess,
        )
        .skip_steps(self.state.step);
        let bar = if self.dp.is_main() {
            crate::progress::steps_bar(steps as u64, format!("epoch {}/{}", epoch + 1, config.epochs))
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_position(self.state.step as u64);
        let plain_every = steps.div_ceil(4).max(1);
        let epoch_started = Instant::now();
        let mut sums_dev = DeviceSums::new(self.setup.device, self.state.step);
        // This rank's sums since the epoch (re)started; the checkpoint's are global.
        let mut local = EpochSums::default();
        let mut last_read = Instant::now();
        for batch in batches {
            tch::manual_seed(step_seed(config.seed, self.dp.rank(), epoch, self.state.step));
            let lr = optimizer_setup::learning_rates(self.optimizer.as_ref());
            let (loss, logits) = self.train_step(&batch)?;
            sums_dev.add(&loss, &logits, &batch.labels);
            self.state.step += 1;
            self.steps_log.push(epoch + 1, epoch * self.steps_per_epoch + self.state.step, lr, &loss);
            self.step_schedule(StepUnit::Batch)?;
            bar.inc(1);
            let done = self.state.step == steps;
            let at_plain =
                !crate::progress::stderr_is_terminal() && self.state.step.is_multiple_of(plain_every) && !done;
            // Every rank stops after the same step, whichever got the signal.
            let interrupted = self.dp.any(stop.load(Ordering::SeqCst))?;
            let at_save = config.save_every > 0 && self.state.step.is_multiple_of(config.save_every);
            if last_read.elapsed() >= READ_INTERVAL || done || at_plain || interrupted || at_save {
                last_read = Instant::now();
                local = sums_dev
                    .read_into(&EpochSums::default(), epoch_started.elapsed().as_secs_f64())
                    .map_err(|bad_step| self.non_finite_error(bad_step))?;
                let flushed = self.steps_log.flush()?;
                // No collective here (reads happen at different steps on each rank): rank 0 shows
                // its own share, a single process the whole epoch.
                let shown = if self.dp.world_size() == 1 { self.state.sums.plus(&local) } else { local.clone() };
                // The steps just written to steps.jsonl go to TensorBoard too, with the run's ETA.
                let eta = self.run_eta.remaining(epoch * self.steps_per_epoch + self.state.step);
                self.tensorboard.log_steps(&flushed, shown.images_per_sec(), eta)?;
                let run_left = crate::progress::run_left(eta);
                bar.set_message(format!(
                    "loss {:.4} · {:.0} img/s · {run_left}",
                    shown.mean_loss(),
                    shown.images_per_sec()
                ));
                if at_plain {
                    log(&format!(
                        "epoch {}/{} step {}/{steps} loss {:.4} {:.0} img/s, {run_left}",
                        epoch + 1,
                        config.epochs,
                        self.state.step,
                        shown.mean_loss(),
                        shown.images_per_sec()
                    ));
                }
            }
            if (interrupted || at_save) && !done {
                let mut snapshot = self.state.clone();
                snapshot.sums = self.dp.global_sums(&self.state.sums, &local)?;
                snapshot.seconds = run_started.elapsed().as_secs_f64();
                if self.dp.is_main() {
                    let meta = self.checkpoint_metadata();
                    resume::save_last(self.dir, &self.vs, self.optimizer.as_ref(), &meta, &mut snapshot)?;
                }
                if interrupted {
                    bar.abandon();
                    return Ok(EpochEnd::Interrupted);
                }
            }
        }
        bar.finish_and_clear();
        Ok(EpochEnd::Finished(self.dp.global_sums(&self.state.sums, &local)?))
    }

    /// One optimisation step, as [`train_step`], with rank 0's BatchNorm buffers before the
    /// forward pass and the gradients averaged over the ranks before the update (DDP).
    pub(super) fn train_step(&mut self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        self.dp.sync_buffers(&self.vs)?;
        let dp = &mut *self.dp;
        let settings = StepSettings::of(self.config);
        train_step_with(self.net.as_ref(), self.optimizer.as_mut(), batch, &settings, |opt| dp.average_gradients(opt))
    }

    /// `scheduler.step()`, when the schedule steps per `unit`.
    pub(super) fn step_schedule(&mut self, unit: StepUnit) -> Result<()> {
        if let Some(schedule) = self.state.schedule.as_mut().filter(|_| self.config.schedule.unit == unit) {
            schedule.step(self.optimizer.as_mut())?;
        }
        Ok(())
    }

    pub(super) fn non_finite_error(&self, bad_step: i64) -> anyhow::Error {
        anyhow::anyhow!(
            "the loss became non-finite at epoch {}, step {} (learning rate {} too high?); \
             the last good checkpoint in {} is kept",
            self.state.epoch + 1,
            bad_step + 1,
            self.optimizer.lr(0),
            self.dir.display()
        )
    }

    /// Validates (and tests, with `test_every_epoch`), records the epoch's metrics, and saves
    /// the checkpoints and curves.
    pub(super) fn end_epoch(&mut self, sums: EpochSums, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<()> {
        let config = self.config;
        let allreduce = self.dp.take_allreduce_time();
        // Each rank's share of the epoch (DistributedSampler pads it to equal lengths).
        let steps = self.steps_per_epoch;
        let valid_started = Instant::now();
        // Every rank validates with rank 0's statistics, as DDP's next forward would sync them.
        self.dp.sync_buffers(&self.vs)?;
        let valid = self.evaluate(self.net.as_ref(), &self.subsets.valid, false)?;
        let test = match config.test_every_epoch {
            true => Some(self.evaluate(self.net.as_ref(), &self.subsets.test, true)?),
            false => None,
        };
        let metrics = EpochMetrics {
            epoch: self.state.epoch + 1,
            train_loss: sums.mean_loss(),
            train_acc: sums.correct as f64 / sums.seen.max(1) as f64,
            val_loss: if valid.images > 0 { valid.loss } else { f64::NAN },
            val_acc: if valid.images > 0 { valid.accuracy } else { f64::NAN },
            // The learning rate of the epoch's last step (first group), before the epoch's
            // schedule step.
            lr: self.optimizer.lr(0),
            seconds: sums.train_seconds + valid_started.elapsed().as_secs_f64(),
            images_per_sec: sums.seen as f64 / sums.train_seconds.max(1e-9),
            allreduce_seconds: (self.dp.world_size() > 1).then_some(allreduce.as_secs_f64()),
            steps: (self.dp.world_size() > 1).then_some(steps),
            test_loss: test.as_ref().map(|t| t.loss),
            test_acc: test.as_ref().map(|t| t.accuracy),
        };
        let validated = match valid.images {
            0 => String::new(),
            _ => format!(", val loss {:.4}, val acc {:.2}%", valid.loss, 100.0 * valid.accuracy),
        };
        let tested = match &test {
            Some(t) => format!(", test loss {:.4}, test acc {:.2}%", t.loss, 100.0 * t.accuracy),
            None => String::new(),
        };
        log(&format!(
            "epoch {}/{}: train loss {:.4}, train acc {:.2}%{validated}{tested}, {:.1} s ({:.0} img/s)",
            metrics.epoch,
            config.epochs,
            metrics.train_loss,
            100.0 * metrics.train_acc,
            metrics.seconds,
            metrics.images_per_sec
        ));
        // The epoch's metrics in TensorBoard, on disk before its checkpoint.
        self.tensorboard.log_epoch(&metrics)?;
        // The best checkpoint is chosen by validation accuracy; without a validation split, by
        // the test accuracy where the test set is evaluated every epoch (as pytorch-cifar
        // does), else it is the last.
        let chosen_by = match (valid.images > 0, &test) {
            (true, _) => Some(metrics.val_acc),
            (false, Some(t)) if t.images > 0 => Some(t.accuracy),
            _ => None,
        };
        let is_best = match chosen_by {
            Some(acc) => self.state.best_val_acc.is_none_or(|b| acc > b),
            None => true,
        };
        let state = &mut self.state;
        state.history.push(metrics.clone());
        state.epoch += 1;
        state.step = 0;
        state.sums = EpochSums::default();
        state.seconds = run_started.elapsed().as_secs_f64();
        if is_best {
            state.best_val_acc = chosen_by.filter(|v| v.is_finite());
            state.best_epoch = Some(metrics.epoch);
        }
        self.step_schedule(StepUnit::Epoch)?;
        if !self.dp.is_main() {
            return Ok(());
        }
        resume::save_last(self.dir, &self.vs, self.optimizer.as_ref(), &self.checkpoint_metadata(), &mut self.state)?;
        if is_best {
            let mut meta = self.checkpoint_metadata();
            meta.insert("epoch".to_string(), metrics.epoch.to_string());
            self.save_best(&meta)?;
        }
        if let Err(e) = crate::train::plot::write_curves(&self.dir.join(CURVES_FILE), &self.state.history) {
            log(&format!("warning: could not draw {CURVES_FILE}: {e:#}"));
        }
        Ok(())
    }

    /// What every checkpoint records beside the weights: the network and the recipe, so that
    /// `evaluate` and `predict` rebuild the right model.
    pub(super) fn checkpoint_metadata(&self) -> Metadata {
        let config = self.config;
        Metadata::from([
            ("model".to_string(), config.model.clone()),
            ("recipe".to_string(), config.recipe.clone()),
            ("dataset".to_string(), config.dataset.clone()),
            ("num_classes".to_string(), config.num_classes.to_string()),
        ])
    }

    pub(super) fn save_best(&self, meta: &Metadata) -> Result<()> {
        checkpoint::save_var_store(&self.vs, &self.dir.join(BEST_CHECKPOINT), meta).map_err(resume::explain)
    }
}

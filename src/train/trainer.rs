//! The recipe's training loop, top to bottom: prepare the run folder, load the data, build
//! the model (or resume it), then per epoch train, validate, checkpoint; at the end, test the
//! best and the last model.
//!
//! Randomness is a pure function of `(seed, epoch, step)`: the split, each epoch's order and
//! flips (ChaCha8) and libtorch's generator for dropout (reseeded before every step). A resumed
//! run therefore draws exactly what the uninterrupted run would have drawn, with no RNG state
//! to save beyond the position.
//!
//! Losses and accuracies are summed on the device and read back about once a second, so a step
//! costs no host synchronisation; each step's loss is kept on the device until then too, for
//! `steps.jsonl` ([`crate::train::steps_log`]).
//!
//! The optimizer and the learning-rate schedule are those of the settings
//! ([`crate::train::optimizer_setup`]); the schedule steps after each optimizer step or each
//! epoch, as a PyTorch loop calls `scheduler.step()`, and its state travels with the loop's.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::data::batches::{Batch, Batches};
use crate::data::split::{self, SplitFile};
use crate::formats::safetensors::{self as checkpoint, Metadata};
use crate::model::AlexNet;
use crate::progress::RunEta;
use crate::train::config::{RunInfo, TrainConfig};
use crate::train::data_parallel::{self, DataParallel};
use crate::train::evaluation::{self, EvalResult};
use crate::train::metrics::{DeviceSums, EpochMetrics, EpochSums, Summary};
use crate::train::optim::lr_scheduler::StepUnit;
use crate::train::optim::{clip_grad_norm, cross_entropy, Optimizer};
use crate::train::optimizer_setup;
use crate::train::resume::{self, LoopState};
use crate::train::run_dir::{self, RunDir, BEST_CHECKPOINT, CONFIG_FILE, CURVES_FILE, SPLIT_FILE, SUMMARY_FILE};
use crate::train::setup::{self, Setup, Subsets};
use crate::train::steps_log::{self, StepsLog, STEPS_FILE};
use crate::train::tensorboard::{Opening, RunWriter};

/// Time between two reads of the device-side loss sums (progress display, finiteness check):
/// one host synchronisation per second, whatever the step time.
const READ_INTERVAL: Duration = Duration::from_secs(1);

/// How a call to [`train`] ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Summary),
    /// Stopped by the stop flag (Ctrl-C, SIGTERM) after `step` steps of 1-based `epoch`; the
    /// checkpoint holds that position.
    Interrupted {
        epoch: usize,
        step: usize,
    },
}

/// Trains as `config` says, writing into `run`, in this process alone. `stop` (set by Ctrl-C
/// or SIGTERM) ends the run after the current step with a consistent checkpoint. `log`
/// receives the human-readable lines.
pub fn train(config: &TrainConfig, run: &RunDir, stop: &AtomicBool, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
    train_rank(config, run, &mut DataParallel::single(), stop, log)
}

/// [`train`] as one rank of a data-parallel job (see [`crate::train::data_parallel`]): every
/// rank trains on its share of each batch of the epoch; rank 0 alone writes `run`.
pub fn train_rank(
    config: &TrainConfig,
    run: &RunDir,
    dp: &mut DataParallel,
    stop: &AtomicBool,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    config.validate()?;
    dp.check_same_settings(&rank_settings(config, run)?)?;
    let _lock = if dp.is_main() { Some(run_dir::prepare(run)?) } else { None };
    let setup = load_data(config, run, dp, log)?;
    if dp.is_main() && run.resume {
        let saved = run_dir::read_run_info(&run.path)?;
        check_same_data(run, &saved, &setup, log)?;
        check_same_world_size(run, &saved, dp.world_size())?;
    }
    let subsets = Subsets::new(config, &setup, log);

    // The initial weights come from libtorch's generator: seed it, as the run's one seed.
    tch::manual_seed(config.seed as i64);
    let (vs, net) = setup::build_model(setup.device, config.num_classes, setup.channels_last)?;
    let mut optimizer = optimizer_setup::build_optimizer(&vs, config)?;
    let steps_per_epoch = split::steps_per_epoch(subsets.train.len().div_ceil(dp.world_size()), config.batch_size);
    let schedule = optimizer_setup::build_schedule(optimizer.as_mut(), config, steps_per_epoch)?;
    let state = if dp.is_main() {
        if !run.resume {
            if let Some(warning) = run_dir::disk_space_warning(&run.path, setup::weight_bytes(&vs)) {
                log(&warning);
            }
        }
        let state = resume::initial_state(run, &vs, optimizer.as_mut(), schedule, log)
            .inspect_err(|_| run_dir::discard_new(run))?;
        write_run_files(config, run, &setup, &state, dp.world_size())?;
        steps_log::truncate_after(&run.path, state.epoch * steps_per_epoch + state.step)?;
        state
    } else {
        LoopState::default()
    };
    let state = share_start(dp, state, &vs, optimizer.as_mut())?;
    let steps_log = StepsLog::new(dp.is_main().then(|| run.file(STEPS_FILE)));
    // TensorBoard (issue 21): rank 0's event file, and the whole run's remaining time.
    let steps_done = state.epoch * steps_per_epoch + state.step;
    let opening = Opening { resumed: run.resume, steps_done, steps_per_epoch };
    let tensorboard = if dp.is_main() {
        RunWriter::open(&run.path, opening, config, optimizer.as_ref())?
    } else {
        RunWriter::disabled()
    };
    let run_eta = RunEta::new(config.epochs * steps_per_epoch, steps_done);
    let mut trainer = Trainer {
        config,
        dir: &run.path,
        setup: &setup,
        subsets: &subsets,
        dp,
        vs,
        net,
        optimizer,
        steps_per_epoch,
        steps_log,
        tensorboard,
        run_eta,
        state,
    };
    trainer.run(stop, log)
}

/// What every rank of a job must agree on, as JSON: the settings but those that may differ
/// per machine (device, threads, data folder), and how the run starts.
fn rank_settings(config: &TrainConfig, run: &RunDir) -> Result<String> {
    let mut value = serde_json::to_value(config)?;
    if let Some(map) = value.as_object_mut() {
        for local in ["device", "threads", "data_dir", "download"] {
            map.remove(local);
        }
        map.insert("resume".into(), run.resume.into());
        map.insert("start".into(), format!("{:?}", run.start).into());
    }
    Ok(value.to_string())
}

/// Loads the data set. The first rank of each machine may download it; the others wait for it
/// (one barrier each, on either side of the first rank's load) and only read.
fn load_data(config: &TrainConfig, run: &RunDir, dp: &DataParallel, log: &mut dyn FnMut(&str)) -> Result<Setup> {
    let first_on_machine = dp.local_rank() == 0;
    let result = if first_on_machine {
        let result = setup::setup(config, log);
        if result.is_ok() {
            dp.barrier()?;
        }
        result
    } else {
        dp.barrier()?;
        setup::setup(&TrainConfig { download: false, ..config.clone() }, log)
    };
    if result.is_err() && dp.is_main() {
        run_dir::discard_new(run);
    }
    result
}

/// Writes `config.json`, `metrics.jsonl` and `split.json` of a run about to take its first step.
fn write_run_files(
    config: &TrainConfig,
    run: &RunDir,
    setup: &Setup,
    state: &LoopState,
    world_size: usize,
) -> Result<()> {
    let info = RunInfo::new(config, setup.device, setup.data.fingerprint.clone()).with_world_size(world_size);
    run_dir::write_json(&run.file(CONFIG_FILE), &info)?;
    run_dir::write_metrics(&run.path, &state.history)?;
    let split_file = SplitFile {
        rng: config.split_rng,
        seed: config.split_seed(),
        valid: setup.split.valid.clone(),
        train: setup.split.train.clone(),
    };
    run_dir::write_json_compact(&run.file(SPLIT_FILE), &split_file)
}

/// Rank 0's starting point on every rank: its loop state with the schedule (through the
/// store) and its weights, buffers and optimizer state (broadcast).
fn share_start(
    dp: &DataParallel,
    state: LoopState,
    vs: &nn::VarStore,
    optimizer: &mut dyn Optimizer,
) -> Result<LoopState> {
    if dp.world_size() == 1 {
        return Ok(state);
    }
    let layout = data_parallel::optimizer_layout(optimizer);
    let shared = dp.share_from_main("start", &serde_json::to_vec(&(&state, &layout))?)?;
    let (state, layout): (LoopState, data_parallel::OptimizerLayout) = serde_json::from_slice(&shared)?;
    dp.broadcast_state(vs, optimizer, &layout)?;
    Ok(state)
}

/// Refuses to resume a run with another number of ranks: the epoch's shares would differ.
fn check_same_world_size(run: &RunDir, saved: &RunInfo, world_size: usize) -> Result<()> {
    let saved = saved.world_size;
    if saved != world_size {
        bail!(
            "cannot resume: {} was trained with {saved} process(es) and this job has {world_size}; \
             resume it with the same number (--nproc-per-node or torchrun's)",
            run.path.display()
        );
    }
    Ok(())
}

/// Refuses to resume on data files that differ from the run's, unless the user allowed it.
fn check_same_data(run: &RunDir, saved: &RunInfo, setup: &Setup, log: &mut dyn FnMut(&str)) -> Result<()> {
    let saved = &saved.data_fingerprint;
    let now = &setup.data.fingerprint;
    if saved.is_empty() || saved == now {
        return Ok(());
    }
    let changed: Vec<String> = now
        .iter()
        .filter(|file| !saved.contains(file))
        .map(|file| file.file.clone())
        .chain(saved.iter().filter(|s| !now.iter().any(|n| n.file == s.file)).map(|s| s.file.clone()))
        .collect();
    let what = format!(
        "the data files differ from those {} was trained on ({} changed since {CONFIG_FILE} recorded them)",
        run.path.display(),
        changed.join(", ")
    );
    if !run.allow_data_change {
        bail!("cannot resume: {what}; pass --allow-data-change to continue on the new data knowingly");
    }
    log(&format!("warning: {what}; continuing because of --allow-data-change"));
    Ok(())
}

/// A run in progress: what it reads, the model it trains, and where the loop stands.
struct Trainer<'a> {
    config: &'a TrainConfig,
    dir: &'a Path,
    setup: &'a Setup,
    subsets: &'a Subsets,
    dp: &'a mut DataParallel,
    vs: nn::VarStore,
    net: AlexNet,
    optimizer: Box<dyn Optimizer>,
    /// Optimizer steps per epoch (of this rank's share).
    steps_per_epoch: usize,
    steps_log: StepsLog,
    /// TensorBoard (issue 21): the event file, and the whole run's remaining time.
    tensorboard: RunWriter,
    run_eta: RunEta,
    state: LoopState,
}

/// How one epoch's training pass ended.
enum EpochEnd {
    Finished(EpochSums),
    Interrupted,
}

impl Trainer<'_> {
    fn run(&mut self, stop: &AtomicBool, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
        let run_started = Instant::now() - Duration::from_secs_f64(self.state.seconds);
        while self.state.epoch < self.config.epochs {
            match self.train_epoch(stop, run_started, log)? {
                EpochEnd::Interrupted => {
                    return Ok(Outcome::Interrupted { epoch: self.state.epoch + 1, step: self.state.step })
                }
                EpochEnd::Finished(sums) => self.end_epoch(sums, run_started, log)?,
            }
            if self.dp.any(stop.load(Ordering::SeqCst))? && self.state.epoch < self.config.epochs {
                return Ok(Outcome::Interrupted { epoch: self.state.epoch, step: 0 });
            }
        }
        if self.state.history.is_empty() && self.state.checkpoint_id.is_empty() && self.dp.is_main() {
            // --epochs 0: nothing trained; the initial model is what gets saved and evaluated.
            resume::save_last(self.dir, &self.vs, self.optimizer.as_ref(), &mut self.state)?;
            self.save_best(&Metadata::new())?;
        }
        if self.dp.world_size() > 1 {
            let mut tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
            let optimizer_state = self.optimizer.save_state().tensors;
            tensors.extend(optimizer_state.into_iter().map(|(k, v)| (format!("optimizer.{k}"), v)));
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let checked = self.dp.check_replicas(&tensors)?;
            log(&format!(
                "All {} ranks hold bit-identical weights, buffers and optimizer state ({checked} tensors)",
                self.dp.world_size()
            ));
        }
        self.test(run_started, log)
    }

    /// Trains the rest of the current epoch (this rank's share of it), saving on
    /// `--save-every` and on a stop request.
    fn train_epoch(&mut self, stop: &AtomicBool, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<EpochEnd> {
        let (config, data) = (self.config, &self.setup.data);
        let epoch = self.state.epoch;
        let plan = self.dp.shard_epoch(split::epoch_plan(self.subsets.train.len(), config.seed, epoch));
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
                // TensorBoard (issue 21): the steps just written to steps.jsonl, and the run's ETA.
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
                    resume::save_last(self.dir, &self.vs, self.optimizer.as_ref(), &mut snapshot)?;
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
    fn train_step(&mut self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        self.dp.sync_buffers(&self.vs)?;
        let dp = &mut *self.dp;
        let settings = StepSettings::of(self.config);
        train_step_with(&self.net, self.optimizer.as_mut(), batch, &settings, |opt| dp.average_gradients(opt))
    }

    /// `scheduler.step()`, when the schedule steps per `unit`.
    fn step_schedule(&mut self, unit: StepUnit) -> Result<()> {
        if let Some(schedule) = self.state.schedule.as_mut().filter(|_| self.config.schedule.unit == unit) {
            schedule.step(self.optimizer.as_mut())?;
        }
        Ok(())
    }

    fn non_finite_error(&self, bad_step: i64) -> anyhow::Error {
        anyhow::anyhow!(
            "the loss became non-finite at epoch {}, step {} (learning rate {} too high?); \
             the last good checkpoint in {} is kept",
            self.state.epoch + 1,
            bad_step + 1,
            self.optimizer.lr(0),
            self.dir.display()
        )
    }

    /// Validates, records the epoch's metrics, and saves the checkpoints and curves.
    fn end_epoch(&mut self, sums: EpochSums, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<()> {
        let config = self.config;
        let allreduce = self.dp.take_allreduce_time();
        // Each rank's share of the epoch (DistributedSampler pads it to equal lengths).
        let steps = self.steps_per_epoch;
        let valid_started = Instant::now();
        // Every rank validates with rank 0's statistics, as DDP's next forward would sync them.
        self.dp.sync_buffers(&self.vs)?;
        let valid = self.evaluate(&self.net, &self.subsets.valid, false)?;
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
        };
        log(&format!(
            "epoch {}/{}: train loss {:.4}, train acc {:.2}%, val loss {:.4}, val acc {:.2}%, {:.1} s ({:.0} img/s)",
            metrics.epoch,
            config.epochs,
            metrics.train_loss,
            100.0 * metrics.train_acc,
            metrics.val_loss,
            100.0 * metrics.val_acc,
            metrics.seconds,
            metrics.images_per_sec
        ));
        // TensorBoard (issue 21): the epoch's metrics, on disk before its checkpoint.
        self.tensorboard.log_epoch(&metrics)?;
        let is_best = valid.images == 0 || self.state.best_val_acc.is_none_or(|b| metrics.val_acc > b);
        let state = &mut self.state;
        state.history.push(metrics.clone());
        state.epoch += 1;
        state.step = 0;
        state.sums = EpochSums::default();
        state.seconds = run_started.elapsed().as_secs_f64();
        if is_best {
            state.best_val_acc = Some(metrics.val_acc).filter(|v| v.is_finite());
            state.best_epoch = Some(metrics.epoch);
        }
        self.step_schedule(StepUnit::Epoch)?;
        if !self.dp.is_main() {
            return Ok(());
        }
        resume::save_last(self.dir, &self.vs, self.optimizer.as_ref(), &mut self.state)?;
        if is_best {
            self.save_best(&Metadata::from([("epoch".to_string(), metrics.epoch.to_string())]))?;
        }
        if let Err(e) = crate::train::plot::write_curves(&self.dir.join(CURVES_FILE), &self.state.history) {
            log(&format!("warning: could not draw {CURVES_FILE}: {e:#}"));
        }
        Ok(())
    }

    fn save_best(&self, meta: &Metadata) -> Result<()> {
        checkpoint::save_var_store(&self.vs, &self.dir.join(BEST_CHECKPOINT), meta).map_err(resume::explain)
    }

    /// Evaluates `net` on `indices` (of the test set, or of the training files): this rank's
    /// share, then the sums of all ranks.
    fn evaluate(&self, net: &AlexNet, indices: &[i64], test: bool) -> Result<EvalResult> {
        let data = &self.setup.data;
        let (images, labels) =
            if test { (&data.test_images, &data.test_labels) } else { (&data.train_images, &data.train_labels) };
        let shard = self.dp.shard_eval(indices);
        let batches = Batches::new(images, labels, &shard, self.config.batch_size, &self.setup.preprocess);
        let local = if self.dp.is_main() {
            evaluation::evaluate(net, batches, self.config.amp)
        } else {
            evaluation::evaluate_quietly(net, batches, self.config.amp, || {})
        };
        self.dp.merge_eval(local)
    }

    /// Tests the last model and, when it differs, the best one; writes `summary.json`.
    fn test(&self, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
        let last = self.evaluate(&self.net, &self.subsets.test, true)?;
        let best_is_older =
            self.state.best_epoch.is_some() && self.state.best_epoch != self.state.history.last().map(|m| m.epoch);
        let best = if best_is_older {
            let (best_vs, best_net) =
                setup::build_model(self.setup.device, self.config.num_classes, self.setup.channels_last)?;
            if self.dp.is_main() {
                checkpoint::load_var_store(&best_vs, &self.dir.join(BEST_CHECKPOINT))?;
            }
            let variables: std::collections::BTreeMap<String, Tensor> = best_vs.variables().into_iter().collect();
            self.dp.broadcast_from_main(&variables.into_values().collect::<Vec<_>>())?;
            self.evaluate(&best_net, &self.subsets.test, true)?
        } else {
            last.clone()
        };
        let best_of_run = (self.state.best_epoch, self.state.best_val_acc);
        let summary = Summary::new(&best, &last, best_of_run, self.config.epochs, run_started.elapsed().as_secs_f64());
        if self.dp.is_main() {
            run_dir::write_json(&self.dir.join(SUMMARY_FILE), &summary)?;
        }
        // TensorBoard (issue 21): the test results at the run's last step.
        self.tensorboard.log_test(&summary, self.state.epoch * self.steps_per_epoch)?;
        log(&format!(
            "test accuracy: {:.2}% (best epoch {}), {:.2}% (last epoch); {} test images; total {:.1} s",
            100.0 * summary.test_acc_best,
            summary.best_epoch.map_or("-".to_string(), |e| e.to_string()),
            100.0 * summary.test_acc_last,
            summary.test_images,
            summary.total_seconds
        ));
        Ok(Outcome::Finished(summary))
    }
}

/// A seed for libtorch's generator before one step: mixes the run seed, the rank and the
/// position (SplitMix64), so dropout masks depend only on where the step is (rank 0 draws
/// what a single process draws).
fn step_seed(seed: u64, rank: usize, epoch: usize, step: usize) -> i64 {
    let seed = seed.wrapping_add((rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut z = seed ^ ((epoch as u64) << 32 | step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// What a training step does beyond the recipe's forward, loss, backward and update.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepSettings {
    /// bf16 autocast on CUDA.
    pub amp: bool,
    /// `F.cross_entropy(..., label_smoothing)`.
    pub label_smoothing: f64,
    /// Clip the gradients' total 2-norm to this after they are averaged, before the update.
    pub clip_grad_norm: Option<f64>,
}

impl StepSettings {
    /// The recipe's step: plain cross entropy, no clipping.
    pub fn recipe(amp: bool) -> Self {
        Self { amp, ..Self::default() }
    }

    /// The step `config` asks for.
    pub fn of(config: &TrainConfig) -> Self {
        Self { amp: config.amp, label_smoothing: config.label_smoothing, clip_grad_norm: config.clip_grad_norm }
    }
}

/// One optimisation step of the recipe: forward in train mode, cross-entropy, backward, update.
/// Returns the (detached) loss and logits; nothing is read back to the host.
pub fn train_step(net: &AlexNet, optimizer: &mut dyn Optimizer, batch: &Batch, amp: bool) -> Result<(Tensor, Tensor)> {
    train_step_with(net, optimizer, batch, &StepSettings::recipe(amp), |_| Ok(()))
}

/// [`train_step`] with `settings` (label smoothing, clipping) and `after_backward` run on the
/// gradients before clipping and the update (data-parallel training averages them there, so
/// the norm clipped is that of the averaged gradients, as under DDP).
pub fn train_step_with(
    net: &AlexNet,
    optimizer: &mut dyn Optimizer,
    batch: &Batch,
    settings: &StepSettings,
    after_backward: impl FnOnce(&dyn Optimizer) -> Result<()>,
) -> Result<(Tensor, Tensor)> {
    let logits = tch::autocast(settings.amp, || net.forward_t(&batch.images, true));
    // Autocast's bf16/f16 logits: the loss in float32, as PyTorch's autocast takes it. float32
    // logits are used as they are, and float64 ones (a float64 model) keep float64: libtorch's
    // `cross_entropy_loss` (what `F.cross_entropy` calls) works in the logits' own precision.
    let logits = match logits.kind() {
        Kind::Float | Kind::Double => logits,
        _ => logits.to_kind(Kind::Float),
    };
    let loss = cross_entropy(&logits, &batch.labels, settings.label_smoothing)?;
    optimizer.zero_grad();
    loss.backward();
    after_backward(optimizer)?;
    if let Some(max_norm) = settings.clip_grad_norm {
        let params: Vec<Tensor> = optimizer.parameters().into_iter().map(|(_, p)| p).collect();
        let _total_norm = clip_grad_norm(&params, max_norm, 2.0)?;
    }
    optimizer.step()?;
    Ok((loss.detach(), logits.detach()))
}

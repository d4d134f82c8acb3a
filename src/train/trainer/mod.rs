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

mod epoch;
mod start;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tch::{nn, Tensor};

use crate::data::batches::Batches;
use crate::data::split;
use crate::formats::safetensors as checkpoint;
use crate::model::Network;
use crate::progress::RunEta;
use crate::train::config::TrainConfig;
use crate::train::data_parallel::DataParallel;
use crate::train::evaluation::{self, EvalResult};
use crate::train::experiment::Experiment;
use crate::train::metrics::{EpochSums, Summary};
use crate::train::optim::Optimizer;
use crate::train::optimizer_setup;
use crate::train::resume::{self, LoopState};
use crate::train::run_dir::{self, RunDir, BEST_CHECKPOINT, SUMMARY_FILE};
use crate::train::setup::{self, Setup, Subsets};
use crate::train::steps_log::{self, StepsLog, STEPS_FILE};
use crate::train::tensorboard::{Opening, RunWriter};

use start::{check_same_data, check_same_world_size, load_data, rank_settings, share_start, write_run_files};

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

/// Trains `experiment`'s network on its data as `config` says, writing into `run`, in this
/// process alone. `stop` (set by Ctrl-C or SIGTERM) ends the run after the current step with a
/// consistent checkpoint. `log` receives the human-readable lines.
pub fn train(
    experiment: &dyn Experiment,
    config: &TrainConfig,
    run: &RunDir,
    stop: &AtomicBool,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    train_rank(experiment, config, run, &mut DataParallel::single(), stop, log)
}

/// [`train`] as one rank of a data-parallel job (see [`crate::train::data_parallel`]): every
/// rank trains on its share of each batch of the epoch; rank 0 alone writes `run`.
pub fn train_rank(
    experiment: &dyn Experiment,
    config: &TrainConfig,
    run: &RunDir,
    dp: &mut DataParallel,
    stop: &AtomicBool,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    config.validate()?;
    dp.check_same_settings(&rank_settings(config, run)?)?;
    let _lock = if dp.is_main() { Some(run_dir::prepare(run)?) } else { None };
    let setup = load_data(config, experiment, run, dp, log)?;
    if dp.is_main() && run.resume {
        let saved = run_dir::read_run_info(&run.path)?;
        check_same_data(run, &saved, &setup, log)?;
        check_same_world_size(run, &saved, dp.world_size())?;
    }
    let subsets = Subsets::new(config, &setup, log);

    // The initial weights come from libtorch's generator: seed it, as the run's one seed.
    tch::manual_seed(config.seed as i64);
    let (vs, net) = setup::build_network(experiment, config, setup.device, setup.channels_last)?;
    let mut optimizer = optimizer_setup::build_optimizer(&vs, &net.parameter_names(), config)?;
    let steps_per_epoch = split::steps_per_epoch(subsets.train.len().div_ceil(dp.world_size()), config.batch_size);
    let schedule = optimizer_setup::build_schedule(optimizer.as_mut(), config, steps_per_epoch)?;
    let state = if dp.is_main() {
        if !run.resume {
            if let Some(warning) = run_dir::disk_space_warning(&run.path, setup::weight_bytes(&vs)) {
                log(&warning);
            }
        }
        let rebuild = |opt: &mut dyn Optimizer| optimizer_setup::build_schedule(opt, config, steps_per_epoch);
        let state = resume::initial_state(run, &vs, optimizer.as_mut(), schedule, &rebuild, log)
            .inspect_err(|_| run_dir::discard_new(run))?;
        write_run_files(config, run, &setup, &state, dp.world_size())?;
        steps_log::truncate_after(&run.path, state.epoch * steps_per_epoch + state.step)?;
        state
    } else {
        LoopState::default()
    };
    let state = share_start(dp, state, &vs, optimizer.as_mut())?;
    let steps_log = StepsLog::new(dp.is_main().then(|| run.file(STEPS_FILE)));
    // Rank 0's TensorBoard event file, and the whole run's remaining time.
    let steps_done = state.epoch * steps_per_epoch + state.step;
    let opening = Opening { resumed: run.resume, steps_done, steps_per_epoch };
    let tensorboard = if dp.is_main() {
        RunWriter::open(&run.path, opening, config, optimizer.as_ref())?
    } else {
        RunWriter::disabled()
    };
    let run_eta = RunEta::new(config.epochs * steps_per_epoch, steps_done);
    let mut trainer = Trainer {
        experiment,
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

/// A run in progress: what it reads, the model it trains, and where the loop stands.
struct Trainer<'a> {
    experiment: &'a dyn Experiment,
    config: &'a TrainConfig,
    dir: &'a Path,
    setup: &'a Setup,
    subsets: &'a Subsets,
    dp: &'a mut DataParallel,
    vs: nn::VarStore,
    net: Box<dyn Network>,
    optimizer: Box<dyn Optimizer>,
    /// Optimizer steps per epoch (of this rank's share).
    steps_per_epoch: usize,
    steps_log: StepsLog,
    /// The TensorBoard event file, and the whole run's remaining time.
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
            let meta = self.checkpoint_metadata();
            resume::save_last(self.dir, &self.vs, self.optimizer.as_ref(), &meta, &mut self.state)?;
            self.save_best(&meta)?;
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

    /// Evaluates `net` on `indices` (of the test set, or of the training files): this rank's
    /// share, then the sums of all ranks.
    fn evaluate(&self, net: &dyn Network, indices: &[i64], test: bool) -> Result<EvalResult> {
        let data = &self.setup.data;
        let (images, labels) =
            if test { (&data.test_images, &data.test_labels) } else { (&data.train_images, &data.train_labels) };
        let shard = self.dp.shard_eval(indices);
        let batches = Batches::new(images, labels, &shard, self.config.eval_batch_size(), &self.setup.preprocess);
        let local = if self.dp.is_main() {
            evaluation::evaluate(net, self.config.num_classes, batches, self.config.bf16())?
        } else {
            evaluation::evaluate_quietly(net, self.config.num_classes, batches, self.config.bf16(), || {})?
        };
        self.dp.merge_eval(local)
    }

    /// Tests the last model and, when it differs, the best one; writes `summary.json`.
    fn test(&self, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
        let last = self.evaluate(self.net.as_ref(), &self.subsets.test, true)?;
        let best_is_older =
            self.state.best_epoch.is_some() && self.state.best_epoch != self.state.history.last().map(|m| m.epoch);
        let best = if best_is_older {
            let (best_vs, best_net) =
                setup::build_network(self.experiment, self.config, self.setup.device, self.setup.channels_last)?;
            if self.dp.is_main() {
                checkpoint::load_var_store(&best_vs, &self.dir.join(BEST_CHECKPOINT))?;
            }
            let variables: std::collections::BTreeMap<String, Tensor> = best_vs.variables().into_iter().collect();
            self.dp.broadcast_from_main(&variables.into_values().collect::<Vec<_>>())?;
            self.evaluate(best_net.as_ref(), &self.subsets.test, true)?
        } else {
            last.clone()
        };
        let best_of_run = (self.state.best_epoch, self.state.best_val_acc);
        let summary = Summary::new(&best, &last, best_of_run, self.config.epochs, run_started.elapsed().as_secs_f64());
        if self.dp.is_main() {
            run_dir::write_json(&self.dir.join(SUMMARY_FILE), &summary)?;
        }
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

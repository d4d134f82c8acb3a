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
//! costs no host synchronisation.

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
use crate::train::config::{RunInfo, TrainConfig};
use crate::train::evaluation::{self, EvalResult};
use crate::train::metrics::{DeviceSums, EpochMetrics, EpochSums, Summary};
use crate::train::resume::{self, LoopState};
use crate::train::run_dir::{self, RunDir, BEST_CHECKPOINT, CONFIG_FILE, CURVES_FILE, SPLIT_FILE, SUMMARY_FILE};
use crate::train::setup::{self, Setup, Subsets};
use crate::train::sgd::Sgd;

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

/// Trains as `config` says, writing into `run`. `stop` (set by Ctrl-C or SIGTERM) ends the run
/// after the current step with a consistent checkpoint. `log` receives the human-readable lines.
pub fn train(config: &TrainConfig, run: &RunDir, stop: &AtomicBool, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
    config.validate()?;
    let _lock = run_dir::prepare(run)?;
    let setup = match setup::setup(config, log) {
        Ok(setup) => setup,
        Err(e) => {
            run_dir::discard_new(run);
            return Err(e);
        }
    };
    if run.resume {
        check_same_data(run, &setup, log)?;
    }
    let subsets = Subsets::new(config, &setup, log);

    // The initial weights come from libtorch's generator: seed it, as the run's one seed.
    tch::manual_seed(config.seed as i64);
    let (vs, net) = setup::build_model(setup.device, config.num_classes, setup.channels_last)?;
    let mut sgd = Sgd::new(&vs, config.sgd());
    if !run.resume {
        if let Some(warning) = run_dir::disk_space_warning(&run.path, setup::weight_bytes(&vs)) {
            log(&warning);
        }
    }
    let state = resume::initial_state(run, &vs, &mut sgd, log).inspect_err(|_| run_dir::discard_new(run))?;
    run_dir::write_json(&run.file(CONFIG_FILE), &RunInfo::new(config, setup.device, setup.data.fingerprint.clone()))?;
    run_dir::write_metrics(&run.path, &state.history)?;
    let split_file = SplitFile {
        rng: config.split_rng,
        seed: config.seed,
        valid: setup.split.valid.clone(),
        train: setup.split.train.clone(),
    };
    run_dir::write_json_compact(&run.file(SPLIT_FILE), &split_file)?;

    let mut trainer = Trainer { config, dir: &run.path, setup: &setup, subsets: &subsets, vs, net, sgd, state };
    trainer.run(stop, log)
}

/// Refuses to resume on data files that differ from the run's, unless the user allowed it.
fn check_same_data(run: &RunDir, setup: &Setup, log: &mut dyn FnMut(&str)) -> Result<()> {
    let saved = run_dir::read_run_info(&run.path)?.data_fingerprint;
    let now = &setup.data.fingerprint;
    if saved.is_empty() || &saved == now {
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
    vs: nn::VarStore,
    net: AlexNet,
    sgd: Sgd,
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
            if stop.load(Ordering::SeqCst) && self.state.epoch < self.config.epochs {
                return Ok(Outcome::Interrupted { epoch: self.state.epoch, step: 0 });
            }
        }
        if self.state.history.is_empty() && self.state.checkpoint_id.is_empty() {
            // --epochs 0: nothing trained; the initial model is what gets saved and evaluated.
            resume::save_last(self.dir, &self.vs, &self.sgd, &mut self.state)?;
            self.save_best(&Metadata::new())?;
        }
        self.test(run_started, log)
    }

    /// Trains the rest of the current epoch, saving on `--save-every` and on a stop request.
    fn train_epoch(&mut self, stop: &AtomicBool, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<EpochEnd> {
        let (config, data) = (self.config, &self.setup.data);
        let epoch = self.state.epoch;
        let plan = split::epoch_plan(self.subsets.train.len(), config.seed, epoch);
        let steps = split::steps_per_epoch(self.subsets.train.len(), config.batch_size);
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
        let bar = crate::progress::steps_bar(steps as u64, format!("epoch {}/{}", epoch + 1, config.epochs));
        bar.set_position(self.state.step as u64);
        let plain_every = steps.div_ceil(4).max(1);
        let epoch_started = Instant::now();
        let mut sums_dev = DeviceSums::new(self.setup.device, self.state.step);
        let mut read = self.state.sums.clone();
        let mut last_read = Instant::now();
        for batch in batches {
            tch::manual_seed(step_seed(config.seed, epoch, self.state.step));
            let (loss, logits) = train_step(&self.net, &mut self.sgd, &batch, config.amp);
            sums_dev.add(&loss, &logits, &batch.labels);
            self.state.step += 1;
            bar.inc(1);
            let done = self.state.step == steps;
            let at_plain = !crate::progress::stderr_is_terminal() && self.state.step % plain_every == 0 && !done;
            let interrupted = stop.load(Ordering::SeqCst);
            let at_save = config.save_every > 0 && self.state.step % config.save_every == 0;
            if last_read.elapsed() >= READ_INTERVAL || done || at_plain || interrupted || at_save {
                last_read = Instant::now();
                read = sums_dev
                    .read_into(&self.state.sums, epoch_started.elapsed().as_secs_f64())
                    .map_err(|bad_step| self.non_finite_error(bad_step))?;
                bar.set_message(format!("loss {:.4} · {:.0} img/s", read.mean_loss(), read.images_per_sec()));
                if at_plain {
                    log(&format!(
                        "epoch {}/{} step {}/{steps} loss {:.4} {:.0} img/s",
                        epoch + 1,
                        config.epochs,
                        self.state.step,
                        read.mean_loss(),
                        read.images_per_sec()
                    ));
                }
            }
            if (interrupted || at_save) && !done {
                let mut snapshot = self.state.clone();
                snapshot.sums = read.clone();
                snapshot.seconds = run_started.elapsed().as_secs_f64();
                resume::save_last(self.dir, &self.vs, &self.sgd, &mut snapshot)?;
                if interrupted {
                    bar.abandon();
                    return Ok(EpochEnd::Interrupted);
                }
            }
        }
        bar.finish_and_clear();
        Ok(EpochEnd::Finished(read))
    }

    fn non_finite_error(&self, bad_step: i64) -> anyhow::Error {
        anyhow::anyhow!(
            "the loss became non-finite at epoch {}, step {} (learning rate {} too high?); \
             the last good checkpoint in {} is kept",
            self.state.epoch + 1,
            bad_step + 1,
            self.config.lr,
            self.dir.display()
        )
    }

    /// Validates, records the epoch's metrics, and saves the checkpoints and curves.
    fn end_epoch(&mut self, sums: EpochSums, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<()> {
        let config = self.config;
        let valid_started = Instant::now();
        let valid = self.evaluate(&self.net, &self.subsets.valid, false);
        let metrics = EpochMetrics {
            epoch: self.state.epoch + 1,
            train_loss: sums.mean_loss(),
            train_acc: sums.correct as f64 / sums.seen.max(1) as f64,
            val_loss: if valid.images > 0 { valid.loss } else { f64::NAN },
            val_acc: if valid.images > 0 { valid.accuracy } else { f64::NAN },
            lr: config.lr,
            seconds: sums.train_seconds + valid_started.elapsed().as_secs_f64(),
            images_per_sec: sums.images_per_sec(),
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
        resume::save_last(self.dir, &self.vs, &self.sgd, &mut self.state)?;
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

    fn evaluate(&self, net: &AlexNet, indices: &[i64], test: bool) -> EvalResult {
        let data = &self.setup.data;
        let (images, labels) =
            if test { (&data.test_images, &data.test_labels) } else { (&data.train_images, &data.train_labels) };
        let batches = Batches::new(images, labels, indices, self.config.batch_size, &self.setup.preprocess);
        evaluation::evaluate(net, batches, self.config.amp)
    }

    /// Tests the last model and, when it differs, the best one; writes `summary.json`.
    fn test(&self, run_started: Instant, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
        let last = self.evaluate(&self.net, &self.subsets.test, true);
        let best_path = self.dir.join(BEST_CHECKPOINT);
        let best = if best_path.exists() && self.state.best_epoch != self.state.history.last().map(|m| m.epoch) {
            let (best_vs, best_net) =
                setup::build_model(self.setup.device, self.config.num_classes, self.setup.channels_last)?;
            checkpoint::load_var_store(&best_vs, &best_path)?;
            self.evaluate(&best_net, &self.subsets.test, true)
        } else {
            last.clone()
        };
        let best_of_run = (self.state.best_epoch, self.state.best_val_acc);
        let summary = Summary::new(&best, &last, best_of_run, self.config.epochs, run_started.elapsed().as_secs_f64());
        run_dir::write_json(&self.dir.join(SUMMARY_FILE), &summary)?;
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

/// A seed for libtorch's generator before one step: mixes the run seed and the position
/// (SplitMix64), so dropout masks depend only on where the step is.
fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    let mut z = seed ^ ((epoch as u64) << 32 | step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// One optimisation step of the recipe: forward in train mode, cross-entropy, backward, SGD.
/// Returns the (detached) loss and logits; nothing is read back to the host.
pub fn train_step(net: &AlexNet, sgd: &mut Sgd, batch: &Batch, amp: bool) -> (Tensor, Tensor) {
    let logits = tch::autocast(amp, || net.forward_t(&batch.images, true)).to_kind(Kind::Float);
    let loss = logits.cross_entropy_for_logits(&batch.labels);
    sgd.zero_grad();
    loss.backward();
    sgd.step();
    (loss.detach(), logits.detach())
}

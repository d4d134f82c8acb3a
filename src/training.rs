//! The recipe's training loop, with what a run leaves behind and how it resumes.
//!
//! A run folder holds `config.json`, `metrics.jsonl`, `last.safetensors` (+ `last.optim.safetensors`,
//! the momentum buffers and the loop's position), `best.safetensors`, `curves.svg` and, at the
//! end, `summary.json`. Every file is written to a temporary file and renamed.
//!
//! Randomness is a pure function of `(seed, epoch, step)`: the split, each epoch's order and
//! flips (ChaCha8) and libtorch's generator for dropout (reseeded before every step). A resumed
//! run therefore draws exactly what the uninterrupted run would have drawn, with no RNG state
//! to save beyond the position.
//!
//! Losses and accuracies are summed on the device and read back about once a second, so a step
//! costs no host synchronisation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::batches::{Batch, Batches};
use crate::checkpoint::{self, Metadata};
use crate::cifar;
use crate::download::{self, Source};
use crate::evaluation::{self, EvalResult};
use crate::model::{self, AlexNet};
use crate::sgd::{Sgd, SgdConfig};
use crate::split::{self, Split};
use crate::transforms::{self, Preprocess};

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LAST_CHECKPOINT: &str = "last.safetensors";
pub const LAST_OPTIMIZER: &str = "last.optim.safetensors";
pub const BEST_CHECKPOINT: &str = "best.safetensors";
pub const SUMMARY_FILE: &str = "summary.json";
pub const CURVES_FILE: &str = "curves.svg";

/// Time between two reads of the device-side loss sums (progress display, finiteness check):
/// one host synchronisation per second, whatever the step time.
const READ_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Every setting of a run; defaults are the recipe's. Saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub valid_size: f64,
    pub seed: u64,
    pub augment: bool,
    pub num_classes: i64,
    pub data_dir: PathBuf,
    pub download: bool,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads; `None` keeps libtorch's default (one per physical core).
    pub threads: Option<usize>,
    pub limit_train: Option<usize>,
    pub limit_val: Option<usize>,
    pub limit_test: Option<usize>,
    /// bf16 autocast on CUDA (no effect on the CPU).
    pub amp: bool,
    /// `channels-last` (NHWC strides for images and conv weights; measured faster on both the
    /// CPU and CUDA) or `contiguous` (NCHW, as PyTorch's default).
    pub memory_format: String,
    /// Also save `last.safetensors` every this many steps (0: only at the end of each epoch).
    pub save_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let sgd = SgdConfig::default();
        Self {
            epochs: 20,
            batch_size: 64,
            lr: sgd.lr,
            momentum: sgd.momentum,
            weight_decay: sgd.weight_decay,
            valid_size: 0.1,
            seed: 1,
            augment: true,
            num_classes: model::CIFAR10_CLASSES,
            data_dir: PathBuf::from("data"),
            download: true,
            device: "auto".into(),
            threads: None,
            limit_train: None,
            limit_val: None,
            limit_test: None,
            amp: false,
            memory_format: "channels-last".into(),
            save_every: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every value before anything is loaded or written.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("learning rate must be a positive number, got {}", self.lr);
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            bail!("momentum must be in [0, 1), got {}", self.momentum);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("weight decay must be a non-negative number, got {}", self.weight_decay);
        }
        if !(0.0..1.0).contains(&self.valid_size) {
            bail!("valid size must be in [0, 1), got {}", self.valid_size);
        }
        if self.threads == Some(0) {
            bail!("threads must be at least 1 (leave --threads out for libtorch's default)");
        }
        for (name, limit) in
            [("limit-train", self.limit_train), ("limit-val", self.limit_val), ("limit-test", self.limit_test)]
        {
            if limit == Some(0) {
                bail!("--{name} must be at least 1");
            }
        }
        if self.limit_train.is_none() && self.valid_size * 50_000.0 >= 49_999.0 {
            bail!("valid size {} leaves no training image", self.valid_size);
        }
        if !["channels-last", "contiguous"].contains(&self.memory_format.as_str()) {
            bail!("memory format must be channels-last or contiguous, got `{}`", self.memory_format);
        }
        crate::device::parse_device(&self.device)?;
        Ok(())
    }

    pub fn sgd(&self) -> SgdConfig {
        SgdConfig { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay }
    }
}

/// The line of `metrics.jsonl` for one epoch (1-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_sec: f64,
}

/// Sums over the steps done so far in the current epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct EpochSums {
    loss_sum: f64,
    correct: i64,
    seen: i64,
    train_seconds: f64,
}

/// Where the loop stands: stored in `last.optim.safetensors` so that `--resume` continues.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopState {
    /// 0-based epoch in progress (or next to start when `step == 0`).
    epoch: usize,
    /// Steps already done in `epoch`.
    step: usize,
    sums: EpochSums,
    history: Vec<EpochMetrics>,
    best_val_acc: Option<f64>,
    best_epoch: Option<usize>,
    seconds: f64,
    checkpoint_id: String,
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
    pub best_val_acc: Option<f64>,
    pub epochs: usize,
    pub total_seconds: f64,
}

/// How a call to [`train`] ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Summary),
    /// Stopped by the stop flag (Ctrl-C) after `step` steps of 1-based `epoch`; the checkpoint
    /// holds that position.
    Interrupted {
        epoch: usize,
        step: usize,
    },
}

/// Where a run writes, and whether it continues the run already there.
pub struct RunDir {
    pub path: PathBuf,
    pub resume: bool,
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    checkpoint::write_atomically(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn write_metrics(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text += &serde_json::to_string(m)?;
        text.push('\n');
    }
    checkpoint::write_atomically(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads the config saved in a run folder.
pub fn read_config(run_dir: &Path) -> Result<TrainConfig> {
    let path = run_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid run config", path.display()))
}

/// Creates the output folder and proves it writable, before any data is loaded.
fn prepare_run_dir(run: &RunDir) -> Result<()> {
    let dir = &run.path;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").with_context(|| format!("output folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    if !run.resume && dir.join(LAST_CHECKPOINT).exists() {
        bail!("{} already holds a run; pass --resume {0} to continue it, or choose another --out", dir.display());
    }
    if run.resume && !dir.join(LAST_CHECKPOINT).exists() {
        bail!("cannot resume: {} has no {LAST_CHECKPOINT}", dir.display());
    }
    // Temporary files of a process killed while writing: never read, safe to remove.
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// A seed for libtorch's generator before one step: mixes the run seed and the position
/// (SplitMix64), so dropout masks depend only on where the step is.
fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    let mut z = seed ^ ((epoch as u64) << 32 | step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

fn first_n(indices: &[i64], limit: Option<usize>) -> Vec<i64> {
    indices[..limit.unwrap_or(usize::MAX).min(indices.len())].to_vec()
}

/// Converts the 4-D (conv) weights to channels-last strides.
fn model_to_channels_last(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 {
                var.set_data(&transforms::to_channels_last(&var));
            }
        }
    });
}

/// The device, data, split and model a run (or an evaluation) works with.
pub struct Setup {
    pub device: Device,
    pub data: cifar::Cifar10,
    pub split: Split,
    pub preprocess: Preprocess,
    pub channels_last: bool,
}

/// Chooses the device, applies thread settings, and loads (downloading if needed) the data set
/// onto the device.
pub fn setup(config: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<Setup> {
    let device = crate::device::parse_device(&config.device)?;
    if let Some(threads) = config.threads {
        tch::set_num_threads(threads as i32);
    }
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    if config.amp {
        crate::ffi::set_cuda_autocast_bf16(true)?;
    }
    let channels_last = config.memory_format == "channels-last";
    let folder = download::ensure_cifar10(&config.data_dir, config.download, &Source::default())?;
    let started = Instant::now();
    let data = cifar::load_dir(&folder)?.to_device(device);
    log(&format!(
        "Loaded CIFAR-10 from {} in {:.2} s onto {}",
        folder.display(),
        started.elapsed().as_secs_f64(),
        crate::device::device_name(device)
    ));
    let split = split::train_valid_split(data.train_labels.size()[0] as usize, config.valid_size, config.seed)?;
    let preprocess = Preprocess::new(device).channels_last(channels_last);
    Ok(Setup { device, data, split, preprocess, channels_last })
}

/// The model on `device`, with the variable store that owns its weights.
pub fn build_model(device: Device, num_classes: i64, channels_last: bool) -> Result<(nn::VarStore, AlexNet)> {
    let vs = nn::VarStore::new(device);
    let net = model::alexnet(&vs.root(), num_classes)?;
    if channels_last {
        model_to_channels_last(&vs);
    }
    Ok((vs, net))
}

fn save_last(run_dir: &Path, vs: &nn::VarStore, sgd: &Sgd, state: &mut LoopState) -> Result<()> {
    state.checkpoint_id = format!("{}-{}-{}", state.epoch, state.step, std::process::id());
    let mut meta = Metadata::new();
    meta.insert("checkpoint_id".into(), state.checkpoint_id.clone());
    meta.insert("epoch".into(), state.epoch.to_string());
    meta.insert("step".into(), state.step.to_string());
    let mut optim_meta = meta.clone();
    optim_meta.insert("loop_state".into(), serde_json::to_string(state)?);
    let buffers = sgd.momentum_buffers();
    checkpoint::save_tensors(&run_dir.join(LAST_OPTIMIZER), buffers.iter().map(|(k, v)| (k.as_str(), v)), &optim_meta)?;
    checkpoint::save_var_store(vs, &run_dir.join(LAST_CHECKPOINT), &meta)?;
    write_metrics(&run_dir.join(METRICS_FILE), &state.history)
}

fn load_last(run_dir: &Path, vs: &nn::VarStore, sgd: &mut Sgd) -> Result<LoopState> {
    let optim_path = run_dir.join(LAST_OPTIMIZER);
    let optim = checkpoint::load_tensors(&optim_path)?;
    let state: LoopState = optim
        .metadata
        .get("loop_state")
        .and_then(|s| serde_json::from_str(s).ok())
        .with_context(|| format!("{} has no valid loop state", optim_path.display()))?;
    let meta = checkpoint::load_var_store(vs, &run_dir.join(LAST_CHECKPOINT))?;
    if meta.get("checkpoint_id") != Some(&state.checkpoint_id) {
        bail!(
            "{} and {} were written at different moments (a crash between the two writes?); cannot resume exactly",
            LAST_CHECKPOINT,
            LAST_OPTIMIZER
        );
    }
    sgd.set_momentum_buffers(&optim.tensors).map_err(|e| anyhow::anyhow!("{}: {e}", optim_path.display()))?;
    Ok(state)
}

/// Trains as `config` says, writing into `run`. `stop` (set by Ctrl-C) ends the run after the
/// current step with a consistent checkpoint. `log` receives the human-readable lines.
pub fn train(config: &TrainConfig, run: &RunDir, stop: &AtomicBool, log: &mut dyn FnMut(&str)) -> Result<Outcome> {
    config.validate()?;
    prepare_run_dir(run)?;
    let run_dir = run.path.as_path();
    let Setup { device, data, split, preprocess, channels_last } = match setup(config, log) {
        Ok(setup) => setup,
        Err(e) => {
            // Leave no empty run folder behind a run that never started (only removes it if empty).
            if !run.resume {
                let _ = std::fs::remove_dir(run_dir);
            }
            return Err(e);
        }
    };
    let train_idx = first_n(&split.train, config.limit_train);
    let valid_idx = first_n(&split.valid, config.limit_val);
    let test_idx: Vec<i64> = first_n(&(0..data.test_labels.size()[0]).collect::<Vec<_>>(), config.limit_test);
    for (name, limit, len) in [
        ("train", config.limit_train, split.train.len()),
        ("val", config.limit_val, split.valid.len()),
        ("test", config.limit_test, data.test_labels.size()[0] as usize),
    ] {
        if limit.is_some_and(|l| l > len) {
            log(&format!(
                "note: --limit-{name} {} is larger than the split ({len} images); using all {len}",
                limit.unwrap_or(0)
            ));
        }
    }
    log(&format!(
        "Split (seed {}): {} train / {} validation images (using {} / {}), {} test images (using {})",
        config.seed,
        split.train.len(),
        split.valid.len(),
        train_idx.len(),
        valid_idx.len(),
        data.test_labels.size()[0],
        test_idx.len()
    ));

    // The initial weights come from libtorch's generator: seed it, as the run's one seed.
    tch::manual_seed(config.seed as i64);
    let (vs, net) = build_model(device, config.num_classes, channels_last)?;
    let mut sgd = Sgd::new(&vs, config.sgd());
    let mut state = if run.resume {
        let state = load_last(run_dir, &vs, &mut sgd)?;
        log(&format!("Resuming {} at epoch {}, step {}", run_dir.display(), state.epoch + 1, state.step));
        state
    } else {
        LoopState {
            epoch: 0,
            step: 0,
            sums: EpochSums::default(),
            history: Vec::new(),
            best_val_acc: None,
            best_epoch: None,
            seconds: 0.0,
            checkpoint_id: String::new(),
        }
    };
    write_json(&run_dir.join(CONFIG_FILE), &RunInfo::new(config, device))?;

    let steps = split::steps_per_epoch(train_idx.len(), config.batch_size);
    let run_started = Instant::now() - std::time::Duration::from_secs_f64(state.seconds);
    while state.epoch < config.epochs {
        let epoch = state.epoch;
        let plan = split::epoch_plan(train_idx.len(), config.seed, epoch);
        let batches = Batches::for_epoch(
            &data.train_images,
            &data.train_labels,
            &train_idx,
            &plan,
            config.augment,
            config.batch_size,
            &preprocess,
        )
        .skip_steps(state.step);
        let bar = crate::progress::steps_bar(steps as u64, format!("epoch {}/{}", epoch + 1, config.epochs));
        bar.set_position(state.step as u64);
        let plain_every = steps.div_ceil(4).max(1);
        let epoch_started = Instant::now();
        let mut sums_dev = DeviceSums::new(device, state.step);
        let mut read = state.sums.clone();
        let mut last_read = Instant::now();
        for batch in batches {
            let step = state.step;
            tch::manual_seed(step_seed(config.seed, epoch, step));
            let (loss, logits) = train_step(&net, &mut sgd, &batch, config.amp);
            sums_dev.add(&loss, &logits, &batch.labels);
            state.step += 1;
            bar.inc(1);
            let done = state.step == steps;
            let at_plain = !crate::progress::stderr_is_terminal() && state.step % plain_every == 0 && !done;
            let interrupted = stop.load(Ordering::SeqCst);
            let at_save = config.save_every > 0 && state.step % config.save_every == 0;
            if last_read.elapsed() >= READ_INTERVAL || done || at_plain || interrupted || at_save {
                last_read = Instant::now();
                read = sums_dev.read_into(&state.sums, epoch_started.elapsed().as_secs_f64()).map_err(|bad_step| {
                    anyhow::anyhow!(
                        "the loss became non-finite at epoch {}, step {} (learning rate {} too high?); \
                         the last good checkpoint in {} is kept",
                        epoch + 1,
                        bad_step + 1,
                        config.lr,
                        run_dir.display()
                    )
                })?;
                let rate = read.seen as f64 / read.train_seconds.max(1e-9);
                bar.set_message(format!("loss {:.4} · {:.0} img/s", read.loss_sum / read.seen.max(1) as f64, rate));
                if at_plain {
                    log(&format!(
                        "epoch {}/{} step {}/{} loss {:.4} {:.0} img/s",
                        epoch + 1,
                        config.epochs,
                        state.step,
                        steps,
                        read.loss_sum / read.seen.max(1) as f64,
                        rate
                    ));
                }
            }
            if (interrupted || at_save) && !done {
                let mut snapshot = state.clone();
                snapshot.sums = read.clone();
                snapshot.seconds = run_started.elapsed().as_secs_f64();
                save_last(run_dir, &vs, &sgd, &mut snapshot)?;
                if interrupted {
                    bar.abandon();
                    return Ok(Outcome::Interrupted { epoch: epoch + 1, step: state.step });
                }
            }
        }
        bar.finish_and_clear();
        let sums = read;
        let valid_started = Instant::now();
        let valid = evaluation::evaluate(
            &net,
            Batches::new(&data.train_images, &data.train_labels, &valid_idx, config.batch_size, &preprocess),
            config.amp,
        );
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: sums.loss_sum / sums.seen.max(1) as f64,
            train_acc: sums.correct as f64 / sums.seen.max(1) as f64,
            val_loss: if valid.images > 0 { valid.loss } else { f64::NAN },
            val_acc: if valid.images > 0 { valid.accuracy } else { f64::NAN },
            lr: config.lr,
            seconds: sums.train_seconds + valid_started.elapsed().as_secs_f64(),
            images_per_sec: sums.seen as f64 / sums.train_seconds.max(1e-9),
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
        let is_best = valid.images == 0 || state.best_val_acc.is_none_or(|b| metrics.val_acc > b);
        state.history.push(metrics.clone());
        state.epoch += 1;
        state.step = 0;
        state.sums = EpochSums::default();
        state.seconds = run_started.elapsed().as_secs_f64();
        if is_best {
            state.best_val_acc = Some(metrics.val_acc).filter(|v| v.is_finite());
            state.best_epoch = Some(metrics.epoch);
        }
        save_last(run_dir, &vs, &sgd, &mut state)?;
        if is_best {
            let meta = Metadata::from([("epoch".to_string(), metrics.epoch.to_string())]);
            checkpoint::save_var_store(&vs, &run_dir.join(BEST_CHECKPOINT), &meta)?;
        }
        if let Err(e) = crate::plot::write_curves(&run_dir.join(CURVES_FILE), &state.history) {
            log(&format!("warning: could not draw {CURVES_FILE}: {e:#}"));
        }
        if stop.load(Ordering::SeqCst) && state.epoch < config.epochs {
            return Ok(Outcome::Interrupted { epoch: state.epoch, step: 0 });
        }
    }
    if state.history.is_empty() && !run.resume {
        // --epochs 0: nothing trained; the initial model is what gets saved and evaluated.
        save_last(run_dir, &vs, &sgd, &mut state)?;
        checkpoint::save_var_store(&vs, &run_dir.join(BEST_CHECKPOINT), &Metadata::new())?;
    }

    let test_batches = |p| Batches::new(&data.test_images, &data.test_labels, &test_idx, config.batch_size, p);
    let last = evaluation::evaluate(&net, test_batches(&preprocess), config.amp);
    let best = if run_dir.join(BEST_CHECKPOINT).exists() && state.best_epoch != state.history.last().map(|m| m.epoch) {
        let (best_vs, best_net) = build_model(device, config.num_classes, channels_last)?;
        checkpoint::load_var_store(&best_vs, &run_dir.join(BEST_CHECKPOINT))?;
        evaluation::evaluate(&best_net, test_batches(&preprocess), config.amp)
    } else {
        last.clone()
    };
    let summary = summarize(&state, &best, &last, config.epochs, run_started.elapsed().as_secs_f64());
    write_json(&run_dir.join(SUMMARY_FILE), &summary)?;
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

fn summarize(state: &LoopState, best: &EvalResult, last: &EvalResult, epochs: usize, seconds: f64) -> Summary {
    Summary {
        test_acc_best: best.accuracy,
        test_acc_last: last.accuracy,
        test_loss_best: best.loss,
        test_loss_last: last.loss,
        test_images: last.images,
        best_epoch: state.best_epoch,
        best_val_acc: state.best_val_acc,
        epochs,
        total_seconds: seconds,
    }
}

/// Loss and accuracy sums of the current epoch, kept on the device, plus a device-side step
/// counter and the first step whose loss was not finite (-1 while none).
struct DeviceSums {
    loss_sum: Tensor,
    correct: Tensor,
    seen: i64,
    step: Tensor,
    first_bad_step: Tensor,
}

impl DeviceSums {
    fn new(device: Device, first_step: usize) -> Self {
        Self {
            loss_sum: Tensor::zeros([], (Kind::Double, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            seen: 0,
            step: Tensor::full([], first_step as i64, (Kind::Int64, device)),
            first_bad_step: Tensor::full([], -1, (Kind::Int64, device)),
        }
    }

    fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) {
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
    fn read_into(&self, base: &EpochSums, seconds: f64) -> std::result::Result<EpochSums, i64> {
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

/// `config.json`: the settings plus what produced the run.
#[derive(Serialize)]
struct RunInfo<'a> {
    #[serde(flatten)]
    config: &'a TrainConfig,
    resolved_device: String,
    libtorch_threads: i32,
    crate_version: &'static str,
    tch_version: &'static str,
    libtorch_version: &'static str,
    cuda_available: bool,
    mean: [f64; 3],
    std: [f64; 3],
}

impl<'a> RunInfo<'a> {
    fn new(config: &'a TrainConfig, device: Device) -> Self {
        Self {
            config,
            resolved_device: crate::device::device_name(device),
            libtorch_threads: tch::get_num_threads(),
            crate_version: env!("CARGO_PKG_VERSION"),
            tch_version: "0.26",
            libtorch_version: "2.13.0",
            cuda_available: tch::Cuda::is_available(),
            mean: transforms::CIFAR_MEAN,
            std: transforms::CIFAR_STD,
        }
    }
}

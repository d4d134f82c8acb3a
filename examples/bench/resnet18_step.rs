//! `--only-resnet18-step`: the `resnet18-cifar` recipe's training step as the trainer runs it
//! (`Batches::for_epoch` with the recipe's random crop and flip, the fused CPU kernel, the
//! run's memory format, `model::resnet18`, the recipe's SGD, `train::train_step` and the
//! epoch's device-side loss and accuracy sums), batch 128 at 32×32, and the test pass's
//! forward at batch 100 (`evaluate_quietly`, as after every epoch). `scripts/bench_resnet18.py`
//! times kuangliu/pytorch-cifar's `main.py` loop the same way.
//!
//! With `--phases`, a second pass times the parts of a step one by one (the batch, forward and
//! loss, zero_grad and backward, the optimizer step), to see where the time goes.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch_alexnet::data::batches::Batches;
use tch_alexnet::train::metrics::DeviceSums;
use tch_alexnet::train::optim::cross_entropy;
use tch_alexnet::train::recipe::Recipe;
use tch_alexnet::train::{self as training, evaluation, optimizer_setup, TrainConfig, Zoo};

/// What the measurement takes from the command line.
pub struct Options<'a> {
    pub data_dir: &'a Path,
    pub device: &'a str,
    pub threads: usize,
    pub memory_format: &'a str,
    /// Timed steps (training) or batches (evaluation) per repetition.
    pub train_steps: usize,
    pub eval_batches: usize,
    pub reps: usize,
    pub phases: bool,
}

/// The report's fields: `train_images_per_sec` (median), `train_runs`, `eval_images_per_sec`,
/// `eval_runs`, `phases_seconds` with `--phases`, and the one-minute load average before and
/// after (`load_average`).
pub fn measure(opts: &Options) -> Result<serde_json::Value> {
    let load_before = super::load_average();
    let recipe = Recipe::Resnet18Cifar.config();
    let config = TrainConfig {
        data_dir: opts.data_dir.to_path_buf(),
        download: false,
        device: opts.device.to_string(),
        threads: Some(opts.threads),
        memory_format: opts.memory_format.to_string(),
        ..recipe
    };
    config.validate()?;
    let setup = training::setup(&config, &Zoo, &mut |line| eprintln!("{line}"))?;
    let (device, bs) = (setup.device, config.batch_size);
    tch::manual_seed(config.seed as i64);
    let (vs, net) = training::build_network(&Zoo, &config, device, setup.channels_last)?;
    let mut sgd = optimizer_setup::build_optimizer(&vs, &net.parameter_names(), &config)?;
    let (images, labels) = (&setup.data.train_images, &setup.data.train_labels);
    let plan = setup.preprocess.epoch_plan(setup.split.train.len(), config.seed, 0);
    let mut batches =
        Batches::for_epoch(images, labels, &setup.split.train, &plan, config.augment, bs, &setup.preprocess);
    let needed = 1 + opts.reps * opts.train_steps * (1 + opts.phases as usize);
    anyhow::ensure!(needed <= batches.steps(), "{needed} steps do not fit in one epoch ({})", batches.steps());
    let mut sums = DeviceSums::new(device, 0);
    let mut step = |batches: &mut Batches| -> Result<()> {
        let batch = batches.next().context("the epoch ran out of batches")?;
        let (loss, logits) = training::train_step(net.as_ref(), sgd.as_mut(), &batch, config.amp)?;
        sums.add(&loss, &logits, &batch.labels);
        Ok(())
    };
    step(&mut batches)?; // warm-up
    let mut failed = None;
    let train_rates = super::time_images(opts.reps, opts.train_steps * bs, device, || {
        for _ in 0..opts.train_steps {
            if let Err(e) = step(&mut batches) {
                failed.get_or_insert(e);
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    eprintln!("resnet18 training step ({}): {:.1} images/s", opts.memory_format, super::median(train_rates.clone()));

    let phases = if opts.phases {
        let phases = time_phases(net.as_ref(), sgd.as_mut(), &mut batches, opts.reps * opts.train_steps)?;
        eprintln!("phases (s per step): {phases}");
        Some(phases)
    } else {
        None
    };

    // The test pass: batch 100 in eval mode, loss and confusion summed on the device.
    let eval_bs = config.eval_batch_size.unwrap_or(bs);
    let test_indices: Vec<i64> = (0..setup.data.test_len() as i64).collect();
    let per_rep = opts.eval_batches * eval_bs;
    anyhow::ensure!(per_rep * (opts.reps + 1) <= test_indices.len(), "too few test images for the evaluation");
    let eval_pass = |rep: usize, batches: usize| {
        let chosen = &test_indices[rep * per_rep..][..batches * eval_bs];
        let test = Batches::new(&setup.data.test_images, &setup.data.test_labels, chosen, eval_bs, &setup.preprocess);
        evaluation::evaluate_quietly(net.as_ref(), config.num_classes, test, config.bf16(), || ())
    };
    eval_pass(opts.reps, 1)?; // warm-up, on images the timed passes do not use
    let mut rep = 0;
    let eval_rates = super::time_images(opts.reps, per_rep, device, || {
        eval_pass(rep, opts.eval_batches).expect("an evaluation pass failed");
        rep += 1;
    });
    eprintln!("resnet18 evaluation (batch {eval_bs}): {:.1} images/s", super::median(eval_rates.clone()));

    Ok(serde_json::json!({
        "measure": "resnet18-cifar recipe",
        "device": tch_alexnet::device::device_name(device),
        "threads": opts.threads,
        "batch_size": bs,
        "eval_batch_size": eval_bs,
        "memory_format": opts.memory_format,
        "onednn": tch_alexnet::ffi::onednn_enabled()?,
        "train_steps": opts.train_steps,
        "eval_batches": opts.eval_batches,
        "train_images_per_sec": super::median(train_rates.clone()),
        "train_runs": train_rates,
        "eval_images_per_sec": super::median(eval_rates.clone()),
        "eval_runs": eval_rates,
        "phases_seconds": phases,
        "data_folder": tch_alexnet::data::download::ensure_cifar10(opts.data_dir, false, &Default::default())?,
        "peak_rss_mb": super::peak_rss_mb(),
        "load_average": [load_before, super::load_average()],
    }))
}

/// Median seconds per step of each part of [`training::train_step`], done one by one over
/// `steps` steps: the batch (gather, crop, flip, normalise), forward and loss, zero_grad and
/// backward, the optimizer step.
fn time_phases(
    net: &dyn tch::nn::ModuleT,
    optimizer: &mut dyn training::optim::Optimizer,
    batches: &mut Batches,
    steps: usize,
) -> Result<serde_json::Value> {
    let device = batches.device();
    let mut runs: [Vec<f64>; 4] = Default::default();
    let mut lap = |i: usize, t: &mut Instant| {
        super::sync(device);
        runs[i].push(t.elapsed().as_secs_f64());
        *t = Instant::now();
    };
    for _ in 0..steps {
        let mut t = Instant::now();
        let batch = batches.next().context("the epoch ran out of batches")?;
        lap(0, &mut t);
        let logits = net.forward_t(&batch.images, true);
        let loss = cross_entropy(&logits, &batch.labels, 0.0)?;
        lap(1, &mut t);
        optimizer.zero_grad();
        loss.backward();
        lap(2, &mut t);
        optimizer.step()?;
        lap(3, &mut t);
    }
    let [data, forward, backward, step] = runs.map(super::median);
    Ok(serde_json::json!({ "data": data, "forward": forward, "backward": backward, "optimizer": step }))
}

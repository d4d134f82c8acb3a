//! Runs that cross between PyTorch and this crate, both ways: a PyTorch training checkpoint
//! continued here step for step, ours continued in PyTorch, the CLI's `.pth` paths (`convert`,
//! `train --resume FILE.pth`, `train --init-from`), and `evaluate`/`predict`/`convert` on a
//! file PyTorch wrote.
//!
//! Every PyTorch file is made at test time by tests/fixtures/pytorch_interop.py, run with the
//! setup's Python; without one these tests say SKIPPED (and fail under
//! `TCH_ALEXNET_REQUIRE_ALL=1`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{assert_clean_failure, cpu_train_args, example_bin, read_json, run_bin, synthetic_data_dir, with_flags};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use tch_alexnet::formats::safetensors as checkpoint;
use tch_alexnet::formats::training_checkpoint::{PytorchOptimizer, TrainingCheckpoint};
use tch_alexnet::model;
use tch_alexnet::train::optim::Optimizer;
use tch_alexnet::train::optimizer_setup::{build_optimizer, momentum_buffers};
use tch_alexnet::train::resume;
use tch_alexnet::train::run_dir::{RunDir, Start};
use tch_alexnet::train::TrainConfig;

/// The largest differences allowed between the two sides: about ten times the largest measured
/// (libtorch 2.13.0, x86-64 with AVX-512; the tests print them), never below four float32 ulps of
/// the values compared. The optimizers apply PyTorch's own operations, so every figure measures
/// 0 (SGD: weights, buffers and momentum after three steps; AdamW: weights and moments) and each
/// bound is that floor. (With the earlier hand-written SGD: 3.7e-9 and 1.5e-8.)
const STATE_TOLERANCE: f64 = 0.0;
const MOMENTUM_TOLERANCE: f64 = 0.0;
/// Weights, BatchNorm buffers and Adam's state after PyTorch's two AdamW steps and one here,
/// and after five and five either way with a warm-up and a cosine (ten steps, where float32
/// ReLU and max-pool decisions could flip: both sides run libtorch 2.13's same kernels, so
/// none does): all measure 0.
const ADAM_TOLERANCE: f64 = 0.0;

/// Runs tests/fixtures/pytorch_interop.py with `args`; panics with its stderr on failure and
/// returns its stdout.
fn interop(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(common::project_root().join("tests/fixtures/pytorch_interop.py"))
        .args(args)
        .output()
        .expect("cannot start the reference Python");
    assert!(out.status.success(), "pytorch_interop.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `count` batches of four random 227×227 images and their labels (`b1_images`, `b1_labels`,
/// …), written to `dir/batches.safetensors`.
fn batches(dir: &Path, count: usize) -> (PathBuf, BTreeMap<String, Tensor>) {
    tch::manual_seed(12);
    let mut tensors = BTreeMap::new();
    for i in 0..count {
        let labels = match i {
            0 => Tensor::from_slice(&[3i64, 7, 0, 9]),
            1 => Tensor::from_slice(&[1i64, 1, 4, 8]),
            2 => Tensor::from_slice(&[2i64, 6, 5, 0]),
            _ => Tensor::randint(10, [4], (Kind::Int64, Device::Cpu)),
        };
        tensors.insert(format!("b{}_images", i + 1), Tensor::randn([4, 3, 227, 227], (Kind::Float, Device::Cpu)));
        tensors.insert(format!("b{}_labels", i + 1), labels);
    }
    let path = dir.join("batches.safetensors");
    checkpoint::save_tensors(&path, tensors.iter().map(|(k, v)| (k.as_str(), v)), &Default::default()).unwrap();
    (path, tensors)
}

/// A fresh model (seeded, dropout off, contiguous layout) as the parity tests use.
fn fresh_model(seed: i64) -> (nn::VarStore, model::AlexNet) {
    tch::manual_seed(seed);
    let (vs, net) = tch_alexnet::train::build_model(Device::Cpu, 10, false).unwrap();
    (vs, net.with_dropout(0.0))
}

/// PyTorch's side of a test: `command` of tests/fixtures/pytorch_interop.py from a fresh model
/// (seed 11, as `init.safetensors`) on `count` [`batches`], its files in `dir/torch`. Returns
/// that folder and the batches.
fn pytorch_run(python: &Path, dir: &Path, command: &str, count: usize) -> (PathBuf, BTreeMap<String, Tensor>) {
    let (batches_path, batches) = batches(dir, count);
    let (init_vs, _) = fresh_model(11);
    let init = dir.join("init.safetensors");
    checkpoint::save_var_store(&init_vs, &init, &Default::default()).unwrap();
    let torch_dir = dir.join("torch");
    std::fs::create_dir(&torch_dir).unwrap();
    interop(python, &[command, s(&init), s(&batches_path), s(&torch_dir)]);
    (torch_dir, batches)
}

/// One SGD step on batch `name` (`b1`, `b2`, `b3`), as the trainer takes it.
fn step(net: &model::AlexNet, sgd: &mut dyn Optimizer, batches: &BTreeMap<String, Tensor>, name: &str) {
    sgd.zero_grad();
    let logits = net.forward_t(&batches[&format!("{name}_images")], true);
    logits.cross_entropy_for_logits(&batches[&format!("{name}_labels")]).backward();
    sgd.step().unwrap();
}

/// The trainer's optimizer for these SGD settings.
fn sgd(vs: &nn::VarStore, lr: f64, momentum: f64, weight_decay: f64) -> Box<dyn Optimizer> {
    build_optimizer(
        vs,
        &tch_alexnet::model::parameter_names(),
        &TrainConfig { lr, momentum, weight_decay, ..TrainConfig::default() },
    )
    .unwrap()
}

/// Weights, BatchNorm buffers and momentum buffers against PyTorch's after three steps
/// (`state3.safetensors`, `momentum3.safetensors` in `torch_dir`).
fn assert_matches_pytorch(what: &str, vs: &nn::VarStore, sgd: &dyn Optimizer, torch_dir: &Path) {
    let torch_state = common::tensors(&torch_dir.join("state3.safetensors"));
    let state: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    for (name, t) in &state {
        assert_eq!(t.kind(), torch_state.get(name).map(Tensor::kind).unwrap_or(t.kind()), "{what}: dtype of {name}");
    }
    common::assert_all_close(&format!("{what}: state after 3 steps vs PyTorch"), &state, &torch_state, STATE_TOLERANCE);
    for block in ["conv_block1", "conv_block5"] {
        assert_eq!(state[&format!("{block}.1.num_batches_tracked")].int64_value(&[]), 3, "{what}: {block}");
    }
    let torch_momentum = common::tensors(&torch_dir.join("momentum3.safetensors"));
    let momentum = momentum_buffers(sgd);
    assert_eq!(momentum.len(), model::parameter_names().len(), "{what}: momentum buffers");
    let what = format!("{what}: momentum after 3 steps vs PyTorch");
    common::assert_all_close(&what, &momentum, &torch_momentum, MOMENTUM_TOLERANCE);
}

/// PyTorch takes two steps and saves `{'model', 'optimizer', 'epoch': 2}`; the trainer's own
/// start-up path (`resume::initial_state` with `Start::PytorchCheckpoint`) loads it and the
/// third step here lands where PyTorch's third step does.
#[test]
fn a_pytorch_training_checkpoint_continues_here_step_for_step() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let (torch_dir, batches) = pytorch_run(&python, dir.path(), "steps-then-save", 3);
    let ckpt_path = torch_dir.join("ckpt.pth");

    // What the file holds, through the library's reader.
    let ckpt = TrainingCheckpoint::read_pytorch(&ckpt_path).unwrap();
    assert_eq!(ckpt.epoch, 2);
    assert_eq!(ckpt.optimizer_class(), Ok(PytorchOptimizer::Sgd));
    assert!(ckpt.scheduler.is_none());

    // The trainer's path: settings from the file, then initial_state.
    let (vs, net) = fresh_model(99);
    assert_eq!(ckpt.model.len(), vs.variables().len());
    let base = TrainConfig { lr: 1.0, momentum: 0.0, weight_decay: 0.0, ..TrainConfig::default() };
    let config = resume::config_of_pytorch_checkpoint(&ckpt_path, &base).unwrap();
    assert_eq!((config.lr, config.momentum, config.weight_decay), (0.005, 0.9, 0.005));
    let mut sgd = build_optimizer(&vs, &tch_alexnet::model::parameter_names(), &config).unwrap();
    let run =
        RunDir { start: Start::PytorchCheckpoint { path: ckpt_path.clone() }, ..RunDir::new(dir.path().join("run")) };
    let mut log = Vec::new();
    let state =
        resume::initial_state(&run, &vs, sgd.as_mut(), None, &|_| Ok(None), &mut |line| log.push(line.to_string()))
            .unwrap();
    assert_eq!((state.epoch, state.step), (2, 0), "the run continues after the file's epoch");
    assert!(log.iter().any(|l| l.contains("after epoch 2")), "{log:?}");
    assert_eq!(vs.variables()["conv_block1.1.num_batches_tracked"].int64_value(&[]), 2);

    step(&net, sgd.as_mut(), &batches, "b3");
    assert_matches_pytorch("PyTorch 2 steps + Rust 1", &vs, sgd.as_ref(), &torch_dir);
}

/// The other way: two steps here, `TrainingCheckpoint::write_pytorch`, and PyTorch continues
/// it (`torch.load` with weights_only, strict `load_state_dict` of model and optimizer, the
/// SGD settings taken from the file) to where the third step here lands.
#[test]
fn a_training_checkpoint_written_here_continues_in_pytorch_step_for_step() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let (batches_path, batches) = batches(dir.path(), 3);
    let (vs, net) = fresh_model(11);
    // Settings other than the recipe's and PyTorch's constructor arguments, so that the file's
    // are seen to be used.
    let (lr, momentum, wd) = (0.01, 0.8, 0.001);
    let mut sgd = sgd(&vs, lr, momentum, wd);
    step(&net, sgd.as_mut(), &batches, "b1");
    step(&net, sgd.as_mut(), &batches, "b2");
    let ckpt = TrainingCheckpoint {
        model: vs.variables().into_iter().collect(),
        optimizer: sgd.state_dict(),
        scheduler: None,
        epoch: 2,
    };
    let ckpt_path = dir.path().join("rust.pth");
    // The file's tensors are written now: the step below may change the model's in place.
    ckpt.write_pytorch(&ckpt_path).unwrap();
    let torch_dir = dir.path().join("torch");
    std::fs::create_dir(&torch_dir).unwrap();
    let (lr, momentum, wd) = (lr.to_string(), momentum.to_string(), wd.to_string());
    interop(&python, &["continue", s(&ckpt_path), s(&batches_path), s(&torch_dir), &lr, &momentum, &wd, "2"]);

    step(&net, sgd.as_mut(), &batches, "b3");
    assert_matches_pytorch("Rust 2 steps + PyTorch 1", &vs, sgd.as_ref(), &torch_dir);
}

/// PyTorch's AdamW in two groups (no weight decay on 1-dim parameters) with CosineAnnealingLR,
/// two steps, then `{'model', 'optimizer', 'scheduler', 'epoch'}`: the trainer's start-up path
/// takes the optimizer's class and settings from the file, restores both states, and its third
/// step (and schedule step) lands where PyTorch's does, with the same learning rate.
#[test]
fn a_pytorch_adamw_run_with_a_schedule_continues_here_step_for_step() {
    use tch_alexnet::train::optim::lr_scheduler::{Decay, ScheduleSpec, StepUnit};
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let (torch_dir, batches) = pytorch_run(&python, dir.path(), "adamw-cosine-then-save", 3);
    let ckpt_path = torch_dir.join("ckpt.pth");

    let schedule = ScheduleSpec::new(Decay::Cosine { eta_min: 0.0 }, None, StepUnit::Batch).unwrap();
    let base = TrainConfig { epochs: 1, schedule, ..TrainConfig::default() };
    let config = resume::config_of_pytorch_checkpoint(&ckpt_path, &base).unwrap();
    assert_eq!(config.optimizer, tch_alexnet::train::config::OptimizerKind::Adamw);
    assert!(config.no_decay_on_norm_and_bias, "two groups in the file");
    assert_eq!((config.lr, config.weight_decay), (1e-3, 0.05), "the base lr (initial_lr) and weight decay");
    let (vs, net) = fresh_model(99);
    let mut opt = build_optimizer(&vs, &tch_alexnet::model::parameter_names(), &config).unwrap();
    // One epoch of 5 steps: CosineAnnealingLR(T_max=5), as in the file.
    let schedule = tch_alexnet::train::optimizer_setup::build_schedule(opt.as_mut(), &config, 5).unwrap();
    let run =
        RunDir { start: Start::PytorchCheckpoint { path: ckpt_path.clone() }, ..RunDir::new(dir.path().join("run")) };
    let mut state = resume::initial_state(&run, &vs, opt.as_mut(), schedule, &|_| Ok(None), &mut |_| {}).unwrap();
    assert_eq!(opt.name(), "AdamW");

    step(&net, opt.as_mut(), &batches, "b3");
    state.schedule.as_mut().unwrap().step(opt.as_mut()).unwrap();
    let torch_lr: Vec<f64> =
        serde_json::from_str(&std::fs::read_to_string(torch_dir.join("lr3.json")).unwrap()).unwrap();
    assert_eq!(vec![opt.lr(0), opt.lr(1)], torch_lr, "learning rates after the third schedule step");
    let torch_state = common::tensors(&torch_dir.join("state3.safetensors"));
    let torch_adam = common::tensors(&torch_dir.join("adam3.safetensors"));
    let ours = opt.save_state().tensors;
    let mut worst = 0f64;
    for (name, t) in
        vs.variables().iter().map(|(k, v)| (k.clone(), v)).chain(torch_adam.keys().map(|k| (k.clone(), &ours[k])))
    {
        let theirs = torch_state.get(&name).or_else(|| torch_adam.get(&name)).unwrap();
        let diff = common::max_abs_diff(t, theirs);
        worst = worst.max(diff);
        let tolerance = common::tolerance(ADAM_TOLERANCE, theirs.kind(), common::max_abs(theirs));
        assert!(diff <= tolerance, "{name} differs from PyTorch's by {diff:.3e} (tolerance {tolerance:.1e})");
    }
    eprintln!("PyTorch AdamW+cosine 2 steps + Rust 1: weights and Adam moments vs PyTorch: max |diff| = {worst:.3e}");
}

/// The schedule of the five-plus-five tests: a warm-up of three steps (LinearLR, PyTorch's
/// start factor 1/3), then a cosine over the other seven, stepped per batch.
fn warmup_cosine_per_batch() -> tch_alexnet::train::optim::lr_scheduler::ScheduleSpec {
    use tch_alexnet::train::optim::lr_scheduler::{Decay, ScheduleSpec, StepUnit, Warmup, WarmupLength};
    let warmup = Warmup::new(WarmupLength::Steps(3));
    ScheduleSpec::new(Decay::Cosine { eta_min: 0.0 }, Some(warmup), StepUnit::Batch).unwrap()
}

/// Steps on `names` with the schedule stepped after each, as the trainer takes them; returns
/// the learning rates (per group) each step used.
fn steps_with_schedule(
    net: &model::AlexNet,
    opt: &mut dyn Optimizer,
    schedule: &mut tch_alexnet::train::optim::lr_scheduler::LrScheduler,
    batches: &BTreeMap<String, Tensor>,
    names: impl IntoIterator<Item = String>,
) -> Vec<Vec<f64>> {
    let mut lrs = Vec::new();
    for name in names {
        lrs.push(tch_alexnet::train::optimizer_setup::learning_rates(opt));
        step(net, opt, batches, &name);
        schedule.step(opt).unwrap();
    }
    lrs
}

/// The rows of a `[steps, groups]` float64 tensor.
fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let (n, groups) = t.size2().unwrap();
    let flat = Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    (0..n as usize).map(|i| flat[i * groups as usize..(i + 1) * groups as usize].to_vec()).collect()
}

/// After an AdamW run here and PyTorch's (tests/fixtures/pytorch_interop.py's `save_adam_run`
/// in `torch_dir`): every step's learning rates equal PyTorch's last `lrs.len()`, bit for bit;
/// weights, BatchNorm buffers and Adam's `exp_avg`, `exp_avg_sq` and `step` are within
/// `bound`. Returns the largest difference of the tensors.
fn assert_adam_run_matches(
    what: &str,
    vs: &nn::VarStore,
    opt: &dyn Optimizer,
    lrs: &[Vec<f64>],
    torch_dir: &Path,
) -> f64 {
    let torch_lrs = rows(&common::tensors(&torch_dir.join("lrs.safetensors"))["lr"]);
    assert_eq!(lrs, &torch_lrs[torch_lrs.len() - lrs.len()..], "{what}: the learning rate of each step");
    let state: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let torch_state = common::tensors(&torch_dir.join("state.safetensors"));
    let a = common::assert_all_close(&format!("{what}: weights and buffers"), &state, &torch_state, ADAM_TOLERANCE);
    let adam = opt.save_state().tensors;
    let torch_adam = common::tensors(&torch_dir.join("adam.safetensors"));
    let b = common::assert_all_close(&format!("{what}: Adam's state"), &adam, &torch_adam, ADAM_TOLERANCE);
    a.max(b)
}

/// PyTorch's AdamW (two groups) with a warm-up and a cosine stepped per batch runs five steps
/// and saves `{'model', 'optimizer', 'scheduler', 'epoch': 5}` (one step an epoch); the
/// trainer's start-up path continues it here for five steps, which land where PyTorch's
/// uninterrupted ten do: each step's learning rate bit for bit, weights and Adam's moments
/// within [`ADAM_TOLERANCE`].
#[test]
fn a_pytorch_adamw_run_with_warmup_and_cosine_continues_here_for_five_steps() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let (torch_dir, batches) = pytorch_run(&python, dir.path(), "adamw-schedule-5-5", 10);
    let ckpt_path = torch_dir.join("ckpt5.pth");

    // Ten epochs of one step: the schedule spans the ten steps, as PyTorch's does.
    let base = TrainConfig { epochs: 10, schedule: warmup_cosine_per_batch(), ..TrainConfig::default() };
    let config = resume::config_of_pytorch_checkpoint(&ckpt_path, &base).unwrap();
    let (vs, net) = fresh_model(99);
    let mut opt = build_optimizer(&vs, &model::parameter_names(), &config).unwrap();
    let schedule = tch_alexnet::train::optimizer_setup::build_schedule(opt.as_mut(), &config, 1).unwrap();
    let run =
        RunDir { start: Start::PytorchCheckpoint { path: ckpt_path.clone() }, ..RunDir::new(dir.path().join("run")) };
    let mut state = resume::initial_state(&run, &vs, opt.as_mut(), schedule, &|_| Ok(None), &mut |_| {}).unwrap();
    assert_eq!((opt.name(), state.epoch, state.step), ("AdamW", 5, 0));
    let schedule = state.schedule.as_mut().unwrap();
    assert_eq!((schedule.last_epoch(), schedule.horizon()), (5, Some(7)), "the file's position and T_max");

    let lrs = steps_with_schedule(&net, opt.as_mut(), schedule, &batches, (6..=10).map(|i| format!("b{i}")));
    assert!(lrs[0][0] < 1e-3 && lrs.windows(2).all(|w| w[1][0] < w[0][0]), "down the cosine: {lrs:?}");
    assert!(lrs.iter().all(|l| l[0] == l[1]), "both groups share the schedule: {lrs:?}");
    let worst =
        assert_adam_run_matches("PyTorch 5 AdamW steps + Rust 5 vs PyTorch 10", &vs, opt.as_ref(), &lrs, &torch_dir);
    eprintln!("PyTorch 5 + Rust 5 AdamW/warm-up+cosine steps vs PyTorch 10: max |diff| = {worst:.3e}");
}

/// The other way: a CLI run here (AdamW in two groups, the same warm-up and cosine per batch,
/// two epochs of five steps) stops after its first epoch (a crash during its second save);
/// `convert` makes a PyTorch training checkpoint of its folder; a PyTorch script that builds
/// the same AdamW and SequentialLR loads the three states and takes five steps, which land
/// where this crate's own continuation of the folder on the same batches does: every
/// learning rate bit for bit, weights and Adam's moments within [`ADAM_TOLERANCE`].
#[test]
fn a_run_here_with_adamw_warmup_and_cosine_continues_in_pytorch_through_convert() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let run = dir.path().join("run");
    let overrides =
        ["--epochs", "2", "--limit-train", "20", "--batch-size", "4", "--optimizer", "adamw", "--lr", "0.001"];
    let mut args = with_flags(cpu_train_args(s(&data), s(&run)), &overrides);
    args.extend("--schedule cosine --schedule-per batch --warmup-steps 3 --no-decay-on-norm-and-bias".split(' '));
    // The second save (end of epoch 2) never completes: the folder holds the pair of epoch 1.
    let out = Command::new(example_bin("train"))
        .args(&args)
        .env("TCH_ALEXNET_FAILPOINT", "between-checkpoint-writes:2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint did not stop the run");
    let pth = dir.path().join("run.pth");
    let f = run_bin(&example_bin("convert"), &[s(&run), s(&pth)]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(
        f.stdout.contains("training checkpoint after epoch 1") && f.stdout.contains("scheduler state"),
        "{}",
        f.stdout
    );

    let (batches_path, batches) = batches(dir.path(), 5);
    let torch_dir = dir.path().join("torch");
    std::fs::create_dir(&torch_dir).unwrap();
    let loaded =
        interop(&python, &["continue-adamw-schedule", s(&pth), s(&batches_path), s(&torch_dir), "3", "7", "1", "5"]);
    assert!(loaded.starts_with("OK epoch 1 last_epoch 5 lr "), "{loaded}");

    // This crate's continuation: the trainer's resume of the folder, then the same five steps.
    let config = tch_alexnet::train::read_config(&run).unwrap();
    assert_eq!(config.schedule, warmup_cosine_per_batch());
    let (vs, net) = fresh_model(99);
    let mut opt = build_optimizer(&vs, &model::parameter_names(), &config).unwrap();
    let schedule = tch_alexnet::train::optimizer_setup::build_schedule(opt.as_mut(), &config, 5).unwrap();
    let rebuild = |_: &mut dyn Optimizer| Ok(None);
    let mut state =
        resume::initial_state(&RunDir::resume(&run), &vs, opt.as_mut(), schedule, &rebuild, &mut |_| {}).unwrap();
    assert_eq!((state.epoch, state.step), (1, 0));
    let schedule = state.schedule.as_mut().unwrap();
    let lrs = steps_with_schedule(&net, opt.as_mut(), schedule, &batches, (1..=5).map(|i| format!("b{i}")));
    assert!(lrs.windows(2).all(|w| w[1][0] < w[0][0]), "down the cosine: {lrs:?}");
    // The interrupted run took epoch 2 too (its steps.jsonl was written before the failed
    // save): the learning rates it logged are these.
    let logged: Vec<f64> = common::step_lrs(&run).into_iter().filter(|(step, _)| *step > 5).map(|(_, lr)| lr).collect();
    assert_eq!(logged, lrs.iter().map(|l| l[0]).collect::<Vec<_>>(), "steps.jsonl of epoch 2");
    let worst = assert_adam_run_matches(
        "Rust 5 AdamW steps + PyTorch 5 vs Rust 5 + Rust 5",
        &vs,
        opt.as_ref(),
        &lrs,
        &torch_dir,
    );
    eprintln!("a run here continued 5 AdamW/warm-up+cosine steps in PyTorch vs here: max |diff| = {worst:.3e}");
}

/// `train --resume FILE.pth` continues the file's schedule only for a run of the length that
/// schedule was made for: PyTorch runs of one epoch of two steps whose schedules span four
/// (CosineAnnealingLR's `T_max`, OneCycleLR's `total_steps`) are refused, in one line that
/// names both lengths and leaving no run folder, when `--epochs` or `--schedule-per` would
/// make another length; with `--epochs 2` the cosine continues at PyTorch's learning rates.
#[test]
fn a_pytorch_checkpoint_whose_schedule_spans_another_length_is_refused() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let (torch_dir, _) = pytorch_run(&python, dir.path(), "schedule-checkpoints", 4);
    let (cosine, onecycle) = (torch_dir.join("cosine.pth"), torch_dir.join("onecycle.pth"));

    let data = synthetic_data_dir();
    let out = dir.path().join("continued");
    // 16 images, batch 8: two steps an epoch, as in the PyTorch runs.
    let train = |file: &Path, schedule: &str, per: &str, epochs: &str| {
        let mut args = with_flags(cpu_train_args(s(&data), s(&out)), &["--epochs", epochs]);
        args.extend(["--resume", s(file), "--schedule", schedule, "--schedule-per", per]);
        run_bin(&example_bin("train"), &args)
    };
    for (file, schedule, per, epochs, message) in [
        (&cosine, "cosine", "batch", "3", "spans 4 steps, and this run's would span 6"),
        (&cosine, "cosine", "epoch", "2", "spans 4 steps, and this run's would span 2"),
        (&onecycle, "onecycle:0.02", "batch", "3", "spans 4 steps, and this run's would span 6"),
    ] {
        let f = train(file, schedule, per, epochs);
        assert_clean_failure(&f, message);
        let error = f.stderr.lines().find(|l| l.starts_with("Error:")).unwrap();
        assert!(error.contains(s(file)) && error.contains("--epochs"), "{error}");
        assert!(!out.exists(), "a refused run left a folder ({schedule} per {per}, {epochs} epochs)");
    }

    let f = train(&cosine, "cosine", "batch", "2");
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("Continuing the PyTorch run") && f.stdout.contains("with its schedule"), "{}", f.stdout);
    let torch_lrs = rows(&common::tensors(&torch_dir.join("cosine_lrs.safetensors"))["lr"]);
    let continued: Vec<(u64, f64)> = torch_lrs[2..].iter().zip(3..).map(|(lr, step)| (step, lr[0])).collect();
    assert_eq!(common::step_lrs(&out), continued, "steps 3 and 4 at PyTorch's learning rates");
}

/// A one-epoch run on the synthetic set (lr 0.002, not the default, so that a value taken from
/// a file is told apart), shared by the CLI tests; written once per test process.
fn base_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let (run, _) = common::train_in_fresh_folder("pytorch-interop-run", |data, run| {
            with_flags(cpu_train_args(data, run), &["--lr", "0.002"])
        });
        run
    })
}

/// `convert RUN_DIR out.pth` loads strictly in PyTorch; `train --resume out.pth` continues it
/// in a new run folder with the file's settings (and refuses a contradicting --lr);
/// `train --init-from` takes bare, nested (`--key`) and `module.`-prefixed state dicts, and
/// names the candidates of an ambiguous file.
#[test]
fn cli_moves_runs_between_pytorch_and_here() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let (train, convert) = (example_bin("train"), example_bin("convert"));
    let run = base_run();

    let pth = dir.path().join("out.pth");
    let f = run_bin(&convert, &[s(run), s(&pth)]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(f.stdout.contains("training checkpoint after epoch 1"), "{}", f.stdout);
    let checked = interop(&python, &["check-training-checkpoint", s(&pth)]);
    assert!(checked.starts_with("OK epoch 1 lr 0.002 momentum buffers 26"), "{checked}");

    // Continue it here: epoch 2 of 2, in a new run folder, with the file's lr.
    let new = dir.path().join("continued");
    let args = [with_flags(cpu_train_args(s(&data), s(&new)), &["--epochs", "2"]), vec!["--resume", s(&pth)]].concat();
    let f = run_bin(&train, &args);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("Continuing the PyTorch run") && f.stdout.contains("after epoch 1"), "{}", f.stdout);
    let lines = common::metrics(&new);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["epoch"], 2);
    assert_eq!(read_json(&new.join("config.json"))["lr"].as_f64(), Some(0.002));
    for file in ["last.safetensors", "last.optim.safetensors", "best.safetensors", "summary.json"] {
        assert!(new.join(file).exists(), "{file} missing in the continued run");
    }

    // A flag that contradicts the file is refused, and nothing is written.
    let refused = dir.path().join("refused");
    let args = [cpu_train_args(s(&data), s(&refused)), vec!["--resume", s(&pth), "--lr", "0.1"]].concat();
    let f = run_bin(&train, &args);
    assert_clean_failure(&f, "--lr");
    assert!(!refused.exists(), "a refused run left a folder");

    // --init-from: PyTorch state dicts, bare, nested and DataParallel's.
    let files = dir.path().join("state_dicts");
    std::fs::create_dir(&files).unwrap();
    interop(&python, &["state-dicts", s(&files)]);
    let given = common::tensors(&files.join("weights.safetensors"));
    // One step (8 images, batch 8): the BatchNorm counter PyTorch left at 1 is then 2.
    for (name, key) in [("bare.pth", None), ("nested.pth", Some("model")), ("module.pth", None)] {
        let out = dir.path().join(format!("init-{name}"));
        let file = files.join(name);
        let mut args = with_flags(cpu_train_args(s(&data), s(&out)), &["--limit-train", "8"]);
        args.extend(["--init-from", s(&file)]);
        if let Some(key) = key {
            args.extend(["--key", key]);
        }
        let f = run_bin(&train, &args);
        assert_eq!(f.code, Some(0), "--init-from {name}: {}\n{}", f.stdout, f.stderr);
        assert!(f.stdout.contains("Starting from the weights in"), "{}", f.stdout);
        assert_eq!(common::metrics(&out).len(), 1, "--init-from {name}");
        let last = common::tensors(&out.join("last.safetensors"));
        for block in ["conv_block1", "conv_block4"] {
            let counter = format!("{block}.1.num_batches_tracked");
            assert_eq!(given[&counter].int64_value(&[]), 1);
            assert_eq!(last[&counter].int64_value(&[]), 2, "--init-from {name}: {counter}");
        }
        // One step at lr 0.005 moves the weights a little, not by a fresh init's distance.
        let moved = common::max_abs_diff(&last["fc2.1.weight"], &given["fc2.1.weight"]);
        assert!(moved < 1e-3, "--init-from {name}: fc2 moved by {moved}");
    }

    // Two state dicts and no --key: the error names both.
    let ambiguous = files.join("ambiguous.pth");
    let out = dir.path().join("init-ambiguous");
    let args = [cpu_train_args(s(&data), s(&out)), vec!["--init-from", s(&ambiguous)]].concat();
    let f = run_bin(&train, &args);
    assert_clean_failure(&f, "choose one with --key");
    let line = f.stderr.lines().find(|l| l.starts_with("Error:")).unwrap();
    assert!(line.contains("model, ema") && line.contains("ambiguous.pth"), "{line}");
}

/// The test accuracy of `checkpoint` (`evaluate --json -`), and the whole JSON.
fn evaluate(checkpoint: &Path) -> serde_json::Value {
    let data = synthetic_data_dir();
    let args = [
        "--checkpoint",
        s(checkpoint),
        "--data-dir",
        s(&data),
        "--no-download",
        "--device",
        "cpu",
        "--limit-test",
        "64",
        "--json",
        "-",
    ];
    let f = run_bin(&example_bin("evaluate"), &args);
    assert_eq!(f.code, Some(0), "evaluate {}: {}", checkpoint.display(), f.stderr);
    serde_json::from_str(&f.stdout).unwrap_or_else(|e| panic!("evaluate's JSON: {e}\n{}", f.stdout))
}

/// A PyTorch-written `.pth` of a run's best weights evaluates to exactly the accuracy of the
/// safetensors file, predicts the same, and converts back bit for bit.
#[test]
fn a_pth_written_by_pytorch_evaluates_predicts_and_converts_exactly() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let best = base_run().join("best.safetensors");
    let pth = dir.path().join("best.pth");
    interop(&python, &["to-pth", s(&best), s(&pth)]);
    assert!(tch_alexnet::formats::pytorch::is_pytorch_file(&pth));

    let (a, b) = (evaluate(&best), evaluate(&pth));
    assert!(a["accuracy"].as_f64().is_some(), "{a}");
    assert_eq!(a["accuracy"], b["accuracy"], "accuracy of the .pth differs from the .safetensors'");
    assert_eq!(a["loss"], b["loss"]);
    eprintln!("evaluate: accuracy {} from both files", a["accuracy"]);

    let png = dir.path().join("red.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 30, 30])).save(&png).unwrap();
    let predict = |checkpoint: &Path| {
        let f =
            run_bin(&example_bin("predict"), &["--checkpoint", s(checkpoint), "--device", "cpu", "--json", s(&png)]);
        assert_eq!(f.code, Some(0), "predict {}: {}", checkpoint.display(), f.stderr);
        serde_json::from_str::<serde_json::Value>(&f.stdout).unwrap()
    };
    assert_eq!(predict(&pth), predict(&best));

    let convert = example_bin("convert");
    let back = dir.path().join("back.safetensors");
    let f = run_bin(&convert, &[s(&pth), s(&back)]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let (original, round_trip) = (common::tensors(&best), common::tensors(&back));
    assert_eq!(original.keys().collect::<Vec<_>>(), round_trip.keys().collect::<Vec<_>>());
    for (name, t) in &original {
        assert_eq!(t.kind(), round_trip[name].kind(), "{name}");
        assert!(t.equal(&round_trip[name]), "{name} changed in safetensors → PyTorch → safetensors");
    }

    let txt = dir.path().join("x.txt");
    let f = run_bin(&convert, &[s(&best), s(&txt)]);
    assert_clean_failure(&f, "x.txt");
    assert!(f.stderr.contains(".safetensors, .pt, .pth or .bin"), "{}", f.stderr);
    assert!(!txt.exists());
}

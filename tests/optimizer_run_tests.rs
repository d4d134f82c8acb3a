//! The trainer with the other optimizers and schedules, through the CLI on tiny synthetic data:
//! a run stopped in the middle of its schedule resumes bit for bit; a resume that would change
//! the schedule's length is refused; run folders made before these settings existed resume.

mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_clean_failure, assert_same_runs, crash_at_save, example_bin, json_lines, read_json, run_bin,
    synthetic_data_dir, two_epoch_args, with_flags,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An uninterrupted run, and the same run killed at its fifth save (`--save-every 1`: epoch
/// 2, step 2) then resumed from the last complete pair (epoch 2, step 1: mid-epoch and
/// mid-schedule): bit-identical results. Returns the uninterrupted run's folder.
fn check_exact_resume(dir: &Path, flags: &[&str]) -> PathBuf {
    let data = synthetic_data_dir();
    let (whole, resumed) = (dir.join("whole"), dir.join("resumed"));
    let f = run_bin(&example_bin("train"), &two_epoch_args(s(&data), s(&whole), flags));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let mut crashing = two_epoch_args(s(&data), s(&resumed), flags);
    crashing.extend(["--save-every", "1"]);
    crash_at_save(&crashing, 5);

    // A longer run would stretch the schedule the run was made with: refused.
    let f = run_bin(&example_bin("train"), &["--resume", s(&resumed), "--epochs", "3"]);
    assert_clean_failure(&f, "schedule");

    let f = run_bin(&example_bin("train"), &["--resume", s(&resumed)]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("Resuming") && f.stdout.contains("epoch 2, step 1"), "{}", f.stdout);
    assert_same_runs(&resumed, &whole);
    whole
}

#[test]
fn adamw_with_warmup_and_cosine_resumes_exactly_mid_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--optimizer",
        "adamw",
        "--lr",
        "0.001",
        "--schedule",
        "cosine",
        "--schedule-per",
        "batch",
        "--warmup-steps",
        "2",
        "--no-decay-on-norm-and-bias",
        "--clip-grad-norm",
        "1.0",
        "--label-smoothing",
        "0.1",
    ];
    let run = check_exact_resume(dir.path(), &flags);
    let steps = json_lines(&run.join("steps.jsonl"));
    assert_eq!(steps.len(), 6, "one line per optimizer step");
    let lrs: Vec<f64> = steps.iter().map(|l| l["lr"].as_f64().unwrap()).collect();
    assert!((lrs[0] - 0.001 / 3.0).abs() < 1e-15, "the warm-up starts at a third of --lr (LinearLR's): {lrs:?}");
    assert!(lrs[2] == 0.001 && lrs[3] < lrs[2] && lrs[5] < lrs[4], "warm-up then cosine decay: {lrs:?}");
    assert_eq!(steps[5]["step"], 6);
    assert!(steps.iter().all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)), "{steps:?}");
    // Two parameter groups: the second without weight decay.
    let config = read_json(&run.join("config.json"));
    assert_eq!(config["optimizer"], "adamw");
    assert_eq!(steps[0]["lr_groups"].as_array().map(Vec::len), Some(2));
}

#[test]
fn sgd_with_onecycle_resumes_exactly_mid_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let run = check_exact_resume(dir.path(), &["--schedule", "onecycle:0.02", "--nesterov"]);
    let lrs: Vec<f64> = json_lines(&run.join("steps.jsonl")).iter().map(|l| l["lr"].as_f64().unwrap()).collect();
    assert!((lrs[0] - 0.02 / 25.0).abs() < 1e-15, "OneCycleLR starts at max_lr / div_factor: {lrs:?}");
    assert!(lrs.iter().cloned().fold(0.0, f64::max) <= 0.02 && lrs[5] < lrs[0], "{lrs:?}");
}

/// A run saved at `--epochs 0` (nothing trained, and no schedule built: PyTorch's schedulers
/// refuse a run of no steps) with a warm-up, resumed with `--epochs 1`: its schedule starts
/// then, at the warm-up's first learning rate (`--lr` × `--warmup-start-factor`), and the run
/// ends bit-identical to one made with `--epochs 1` in one go.
#[test]
fn a_run_saved_at_epoch_0_starts_its_warmup_when_resumed() {
    let data = synthetic_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let (whole, zero) = (dir.path().join("whole"), dir.path().join("zero"));
    let flags = "--optimizer adamw --lr 0.001 --schedule cosine --schedule-per batch --warmup-steps 2";
    let warmup: Vec<&str> = flags.split(' ').chain(["--warmup-start-factor", "0.25"]).collect();
    let f =
        run_bin(&example_bin("train"), &with_flags(two_epoch_args(s(&data), s(&whole), &warmup), &["--epochs", "1"]));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let f =
        run_bin(&example_bin("train"), &with_flags(two_epoch_args(s(&data), s(&zero), &warmup), &["--epochs", "0"]));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(!zero.join("steps.jsonl").exists() || common::step_lrs(&zero).is_empty());
    let f = run_bin(&example_bin("train"), &["--resume", s(&zero), "--epochs", "1"]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("Resuming") && f.stdout.contains("epoch 1, step 0"), "{}", f.stdout);

    let lrs = common::step_lrs(&zero);
    assert_eq!(lrs.len(), 3, "{lrs:?}");
    assert_eq!(lrs[0], (1, 0.001 * 0.25), "the first step takes the warm-up's first learning rate");
    assert!(lrs[1].1 > lrs[0].1 && lrs[2].1 == 0.001, "the warm-up reaches --lr: {lrs:?}");
    assert_same_runs(&zero, &whole);
}

/// A run folder written before optimizers and schedules were settings (config.json without
/// them, the optimizer file holding SGD momentum buffers by parameter name), and before recipes
/// (no recipe, network, data set, transforms or evaluation settings in config.json, no network
/// in the checkpoint's metadata), resumes as the tutorial's SGD run and ends where a run made
/// in one go does.
#[test]
fn a_run_folder_from_before_optimizer_settings_and_recipes_resumes() {
    let data = synthetic_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let (whole, old) = (dir.path().join("whole"), dir.path().join("old"));
    let f = run_bin(&example_bin("train"), &two_epoch_args(s(&data), s(&whole), &[]));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let mut one_epoch = two_epoch_args(s(&data), s(&old), &[]);
    one_epoch = with_flags(one_epoch, &["--epochs", "1"]);
    let f = run_bin(&example_bin("train"), &one_epoch);
    assert_eq!(f.code, Some(0), "{}", f.stderr);

    // Make the folder as the older version wrote it.
    let config_path = old.join("config.json");
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    for key in [
        "optimizer",
        "dampening",
        "nesterov",
        "betas",
        "eps",
        "amsgrad",
        "no_decay_on_norm_and_bias",
        "schedule",
        "clip_grad_norm",
        "label_smoothing",
        "split_seed",
        // ... and before the trainer took any network, data set and transforms (recipes).
        "recipe",
        "model",
        "dataset",
        "eval_batch_size",
        "test_every_epoch",
        "transforms",
    ] {
        assert!(config.remove(key).is_some(), "config.json has no `{key}`");
    }
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let optim_path = old.join("last.optim.safetensors");
    let loaded = tch_alexnet::formats::safetensors::load_tensors(&optim_path).unwrap();
    let mut metadata = loaded.metadata.clone();
    metadata.remove("optimizer");
    let buffers: Vec<(String, tch::Tensor)> = loaded
        .tensors
        .iter()
        .map(|(k, t)| (k.strip_suffix(".momentum_buffer").expect("SGD state only").to_string(), t.shallow_clone()))
        .collect();
    tch_alexnet::formats::safetensors::save_tensors(
        &optim_path,
        buffers.iter().map(|(k, t)| (k.as_str(), t)),
        &metadata,
    )
    .unwrap();
    // Its weights file named no network either.
    let weights_path = old.join("last.safetensors");
    let weights = tch_alexnet::formats::safetensors::load_tensors(&weights_path).unwrap();
    let mut metadata = weights.metadata.clone();
    for key in ["model", "recipe", "dataset", "num_classes"] {
        assert!(metadata.remove(key).is_some(), "last.safetensors has no `{key}`");
    }
    tch_alexnet::formats::safetensors::save_tensors(
        &weights_path,
        weights.tensors.iter().map(|(k, t)| (k.as_str(), t)),
        &metadata,
    )
    .unwrap();

    let f = run_bin(&example_bin("train"), &["--resume", s(&old), "--epochs", "2"]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    common::assert_same_weights(&old, &whole);
}

#[test]
fn optimizer_flags_that_do_not_fit_are_refused_in_one_line() {
    let data = synthetic_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (flags, message) in [
        (vec!["--optimizer", "adam", "--momentum", "0.9"], "--momentum cannot be used with --optimizer adam"),
        (vec!["--betas", "0.9,0.99"], "--betas cannot be used with --optimizer sgd"),
        (vec!["--optimizer", "adamw", "--betas", "0.9"], "--betas takes two numbers"),
        (vec!["--schedule", "onecycle:0.1", "--lr", "0.01"], "--lr has no effect with --schedule onecycle"),
        (vec!["--schedule", "cosine:x"], "ETA_MIN"),
        (vec!["--schedule", "warm"], "unknown schedule"),
        (vec!["--warmup-steps", "2"], "per batch"),
        (vec!["--warmup-start-factor", "0.5"], "--warmup-start-factor needs"),
        (vec!["--label-smoothing", "1.5"], "label smoothing"),
        (vec!["--clip-grad-norm", "0"], "clipping norm"),
        (vec!["--nesterov", "--momentum", "0"], "Nesterov"),
    ] {
        let f = run_bin(&example_bin("train"), &two_epoch_args(s(&data), s(&out), &flags));
        assert_clean_failure(&f, message);
    }
}

//! bf16 autocast (`--amp`) on the CPU: libtorch's own autocast regions, per thread; what runs
//! in bf16 and what stays fp32; PyTorch's `torch.autocast("cpu", torch.bfloat16)` on the same
//! weights and batch; and the trainer with `--amp` (config.json's precision, fp32 checkpoints,
//! exact resume, old run folders).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{
    assert_same_runs, crash_at_save, example_bin, read_json, run_bin, synthetic_data_dir, tensors, two_epoch_args,
};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};
use tch_alexnet::data::batches::Batch;
use tch_alexnet::ffi::{autocast_bf16, autocast_state, AutocastBf16};
use tch_alexnet::formats::safetensors as checkpoint;
use tch_alexnet::train::{build_model, optimizer_setup, train_step, TrainConfig};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_autocast_region_is_per_thread_nests_and_ends() {
    assert!(!autocast_state(Device::Cpu).unwrap().0, "autocast is off outside a region");
    {
        let _outer = AutocastBf16::enter(Device::Cpu).unwrap();
        assert_eq!(autocast_state(Device::Cpu).unwrap(), (true, true), "on, in bf16");
        let elsewhere = std::thread::spawn(|| autocast_state(Device::Cpu).unwrap().0).join().unwrap();
        assert!(!elsewhere, "another thread is not in the region (libtorch keeps the switch per thread)");
        assert!(!autocast_state(Device::Cuda(0)).unwrap().0, "the CPU region leaves CUDA's switch");
        {
            let _inner = AutocastBf16::enter(Device::Cpu).unwrap();
        }
        assert!(autocast_state(Device::Cpu).unwrap().0, "leaving an inner region keeps the outer one");
    }
    assert!(!autocast_state(Device::Cpu).unwrap().0, "off again after the outermost region");
    // A panic inside the region still ends it.
    let _ = std::panic::catch_unwind(|| autocast_bf16(Device::Cpu, true, || panic!("inside the region")));
    assert!(!autocast_state(Device::Cpu).unwrap().0, "off after a panic in the region");
    // CUDA's switch works the same way (a thread-local flag, also without a GPU).
    autocast_bf16(Device::Cuda(0), true, || assert_eq!(autocast_state(Device::Cuda(0)).unwrap(), (true, true)))
        .unwrap();
}

/// Four random 227×227 images and their labels.
fn batch() -> Batch {
    tch::manual_seed(21);
    Batch {
        images: Tensor::randn([4, 3, 227, 227], (Kind::Float, Device::Cpu)),
        labels: Tensor::from_slice(&[3i64, 7, 0, 9]),
    }
}

#[test]
fn amp_runs_every_stage_in_bf16_and_keeps_weights_and_optimizer_state_fp32() {
    tch::manual_seed(5);
    let (vs, net) = build_model(Device::Cpu, 10, true).unwrap();
    let net = net.with_dropout(0.0);
    let batch = batch();
    let stages = autocast_bf16(Device::Cpu, true, || tch::no_grad(|| net.stages_t(&batch.images, false))).unwrap();
    assert_eq!(stages.len(), 12);
    for (i, stage) in stages.iter().enumerate() {
        assert_eq!(stage.kind(), Kind::BFloat16, "stage {i} (conv blocks, pools, fully connected layers)");
    }
    let fp32 = tch::no_grad(|| net.forward_t(&batch.images, false));
    assert_eq!(fp32.kind(), Kind::Float, "outside the region the network computes in fp32");

    let config = TrainConfig { amp: true, ..TrainConfig::default() };
    let mut sgd = optimizer_setup::build_optimizer(&vs, &tch_alexnet::model::parameter_names(), &config).unwrap();
    let (loss, logits) = train_step(&net, sgd.as_mut(), &batch, true).unwrap();
    assert_eq!(loss.kind(), Kind::Float, "the loss is taken in fp32");
    assert_eq!(logits.kind(), Kind::Float, "logits raised to fp32 for the loss");
    for (name, t) in vs.variables() {
        let want = if name.ends_with("num_batches_tracked") { Kind::Int64 } else { Kind::Float };
        assert_eq!(t.kind(), want, "{name} after a bf16 step");
        if t.requires_grad() {
            assert_eq!(t.grad().kind(), Kind::Float, "{name}'s gradient");
        }
    }
    for (name, t) in optimizer_setup::momentum_buffers(sgd.as_ref()) {
        assert_eq!(t.kind(), Kind::Float, "momentum of {name}");
    }
}

/// The largest differences from PyTorch's CPU autocast, as a share of the largest reference
/// value (max|Δ| / max|ref|): both sides run libtorch 2.13's same bf16 kernels on the same
/// weights and batch, so every figure measured 0 (AMD EPYC with AVX-512-BF16, 2 threads). The
/// bounds allow ten times one bf16 rounding of the largest value (2⁻⁸ relative) for the outputs,
/// in case a machine's oneDNN picks other kernels for the two processes; one SGD step of lr
/// 0.005 moves the weights by far less than that, so their bound is a hundredth of it.
const LOGITS_BOUND: f64 = 10.0 / 256.0;
const STATE_BOUND: f64 = 0.1 / 256.0;

#[test]
fn amp_matches_pytorch_cpu_autocast_forward_and_one_sgd_step() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(11);
    let (vs, net) = build_model(Device::Cpu, 10, false).unwrap();
    let net = net.with_dropout(0.0);
    let init = dir.path().join("init.safetensors");
    checkpoint::save_var_store(&vs, &init, &Default::default()).unwrap();
    let batch = batch();
    let batch_path = dir.path().join("batch.safetensors");
    let batch_tensors = [("images", &batch.images), ("labels", &batch.labels)];
    checkpoint::save_tensors(&batch_path, batch_tensors, &Default::default()).unwrap();
    common::run_fixture(&python, "amp_reference.py", &["step", s(&init), s(&batch_path), s(dir.path())]);

    let kinds = std::fs::read_to_string(dir.path().join("kinds.txt")).unwrap();
    assert!(kinds.lines().count() == 13 && kinds.lines().all(|l| l.ends_with("torch.bfloat16")), "{kinds}");
    let theirs = tensors(&dir.path().join("outputs.safetensors"));
    let eval = autocast_bf16(Device::Cpu, true, || tch::no_grad(|| net.forward_t(&batch.images, false))).unwrap();
    let config = TrainConfig { amp: true, ..TrainConfig::default() };
    let mut sgd = optimizer_setup::build_optimizer(&vs, &tch_alexnet::model::parameter_names(), &config).unwrap();
    let (_, train_logits) = train_step(&net, sgd.as_mut(), &batch, true).unwrap();
    let ours =
        BTreeMap::from([("eval_logits".to_string(), eval.to_kind(Kind::Float)), ("train_logits".into(), train_logits)]);
    let theirs: BTreeMap<String, Tensor> = theirs.into_iter().filter(|(k, _)| ours.contains_key(k)).collect();
    assert_relative_close("logits", &ours, &theirs, LOGITS_BOUND);

    let state: BTreeMap<String, Tensor> = vs.variables().into_iter().filter(|(_, t)| t.is_floating_point()).collect();
    let torch_state = tensors(&dir.path().join("state.safetensors"));
    let torch_state: BTreeMap<String, Tensor> =
        torch_state.into_iter().filter(|(k, _)| state.contains_key(k)).collect();
    assert_eq!(state.len(), torch_state.len(), "the same weights and buffers");
    assert_relative_close("after one SGD step", &state, &torch_state, STATE_BOUND);
}

/// Each tensor's max|Δ| / max|reference| within `bound`; prints the largest.
fn assert_relative_close(what: &str, ours: &BTreeMap<String, Tensor>, theirs: &BTreeMap<String, Tensor>, bound: f64) {
    let mut worst = (0.0f64, String::new());
    for (name, reference) in theirs {
        let diff = common::max_abs_diff(&ours[name].to_kind(Kind::Double), &reference.to_kind(Kind::Double));
        let relative = diff / common::max_abs(reference).max(f64::MIN_POSITIVE);
        assert!(
            relative <= bound,
            "{what}: {name} differs from PyTorch by {relative:e} of its largest value (> {bound:e})"
        );
        if relative >= worst.0 {
            worst = (relative, name.clone());
        }
    }
    eprintln!("{what}: largest difference from PyTorch {:e} of the largest value ({})", worst.0, worst.1);
}

#[test]
fn train_with_amp_records_bf16_saves_fp32_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let (whole, resumed, fp32) = (dir.path().join("whole"), dir.path().join("resumed"), dir.path().join("fp32"));
    let f = run_bin(&example_bin("train"), &two_epoch_args(s(&data), s(&whole), &["--amp"]));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(
        f.stdout.contains("bf16") || f.stderr.contains("bf16"),
        "start-up says what --amp does here:\n{}",
        f.stdout
    );
    assert_eq!(read_json(&whole.join("config.json"))["precision"], "bf16");
    for file in ["last.safetensors", "best.safetensors", "last.optim.safetensors"] {
        for (name, t) in tensors(&whole.join(file)) {
            assert!(matches!(t.kind(), Kind::Float | Kind::Int64), "{file}: {name} is {:?}", t.kind());
        }
    }
    // The same run in fp32 takes other steps: --amp did change the arithmetic.
    let f = run_bin(&example_bin("train"), &two_epoch_args(s(&data), s(&fp32), &[]));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(read_json(&fp32.join("config.json"))["precision"], "fp32");
    let (a, b) = (tensors(&whole.join("last.safetensors")), tensors(&fp32.join("last.safetensors")));
    assert!(!a["fc3.0.weight"].equal(&b["fc3.0.weight"]), "--amp gave the fp32 run's weights");

    // Killed at its fifth save (epoch 2, step 2) and resumed from epoch 2, step 1: --resume
    // keeps bf16 (the flag is refused with --resume; config.json decides).
    let crashing = two_epoch_args(s(&data), s(&resumed), &["--amp", "--save-every", "1"]);
    crash_at_save(&crashing, 5);
    let f = run_bin(&example_bin("train"), &["--resume", s(&resumed)]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert_same_runs(&resumed, &whole);
}

/// Before config.json recorded the precision, `--amp` did nothing on the CPU: such a folder
/// (`"amp": true`, no `precision`) resumes in fp32, as it ran, and ends as the fp32 run does.
#[test]
fn an_old_cpu_run_folder_with_amp_resumes_in_fp32_as_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let (whole, old) = (dir.path().join("whole"), dir.path().join("old"));
    let f = run_bin(&example_bin("train"), &two_epoch_args(s(&data), s(&whole), &[]));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    crash_at_save(&two_epoch_args(s(&data), s(&old), &["--save-every", "1"]), 5);
    let mut config = read_json(&old.join("config.json"));
    let fields = config.as_object_mut().unwrap();
    assert_eq!(fields.remove("precision"), Some("fp32".into()));
    fields.insert("amp".into(), true.into());
    std::fs::write(old.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let f = run_bin(&example_bin("train"), &["--resume", s(&old)]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert_same_runs(&old, &whole);
}

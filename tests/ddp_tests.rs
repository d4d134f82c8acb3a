//! Data-parallel training on the CPU: two ranks over Gloo on 127.0.0.1, one thread each.
//! Parity with PyTorch's DistributedDataParallel, the built-in launcher and torchrun, the
//! replicas' agreement, SIGTERM, a killed rank, and settings that must agree.
//!
//! The parity test re-runs this test binary as two rank processes (`ddp_rank_process`, an
//! ignored test that does nothing when run by hand).

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_clean_failure, cpu_train_args, example_bin, metrics, run_bin, synthetic_data_dir, with_flags};
use tch::{Device, Kind, Tensor};
use tch_alexnet::distributed::Backend;
use tch_alexnet::formats::safetensors as checkpoint;
use tch_alexnet::train::data_parallel::DataParallel;

const STEPS: usize = 3;
const WORLD: usize = 2;

/// Skips (or, under TCH_ALEXNET_REQUIRE_ALL=1, fails) where this build has no Gloo.
fn gloo_or_skip() -> bool {
    common::gloo_or_skip("the data-parallel tests")
}

/// One rank of the parity test, started by `ddp_steps_match_pytorch_ddp` with the rank's
/// variables and `DDP_TEST_DIR`: three steps of DDP as the trainer takes them (buffers from rank
/// 0 before the forward, gradients averaged before the update), then its state and momentum.
#[test]
#[ignore = "a rank process of ddp_steps_match_pytorch_ddp"]
fn ddp_rank_process() {
    let Some(dir) = std::env::var_os("DDP_TEST_DIR").map(PathBuf::from) else { return };
    tch::set_num_threads(1);
    let info = tch_alexnet::distributed::env_rank_info().unwrap().unwrap();
    let mut dp = DataParallel::join(&info, Backend::Gloo, Duration::from_secs(60)).unwrap();
    let (mut vs, net) = tch_alexnet::train::build_model(Device::Cpu, 10, false).unwrap();
    vs.double();
    let net = net.with_dropout(0.0);
    checkpoint::load_var_store(&vs, &dir.join("init.safetensors")).unwrap();
    let mut sgd = tch_alexnet::train::optimizer_setup::build_optimizer(
        &vs,
        &tch_alexnet::model::parameter_names(),
        &Default::default(),
    )
    .unwrap();
    let batches = checkpoint::load_tensors(&dir.join("batches.safetensors")).unwrap().tensors;
    for step in 0..STEPS {
        let batch = tch_alexnet::data::batches::Batch {
            images: batches[&format!("r{}_s{step}_images", info.rank)].to_kind(Kind::Double),
            labels: batches[&format!("r{}_s{step}_labels", info.rank)].shallow_clone(),
        };
        dp.sync_buffers(&vs).unwrap();
        let recipe = tch_alexnet::train::StepSettings::recipe(false);
        let _ =
            tch_alexnet::train::train_step_with(&net, sgd.as_mut(), &batch, &recipe, |sgd| dp.average_gradients(sgd))
                .unwrap();
    }
    let state: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let rank = info.rank;
    checkpoint::save_tensors(
        &dir.join(format!("rust{rank}_state.safetensors")),
        state.iter().map(|(k, v)| (k.as_str(), v)),
        &Default::default(),
    )
    .unwrap();
    let momentum = tch_alexnet::train::optimizer_setup::momentum_buffers(sgd.as_ref());
    checkpoint::save_tensors(
        &dir.join(format!("rust{rank}_momentum.safetensors")),
        momentum.iter().map(|(k, v)| (k.as_str(), v)),
        &Default::default(),
    )
    .unwrap();
}

/// The largest differences allowed in float64, about ten times the largest measured
/// (libtorch 2.13.0, x86-64: weights and buffers 2.2e-16, momentum 1.4e-15; the test prints
/// them), never below four float64 ulps. While the loss was taken in float32 (tch's
/// `cross_entropy_for_logits`), they were 1.2e-9 and 2.6e-8.
const STATE_TOLERANCE: f64 = 2.2e-15;
const MOMENTUM_TOLERANCE: f64 = 1.4e-14;

/// From the same initial weights, on the same per-rank batches, three steps with dropout off:
/// PyTorch's DDP (two gloo processes) and ours agree on every rank's weights, BatchNorm
/// buffers and momentum (within the tolerances above); our two ranks' weights are
/// bit-identical.
///
/// In float64 on both sides, the loss included (the trainer takes PyTorch's cross-entropy in
/// the logits' precision; only autocast's bf16/f16 logits are raised to float32): in float32 the two agree
/// to 4e-9 after one step and 6e-8 after two, but by the third step on random inputs a max-pool
/// or ReLU decision flipped by that rounding reroutes a gradient (momentum then differs by up
/// to 5e-4). float64 keeps the rounding far below any such flip, so what is compared is DDP's
/// arithmetic, not luck; the float32 step itself is compared with PyTorch in model_tests.
#[test]
fn ddp_steps_match_pytorch_ddp() {
    if !gloo_or_skip() {
        return;
    }
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    tch::manual_seed(11);
    let (vs, _) = tch_alexnet::train::build_model(Device::Cpu, 10, false).unwrap();
    checkpoint::save_var_store(&vs, &dir.join("init.safetensors"), &Default::default()).unwrap();
    tch::manual_seed(12);
    let mut batches = BTreeMap::new();
    for rank in 0..WORLD {
        for step in 0..STEPS {
            batches
                .insert(format!("r{rank}_s{step}_images"), Tensor::randn([4, 3, 227, 227], (Kind::Float, Device::Cpu)));
            batches.insert(format!("r{rank}_s{step}_labels"), Tensor::randint(10, [4], (Kind::Int64, Device::Cpu)));
        }
    }
    checkpoint::save_tensors(
        &dir.join("batches.safetensors"),
        batches.iter().map(|(k, v)| (k.as_str(), v)),
        &Default::default(),
    )
    .unwrap();

    let torch_dir = dir.join("torch");
    let out = Command::new(&python)
        .arg(common::project_root().join("scripts/reference_ddp.py"))
        .args([dir.join("init.safetensors"), dir.join("batches.safetensors"), torch_dir.clone()])
        .args([
            "--world-size",
            &WORLD.to_string(),
            "--steps",
            &STEPS.to_string(),
            "--port",
            &common::free_port().to_string(),
        ])
        .arg("--double")
        .output()
        .unwrap();
    assert!(out.status.success(), "reference_ddp.py failed:\n{}", String::from_utf8_lossy(&out.stderr));

    common::run_rank_processes("ddp_rank_process", "DDP_TEST_DIR", dir, WORLD);
    let what = format!("after {STEPS} float64 DDP steps vs PyTorch DDP");
    common::assert_ddp_ranks_match_pytorch(&what, dir, &torch_dir, WORLD, (STATE_TOLERANCE, MOMENTUM_TOLERANCE));
}

fn rank_env(rank: usize, port: &str) -> Vec<(&'static str, String)> {
    common::rank_env(rank, WORLD, port)
}

/// The flags of a small two-rank run: 32 training images, batch 4 per rank (4 steps).
fn ddp_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    with_flags(cpu_train_args(data, out), &["--limit-train", "32", "--batch-size", "4", "--threads", "1"])
}

/// `--nproc-per-node 2` and torchrun write normal run folders, and are the same run (same seed,
/// same world size); SIGTERM to the launcher stops both ranks after the same step with a
/// checkpoint, and `--resume` ends bit-identical to the uninterrupted run.
#[test]
fn launcher_and_torchrun_runs_agree_and_sigterm_resumes_exactly() {
    if !gloo_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let d = data.to_str().unwrap();
    let (full, cut, torchrun) = (root.path().join("full"), root.path().join("cut"), root.path().join("torchrun"));

    let f =
        run_bin(&example_bin("train"), &with_flags(ddp_args(d, full.to_str().unwrap()), &["--nproc-per-node", "2"]));
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("All 2 ranks hold bit-identical weights, buffers and optimizer state"), "{}", f.stdout);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["world_size"].as_u64(), config["global_batch_size"].as_u64()), (Some(2), Some(8)));
    assert_eq!(metrics(&full).len(), 1);
    assert!(full.join("summary.json").exists() && full.join("best.safetensors").exists());

    if let Some(python) = common::reference_python() {
        let torchrun_bin = python.parent().unwrap().join("torchrun");
        let port = common::free_port().to_string();
        let out = Command::new(&torchrun_bin)
            .args(["--nproc-per-node", "2", "--master-port", &port, "--no-python"])
            .arg(example_bin("train"))
            .args(ddp_args(d, torchrun.to_str().unwrap()))
            .output()
            .unwrap();
        assert!(out.status.success(), "torchrun: {}", String::from_utf8_lossy(&out.stderr));
        common::assert_same_weights(&full, &torchrun);
        assert_eq!(metrics(&full)[0]["train_loss"], metrics(&torchrun)[0]["train_loss"]);
    } else {
        common::skip_or_fail("no reference Python: the torchrun launch was not tried");
    }

    let (c, mut lines) = (cut.to_str().unwrap(), Vec::new());
    let mut launcher = Command::new(example_bin("train"))
        .args(with_flags(ddp_args(d, c), &["--nproc-per-node", "2"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = common::line_channel(launcher.stdout.take().unwrap());
    common::wait_for_line(&rx, "epoch 1/1 step 1/4", &mut lines);
    Command::new("kill").args(["-TERM", &launcher.id().to_string()]).status().unwrap();
    let status = launcher.wait().unwrap();
    lines.extend(rx.try_iter());
    assert_eq!(status.code(), Some(143), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("Interrupted at epoch 1, step")), "{lines:?}");
    let f = run_bin(&example_bin("train"), &["--resume", c, "--nproc-per-node", "2"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    common::assert_same_weights(&full, &cut);

    // Another number of ranks cannot continue it.
    let f = run_bin(&example_bin("train"), &["--resume", c, "--epochs", "2"]);
    assert_clean_failure(&f, "trained with 2 process(es)");
}

/// A two-rank run with AdamW (two groups, gradient clipping) and OneCycleLR stepped per batch
/// (two epochs of two steps; OneCycleLR cycles the first beta too), killed during its fourth
/// save (`--save-every 1`: after epoch 1's first step, at the end of epoch 1, after epoch 2's
/// first step, at the end) and resumed from the pair of epoch 2, step 1, mid-epoch and
/// mid-cycle: it ends bit-identical to the uninterrupted two-rank run (weights, optimizer state,
/// metrics, each step's learning rate).
#[test]
fn a_two_rank_adamw_onecycle_run_resumes_exactly_mid_schedule() {
    if !gloo_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let d = data.to_str().unwrap();
    let (whole, cut) = (root.path().join("whole"), root.path().join("cut"));
    let (w, c) = (whole.to_str().unwrap(), cut.to_str().unwrap());
    let args = |out| {
        let mut args = with_flags(ddp_args(d, out), &["--limit-train", "16", "--epochs", "2", "--nproc-per-node", "2"]);
        args.extend("--optimizer adamw --schedule onecycle:0.01 --schedule-per batch".split(' '));
        args.extend(["--no-decay-on-norm-and-bias", "--clip-grad-norm", "1.0"]);
        args
    };
    let f = run_bin(&example_bin("train"), &args(w));
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("All 2 ranks hold bit-identical weights, buffers and optimizer state"), "{}", f.stdout);

    let out = Command::new(example_bin("train"))
        .args(args(c))
        .args(["--save-every", "1"])
        .env("TCH_ALEXNET_FAILPOINT", "between-checkpoint-writes:4")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint did not stop the run");
    let f = run_bin(&example_bin("train"), &["--resume", c, "--nproc-per-node", "2"]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("Resuming") && f.stdout.contains("epoch 2, step 1"), "{}", f.stdout);
    assert!(f.stdout.contains("All 2 ranks hold bit-identical"), "{}", f.stdout);
    common::assert_same_runs(&cut, &whole);

    let lrs: Vec<f64> = common::step_lrs(&whole).into_iter().map(|(_, lr)| lr).collect();
    assert_eq!(lrs.len(), 4, "one line per step: {lrs:?}");
    assert!((lrs[0] - 0.01 / 25.0).abs() < 1e-15, "OneCycleLR starts at max_lr / div_factor: {lrs:?}");
    assert!(lrs[1] > lrs[0] && lrs[3] < lrs[1], "one cycle up and down: {lrs:?}");
}

/// The launcher SIGKILLed mid-epoch (no chance to pass anything on): its ranks notice, stop
/// after their current step with a checkpoint, and `--resume` finishes the run.
#[test]
fn ranks_of_a_killed_launcher_stop_with_a_checkpoint() {
    if !gloo_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let out = root.path().join("run");
    let o = out.to_str().unwrap();
    let args = with_flags(ddp_args(data.to_str().unwrap(), o), &["--limit-train", "256", "--nproc-per-node", "2"]);
    let mut launcher =
        Command::new(example_bin("train")).args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let (rx, mut lines) = (common::line_channel(launcher.stdout.take().unwrap()), Vec::new());
    common::wait_for_line(&rx, "epoch 1/1 step 8/32", &mut lines);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The ranks write on the launcher's stdout, which this test still reads.
    common::wait_for_line(&rx, "Interrupted at epoch 1, step", &mut lines);
    checkpoint::load_tensors(&out.join("last.safetensors")).expect("a complete checkpoint");
    let f = run_bin(&example_bin("train"), &["--resume", o, "--nproc-per-node", "2"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(metrics(&out).len(), 1);
}

fn spawn_rank(rank: usize, port: &str, args: &[&str]) -> Child {
    Command::new(example_bin("train"))
        .args(args)
        .envs(rank_env(rank, port))
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A rank SIGKILLed mid-epoch: the other stops with an error naming the lost rank, well within
/// the collective timeout, without a panic; `--resume` then finishes the run.
#[test]
fn a_killed_rank_stops_the_other_and_resume_finishes() {
    if !gloo_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let out = root.path().join("run");
    let o = out.to_str().unwrap();
    let args = with_flags(ddp_args(data.to_str().unwrap(), o), &["--save-every", "1", "--limit-train", "64"]);
    let port = common::free_port().to_string();
    let rank0 = spawn_rank(0, &port, &args);
    let mut rank1 = spawn_rank(1, &port, &args);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.join("last.safetensors").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    rank1.kill().unwrap();
    let killed = Instant::now();
    rank1.wait().unwrap();
    let (code, stderr) = stderr_of(rank0);
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(60), "rank 0 took {took:?} to stop");
    assert!(matches!(code, Some(c) if c != 0), "rank 0 exited with {code:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("Error:")).unwrap_or_else(|| panic!("no Error line: {stderr}"));
    assert!(error.contains("rank 1"), "the error must name the lost rank: {error}");
    checkpoint::load_tensors(&out.join("last.safetensors")).expect("the last checkpoint is complete");

    let f = run_bin(&example_bin("train"), &["--resume", o, "--nproc-per-node", "2", "--save-every", "0"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(metrics(&out).len(), 1);
}

/// Ranks started with other settings than rank 0 fail before the first step, naming the
/// setting; a master port already in use is a clear error.
#[test]
fn mismatched_ranks_and_a_busy_port_are_clear_errors() {
    if !gloo_or_skip() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let d = data.to_str().unwrap();
    let out = root.path().join("run");
    let o = out.to_str().unwrap();
    let port = common::free_port().to_string();
    let rank0 = spawn_rank(0, &port, &ddp_args(d, o));
    let rank1 = spawn_rank(1, &port, &with_flags(ddp_args(d, o), &["--batch-size", "8"]));
    let (code1, stderr1) = stderr_of(rank1);
    let (code0, _) = stderr_of(rank0);
    assert!(matches!(code1, Some(c) if c != 0) && matches!(code0, Some(c) if c != 0));
    assert!(stderr1.contains("other settings than rank 0") && stderr1.contains("batch_size"), "{stderr1}");

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let busy_out = root.path().join("busy");
    let args = with_flags(ddp_args(d, busy_out.to_str().unwrap()), &["--dist-timeout", "5"]);
    let (code, stderr) = stderr_of(spawn_rank(0, &busy_port, &args));
    assert!(matches!(code, Some(1)), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
}

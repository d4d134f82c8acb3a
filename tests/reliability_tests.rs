//! Reliability: a user's mistakes and a machine's faults, each with its expected outcome.
//! CPU, tiny synthetic data; every case runs the train/evaluate binaries as a user would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_clean_failure, cpu_train_args, example_bin, metrics, run_bin, synthetic_data_dir, tensors, with_flags,
};
use proptest::prelude::*;
use tch_alexnet::data::cifar::{self, RECORD_BYTES};
use tch_alexnet::formats::safetensors as checkpoint;
use tch_alexnet::train::run_dir::{LAST_CHECKPOINT, LAST_OPTIMIZER};

/// A data folder whose files link to the synthetic set, so one can be broken cheaply.
fn linked_data_dir(root: &Path) -> PathBuf {
    let src = synthetic_data_dir();
    let dir = root.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    for name in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]) {
        std::os::unix::fs::symlink(src.join(name), dir.join(name)).unwrap();
    }
    dir
}

fn train_with(data: &Path, out: &Path, overrides: &[&str]) -> common::Finished {
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    run_bin(&example_bin("train"), &with_flags(cpu_train_args(d, o), overrides))
}

#[test]
fn broken_data_folders_give_one_error_line_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let data = linked_data_dir(root.path());

    let missing = root.path().join("no-such-folder");
    assert_clean_failure(&train_with(&missing, &out, &[]), "CIFAR-10 not found in");

    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_clean_failure(&train_with(&empty, &out, &[]), "CIFAR-10 not found in");

    // An empty cifar-10-batches-bin inside --data-dir: the folder is there, its files are not.
    let nested = root.path().join("nested");
    std::fs::create_dir_all(nested.join("cifar-10-batches-bin")).unwrap();
    assert_clean_failure(&train_with(&nested, &out, &[]), "data_batch_1.bin is missing");

    std::fs::remove_file(data.join("data_batch_4.bin")).unwrap();
    assert_clean_failure(&train_with(&data, &out, &[]), "data_batch_4.bin is missing");

    let bytes = std::fs::read(synthetic_data_dir().join("data_batch_4.bin")).unwrap();
    std::fs::write(data.join("data_batch_4.bin"), &bytes[..bytes.len() - 100]).unwrap();
    assert_clean_failure(&train_with(&data, &out, &[]), "data_batch_4.bin has 30729900 bytes");

    let mut bad = bytes.clone();
    bad[RECORD_BYTES * 9_999] = 200;
    std::fs::write(data.join("data_batch_4.bin"), &bad).unwrap();
    assert_clean_failure(&train_with(&data, &out, &[]), "data_batch_4.bin: record 9999 has label 200");

    // Unreadable: root reads files whatever their mode, so a folder in place of the file
    // stands for a file that cannot be read.
    std::fs::remove_file(data.join("data_batch_4.bin")).unwrap();
    std::fs::create_dir(data.join("data_batch_4.bin")).unwrap();
    assert_clean_failure(&train_with(&data, &out, &[]), "data_batch_4.bin is not a regular file");
    assert!(!out.join("last.safetensors").exists(), "no checkpoint may be written for bad data");
    assert!(!out.exists(), "a run that never started left its folder behind");
}

#[test]
fn unwritable_output_fails_before_loading_data() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("run");
    let f = train_with(&synthetic_data_dir(), &out, &[]);
    assert_clean_failure(&f, "cannot create the output folder");
    assert!(!f.stdout.contains("Loaded CIFAR-10"), "data was loaded before the output check: {}", f.stdout);
}

#[test]
fn epochs_zero_evaluates_the_initial_model_and_limits_are_clamped() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let f = train_with(&synthetic_data_dir(), &out, &["--epochs", "0", "--limit-val", "999999"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(
        f.stdout.contains("--limit-val 999999 is larger than the split (5000 images); using all 5000"),
        "{}",
        f.stdout
    );
    assert!(metrics(&out).is_empty());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["test_images"], 8);
    assert!(out.join("last.safetensors").exists() && out.join("best.safetensors").exists());
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let data = synthetic_data_dir();
    let f = train_with(&data, &out, &["--epochs", "0", "--limit-test", "8"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let good = std::fs::read(out.join("last.safetensors")).unwrap();
    let evaluate = |ckpt: &Path| {
        run_bin(
            &example_bin("evaluate"),
            &[
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
                "--device",
                "cpu",
                "--limit-test",
                "8",
            ],
        )
    };

    let truncated = root.path().join("truncated.safetensors");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    assert_clean_failure(&evaluate(&truncated), "truncated.safetensors is not a valid safetensors file");

    let text = root.path().join("notes.safetensors");
    std::fs::write(&text, b"these are not tensors").unwrap();
    assert_clean_failure(&evaluate(&text), "notes.safetensors is not a valid safetensors file");

    let mut state = tensors(&out.join("last.safetensors"));
    state.remove("conv_block2.1.running_var");
    let missing = root.path().join("missing.safetensors");
    checkpoint::save_tensors(&missing, state.iter().map(|(k, v)| (k.as_str(), v)), &Default::default()).unwrap();
    assert_clean_failure(&evaluate(&missing), "lacks the key `conv_block2.1.running_var`");

    // A truncated last checkpoint makes --resume fail clearly, too.
    std::fs::write(out.join("last.safetensors"), &good[..1000]).unwrap();
    let f = run_bin(&example_bin("train"), &["--resume", out.to_str().unwrap()]);
    assert_clean_failure(&f, "last.safetensors is not a valid safetensors file");
}

#[test]
fn exploding_loss_stops_with_the_epoch_and_step_and_keeps_the_last_good_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let f = train_with(&synthetic_data_dir(), &out, &["--lr", "1e6", "--save-every", "1", "--limit-train", "64"]);
    assert_clean_failure(&f, "the loss became non-finite at epoch 1, step");
    let saved_step: usize =
        checkpoint::load_tensors(&out.join("last.safetensors")).unwrap().metadata["step"].parse().unwrap();
    let bad_step: usize =
        f.stderr.split("step ").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
    assert!(saved_step < bad_step, "checkpoint of step {saved_step} is not before the bad step {bad_step}");
    for (name, t) in tensors(&out.join("last.safetensors")) {
        if t.is_floating_point() {
            assert!(bool::try_from(t.isfinite().all()).unwrap(), "{name} is not finite in the kept checkpoint");
        }
    }
}

/// Starts `train`, returns the child and a channel of its stdout lines.
fn spawn_train(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(example_bin("train"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = common::line_channel(child.stdout.take().unwrap());
    (child, rx)
}

/// A stop signal ends the run within a step with a consistent checkpoint and exit code
/// 128 + its number; resuming it gives exactly the weights of an uninterrupted run, even from
/// the middle of an epoch.
fn signal_stops_cleanly_and_resume_matches_the_uninterrupted_run(signal: &str, code: i32) {
    let root = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let (full, cut) = (root.path().join("full"), root.path().join("cut"));
    let extra = ["--limit-train", "64"];
    let f = train_with(&data, &full, &extra);
    assert_eq!(f.code, Some(0), "{}", f.stderr);

    let (d, c) = (data.to_str().unwrap(), cut.to_str().unwrap());
    let (mut child, rx) = spawn_train(&with_flags(cpu_train_args(d, c), &extra));
    let mut lines = Vec::new();
    // Not a terminal: the trainer prints a plain progress line at each quarter of the epoch.
    common::wait_for_line(&rx, "epoch 1/1 step 2/8", &mut lines);
    let sent = Instant::now();
    Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let stopped_after = sent.elapsed();
    lines.extend(rx.try_iter());
    assert_eq!(status.code(), Some(code), "{lines:?}");
    let last =
        lines.iter().find(|l| l.starts_with("Interrupted at epoch 1, step")).unwrap_or_else(|| panic!("{lines:?}"));
    let step: usize = last["Interrupted at epoch 1, step ".len()..].split(';').next().unwrap().parse().unwrap();
    assert!((2..8).contains(&step), "{last}");
    // One step of batch 8 takes well under 30 s on any machine this runs on.
    assert!(stopped_after < Duration::from_secs(30), "took {stopped_after:?} to stop");
    let meta = checkpoint::load_tensors(&cut.join("last.safetensors")).unwrap().metadata;
    assert_eq!(meta["step"], step.to_string());

    let f = run_bin(&example_bin("train"), &["--resume", c]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    common::assert_same_weights(&full, &cut);
    let (ma, mb) = (&metrics(&full)[0], &metrics(&cut)[0]);
    for key in ["train_loss", "train_acc", "val_loss", "val_acc"] {
        let (x, y) = (ma[key].as_f64().unwrap(), mb[key].as_f64().unwrap());
        assert!((x - y).abs() < 1e-9, "{key}: {x} vs {y}");
    }
}

#[test]
fn sigint_stops_cleanly_and_resume_matches_the_uninterrupted_run() {
    signal_stops_cleanly_and_resume_matches_the_uninterrupted_run("INT", 130);
}

/// What Slurm, Kubernetes and systemd send before they kill: handled as Ctrl-C is.
#[test]
fn sigterm_stops_cleanly_and_resume_matches_the_uninterrupted_run() {
    signal_stops_cleanly_and_resume_matches_the_uninterrupted_run("TERM", 143);
}

/// The temporary files of the checkpoint pair (`last.safetensors`, `last.optim.safetensors`)
/// that process `pid` is writing (formats::atomic names them `.NAME.tmp-PID`). Other files of
/// the run folder (config.json, metrics.jsonl, split.json, best.safetensors) are also written
/// through temporary files, but a kill during those is not a kill during a checkpoint write.
fn checkpoint_temporaries(dir: &Path, pid: u32) -> Vec<String> {
    let names = [LAST_CHECKPOINT, LAST_OPTIMIZER].map(|name| format!(".{name}.tmp-{pid}"));
    common::temporary_files(dir).into_iter().filter(|f| names.contains(f)).collect()
}

/// SIGKILL at arbitrary moments of a run that saves after every step: the checkpoint on disk is
/// always a complete one, kills do land while the checkpoint pair is being written, and
/// --resume finishes the run with the weights and momentum of an uninterrupted run, bit for bit.
#[test]
fn sigkill_while_saving_never_leaves_a_broken_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let data = synthetic_data_dir();
    let (out, full) = (root.path().join("run"), root.path().join("full"));
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let settings = ["--limit-train", "48", "--save-every", "1"];
    let (mut child, rx) = spawn_train(&with_flags(cpu_train_args(d, o), &settings));
    let mut lines = Vec::new();
    common::wait_for_line(&rx, "Split (", &mut lines);
    // Each step writes ~470 MB of checkpoint; kill at different points of those writes.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.join("last.safetensors").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    let loaded = checkpoint::load_tensors(&out.join("last.safetensors"))
        .expect("the checkpoint left by SIGKILL must be complete");
    let killed_at: usize = loaded.metadata["step"].parse().unwrap();

    // Kill the resumed runs while they write the checkpoint pair (one of its temporary files
    // exists), and count the kills that did land there: that temporary file is still on disk.
    let mut landed_during_a_write = 0;
    for _ in 0..3 {
        let (mut child, rx) = spawn_train(&["--resume", o]);
        let pid = child.id();
        let mut lines = Vec::new();
        common::wait_for_line(&rx, "Resuming", &mut lines);
        let deadline = Instant::now() + Duration::from_secs(120);
        while checkpoint_temporaries(&out, pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if !checkpoint_temporaries(&out, pid).is_empty() {
            landed_during_a_write += 1;
        }
        checkpoint::load_tensors(&out.join("last.safetensors")).expect("complete checkpoint after SIGKILL");
        checkpoint::load_tensors(&out.join("last.optim.safetensors")).expect("complete optimizer state after SIGKILL");
    }
    eprintln!("{landed_during_a_write} of 3 kills landed while the checkpoint pair was being written");
    assert!(landed_during_a_write > 0, "no SIGKILL landed while a checkpoint was being written");
    let f = run_bin(&example_bin("train"), &["--resume", o]);
    assert_eq!(f.code, Some(0), "resume after SIGKILL (first kill at step {killed_at}): {}", f.stderr);
    assert_eq!(metrics(&out).len(), 1);
    assert!(out.join("summary.json").exists());
    let leftovers = common::temporary_files(&out);
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let f = run_bin(&example_bin("train"), &with_flags(cpu_train_args(d, full.to_str().unwrap()), &settings));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    common::assert_same_weights(&full, &out);
    let (a, b) = (tensors(&full.join(LAST_OPTIMIZER)), tensors(&out.join(LAST_OPTIMIZER)));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "momentum of {name} differs from the uninterrupted run's");
    }
}

// ------------------------------------------------------------------ fuzzing (bounded)

fn small_checkpoint_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.safetensors");
    let a = tch::Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).view([3, 4]);
    let b = tch::Tensor::from(7i64);
    let meta = [("epoch".to_string(), "1".to_string())].into_iter().collect();
    checkpoint::save_tensors(&path, [("a", &a), ("b", &b)], &meta).unwrap();
    std::fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Mutated checkpoints: flipped bytes anywhere (header included), cut at any length.
    #[test]
    fn checkpoint_reader_never_panics_on_mutations(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = small_checkpoint_bytes();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let len = cut.index(bytes.len() + 1);
        bytes.truncate(len);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let _ = checkpoint::load_tensors(&path);
    }

    #[test]
    fn checkpoint_reader_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), header_len in 0u64..600) {
        let mut file = header_len.to_le_bytes().to_vec();
        file.extend(bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.safetensors");
        std::fs::write(&path, &file).unwrap();
        let _ = checkpoint::load_tensors(&path);
    }

    /// Lengths at and around whole numbers of records, with valid labels (so the parsing path
    /// runs, not only the size check) or a bad one at a random record.
    #[test]
    fn cifar_parser_handles_lengths_near_whole_records(
        records in 0usize..4,
        delta in -3i64..=3,
        bad_label in proptest::option::of((any::<prop::sample::Index>(), 10u8..=255)),
        seed in any::<u64>(),
    ) {
        use rand::{Rng, SeedableRng};
        let len = (records as i64 * RECORD_BYTES as i64 + delta).max(0) as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        for start in (0..len).step_by(RECORD_BYTES) {
            bytes[start] %= 10;
        }
        let whole = len > 0 && len.is_multiple_of(RECORD_BYTES);
        let bad_record = bad_label.filter(|_| whole).map(|(at, label)| {
            let record = at.index(len / RECORD_BYTES);
            bytes[record * RECORD_BYTES] = label;
            record
        });
        match cifar::parse_records(Path::new("fuzz.bin"), &bytes) {
            Ok((images, labels)) => {
                prop_assert!(whole && bad_record.is_none(), "accepted {len} bytes");
                prop_assert_eq!(images.size(), vec![(len / RECORD_BYTES) as i64, 3, 32, 32]);
                prop_assert_eq!(labels.size()[0] as usize, len / RECORD_BYTES);
                // The parsed pixels and labels are the bytes, record by record.
                let first: Vec<u8> = Vec::try_from(images.get(0).flatten(0, -1)).unwrap();
                prop_assert_eq!(&first[..], &bytes[1..RECORD_BYTES]);
                prop_assert_eq!(labels.int64_value(&[0]), bytes[0] as i64);
            }
            Err(cifar::DataError::WrongSize { found, .. }) => {
                prop_assert!(!whole);
                prop_assert_eq!(found as usize, len);
            }
            Err(cifar::DataError::BadLabel { record, .. }) => prop_assert_eq!(Some(record), bad_record),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    /// Random records: either parsed with every label below 10, or a clear error.
    #[test]
    fn cifar_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..(3 * RECORD_BYTES + 7))) {
        match cifar::parse_records(Path::new("fuzz.bin"), &bytes) {
            Ok((images, labels)) => {
                prop_assert_eq!(images.size()[0] as usize * RECORD_BYTES, bytes.len());
                prop_assert!(labels.max().int64_value(&[]) < 10);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

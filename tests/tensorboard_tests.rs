//! TensorBoard event files, read back with TensorBoard's own readers
//! (`tests/fixtures/tensorboard_read.py`: `EventAccumulator` for a folder, `EventFileLoader`
//! for each file): every scalar equals the run's `steps.jsonl`, `metrics.jsonl` and
//! `summary.json` at float32; a file cut mid-record still reads; a run resumed after a SIGKILL
//! between two checkpoints continues its curves without a gap or a repeat; a data-parallel run
//! has one file, rank 0's. CPU, tiny synthetic data, the train binary run as a user would.
//!
//! The reader needs the `tensorboard` package in the reference Python (`TCH_ALEXNET_TENSORBOARD=1
//! scripts/setup`, which `.ci/run` does); without it these tests skip, or fail under
//! `TCH_ALEXNET_REQUIRE_ALL=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{cpu_train_args, example_bin, metrics, run_bin, synthetic_data_dir, with_flags};
use serde_json::Value;
use tch_alexnet::formats::safetensors as checkpoint;
use tch_alexnet::train::tensorboard::event_file::{self, EventFile};
use tch_alexnet::train::tensorboard::proto::{self, event::What, summary_value};

/// The reference Python when it has the `tensorboard` package; `None` (after saying so, or
/// failing under REQUIRE_ALL) otherwise.
fn tensorboard_python() -> Option<PathBuf> {
    let Some(python) = common::reference_python() else {
        common::skip_or_fail("no reference Python (.venv from scripts/setup): TensorBoard's reader not run");
        return None;
    };
    let has_it = Command::new(&python).args(["-c", "import tensorboard"]).status().is_ok_and(|s| s.success());
    if !has_it {
        common::skip_or_fail(
            "the reference Python has no `tensorboard` package (TCH_ALEXNET_TENSORBOARD=1 scripts/setup installs it)",
        );
        return None;
    }
    Some(python)
}

/// What TensorBoard reads in each of `dirs` (see the fixture's header), by folder.
fn read_with_tensorboard(python: &Path, dirs: &[&Path]) -> Vec<Value> {
    let out = Command::new(python)
        .arg(common::project_root().join("tests/fixtures/tensorboard_read.py"))
        .args(dirs)
        .output()
        .expect("cannot start the reference Python");
    assert!(out.status.success(), "tensorboard_read.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    dirs.iter().map(|d| all[d.to_str().unwrap()].clone()).collect()
}

fn train(out: &Path, overrides: &[&str]) -> common::Finished {
    let data = synthetic_data_dir();
    run_bin(
        &example_bin("train"),
        &with_flags(cpu_train_args(data.to_str().unwrap(), out.to_str().unwrap()), overrides),
    )
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A scalar TensorBoard read, by step: `(step, value)` pairs in order.
fn series(read: &Value, tag: &str) -> Vec<(u64, f64)> {
    let points = read["scalars"][tag].as_array().unwrap_or_else(|| panic!("no scalar {tag}: {}", read["scalars"]));
    points.iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap())).collect()
}

/// Asserts that TensorBoard's value is the float32 of the file's value, bit for bit. (Both come
/// through serde_json's float parser, which may be one float64 ulp off: harmless at float32.)
fn assert_f32(tag: &str, step: u64, tensorboard: f64, file: &Value) {
    let expected = file.as_f64().unwrap_or_else(|| panic!("{tag} at {step}: not a number in the file: {file}")) as f32;
    assert_eq!((tensorboard as f32).to_bits(), expected.to_bits(), "{tag} at step {step}: {tensorboard} vs {file}");
}

/// The scalars of `tag` are exactly `expected` (step, value in a JSON file), in step order.
fn assert_series(read: &Value, tag: &str, expected: &[(u64, &Value)]) {
    let got = series(read, tag);
    let got_steps: Vec<u64> = got.iter().map(|p| p.0).collect();
    let expected_steps: Vec<u64> = expected.iter().map(|p| p.0).collect();
    assert_eq!(got_steps, expected_steps, "{tag}: steps");
    for ((step, value), (_, file)) in got.iter().zip(expected) {
        assert_f32(tag, *step, *value, file);
    }
}

/// Every scalar of a finished single-process run against its files: the loss and each group's
/// learning rate at every step of `steps.jsonl`; the epochs' metrics at each epoch's last step
/// (the throughput there too); the test results at the last step; no other tag.
fn assert_scalars_match_the_run_files(read: &Value, run: &Path, steps_per_epoch: u64) {
    let steps = json_lines(&run.join("steps.jsonl"));
    let at = |line: &Value| line["step"].as_u64().unwrap();
    let losses: Vec<(u64, &Value)> = steps.iter().map(|l| (at(l), &l["loss"])).collect();
    assert_series(read, "train/loss", &losses);
    for group in 0..2 {
        let lrs: Vec<(u64, &Value)> = steps.iter().map(|l| (at(l), &l["lr_groups"][group])).collect();
        assert_series(read, &format!("lr-SGD/pg{}", group + 1), &lrs);
    }
    let epochs = metrics(run);
    let epoch_end = |m: &Value| m["epoch"].as_u64().unwrap() * steps_per_epoch;
    for (tag, key) in [
        ("train/loss_epoch", "train_loss"),
        ("train/acc", "train_acc"),
        ("val/loss", "val_loss"),
        ("val/acc", "val_acc"),
        ("epoch", "epoch"),
        ("time/epoch_seconds", "seconds"),
    ] {
        let expected: Vec<(u64, &Value)> = epochs.iter().map(|m| (epoch_end(m), &m[key])).collect();
        assert_series(read, tag, &expected);
    }
    let throughput: BTreeMap<u64, f64> = series(read, "time/images_per_sec").into_iter().collect();
    let all_steps: BTreeSet<u64> = losses.iter().map(|p| p.0).collect();
    assert!(throughput.keys().all(|s| all_steps.contains(s)), "throughput at steps without a loss: {throughput:?}");
    for m in &epochs {
        let step = epoch_end(m);
        assert_f32("time/images_per_sec", step, throughput[&step], &m["images_per_sec"]);
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let last = epoch_end(epochs.last().unwrap());
    for (tag, key) in [
        ("test/acc", "test_acc_last"),
        ("test/loss", "test_loss_last"),
        ("test/acc_best", "test_acc_best"),
        ("test/loss_best", "test_loss_best"),
    ] {
        assert_series(read, tag, &[(last, &summary[key])]);
    }
    let tags: BTreeSet<&str> = read["scalars"].as_object().unwrap().keys().map(String::as_str).collect();
    let known: BTreeSet<&str> = [
        "train/loss",
        "lr-SGD/pg1",
        "lr-SGD/pg2",
        "time/images_per_sec",
        "train/loss_epoch",
        "train/acc",
        "val/loss",
        "val/acc",
        "epoch",
        "time/epoch_seconds",
        "test/acc",
        "test/loss",
        "test/acc_best",
        "test/loss_best",
    ]
    .into();
    assert_eq!(tags, known, "scalar tags");
}

/// A short run's file, as TensorBoard reads it: every scalar equals the run's files at
/// float32 (a per-batch cosine schedule and two parameter groups, so that each step's learning
/// rates differ), the settings as text and hparams, the remaining time as text.
#[test]
fn a_short_runs_scalars_read_back_in_tensorboard_equal_its_files() {
    let Some(python) = tensorboard_python() else { return };
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let flags = [
        "--epochs",
        "2",
        "--limit-train",
        "32",
        "--no-decay-on-norm-and-bias",
        "--schedule",
        "cosine",
        "--schedule-per",
        "batch",
    ];
    let f = train(&run, &flags);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let read = &read_with_tensorboard(&python, &[&run])[0];
    assert_scalars_match_the_run_files(read, &run, 4);

    let files = read["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0]["name"].as_str().unwrap();
    let fields: Vec<&str> = name.strip_prefix(event_file::FILE_PREFIX).unwrap().split('.').collect();
    assert!(fields.len() >= 4 && fields[0].len() == 10, "not SummaryWriter's name: {name}");
    assert!(fields[fields.len() - 2].parse::<u32>().is_ok() && fields[fields.len() - 1].parse::<u64>().is_ok());
    assert_eq!(files[0]["events"][0]["what"], "file_version");

    let config = &read["texts"]["config/text_summary"];
    assert_eq!(config[0][0], 0);
    assert!(config[0][1].as_str().unwrap().contains("| schedule | `{\"decay\":"), "{config}");
    let eta = read["texts"]["eta/text_summary"].as_array().unwrap();
    // Four steps an epoch: each ends a quarter.
    assert_eq!(eta.iter().map(|t| t[0].as_u64().unwrap()).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    assert!(eta.iter().all(|t| t[1].as_str().unwrap().contains("left in the run")), "{eta:?}");
    let hparams = &read["hparams"];
    assert_eq!(
        (&hparams["lr"], &hparams["optimizer"], &hparams["epochs"]),
        (&0.005.into(), &"sgd".into(), &2.0.into())
    );
}

/// A file cut anywhere in its last two records (a crash mid-write) reads in TensorBoard as
/// the records before the cut, without an error.
#[test]
fn a_file_cut_mid_record_reads_as_the_records_before_the_cut() {
    let Some(python) = tensorboard_python() else { return };
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    std::fs::create_dir(&whole).unwrap();
    let file = EventFile::create(&whole, &proto::file_version(1.0)).unwrap();
    let events: Vec<_> = (1..=4).map(|step| proto::scalars(2.0, step, &[("train/loss", step as f64 / 8.0)])).collect();
    file.append(&events).unwrap();
    let bytes = std::fs::read(file.path()).unwrap();
    let records = event_file::read_records(&bytes).unwrap().complete;
    // Each record is framed by 16 bytes: its length, and two checksums.
    let last_two: usize = records[records.len() - 2..].iter().map(|r| r.len() + 16).sum();
    let cuts: Vec<usize> = (bytes.len() - last_two..=bytes.len()).collect();
    let dirs: Vec<PathBuf> = cuts
        .iter()
        .map(|&cut| {
            let dir = root.path().join(format!("cut{cut}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(file.path().file_name().unwrap()), &bytes[..cut]).unwrap();
            dir
        })
        .collect();
    let reads = read_with_tensorboard(&python, &dirs.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    for (cut, read) in cuts.iter().zip(&reads) {
        let complete = event_file::read_events(&bytes[..*cut]).unwrap();
        let expected: Vec<(u64, f64)> = complete
            .iter()
            .filter_map(|e| match &e.what {
                Some(What::Summary(s)) => match s.value[0].value {
                    Some(summary_value::Value::SimpleValue(v)) => Some((e.step as u64, v as f64)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert!(expected.len() >= 2, "cut at {cut}: {expected:?}");
        assert_eq!(series(read, "train/loss"), expected, "cut at {cut} of {}", bytes.len());
    }
}

/// Killed (SIGKILL) after its event file received steps past the last checkpoint, a run
/// resumed with `--resume` writes a second file starting with `SessionLog.START` at the first
/// step it takes again; TensorBoard then shows every step once, with the values of the
/// continued `steps.jsonl`, and every epoch once.
#[test]
fn a_run_resumed_after_sigkill_continues_its_curves_without_a_gap_or_a_repeat() {
    let Some(python) = tensorboard_python() else { return };
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let data = synthetic_data_dir();
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    // 8 steps an epoch; checkpoints after steps 3 and 6 of each epoch, and at its end.
    let flags = ["--epochs", "2", "--limit-train", "64", "--save-every", "3", "--no-decay-on-norm-and-bias"];
    let mut child = Command::new(example_bin("train"))
        .args(with_flags(cpu_train_args(d, r), &flags))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = common::line_channel(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    // Printed after steps 1-4 went to steps.jsonl and the event file; checkpoint at step 3.
    common::wait_for_line(&rx, "epoch 1/2 step 4/8", &mut lines);
    child.kill().unwrap();
    child.wait().unwrap();
    let meta = checkpoint::load_tensors(&run.join("last.safetensors")).unwrap().metadata;
    assert_eq!((meta["epoch"].as_str(), meta["step"].as_str()), ("0", "3"), "killed too late: {lines:?}");
    let first = event_file::list(&run).unwrap();
    assert_eq!(first.len(), 1);
    let logged: Vec<i64> = event_file::read_events(&std::fs::read(&first[0]).unwrap())
        .unwrap()
        .iter()
        .filter(|e| matches!(&e.what, Some(What::Summary(s)) if s.value[0].tag == "train/loss"))
        .map(|e| e.step)
        .collect();
    // What the purge is for: steps logged after the checkpoint (4, and 5 if the kill came after
    // another read), to be taken again.
    assert!(logged.starts_with(&[1, 2, 3, 4]) && logged.len() <= 5, "steps in the killed run's file: {logged:?}");

    let f = run_bin(&example_bin("train"), &["--resume", r]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let read = &read_with_tensorboard(&python, &[&run])[0];
    assert_scalars_match_the_run_files(read, &run, 8);
    let steps: Vec<u64> = series(read, "train/loss").iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=16).collect::<Vec<_>>());

    let files = read["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let resumed = &files[1]["events"];
    assert_eq!((&resumed[0]["what"], &resumed[0]["step"]), (&"file_version".into(), &0.into()));
    assert_eq!((&resumed[1]["what"], &resumed[1]["step"]), (&"session_log:1".into(), &4.into()), "{resumed}");
    let config = read["texts"]["config/text_summary"].as_array().unwrap();
    assert_eq!(config.iter().map(|t| t[0].as_u64().unwrap()).collect::<Vec<_>>(), [0, 4]);
    assert!(config[1][1].as_str().unwrap().starts_with("Resumed after step 3 (epoch 1)"), "{config:?}");
    let files = event_file::list(&run).unwrap();
    assert_orphans_are_written_again(&files[0], &files[1], 3);
}

/// The steps of each tag in an event file, in the file's order.
fn steps_by_tag(path: &Path) -> BTreeMap<String, Vec<i64>> {
    let mut tags: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for event in event_file::read_events(&std::fs::read(path).unwrap()).unwrap() {
        if let Some(What::Summary(summary)) = &event.what {
            for value in &summary.value {
                tags.entry(value.tag.clone()).or_default().push(event.step);
            }
        }
    }
    tags
}

/// TensorBoard's fast loader (its Rust data server) ignores `SessionLog.START` and drops a
/// curve's points from the first step the curve logs again: every tag that the killed run's
/// file holds after the checkpoint's step must come again in the resumed file, first at or
/// before those steps.
fn assert_orphans_are_written_again(killed: &Path, resumed: &Path, checkpoint_step: i64) {
    let again = steps_by_tag(resumed);
    for (tag, steps) in steps_by_tag(killed) {
        let Some(&orphan) = steps.iter().filter(|&&s| s > checkpoint_step).min() else { continue };
        let first_again = again.get(&tag).and_then(|s| s.first());
        assert!(
            first_again.is_some_and(|&s| s <= orphan),
            "{tag}: orphan at {orphan}, written again from {first_again:?}"
        );
    }
}

/// Two ranks: one event file, rank 0's, whose steps are those of `steps.jsonl`.
#[test]
fn a_data_parallel_run_has_one_event_file_written_by_rank_0() {
    if !tch_alexnet::distributed::Backend::Gloo.is_available() {
        common::skip_or_fail("this build has no Gloo (libgloo-dev); the data-parallel event file was not checked");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let flags = ["--limit-train", "16", "--batch-size", "4", "--threads", "1", "--nproc-per-node", "2"];
    let f = train(&run, &flags);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let files = event_file::list(&run).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let losses: Vec<(i64, f32)> = event_file::read_events(&std::fs::read(&files[0]).unwrap())
        .unwrap()
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) if s.value[0].tag == "train/loss" => match s.value[0].value {
                Some(summary_value::Value::SimpleValue(v)) => Some((e.step, v)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let expected: Vec<(i64, f32)> = json_lines(&run.join("steps.jsonl"))
        .iter()
        .map(|l| (l["step"].as_i64().unwrap(), l["loss"].as_f64().unwrap() as f32))
        .collect();
    assert_eq!(losses, expected);
    assert_eq!(expected.len(), 2, "16 images, 2 ranks, batches of 4");
}

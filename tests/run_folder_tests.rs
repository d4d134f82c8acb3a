//! The run folder against what real machines do to it: a crash between the two checkpoint
//! writes, a full disk, a second trainer on the same folder, data that changed before
//! `--resume`, and damaged files. CPU, tiny synthetic data, the train binary run as a user would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_clean_failure, cpu_train_args, example_bin, metrics, run_bin, synthetic_data_dir, with_flags};
use tch_alexnet::data::cifar;
use tch_alexnet::formats::safetensors as checkpoint;

fn train(out: &Path, overrides: &[&str]) -> common::Finished {
    let data = synthetic_data_dir();
    run_bin(
        &example_bin("train"),
        &with_flags(cpu_train_args(data.to_str().unwrap(), out.to_str().unwrap()), overrides),
    )
}

fn resume(out: &Path, extra: &[&str]) -> common::Finished {
    let mut args = vec!["--resume", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_bin(&example_bin("train"), &args)
}

fn step_of(path: &Path) -> String {
    checkpoint::load_tensors(path).unwrap().metadata["step"].clone()
}

/// A process stopped between the momentum file and the weights (as by a power loss) leaves
/// the previous momentum file in place; `--resume` continues from the last complete pair and
/// ends bit-identical to the uninterrupted run.
#[test]
fn a_crash_between_the_two_checkpoint_writes_resumes_from_the_last_complete_pair() {
    let root = tempfile::tempdir().unwrap();
    let (full, cut) = (root.path().join("full"), root.path().join("cut"));
    let flags = ["--limit-train", "32", "--save-every", "1"];
    let f = train(&full, &flags);
    assert_eq!(f.code, Some(0), "{}", f.stderr);

    let data = synthetic_data_dir();
    let out = Command::new(example_bin("train"))
        .args(with_flags(cpu_train_args(data.to_str().unwrap(), cut.to_str().unwrap()), &flags))
        .env("TCH_ALEXNET_FAILPOINT", "between-checkpoint-writes:3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint did not stop the run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"), "{}", String::from_utf8_lossy(&out.stderr));
    // The state a crash between the writes leaves: new momentum, old weights, old momentum kept.
    assert_eq!(step_of(&cut.join("last.safetensors")), "2");
    assert_eq!(step_of(&cut.join("last.optim.safetensors")), "3");
    assert_eq!(step_of(&cut.join("previous.optim.safetensors")), "2");

    let f = resume(&cut, &[]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(f.stdout.contains("Resuming") && f.stdout.contains("step 2"), "{}", f.stdout);
    common::assert_same_weights(&full, &cut);
    let (ma, mb) = (&metrics(&full)[0], &metrics(&cut)[0]);
    for key in ["train_loss", "train_acc", "val_loss", "val_acc"] {
        assert_eq!(ma[key], mb[key], "{key}");
    }
    assert!(!cut.join("previous.optim.safetensors").exists());
    assert!(common::temporary_files(&cut).is_empty());
}

/// While a trainer runs, a second one on its folder (new or `--resume`) is refused at once with
/// the folder and the other process named; once the first is SIGKILLed, nothing stale blocks
/// `--resume`.
#[test]
fn a_second_trainer_on_a_folder_in_use_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let data = synthetic_data_dir();
    let args = with_flags(
        cpu_train_args(data.to_str().unwrap(), out.to_str().unwrap()),
        &["--limit-train", "64", "--save-every", "1"],
    );
    let mut first = Command::new(example_bin("train")).args(&args).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.join("last.safetensors").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = first.id().to_string();
    let started = Instant::now();
    let second = run_bin(&example_bin("train"), &args);
    assert_clean_failure(&second, "is in use by another trainer");
    assert!(second.stderr.contains(&format!("process {pid}")) && second.stderr.contains(out.to_str().unwrap()));
    let again = resume(&out, &[]);
    assert_clean_failure(&again, "is in use by another trainer");
    assert!(started.elapsed() < Duration::from_secs(30), "refusing took {:?}", started.elapsed());

    first.kill().unwrap();
    first.wait().unwrap();
    let f = resume(&out, &["--save-every", "0"]);
    assert_eq!(f.code, Some(0), "a SIGKILLed trainer must leave no stale lock: {}", f.stderr);
}

/// `config.json` records the data files; `--resume` on different data is refused unless the
/// user says `--allow-data-change`.
#[test]
fn resume_on_changed_data_is_refused_unless_allowed() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let f = train(&out, &[]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["data_fingerprint"].as_array().unwrap().len(), 6, "{config}");

    // The same files, one pixel changed in the second training file.
    let changed = root.path().join("changed");
    std::fs::create_dir_all(&changed).unwrap();
    for name in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]) {
        std::os::unix::fs::symlink(synthetic_data_dir().join(name), changed.join(name)).unwrap();
    }
    let victim = changed.join(cifar::TRAIN_FILES[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 1;
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, bytes).unwrap();

    let dir = changed.to_str().unwrap();
    let f = resume(&out, &["--epochs", "2", "--data-dir", dir]);
    assert_clean_failure(&f, "data_batch_2.bin");
    assert!(f.stderr.contains("--allow-data-change"), "{}", f.stderr);
    assert_eq!(metrics(&out).len(), 1, "a refused resume must not train");

    let f = resume(&out, &["--epochs", "2", "--data-dir", dir, "--allow-data-change"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(f.stdout.contains("warning: the data files differ"), "{}", f.stdout);
    assert_eq!(metrics(&out).len(), 2);
}

/// A copy of a run folder for one damage experiment: small files copied, checkpoints linked.
fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.extension().is_some_and(|e| e == "safetensors") {
            std::fs::hard_link(&path, &target).unwrap();
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// `--resume` on a folder whose `config.json` or `metrics.jsonl` is missing, empty, truncated
/// or not JSON: one clear error naming the file, and nothing in the folder changes.
#[test]
fn damaged_run_folders_are_one_clear_error_and_stay_untouched() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("good");
    let f = train(&good, &["--epochs", "2", "--limit-train", "8"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("missing", |p| std::fs::remove_file(p).unwrap()),
        ("empty", |p| std::fs::write(p, b"").unwrap()),
        ("truncated", |p| {
            let text = std::fs::read(p).unwrap();
            std::fs::write(p, &text[..text.len() - 10]).unwrap()
        }),
        ("not JSON", |p| std::fs::write(p, b"this is not json\n").unwrap()),
    ];
    for file in ["config.json", "metrics.jsonl"] {
        for (what, damage) in damages {
            let dir = root.path().join(format!("{file}-{what}"));
            copy_run(&good, &dir);
            damage(&dir.join(file));
            let before = snapshot(&dir);
            let f = resume(&dir, &["--epochs", "3"]);
            assert_clean_failure(&f, file);
            assert_eq!(snapshot(&dir), before, "{file} {what}: the folder changed");
        }
    }
}

/// Every file of a folder (but the lock) with its size and modification time.
fn snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != ".lock")
        .map(|e| {
            let m = e.metadata().unwrap();
            (e.file_name().to_string_lossy().into_owned(), m.len(), m.modified().unwrap())
        })
        .collect();
    files.sort();
    files
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()])
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Self(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), self.0.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "cannot grow the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills while a checkpoint is written: one clear error that says so, no temporary
/// file left, the previous checkpoint intact; once space is freed, `--resume` finishes the run.
/// Needs root (tmpfs); elsewhere it says why it did not run (a failure under
/// `TCH_ALEXNET_REQUIRE_ALL=1`: CI runs as root).
#[test]
fn a_full_disk_is_one_clear_error_and_resume_continues_once_space_is_freed() {
    let root = tempfile::tempdir().unwrap();
    // One checkpoint pair (2 x 233 MB) fits, a second pair beside it does not.
    let disk = match SmallDisk::mount(&root.path().join("disk"), "800m") {
        Ok(disk) => disk,
        Err(reason) => {
            common::skip_or_fail(&format!("the full-disk test needs a tmpfs mount (root): {reason}"));
            return;
        }
    };
    let out = disk.0.join("run");
    let f = train(&out, &["--limit-train", "32", "--save-every", "1"]);
    assert_clean_failure(&f, "the disk is full");
    assert!(f.stderr.contains("--resume"), "{}", f.stderr);
    assert!(f.stdout.contains("warning:") && f.stdout.contains("MB free"), "no free-space warning: {}", f.stdout);
    assert!(common::temporary_files(&out).is_empty(), "{:?}", common::temporary_files(&out));
    assert_eq!(step_of(&out.join("last.safetensors")), "1");
    assert_eq!(step_of(&out.join("last.optim.safetensors")), "1");

    disk.resize("2g");
    let f = resume(&out, &["--save-every", "0"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(metrics(&out).len(), 1);
    assert!(out.join("summary.json").exists());
}

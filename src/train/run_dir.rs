//! The run folder and its small files: `config.json`, `metrics.jsonl`, `split.json`,
//! `summary.json`, the
//! lock that keeps a second trainer out, and the checks a folder must pass before `--resume`.
//!
//! Every file is written through a synced temporary file and a rename
//! ([`write_atomically`]), so a reader never sees half of one. The lock is an exclusive
//! `flock` on `.lock`, which the kernel releases when the process dies in any way: a SIGKILLed
//! trainer leaves no stale lock behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::formats::atomic::write_atomically;
use crate::train::config::{Precision, RunInfo, TrainConfig};
use crate::train::metrics::EpochMetrics;

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LAST_CHECKPOINT: &str = "last.safetensors";
pub const LAST_OPTIMIZER: &str = "last.optim.safetensors";
/// The optimizer state of the previous checkpoint, kept while a new pair is being put in place
/// (see [`crate::train::resume`]).
pub const PREVIOUS_OPTIMIZER: &str = "previous.optim.safetensors";
pub const BEST_CHECKPOINT: &str = "best.safetensors";
pub const SUMMARY_FILE: &str = "summary.json";
/// The whole train/validation split, in the tutorial's order (`valid = indices[:split]`).
pub const SPLIT_FILE: &str = "split.json";
pub const CURVES_FILE: &str = "curves.svg";
pub const LOCK_FILE: &str = ".lock";

/// Where a run writes, and whether it continues the run already there.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
    pub resume: bool,
    /// Resume even though the data files differ from those the run was trained on.
    pub allow_data_change: bool,
    /// What a new run starts from (ignored when `resume`).
    pub start: Start,
}

/// What a new run starts from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Start {
    /// Weights drawn with PyTorch's init from the seed.
    #[default]
    Fresh,
    /// Given weights (`--init-from`, either format; `key` picks the entry of a nested PyTorch
    /// file); the optimizer starts without momentum, at epoch 1.
    Weights { path: PathBuf, key: Option<String> },
    /// A PyTorch training checkpoint (`train --resume FILE`): weights, momentum and the
    /// completed epochs; the run continues at the next epoch.
    PytorchCheckpoint { path: PathBuf },
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), resume: false, allow_data_change: false, start: Start::Fresh }
    }

    pub fn resume(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), resume: true, allow_data_change: false, start: Start::Fresh }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// The exclusive lock of one run folder, held for the life of the trainer.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `dir`, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
                let who = holder.map_or("another process".to_string(), |pid| format!("process {pid}"));
                bail!(
                    "{} is in use by another trainer ({who}); wait for it to finish or stop it, or choose another --out",
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Only for the message above: the lock itself is the flock, not this number.
        file.set_len(0).and_then(|_| file.write_all(std::process::id().to_string().as_bytes())).ok();
        Ok(Self { _file: file })
    }
}

/// Creates the output folder, locks it, and checks it is in the state `run` expects (a new
/// folder holds no run; a resumed one holds a readable one). Runs before any data is loaded.
pub fn prepare(run: &RunDir) -> Result<RunLock> {
    let dir = &run.path;
    if run.resume && !dir.is_dir() {
        bail!("cannot resume: {} is not a folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    let lock = RunLock::acquire(dir)?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").with_context(|| format!("output folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    if !run.resume && (dir.join(LAST_CHECKPOINT).exists() || dir.join(CONFIG_FILE).exists()) {
        bail!("{} already holds a run; pass --resume {0} to continue it, or choose another --out", dir.display());
    }
    if run.resume {
        if !dir.join(LAST_CHECKPOINT).exists() {
            bail!("cannot resume: {} has no {LAST_CHECKPOINT}", dir.display());
        }
        read_run_info(dir)?;
        read_metrics(dir)?;
    }
    // Temporary files of a process killed while writing: never read, safe to remove.
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(lock)
}

/// Removes what [`prepare`] made for a new run that never started, so that a run failing on
/// its data leaves no empty folder (the folder is only removed if nothing else is in it).
pub fn discard_new(run: &RunDir) {
    if !run.resume {
        let _ = std::fs::remove_file(run.file(LOCK_FILE));
        let _ = std::fs::remove_dir(&run.path);
    }
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    write_atomically(path, text.as_bytes()).map_err(|e| storage_error(path, e))
}

/// Writes `value` as one line of JSON, atomically (for large arrays such as the split).
pub fn write_json_compact(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string(value)? + "\n";
    write_atomically(path, text.as_bytes()).map_err(|e| storage_error(path, e))
}

/// Rewrites `metrics.jsonl` with one line per finished epoch.
pub fn write_metrics(dir: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in history {
        text += &serde_json::to_string(m)?;
        text.push('\n');
    }
    let path = dir.join(METRICS_FILE);
    write_atomically(&path, text.as_bytes()).map_err(|e| storage_error(&path, e))
}

/// Reads a file of the run folder that must hold something, naming it in every error.
fn read_nonempty(path: &Path) -> Result<String> {
    let text = match std::fs::read(path) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not text (damaged?)", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is missing: this is not a complete run folder", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.trim().is_empty() {
        bail!("{} is empty (damaged run folder?)", path.display());
    }
    Ok(text)
}

/// Reads `config.json` of a run folder: the settings and what the run was trained on.
pub fn read_run_info(dir: &Path) -> Result<RunInfo> {
    let path = dir.join(CONFIG_FILE);
    let text = read_nonempty(&path)?;
    let mut info: RunInfo = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid run config (truncated or edited by hand?)", path.display()))?;
    // Before the precision was recorded, `amp` meant bf16 autocast on CUDA and nothing on the
    // CPU: such a run goes on as it ran.
    if info.config.precision.is_none() {
        let bf16 = info.config.amp && info.resolved_device.starts_with("cuda");
        info.config.precision = Some(if bf16 { Precision::Bf16 } else { Precision::Fp32 });
    }
    Ok(info)
}

/// The settings saved in a run folder.
pub fn read_config(dir: &Path) -> Result<TrainConfig> {
    Ok(read_run_info(dir)?.config)
}

/// Reads `metrics.jsonl`: every line must be one epoch's metrics. A run writes the file before
/// its first step, so a missing one means a damaged folder.
pub fn read_metrics(dir: &Path) -> Result<Vec<EpochMetrics>> {
    let path = dir.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is missing: this is not a complete run folder", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        bail!("{} is truncated (its last line is incomplete)", path.display());
    }
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {} is not an epoch's metrics (damaged file?)", path.display(), i + 1))
        })
        .collect()
}

/// Checks `metrics.jsonl` against the epochs the checkpoint has finished. The file may lag by
/// one epoch (a crash between the checkpoint and the metrics write); the checkpoint's history
/// then rewrites it.
pub fn check_metrics(dir: &Path, history: &[EpochMetrics]) -> Result<()> {
    let on_disk = read_metrics(dir)?;
    let path = dir.join(METRICS_FILE);
    let consistent = on_disk.len() <= history.len()
        && on_disk.len() + 1 >= history.len()
        && on_disk.iter().zip(history).all(|(a, b)| a.epoch == b.epoch);
    if !consistent {
        bail!(
            "{} lists {} epochs but the checkpoint has finished {}: the folder was changed by hand or damaged",
            path.display(),
            on_disk.len(),
            history.len()
        );
    }
    Ok(())
}

/// An error writing `path`, explained when the cause is the storage rather than the program:
/// a full disk or quota, or an I/O error from the device.
pub fn storage_error(path: &Path, err: std::io::Error) -> anyhow::Error {
    let what = match err.raw_os_error() {
        Some(libc::ENOSPC) => "the disk is full",
        Some(libc::EDQUOT) => "the disk quota is used up",
        Some(libc::EIO) => "the storage device reported an I/O error",
        _ => return anyhow::Error::new(err).context(format!("cannot write {}", path.display())),
    };
    let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    anyhow::Error::new(err).context(format!(
        "cannot write {}: {what} ({}); nothing was replaced, the previous checkpoint is intact: \
         free space and continue with --resume {}",
        path.display(),
        dir.display(),
        dir.display()
    ))
}

/// Bytes free for this user on the file system holding `dir`.
pub fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid C string and `stat` a writable statvfs for the call.
    let status = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (status == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The disk space a run needs at its peak: the weights, momentum and best checkpoints, and a
/// new weights/momentum pair written beside the old one before it replaces it.
pub fn checkpoint_bytes_needed(weight_bytes: u64) -> u64 {
    5 * weight_bytes
}

/// A warning when the run folder's disk cannot hold the run's checkpoints (`None` when it can,
/// or when the free space is unknown).
pub fn disk_space_warning(dir: &Path, weight_bytes: u64) -> Option<String> {
    let free = available_bytes(dir)?;
    let needed = checkpoint_bytes_needed(weight_bytes);
    (free < needed).then(|| {
        format!(
            "warning: {} has {} MB free, but the checkpoints need up to {} MB; a checkpoint write will fail \
             when the disk fills (the previous checkpoint stays intact)",
            dir.display(),
            free / 1_000_000,
            needed / 1_000_000
        )
    })
}

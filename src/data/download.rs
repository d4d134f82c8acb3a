//! Finding CIFAR-10 under `--data-dir`, downloading it when missing, as torchvision's
//! `download=True` does.
//!
//! The archive is streamed to a temporary file beside the target while its MD5 is computed,
//! checked, extracted into a temporary folder, checked again (every file present, every size
//! right) and only then renamed into place. A killed or failed download leaves no folder that
//! could later pass for a complete one; its temporary files are removed on failure and ignored
//! (and replaced) by the next attempt.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::data::cifar::{self, FOLDER_NAME};

/// The official binary archive and its MD5, as published on the CIFAR page.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Where the data set lies; errors say what failed and how to place the files by hand.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "CIFAR-10 not found in {dir} and downloading is off; download {url} yourself and extract it \
         there (it makes {dir}/{FOLDER_NAME}/), or run without --no-download"
    )]
    NotFound { dir: PathBuf, url: String },
    #[error(
        "cannot download {url}: {reason}. Without network access, download the archive elsewhere and \
         extract it into {dir} (it makes {dir}/{FOLDER_NAME}/ with data_batch_1.bin … test_batch.bin)"
    )]
    Fetch { url: String, dir: PathBuf, reason: String },
    #[error("downloaded archive from {url} has MD5 {found}, expected {expected}: corrupt or not the CIFAR-10 binary archive; nothing was kept")]
    Md5 { url: String, found: String, expected: String },
    #[error("downloaded archive from {url} is incomplete: {found} of {expected} bytes; nothing was kept")]
    Truncated { url: String, found: u64, expected: u64 },
    #[error("cannot extract the CIFAR-10 archive: {0}")]
    Extract(String),
    #[error("cannot write in {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Data(#[from] cifar::DataError),
}

/// Where to get the archive from, and what it must hash to.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub md5: String,
}

impl Default for Source {
    fn default() -> Self {
        Self { url: CIFAR10_URL.to_string(), md5: CIFAR10_MD5.to_string() }
    }
}

/// Returns the folder holding the batch files: `data_dir` itself when it holds them, else
/// `data_dir/cifar-10-batches-bin`, downloading it first when it is missing and `download` is on.
/// The folder's files are checked (presence and sizes) before it is returned.
pub fn ensure_cifar10(data_dir: &Path, download: bool, source: &Source) -> Result<PathBuf, DownloadError> {
    if data_dir.join(cifar::TRAIN_FILES[0]).exists() {
        cifar::check_dir(data_dir)?;
        return Ok(data_dir.to_path_buf());
    }
    let target = data_dir.join(FOLDER_NAME);
    if target.exists() {
        cifar::check_dir(&target)?;
        return Ok(target);
    }
    if !download {
        return Err(DownloadError::NotFound { dir: data_dir.to_path_buf(), url: source.url.clone() });
    }
    std::fs::create_dir_all(data_dir).map_err(|e| DownloadError::Io { path: data_dir.to_path_buf(), err: e })?;
    let work = TempPath(data_dir.join(format!(".cifar10-download-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).map_err(|e| DownloadError::Io { path: work.0.clone(), err: e })?;
    let archive = work.0.join("cifar-10-binary.tar.gz");
    fetch(&source.url, &archive, &source.md5, data_dir)?;
    let extracted = work.0.join("extracted");
    extract(&archive, &extracted)?;
    let folder = extracted.join(FOLDER_NAME);
    cifar::check_dir(&folder)?;
    std::fs::rename(&folder, &target).map_err(|e| DownloadError::Io { path: target.clone(), err: e })?;
    eprintln!("CIFAR-10 is ready in {}", target.display());
    Ok(target)
}

/// A temporary file or folder, removed when dropped (success or failure alike).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fetch(url: &str, dest: &Path, expected_md5: &str, data_dir: &Path) -> Result<(), DownloadError> {
    let fetch_err = |reason: String| DownloadError::Fetch { url: url.to_string(), dir: data_dir.to_path_buf(), reason };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let response = agent.get(url).call().map_err(|e| {
        fetch_err(match e {
            ureq::Error::Status(code, _) => format!("the server answered HTTP {code}"),
            // Transport errors print the URL again; keep their kind and message only.
            ureq::Error::Transport(t) => match t.message() {
                Some(m) => format!("{}: {m}", t.kind()),
                None => t.kind().to_string(),
            },
        })
    })?;
    let expected_len: Option<u64> = response.header("Content-Length").and_then(|v| v.parse().ok());
    eprintln!(
        "Downloading {url} ({}) to {}",
        expected_len.map_or("size unknown".into(), human_bytes),
        data_dir.display()
    );
    let bar = crate::progress::bytes_bar(expected_len);
    let mut reader = response.into_reader();
    let mut file = File::create(dest).map_err(|e| DownloadError::Io { path: dest.to_path_buf(), err: e })?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| fetch_err(format!("connection failed after {total} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| DownloadError::Io { path: dest.to_path_buf(), err: e })?;
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_and_clear();
    file.sync_all().map_err(|e| DownloadError::Io { path: dest.to_path_buf(), err: e })?;
    if let Some(expected) = expected_len {
        if total != expected {
            return Err(DownloadError::Truncated { url: url.to_string(), found: total, expected });
        }
    }
    let found = format!("{:x}", hasher.finalize());
    if !found.eq_ignore_ascii_case(expected_md5) {
        return Err(DownloadError::Md5 { url: url.to_string(), found, expected: expected_md5.to_string() });
    }
    Ok(())
}

fn extract(archive: &Path, into: &Path) -> Result<(), DownloadError> {
    let file = File::open(archive).map_err(|e| DownloadError::Io { path: archive.to_path_buf(), err: e })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    tar.unpack(into).map_err(|e| DownloadError::Extract(e.to_string()))
}

fn human_bytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

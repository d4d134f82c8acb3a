//! Finding CIFAR-10 or CIFAR-100 under `--data-dir`, downloading it when missing, as
//! torchvision's `download=True` does.
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

use crate::data::{cifar, cifar100};

/// The official binary archives and their MD5s, as published on the CIFAR page.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
pub const CIFAR100_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
pub const CIFAR100_MD5: &str = "03b5dce01913d631647c71ecec9e9cb8";

/// A data set's archive: what its folder is called and holds, and how that folder is checked.
#[derive(Debug, Clone, Copy)]
pub struct Archive {
    /// The data set's name in messages (`CIFAR-10`).
    pub dataset: &'static str,
    /// The folder the archive extracts to, and its place under `--data-dir`.
    pub folder: &'static str,
    /// A file that marks `--data-dir` itself as the folder.
    pub first_file: &'static str,
    /// The folder's files, as messages list them.
    pub files: &'static str,
    pub url: &'static str,
    pub md5: &'static str,
    check: fn(&Path) -> Result<(), DownloadError>,
}

pub const CIFAR10: Archive = Archive {
    dataset: "CIFAR-10",
    folder: cifar::FOLDER_NAME,
    first_file: cifar::TRAIN_FILES[0],
    files: "data_batch_1.bin … test_batch.bin",
    url: CIFAR10_URL,
    md5: CIFAR10_MD5,
    check: |dir| Ok(cifar::check_dir(dir)?),
};

pub const CIFAR100: Archive = Archive {
    dataset: "CIFAR-100",
    folder: cifar100::FOLDER_NAME,
    first_file: cifar100::TRAIN_FILE,
    files: "train.bin and test.bin",
    url: CIFAR100_URL,
    md5: CIFAR100_MD5,
    check: |dir| Ok(cifar100::check_dir(dir)?),
};

impl Archive {
    /// Its official URL and MD5.
    pub fn source(&self) -> Source {
        Source { url: self.url.to_string(), md5: self.md5.to_string() }
    }
}

/// Where the data set lies; errors say what failed and how to place the files by hand.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "{dataset} not found in {dir} and downloading is off; download {url} yourself and extract it \
         there (it makes {dir}/{folder}/), or run without --no-download"
    )]
    NotFound { dataset: &'static str, folder: &'static str, dir: PathBuf, url: String },
    #[error(
        "cannot download {url}: {reason}. Without network access, download the archive elsewhere and \
         extract it into {dir} (it makes {dir}/{folder}/ with {files})"
    )]
    Fetch { url: String, dir: PathBuf, reason: String, folder: &'static str, files: &'static str },
    #[error("downloaded archive from {url} has MD5 {found}, expected {expected}: corrupt or not the {dataset} binary archive; nothing was kept")]
    Md5 { dataset: &'static str, url: String, found: String, expected: String },
    #[error("downloaded archive from {url} is incomplete: {found} of {expected} bytes; nothing was kept")]
    Truncated { url: String, found: u64, expected: u64 },
    #[error("cannot extract the {dataset} archive: {message}")]
    Extract { dataset: &'static str, message: String },
    #[error("cannot write in {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Data(#[from] cifar::DataError),
    #[error(transparent)]
    Cifar100(#[from] cifar100::Cifar100Error),
}

/// Where to get the archive from, and what it must hash to.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub md5: String,
}

impl Default for Source {
    /// CIFAR-10's official archive.
    fn default() -> Self {
        CIFAR10.source()
    }
}

/// [`ensure`] for CIFAR-10: the folder holding `data_batch_1.bin` ….
pub fn ensure_cifar10(data_dir: &Path, download: bool, source: &Source) -> Result<PathBuf, DownloadError> {
    ensure(&CIFAR10, data_dir, download, source)
}

/// Returns the folder holding `archive`'s files: `data_dir` itself when it holds them, else
/// `data_dir/<archive.folder>`, downloading it from `source` first when it is missing and
/// `download` is on. The folder's files are checked (presence and sizes) before it is returned.
pub fn ensure(archive: &Archive, data_dir: &Path, download: bool, source: &Source) -> Result<PathBuf, DownloadError> {
    if data_dir.join(archive.first_file).exists() {
        (archive.check)(data_dir)?;
        return Ok(data_dir.to_path_buf());
    }
    let target = data_dir.join(archive.folder);
    if target.exists() {
        (archive.check)(&target)?;
        return Ok(target);
    }
    if !download {
        let (dataset, folder) = (archive.dataset, archive.folder);
        return Err(DownloadError::NotFound { dataset, folder, dir: data_dir.to_path_buf(), url: source.url.clone() });
    }
    std::fs::create_dir_all(data_dir).map_err(|e| DownloadError::Io { path: data_dir.to_path_buf(), err: e })?;
    let work = TempPath(data_dir.join(format!(".{}-download-{}", archive.folder, std::process::id())));
    std::fs::create_dir_all(&work.0).map_err(|e| DownloadError::Io { path: work.0.clone(), err: e })?;
    let tarball = work.0.join("archive.tar.gz");
    fetch(archive, source, &tarball, data_dir)?;
    let extracted = work.0.join("extracted");
    extract(archive, &tarball, &extracted)?;
    let folder = extracted.join(archive.folder);
    (archive.check)(&folder)?;
    std::fs::rename(&folder, &target).map_err(|e| DownloadError::Io { path: target.clone(), err: e })?;
    eprintln!("{} is ready in {}", archive.dataset, target.display());
    Ok(target)
}

/// A temporary file or folder, removed when dropped (success or failure alike).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fetch(archive: &Archive, source: &Source, dest: &Path, data_dir: &Path) -> Result<(), DownloadError> {
    let (url, expected_md5) = (source.url.as_str(), source.md5.as_str());
    let fetch_err = |reason: String| DownloadError::Fetch {
        url: url.to_string(),
        dir: data_dir.to_path_buf(),
        reason,
        folder: archive.folder,
        files: archive.files,
    };
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
        let (dataset, url, expected) = (archive.dataset, url.to_string(), expected_md5.to_string());
        return Err(DownloadError::Md5 { dataset, url, found, expected });
    }
    Ok(())
}

fn extract(archive: &Archive, tarball: &Path, into: &Path) -> Result<(), DownloadError> {
    let file = File::open(tarball).map_err(|e| DownloadError::Io { path: tarball.to_path_buf(), err: e })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    tar.unpack(into).map_err(|e| DownloadError::Extract { dataset: archive.dataset, message: e.to_string() })
}

fn human_bytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

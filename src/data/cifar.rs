//! CIFAR-10 in its official binary layout: checks of the folder, then a bulk load.
//!
//! Each file holds 10,000 records of 1 label byte and 3,072 pixel bytes (the red plane, then
//! green, then blue, 32×32 each, row-major). Every file's presence and size is checked before
//! anything is read, and every label is checked to be below 10, so that a missing, truncated or
//! corrupt file is an error naming the file, not a panic.
//!
//! tch's `vision::cifar::load_dir` reads the same files, but copies image by image into a float
//! tensor (4 bytes a pixel, 60,000 small copies); here each file becomes one `uint8` tensor
//! with a single copy, 4× smaller, and the conversion to float happens per batch on the
//! training device. `cargo run --release --example bench` measures both (`load_seconds`,
//! `load_seconds_tch_load_dir`).

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::data::dataset::{FileFingerprint, ImageDataset};

pub const IMAGE_SIZE: i64 = 32;
pub const CHANNELS: i64 = 3;
pub const NUM_CLASSES: i64 = 10;
pub const IMAGE_BYTES: usize = 3072;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
pub const RECORDS_PER_FILE: usize = 10_000;
/// Size of every batch file: 10,000 records of 3,073 bytes.
pub const FILE_BYTES: u64 = (RECORD_BYTES * RECORDS_PER_FILE) as u64;
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";
/// Name of the folder inside the official archive, and under `--data-dir`.
pub const FOLDER_NAME: &str = "cifar-10-batches-bin";
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Errors of the data set: each names the file or folder and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("CIFAR-10 folder {0} does not exist")]
    MissingDir(PathBuf),
    #[error("{0} is not a folder")]
    NotADir(PathBuf),
    #[error("CIFAR-10 file {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("CIFAR-10 file {0} is missing")]
    MissingFile(PathBuf),
    #[error("CIFAR-10 file {path} has {found} bytes, expected {expected} (10,000 records of 3,073 bytes): truncated or not a CIFAR-10 binary file")]
    WrongSize { path: PathBuf, found: u64, expected: u64 },
    #[error("CIFAR-10 file {path}: record {record} has label {label}, but labels must be 0..=9")]
    BadLabel { path: PathBuf, record: usize, label: u8 },
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// Checks that `dir` holds the six batch files with their exact sizes.
pub fn check_dir(dir: &Path) -> Result<(), DataError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DataError::MissingDir(dir.to_path_buf())),
        Err(err) => return Err(DataError::Io { path: dir.to_path_buf(), err }),
        Ok(m) if !m.is_dir() => return Err(DataError::NotADir(dir.to_path_buf())),
        Ok(_) => {}
    }
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        let path = dir.join(name);
        let len = match std::fs::metadata(&path) {
            Ok(m) if !m.is_file() => return Err(DataError::NotAFile(path)),
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DataError::MissingFile(path)),
            Err(err) => return Err(DataError::Io { path, err }),
        };
        if len != FILE_BYTES {
            return Err(DataError::WrongSize { path, found: len, expected: FILE_BYTES });
        }
    }
    Ok(())
}

/// Parses the bytes of one batch file into `(uint8 [n, 3, 32, 32], int64 [n])`.
pub fn parse_records(path: &Path, bytes: &[u8]) -> Result<(Tensor, Tensor), DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(DataError::WrongSize { path: path.to_path_buf(), found: bytes.len() as u64, expected: FILE_BYTES });
    }
    let n = bytes.len() / RECORD_BYTES;
    if let Some((record, label)) =
        bytes.chunks_exact(RECORD_BYTES).map(|r| r[0]).enumerate().find(|&(_, l)| l as i64 >= NUM_CLASSES)
    {
        return Err(DataError::BadLabel { path: path.to_path_buf(), record, label });
    }
    let records = Tensor::from_slice(bytes).view([n as i64, RECORD_BYTES as i64]);
    let labels = records.select(1, 0).to_kind(Kind::Int64);
    let images =
        records.narrow(1, 1, IMAGE_BYTES as i64).contiguous().view([n as i64, CHANNELS, IMAGE_SIZE, IMAGE_SIZE]);
    Ok((images, labels))
}

fn read_file(dir: &Path, name: &str) -> Result<(Tensor, Tensor, FileFingerprint), DataError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|err| DataError::Io { path: path.clone(), err })?;
    if bytes.len() as u64 != FILE_BYTES {
        // The file changed since check_dir.
        return Err(DataError::WrongSize { path, found: bytes.len() as u64, expected: FILE_BYTES });
    }
    let (images, labels) = parse_records(&path, &bytes)?;
    Ok((images, labels, FileFingerprint::of(name, &bytes)))
}

/// Loads the folder `dir` (the one holding `data_batch_1.bin` …) on the CPU.
pub fn load_dir(dir: &Path) -> Result<ImageDataset, DataError> {
    check_dir(dir)?;
    let mut train_images = Vec::with_capacity(TRAIN_FILES.len());
    let mut train_labels = Vec::with_capacity(TRAIN_FILES.len());
    let mut fingerprint = Vec::with_capacity(TRAIN_FILES.len() + 1);
    for name in TRAIN_FILES {
        let (images, labels, file) = read_file(dir, name)?;
        train_images.push(images);
        train_labels.push(labels);
        fingerprint.push(file);
    }
    let (test_images, test_labels, file) = read_file(dir, TEST_FILE)?;
    fingerprint.push(file);
    Ok(ImageDataset {
        name: "CIFAR-10".into(),
        num_classes: NUM_CLASSES,
        class_names: CLASS_NAMES.map(String::from).to_vec(),
        train_images: Tensor::cat(&train_images, 0),
        train_labels: Tensor::cat(&train_labels, 0),
        test_images,
        test_labels,
        fingerprint,
    })
}

/// Writes a CIFAR-format file of `records` (label, 3,072 pixel bytes R, G, B planes).
/// Used by the tests and benchmarks to make synthetic data sets.
pub fn write_records(path: &Path, records: impl IntoIterator<Item = (u8, Vec<u8>)>) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(FILE_BYTES as usize);
    for (label, pixels) in records {
        assert_eq!(pixels.len(), IMAGE_BYTES, "a CIFAR image has 3,072 bytes");
        bytes.push(label);
        bytes.extend_from_slice(&pixels);
    }
    std::fs::write(path, bytes)
}

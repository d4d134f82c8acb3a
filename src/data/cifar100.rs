//! CIFAR-100 in its official binary layout (`cifar-100-binary/`): checks of the folder, then a
//! bulk load into an [`ImageDataset`].
//!
//! `train.bin` holds 50,000 records and `test.bin` 10,000, each of 3,074 bytes: the coarse
//! label (0..20, the superclass), the fine label (0..100) and 3,072 pixel bytes (the red plane,
//! then green, then blue, 32×32 each, row-major), the layout of CIFAR-10's records after its
//! one label byte. As for CIFAR-10 ([`crate::data::cifar`]), both files' presence and sizes are
//! checked before anything is read, and every label, fine and coarse whichever is used, is
//! checked against its range, so that a missing, truncated or corrupt file is an error naming
//! the file. `fine_label_names.txt` and `coarse_label_names.txt` (one name a line, in the
//! release) give the class names when present; without them the classes are `class 0` ….

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::data::cifar::{CHANNELS, IMAGE_BYTES, IMAGE_SIZE};
use crate::data::dataset::{FileFingerprint, ImageDataset};

/// Coarse label, fine label, 3,072 pixel bytes.
pub const RECORD_BYTES: usize = 2 + IMAGE_BYTES;
pub const FINE_CLASSES: i64 = 100;
pub const COARSE_CLASSES: i64 = 20;
pub const TRAIN_FILE: &str = "train.bin";
pub const TEST_FILE: &str = "test.bin";
pub const TRAIN_RECORDS: usize = 50_000;
pub const TEST_RECORDS: usize = 10_000;
pub const FINE_NAMES_FILE: &str = "fine_label_names.txt";
pub const COARSE_NAMES_FILE: &str = "coarse_label_names.txt";
/// Name of the folder inside the official archive, and under `--data-dir`.
pub const FOLDER_NAME: &str = "cifar-100-binary";

/// Which of a record's two labels a data set uses (chosen by name with
/// [`crate::data::DatasetKind`]: `cifar100` or `cifar100-coarse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelKind {
    /// The 100 classes (the second byte of a record): what CIFAR-100 results usually mean.
    #[default]
    Fine,
    /// The 20 superclasses (the first byte).
    Coarse,
}

impl LabelKind {
    pub fn name(self) -> &'static str {
        match self {
            LabelKind::Fine => "fine",
            LabelKind::Coarse => "coarse",
        }
    }

    pub fn num_classes(self) -> i64 {
        match self {
            LabelKind::Fine => FINE_CLASSES,
            LabelKind::Coarse => COARSE_CLASSES,
        }
    }

    /// The label's byte within a record.
    fn offset(self) -> usize {
        match self {
            LabelKind::Coarse => 0,
            LabelKind::Fine => 1,
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            LabelKind::Fine => FINE_NAMES_FILE,
            LabelKind::Coarse => COARSE_NAMES_FILE,
        }
    }
}

/// Errors of the CIFAR-100 files: each names the file or folder and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Cifar100Error {
    #[error("CIFAR-100 folder {0} does not exist")]
    MissingDir(PathBuf),
    #[error("{0} is not a folder")]
    NotADir(PathBuf),
    #[error("CIFAR-100 file {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("CIFAR-100 file {0} is missing")]
    MissingFile(PathBuf),
    #[error("CIFAR-100 file {path} has {found} bytes, expected {expected} ({records} records of 3,074 bytes): truncated or not a CIFAR-100 binary file")]
    WrongSize { path: PathBuf, found: u64, expected: u64, records: usize },
    #[error("CIFAR-100 file {path}: record {record} has {} label {label}, but {} labels must be below {classes}", .kind.name(), .kind.name())]
    BadLabel { path: PathBuf, record: usize, kind: LabelKind, label: u8, classes: i64 },
    #[error("CIFAR-100 class names {path} list {found} names, expected {expected} (one a line)")]
    BadNames { path: PathBuf, found: usize, expected: usize },
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// The records a file must hold and its size in bytes.
fn expected(name: &str) -> (usize, u64) {
    let records = if name == TRAIN_FILE { TRAIN_RECORDS } else { TEST_RECORDS };
    (records, (records * RECORD_BYTES) as u64)
}

/// Checks that `dir` holds `train.bin` and `test.bin` with their exact sizes.
pub fn check_dir(dir: &Path) -> Result<(), Cifar100Error> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Cifar100Error::MissingDir(dir.to_path_buf())),
        Err(err) => return Err(Cifar100Error::Io { path: dir.to_path_buf(), err }),
        Ok(m) if !m.is_dir() => return Err(Cifar100Error::NotADir(dir.to_path_buf())),
        Ok(_) => {}
    }
    for name in [TRAIN_FILE, TEST_FILE] {
        let path = dir.join(name);
        let len = match std::fs::metadata(&path) {
            Ok(m) if !m.is_file() => return Err(Cifar100Error::NotAFile(path)),
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Cifar100Error::MissingFile(path)),
            Err(err) => return Err(Cifar100Error::Io { path, err }),
        };
        let (records, bytes) = expected(name);
        if len != bytes {
            return Err(Cifar100Error::WrongSize { path, found: len, expected: bytes, records });
        }
    }
    Ok(())
}

/// Parses records (any whole number of them) into `(uint8 [n, 3, 32, 32], int64 [n])`, the
/// labels of `kind`. Both labels of every record are checked; `path` names the file in errors.
pub fn parse_records(path: &Path, bytes: &[u8], kind: LabelKind) -> Result<(Tensor, Tensor), Cifar100Error> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        let (records, expected) = expected(&path.file_name().unwrap_or_default().to_string_lossy());
        return Err(Cifar100Error::WrongSize {
            path: path.to_path_buf(),
            found: bytes.len() as u64,
            expected,
            records,
        });
    }
    for (record, r) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        for check in [LabelKind::Coarse, LabelKind::Fine] {
            let label = r[check.offset()];
            if label as i64 >= check.num_classes() {
                let classes = check.num_classes();
                return Err(Cifar100Error::BadLabel { path: path.to_path_buf(), record, kind: check, label, classes });
            }
        }
    }
    let n = (bytes.len() / RECORD_BYTES) as i64;
    let records = Tensor::from_slice(bytes).view([n, RECORD_BYTES as i64]);
    let labels = records.select(1, kind.offset() as i64).to_kind(Kind::Int64);
    let images = records.narrow(1, 2, IMAGE_BYTES as i64).contiguous().view([n, CHANNELS, IMAGE_SIZE, IMAGE_SIZE]);
    Ok((images, labels))
}

fn read_file(dir: &Path, name: &str, kind: LabelKind) -> Result<(Tensor, Tensor, FileFingerprint), Cifar100Error> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|err| Cifar100Error::Io { path: path.clone(), err })?;
    let (records, expected) = expected(name);
    if bytes.len() as u64 != expected {
        // The file changed since check_dir.
        return Err(Cifar100Error::WrongSize { path, found: bytes.len() as u64, expected, records });
    }
    let (images, labels) = parse_records(&path, &bytes, kind)?;
    Ok((images, labels, FileFingerprint::of(name, &bytes)))
}

/// The class names of `kind` from the release's names file, or `class 0` … when it is absent.
pub fn class_names(dir: &Path, kind: LabelKind) -> Result<Vec<String>, Cifar100Error> {
    let path = dir.join(kind.names_file());
    let expected = kind.num_classes() as usize;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((0..expected).map(|c| format!("class {c}")).collect())
        }
        Err(err) => return Err(Cifar100Error::Io { path, err }),
    };
    // The release's files end with blank lines; names never contain spaces.
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != expected {
        return Err(Cifar100Error::BadNames { path, found: names.len(), expected });
    }
    Ok(names)
}

/// Loads the folder `dir` (the one holding `train.bin`) on the CPU, with the labels of `kind`.
pub fn load_dir(dir: &Path, kind: LabelKind) -> Result<ImageDataset, Cifar100Error> {
    check_dir(dir)?;
    let class_names = class_names(dir, kind)?;
    let (train_images, train_labels, train_file) = read_file(dir, TRAIN_FILE, kind)?;
    let (test_images, test_labels, test_file) = read_file(dir, TEST_FILE, kind)?;
    let name = match kind {
        LabelKind::Fine => "CIFAR-100",
        LabelKind::Coarse => "CIFAR-100 (coarse labels)",
    };
    Ok(ImageDataset {
        name: name.into(),
        num_classes: kind.num_classes(),
        class_names,
        train_images,
        train_labels,
        test_images,
        test_labels,
        fingerprint: vec![train_file, test_file],
    })
}

/// One record: coarse label, fine label, 3,072 pixel bytes (R, G, B planes).
pub struct Record {
    pub coarse: u8,
    pub fine: u8,
    pub pixels: Vec<u8>,
}

/// Writes a CIFAR-100-format file of `records`, for tests and synthetic data sets.
pub fn write_records(path: &Path, records: impl IntoIterator<Item = Record>) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    for r in records {
        if r.pixels.len() != IMAGE_BYTES {
            let message = format!("a CIFAR-100 image has 3,072 bytes, not {}", r.pixels.len());
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, message));
        }
        bytes.extend_from_slice(&[r.coarse, r.fine]);
        bytes.extend_from_slice(&r.pixels);
    }
    std::fs::write(path, bytes)
}

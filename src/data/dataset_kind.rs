//! The data sets a run can name (`--dataset`, `config.json`'s `dataset`), and the one entry
//! point that finds (or downloads), checks and loads any of them into an [`ImageDataset`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::cifar100::LabelKind;
use crate::data::download::{self, Archive, DownloadError, Source};
use crate::data::{cifar, cifar100, ImageDataset};

/// A data set known by name. Serialised as `"cifar10"`, `"cifar100"`, `"cifar100-coarse"`,
/// the names `--dataset` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// CIFAR-10, `<data-dir>/cifar-10-batches-bin/`.
    #[default]
    Cifar10,
    /// CIFAR-100 with its 100 fine labels, `<data-dir>/cifar-100-binary/`.
    Cifar100,
    /// CIFAR-100 with its 20 coarse labels (superclasses), from the same files.
    Cifar100Coarse,
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        f.write_str(self.to_possible_value().expect("every data set has a name").get_name())
    }
}

impl DatasetKind {
    /// Its archive: URL, MD5, folder name and the check of that folder.
    pub fn archive(self) -> &'static Archive {
        match self {
            DatasetKind::Cifar10 => &download::CIFAR10,
            DatasetKind::Cifar100 | DatasetKind::Cifar100Coarse => &download::CIFAR100,
        }
    }

    /// Classes of its labels.
    pub fn num_classes(self) -> i64 {
        match self {
            DatasetKind::Cifar10 => cifar::NUM_CLASSES,
            DatasetKind::Cifar100 => LabelKind::Fine.num_classes(),
            DatasetKind::Cifar100Coarse => LabelKind::Coarse.num_classes(),
        }
    }

    /// The folder holding its files (see [`download::ensure`]): found under `data_dir` (or
    /// `data_dir` itself), else downloaded there from `source` when `download` is on.
    pub fn ensure(self, data_dir: &Path, download: bool, source: &Source) -> Result<PathBuf, DownloadError> {
        download::ensure(self.archive(), data_dir, download, source)
    }

    /// Loads its (already checked) folder on the CPU.
    pub fn load_dir(self, folder: &Path) -> Result<ImageDataset, DownloadError> {
        Ok(match self {
            DatasetKind::Cifar10 => cifar::load_dir(folder)?,
            DatasetKind::Cifar100 => cifar100::load_dir(folder, LabelKind::Fine)?,
            DatasetKind::Cifar100Coarse => cifar100::load_dir(folder, LabelKind::Coarse)?,
        })
    }
}

/// The data set `kind` on the CPU, from `data_dir` (downloaded from its official archive when
/// missing and `download` is on, as `--no-download` turns off); says where it loaded from,
/// and how long that took, through `log`.
pub fn load(
    kind: DatasetKind,
    data_dir: &Path,
    download: bool,
    log: &mut dyn FnMut(&str),
) -> Result<ImageDataset, DownloadError> {
    load_from(kind, data_dir, download, &kind.archive().source(), log)
}

/// [`load`] with the archive fetched from `source` (a mirror, or a test's local server).
pub fn load_from(
    kind: DatasetKind,
    data_dir: &Path,
    download: bool,
    source: &Source,
    log: &mut dyn FnMut(&str),
) -> Result<ImageDataset, DownloadError> {
    let folder = kind.ensure(data_dir, download, source)?;
    let started = Instant::now();
    let data = kind.load_dir(&folder)?;
    log(&format!("Loaded {} from {} in {:.2} s", data.name, folder.display(), started.elapsed().as_secs_f64()));
    Ok(data)
}

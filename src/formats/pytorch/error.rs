//! What can go wrong with a PyTorch file: [`PytorchError`], which names the file, and `Fault`,
//! the same found deep in the reader before the file's name is at hand.

use std::path::{Path, PathBuf};

/// What can go wrong with a PyTorch file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PytorchError {
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot write {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a PyTorch checkpoint (torch.save): {reason}")]
    NotPytorch { path: PathBuf, reason: String },
    #[error(
        "{path} is in PyTorch's legacy format (written before PyTorch 1.6, or with \
         _use_new_zipfile_serialization=False), which is not supported; re-save it with \
         PyTorch >= 1.6: `torch.save(torch.load(path), new_path)`"
    )]
    LegacyFormat { path: PathBuf },
    #[error(
        "{path} is a TorchScript module (torch.jit.save), not a checkpoint; in Python, load it \
         with `torch.jit.load(path)` and save its weights with `torch.save(model.state_dict(), new_path)`"
    )]
    TorchScript { path: PathBuf },
    #[error("{path}: damaged or unsupported zip archive: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error(
        "{path}: refused to load: the pickle names `{module}.{name}`, which is not allowed \
         (only tensors, storages, OrderedDict and Counter are; nothing from the file was executed){hint}"
    )]
    ForbiddenGlobal { path: PathBuf, module: String, name: String, hint: &'static str },
    #[error("{path}: invalid pickle (data.pkl) at byte {offset}: {reason}")]
    Pickle { path: PathBuf, offset: usize, reason: String },
    #[error("{path}: {reason}")]
    Tensor { path: PathBuf, reason: String },
}

/// An error found without knowing the file's name; [`Fault::at`] names it.
#[derive(Debug)]
pub(super) enum Fault {
    Io(std::io::Error),
    Archive(String),
    Forbidden { module: String, name: String },
    Pickle { offset: usize, reason: String },
    Tensor(String),
}

impl From<std::io::Error> for Fault {
    fn from(err: std::io::Error) -> Self {
        Fault::Io(err)
    }
}

impl Fault {
    pub(super) fn at(self, path: &Path) -> PytorchError {
        let path = path.to_path_buf();
        match self {
            Fault::Io(err) => PytorchError::Read { path, err },
            Fault::Archive(reason) => PytorchError::Archive { path, reason },
            Fault::Forbidden { module, name } => {
                let hint = if module == "__main__" || module.starts_with("torch.") {
                    "; if the file holds a whole model (torch.save(model)), re-save its weights in Python \
                     with `torch.save(model.state_dict(), new_path)`"
                } else {
                    ""
                };
                PytorchError::ForbiddenGlobal { path, module, name, hint }
            }
            Fault::Pickle { offset, reason } => PytorchError::Pickle { path, offset, reason },
            Fault::Tensor(reason) => PytorchError::Tensor { path, reason },
        }
    }
}

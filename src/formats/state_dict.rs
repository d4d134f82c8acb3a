//! Model weights from either format, chosen by the file's content: safetensors, or PyTorch's
//! `torch.save` (`.pt`, `.pth`, `.bin`). This is what `evaluate --checkpoint`,
//! `predict --checkpoint`, `train --init-from` and the library's loading functions read.
//!
//! A PyTorch file may hold the state dict itself, or a dict with it inside (`{'model': sd,
//! 'optimizer': ..., 'epoch': ...}`): `key` picks the entry, and without it the one entry that
//! is a state dict is used. The `module.` prefix that `DataParallel` and
//! `DistributedDataParallel` add is removed. Loading into a model checks the whole file first
//! (every key, no extra key, shapes, dtypes), so a bad file leaves the model untouched.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{nn, Tensor};

use crate::formats::pytorch::{self, PtValue, PytorchError};
use crate::formats::safetensors::{self, CheckpointError};

/// The two formats weights come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Safetensors,
    /// `torch.save`: a zip archive (PyTorch >= 1.6) or the legacy raw pickle.
    Pytorch,
}

/// What can go wrong reading weights; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Safetensors(#[from] CheckpointError),
    #[error(transparent)]
    Pytorch(#[from] PytorchError),
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path} has no entry `{key}` (its entries: {entries})")]
    MissingEntry { path: PathBuf, key: String, entries: String },
    #[error("{path}: entry `{key}` is a {found}, not a state dict (a dict of tensors)")]
    NotAStateDict { path: PathBuf, key: String, found: &'static str },
    #[error("{path} holds several state dicts ({candidates}); choose one with --key NAME")]
    Ambiguous { path: PathBuf, candidates: String },
    #[error("{path} holds no state dict: it is a {found}{entries}; save `model.state_dict()` with torch.save")]
    NoStateDict { path: PathBuf, found: &'static str, entries: String },
    #[error("{path}: --key {key} only applies to PyTorch files (a safetensors file is one state dict)")]
    KeyOnSafetensors { path: PathBuf, key: String },
    #[error("cannot tell the format of {path} from its name: use .safetensors, .pt, .pth or .bin")]
    UnknownExtension { path: PathBuf },
}

/// The format of `path`, from its first bytes: a zip archive or a pickle is PyTorch's,
/// anything else is read as safetensors (whose reader then says what is wrong).
pub fn detect_format(path: &Path) -> Result<WeightsFormat, WeightsError> {
    let read_err = |err| WeightsError::Read { path: path.to_path_buf(), err };
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let n = file.read(&mut head).map_err(read_err)?;
    let zip = n == 4 && head == *b"PK\x03\x04";
    // Pickle protocol 2 starts with PROTO 2: the legacy format's first record.
    let legacy_pickle = n >= 2 && head[0] == 0x80 && head[1] == 0x02;
    Ok(if zip || legacy_pickle { WeightsFormat::Pytorch } else { WeightsFormat::Safetensors })
}

/// The format a file named `path` should be written in, from its extension.
pub fn format_for_extension(path: &Path) -> Result<WeightsFormat, WeightsError> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("safetensors") => Ok(WeightsFormat::Safetensors),
        Some("pt" | "pth" | "bin") => Ok(WeightsFormat::Pytorch),
        _ => Err(WeightsError::UnknownExtension { path: path.to_path_buf() }),
    }
}

/// Reads the state dict in `path` (either format), with `key` choosing the entry of a nested
/// PyTorch file, and the `module.` prefix removed.
pub fn load_state_dict(path: &Path, key: Option<&str>) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let tensors = match detect_format(path)? {
        WeightsFormat::Safetensors => {
            if let Some(key) = key {
                return Err(WeightsError::KeyOnSafetensors { path: path.to_path_buf(), key: key.to_string() });
            }
            safetensors::load_tensors(path)?.tensors
        }
        WeightsFormat::Pytorch => select_state_dict(path, &pytorch::load(path)?, key)?,
    };
    Ok(strip_module_prefix(tensors))
}

/// The state dict inside a PyTorch value: the value itself, the entry `key`, or the one entry
/// that is a state dict.
pub fn select_state_dict(
    path: &Path,
    value: &PtValue,
    key: Option<&str>,
) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let entries = || -> String {
        value
            .as_dict()
            .map_or_else(String::new, |d| d.iter().filter_map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "))
    };
    if let Some(key) = key {
        let entry = value.get(key).ok_or_else(|| WeightsError::MissingEntry {
            path: path.to_path_buf(),
            key: key.to_string(),
            entries: entries(),
        })?;
        return entry.as_state_dict().ok_or_else(|| WeightsError::NotAStateDict {
            path: path.to_path_buf(),
            key: key.to_string(),
            found: entry.type_name(),
        });
    }
    if let Some(state_dict) = value.as_state_dict().filter(|sd| !sd.is_empty()) {
        return Ok(state_dict);
    }
    let candidates: Vec<(&str, BTreeMap<String, Tensor>)> = value
        .as_dict()
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?, v.as_state_dict().filter(|sd| !sd.is_empty())?)))
        .collect();
    match candidates.len() {
        1 => Ok(candidates.into_iter().next().map(|(_, sd)| sd).unwrap_or_default()),
        0 => Err(WeightsError::NoStateDict {
            path: path.to_path_buf(),
            found: value.type_name(),
            entries: value.as_dict().map_or_else(String::new, |_| format!(" with entries {}", entries())),
        }),
        _ => Err(WeightsError::Ambiguous {
            path: path.to_path_buf(),
            candidates: candidates.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Removes the `module.` that `DataParallel`/`DistributedDataParallel` put before every key.
pub fn strip_module_prefix(tensors: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with("module.")) {
        pytorch::strip_prefix(tensors, "module.")
    } else {
        tensors
    }
}

/// Loads the state dict in `path` (either format) into `vs`, after checking every key, shape
/// and dtype; nothing is copied unless the whole file matches.
pub fn load_into_var_store(vs: &nn::VarStore, path: &Path, key: Option<&str>) -> Result<(), WeightsError> {
    let tensors = load_state_dict(path, key)?;
    safetensors::copy_into_var_store(vs, path, &tensors)?;
    Ok(())
}

/// Writes `tensors` to `path` in the format its extension names (`.safetensors`, or `.pt`,
/// `.pth`, `.bin` for `torch.save`'s), atomically.
pub fn save_state_dict(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<(), WeightsError> {
    let items = tensors.iter().map(|(k, v)| (k.as_str(), v));
    match format_for_extension(path)? {
        WeightsFormat::Safetensors => safetensors::save_tensors(path, items, &Default::default())?,
        WeightsFormat::Pytorch => pytorch::save_state_dict(path, items)?,
    }
    Ok(())
}

//! Model weights from either format, chosen by the file's content: safetensors, or PyTorch's
//! `torch.save` (`.pt`, `.pth`, `.bin`). This is what `evaluate --checkpoint`,
//! `predict --checkpoint`, `train --init-from` and the library's loading functions read.
//!
//! A PyTorch file may hold the state dict itself, or a dict with it inside (`{'model': sd,
//! 'optimizer': ..., 'epoch': ...}`): `key` picks the entry, and without it the one entry that
//! is a state dict is used. The `module.` prefix that `DataParallel` and
//! `DistributedDataParallel` add is removed (kuangliu/pytorch-cifar's `{'net': ..., 'acc': ...,
//! 'epoch': ...}` checkpoints are both). [`read_state_dict`] and [`load_into_var_store`] say
//! which entry they took and whether they removed the prefix ([`StateDictSource`]), for a log
//! line. Loading into a model checks the whole file first (every key, no extra key, shapes,
//! dtypes), so a bad file leaves the model untouched.

use std::collections::BTreeMap;
use std::fmt;
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

/// The prefix that `DataParallel` and `DistributedDataParallel` put before every key.
pub const MODULE_PREFIX: &str = "module.";

/// Where in its file a state dict was found and what reading it changed in the keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDictSource {
    /// The entry of a nested PyTorch file (`model`, kuangliu's `net`), given or found; `None`
    /// when the file is the state dict itself.
    pub entry: Option<String>,
    /// The prefix removed from every key ([`MODULE_PREFIX`]), if it was there.
    pub stripped_prefix: Option<&'static str>,
}

impl fmt::Display for StateDictSource {
    /// "entry `net`; the `module.` prefix of every key removed (saved from DataParallel or
    /// DistributedDataParallel)", or "the whole file" when nothing of the kind happened.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some(entry) => write!(f, "entry `{entry}`")?,
            None => f.write_str("the whole file")?,
        }
        if let Some(prefix) = self.stripped_prefix {
            write!(
                f,
                "; the `{prefix}` prefix of every key removed (saved from DataParallel or DistributedDataParallel)"
            )?;
        }
        Ok(())
    }
}

/// Reads the state dict in `path` (either format), with `key` choosing the entry of a nested
/// PyTorch file, and the `module.` prefix removed.
pub fn load_state_dict(path: &Path, key: Option<&str>) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    Ok(read_state_dict(path, key)?.0)
}

/// [`load_state_dict`], also saying which entry it took and whether it removed the prefix.
pub fn read_state_dict(
    path: &Path,
    key: Option<&str>,
) -> Result<(BTreeMap<String, Tensor>, StateDictSource), WeightsError> {
    let (entry, tensors) = match detect_format(path)? {
        WeightsFormat::Safetensors => {
            if let Some(key) = key {
                return Err(WeightsError::KeyOnSafetensors { path: path.to_path_buf(), key: key.to_string() });
            }
            (None, safetensors::load_tensors(path)?.tensors)
        }
        WeightsFormat::Pytorch => select_state_dict_entry(path, &pytorch::load(path)?, key)?,
    };
    let (tensors, stripped_prefix) = take_module_prefix(tensors);
    Ok((tensors, StateDictSource { entry, stripped_prefix }))
}

/// The state dict inside a PyTorch value: the value itself, the entry `key`, or the one entry
/// that is a state dict.
pub fn select_state_dict(
    path: &Path,
    value: &PtValue,
    key: Option<&str>,
) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    Ok(select_state_dict_entry(path, value, key)?.1)
}

/// [`select_state_dict`], with the name of the entry it took (`None` for the value itself).
fn select_state_dict_entry(
    path: &Path,
    value: &PtValue,
    key: Option<&str>,
) -> Result<(Option<String>, BTreeMap<String, Tensor>), WeightsError> {
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
        let state_dict = entry.as_state_dict().ok_or_else(|| WeightsError::NotAStateDict {
            path: path.to_path_buf(),
            key: key.to_string(),
            found: entry.type_name(),
        })?;
        return Ok((Some(key.to_string()), state_dict));
    }
    if let Some(state_dict) = value.as_state_dict().filter(|sd| !sd.is_empty()) {
        return Ok((None, state_dict));
    }
    let candidates: Vec<(&str, BTreeMap<String, Tensor>)> = value
        .as_dict()
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?, v.as_state_dict().filter(|sd| !sd.is_empty())?)))
        .collect();
    match candidates.len() {
        1 => Ok(candidates.into_iter().next().map(|(k, sd)| (Some(k.to_string()), sd)).unwrap_or_default()),
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
    take_module_prefix(tensors).0
}

/// [`strip_module_prefix`], also saying whether it removed the prefix: only when every key has
/// it (PyTorch's `consume_prefix_in_state_dict_if_present` removes it from the keys that have
/// it; a file where only some keys have it is left for the key check to refuse).
pub fn take_module_prefix(tensors: BTreeMap<String, Tensor>) -> (BTreeMap<String, Tensor>, Option<&'static str>) {
    if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(MODULE_PREFIX)) {
        (pytorch::strip_prefix(tensors, MODULE_PREFIX), Some(MODULE_PREFIX))
    } else {
        (tensors, None)
    }
}

/// Loads the state dict in `path` (either format) into `vs`, after checking every key, shape
/// and dtype; nothing is copied unless the whole file matches. Returns where the state dict
/// was found and whether the `module.` prefix was removed, for the caller to log.
pub fn load_into_var_store(vs: &nn::VarStore, path: &Path, key: Option<&str>) -> Result<StateDictSource, WeightsError> {
    let (tensors, source) = read_state_dict(path, key)?;
    safetensors::copy_into_var_store(vs, path, &tensors)?;
    Ok(source)
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

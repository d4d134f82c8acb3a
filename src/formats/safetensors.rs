//! Checkpoints in safetensors, with exactly the keys of PyTorch's `state_dict()`.
//!
//! A file written here loads in PyTorch with
//! `model.load_state_dict(safetensors.torch.load_file(path), strict=True)`, and a file that
//! PyTorch wrote with `safetensors.torch.save_file(model.state_dict(), path)` loads here.
//! Loading checks the whole file (every key present, no extra key, shapes and dtypes) before
//! it copies anything, so a bad file leaves the model untouched. Writes go to a temporary file
//! that is synced and then renamed, so a crash never leaves a half-written checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};

use crate::formats::atomic;
use tch::{Device, Kind, Tensor};

/// Metadata stored in the safetensors header (`__metadata__`), as strings.
pub type Metadata = BTreeMap<String, String>;

/// What can go wrong with a checkpoint file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot write checkpoint {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("checkpoint {path} lacks the key `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("checkpoint {path} has the key `{key}`, which the model does not have")]
    UnexpectedKey { path: PathBuf, key: String },
    #[error("checkpoint {path}: `{key}` has shape {found:?}, the model expects {expected:?}{hint}")]
    Shape { path: PathBuf, key: String, found: Vec<i64>, expected: Vec<i64>, hint: String },
    #[error("checkpoint {path}: `{key}` has dtype {found:?}, the model expects {expected}")]
    Dtype { path: PathBuf, key: String, found: Dtype, expected: &'static str },
    #[error("checkpoint {path}: {reason}")]
    Tensor { path: PathBuf, reason: String },
}

fn kind_to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn dtype_to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// A tensor copied to host memory, in the layout safetensors writes.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl HostTensor {
    fn from_tensor(name: &str, tensor: &Tensor) -> Result<Self, String> {
        let kind = tensor.kind();
        let dtype = kind_to_dtype(kind).ok_or_else(|| format!("`{name}` has unsupported kind {kind:?}"))?;
        let tensor = tensor.detach().to_device(Device::Cpu).contiguous();
        let numel = tensor.numel();
        let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
        tensor.f_copy_data_u8(&mut data, numel).map_err(|e| format!("`{name}`: {e}"))?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        Ok(Self { dtype, shape, data })
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Serialises `tensors` and `metadata` into the bytes of a safetensors file (`path` only
/// names the file in errors).
pub fn serialize_tensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &Metadata,
) -> Result<Vec<u8>, CheckpointError> {
    let host = tensors
        .into_iter()
        .map(|(name, t)| HostTensor::from_tensor(name, t).map(|h| (name.to_string(), h)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| CheckpointError::Tensor { path: path.to_path_buf(), reason })?;
    let info: HashMap<String, String> = metadata.clone().into_iter().collect();
    let info = if info.is_empty() { None } else { Some(info) };
    safetensors::serialize(host.iter().map(|(n, h)| (n.as_str(), h)), info)
        .map_err(|e| CheckpointError::Tensor { path: path.to_path_buf(), reason: e.to_string() })
}

/// Writes `tensors` and `metadata` to `path` atomically: a temporary file beside it is written,
/// synced to disk and renamed over `path`.
pub fn save_tensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &Metadata,
) -> Result<(), CheckpointError> {
    let bytes = serialize_tensors(path, tensors, metadata)?;
    atomic::write_atomically(path, &bytes).map_err(|err| CheckpointError::Write { path: path.to_path_buf(), err })
}

/// Saves every variable of `vs` (parameters, BatchNorm running stats and counters) under its
/// PyTorch `state_dict` key.
pub fn save_var_store(vs: &tch::nn::VarStore, path: &Path, metadata: &Metadata) -> Result<(), CheckpointError> {
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    save_tensors(path, variables.iter().map(|(k, v)| (k.as_str(), v)), metadata)
}

/// The tensors and metadata of a safetensors file, on the CPU.
pub struct LoadedTensors {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: Metadata,
}

/// The metadata of a safetensors file, read from its header alone (not the tensors).
pub fn read_metadata(path: &Path) -> Result<Metadata, CheckpointError> {
    use std::io::Read;
    let read_err = |err| CheckpointError::Read { path: path.to_path_buf(), err };
    let format_err = |reason: String| CheckpointError::Format { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| format_err("shorter than its 8-byte header length".into()))?;
    let len = u64::from_le_bytes(len);
    // safetensors' own limit on the header, and never past the end of the file.
    if len > 100_000_000 || len > file_len.saturating_sub(8) {
        return Err(format_err(format!("header length {len} does not fit the file")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(read_err)?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| format_err(format!("header is not JSON: {e}")))?;
    let metadata = json.get("__metadata__").and_then(|m| m.as_object());
    Ok(metadata
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default())
}

/// Reads a whole safetensors file. Any malformed content is an error, never a panic.
pub fn load_tensors(path: &Path) -> Result<LoadedTensors, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|err| CheckpointError::Read { path: path.to_path_buf(), err })?;
    let format_err = |reason: String| CheckpointError::Format { path: path.to_path_buf(), reason };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| format_err(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format_err(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let kind = dtype_to_kind(view.dtype())
            .ok_or_else(|| format_err(format!("`{name}` has unsupported dtype {:?}", view.dtype())))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor =
            Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| format_err(format!("`{name}`: {e}")))?;
        tensors.insert(name.to_string(), tensor);
    }
    Ok(LoadedTensors { tensors, metadata })
}

/// Loads `path` into `vs` after checking that its keys are exactly the variables of `vs`, with
/// the same shapes; floating-point tensors of another precision are converted. Nothing is
/// copied unless the whole file matches. Returns the file's metadata.
pub fn load_var_store(vs: &tch::nn::VarStore, path: &Path) -> Result<Metadata, CheckpointError> {
    let loaded = load_tensors(path)?;
    copy_into_var_store(vs, path, &loaded.tensors)?;
    Ok(loaded.metadata)
}

/// [`load_var_store`] for tensors already read from `path` (named in errors): checks them all
/// against the variables of `vs`, then copies them in.
pub fn copy_into_var_store(
    vs: &tch::nn::VarStore,
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<(), CheckpointError> {
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    check_matches(path, &variables, tensors)?;
    tch::no_grad(|| {
        for (name, var) in &variables {
            var.shallow_clone()
                .f_copy_(&tensors[name].to_kind(var.kind()))
                .map_err(|e| CheckpointError::Tensor { path: path.to_path_buf(), reason: format!("`{name}`: {e}") })?;
        }
        Ok(())
    })
}

/// Checks that `found` has exactly the keys of `expected`, with equal shapes and compatible
/// dtypes (any float for a float, the same kind otherwise).
pub fn check_matches(
    path: &Path,
    expected: &BTreeMap<String, Tensor>,
    found: &BTreeMap<String, Tensor>,
) -> Result<(), CheckpointError> {
    for (key, want) in expected {
        let Some(got) = found.get(key) else {
            return Err(CheckpointError::MissingKey { path: path.to_path_buf(), key: key.clone() });
        };
        if got.size() != want.size() {
            let hint = if key.starts_with("fc3.") && got.size().first() != want.size().first() {
                format!(
                    " (the checkpoint is for {} classes, the model has {})",
                    got.size().first().copied().unwrap_or(0),
                    want.size()[0]
                )
            } else {
                String::new()
            };
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                key: key.clone(),
                found: got.size(),
                expected: want.size(),
                hint,
            });
        }
        let compatible = if want.is_floating_point() { got.is_floating_point() } else { got.kind() == want.kind() };
        if !compatible {
            return Err(CheckpointError::Dtype {
                path: path.to_path_buf(),
                key: key.clone(),
                found: kind_to_dtype(got.kind()).unwrap_or(Dtype::U8),
                expected: if want.is_floating_point() { "a floating-point dtype" } else { "I64" },
            });
        }
    }
    if let Some(key) = found.keys().find(|k| !expected.contains_key(*k)) {
        return Err(CheckpointError::UnexpectedKey { path: path.to_path_buf(), key: key.clone() });
    }
    Ok(())
}

//! PyTorch's own checkpoint files (`torch.save`, `.pt` / `.pth` / `.bin`), read and written in
//! pure Rust, without running Python and without executing anything from the file.
//!
//! Since PyTorch 1.6 `torch.save` writes a zip archive of stored (uncompressed) entries under one
//! top folder (the file stem, or `archive`):
//!
//! - `data.pkl`: the saved object as a pickle (protocol 2). Each tensor is a call of
//!   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`,
//!   and each storage a *persistent id* `('storage', torch.FloatStorage, key, location, numel)`;
//! - `data/<key>`: the bytes of each storage, little-endian, 64-byte aligned in the file;
//! - `byteorder` (`little`), `version` (`3`), and in recent versions `.format_version`,
//!   `.storage_alignment` and `.data/serialization_id`.
//!
//! [`load`] reads such a file with a restricted unpickler: the only globals it accepts are
//! `collections.OrderedDict`, `collections.Counter` (in which `MultiStepLR.state_dict()` keeps
//! its milestones), `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`
//! (and `_rebuild_parameter_with_state`) and the typed storages
//! (`torch.FloatStorage`, `HalfStorage`, `BFloat16Storage`, `DoubleStorage`, `LongStorage`,
//! `IntStorage`, `ShortStorage`, `CharStorage`, `ByteStorage`, `BoolStorage`). That covers
//! `model.state_dict()` and training checkpoints such as
//! `{'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': n}`. Any other
//! global (`os.system`, `builtins.eval`, …) is refused with [`PytorchError::ForbiddenGlobal`]
//! before anything else happens: the reader never calls anything named in the file, it only
//! recognises these names and builds the values itself. Every malformed input gives an error,
//! never a panic; lengths are checked against the file before anything is allocated. The zip
//! archive is checked as a whole when it is opened (each local header agrees with the central
//! directory, no two entries share a byte), so that nothing allocates much beyond the file's
//! size: at most its stored bytes once, plus copies of partial views bounded by the same.
//!
//! [`save`] writes the same layout, which `torch.load(path)` reads with its default
//! `weights_only=True`; the file is written beside the target, synced and renamed over it.
//!
//! Not supported, each with an error that says what to do: the legacy format written before
//! PyTorch 1.6 (or with `_use_new_zipfile_serialization=False`), TorchScript archives
//! (`torch.jit.save`), compressed zip entries, big-endian files, `bytes` values, sets, and
//! tensor subclasses or other Python objects.

mod archive;
mod pickle;
mod writer;
mod zip_writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

pub use writer::{save, save_state_dict, write_raw};

/// A value read from (or to be written to) a PyTorch file: the subset of Python values that
/// checkpoints are made of.
#[derive(Debug)]
pub enum PtValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PtValue>),
    Tuple(Vec<PtValue>),
    /// A plain `dict`, in insertion order.
    Dict(Vec<(PtValue, PtValue)>),
    /// A `collections.OrderedDict` (what `state_dict()` returns), in order. Its `_metadata`
    /// attribute (module versions) is read and dropped.
    OrderedDict(Vec<(PtValue, PtValue)>),
    /// A `collections.Counter` (a dict subclass), in order: `MultiStepLR` keeps its milestones
    /// in one, each with how many times it was given.
    Counter(Vec<(PtValue, PtValue)>),
    /// A CPU tensor that owns its memory (or shares it with another tensor of the same file
    /// that covers the same whole storage, as in PyTorch).
    Tensor(Tensor),
}

impl PtValue {
    /// The entries of a `dict`, an `OrderedDict` or a `Counter`.
    pub fn as_dict(&self) -> Option<&[(PtValue, PtValue)]> {
        match self {
            PtValue::Dict(items) | PtValue::OrderedDict(items) | PtValue::Counter(items) => Some(items),
            _ => None,
        }
    }

    /// The value under the string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&PtValue> {
        self.as_dict()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PtValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            PtValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A float, or an int as a float (Python code mixes them, e.g. `lr=1`).
    pub fn as_float(&self) -> Option<f64> {
        match self {
            PtValue::Float(f) => Some(*f),
            PtValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PtValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            PtValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The items of a list or a tuple.
    pub fn as_list(&self) -> Option<&[PtValue]> {
        match self {
            PtValue::List(items) | PtValue::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The value as a `state_dict`: a dict whose keys are all strings and whose values are all
    /// tensors (shallow copies that share memory with this value's). `None` for anything else.
    pub fn as_state_dict(&self) -> Option<BTreeMap<String, Tensor>> {
        self.as_dict()?.iter().map(|(k, v)| Some((k.as_str()?.to_string(), v.as_tensor()?.shallow_clone()))).collect()
    }

    /// An `OrderedDict` of tensors, as PyTorch's `state_dict()` is, in the given order. The
    /// tensors are shallow copies (they share memory with `tensors`).
    pub fn state_dict<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> PtValue {
        PtValue::OrderedDict(
            tensors.into_iter().map(|(k, t)| (PtValue::from(k), PtValue::Tensor(t.shallow_clone()))).collect(),
        )
    }

    /// The Python type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PtValue::None => "None",
            PtValue::Bool(_) => "bool",
            PtValue::Int(_) => "int",
            PtValue::Float(_) => "float",
            PtValue::Str(_) => "str",
            PtValue::List(_) => "list",
            PtValue::Tuple(_) => "tuple",
            PtValue::Dict(_) => "dict",
            PtValue::OrderedDict(_) => "OrderedDict",
            PtValue::Counter(_) => "Counter",
            PtValue::Tensor(_) => "Tensor",
        }
    }
}

impl From<&str> for PtValue {
    fn from(s: &str) -> Self {
        PtValue::Str(s.to_string())
    }
}

impl From<String> for PtValue {
    fn from(s: String) -> Self {
        PtValue::Str(s)
    }
}

impl From<i64> for PtValue {
    fn from(i: i64) -> Self {
        PtValue::Int(i)
    }
}

impl From<f64> for PtValue {
    fn from(f: f64) -> Self {
        PtValue::Float(f)
    }
}

impl From<bool> for PtValue {
    fn from(b: bool) -> Self {
        PtValue::Bool(b)
    }
}

impl From<Tensor> for PtValue {
    fn from(t: Tensor) -> Self {
        PtValue::Tensor(t)
    }
}

/// The keys of `state_dict` with `prefix` removed from those that start with it (as
/// `torch.nn.modules.utils.consume_prefix_in_state_dict_if_present` does), e.g. the `module.`
/// that `DataParallel` and `DistributedDataParallel` add. Other keys are kept as they are.
pub fn strip_prefix(state_dict: BTreeMap<String, Tensor>, prefix: &str) -> BTreeMap<String, Tensor> {
    state_dict
        .into_iter()
        .map(|(k, t)| match k.strip_prefix(prefix) {
            Some(rest) => (rest.to_string(), t),
            None => (k, t),
        })
        .collect()
}

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
enum Fault {
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
    fn at(self, path: &Path) -> PytorchError {
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

/// The typed storages that PyTorch names in persistent ids, with their element kinds.
const STORAGE_TYPES: [(&str, Kind); 10] = [
    ("FloatStorage", Kind::Float),
    ("DoubleStorage", Kind::Double),
    ("HalfStorage", Kind::Half),
    ("BFloat16Storage", Kind::BFloat16),
    ("LongStorage", Kind::Int64),
    ("IntStorage", Kind::Int),
    ("ShortStorage", Kind::Int16),
    ("CharStorage", Kind::Int8),
    ("ByteStorage", Kind::Uint8),
    ("BoolStorage", Kind::Bool),
];

/// Nesting allowed in values read or written; a checkpoint needs fewer than ten levels.
const MAX_DEPTH: usize = 100;

/// The strides of a contiguous tensor of `size`, as PyTorch computes them.
fn contiguous_strides(size: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(size[i + 1].max(1));
    }
    strides
}

/// What the legacy format starts with: pickle protocol 2 (or a later one, with a frame), then
/// the magic number 0x1950a86a20f9469cfc6c as a LONG1.
const LEGACY_MAGIC: [u8; 12] = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

fn is_legacy(head: &[u8]) -> bool {
    head.first() == Some(&0x80) && head.windows(LEGACY_MAGIC.len()).take(12).any(|w| w == LEGACY_MAGIC)
}

/// The first bytes of a file (fewer if it is shorter).
fn read_head(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(32);
    file.by_ref().take(32).read_to_end(&mut head)?;
    Ok(head)
}

/// The zip archive of a torch.save file, with the top folder its entries are under.
struct Checkpoint {
    zip: archive::ZipReader,
    prefix: String,
}

fn open(path: &Path) -> Result<Checkpoint, PytorchError> {
    let read_err = |err| PytorchError::Read { path: path.to_path_buf(), err };
    let mut file = File::open(path).map_err(read_err)?;
    let head = read_head(&mut file).map_err(read_err)?;
    if is_legacy(&head) {
        return Err(PytorchError::LegacyFormat { path: path.to_path_buf() });
    }
    let not_pytorch = |reason: &str| PytorchError::NotPytorch { path: path.to_path_buf(), reason: reason.into() };
    if !head.starts_with(ZIP_MAGIC) {
        return Err(not_pytorch("it is not a zip archive (torch.save writes one since PyTorch 1.6)"));
    }
    let zip = archive::ZipReader::open(file).map_err(|f| f.at(path))?;
    // Like PyTorch's reader: the first entry's top folder is the archive's.
    let prefix = match zip.names().next().and_then(|n| n.split_once('/')) {
        Some((prefix, _)) => prefix.to_string(),
        None => return Err(not_pytorch("its first entry is not inside a folder")),
    };
    let torchscript = zip.contains(&format!("{prefix}/constants.pkl"))
        || zip.names().any(|n| n.starts_with(&format!("{prefix}/code/")));
    if torchscript {
        return Err(PytorchError::TorchScript { path: path.to_path_buf() });
    }
    if !zip.contains(&format!("{prefix}/data.pkl")) {
        return Err(not_pytorch(&format!("the zip archive has no `{prefix}/data.pkl`")));
    }
    Ok(Checkpoint { zip, prefix })
}

impl Checkpoint {
    fn read(&mut self, record: &str) -> Result<Option<Vec<u8>>, Fault> {
        self.zip.read(&format!("{}/{record}", self.prefix))
    }

    fn check_byteorder(&mut self) -> Result<(), Fault> {
        match self.read("byteorder")? {
            Some(order) if order.trim_ascii() != b"little" => Err(Fault::Tensor(format!(
                "the tensors are stored {:?}-endian; only little-endian files are supported",
                String::from_utf8_lossy(&order)
            ))),
            _ => Ok(()),
        }
    }
}

/// Reads the storages of a torch.save archive for the unpickler, each once.
struct ArchiveStorages<'a> {
    checkpoint: &'a mut Checkpoint,
    loaded: std::collections::HashMap<String, (Kind, std::rc::Rc<Tensor>)>,
}

impl pickle::Storages for ArchiveStorages<'_> {
    fn storage(&mut self, key: &str, kind: Kind, numel: i64) -> Result<std::rc::Rc<Tensor>, Fault> {
        if let Some((loaded_kind, tensor)) = self.loaded.get(key) {
            if *loaded_kind != kind {
                return Err(Fault::Tensor(format!("storage `{key}` is used as both {loaded_kind:?} and {kind:?}")));
            }
            return Ok(tensor.clone());
        }
        let entry = format!("{}/data/{key}", self.checkpoint.prefix);
        let size = self
            .checkpoint
            .zip
            .size(&entry)
            .ok_or_else(|| Fault::Archive(format!("storage `{key}` has no entry `data/{key}`")))?;
        let expected = usize::try_from(numel).ok().and_then(|n| n.checked_mul(kind.elt_size_in_bytes()));
        if expected.map(|e| e as u64) != Some(size) {
            return Err(Fault::Tensor(format!(
                "storage `{key}` should hold {numel} {kind:?} elements but has {size} bytes"
            )));
        }
        // Read straight into the tensor's memory: no zeroed buffer, no second copy.
        let tensor = Tensor::f_empty([numel], (kind, tch::Device::Cpu))
            .map_err(|e| Fault::Tensor(format!("storage `{key}`: {e}")))?;
        let len = expected.unwrap_or(0);
        if len > 0 {
            // SAFETY: a new, contiguous CPU tensor of exactly `len` bytes that nothing else
            // references yet, and the slice does not outlive this block. Its memory was never
            // initialised, so it is seen as `MaybeUninit` until `read_into` has filled it.
            let out = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<MaybeUninit<u8>>(), len) };
            let bytes = self.checkpoint.zip.read_into(&entry, out)?;
            if kind == Kind::Bool && bytes.iter().any(|&b| b > 1) {
                return Err(Fault::Tensor(format!("storage `{key}` of booleans holds values other than 0 and 1")));
            }
        }
        let tensor = std::rc::Rc::new(tensor);
        self.loaded.insert(key.to_string(), (kind, tensor.clone()));
        Ok(tensor)
    }
}

/// Reads a file written by `torch.save` (PyTorch >= 1.6) into a tree of values, with every
/// tensor on the CPU (whatever device it was saved from).
pub fn load(path: &Path) -> Result<PtValue, PytorchError> {
    let mut checkpoint = open(path)?;
    checkpoint.check_byteorder().map_err(|f| f.at(path))?;
    let pickle = checkpoint.read("data.pkl").map_err(|f| f.at(path))?.unwrap_or_default();
    // Tensors that are views of part of a storage are copied; together the copies may take at
    // most twice the stored bytes, so that a small file cannot make the reader allocate a lot.
    let stored = checkpoint.zip.size_under(&format!("{}/data/", checkpoint.prefix));
    let copy_budget = stored.saturating_mul(2).saturating_add(1 << 20);
    let mut storages = ArchiveStorages { checkpoint: &mut checkpoint, loaded: Default::default() };
    pickle::unpickle(&pickle, &mut storages, copy_budget).map_err(|f| f.at(path))
}

/// Whether `path` looks like a file that `torch.save` wrote: a zip archive with a
/// `<folder>/data.pkl` entry (TorchScript archives too), or the legacy pre-1.6 format. [`load`]
/// reads the first kind and explains what to do with the other two. `false` when the file
/// cannot be read.
pub fn is_pytorch_file(path: &Path) -> bool {
    match open(path) {
        Ok(_) => true,
        Err(PytorchError::LegacyFormat { .. } | PytorchError::TorchScript { .. }) => true,
        Err(_) => false,
    }
}

/// The raw records of a torch.save archive, for inspection (e.g. `python -m pickletools` on
/// the pickle) and for tools that craft their own files; [`load`] is the normal way to read.
#[derive(Debug)]
pub struct RawArchive {
    /// The top folder of the entries (`archive`, or the file stem when PyTorch wrote it).
    pub prefix: String,
    /// `data.pkl`, unparsed.
    pub pickle: Vec<u8>,
    /// The bytes of each storage (`data/<key>`), by key.
    pub storages: BTreeMap<String, Vec<u8>>,
}

/// Reads the records of a torch.save archive without unpickling anything.
pub fn read_raw(path: &Path) -> Result<RawArchive, PytorchError> {
    let mut checkpoint = open(path)?;
    let at = |f: Fault| f.at(path);
    let pickle = checkpoint.read("data.pkl").map_err(at)?.unwrap_or_default();
    let data = format!("{}/data/", checkpoint.prefix);
    let keys: Vec<String> = checkpoint.zip.names().filter_map(|n| n.strip_prefix(&data)).map(str::to_string).collect();
    let mut storages = BTreeMap::new();
    for key in keys {
        let bytes = checkpoint.read(&format!("data/{key}")).map_err(at)?.unwrap_or_default();
        storages.insert(key, bytes);
    }
    Ok(RawArchive { prefix: checkpoint.prefix, pickle, storages })
}

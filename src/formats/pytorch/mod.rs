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
mod error;
mod pickle;
mod value;
mod writer;
mod zip_writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::path::Path;

use tch::{Kind, Tensor};

use error::Fault;
pub use error::PytorchError;
pub use value::PtValue;
pub use writer::{save, save_state_dict, write_raw};

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

//! Writing torch.save's format: a protocol 2 pickle of the value, in which each tensor is
//! `torch._utils._rebuild_tensor_v2` of its own contiguous storage, and a zip archive with the
//! records PyTorch 2.x writes (`data.pkl`, `.format_version`, `.storage_alignment`,
//! `byteorder`, `data/<n>`, `version`), the data aligned to 64 bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Tensor};

use super::zip_writer::ZipWriter;
use super::{contiguous_strides, PtValue, PytorchError, MAX_DEPTH, STORAGE_TYPES};
use crate::formats::atomic::write_atomically_with;

/// The top folder of the entries (PyTorch uses the file stem, or this; readers take any).
const PREFIX: &str = "archive";

/// Writes `value` to `path` as `torch.save(value, path)` would, atomically (through a synced
/// temporary file beside it and a rename). Tensors are written from CPU copies, one at a time,
/// each with its own storage and `requires_grad=False`, as in a `state_dict()`.
pub fn save(path: &Path, value: &PtValue) -> Result<(), PytorchError> {
    let mut pickler = Pickler::default();
    pickler.value(value, 0).map_err(|reason| PytorchError::Tensor { path: path.to_path_buf(), reason })?;
    pickler.out.push(b'.');
    let storages = pickler.tensors.iter().enumerate().map(|(i, tensor)| {
        host_bytes(tensor).map(|bytes| (i.to_string(), Cow::Owned(bytes))).map_err(|e| PytorchError::Tensor {
            path: path.to_path_buf(),
            reason: format!("cannot copy a tensor: {e}"),
        })
    });
    write_archive(path, &pickler.out, storages)
}

/// Writes the tensors as a `state_dict` (an `OrderedDict`, in the given order) that
/// `model.load_state_dict(torch.load(path))` reads.
pub fn save_state_dict<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<(), PytorchError> {
    save(path, &PtValue::state_dict(tensors))
}

/// Writes a torch.save archive from raw parts: `pickle` as `data.pkl` and each storage's bytes
/// as `data/<key>`. Nothing is checked: this is for tools and tests that craft their own
/// pickles; [`save`] is the normal way to write.
pub fn write_raw(path: &Path, pickle: &[u8], storages: &[(&str, &[u8])]) -> Result<(), PytorchError> {
    write_archive(path, pickle, storages.iter().map(|(key, bytes)| Ok((key.to_string(), Cow::Borrowed(*bytes)))))
}

fn write_archive<'s>(
    path: &Path,
    pickle: &[u8],
    storages: impl Iterator<Item = Result<(String, Cow<'s, [u8]>), PytorchError>>,
) -> Result<(), PytorchError> {
    let write_err = |err| PytorchError::Write { path: path.to_path_buf(), err };
    write_atomically_with(path, write_err, |out| {
        let mut zip = ZipWriter::new(out);
        zip.add(&format!("{PREFIX}/data.pkl"), pickle).map_err(write_err)?;
        zip.add(&format!("{PREFIX}/.format_version"), b"1").map_err(write_err)?;
        zip.add(&format!("{PREFIX}/.storage_alignment"), b"64").map_err(write_err)?;
        zip.add(&format!("{PREFIX}/byteorder"), b"little").map_err(write_err)?;
        for storage in storages {
            let (key, bytes) = storage?;
            zip.add(&format!("{PREFIX}/data/{key}"), &bytes).map_err(write_err)?;
        }
        zip.add(&format!("{PREFIX}/version"), b"3\n").map_err(write_err)?;
        zip.finish().map_err(write_err)?;
        Ok(())
    })
}

/// The bytes of a tensor's elements in order, copied to the host.
fn host_bytes(tensor: &Tensor) -> Result<Vec<u8>, tch::TchError> {
    let tensor = tensor.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let numel = tensor.numel();
    let mut bytes = vec![0u8; numel * tensor.kind().elt_size_in_bytes()];
    tensor.f_copy_data_u8(&mut bytes, numel)?;
    Ok(bytes)
}

/// A protocol 2 pickler for [`PtValue`]s. Globals and the persistent ids' constant strings are
/// written once and then fetched from the memo, as Python's pickler does.
#[derive(Default)]
struct Pickler<'a> {
    out: Vec<u8>,
    memo: HashMap<(&'static str, &'static str), u32>,
    /// The tensors, in the order of their storage keys.
    tensors: Vec<&'a Tensor>,
}

impl<'a> Pickler<'a> {
    /// Writes what `write` writes the first time `key` is seen, and a memo fetch after that.
    fn memoized(&mut self, key: (&'static str, &'static str), write: impl FnOnce(&mut Self)) {
        if let Some(&index) = self.memo.get(&key) {
            match u8::try_from(index) {
                Ok(index) => self.out.extend_from_slice(&[b'h', index]),
                Err(_) => {
                    self.out.push(b'j');
                    self.out.extend_from_slice(&index.to_le_bytes());
                }
            }
            return;
        }
        write(self);
        let index = self.memo.len() as u32;
        match u8::try_from(index) {
            Ok(index) => self.out.extend_from_slice(&[b'q', index]),
            Err(_) => {
                self.out.push(b'r');
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
        self.memo.insert(key, index);
    }

    fn global(&mut self, module: &'static str, name: &'static str) {
        self.memoized((module, name), |p| {
            p.out.push(b'c');
            for line in [module, name] {
                p.out.extend_from_slice(line.as_bytes());
                p.out.push(b'\n');
            }
        });
    }

    fn constant(&mut self, s: &'static str) {
        self.memoized(("", s), |p| p.str(s).unwrap_or_default());
    }

    fn str(&mut self, s: &str) -> Result<(), String> {
        let len = u32::try_from(s.len()).map_err(|_| "a string is longer than 4 GiB".to_string())?;
        self.out.push(b'X');
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn int(&mut self, i: i64) {
        if let Ok(small) = u8::try_from(i) {
            self.out.extend_from_slice(&[b'K', small]);
        } else if let Ok(small) = u16::try_from(i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&small.to_le_bytes());
        } else if let Ok(small) = i32::try_from(i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            // LONG1: the shortest little-endian two's complement.
            let bytes = i.to_le_bytes();
            let mut len = bytes.len();
            while len > 1 {
                let (last, sign) = (bytes[len - 1], bytes[len - 2] & 0x80);
                if (last == 0 && sign == 0) || (last == 0xff && sign != 0) {
                    len -= 1;
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[0x8a, len as u8]);
            self.out.extend_from_slice(&bytes[..len]);
        }
    }

    /// Opens a tuple of `len` items (TUPLE1, 2 and 3 need no MARK).
    fn start_tuple(&mut self, len: usize) {
        if len > 3 {
            self.out.push(b'(');
        }
    }

    fn end_tuple(&mut self, len: usize) {
        self.out.push(match len {
            0 => b')',
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
    }

    fn ints(&mut self, values: &[i64]) {
        self.start_tuple(values.len());
        for &v in values {
            self.int(v);
        }
        self.end_tuple(values.len());
    }

    fn items(&mut self, items: &'a [(PtValue, PtValue)], depth: usize) -> Result<(), String> {
        if !items.is_empty() {
            self.out.push(b'(');
            for (k, v) in items {
                self.value(k, depth + 1)?;
                self.value(v, depth + 1)?;
            }
            self.out.push(b'u');
        }
        Ok(())
    }

    fn value(&mut self, value: &'a PtValue, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the value is nested more than {MAX_DEPTH} deep"));
        }
        match value {
            PtValue::None => self.out.push(b'N'),
            PtValue::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            PtValue::Int(i) => self.int(*i),
            PtValue::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            PtValue::Str(s) => self.str(s)?,
            PtValue::List(items) => {
                self.out.push(b']');
                if !items.is_empty() {
                    self.out.push(b'(');
                    for item in items {
                        self.value(item, depth + 1)?;
                    }
                    self.out.push(b'e');
                }
            }
            PtValue::Tuple(items) => {
                self.start_tuple(items.len());
                for item in items {
                    self.value(item, depth + 1)?;
                }
                self.end_tuple(items.len());
            }
            PtValue::Dict(items) => {
                self.out.push(b'}');
                self.items(items, depth)?;
            }
            PtValue::OrderedDict(items) => {
                self.ordered_dict();
                self.items(items, depth)?;
            }
            // As Python pickles it: `Counter(dict)`, the dict written in place.
            PtValue::Counter(items) => {
                self.global("collections", "Counter");
                self.out.push(b'}');
                self.items(items, depth)?;
                self.out.extend_from_slice(&[0x85, b'R']);
            }
            PtValue::Tensor(tensor) => self.tensor(tensor)?,
        }
        Ok(())
    }

    /// `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
    }

    /// `_rebuild_tensor_v2(storage, 0, size, contiguous stride, False, OrderedDict())`, the
    /// storage being the persistent id `('storage', torch.<Type>Storage, key, 'cpu', numel)`.
    fn tensor(&mut self, tensor: &'a Tensor) -> Result<(), String> {
        if !tensor.defined() {
            return Err("a tensor is undefined".into());
        }
        let kind = tensor.kind();
        let storage = STORAGE_TYPES
            .iter()
            .find(|(_, k)| *k == kind)
            .map(|(name, _)| *name)
            .ok_or_else(|| format!("tensors of kind {kind:?} cannot be saved"))?;
        let size = tensor.size();
        let stride = contiguous_strides(&size);
        let key = self.tensors.len().to_string();
        self.tensors.push(tensor);
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(b'(');
        self.out.push(b'(');
        self.constant("storage");
        self.global("torch", storage);
        self.str(&key)?;
        self.constant("cpu");
        self.int(tensor.numel() as i64);
        self.out.push(b't');
        self.out.push(b'Q');
        self.int(0);
        self.ints(&size);
        self.ints(&stride);
        self.out.push(0x89);
        self.ordered_dict();
        self.out.extend_from_slice(b"tR");
        Ok(())
    }
}

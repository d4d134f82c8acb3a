//! The zip container of torch.save, read: stored (uncompressed) entries, found through the
//! central directory (zip64 included), each checked against its CRC-32. The writer is in
//! `zip_writer`.
//!
//! When an archive is opened, every entry's local header is checked against its central
//! directory record (name, flags, method, sizes, CRC), and no two entries may share a byte, nor
//! reach into the central directory: the file is the same to every reader, and a small file
//! cannot list one large entry many times over.
//!
//! Only what PyTorch writes is supported: no compression, no encryption, one disk.

use std::collections::HashMap;
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::Fault;

pub(super) const LOCAL_HEADER: u32 = 0x0403_4b50;
pub(super) const CENTRAL_HEADER: u32 = 0x0201_4b50;
pub(super) const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
pub(super) const ZIP64_END_OF_CENTRAL_DIRECTORY: u32 = 0x0606_4b50;
pub(super) const ZIP64_LOCATOR: u32 = 0x0706_4b50;
pub(super) const ZIP64_EXTRA: u16 = 0x0001;
/// The extra field PyTorch pads local headers with (its payload is `Z`s).
pub(super) const PADDING_EXTRA: u16 = 0x4246; // "FB"
pub(super) const ALIGNMENT: u64 = 64;
pub(super) const LOCAL_HEADER_LEN: u64 = 30;
pub(super) const EOCD_LEN: usize = 22;
pub(super) const ZIP64_EOCD_LEN: usize = 56;
pub(super) const ZIP64_LOCATOR_LEN: usize = 20;
/// Version 4.5: zip64.
pub(super) const VERSION: u16 = 45;
/// General purpose flag bit 3: the CRC and sizes follow the data (the local header's are zero).
pub(super) const DATA_DESCRIPTOR: u16 = 0x0008;
/// General purpose flag bit 11: names are UTF-8.
pub(super) const UTF8_NAMES: u16 = 0x0800;
/// 1980-01-01 in MS-DOS date format (PyTorch writes no meaningful time either).
pub(super) const DOS_DATE: u16 = (1 << 5) | 1;

/// Little-endian fields read from a byte slice; running out is an error, never a panic.
pub(super) struct Bytes<'a> {
    data: &'a [u8],
    pub pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    /// The bytes up to the next newline, which is skipped.
    pub fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.data.get(self.pos..)?;
        let len = rest.iter().position(|&b| b == b'\n')?;
        let line = self.take(len)?;
        self.pos += 1;
        Some(line)
    }
}

fn damaged(reason: impl Into<String>) -> Fault {
    Fault::Archive(reason.into())
}

/// Where an entry is and what it should hold.
pub(super) struct Entry {
    pub local_header: u64,
    /// Where its data starts: found in its local header, checked when the archive is opened.
    pub data: u64,
    /// The bytes its data takes in the file (its size, for the stored entries read here).
    pub compressed: u64,
    pub size: u64,
    pub crc: u32,
    pub flags: u16,
    pub method: u16,
}

impl Entry {
    /// Neither compressed nor encrypted.
    fn stored(&self) -> bool {
        self.flags & 1 == 0 && self.method == 0 && self.compressed == self.size
    }
}

/// A zip archive opened for reading its entries by name. Every entry's local header agrees
/// with the central directory and no two entries share a byte, so that the file is the same
/// to every reader and reading each entry once reads each byte at most once.
pub(super) struct ZipReader {
    file: File,
    names: Vec<String>,
    entries: HashMap<String, Entry>,
    /// The bytes that entries may still be read into memory: the file's length at first. The
    /// entries cannot overlap, so this only stops a reader that reads an entry twice; it is
    /// there so that no path, now or later, can turn a small file into a large allocation.
    budget: u64,
}

/// Reads `len` bytes at `offset`, after checking that they are inside the file.
fn read_at(file: &File, file_len: u64, offset: u64, len: u64) -> Result<Vec<u8>, Fault> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => {}
        _ => return Err(damaged(format!("a record at byte {offset} of {len} bytes runs past the end of the file"))),
    }
    let len = usize::try_from(len).map_err(|_| damaged("a record is too large for this machine"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Fills `out` with the file's bytes from `offset` on, and gives it back initialised. `out` may
/// be memory that was never initialised (a new tensor's): `pread` writes into it through a
/// raw pointer, and it is only seen as bytes once every one of them has been written.
fn pread_exact<'a>(file: &File, offset: u64, out: &'a mut [MaybeUninit<u8>]) -> std::io::Result<&'a mut [u8]> {
    let mut done = 0usize;
    while done < out.len() {
        let rest = &mut out[done..];
        let at = offset
            .checked_add(done as u64)
            .and_then(|at| libc::off_t::try_from(at).ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset out of range"))?;
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes, and pread writes at most that
        // many; `MaybeUninit<u8>` has no validity requirement, whatever pread leaves in it.
        let read = unsafe { libc::pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match read {
            n if n > 0 => done += n as usize,
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    // SAFETY: the loop ends only once pread has written every byte of `out`, and `[u8]` has the
    // layout of `[MaybeUninit<u8>]`.
    Ok(unsafe { &mut *(out as *mut [MaybeUninit<u8>] as *mut [u8]) })
}

/// The entry count, size and offset of the central directory.
struct Directory {
    entries: u64,
    size: u64,
    offset: u64,
}

impl ZipReader {
    pub fn open(file: File) -> Result<Self, Fault> {
        let len = file.metadata()?.len();
        let directory = find_directory(&file, len)?;
        let central = read_at(&file, len, directory.offset, directory.size)?;
        let mut bytes = Bytes::new(&central);
        let mut names = Vec::new();
        let mut entries = HashMap::new();
        for _ in 0..directory.entries {
            let (name, mut entry) = read_central_header(&mut bytes)?;
            check_local_header(&file, &name, &mut entry, directory.offset)?;
            if entries.insert(name.clone(), entry).is_some() {
                return Err(damaged(format!("the entry `{name}` appears twice")));
            }
            names.push(name);
        }
        check_no_overlap(&names, &entries)?;
        Ok(Self { file, names, entries, budget: len })
    }

    /// The entry names, in the central directory's order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The total size of the entries whose names start with `prefix`.
    pub fn size_under(&self, prefix: &str) -> u64 {
        self.entries.iter().filter(|(n, _)| n.starts_with(prefix)).fold(0u64, |sum, (_, e)| sum.saturating_add(e.size))
    }

    /// The bytes of the entry `name`, checked against its CRC; `None` if there is none.
    pub fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, Fault> {
        let Some(size) = self.size(name) else { return Ok(None) };
        let len = usize::try_from(size).map_err(|_| damaged("a record is too large for this machine"))?;
        let mut bytes = Vec::with_capacity(len);
        let spare = bytes.spare_capacity_mut().get_mut(..len).ok_or_else(|| damaged("cannot allocate a record"))?;
        self.read_into(name, spare)?;
        // SAFETY: read_into has initialised the first `len` bytes, and the capacity is at least `len`.
        unsafe { bytes.set_len(len) };
        Ok(Some(bytes))
    }

    /// The size of the entry `name` (`None` if there is none). Its data was found to lie inside
    /// the file, apart from every other entry's, when the archive was opened: a size read from
    /// a damaged directory never reaches an allocation.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.entries.get(name).map(|e| e.size)
    }

    /// Reads the entry `name` into `out`, which must be exactly its size (see
    /// [`ZipReader::size`]), checked against its CRC: straight into a tensor's memory, which
    /// need not be initialised, without an intermediate buffer. Gives `out` back initialised.
    pub fn read_into<'a>(&mut self, name: &str, out: &'a mut [MaybeUninit<u8>]) -> Result<&'a mut [u8], Fault> {
        let Some(entry) = self.entries.get(name) else {
            return Err(damaged(format!("there is no entry `{name}`")));
        };
        if !entry.stored() {
            return Err(damaged(format!(
                "the entry `{name}` is compressed or encrypted; torch.save stores its entries as they are, \
                 and only such entries are supported"
            )));
        }
        let (data, size, crc) = (entry.data, entry.size, entry.crc);
        if out.len() as u64 != size {
            return Err(damaged(format!("the entry `{name}` has {size} bytes, not {}", out.len())));
        }
        self.budget = self.budget.checked_sub(size).ok_or_else(|| {
            damaged(format!("reading `{name}` would read more bytes out of the archive than the file holds"))
        })?;
        let out = pread_exact(&self.file, data, out)?;
        if crc32fast::hash(out) != crc {
            return Err(damaged(format!("the entry `{name}` is damaged (its CRC-32 does not match)")));
        }
        Ok(out)
    }
}

/// Checks the local header of the entry `name` against its central directory record, and
/// records where its data starts. PyTorch (miniz) sets flag bit 3 and writes zeros for the
/// CRC and sizes, which then follow the data; this writer writes them in the header. Anything
/// else that differs (name, flags, method, a size or CRC that is not zero) is refused: two
/// readers would see two different files.
fn check_local_header(file: &File, name: &str, entry: &mut Entry, directory: u64) -> Result<(), Fault> {
    let header = read_at(file, directory, entry.local_header, LOCAL_HEADER_LEN)
        .map_err(|_| damaged(format!("the local header of `{name}` is not before the central directory")))?;
    let mut fields = Bytes::new(&header);
    let bad = |what: &str| damaged(format!("the local header of `{name}` {what}"));
    let damaged_header = || bad("is damaged");
    if fields.u32() != Some(LOCAL_HEADER) {
        return Err(damaged_header());
    }
    fields.take(2).ok_or_else(damaged_header)?; // version
    let (flags, method) = (fields.u16().ok_or_else(damaged_header)?, fields.u16().ok_or_else(damaged_header)?);
    fields.take(4).ok_or_else(damaged_header)?; // time and date
    let crc = fields.u32().ok_or_else(damaged_header)?;
    let compressed = fields.u32().ok_or_else(damaged_header)?;
    let size = fields.u32().ok_or_else(damaged_header)?;
    let name_len = fields.u16().ok_or_else(damaged_header)?;
    let extra_len = fields.u16().ok_or_else(damaged_header)?;
    let rest = u64::from(name_len) + u64::from(extra_len);
    let rest = read_at(file, directory, entry.local_header + LOCAL_HEADER_LEN, rest)
        .map_err(|_| bad("runs into the central directory"))?;
    let (local_name, extra) = rest.split_at(name_len.into());
    if local_name != name.as_bytes() {
        let local_name = String::from_utf8_lossy(local_name);
        return Err(bad(&format!("names it `{local_name}`: an entry has one name")));
    }
    if (flags, method) != (entry.flags, entry.method) {
        return Err(bad("has other flags or another method than its central directory record"));
    }
    let deferred = flags & DATA_DESCRIPTOR != 0;
    let mut zip64 = zip64_field(extra).ok_or_else(damaged_header)?;
    let mut agrees = |local: u32, central: u64| -> Option<bool> {
        let local = match local {
            u32::MAX => zip64.u64()?,
            0 if deferred => return Some(true),
            local => local.into(),
        };
        Some(local == central)
    };
    let sizes_agree = agrees(size, entry.size).ok_or_else(damaged_header)?
        && agrees(compressed, entry.compressed).ok_or_else(damaged_header)?;
    if !sizes_agree || !(crc == entry.crc || (deferred && crc == 0)) {
        return Err(bad("gives another size or CRC than its central directory record"));
    }
    entry.data = entry.local_header + LOCAL_HEADER_LEN + rest.len() as u64;
    match entry.data.checked_add(entry.compressed) {
        Some(end) if end <= directory => Ok(()),
        _ => Err(damaged(format!("the data of `{name}` runs into the central directory or past the end of the file"))),
    }
}

/// The zip64 extra field among `extra`'s fields (empty if there is none); `None` if they are
/// damaged.
fn zip64_field(mut extra: &[u8]) -> Option<Bytes<'_>> {
    while extra.len() >= 4 {
        let mut fields = Bytes::new(extra);
        let (id, len) = (fields.u16()?, fields.u16()?);
        let field = fields.take(len.into())?;
        if id == ZIP64_EXTRA {
            return Some(Bytes::new(field));
        }
        extra = &extra[4 + usize::from(len)..];
    }
    Some(Bytes::new(&[]))
}

/// Refuses two entries that share bytes, from the start of a local header to the end of the
/// data: each entry's bytes would be read (and allocated) once per entry that claims them.
fn check_no_overlap(names: &[String], entries: &HashMap<String, Entry>) -> Result<(), Fault> {
    let mut ranges: Vec<(u64, u64, &str)> = names
        .iter()
        .filter_map(|n| entries.get(n).map(|e| (e.local_header, e.data + e.compressed, n.as_str())))
        .collect();
    ranges.sort_unstable();
    // The range that reaches furthest so far: a long entry may cover several later ones.
    let mut furthest: Option<(u64, u64, &str)> = None;
    for range in ranges {
        if let Some(before) = furthest.filter(|before| range.0 < before.1) {
            return Err(damaged(format!(
                "the entries `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap; the entries of a zip archive never share bytes",
                before.2, before.0, before.1, range.2, range.0, range.1
            )));
        }
        if furthest.is_none_or(|before| range.1 > before.1) {
            furthest = Some(range);
        }
    }
    Ok(())
}

/// Finds the end of central directory record (and its zip64 version, when there is one).
fn find_directory(file: &File, len: u64) -> Result<Directory, Fault> {
    let tail_len = len.min((EOCD_LEN + usize::from(u16::MAX)) as u64);
    let tail_start = len - tail_len;
    let tail = read_at(file, len, tail_start, tail_len)?;
    let signature = END_OF_CENTRAL_DIRECTORY.to_le_bytes();
    let found = (0..tail.len().saturating_sub(EOCD_LEN - 1)).rev().find(|&i| tail.get(i..i + 4) == Some(&signature));
    let Some(at) = found else {
        return Err(damaged("no end of central directory record (the file is truncated, or not a zip archive)"));
    };
    let mut eocd = Bytes::new(tail.get(at..).unwrap_or_default());
    let bad = || damaged("the end of central directory record is damaged");
    eocd.take(10).ok_or_else(bad)?;
    let entries = eocd.u16().ok_or_else(bad)?;
    let size = eocd.u32().ok_or_else(bad)?;
    let offset = eocd.u32().ok_or_else(bad)?;
    let mut directory = Directory { entries: entries.into(), size: size.into(), offset: offset.into() };
    let eocd_offset = tail_start + at as u64;
    if let Some(locator_offset) = eocd_offset.checked_sub(ZIP64_LOCATOR_LEN as u64) {
        let locator = read_at(file, len, locator_offset, ZIP64_LOCATOR_LEN as u64)?;
        let mut locator = Bytes::new(&locator);
        if locator.u32() == Some(ZIP64_LOCATOR) {
            locator.take(4).ok_or_else(bad)?;
            let zip64_offset = locator.u64().ok_or_else(bad)?;
            let record = read_at(file, len, zip64_offset, ZIP64_EOCD_LEN as u64)?;
            let mut record = Bytes::new(&record);
            let bad64 = || damaged("the zip64 end of central directory record is damaged");
            if record.u32() != Some(ZIP64_END_OF_CENTRAL_DIRECTORY) {
                return Err(bad64());
            }
            record.take(28).ok_or_else(bad64)?;
            directory.entries = record.u64().ok_or_else(bad64)?;
            directory.size = record.u64().ok_or_else(bad64)?;
            directory.offset = record.u64().ok_or_else(bad64)?;
        }
    }
    Ok(directory)
}

/// One central directory header: the entry's name and where its data is.
fn read_central_header(bytes: &mut Bytes) -> Result<(String, Entry), Fault> {
    let bad = || damaged("the central directory is damaged");
    if bytes.u32() != Some(CENTRAL_HEADER) {
        return Err(bad());
    }
    bytes.take(4).ok_or_else(bad)?; // versions
    let flags = bytes.u16().ok_or_else(bad)?;
    let method = bytes.u16().ok_or_else(bad)?;
    bytes.take(4).ok_or_else(bad)?; // time and date
    let crc = bytes.u32().ok_or_else(bad)?;
    let mut compressed = u64::from(bytes.u32().ok_or_else(bad)?);
    let mut size = u64::from(bytes.u32().ok_or_else(bad)?);
    let name_len = bytes.u16().ok_or_else(bad)?;
    let extra_len = bytes.u16().ok_or_else(bad)?;
    let comment_len = bytes.u16().ok_or_else(bad)?;
    bytes.take(8).ok_or_else(bad)?; // disk, attributes
    let mut local_header = u64::from(bytes.u32().ok_or_else(bad)?);
    let name = bytes.take(name_len.into()).ok_or_else(bad)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| damaged("an entry name is not UTF-8"))?;
    let mut extra = Bytes::new(bytes.take(extra_len.into()).ok_or_else(bad)?);
    bytes.take(comment_len.into()).ok_or_else(bad)?;
    // The zip64 extra field holds, in this order, those of the three fields that are 0xFFFFFFFF.
    while extra.remaining() >= 4 {
        let id = extra.u16().ok_or_else(bad)?;
        let field_len = extra.u16().ok_or_else(bad)?;
        let mut field = Bytes::new(extra.take(field_len.into()).ok_or_else(bad)?);
        if id == ZIP64_EXTRA {
            for value in [&mut size, &mut compressed, &mut local_header] {
                if *value == u64::from(u32::MAX) {
                    *value = field.u64().ok_or_else(bad)?;
                }
            }
        }
    }
    // Whether it is stored is checked when the entry is read: other entries (TorchScript's
    // code) may be compressed. Where its data starts is found in its local header.
    Ok((name, Entry { local_header, data: 0, compressed, size, crc, flags, method }))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::zip_writer::ZipWriter;
    use super::*;

    #[test]
    fn aligned_entries_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let mut zip = ZipWriter::new(File::create(&path).unwrap());
        zip.add("a/data.pkl", b"pickle").unwrap();
        zip.add("a/data/0", &[7u8; 100]).unwrap();
        zip.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut zip = ZipReader::open(File::open(&path).unwrap()).unwrap();
        assert_eq!(zip.names().collect::<Vec<_>>(), ["a/data.pkl", "a/data/0"]);
        assert_eq!(zip.read("a/data.pkl").unwrap().unwrap(), b"pickle");
        assert_eq!(zip.read("a/data/0").unwrap().unwrap(), [7u8; 100]);
        assert!(zip.read("a/none").unwrap().is_none());
        let data = bytes.windows(100).position(|w| w == [7u8; 100]).unwrap();
        assert_eq!(data % 64, 0);
    }

    /// A local header with these fields for the entry `a/x`, padded to 64 bytes (where
    /// [`ZipWriter`] puts the data of an archive's first entry).
    fn local_header(flags: u16, crc: u32, sizes: [u32; 2], extra: &[u8]) -> Vec<u8> {
        let padding = 64 - LOCAL_HEADER_LEN as usize - 3 - extra.len() - 4;
        let mut header = LOCAL_HEADER.to_le_bytes().to_vec();
        for field in [VERSION, flags, 0, 0, DOS_DATE] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, sizes[0], sizes[1]] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        for field in [3, (extra.len() + 4 + padding) as u16] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        header.extend_from_slice(b"a/x");
        header.extend_from_slice(extra);
        header.extend_from_slice(&PADDING_EXTRA.to_le_bytes());
        header.extend_from_slice(&(padding as u16).to_le_bytes());
        header.resize(64, b'Z');
        header
    }

    /// Opens an archive of one entry `a/x` of `data` as [`ZipWriter`] writes it, with `header`
    /// instead of its local header and `flags` in its central directory record, and reads it.
    fn read_behind(header: Vec<u8>, flags: u16, data: &[u8]) -> Result<Vec<u8>, Fault> {
        let mut zip = ZipWriter::new(Vec::new());
        zip.add("a/x", data).unwrap();
        let mut bytes = zip.finish().unwrap();
        bytes[..64].copy_from_slice(&header);
        let central = bytes.windows(4).position(|w| w == CENTRAL_HEADER.to_le_bytes()).unwrap();
        bytes[central + 8..central + 10].copy_from_slice(&flags.to_le_bytes());
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        Ok(ZipReader::open(file)?.read("a/x")?.unwrap())
    }

    #[test]
    fn local_headers_must_agree_with_the_central_directory() {
        let data = [5u8; 100];
        let crc = crc32fast::hash(&data);
        let zip64 = |size: u64| {
            [&ZIP64_EXTRA.to_le_bytes()[..], &16u16.to_le_bytes(), &size.to_le_bytes(), &size.to_le_bytes()].concat()
        };
        let deferred = DATA_DESCRIPTOR | UTF8_NAMES;
        // What this writer writes, what PyTorch writes (bit 3, zeros), and sizes in a zip64 field.
        let fine = [
            (local_header(UTF8_NAMES, crc, [100, 100], &[]), UTF8_NAMES),
            (local_header(deferred, 0, [0, 0], &[]), deferred),
            (local_header(UTF8_NAMES, crc, [u32::MAX, u32::MAX], &zip64(100)), UTF8_NAMES),
        ];
        for (header, flags) in fine {
            assert_eq!(read_behind(header, flags, &data).unwrap(), data);
        }
        let refused = [
            (local_header(UTF8_NAMES, 0, [0, 0], &[]), UTF8_NAMES, "size or CRC"),
            (local_header(UTF8_NAMES, crc, [10, 10], &[]), UTF8_NAMES, "size or CRC"),
            (local_header(UTF8_NAMES, crc ^ 1, [100, 100], &[]), UTF8_NAMES, "size or CRC"),
            (local_header(deferred, 0, [10, 0], &[]), deferred, "size or CRC"),
            (local_header(UTF8_NAMES, crc, [u32::MAX, u32::MAX], &zip64(10)), UTF8_NAMES, "size or CRC"),
            (local_header(UTF8_NAMES, crc, [u32::MAX, u32::MAX], &[]), UTF8_NAMES, "damaged"),
            (local_header(deferred, 0, [0, 0], &[]), UTF8_NAMES, "other flags"),
        ];
        for (header, flags, phrase) in refused {
            match read_behind(header, flags, &data) {
                Err(Fault::Archive(reason)) => assert!(reason.contains(phrase) && reason.contains("a/x"), "{reason}"),
                other => panic!("{phrase}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_entry_is_read_at_most_once_per_byte_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let mut zip = ZipWriter::new(File::create(&path).unwrap());
        zip.add("a/big", &[1u8; 4000]).unwrap();
        zip.finish().unwrap();
        let mut zip = ZipReader::open(File::open(&path).unwrap()).unwrap();
        assert!(zip.read("a/big").is_ok());
        match zip.read("a/big") {
            Err(Fault::Archive(reason)) => assert!(reason.contains("more bytes out of the archive"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}

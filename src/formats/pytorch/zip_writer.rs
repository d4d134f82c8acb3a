//! Writing the zip container of torch.save: stored entries, each entry's data aligned to 64
//! bytes as PyTorch does (its mmap loading needs that), the sizes and CRC in the local header,
//! and a zip64 central directory.

use std::io::Write;

use super::archive::{
    Entry, ALIGNMENT, CENTRAL_HEADER, DOS_DATE, END_OF_CENTRAL_DIRECTORY, EOCD_LEN, LOCAL_HEADER, LOCAL_HEADER_LEN,
    PADDING_EXTRA, UTF8_NAMES, VERSION, ZIP64_END_OF_CENTRAL_DIRECTORY, ZIP64_EOCD_LEN, ZIP64_EXTRA, ZIP64_LOCATOR,
    ZIP64_LOCATOR_LEN,
};

/// Writes a zip archive entry by entry, each entry's data aligned to 64 bytes.
pub(super) struct ZipWriter<W: Write> {
    out: W,
    offset: u64,
    written: Vec<(String, Entry)>,
}

fn too_long(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} is too long for a zip archive"))
}

impl<W: Write> ZipWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, offset: 0, written: Vec::new() }
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    pub fn add(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let name_len = u16::try_from(name.len()).map_err(|_| too_long("an entry name"))?;
        let size = data.len() as u64;
        let large = size >= u64::from(u32::MAX);
        let mut extra = Vec::new();
        if large {
            extra.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
            extra.extend_from_slice(&16u16.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
        }
        // PyTorch's padding: an extra field `FB` of `Z`s that ends where the data is aligned.
        let unpadded = self.offset + LOCAL_HEADER_LEN + u64::from(name_len) + extra.len() as u64 + 4;
        let padding = (ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT;
        extra.extend_from_slice(&PADDING_EXTRA.to_le_bytes());
        extra.extend_from_slice(&(padding as u16).to_le_bytes());
        extra.resize(extra.len() + padding as usize, b'Z');
        let crc = crc32fast::hash(data);
        let size32 = if large { u32::MAX } else { size as u32 };
        let local_header = self.offset;
        let mut header = Vec::with_capacity(LOCAL_HEADER_LEN as usize);
        header.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
        for field in [VERSION, UTF8_NAMES, 0, 0, DOS_DATE] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size32, size32] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        header.extend_from_slice(&name_len.to_le_bytes());
        header.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        self.put(&header)?;
        self.put(name.as_bytes())?;
        self.put(&extra)?;
        let entry =
            Entry { local_header, data: self.offset, compressed: size, size, crc, flags: UTF8_NAMES, method: 0 };
        self.put(data)?;
        self.written.push((name.to_string(), entry));
        Ok(())
    }

    /// Writes the central directory (every entry with a zip64 extra field) and the end
    /// records, and gives the output back.
    pub fn finish(mut self) -> std::io::Result<W> {
        let start = self.offset;
        let mut central = Vec::new();
        for (name, entry) in &self.written {
            central.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
            for field in [VERSION, VERSION, entry.flags, entry.method, 0, DOS_DATE] {
                central.extend_from_slice(&field.to_le_bytes());
            }
            for field in [entry.crc, u32::MAX, u32::MAX] {
                central.extend_from_slice(&field.to_le_bytes());
            }
            for field in [name.len() as u16, 28, 0, 0, 0] {
                central.extend_from_slice(&field.to_le_bytes());
            }
            central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            central.extend_from_slice(&u32::MAX.to_le_bytes()); // local header: in the zip64 field
            central.extend_from_slice(name.as_bytes());
            central.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
            central.extend_from_slice(&24u16.to_le_bytes());
            for field in [entry.size, entry.size, entry.local_header] {
                central.extend_from_slice(&field.to_le_bytes());
            }
        }
        self.put(&central)?;
        let count = self.written.len() as u64;
        let size = central.len() as u64;
        let zip64_record = self.offset;
        let mut end = Vec::with_capacity(ZIP64_EOCD_LEN + ZIP64_LOCATOR_LEN + EOCD_LEN);
        end.extend_from_slice(&ZIP64_END_OF_CENTRAL_DIRECTORY.to_le_bytes());
        end.extend_from_slice(&((ZIP64_EOCD_LEN - 12) as u64).to_le_bytes());
        end.extend_from_slice(&VERSION.to_le_bytes());
        end.extend_from_slice(&VERSION.to_le_bytes());
        end.extend_from_slice(&[0u8; 8]); // disks
        for field in [count, count, size, start] {
            end.extend_from_slice(&field.to_le_bytes());
        }
        end.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&zip64_record.to_le_bytes());
        end.extend_from_slice(&1u32.to_le_bytes());
        let count16 = u16::try_from(count).unwrap_or(u16::MAX);
        end.extend_from_slice(&END_OF_CENTRAL_DIRECTORY.to_le_bytes());
        end.extend_from_slice(&[0u8; 4]); // disks
        end.extend_from_slice(&count16.to_le_bytes());
        end.extend_from_slice(&count16.to_le_bytes());
        end.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes());
        end.extend_from_slice(&u32::try_from(start).unwrap_or(u32::MAX).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes()); // comment
        self.put(&end)?;
        Ok(self.out)
    }
}

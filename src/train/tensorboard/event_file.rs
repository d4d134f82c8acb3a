//! An event file: TFRecord framing of `Event` messages, with masked CRC-32C checksums.
//!
//! Each record is `length: u64 LE`, `masked_crc32c(length bytes): u32 LE`, the message, and
//! `masked_crc32c(message): u32 LE` (TensorFlow's `core/lib/io/record_writer.cc`). A file is
//! only ever appended to, a whole batch of records in one `write`: a process killed mid-write
//! leaves at most one torn record at the end, which readers (TensorBoard's, and
//! [`read_records`]) treat as the end of the file. A resumed run writes a new file and never
//! touches an old one.
//!
//! Files are named as `SummaryWriter` names them,
//! `events.out.tfevents.<seconds, 10 digits>.<host>.<pid>.<counter>`, and TensorBoard reads the
//! files of a folder in the order of their names: [`EventFile::create`] takes a second later
//! than any file already there, so that a resume within the same second still sorts after the
//! file it continues.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;

use crate::train::tensorboard::proto::Event;

/// The start of every event file's name; TensorBoard reads the files whose names contain it.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// TFRecord's checksum: CRC-32C (Castagnoli), rotated right by 15 bits plus a constant, so that
/// the CRC of data that itself holds CRCs stays well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one framed record holding `data` to `out`.
pub fn append_record(out: &mut Vec<u8>, data: &[u8]) {
    let length = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// A record whose checksum does not match: the file was damaged, not merely cut short.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("event file record at byte {offset} is damaged (its {part} checksum does not match)")]
pub struct DamagedRecord {
    pub offset: usize,
    pub part: &'static str,
}

/// The complete records of an event file's bytes, and whether a torn record (a cut-short write)
/// follows them.
#[derive(Debug, PartialEq)]
pub struct Records<'a> {
    pub complete: Vec<&'a [u8]>,
    pub torn_tail: bool,
}

/// Splits `bytes` into records, checking both checksums of each.
pub fn read_records(bytes: &[u8]) -> Result<Records<'_>, DamagedRecord> {
    let mut complete = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 12) else { break };
        let (length, header_crc) = header.split_at(8);
        if masked_crc32c(length) != u32::from_le_bytes(header_crc.try_into().expect("4 bytes")) {
            return Err(DamagedRecord { offset: at, part: "length" });
        }
        let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
        let end = usize::try_from(length).ok().and_then(|n| (at + 12).checked_add(n)).filter(|&e| e + 4 <= bytes.len());
        let Some(end) = end else { break };
        let data = &bytes[at + 12..end];
        if masked_crc32c(data) != u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes")) {
            return Err(DamagedRecord { offset: at, part: "data" });
        }
        complete.push(data);
        at = end + 4;
    }
    Ok(Records { complete, torn_tail: at < bytes.len() })
}

/// The events of an event file's bytes (the complete records; a torn one at the end is left out).
pub fn read_events(bytes: &[u8]) -> anyhow::Result<Vec<Event>> {
    read_records(bytes)?.complete.into_iter().map(|record| Event::decode(record).map_err(anyhow::Error::from)).collect()
}

/// `SummaryWriter`'s file name.
pub fn file_name(seconds: u64, host: &str, pid: u32, counter: u64) -> String {
    format!("{FILE_PREFIX}{seconds:010}.{host}.{pid}.{counter}")
}

/// The event files of `dir`, in the order TensorBoard reads them (by name).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(FILE_PREFIX))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    Ok(files)
}

/// The seconds field of an event file's name.
fn name_seconds(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(FILE_PREFIX)?.split('.').next()?.parse().ok()
}

/// The host name, as Python's `socket.gethostname()` gives it.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let name = if status == 0 {
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        String::new()
    };
    // A name goes into a file name: no separators, and never empty.
    let name: String = name.chars().filter(|c| !matches!(c, '/' | '\0')).collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// An event file being written.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    file: File,
}

impl EventFile {
    /// Creates a new event file in `dir` (never an existing one) and writes `first` into it.
    pub fn create(dir: &Path, first: &Event) -> std::io::Result<Self> {
        // SummaryWriter's counter of the files one process opened.
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let latest = list(dir)?.iter().filter_map(|p| name_seconds(p)).max();
        let seconds = latest.map_or(now, |latest| now.max(latest + 1));
        let name = file_name(seconds, &host_name(), std::process::id(), OPENED.fetch_add(1, Ordering::SeqCst));
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new().append(true).create_new(true).open(&path)?;
        let created = Self { path, file };
        created.append(std::slice::from_ref(first))?;
        Ok(created)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `events` with one write, so that readers see them at once.
    pub fn append(&self, events: &[Event]) -> std::io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for event in events {
            append_record(&mut bytes, &event.encode_to_vec());
        }
        (&self.file).write_all(&bytes)
    }

    /// Puts what was written on the disk (at each checkpoint, so that a power loss cannot leave
    /// the event file behind the checkpoint a resume starts from).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tensorboard::proto;

    /// The check value of CRC-32C (RFC 3720's iSCSI CRC; "123456789" is the catalogue's input).
    #[test]
    fn crc32c_of_the_check_string_is_the_catalogued_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // TFRecord's mask of it, by hand: rotate right by 15, add 0xa282ead8.
        assert_eq!(masked_crc32c(b"123456789"), 0xE306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    /// The bytes of a record of "abc" as TensorBoard's own `RecordWriter`
    /// (`tensorboard.summary.writer.record_writer`) writes them.
    #[test]
    fn a_record_is_framed_as_tensorboard_frames_it() {
        let mut out = Vec::new();
        append_record(&mut out, b"abc");
        let expected: &[u8] = &[
            3, 0, 0, 0, 0, 0, 0, 0, // length
            0xb0, 0x99, 0x49, 0x0e, // masked CRC of the length
            b'a', b'b', b'c', //
            0x6e, 0x57, 0xf1, 0x21, // masked CRC of the data
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn records_cut_anywhere_read_as_the_complete_ones_before_the_cut() {
        let mut bytes = Vec::new();
        for data in [&b"first"[..], b"", b"third record"] {
            append_record(&mut bytes, data);
        }
        let ends = [5 + 16, 5 + 16 + 16, bytes.len()];
        for cut in 0..=bytes.len() {
            let records = read_records(&bytes[..cut]).unwrap();
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(records.complete.len(), whole, "cut at {cut}");
            assert_eq!(records.torn_tail, !ends.contains(&cut) && cut != 0, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_is_a_damaged_record_not_a_short_file() {
        let mut bytes = Vec::new();
        append_record(&mut bytes, b"payload");
        for (at, part) in [(3, "length"), (14, "data")] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert_eq!(read_records(&damaged), Err(DamagedRecord { offset: 0, part }));
        }
    }

    #[test]
    fn files_are_named_as_summary_writer_names_them_and_sort_after_existing_ones() {
        assert_eq!(file_name(1_700_000_000, "host", 42, 0), "events.out.tfevents.1700000000.host.42.0");
        let dir = tempfile::tempdir().unwrap();
        // A file from the future (a clock set back, or a resume within the same second).
        let future = dir.path().join(file_name(4_000_000_000, "other", 99_999, 3));
        std::fs::write(&future, b"").unwrap();
        let file = EventFile::create(dir.path(), &proto::file_version(1.0)).unwrap();
        assert_eq!(name_seconds(file.path()), Some(4_000_000_001));
        assert_eq!(list(dir.path()).unwrap(), vec![future, file.path().to_path_buf()]);
        let events = read_events(&std::fs::read(file.path()).unwrap()).unwrap();
        assert_eq!(events, vec![proto::file_version(1.0)]);
    }
}

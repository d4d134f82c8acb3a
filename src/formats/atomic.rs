//! Atomic file writes: a file is written to a hidden temporary file beside its target
//! (`.NAME.tmp-PID`, which a run folder recognises as a leftover), synced, and renamed over the
//! target, and the folder is synced so that the rename reaches the disk too. A reader sees the
//! old file or the whole new one, never part of one; on any error the temporary file is removed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary file that stands beside `path` while it is written.
fn temp_path(path: &Path) -> PathBuf {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent_dir(path).join(format!(".{file_name}.tmp-{}", std::process::id()))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes the temporary file of `path` through `write` (buffered) and syncs it; returns its
/// path, for [`rename_synced`]. `io_err` turns an I/O error into the caller's error. On any
/// error the temporary file is removed.
pub fn write_synced_temp_with<E>(
    path: &Path,
    io_err: impl Fn(std::io::Error) -> E,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<PathBuf, E> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp).map_err(&io_err)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(&io_err)
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// [`write_synced_temp_with`] for bytes already in memory.
pub fn write_synced_temp(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    write_synced_temp_with(path, |e| e, |out| out.write_all(bytes))
}

/// Renames `from` over `to` and syncs their folder, so that the rename itself reaches the disk.
pub fn rename_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    if let Ok(d) = File::open(parent_dir(to)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `path` atomically through `write`: a synced temporary file, then a rename.
pub fn write_atomically_with<E>(
    path: &Path,
    io_err: impl Fn(std::io::Error) -> E,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = write_synced_temp_with(path, &io_err, write)?;
    rename_synced(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |e| e, |out| out.write_all(bytes))
}

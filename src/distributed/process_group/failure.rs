//! Failures of the C++ side (`src/ffi/c10d.cpp`): its status and message, and what they mean
//! as a [`DistError`] that says what to check (a busy port, an unreachable master, a lost peer,
//! a timeout).

use std::ffi::{c_char, c_int, CStr};
use std::time::Duration;

use super::{ffi, Backend};
use crate::distributed::error::{DistError, Result};

/// The outcome of a C++ call: its status and, on failure, the exception's message.
pub(super) struct Failure {
    pub(super) status: c_int,
    pub(super) message: String,
}

// Statuses of src/ffi/c10d.cpp.
const STATUS_NETWORK: c_int = 2;
const STATUS_STORE: c_int = 3;
const STATUS_UNAVAILABLE: c_int = 5;

/// Calls a C++ function that reports failures through a status and a `char**` message.
pub(super) fn call(f: impl FnOnce(*mut *mut c_char) -> c_int) -> std::result::Result<(), Failure> {
    let mut message: *mut c_char = std::ptr::null_mut();
    let status = f(&mut message);
    if status == 0 {
        return Ok(());
    }
    let message = if message.is_null() {
        format!("libtorch failed with status {status} and no message")
    } else {
        // SAFETY: a NUL-terminated string that c10d.cpp malloc'd for us; freed right after.
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().trim().to_string();
        unsafe { ffi::tch_alexnet_c10d_free(message.cast()) };
        text
    };
    Err(Failure { status, message })
}

pub(super) fn duration_ms(timeout: Duration) -> Result<i64> {
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 {
        return Err(DistError::InvalidOptions(format!("the timeout must be at least 1 ms, not {timeout:?}")));
    }
    Ok(ms)
}

/// Seconds, as people write them: "30 s", "0.5 s".
fn secs(timeout: Duration) -> String {
    let s = timeout.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// Names what went wrong while joining the group, from c10d's exception class and message.
pub(super) fn rendezvous_error(
    failure: Failure,
    rank: usize,
    world_size: usize,
    addr: &str,
    port: u16,
    timeout: Duration,
    backend: Backend,
) -> DistError {
    let Failure { status, message } = failure;
    let lower = message.to_lowercase();
    let (addr, timeout_text) = (addr.to_string(), secs(timeout));
    if status == STATUS_UNAVAILABLE {
        return backend.unavailable();
    }
    if lower.contains("eaddrinuse") || lower.contains("address already in use") {
        return DistError::PortInUse { addr, port, message };
    }
    let timed_out = lower.contains("timed out") || lower.contains("timeout");
    if status == STATUS_NETWORK && rank != 0 {
        return DistError::MasterUnreachable { addr, port, timeout: timeout_text, message };
    }
    if timed_out || status == STATUS_STORE {
        return DistError::RendezvousTimeout { rank, world_size, addr, port, timeout: timeout_text, message };
    }
    DistError::Failed { op: format!("joining the {backend} process group at {addr}:{port}"), rank, world_size, message }
}

/// Names what went wrong in a collective or store call.
pub(super) fn op_error(failure: Failure, op: &str, rank: usize, world_size: usize, timeout: Duration) -> DistError {
    let Failure { status, message } = failure;
    let lower = message.to_lowercase();
    // With two ranks, "the peer" has a number.
    let peer = if world_size == 2 { format!("rank {}", 1 - rank) } else { "a peer".to_string() };
    let op = op.to_string();
    if lower.contains("connection closed by peer")
        || lower.contains("connection reset")
        || lower.contains("broken pipe")
        || lower.contains("connection refused")
        || lower.contains("eof")
    {
        return DistError::PeerLost { op, rank, world_size, peer, message };
    }
    if lower.contains("timed out") || lower.contains("timeout") || status == STATUS_STORE {
        return DistError::Timeout { op, rank, world_size, peer, timeout: secs(timeout), message };
    }
    if status == STATUS_NETWORK {
        return DistError::PeerLost { op, rank, world_size, peer, message };
    }
    DistError::Failed { op, rank, world_size, message }
}

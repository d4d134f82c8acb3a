//! [`ProcessGroup`]: a safe handle on a libtorch c10d process group (`src/ffi/c10d.cpp`), the
//! object `torch.distributed.init_process_group` creates in Python: rank 0 hosts a TCPStore at
//! `master_addr:master_port`, every rank connects to it, and the backend (Gloo on the CPU,
//! NCCL on CUDA) runs the collectives. Every call is bounded by the group's timeout.
//!
//! A group has a device of its own ([`ProcessGroupOptions::device`]): every tensor of its
//! collectives must be there, or the call is refused before anything is sent. NCCL takes
//! CUDA tensors only; Gloo takes both, so for Gloo the device is this crate's promise to
//! itself, which keeps a job that trains on the GPU from sending CPU tensors to NCCL.

use std::ffi::{c_char, c_int, c_void, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Tensor};

use super::error::{DistError, Result};

mod backend;
mod failure;
mod ffi;
mod work;

pub use backend::Backend;
pub use work::Work;

use failure::{call, duration_ms, op_error, rendezvous_error, Failure};

/// What [`ProcessGroup::new`] needs; the same on every rank but `rank`.
#[derive(Debug, Clone)]
pub struct ProcessGroupOptions {
    /// This process's rank, `0..world_size`. Rank 0 hosts the store.
    pub rank: usize,
    /// The number of processes.
    pub world_size: usize,
    /// Where rank 0 listens and the others connect (torchrun's `MASTER_ADDR`).
    pub master_addr: String,
    /// torchrun's `MASTER_PORT`.
    pub master_port: u16,
    /// The bound on every wait: the rendezvous, each collective, each store read.
    pub timeout: Duration,
    pub backend: Backend,
    /// Where every tensor of the group's collectives lives; others are refused before the
    /// collective starts. NCCL needs a CUDA device (this rank's GPU); Gloo takes any.
    pub device: Device,
}

/// A c10d process group. Collectives must be called in the same order on every rank, as in
/// PyTorch; the handle can move to another thread but not be shared between threads, so one
/// thread issues them all. After a failed collective the ranks no longer agree on what comes
/// next: drop the group (PyTorch too has no way back but a new group).
///
/// Timeouts are c10d's: a collective or a store read fails once it has waited `timeout`; a
/// rank that connects to the master retries until then and may take up to about twice as
/// long before it gives up; rank 0 waits `timeout` (rounded up to whole seconds) for the
/// others to connect.
pub struct ProcessGroup {
    raw: NonNull<ffi::Pg>,
    rank: usize,
    world_size: usize,
    timeout: Duration,
    backend: Backend,
    device: Device,
}

// SAFETY: c10d's backends and stores lock their own state, and hold no thread-local state
// that ties them to the thread that created them.
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("backend", &self.backend)
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("timeout", &self.timeout)
            .field("device", &self.device)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the group: rank 0 starts the TCPStore and waits for every rank to connect; the
    /// others connect to it, retrying until the timeout; then the backend connects every pair
    /// of ranks. Fails, within about `timeout`, when a rank does not show up, the master
    /// cannot be reached or its port is taken, or at once when NCCL is given a device other
    /// than a GPU.
    pub fn new(options: ProcessGroupOptions) -> Result<Self> {
        let ProcessGroupOptions { rank, world_size, master_addr, master_port, timeout, backend, device } = options;
        if world_size == 0 || rank >= world_size || world_size > c_int::MAX as usize {
            return Err(DistError::InvalidOptions(format!(
                "rank {rank} does not fit a world of {world_size} process(es) (ranks are 0..world_size)"
            )));
        }
        if backend == Backend::Nccl && !device.is_cuda() {
            return Err(DistError::InvalidOptions(format!(
                "NCCL runs collectives on CUDA tensors only, not on {}",
                crate::device::device_name(device)
            )));
        }
        let timeout_ms = duration_ms(timeout)?;
        let addr = CString::new(master_addr.as_str())
            .map_err(|_| DistError::InvalidOptions(format!("master address {master_addr:?} contains a NUL byte")))?;
        if !backend.is_available() {
            return Err(backend.unavailable());
        }
        let mut raw: *mut ffi::Pg = std::ptr::null_mut();
        let result = call(|message| {
            // SAFETY: valid arguments (checked above); `raw` receives an owned group on success.
            unsafe {
                ffi::tch_alexnet_c10d_pg_new(
                    addr.as_ptr(),
                    master_port,
                    rank as c_int,
                    world_size as c_int,
                    timeout_ms,
                    backend.code(),
                    &mut raw,
                    message,
                )
            }
        });
        if let Err(failure) = result {
            return Err(rendezvous_error(failure, rank, world_size, &master_addr, master_port, timeout, backend));
        }
        let raw = NonNull::new(raw).ok_or_else(|| DistError::Failed {
            op: "creating the process group".into(),
            rank,
            world_size,
            message: "libtorch returned no group".into(),
        })?;
        Ok(ProcessGroup { raw, rank, world_size, timeout, backend, device })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The bound on every wait of this group.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The device of every tensor of this group's collectives.
    pub fn device(&self) -> Device {
        self.device
    }

    /// What a collective of this group checks before it starts: `tensor` is defined, on the
    /// group's device and contiguous. A caller that launches several collectives checks
    /// them all first, so that a refusal never leaves the ranks disagreeing on what was sent.
    pub fn check_tensor(&self, tensor: &Tensor, what: &str) -> Result<()> {
        let bad = |reason: String| Err(DistError::BadTensor { what: what.to_string(), reason });
        if !tensor.defined() {
            return bad("the tensor is undefined".into());
        }
        if tensor.device() != self.device {
            return Err(DistError::WrongDevice {
                what: what.to_string(),
                found: crate::device::device_name(tensor.device()),
                expected: crate::device::device_name(self.device),
                backend: self.backend,
            });
        }
        if !tensor.is_contiguous() {
            return bad(format!("the tensor (shape {:?}) is not contiguous", tensor.size()));
        }
        Ok(())
    }

    /// Copies each tensor of rank `root` into the same tensor of every other rank, in place.
    /// The tensors must match across ranks in order, shape and dtype. All are checked before
    /// the first is sent.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        if root >= self.world_size {
            return Err(DistError::InvalidOptions(format!(
                "broadcast from rank {root}, but the world has {} rank(s)",
                self.world_size
            )));
        }
        let what = |i: usize| format!("broadcast of tensor {i}");
        for (i, tensor) in tensors.iter().enumerate() {
            self.check_tensor(tensor, &what(i))?;
        }
        let works = tensors
            .iter()
            .enumerate()
            .map(|(i, tensor)| self.start_broadcast(tensor, root, &what(i)))
            .collect::<Result<Vec<_>>>()?;
        works.into_iter().try_for_each(Work::wait)
    }

    /// Starts one broadcast into `tensor`, which the caller waits for before using `tensor`.
    fn start_broadcast(&self, tensor: &Tensor, root: usize, what: &str) -> Result<Work<'_>> {
        self.check_tensor(tensor, what)?;
        self.launch(what, |pg, work, message| {
            // SAFETY: the group and the tensor are alive; c10d keeps its own reference to the
            // tensor until the work completes.
            unsafe { ffi::tch_alexnet_c10d_broadcast(pg, tensor.as_ptr() as *mut c_void, root as c_int, work, message) }
        })
    }

    /// Sums `tensor` over all ranks, in place: afterwards every rank holds the same sum.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<()> {
        self.all_reduce_sum_start(tensor)?.wait()
    }

    /// Averages `tensor` over all ranks, in place (a sum, then a division by the world size:
    /// Gloo has no average of its own).
    pub fn all_reduce_mean(&self, tensor: &Tensor) -> Result<()> {
        self.all_reduce_sum(tensor)?;
        let mut tensor = tensor.shallow_clone();
        let _ = tensor.f_div_scalar_(self.world_size as f64).map_err(|e| DistError::BadTensor {
            what: "all_reduce_mean".into(),
            reason: format!("cannot divide by the world size: {e}"),
        })?;
        Ok(())
    }

    /// Starts summing `tensor` over all ranks, in place; the sum is there once the returned
    /// [`Work`] has been waited for. Several can be in flight, completing in launch order.
    /// The backend writes `tensor` until then, so the [`Work`] borrows it mutably: it can be
    /// neither read nor dropped before the work is waited for (or dropped, which waits).
    ///
    /// ```compile_fail,E0505
    /// # fn f(group: &tch_alexnet::distributed::ProcessGroup, mut sums: tch::Tensor) {
    /// let work = group.all_reduce_sum_async(&mut sums).unwrap();
    /// drop(sums); // refused: the collective may still be writing it
    /// work.wait().unwrap();
    /// # }
    /// ```
    pub fn all_reduce_sum_async<'a>(&'a self, tensor: &'a mut Tensor) -> Result<Work<'a>> {
        self.all_reduce_sum_start(tensor)
    }

    /// Starts the all-reduce of `tensor`; the caller waits for it before using `tensor`.
    fn all_reduce_sum_start(&self, tensor: &Tensor) -> Result<Work<'_>> {
        self.check_tensor(tensor, "all_reduce_sum")?;
        self.launch("all_reduce_sum", |pg, work, message| {
            // SAFETY: as in `start_broadcast`.
            unsafe { ffi::tch_alexnet_c10d_all_reduce_sum(pg, tensor.as_ptr() as *mut c_void, work, message) }
        })
    }

    /// Returns once every rank has called `barrier` (on Gloo, also once this rank's earlier
    /// collectives have completed).
    pub fn barrier(&self) -> Result<()> {
        self.launch("barrier", |pg, work, message| {
            // SAFETY: the group is alive.
            unsafe { ffi::tch_alexnet_c10d_barrier(pg, work, message) }
        })?
        .wait()
    }

    /// Stores `value` under `key` in the group's TCPStore, where every rank can read it. The
    /// keys live apart from the backend's own.
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<()> {
        let op = format!("store_set({key:?})");
        let c_key = self.store_key(key, &op)?;
        call(|message| {
            // SAFETY: the group is alive; `value` is read during the call only.
            unsafe {
                ffi::tch_alexnet_c10d_store_set(self.raw.as_ptr(), c_key.as_ptr(), value.as_ptr(), value.len(), message)
            }
        })
        .map_err(|failure| self.op_error(failure, &op))
    }

    /// The value of `key` in the group's TCPStore, waiting for some rank to set it, at most
    /// the group's timeout.
    pub fn store_get(&self, key: &str) -> Result<Vec<u8>> {
        let op = format!("store_get({key:?})");
        let c_key = self.store_key(key, &op)?;
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len: usize = 0;
        call(|message| {
            // SAFETY: the group is alive; `data` receives a malloc'd buffer of `len` bytes.
            unsafe { ffi::tch_alexnet_c10d_store_get(self.raw.as_ptr(), c_key.as_ptr(), &mut data, &mut len, message) }
        })
        .map_err(|failure| self.op_error(failure, &op))?;
        if data.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: c10d.cpp filled `len` bytes at `data`, which we own and free right after.
        let value = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        unsafe { ffi::tch_alexnet_c10d_free(data.cast()) };
        Ok(value)
    }

    fn store_key(&self, key: &str, op: &str) -> Result<CString> {
        CString::new(key).map_err(|_| DistError::InvalidOptions(format!("{op}: the key contains a NUL byte")))
    }

    /// Starts a collective through `start(group, &mut work, &mut message)`.
    fn launch(
        &self,
        op: &str,
        start: impl FnOnce(*mut ffi::Pg, *mut *mut ffi::Work, *mut *mut c_char) -> c_int,
    ) -> Result<Work<'_>> {
        let mut work: *mut ffi::Work = std::ptr::null_mut();
        call(|message| start(self.raw.as_ptr(), &mut work, message)).map_err(|failure| self.op_error(failure, op))?;
        let raw = NonNull::new(work).ok_or_else(|| DistError::Failed {
            op: op.to_string(),
            rank: self.rank,
            world_size: self.world_size,
            message: "libtorch returned no work handle".into(),
        })?;
        Ok(Work { raw: Some(raw), group: self, op: op.to_string(), _tensor: PhantomData })
    }

    /// Wraps a failed collective or store call with what it was and who we are.
    fn op_error(&self, failure: Failure, op: &str) -> DistError {
        op_error(failure, op, self.rank, self.world_size, self.timeout)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` is owned and freed once; collectives still queued end within the timeout.
        unsafe { ffi::tch_alexnet_c10d_pg_free(self.raw.as_ptr()) }
    }
}

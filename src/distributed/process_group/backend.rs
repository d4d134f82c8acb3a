//! [`Backend`]: the library that runs a group's collectives (Gloo on the CPU, NCCL on CUDA),
//! whether this build has it, and the device its tensors live on by default.

use std::ffi::c_int;

use tch::Device;

use super::ffi;
use crate::distributed::error::DistError;

/// The library that runs the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Gloo: CPU tensors (and CUDA tensors, staged through the host). Needs gloo's headers at
    /// build time (`libgloo-dev`, which `scripts/setup` installs).
    Gloo,
    /// NCCL: CUDA tensors, one GPU per rank (the caller puts rank `LOCAL_RANK`'s tensors on
    /// `cuda:LOCAL_RANK`). Needs libtorch_cuda, `nccl.h` and the CUDA toolkit's headers at
    /// build time (see `build.rs`). A collective that outlives the timeout is aborted by
    /// libtorch's watchdog, which by default ends the process (NCCL cannot cancel it).
    /// Not yet run on a GPU.
    Nccl,
}

impl Backend {
    /// The name PyTorch uses (`"gloo"`, `"nccl"`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build can create a group of this backend.
    pub fn is_available(self) -> bool {
        // SAFETY: a pure query.
        unsafe { ffi::tch_alexnet_c10d_has_backend(self.code()) == 1 }
    }

    pub(super) fn code(self) -> c_int {
        match self {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        }
    }

    /// The device a rank of this backend normally computes on: the CPU for Gloo,
    /// `cuda:local_rank` for NCCL (one GPU per rank, as torchrun's `LOCAL_RANK` says).
    pub fn default_device(self, local_rank: usize) -> Device {
        match self {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(local_rank),
        }
    }

    pub(super) fn unavailable(self) -> DistError {
        match self {
            Backend::Gloo => DistError::GlooUnavailable,
            Backend::Nccl => DistError::NcclUnavailable,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

//! Data-parallel training over several processes, on libtorch's own c10d, the C++ core of
//! `torch.distributed`: the same TCPStore rendezvous, the same Gloo (CPU) and NCCL (CUDA)
//! collectives as PyTorch, bound thinly in `src/ffi/c10d.cpp`. Nothing here reimplements a
//! collective.
//!
//! - [`process_group`]: [`ProcessGroup`], a group joined through rank 0's TCPStore:
//!   broadcast, all-reduce, barrier, and the store's keys; every wait bounded by a timeout,
//!   every tensor on the group's declared device (NCCL: the rank's GPU), checked before sending.
//! - [`gradients`]: [`GradientReducer`] and [`all_reduce_gradients`], DDP's bucketed gradient
//!   averaging.
//! - [`env`]: [`env_rank_info`], torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//!   `MASTER_PORT`.
//! - [`launcher`]: `--nproc-per-node N`, N ranks of this program on one machine, as torchrun.
//! - [`error`]: [`DistError`], what went wrong and what to check.
//!
//! Gloo needs gloo's headers when the crate is built (`libgloo-dev`, installed by
//! `scripts/setup`); without them [`Backend::is_available`] is false and
//! [`ProcessGroup::new`] says so.

pub mod env;
pub mod error;
pub mod gradients;
pub mod launcher;
pub mod process_group;

pub use env::{env_rank_info, RankInfo};
pub use error::{DistError, Result};
pub use gradients::{all_reduce_gradients, GradientReducer, DEFAULT_BUCKET_BYTES};
pub use process_group::{Backend, ProcessGroup, ProcessGroupOptions, Work};

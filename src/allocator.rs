//! The memory allocator of this crate's programs: jemalloc, for libtorch's tensors as well.
//!
//! A CPU training step allocates and frees tensors of tens of megabytes (a batch of 227×227
//! images is 40 MB, conv1's output 74 MB, fc1's weight gradient 151 MB). glibc serves every
//! block above 32 MB with a fresh `mmap`, so each step pays page faults on hundreds of megabytes
//! (`perf` shows them as system time); turning that off (`mallopt`) made steps 10% and
//! evaluation 25% faster, but glibc's single heap then fragmented and the peak resident memory
//! rose 15–25% above the live peak, above PyTorch's. jemalloc reuses freed blocks by size class
//! with little fragmentation. Linked with unprefixed symbols, it also serves libtorch's
//! `posix_memalign`/`free`, so tensors use it too.
//!
//! Measured on the 2-core development machine, training phase of `examples/bench`:
//! peak resident memory 2,060–2,140 MB (glibc + `mallopt`: 2,220–2,570 MB; PyTorch: 2,270 MB)
//! at the same step time.
//!
//! Each program opts in with [`use_jemalloc!`](crate::use_jemalloc) (libraries should not choose
//! the allocator of the programs that use them).

#[cfg(target_os = "linux")]
#[doc(hidden)]
pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options (read from the `malloc_conf` symbol at start-up): keep freed pages
/// (no time-based purging), so that a block freed by one step is reused by the next without
/// page faults; the resident peak is then that of the busiest step, as with glibc + `mallopt`.
#[doc(hidden)]
pub const JEMALLOC_CONF: &[u8] = b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

/// Makes jemalloc, configured as this module explains, the allocator of the program (Rust and
/// libtorch alike) on Linux; does nothing elsewhere. Put it once at the top level of a binary.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[cfg(target_os = "linux")]
        #[global_allocator]
        static GLOBAL_ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        /// Read by jemalloc before `main`.
        #[cfg(target_os = "linux")]
        #[allow(non_upper_case_globals)]
        #[export_name = "malloc_conf"]
        pub static malloc_conf: &'static u8 = &$crate::allocator::JEMALLOC_CONF[0];
    };
}

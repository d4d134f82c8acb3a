//! The C functions of `src/ffi/c10d.cpp`, as Rust declares them.

use std::ffi::{c_char, c_int, c_void};

/// `tch_alexnet_pg` of c10d.cpp.
#[repr(C)]
pub struct Pg {
    _opaque: [u8; 0],
}

/// `tch_alexnet_work` of c10d.cpp.
#[repr(C)]
pub struct Work {
    _opaque: [u8; 0],
}

extern "C" {
    pub fn tch_alexnet_c10d_free(pointer: *mut c_void);
    pub fn tch_alexnet_c10d_has_backend(backend: c_int) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn tch_alexnet_c10d_pg_new(
        master_addr: *const c_char,
        master_port: u16,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        backend: c_int,
        out: *mut *mut Pg,
        error: *mut *mut c_char,
    ) -> c_int;
    pub fn tch_alexnet_c10d_pg_free(pg: *mut Pg);
    /// `tensor` is an `at::Tensor*`, what `Tensor::as_ptr` points to.
    pub fn tch_alexnet_c10d_broadcast(
        pg: *mut Pg,
        tensor: *mut c_void,
        root: c_int,
        out: *mut *mut Work,
        error: *mut *mut c_char,
    ) -> c_int;
    pub fn tch_alexnet_c10d_all_reduce_sum(
        pg: *mut Pg,
        tensor: *mut c_void,
        out: *mut *mut Work,
        error: *mut *mut c_char,
    ) -> c_int;
    pub fn tch_alexnet_c10d_barrier(pg: *mut Pg, out: *mut *mut Work, error: *mut *mut c_char) -> c_int;
    pub fn tch_alexnet_c10d_work_wait(work: *mut Work, timeout_ms: i64, error: *mut *mut c_char) -> c_int;
    pub fn tch_alexnet_c10d_work_free(work: *mut Work);
    pub fn tch_alexnet_c10d_store_set(
        pg: *mut Pg,
        key: *const c_char,
        data: *const u8,
        len: usize,
        error: *mut *mut c_char,
    ) -> c_int;
    pub fn tch_alexnet_c10d_store_get(
        pg: *mut Pg,
        key: *const c_char,
        data: *mut *mut u8,
        len: *mut usize,
        error: *mut *mut c_char,
    ) -> c_int;
}

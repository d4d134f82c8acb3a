//! Mixed precision on CUDA in bf16, as `--amp` promises.
//!
//! `tch::autocast` switches libtorch's autocast on and off, but libtorch's CUDA autocast dtype
//! defaults to fp16, whose narrow range needs a gradient scaler. A few lines of C++
//! (`src/ffi/autocast.cpp`, compiled by `build.rs` against libtorch's headers) select bf16, which
//! has fp32's range and needs none.

extern "C" {
    fn tch_alexnet_set_cuda_autocast_bf16(bf16: i32) -> i32;
    fn tch_alexnet_cuda_autocast_is_bf16() -> i32;
}

/// Makes CUDA autocast compute in bf16 (`true`) or fp16 (`false`) from now on.
pub fn set_cuda_autocast_bf16(bf16: bool) -> anyhow::Result<()> {
    // SAFETY: the C++ side catches every exception and only sets a global libtorch option.
    let status = unsafe { tch_alexnet_set_cuda_autocast_bf16(i32::from(bf16)) };
    anyhow::ensure!(status == 0, "libtorch refused to set the CUDA autocast dtype");
    Ok(())
}

/// Whether CUDA autocast currently computes in bf16.
pub fn cuda_autocast_is_bf16() -> bool {
    // SAFETY: reads a global libtorch option.
    unsafe { tch_alexnet_cuda_autocast_is_bf16() == 1 }
}

//! The Rust side of `src/ffi/*.cpp`: what this crate needs from libtorch that tch does not bind.
//! `build.rs` compiles the C++ against the same libtorch headers as tch; every function is
//! `noexcept`, catches C++ exceptions and reports them as a status (getters write their value
//! through a pointer), which the functions here turn into errors.
//!
//! - [`autocast`]: bf16 autocast regions on the CPU and CUDA (`--amp`). `tch::autocast` has
//!   only the legacy CUDA switch (and does nothing where CUDA is absent), and libtorch's CUDA
//!   autocast dtype defaults to fp16, whose narrow range needs a gradient scaler.
//! - Dropping a gradient, as PyTorch's `zero_grad()` does by default (`set_to_none=True`):
//!   tch can only zero it in place, which keeps every gradient allocated through the next
//!   forward pass and makes backward add into it instead of handing its result over.
//! - Setting a gradient to a given tensor: data-parallel training leaves the averaged gradients
//!   in its all-reduce buckets and hands them to the parameters as views (DDP's
//!   `gradient_as_bucket_view`), where tch could only copy them back.
//! - oneDNN on or off for CPU convolutions (`torch.backends.mkldnn.enabled`), which
//!   `scripts/bench` compares.
//! - [`optim`]: the tensor operators of `torch.optim` that tch binds without their scalar
//!   argument, and the fused Adam kernels.

pub mod autocast;
pub mod optim;

pub use autocast::{autocast_bf16, autocast_state, AutocastBf16};

use tch::Tensor;

extern "C" {
    /// `tensor` is an `at::Tensor*` (= `torch::Tensor*`), what `Tensor::as_mut_ptr` points to.
    fn tch_alexnet_clear_grad(tensor: *mut std::ffi::c_void) -> i32;
    fn tch_alexnet_set_grad(tensor: *mut std::ffi::c_void, grad: *const std::ffi::c_void) -> i32;
    fn tch_alexnet_set_onednn_enabled(enabled: i32) -> i32;
    fn tch_alexnet_onednn_enabled(enabled: *mut i32) -> i32;
}

fn check(status: i32, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(status == 0, "libtorch refused to {what}");
    Ok(())
}

/// Reads a flag through a getter of the C++ side, which writes it (0 or 1) and returns a status.
fn get_flag(getter: unsafe extern "C" fn(*mut i32) -> i32, what: &str) -> anyhow::Result<bool> {
    let mut value = 0;
    // SAFETY: `value` is a valid `int` for the call; the getter only writes it.
    check(unsafe { getter(&mut value) }, what)?;
    Ok(value == 1)
}

/// Drops the gradient of `tensor` (PyTorch: `tensor.grad = None`).
pub fn clear_grad(tensor: &mut Tensor) -> anyhow::Result<()> {
    // SAFETY: `tensor` is alive for the call; the C++ side only resets its gradient.
    check(unsafe { tch_alexnet_clear_grad(tensor.as_mut_ptr().cast()) }, "drop a gradient")
}

/// Makes `grad` the gradient of `tensor` (PyTorch: `tensor.grad = grad`), sharing its memory.
/// `grad` must have the shape and dtype of `tensor`.
pub fn set_grad(tensor: &mut Tensor, grad: &Tensor) -> anyhow::Result<()> {
    anyhow::ensure!(
        tensor.size() == grad.size() && tensor.kind() == grad.kind(),
        "a gradient of shape {:?} ({:?}) for a tensor of shape {:?} ({:?})",
        grad.size(),
        grad.kind(),
        tensor.size(),
        tensor.kind()
    );
    // SAFETY: both tensors are alive for the call; the C++ side only assigns the gradient.
    check(unsafe { tch_alexnet_set_grad(tensor.as_mut_ptr().cast(), grad.as_ptr().cast()) }, "set a gradient")
}

/// Lets libtorch use oneDNN for CPU convolutions (its default, `true`) or not (ATen's own
/// im2col + GEMM kernels). oneDNN is faster here (see the README's benchmark).
pub fn set_onednn_enabled(enabled: bool) -> anyhow::Result<()> {
    // SAFETY: sets a global libtorch option.
    check(unsafe { tch_alexnet_set_onednn_enabled(i32::from(enabled)) }, "switch oneDNN")
}

/// Whether libtorch may use oneDNN for CPU convolutions.
pub fn onednn_enabled() -> anyhow::Result<bool> {
    get_flag(tch_alexnet_onednn_enabled, "read whether oneDNN is enabled")
}

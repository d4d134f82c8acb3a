//! bf16 autocast on the CPU and on CUDA (`--amp`): libtorch's own, as `torch.autocast(
//! device_type, dtype=torch.bfloat16)`. Inside a region, convolutions and linear layers run in
//! bf16 (on a CPU with AMX or AVX-512-BF16, oneDNN's bf16 kernels), BatchNorm and the losses
//! as libtorch's autocast lists say; the weights stay fp32 and are cast per region (cached
//! until the outermost region ends).
//!
//! The switch is per thread in libtorch: a region covers only the thread that enters it, so
//! the trainer enters one around each forward pass, in the thread that runs it.

use anyhow::{bail, Result};
use tch::Device;

extern "C" {
    fn tch_alexnet_autocast_enter(device: i32, previous: *mut i32) -> i32;
    fn tch_alexnet_autocast_exit(device: i32, previous: i32) -> i32;
    fn tch_alexnet_autocast_state(device: i32, enabled: *mut i32, bf16: *mut i32) -> i32;
}

/// The C++ side's code of a device type: 0 for the CPU, 1 for CUDA.
fn device_code(device: Device) -> Result<i32> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => bail!("bf16 autocast runs on the CPU and CUDA, not on {other:?}"),
    }
}

/// A bf16 autocast region on the calling thread, left when dropped (also on a panic).
#[must_use = "the region ends when the guard is dropped"]
pub struct AutocastBf16 {
    device: i32,
    previous: i32,
}

impl AutocastBf16 {
    /// Enters a region for `device`'s type (all CUDA devices share one switch).
    pub fn enter(device: Device) -> Result<Self> {
        let device = device_code(device)?;
        let mut previous = 0;
        // SAFETY: `previous` is a valid `int` for the call; thread-local libtorch state only.
        let status = unsafe { tch_alexnet_autocast_enter(device, &mut previous) };
        super::check(status, "enter a bf16 autocast region")?;
        Ok(Self { device, previous })
    }
}

impl Drop for AutocastBf16 {
    fn drop(&mut self) {
        // SAFETY: thread-local libtorch state only. The C++ side catches everything; a failure
        // here (none is known) would leave autocast on, which the next enter overrides.
        let status = unsafe { tch_alexnet_autocast_exit(self.device, self.previous) };
        debug_assert_eq!(status, 0, "leaving a bf16 autocast region failed");
    }
}

/// Runs `f` inside a bf16 autocast region for `device` when `enabled`, else as it is.
pub fn autocast_bf16<T>(device: Device, enabled: bool, f: impl FnOnce() -> T) -> Result<T> {
    let _region = enabled.then(|| AutocastBf16::enter(device)).transpose()?;
    Ok(f())
}

/// Whether autocast is on for `device`'s type on the calling thread, and whether in bf16.
pub fn autocast_state(device: Device) -> Result<(bool, bool)> {
    let device = device_code(device)?;
    let (mut enabled, mut bf16) = (0, 0);
    // SAFETY: both are valid `int`s for the call; the C++ side only writes them.
    let status = unsafe { tch_alexnet_autocast_state(device, &mut enabled, &mut bf16) };
    super::check(status, "read the autocast state")?;
    Ok((enabled == 1, bf16 == 1))
}

//! [`Work`]: a collective in flight, waited for (or, when dropped, waited for and ignored)
//! before the tensor it writes is free again.

use std::marker::PhantomData;
use std::ptr::NonNull;

use tch::Tensor;

use super::failure::{call, duration_ms};
use super::{ffi, ProcessGroup};
use crate::distributed::error::Result;

/// A collective in flight ([`ProcessGroup::all_reduce_sum_async`]), holding the mutable
/// borrow of the tensor the backend is writing. Dropping it without [`Work::wait`] waits too
/// (at most the group's timeout), its result unchecked: the borrow ends only once the backend
/// is done with the tensor. (`std::mem::forget` would end the borrow early, as for any guard;
/// and a shallow clone of the tensor, made before, is a second handle that the borrow cannot
/// cover: tch's tensors are shared handles.)
pub struct Work<'a> {
    /// `None` once waited for and freed.
    pub(super) raw: Option<NonNull<ffi::Work>>,
    pub(super) group: &'a ProcessGroup,
    pub(super) op: String,
    pub(super) _tensor: PhantomData<&'a mut Tensor>,
}

impl Work<'_> {
    /// Waits for the collective, at most the group's timeout.
    pub fn wait(mut self) -> Result<()> {
        self.finish()
    }

    /// Waits for the collective and frees its handle, once.
    fn finish(&mut self) -> Result<()> {
        let Some(raw) = self.raw.take() else { return Ok(()) };
        let timeout_ms = duration_ms(self.group.timeout);
        let result = timeout_ms.and_then(|timeout_ms| {
            call(|message| {
                // SAFETY: the work handle is alive until freed just below.
                unsafe { ffi::tch_alexnet_c10d_work_wait(raw.as_ptr(), timeout_ms, message) }
            })
            .map_err(|failure| self.group.op_error(failure, &self.op))
        });
        // SAFETY: owned, freed once (`raw` was taken out of `self`).
        unsafe { ffi::tch_alexnet_c10d_work_free(raw.as_ptr()) };
        result
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        // Not waited for (an error path): the tensor's borrow ends here, so the backend must be
        // done with it first. Its result has nowhere to go.
        let _ = self.finish();
    }
}

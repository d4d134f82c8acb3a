//! What the fused CPU kernels ([`crate::data::resize`], [`crate::data::crop`]) share: a
//! batch's output tensor written image by image, spread over libtorch's thread count, and
//! read-only views of CPU tensors as slices.

use std::mem::MaybeUninit;

use tch::{Device, Kind, Tensor};

/// The first `len` elements of a contiguous CPU tensor of element type `T`, as a slice; empty
/// when `len` is 0, where libtorch's data pointer may be null.
///
/// # Safety
/// `tensor` must be a contiguous CPU tensor of element type `T` with at least `len`
/// initialised elements, not written while the slice lives.
pub(crate) unsafe fn host_slice<T>(tensor: &Tensor, len: usize) -> &[T] {
    if len == 0 {
        return &[];
    }
    let data = tensor.data_ptr() as *const T;
    assert!(!data.is_null(), "a tensor of {len} elements without data");
    std::slice::from_raw_parts(data, len)
}

/// Writes the images of `out`, a float CPU tensor just made with `Tensor::empty` (contiguous,
/// its first dimension the batch, `image_len` elements per image): `work(scratch, i,
/// out_image)` writes image `i`, the images spread over libtorch's thread count; each thread
/// makes its own `scratch` with `scratch()`. `work` must write every element of `out_image`:
/// the memory starts uninitialised (zeroing it first would add a pass over the batch).
///
/// Panics if `out` is not such a tensor: the kernels allocate it themselves.
pub(crate) fn write_images<S>(
    out: &Tensor,
    image_len: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize, &mut [MaybeUninit<f32>]) + Sync,
) {
    assert!(out.device() == Device::Cpu && out.kind() == Kind::Float && out.is_contiguous(), "a new CPU float tensor");
    let n = out.size().first().copied().unwrap_or(0) as usize;
    assert_eq!(out.numel(), n * image_len, "{image_len} elements per image");
    if n == 0 || image_len == 0 {
        return;
    }
    // SAFETY: `out` is a contiguous float CPU tensor of exactly n·image_len > 0 elements
    // (checked above), so its data pointer is non-null and aligned; the caller just allocated
    // it and does not share it while this slice lives. The slice is of `MaybeUninit`, written
    // only, and `work` writes every element of each image.
    let output = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut MaybeUninit<f32>, n * image_len) };
    let threads = (tch::get_num_threads().max(1) as usize).min(n);
    let per_thread = n.div_ceil(threads);
    let (scratch, work) = (&scratch, &work);
    let run = move |t: usize, out_chunk: &mut [MaybeUninit<f32>]| {
        let mut state = scratch();
        for (i, out_image) in out_chunk.chunks_mut(image_len).enumerate() {
            work(&mut state, t * per_thread + i, out_image);
        }
    };
    // The calling thread takes the first share itself: one thread fewer to start per batch.
    let mut chunks = output.chunks_mut(per_thread * image_len).enumerate();
    let (_, first) = chunks.next().expect("n > 0");
    std::thread::scope(|scope| {
        for (t, out_chunk) in chunks {
            scope.spawn(move || run(t, out_chunk));
        }
        run(0, first);
    });
}

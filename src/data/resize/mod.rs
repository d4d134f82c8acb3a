//! The CPU data-pipeline kernel: gather, flip, normalise and bilinearly upsample a batch of small
//! images in one pass, with the arithmetic of libtorch's `upsample_bilinear2d(align_corners =
//! false)`.
//!
//! Built as libtorch ops (`index_select`, `to_kind`, `flip`, `where`, `mul`, `add`,
//! `upsample_bilinear2d`, the copy to channels-last), a 64-image batch took about 15 ms on two
//! cores; libtorch's resize alone computes four source offsets and weights per output element,
//! for any layout. Here, per image, the 3 072 source bytes are read once (the flip is a mirrored
//! read, the normalisation a per-channel `x * scale + shift`), each of the 32 source rows is
//! interpolated horizontally once (with AVX-512 permutes where the CPU has them), and each
//! output row is then a weighted sum of two of those rows: one contiguous loop that the compiler
//! vectorises, written in the final layout. That last loop, which writes the batch's 40 MB, is
//! most of the time left (about 1.5–2 ms a batch on two cores, against 15 ms before).
//!
//! The arithmetic, operation by operation, is the one of the libtorch chain above (no fused
//! multiply-add anywhere), so results agree with it to float rounding and the SIMD and scalar
//! paths agree bit for bit (both tested). The CUDA path keeps libtorch's ops.
//!
//! Inputs libtorch refuses are refused here too, with a [`ResizeError`]: images without pixels
//! (no channel, row or column) and output sizes below 1. An empty batch gives an empty result,
//! as in libtorch. The output is written through `MaybeUninit`: `Tensor::empty` memory is never
//! read or viewed as floats before the kernel has written every element (zeroing it first
//! would add a pass over the batch's 40 MB).

use std::mem::MaybeUninit;

use tch::{Device, Kind, Tensor};

use crate::data::cpu_batch::{host_slice, write_images};

mod rows;

use rows::blend_rows;
#[cfg(target_arch = "x86_64")]
use rows::Rgb32Lanes;

/// Why a batch cannot be resized. The same inputs make libtorch's `upsample_bilinear2d` fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    #[error("images must be [N, C, H, W], got shape {0:?}")]
    NotFourDimensional(Vec<i64>),
    #[error(
        "images of shape [N, C, H, W] = {0:?} have no pixels to resize (C, H and W must be at least 1; an empty \
         batch, N = 0, is fine)"
    )]
    NoPixels(Vec<i64>),
    #[error("cannot resize to {0}×{0}: the output size must be at least 1")]
    BadSize(i64),
    #[error("cannot allocate the resized batch of shape {shape:?}: {message}")]
    Alloc { shape: Vec<i64>, message: String },
}

/// `[N, C, H, W]` and the output size, checked: C, H, W and `size` at least 1 (N may be 0).
fn checked_dims(dims: &[i64], size: i64) -> Result<(usize, (usize, usize, usize)), ResizeError> {
    let [n, c, h, w] = *dims else { return Err(ResizeError::NotFourDimensional(dims.to_vec())) };
    if c < 1 || h < 1 || w < 1 {
        return Err(ResizeError::NoPixels(dims.to_vec()));
    }
    if size < 1 {
        return Err(ResizeError::BadSize(size));
    }
    // libtorch's sizes are never negative, so N ≥ 0 and every cast is exact.
    Ok((n as usize, (c as usize, h as usize, w as usize)))
}

/// Source indices and weights of each output coordinate along one axis.
struct Taps {
    i0: Vec<usize>,
    i1: Vec<usize>,
    w0: Vec<f32>,
    w1: Vec<f32>,
}

/// libtorch's `area_pixel_compute_source_index` and `compute_source_index_and_lambda` for
/// `align_corners = false` and no explicit scale. Every index is below `in_size`, which the
/// kernel's unchecked reads rely on, so `in_size` must be at least 1 (checked).
fn taps(in_size: usize, out_size: usize) -> Taps {
    assert!(in_size > 0, "bilinear taps of an axis without pixels");
    let scale = in_size as f32 / out_size as f32;
    let mut t = Taps { i0: vec![], i1: vec![], w0: vec![], w1: vec![] };
    for o in 0..out_size {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(in_size - 1);
        let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
        let w1 = (src - i0 as f32).clamp(0.0, 1.0);
        t.i0.push(i0);
        t.i1.push(i1);
        t.w0.push(1.0 - w1);
        t.w1.push(w1);
    }
    t
}

/// How one image is resized: `planes` independent planes of `h` source rows each, every output
/// row `row_len` floats long. Channels-last output is one plane whose rows interleave the
/// channels (`row_len = size · c`); NCHW output is `c` planes of `size`-long rows.
struct Plan {
    c: usize,
    h: usize,
    w: usize,
    size: usize,
    planes: usize,
    row_len: usize,
    x: Taps,
    y: Taps,
    /// The horizontal pass as AVX-512 lane tables, for the case that matters (RGB, 32 pixels
    /// wide, channels-last) on CPUs that have it.
    #[cfg(target_arch = "x86_64")]
    rgb32: Option<Rgb32Lanes>,
}

impl Plan {
    fn new((c, h, w): (usize, usize, usize), size: usize, channels_last: bool) -> Self {
        let (planes, row_len) = if channels_last { (1, size * c) } else { (c, size) };
        let x = taps(w, size);
        #[cfg(target_arch = "x86_64")]
        let rgb32 = (channels_last && c == 3 && w == 32 && std::is_x86_feature_detected!("avx512f"))
            .then(|| Rgb32Lanes::new(&x, row_len));
        Self {
            c,
            h,
            w,
            size,
            planes,
            row_len,
            x,
            y: taps(h, size),
            #[cfg(target_arch = "x86_64")]
            rgb32,
        }
    }

    fn source_len(&self) -> usize {
        self.c * self.h * self.w
    }

    fn output_len(&self) -> usize {
        self.c * self.size * self.size
    }

    /// The horizontal pass: every source row of the image, interpolated to the output width,
    /// into `rows` (`planes·h` rows of `row_len`).
    fn interpolate_rows(&self, src: &[f32], rows: &mut [f32]) {
        let (h, w, len) = (self.h, self.w, self.row_len);
        #[cfg(target_arch = "x86_64")]
        if let Some(lanes) = &self.rgb32 {
            assert!(src.len() >= 3 * h * 32 && rows.len() >= h * len, "scratch buffers too small");
            // SAFETY: the CPU has AVX-512F (checked when the lanes were built) and the slices
            // hold the 3×h×32 source floats and h rows of `len` that the kernel reads and writes.
            return unsafe { lanes.interpolate_rows(src, rows, h) };
        }
        if self.planes == 1 && self.c == 3 {
            // Channels-last RGB rows: the taps of a pixel serve its three channels.
            let plane_len = h * w;
            for y in 0..h {
                let r = &src[y * w..][..w];
                let g = &src[plane_len + y * w..][..w];
                let b = &src[2 * plane_len + y * w..][..w];
                let dst = &mut rows[y * len..][..len];
                for (ox, px) in dst.chunks_exact_mut(3).enumerate() {
                    let (i0, i1, w0, w1) = (self.x.i0[ox], self.x.i1[ox], self.x.w0[ox], self.x.w1[ox]);
                    // SAFETY: every tap index is below `w` (taps() clamps them to in_size - 1).
                    unsafe {
                        px[0] = r.get_unchecked(i0) * w0 + r.get_unchecked(i1) * w1;
                        px[1] = g.get_unchecked(i0) * w0 + g.get_unchecked(i1) * w1;
                        px[2] = b.get_unchecked(i0) * w0 + b.get_unchecked(i1) * w1;
                    }
                }
            }
        } else if self.planes == 1 {
            let plane_len = h * w;
            for y in 0..h {
                let dst = &mut rows[y * len..][..len];
                for (ox, px) in dst.chunks_exact_mut(self.c).enumerate() {
                    let (i0, i1, w0, w1) = (self.x.i0[ox], self.x.i1[ox], self.x.w0[ox], self.x.w1[ox]);
                    for (ch, d) in px.iter_mut().enumerate() {
                        let row = &src[ch * plane_len + y * w..][..w];
                        *d = row[i0] * w0 + row[i1] * w1;
                    }
                }
            }
        } else {
            for plane in 0..self.planes {
                for y in 0..h {
                    let src_row = &src[(plane * h + y) * w..][..w];
                    let dst = &mut rows[(plane * h + y) * len..][..len];
                    let taps = self.x.i0.iter().zip(&self.x.i1).zip(self.x.w0.iter().zip(&self.x.w1));
                    for (d, ((&i0, &i1), (&w0, &w1))) in dst.iter_mut().zip(taps) {
                        *d = src_row[i0] * w0 + src_row[i1] * w1;
                    }
                }
            }
        }
    }

    /// Resizes one `c×h×w` image into `out` (the layout of the plan), writing each of its
    /// `output_len` elements: `planes` planes of `size` rows of `row_len`, and `planes · row_len`
    /// is `c · size` in both layouts. `rows` is scratch space for `planes·h` interpolated rows.
    fn resize_image(&self, src: &[f32], out: &mut [MaybeUninit<f32>], rows: &mut [f32]) {
        self.interpolate_rows(src, rows);
        let (h, len) = (self.h, self.row_len);
        for plane in 0..self.planes {
            for oy in 0..self.size {
                let (a, b) = (self.y.w0[oy], self.y.w1[oy]);
                let r0 = &rows[(plane * h + self.y.i0[oy]) * len..][..len];
                let r1 = &rows[(plane * h + self.y.i1[oy]) * len..][..len];
                let dst = &mut out[(plane * self.size + oy) * len..][..len];
                blend_rows(dst, r0, r1, a, b);
            }
        }
    }
}

/// Runs the plan on every image of the batch, spread over libtorch's thread count, into a new
/// `float` tensor of the plan's layout; `fill_source(i, source)` writes image `i`'s `c·h·w`
/// floats. The output is allocated before the plan (whose tables grow with `size`), so that an
/// absurd size is an allocation error, not an abort.
fn run_batch(
    n: usize,
    (c, h, w): (usize, usize, usize),
    size: i64,
    channels_last: bool,
    fill_source: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<Tensor, ResizeError> {
    let (ni, ci) = (n as i64, c as i64);
    let shape = if channels_last { [ni, size, size, ci] } else { [ni, ci, size, size] };
    let out = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))
        .map_err(|e| ResizeError::Alloc { shape: shape.to_vec(), message: e.to_string() })?;
    if n > 0 {
        let plan = Plan::new((c, h, w), size as usize, channels_last);
        let scratch = || (vec![0f32; plan.source_len()], vec![0f32; plan.planes * plan.h * plan.row_len]);
        write_images(&out, plan.output_len(), scratch, |(source, rows), i, out_image| {
            fill_source(i, source);
            plan.resize_image(source, out_image, rows);
        });
    }
    Ok(if channels_last { out.permute([0, 3, 1, 2]) } else { out })
}

/// `float [N, C, H, W]` on the CPU → `float [N, C, size, size]`, channels-last strided when
/// asked. Equal to libtorch's bilinear upsampling up to float rounding. Fails where libtorch's
/// does: images without pixels, `size` below 1 (see [`ResizeError`]).
///
/// Panics if `xs` is not on the CPU.
pub fn upsample_bilinear_cpu(xs: &Tensor, size: i64, channels_last: bool) -> Result<Tensor, ResizeError> {
    assert_eq!(xs.device(), Device::Cpu, "upsample_bilinear_cpu takes CPU tensors");
    let (n, (c, h, w)) = checked_dims(&xs.size(), size)?;
    let xs = xs.to_kind(Kind::Float).contiguous();
    let image_len = c * h * w;
    // SAFETY: `xs` is a contiguous float CPU tensor of exactly n·c·h·w elements, alive and
    // unchanged while the slice is used.
    let input: &[f32] = unsafe { host_slice(&xs, n * image_len) };
    run_batch(n, (c, h, w), size, channels_last, |i, source| {
        source.copy_from_slice(&input[i * image_len..][..image_len])
    })
}

/// The whole CPU data pipeline for one batch: `images[indices]` (`uint8 [M, C, H, W]`), mirrored
/// left-right where `flips` says so, mapped to `x · scale[c] + shift[c]`, and upsampled to
/// `size`×`size`. Returns `float [N, C, size, size]`, channels-last strided when asked. Equal
/// (to float rounding) to `index_select`, `flip`, `to_kind(Float)`, `mul`, `add` and
/// `upsample_bilinear2d` in libtorch. No indices give an empty batch; images without pixels
/// and `size` below 1 are a [`ResizeError`], as in libtorch.
///
/// Panics if `images` is not a uint8 CPU tensor, an index is out of range, or `scale`, `shift`
/// and `flips` do not match the channels and indices: the inputs come from this crate's data
/// and split, so any of these is a bug, not bad input.
pub fn gather_normalise_resize_cpu(
    images: &Tensor,
    indices: &[i64],
    flips: Option<&[bool]>,
    (scale, shift): (&[f32], &[f32]),
    size: i64,
    channels_last: bool,
) -> Result<Tensor, ResizeError> {
    assert_eq!(images.device(), Device::Cpu, "gather_normalise_resize_cpu takes CPU tensors");
    assert_eq!(images.kind(), Kind::Uint8, "gather_normalise_resize_cpu takes uint8 images");
    let (m, (c, h, w)) = checked_dims(&images.size(), size)?;
    let images = images.contiguous();
    assert!(scale.len() == c && shift.len() == c, "one scale and shift per channel");
    assert!(indices.iter().all(|&i| (0..m as i64).contains(&i)), "image index out of range 0..{m}");
    if let Some(flips) = flips {
        assert_eq!(flips.len(), indices.len(), "one flip flag per index");
    }
    let image_len = c * h * w;
    // SAFETY: `images` is a contiguous uint8 CPU tensor of exactly m·c·h·w elements, alive and
    // unchanged while the slice is used.
    let all: &[u8] = unsafe { host_slice(&images, m * image_len) };
    run_batch(indices.len(), (c, h, w), size, channels_last, |i, source| {
        let image = &all[indices[i] as usize * image_len..][..image_len];
        let flip = flips.is_some_and(|f| f[i]);
        for (plane, (src, dst)) in image.chunks_exact(h * w).zip(source.chunks_exact_mut(h * w)).enumerate() {
            let (a, b) = (scale[plane], shift[plane]);
            for (src_row, dst_row) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
                if flip {
                    for (d, &x) in dst_row.iter_mut().zip(src_row.iter().rev()) {
                        *d = x as f32 * a + b;
                    }
                } else {
                    for (d, &x) in dst_row.iter_mut().zip(src_row) {
                        *d = x as f32 * a + b;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 horizontal pass and the scalar one give bit-identical rows (the integration
    /// tests compare the whole kernel with libtorch, on whichever path the CPU takes).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_and_scalar_horizontal_passes_agree_bitwise() {
        if !std::is_x86_feature_detected!("avx512f") {
            // CI's CPU has AVX-512F: there, a skip would hide an untested kernel.
            let require_all = std::env::var("TCH_ALEXNET_REQUIRE_ALL").is_ok_and(|v| v == "1");
            assert!(!require_all, "TCH_ALEXNET_REQUIRE_ALL=1 but this CPU has no AVX-512F: the kernel is untested");
            eprintln!("SKIPPED: this CPU has no AVX-512F");
            return;
        }
        for size in [227, 32, 45, 7] {
            let simd = Plan::new((3, 32, 32), size, true);
            assert!(simd.rgb32.is_some());
            let scalar = Plan { rgb32: None, ..Plan::new((3, 32, 32), size, true) };
            let src: Vec<f32> = (0..3 * 32 * 32).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
            let mut rows_simd = vec![f32::NAN; 32 * simd.row_len + 5];
            let mut rows_scalar = rows_simd.clone();
            simd.interpolate_rows(&src, &mut rows_simd);
            scalar.interpolate_rows(&src, &mut rows_scalar);
            let same = rows_simd.iter().zip(&rows_scalar).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "size {size}: the two horizontal passes differ");
            assert!(rows_simd[32 * simd.row_len..].iter().all(|x| x.is_nan()), "size {size}: wrote past the rows");
        }
    }
}

//! Bilinear upsampling of a batch of small float images on the CPU, with the arithmetic of
//! libtorch's `upsample_bilinear2d(align_corners = false)`.
//!
//! libtorch's CPU kernel is generic over sizes and layouts and computes four source offsets and
//! weights per output element; for 32×32 → 227×227 it was the data pipeline's bottleneck: about
//! 10 ms per batch of 64 on two cores, 15 ms with the copy to channels-last. The resize is
//! separable: interpolate each source row horizontally once (32 rows), then every output row is
//! a weighted sum of two of those rows, a loop that the compiler vectorises; channels-last output
//! is written directly, whole RGB pixels at a time. Measured: 3.5–5 ms per batch, either layout.
//! The CUDA path keeps libtorch's kernel.

use tch::{Device, Kind, Tensor};

/// Source indices and weights of each output coordinate along one axis.
struct Taps {
    i0: Vec<usize>,
    i1: Vec<usize>,
    w0: Vec<f32>,
    w1: Vec<f32>,
}

/// libtorch's `area_pixel_compute_source_index` and `compute_source_index_and_lambda` for
/// `align_corners = false` and no explicit scale.
fn taps(in_size: usize, out_size: usize) -> Taps {
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

/// Resizes one image (`input`: C×H×W) into `out`, laid out C×S×S or, with `channels_last`,
/// S×S×C. `rows` is scratch space of C×H×S floats.
fn resize_image(
    input: &[f32],
    out: &mut [f32],
    dims: (usize, usize, usize, usize),
    ty: &Taps,
    tx: &Taps,
    channels_last: bool,
    rows: &mut [f32],
) {
    let (c, h, w, s) = dims;
    // Horizontal pass: every source row at the output width.
    for ch in 0..c {
        for y in 0..h {
            let src = &input[(ch * h + y) * w..][..w];
            let dst = &mut rows[(ch * h + y) * s..][..s];
            for ox in 0..s {
                dst[ox] = src[tx.i0[ox]] * tx.w0[ox] + src[tx.i1[ox]] * tx.w1[ox];
            }
        }
    }
    // Vertical pass: each output row mixes two interpolated rows.
    for oy in 0..s {
        let (a, b) = (ty.w0[oy], ty.w1[oy]);
        if channels_last && c == 3 {
            // RGB, the case that matters: one pass writing whole pixels, no bounds checks.
            let row = |ch: usize, i: usize| &rows[(ch * h + i) * s..][..s];
            let (i0, i1) = (ty.i0[oy], ty.i1[oy]);
            let dst = &mut out[oy * s * 3..][..s * 3];
            let reds = row(0, i0).iter().zip(row(0, i1));
            let greens = row(1, i0).iter().zip(row(1, i1));
            let blues = row(2, i0).iter().zip(row(2, i1));
            for (px, ((r, g), bl)) in dst.chunks_exact_mut(3).zip(reds.zip(greens).zip(blues)) {
                px[0] = r.0 * a + r.1 * b;
                px[1] = g.0 * a + g.1 * b;
                px[2] = bl.0 * a + bl.1 * b;
            }
        } else if channels_last {
            let dst = &mut out[oy * s * c..][..s * c];
            for ch in 0..c {
                let r0 = &rows[(ch * h + ty.i0[oy]) * s..][..s];
                let r1 = &rows[(ch * h + ty.i1[oy]) * s..][..s];
                for ox in 0..s {
                    dst[ox * c + ch] = r0[ox] * a + r1[ox] * b;
                }
            }
        } else {
            for ch in 0..c {
                let r0 = &rows[(ch * h + ty.i0[oy]) * s..][..s];
                let r1 = &rows[(ch * h + ty.i1[oy]) * s..][..s];
                let dst = &mut out[(ch * s + oy) * s..][..s];
                for ((d, x0), x1) in dst.iter_mut().zip(r0).zip(r1) {
                    *d = x0 * a + x1 * b;
                }
            }
        }
    }
}

/// `float [N, C, H, W]` on the CPU → `float [N, C, size, size]`, channels-last strided when
/// asked. Equal to libtorch's bilinear upsampling up to float rounding.
pub fn upsample_bilinear_cpu(xs: &Tensor, size: i64, channels_last: bool) -> Tensor {
    assert_eq!(xs.device(), Device::Cpu, "upsample_bilinear_cpu takes CPU tensors");
    let xs = xs.to_kind(Kind::Float).contiguous();
    let dims = xs.size();
    let [n, c, h, w] = dims[..] else { panic!("upsample_bilinear_cpu takes [N, C, H, W], got {dims:?}") };
    let (n, c, h, w, s) = (n as usize, c as usize, h as usize, w as usize, size as usize);
    let out = if channels_last {
        Tensor::empty([n as i64, size, size, c as i64], (Kind::Float, Device::Cpu))
    } else {
        Tensor::empty([n as i64, c as i64, size, size], (Kind::Float, Device::Cpu))
    };
    if n == 0 {
        return if channels_last { out.permute([0, 3, 1, 2]) } else { out };
    }
    // SAFETY: both tensors are contiguous float CPU tensors of exactly these element counts,
    // `out` was just allocated and is not shared, and they do not overlap.
    let input = unsafe { std::slice::from_raw_parts(xs.data_ptr() as *const f32, n * c * h * w) };
    let output = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, n * c * s * s) };
    let (ty, tx) = (taps(h, s), taps(w, s));
    let threads = (tch::get_num_threads().max(1) as usize).min(n);
    let per_thread = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, out_chunk) in output.chunks_mut(per_thread * c * s * s).enumerate() {
            let (ty, tx) = (&ty, &tx);
            let in_chunk = &input[t * per_thread * c * h * w..];
            scope.spawn(move || {
                let mut rows = vec![0f32; c * h * s];
                for (i, out_image) in out_chunk.chunks_mut(c * s * s).enumerate() {
                    let in_image = &in_chunk[i * c * h * w..][..c * h * w];
                    resize_image(in_image, out_image, (c, h, w, s), ty, tx, channels_last, &mut rows);
                }
            });
        }
    });
    if channels_last {
        out.permute([0, 3, 1, 2])
    } else {
        out
    }
}

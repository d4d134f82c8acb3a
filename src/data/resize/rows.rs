//! The two inner loops of the resize kernel: the horizontal pass of RGB rows 32 pixels wide
//! with AVX-512 permutes (no gathers), and the vertical blend of two interpolated rows, which
//! writes the batch. Both keep the scalar arithmetic exactly (no fused multiply-add), so every
//! path gives the same bits.

use std::mem::MaybeUninit;

use super::Taps;

/// The horizontal pass of RGB images 32 pixels wide into channels-last rows, 16 output floats
/// per step. A source row of one channel is two 16-lane registers, so `vpermt2ps` picks any of
/// its 32 pixels per lane: no gathers. Lane `k` of a row holds channel `k % 3` of output pixel
/// `k / 3`; it takes its pixel from the red, green or blue row by a blend mask. The arithmetic
/// is the scalar path's (`s0 · w0 + s1 · w1`, no fused multiply-add), so results are identical.
#[cfg(target_arch = "x86_64")]
pub(super) struct Rgb32Lanes {
    /// Per 16-lane vector of an output row: each lane's two source pixels (0..32) and weights.
    i0: Vec<[i32; 16]>,
    i1: Vec<[i32; 16]>,
    w0: Vec<[f32; 16]>,
    w1: Vec<[f32; 16]>,
    /// Lanes holding green and blue values.
    green: Vec<u16>,
    blue: Vec<u16>,
    /// Lanes of the last vector that are inside the row.
    tail: u16,
    row_len: usize,
}

#[cfg(target_arch = "x86_64")]
impl Rgb32Lanes {
    pub(super) fn new(x: &Taps, row_len: usize) -> Self {
        let vectors = row_len.div_ceil(16);
        let mut t = Self {
            i0: vec![[0; 16]; vectors],
            i1: vec![[0; 16]; vectors],
            w0: vec![[0.0; 16]; vectors],
            w1: vec![[0.0; 16]; vectors],
            green: vec![0; vectors],
            blue: vec![0; vectors],
            tail: 0,
            row_len,
        };
        for k in 0..row_len {
            let (v, lane, ox) = (k / 16, k % 16, k / 3);
            t.i0[v][lane] = x.i0[ox] as i32;
            t.i1[v][lane] = x.i1[ox] as i32;
            t.w0[v][lane] = x.w0[ox];
            t.w1[v][lane] = x.w1[ox];
            match k % 3 {
                1 => t.green[v] |= 1 << lane,
                2 => t.blue[v] |= 1 << lane,
                _ => {}
            }
        }
        let rest = row_len % 16;
        t.tail = if rest == 0 { u16::MAX } else { (1u16 << rest) - 1 };
        t
    }

    /// `src`: 3×h×32 floats (planar RGB); writes `h` rows of `row_len` floats into `rows`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, `src` must hold at least 3·h·32 floats and `rows` at
    /// least h·row_len.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interpolate_rows(&self, src: &[f32], rows: &mut [f32], h: usize) {
        use std::arch::x86_64::*;
        let plane = h * 32;
        let vectors = self.i0.len();
        for y in 0..h {
            let row = src.as_ptr().add(y * 32);
            let (r_lo, r_hi) = (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)));
            let (g_lo, g_hi) = (_mm512_loadu_ps(row.add(plane)), _mm512_loadu_ps(row.add(plane + 16)));
            let (b_lo, b_hi) = (_mm512_loadu_ps(row.add(2 * plane)), _mm512_loadu_ps(row.add(2 * plane + 16)));
            let dst = rows.as_mut_ptr().add(y * self.row_len);
            for v in 0..vectors {
                let (green, blue) = (self.green[v], self.blue[v]);
                let i0 = _mm512_loadu_si512(self.i0[v].as_ptr().cast());
                let i1 = _mm512_loadu_si512(self.i1[v].as_ptr().cast());
                let s0 = pick_rgb((r_lo, r_hi), (g_lo, g_hi), (b_lo, b_hi), i0, green, blue);
                let s1 = pick_rgb((r_lo, r_hi), (g_lo, g_hi), (b_lo, b_hi), i1, green, blue);
                let value = _mm512_add_ps(
                    _mm512_mul_ps(s0, _mm512_loadu_ps(self.w0[v].as_ptr())),
                    _mm512_mul_ps(s1, _mm512_loadu_ps(self.w1[v].as_ptr())),
                );
                let mask = if v + 1 == vectors { self.tail } else { u16::MAX };
                _mm512_mask_storeu_ps(dst.add(v * 16), mask, value);
            }
        }
    }
}

/// Per lane, source pixel `index` (0..32) of the red, green or blue row (each two registers),
/// the channel chosen by the `green` and `blue` lane masks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn pick_rgb(
    (r_lo, r_hi): (std::arch::x86_64::__m512, std::arch::x86_64::__m512),
    (g_lo, g_hi): (std::arch::x86_64::__m512, std::arch::x86_64::__m512),
    (b_lo, b_hi): (std::arch::x86_64::__m512, std::arch::x86_64::__m512),
    index: std::arch::x86_64::__m512i,
    green: u16,
    blue: u16,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let red_or_green = _mm512_mask_blend_ps(
        green,
        _mm512_permutex2var_ps(r_lo, index, r_hi),
        _mm512_permutex2var_ps(g_lo, index, g_hi),
    );
    _mm512_mask_blend_ps(blue, red_or_green, _mm512_permutex2var_ps(b_lo, index, b_hi))
}

/// `dst = r0 · a + r1 · b`, the hot loop (about 10 million elements a batch). With AVX it runs
/// 8 lanes wide; the arithmetic is the same either way (no fused multiply-add). `dst` may be
/// uninitialised: it is only written.
pub(super) fn blend_rows(dst: &mut [MaybeUninit<f32>], r0: &[f32], r1: &[f32], a: f32, b: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above).
        return unsafe { blend_rows_avx(dst, r0, r1, a, b) };
    }
    blend_rows_portable(dst, r0, r1, a, b)
}

#[inline(always)]
fn blend_rows_portable(dst: &mut [MaybeUninit<f32>], r0: &[f32], r1: &[f32], a: f32, b: f32) {
    for ((d, x0), x1) in dst.iter_mut().zip(r0).zip(r1) {
        d.write(x0 * a + x1 * b);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn blend_rows_avx(dst: &mut [MaybeUninit<f32>], r0: &[f32], r1: &[f32], a: f32, b: f32) {
    blend_rows_portable(dst, r0, r1, a, b)
}

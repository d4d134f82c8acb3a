//! The CPU data-pipeline kernel for images used at their own size: gather a batch, crop each
//! image at its random offsets from the zero-padded image, mirror it where asked and
//! normalise it, in one pass that writes the final batch (NCHW or channels-last).
//!
//! torchvision's `RandomCrop(size, padding=p)` pads the image with `p` zero pixels on every
//! side and cuts a `size`×`size` window at (`top`, `left`), each in `0..=2p` when `size` is
//! the image's; `RandomHorizontalFlip` then mirrors the window, and `ToTensor` + `Normalize`
//! map each value `x` to `(x/255 − mean)/std`. Here the output pixel (`y`, `x`) of channel
//! `c` reads source row `y + top − p` and column `x + left − p` (`w − 1 − x + left − p` when
//! flipped) and writes `x · scale[c] + shift[c]`, the arithmetic of the resize kernel
//! ([`crate::data::resize`]); a read outside the image is a padding zero, which normalises to
//! `0 · scale[c] + shift[c]` (= −mean/std, the value a kernel that normalises first must pad
//! with). The same steps as libtorch ops, for any device, are
//! [`crate::data::transforms::crop_flip_tensor`]; the two agree bit for bit (tested).

use std::mem::MaybeUninit;

use tch::{Device, Kind, Tensor};

use crate::data::cpu_batch::{host_slice, write_images};

/// Why a batch cannot be cropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CropError {
    #[error("images must be [N, C, H, W], got shape {0:?}")]
    NotFourDimensional(Vec<i64>),
    #[error("cannot allocate the cropped batch of shape {shape:?}: {message}")]
    Alloc { shape: Vec<i64>, message: String },
}

/// Each image's random crop: the padding and, per image, `(top, left)` in `0..=2·padding`.
#[derive(Debug, Clone, Copy)]
pub struct Crops<'a> {
    pub padding: i64,
    /// `[top, left]` of image `i` at `offsets[2i]`, `offsets[2i + 1]`.
    pub offsets: &'a [i64],
}

/// The per-channel map `x · scale + shift` and the value of a padding pixel.
#[derive(Clone, Copy)]
struct Affine {
    scale: f32,
    shift: f32,
    /// `0 · scale + shift`, computed as for a pixel, so that it is bit for bit what
    /// normalising a zero gives (−0 and +0 included).
    pad: f32,
}

/// One output row: `w` values written through `dst`, from source row `src` (`None`: a padding
/// row), the source column of output `x` being `x + dx`, or `w − 1 − x + dx` when `flip`.
fn fill_row<'a>(
    mut dst: impl Iterator<Item = &'a mut MaybeUninit<f32>>,
    w: usize,
    src: Option<&[u8]>,
    dx: isize,
    flip: bool,
    f: Affine,
) {
    let wi = w as isize;
    // The output columns lo..hi read inside the image; the others are padding.
    let (lo, hi) = match (src, flip) {
        (None, _) => (0, 0),
        (Some(_), false) => ((-dx).clamp(0, wi), (wi - dx).clamp(0, wi)),
        (Some(_), true) => (dx.clamp(0, wi), (wi + dx).clamp(0, wi)),
    };
    let hi = hi.max(lo);
    for d in dst.by_ref().take(lo as usize) {
        d.write(f.pad);
    }
    if let (Some(src), true) = (src, hi > lo) {
        let inside = (hi - lo) as usize;
        let normalise = |(d, &x): (&mut MaybeUninit<f32>, &u8)| {
            d.write(x as f32 * f.scale + f.shift);
        };
        if flip {
            // Outputs lo..hi read columns w−1−lo+dx down to w−hi+dx.
            let first = (wi - hi + dx) as usize;
            dst.by_ref().take(inside).zip(src[first..first + inside].iter().rev()).for_each(normalise);
        } else {
            let first = (lo + dx) as usize;
            dst.by_ref().take(inside).zip(&src[first..first + inside]).for_each(normalise);
        }
    }
    for d in dst {
        d.write(f.pad);
    }
}

/// One `c×h×w` image into `out` (NCHW, or HWC interleaved when `channels_last`), shifted by
/// (`dy`, `dx`) = (top − p, left − p).
fn crop_image(
    image: &[u8],
    out: &mut [MaybeUninit<f32>],
    (c, h, w): (usize, usize, usize),
    (dy, dx, flip): (isize, isize, bool),
    affine: &[Affine],
    channels_last: bool,
) {
    for (ch, &f) in affine.iter().enumerate() {
        let plane = &image[ch * h * w..][..h * w];
        for y in 0..h {
            let sy = y as isize + dy;
            let src = (0..h as isize).contains(&sy).then(|| &plane[sy as usize * w..][..w]);
            if channels_last {
                let row = out[y * w * c..][..w * c].iter_mut().skip(ch).step_by(c);
                fill_row(row, w, src, dx, flip, f);
            } else {
                fill_row(out[(ch * h + y) * w..][..w].iter_mut(), w, src, dx, flip, f);
            }
        }
    }
}

/// The whole CPU data pipeline for one batch without a resize: `images[indices]` (`uint8
/// [M, C, H, W]`), each cropped at its offsets from the image padded with `crops.padding`
/// zeros (no crop: the image itself), mirrored left-right where `flips` says so, and mapped to
/// `x · scale[c] + shift[c]`. Returns `float [N, C, H, W]`, channels-last strided when asked.
///
/// Panics if `images` is not a uint8 CPU tensor, an index or offset is out of range, or
/// `scale`, `shift`, `flips` and the offsets do not match the channels and indices: the inputs
/// come from this crate's data, split and plan, so any of these is a bug, not bad input.
pub fn gather_crop_flip_normalise_cpu(
    images: &Tensor,
    indices: &[i64],
    crops: Option<Crops>,
    flips: Option<&[bool]>,
    (scale, shift): (&[f32], &[f32]),
    channels_last: bool,
) -> Result<Tensor, CropError> {
    assert_eq!(images.device(), Device::Cpu, "gather_crop_flip_normalise_cpu takes CPU tensors");
    assert_eq!(images.kind(), Kind::Uint8, "gather_crop_flip_normalise_cpu takes uint8 images");
    let dims = images.size();
    let [m, c, h, w] = *dims.as_slice() else { return Err(CropError::NotFourDimensional(dims)) };
    let (n, image_len) = (indices.len(), (c * h * w) as usize);
    assert!(scale.len() == c as usize && shift.len() == c as usize, "one scale and shift per channel");
    assert!(indices.iter().all(|&i| (0..m).contains(&i)), "image index out of range 0..{m}");
    assert!(flips.is_none_or(|f| f.len() == n), "one flip flag per index");
    if let Some(crops) = crops {
        assert_eq!(crops.offsets.len(), 2 * n, "one (top, left) per index");
        let max = 2 * crops.padding;
        assert!(crops.offsets.iter().all(|o| (0..=max).contains(o)), "crop offsets out of range 0..={max}");
    }
    let shape = if channels_last { [n as i64, h, w, c] } else { [n as i64, c, h, w] };
    let out = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))
        .map_err(|e| CropError::Alloc { shape: shape.to_vec(), message: e.to_string() })?;
    let images = images.contiguous();
    // SAFETY: `images` is a contiguous uint8 CPU tensor of exactly m·c·h·w elements, alive and
    // unchanged while the slice is used.
    let all: &[u8] = unsafe { host_slice(&images, m as usize * image_len) };
    let affine: Vec<Affine> =
        scale.iter().zip(shift).map(|(&scale, &shift)| Affine { scale, shift, pad: 0.0 * scale + shift }).collect();
    let dims = (c as usize, h as usize, w as usize);
    write_images(
        &out,
        image_len,
        || (),
        |_, i, out_image| {
            let image = &all[indices[i] as usize * image_len..][..image_len];
            let (dy, dx) = match crops {
                Some(crops) => (crops.offsets[2 * i] - crops.padding, crops.offsets[2 * i + 1] - crops.padding),
                None => (0, 0),
            };
            let flip = flips.is_some_and(|f| f[i]);
            crop_image(image, out_image, dims, (dy as isize, dx as isize, flip), &affine, channels_last);
        },
    );
    Ok(if channels_last { out.permute([0, 3, 1, 2]) } else { out })
}

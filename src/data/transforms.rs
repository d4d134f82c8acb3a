//! A run's image transforms ([`TransformSpec`]), applied to whole batches on the training
//! device by [`Preprocess`].
//!
//! torchvision runs them image by image on PIL: `RandomCrop(size, padding)` and
//! `RandomHorizontalFlip()` (training only), `Resize(n)` (bilinear), `ToTensor()` (÷255),
//! `Normalize(mean, std)`. Here one batch of `uint8 [N, C, H, W]` goes through: crop each image
//! at its offsets from the zero-padded image (uint8, before normalising), flip the chosen
//! images, scale and shift to the normalised range, upsample bilinearly. Normalising before the
//! resize gives the same result as after it (bilinear weights sum to one, so the resize
//! commutes with any affine map) on 50× fewer pixels.
//!
//! On the CPU, fused kernels do it all in one pass: [`crate::data::resize`] with a resize (the
//! AlexNet recipe's path, unchanged bit for bit), [`crate::data::crop`] without one. Elsewhere
//! (CUDA) libtorch's ops run, queued without a host sync: [`crop_flip_tensor`] for the crop.

use tch::{Device, Kind, Tensor};

use crate::data::crop::{self, Crops};
use crate::data::split::{self, EpochPlan};
pub use crate::data::transform_spec::{TransformError, TransformSpec};

/// CIFAR-10 channel means and standard deviations, as the recipes normalise.
pub const CIFAR_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR_STD: [f64; 3] = [0.2023, 0.1994, 0.2010];

/// The per-batch transform of a [`TransformSpec`], on one device.
#[derive(Debug)]
pub struct Preprocess {
    /// `1 / (255 · std)` and `−mean / std`, `float [1, C, 1, 1]` on the device.
    scale: Tensor,
    shift: Tensor,
    /// The same per-channel factors, for the fused CPU kernels.
    scale_host: Vec<f32>,
    shift_host: Vec<f32>,
    resize: Option<i64>,
    crop_padding: Option<i64>,
    flip: bool,
    channels_last: bool,
}

impl Preprocess {
    /// The transform of `spec` on `device`, producing NHWC-strided batches when
    /// `channels_last` (for convolutions that run faster in that layout).
    pub fn new(spec: &TransformSpec, device: Device, channels_last: bool) -> Result<Self, TransformError> {
        spec.validate()?;
        let scale_host: Vec<f32> = spec.std.iter().map(|s| (1.0 / (255.0 * s)) as f32).collect();
        let shift_host: Vec<f32> = spec.mean.iter().zip(&spec.std).map(|(m, s)| (-m / s) as f32).collect();
        let per_channel = |v: &[f32]| Tensor::from_slice(v).view([1, -1, 1, 1]).to_device(device);
        Ok(Self {
            scale: per_channel(&scale_host),
            shift: per_channel(&shift_host),
            scale_host,
            shift_host,
            resize: spec.resize,
            crop_padding: spec.random_crop_padding,
            flip: spec.flip,
            channels_last,
        })
    }

    /// Whether training flips images (the spec's `flip`).
    pub fn flips(&self) -> bool {
        self.flip
    }

    /// The random crop's padding, when training crops.
    pub fn crop_padding(&self) -> Option<i64> {
        self.crop_padding
    }

    /// The training plan of `epoch` for a split of `len` images: [`split::epoch_plan`]'s order
    /// and flips, plus crop offsets from their own stream when the spec crops.
    pub fn epoch_plan(&self, len: usize, seed: u64, epoch: usize) -> EpochPlan {
        let plan = split::epoch_plan(len, seed, epoch);
        match self.crop_padding {
            Some(padding) => plan.with_crops(seed, epoch, padding),
            None => plan,
        }
    }

    /// `images`: `uint8 [N, C, H, W]`; `flips`: `bool [N]`, images to mirror left-right.
    /// Returns `float [N, C, S, S]` (`S` the resize, or `[N, C, H, W]` without one). No crop:
    /// evaluation and inference.
    pub fn apply(&self, images: &Tensor, flips: Option<&Tensor>) -> Tensor {
        match self.resize {
            Some(size) => self.resize_path(images, None, flips, size),
            None => self.crop_path(images, None, flips, None),
        }
    }

    /// `apply` to `images.index_select(0, indices)`, each image first cropped at its
    /// `crops[i] = (top, left)` (`int64 [N, 2]`, in `0..=2·padding`) when given: one batch of a
    /// split, read straight from the data set.
    pub fn apply_gathered(
        &self,
        images: &Tensor,
        indices: &Tensor,
        flips: Option<&Tensor>,
        crops: Option<&Tensor>,
    ) -> Tensor {
        match (self.resize, crops) {
            (Some(size), None) => self.resize_path(images, Some(indices), flips, size),
            (Some(size), Some(crops)) => {
                let padding = self.crop_padding.expect("crop offsets without a crop in the spec");
                let cropped = crop_flip_tensor(&images.index_select(0, indices), padding, Some(crops), None);
                self.resize_path(&cropped, None, flips, size)
            }
            (None, crops) => self.crop_path(images, Some(indices), flips, crops),
        }
    }

    /// Flip, normalise, resize: the AlexNet recipe's path, as it always was.
    fn resize_path(&self, images: &Tensor, indices: Option<&Tensor>, flips: Option<&Tensor>, size: i64) -> Tensor {
        if let Some(fused) = self.fused_resize_cpu(images, indices, flips, size) {
            return fused;
        }
        let gathered;
        let images = match indices {
            Some(indices) => {
                gathered = images.index_select(0, indices);
                &gathered
            }
            None => images,
        };
        let xs = images.to_kind(Kind::Float);
        let xs = match flips {
            Some(flips) => xs.flip([3]).where_self(&flips.view([-1, 1, 1, 1]), &xs),
            None => xs,
        };
        let xs = xs * &self.scale + &self.shift; // [N, C, H, W], normalised
        self.resize(&xs, size) // [N, C, size, size]
    }

    /// For `uint8` images on the CPU, the whole transform as one fused kernel
    /// (crate::data::resize) that writes the final batch with no intermediate tensors; `None`
    /// elsewhere (CUDA runs libtorch's ops, queued without a host sync).
    fn fused_resize_cpu(
        &self,
        images: &Tensor,
        indices: Option<&Tensor>,
        flips: Option<&Tensor>,
        size: i64,
    ) -> Option<Tensor> {
        if images.device() != Device::Cpu || images.kind() != Kind::Uint8 {
            return None;
        }
        let indices = host_indices(images, indices);
        let flips = flips.map(|f| Vec::<bool>::try_from(f).expect("bool CPU flips"));
        let fused = crate::data::resize::gather_normalise_resize_cpu(
            images,
            &indices,
            flips.as_deref(),
            (&self.scale_host, &self.shift_host),
            size,
            self.channels_last,
        );
        // Images without pixels panic here as they do in libtorch's resize on CUDA.
        Some(fused.unwrap_or_else(|e| panic!("{e}")))
    }

    /// Crop, flip, normalise at the images' own size: one fused kernel (crate::data::crop) for
    /// `uint8` images on the CPU, libtorch's ops elsewhere.
    fn crop_path(
        &self,
        images: &Tensor,
        indices: Option<&Tensor>,
        flips: Option<&Tensor>,
        crops: Option<&Tensor>,
    ) -> Tensor {
        let padding = crops.map(|_| self.crop_padding.expect("crop offsets without a crop in the spec"));
        if images.device() == Device::Cpu && images.kind() == Kind::Uint8 {
            let indices = host_indices(images, indices);
            let flips = flips.map(|f| Vec::<bool>::try_from(f).expect("bool CPU flips"));
            let offsets = crops.map(|c| Vec::<i64>::try_from(c.reshape([-1])).expect("int64 CPU crop offsets"));
            let crops = padding.zip(offsets.as_deref()).map(|(padding, offsets)| Crops { padding, offsets });
            let fused = crop::gather_crop_flip_normalise_cpu(
                images,
                &indices,
                crops,
                flips.as_deref(),
                (&self.scale_host, &self.shift_host),
                self.channels_last,
            );
            return fused.unwrap_or_else(|e| panic!("{e}"));
        }
        let images = match indices {
            Some(indices) => images.index_select(0, indices),
            None => images.shallow_clone(),
        };
        let xs = crop_flip_tensor(&images, padding.unwrap_or(0), crops, flips).to_kind(Kind::Float);
        let xs = xs * &self.scale + &self.shift;
        if self.channels_last {
            to_channels_last(&xs)
        } else {
            xs
        }
    }

    /// Bilinear resize to `size`×`size`, channels-last strided when configured. On the CPU a
    /// separable kernel (crate::data::resize) that writes either layout directly; on CUDA libtorch's,
    /// followed by the layout change (its NCHW kernel is 2-3× faster than its NHWC one for
    /// three channels).
    fn resize(&self, xs: &Tensor, size: i64) -> Tensor {
        if xs.device() == Device::Cpu {
            // Fails only where libtorch's own resize (the CUDA path) panics too.
            return crate::data::resize::upsample_bilinear_cpu(xs, size, self.channels_last)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let xs = xs.upsample_bilinear2d([size, size], false, None, None);
        if self.channels_last {
            to_channels_last(&xs)
        } else {
            xs
        }
    }

    /// Resize only (no flip, no normalisation), in `[0, 1]` units: what torchvision's
    /// `Resize(n)` + `ToTensor()` give. Used to check parity with PIL.
    pub fn resize_unnormalised(&self, images: &Tensor) -> Tensor {
        let xs = images.to_kind(Kind::Float) / 255.0;
        match self.resize {
            Some(size) => self.resize(&xs, size),
            None => xs,
        }
    }
}

/// The batch's image indices on the host: `indices`, or every image in order.
fn host_indices(images: &Tensor, indices: Option<&Tensor>) -> Vec<i64> {
    match indices {
        Some(indices) => Vec::<i64>::try_from(indices).expect("int64 CPU indices"),
        None => (0..images.size()[0]).collect(),
    }
}

/// Random crop and flip as libtorch ops on any device and element type: each image of
/// `images` (`[N, C, H, W]`) padded with `padding` zeros on every side and cut at
/// `crops[i] = (top, left)` (`int64 [N, 2]`; `None`: the image itself), then mirrored
/// left-right where `flips` (`bool [N]`) says so. Returns `[N, C, H, W]` of the input's kind.
/// Two `gather`s with per-image row and column indices (the flip is a reversed column index),
/// so nothing goes back to the host.
pub fn crop_flip_tensor(images: &Tensor, padding: i64, crops: Option<&Tensor>, flips: Option<&Tensor>) -> Tensor {
    if crops.is_none() && flips.is_none() {
        return images.shallow_clone();
    }
    let (n, c, h, w) = images.size4().expect("images must be [N, C, H, W]");
    let options = (Kind::Int64, images.device());
    let (padded, top, left) = match crops {
        Some(crops) => {
            let p = padding;
            (images.constant_pad_nd([p, p, p, p]), crops.select(1, 0).unsqueeze(1), crops.select(1, 1).unsqueeze(1))
        }
        None => (images.shallow_clone(), Tensor::zeros([n, 1], options), Tensor::zeros([n, 1], options)),
    };
    let rows = Tensor::arange(h, options).view([1, h]) + top; // [N, H]
    let ramp = Tensor::arange(w, options).view([1, w]);
    let columns = match flips {
        Some(flips) => ramp.flip([1]).where_self(&flips.view([n, 1]), &ramp), // [N, W]
        None => ramp.expand([n, w], false),
    } + left;
    let padded_w = padded.size()[3];
    let xs = padded.gather(2, &rows.view([n, 1, h, 1]).expand([n, c, h, padded_w], false), false); // [N, C, H, W + 2p]
    xs.gather(3, &columns.view([n, 1, 1, w]).expand([n, c, h, w], false), false)
    // [N, C, H, W]
}

/// The same tensor with NHWC strides, which libtorch reads as channels-last memory format.
pub fn to_channels_last(xs: &Tensor) -> Tensor {
    xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

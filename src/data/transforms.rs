//! The recipe's image transforms, applied to whole batches on the training device.
//!
//! The recipe runs, image by image on PIL: `RandomHorizontalFlip()` (training only),
//! `Resize(227)` (bilinear), `ToTensor()` (÷255), `Normalize(mean, std)`. Here one batch of
//! `uint8 [N, 3, 32, 32]` goes through: flip the chosen images, scale and shift to the
//! normalised range, upsample to 227×227 bilinearly. Normalising before the resize gives the
//! same result as after it (bilinear weights sum to one, so the resize commutes with any affine
//! map) on 50× fewer pixels.

use tch::{Device, Kind, Tensor};

use crate::model::INPUT_SIZE;

/// CIFAR-10 channel means and standard deviations, as the recipe normalises.
pub const CIFAR_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR_STD: [f64; 3] = [0.2023, 0.1994, 0.2010];

/// The per-batch transform: `(x / 255 - mean) / std`, then a bilinear resize.
#[derive(Debug)]
pub struct Preprocess {
    scale: Tensor,
    shift: Tensor,
    /// The same per-channel factors, for the fused CPU kernel.
    scale_host: [f32; 3],
    shift_host: [f32; 3],
    size: i64,
    channels_last: bool,
}

impl Preprocess {
    /// The recipe's normalisation, to 227×227, on `device`.
    pub fn new(device: Device) -> Self {
        Self::with_stats(device, CIFAR_MEAN, CIFAR_STD, INPUT_SIZE)
    }

    pub fn with_stats(device: Device, mean: [f64; 3], std: [f64; 3], size: i64) -> Self {
        let scale_host = std::array::from_fn(|c| (1.0 / (255.0 * std[c])) as f32);
        let shift_host = std::array::from_fn(|c| (-mean[c] / std[c]) as f32);
        let per_channel = |v: &[f32; 3]| Tensor::from_slice(v).view([1, 3, 1, 1]).to_device(device);
        Self {
            scale: per_channel(&scale_host),
            shift: per_channel(&shift_host),
            scale_host,
            shift_host,
            size,
            channels_last: false,
        }
    }

    /// Produce NHWC-strided batches, for convolutions that run faster in channels-last layout.
    pub fn channels_last(mut self, on: bool) -> Self {
        self.channels_last = on;
        self
    }

    /// `images`: `uint8 [N, 3, 32, 32]`; `flips`: `bool [N]`, images to mirror left-right.
    /// Returns `float [N, 3, 227, 227]`.
    pub fn apply(&self, images: &Tensor, flips: Option<&Tensor>) -> Tensor {
        if let Some(fused) = self.fused_cpu(images, None, flips) {
            return fused;
        }
        let xs = images.to_kind(Kind::Float);
        let xs = match flips {
            Some(flips) => xs.flip([3]).where_self(&flips.view([-1, 1, 1, 1]), &xs),
            None => xs,
        };
        let xs = xs * &self.scale + &self.shift; // [N, 3, 32, 32], normalised
        self.resize(&xs) // [N, 3, 227, 227]
    }

    /// `apply` to `images.index_select(0, indices)`: one batch of a split, read straight from
    /// the data set on the CPU.
    pub fn apply_gathered(&self, images: &Tensor, indices: &Tensor, flips: Option<&Tensor>) -> Tensor {
        match self.fused_cpu(images, Some(indices), flips) {
            Some(fused) => fused,
            None => self.apply(&images.index_select(0, indices), flips),
        }
    }

    /// For `uint8` images on the CPU, the whole transform as one fused kernel
    /// (crate::data::resize) that writes the final batch with no intermediate tensors; `None`
    /// elsewhere (CUDA runs libtorch's ops, queued without a host sync).
    fn fused_cpu(&self, images: &Tensor, indices: Option<&Tensor>, flips: Option<&Tensor>) -> Option<Tensor> {
        if images.device() != Device::Cpu || images.kind() != Kind::Uint8 {
            return None;
        }
        let indices = match indices {
            Some(indices) => Vec::<i64>::try_from(indices).expect("int64 CPU indices"),
            None => (0..images.size()[0]).collect(),
        };
        let flips = flips.map(|f| Vec::<bool>::try_from(f).expect("bool CPU flips"));
        let fused = crate::data::resize::gather_normalise_resize_cpu(
            images,
            &indices,
            flips.as_deref(),
            (&self.scale_host, &self.shift_host),
            self.size,
            self.channels_last,
        );
        // Images without pixels panic here as they do in libtorch's resize on CUDA.
        Some(fused.unwrap_or_else(|e| panic!("{e}")))
    }

    /// Bilinear resize to `size`×`size`, channels-last strided when configured. On the CPU a
    /// separable kernel (crate::data::resize) that writes either layout directly; on CUDA libtorch's,
    /// followed by the layout change (its NCHW kernel is 2-3× faster than its NHWC one for
    /// three channels).
    fn resize(&self, xs: &Tensor) -> Tensor {
        if xs.device() == Device::Cpu {
            // Fails only where libtorch's own resize (the CUDA path) panics too.
            return crate::data::resize::upsample_bilinear_cpu(xs, self.size, self.channels_last)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let xs = xs.upsample_bilinear2d([self.size, self.size], false, None, None);
        if self.channels_last {
            to_channels_last(&xs)
        } else {
            xs
        }
    }

    /// Resize and normalise only (no flip), in `[0, 1]` units before normalisation: what
    /// torchvision's `Resize(227)` + `ToTensor()` give. Used to check parity with PIL.
    pub fn resize_unnormalised(&self, images: &Tensor) -> Tensor {
        self.resize(&(images.to_kind(Kind::Float) / 255.0))
    }
}

/// The same tensor with NHWC strides, which libtorch reads as channels-last memory format.
pub fn to_channels_last(xs: &Tensor) -> Tensor {
    xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

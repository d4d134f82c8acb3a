//! What a run's transforms are, as its configuration records them: torchvision's
//! `RandomCrop(size, padding)` (the image's own size), `RandomHorizontalFlip()`, `Resize`,
//! `ToTensor()` and `Normalize(mean, std)`, for any channel count. [`TransformSpec`] is data
//! (serialised in `config.json`); [`crate::data::transforms::Preprocess`] runs it.

use serde::{Deserialize, Serialize};

use crate::data::transforms::{CIFAR_MEAN, CIFAR_STD};

/// The largest crop padding accepted: far above any real use, and small enough that padded
/// sizes and offsets stay exact in every index type on their way.
pub const MAX_PADDING: i64 = u16::MAX as i64;

/// A run's per-batch transforms. Training applies, in torchvision's order: a random crop of
/// the image's size from the image padded with `random_crop_padding` zeros (when set), a
/// random horizontal flip (when `flip`), then `ToTensor` + `Normalize(mean, std)` and a
/// bilinear resize to `resize`×`resize` (when set). Evaluation applies only the last two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformSpec {
    /// One per channel, in `[0, 1]` units (as `Normalize` after `ToTensor`).
    pub mean: Vec<f64>,
    /// One per channel, finite and non-zero.
    pub std: Vec<f64>,
    /// Bilinear resize of the square output's side (`Resize(n)` of a square image); `None`:
    /// the images' own size.
    #[serde(default)]
    pub resize: Option<i64>,
    /// `RandomCrop(image size, padding = p)`: offsets uniform in `0..=2p` on each axis.
    #[serde(default)]
    pub random_crop_padding: Option<i64>,
    /// `RandomHorizontalFlip()` (probability one half) in training.
    pub flip: bool,
}

impl TransformSpec {
    /// The AlexNet tutorial's: flip, `Resize(227)`, CIFAR-10's mean and std.
    pub fn alexnet_tutorial() -> Self {
        Self {
            mean: CIFAR_MEAN.to_vec(),
            std: CIFAR_STD.to_vec(),
            resize: Some(crate::model::INPUT_SIZE),
            random_crop_padding: None,
            flip: true,
        }
    }

    /// kuangliu/pytorch-cifar's `main.py`: `RandomCrop(32, padding=4)`,
    /// `RandomHorizontalFlip()`, `ToTensor()`, `Normalize((0.4914, 0.4822, 0.4465),
    /// (0.2023, 0.1994, 0.2010))`, no resize.
    pub fn resnet18_cifar() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2023, 0.1994, 0.2010],
            resize: None,
            random_crop_padding: Some(4),
            flip: true,
        }
    }

    /// Channels the spec normalises.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Checks the spec on its own: one mean and one std per channel, finite, std non-zero, a
    /// resize of at least 1, a padding in `0..=MAX_PADDING`.
    pub fn validate(&self) -> Result<(), TransformError> {
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Err(TransformError::MeanStd { mean: self.mean.len(), std: self.std.len() });
        }
        if let Some((channel, &value)) = self.mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
            return Err(TransformError::Mean { channel, value });
        }
        if let Some((channel, &value)) = self.std.iter().enumerate().find(|(_, s)| !s.is_finite() || **s == 0.0) {
            return Err(TransformError::Std { channel, value });
        }
        if let Some(size) = self.resize.filter(|&s| s < 1) {
            return Err(TransformError::Resize(size));
        }
        if let Some(padding) = self.random_crop_padding.filter(|p| !(0..=MAX_PADDING).contains(p)) {
            return Err(TransformError::Padding(padding));
        }
        Ok(())
    }

    /// Checks that images of `[C, H, W]` = `shape` can go through: `C` is the spec's channel
    /// count, and the images have pixels.
    pub fn check_images(&self, shape: [i64; 3]) -> Result<(), TransformError> {
        if shape[0] != self.channels() as i64 {
            return Err(TransformError::Channels { images: shape[0], spec: self.channels() });
        }
        if shape.iter().any(|&d| d < 1) {
            return Err(TransformError::NoPixels(shape.to_vec()));
        }
        Ok(())
    }
}

/// What a transform spec, or images for it, cannot be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    #[error("the transform's mean has {mean} values and its std {std}: give one of each per channel of the images")]
    MeanStd { mean: usize, std: usize },
    #[error("the transform's mean of channel {channel} is {value}: it must be finite")]
    Mean { channel: usize, value: f64 },
    #[error("the transform's std of channel {channel} is {value}: it must be finite and non-zero")]
    Std { channel: usize, value: f64 },
    #[error("cannot resize to {0}×{0}: the size must be at least 1")]
    Resize(i64),
    #[error("random crop padding {0}: it must be in 0..={MAX_PADDING}")]
    Padding(i64),
    #[error(
        "the images have {images} channels but the transform normalises {spec} (its mean and std have one value per channel)"
    )]
    Channels { images: i64, spec: usize },
    #[error("images of shape [C, H, W] = {0:?} have no pixels")]
    NoPixels(Vec<i64>),
}

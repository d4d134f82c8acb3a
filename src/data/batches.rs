//! Batches of one split, drawn on the device that holds the images.
//!
//! The split's indices (and, for training, the epoch's order, flips and crop offsets) are
//! uploaded once per epoch; a step then only slices them, gathers its images with
//! `index_select` and runs the batched transforms. Nothing goes back to the host.

use tch::{Device, Kind, Tensor};

use crate::data::split::EpochPlan;
use crate::data::transforms::Preprocess;

/// One batch: `float [B, C, S, S]` images as the transforms leave them (`[B, 3, 227, 227]` in
/// the AlexNet recipe) and `int64 [B]` labels.
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
}

/// An iterator over the batches of one pass through a split.
pub struct Batches<'a> {
    images: &'a Tensor,
    labels: &'a Tensor,
    preprocess: &'a Preprocess,
    indices: Tensor,
    flips: Option<Tensor>,
    /// `int64 [len, 2]`: each position's crop `(top, left)`.
    crops: Option<Tensor>,
    batch_size: i64,
    position: i64,
    len: i64,
}

impl<'a> Batches<'a> {
    /// Batches of `images[indices]` in the given order, without flips (validation, test).
    pub fn new(
        images: &'a Tensor,
        labels: &'a Tensor,
        indices: &[i64],
        batch_size: usize,
        preprocess: &'a Preprocess,
    ) -> Self {
        let device = images.device();
        Self {
            images,
            labels,
            preprocess,
            indices: Tensor::from_slice(indices).to_device(device),
            flips: None,
            crops: None,
            batch_size: batch_size as i64,
            position: 0,
            len: indices.len() as i64,
        }
    }

    /// A training epoch: `split_indices` visited in `plan.order`, with the plan's flips and
    /// crop offsets when `augment` is on and the transforms flip and crop.
    ///
    /// Panics if the transforms crop, `augment` is on and the plan has no crop offsets: plans
    /// come from [`Preprocess::epoch_plan`], which draws them.
    pub fn for_epoch(
        images: &'a Tensor,
        labels: &'a Tensor,
        split_indices: &[i64],
        plan: &EpochPlan,
        augment: bool,
        batch_size: usize,
        preprocess: &'a Preprocess,
    ) -> Self {
        let ordered: Vec<i64> = plan.order.iter().map(|&i| split_indices[i]).collect();
        let mut batches = Self::new(images, labels, &ordered, batch_size, preprocess);
        if augment && preprocess.flips() {
            let flips: Vec<u8> = plan.flips.iter().map(|&f| f as u8).collect();
            let flips = Tensor::from_slice(&flips).to_kind(Kind::Bool).to_device(images.device());
            batches.flips = Some(flips);
        }
        if augment && preprocess.crop_padding().is_some() {
            assert_eq!(
                plan.crops.len(),
                plan.order.len(),
                "the transforms crop but the epoch plan has no crop offsets: make it with Preprocess::epoch_plan"
            );
            let crops: Vec<i64> = plan.crops.iter().flatten().copied().collect();
            let crops = Tensor::from_slice(&crops).view([-1, 2]).to_device(images.device());
            batches.crops = Some(crops);
        }
        batches
    }

    /// Skips the first `steps` batches (a run resumed in the middle of an epoch).
    pub fn skip_steps(mut self, steps: usize) -> Self {
        self.position = (steps as i64 * self.batch_size).min(self.len);
        self
    }

    pub fn device(&self) -> Device {
        self.images.device()
    }

    /// Number of batches in the whole pass.
    pub fn steps(&self) -> usize {
        (self.len as usize).div_ceil(self.batch_size as usize)
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.position >= self.len {
            return None;
        }
        let size = self.batch_size.min(self.len - self.position);
        let idx = self.indices.narrow(0, self.position, size);
        let flips = self.flips.as_ref().map(|f| f.narrow(0, self.position, size));
        let crops = self.crops.as_ref().map(|c| c.narrow(0, self.position, size));
        self.position += size;
        let images = self.preprocess.apply_gathered(self.images, &idx, flips.as_ref(), crops.as_ref());
        Some(Batch { images, labels: self.labels.index_select(0, &idx) })
    }
}

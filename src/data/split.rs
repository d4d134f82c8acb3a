//! The recipe's train/validation split and the per-epoch sampling order.
//!
//! The recipe shuffles the indices of the 50,000 training images with a seeded RNG, puts the
//! first `floor(valid_size × 50,000)` in validation and the rest in training, and then draws
//! each split through a `SubsetRandomSampler` (a fresh permutation every epoch). The same
//! structure here, with ChaCha8 as the seeded RNG (NumPy's Mersenne Twister stream is not
//! reproduced, so the 5,000 chosen images differ from the Python run's, not their number).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `valid_size` outside `[0, 1)` (or not a number).
#[derive(Debug, thiserror::Error)]
#[error("valid size must be in [0, 1), got {0}")]
pub struct InvalidValidSize(pub f64);

/// Indices into the training files, for training and for validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<i64>,
    pub valid: Vec<i64>,
}

/// Splits `0..n` as the recipe does: `floor(valid_size × n)` indices, chosen by a seeded
/// shuffle, for validation; the others for training.
pub fn train_valid_split(n: usize, valid_size: f64, seed: u64) -> Result<Split, InvalidValidSize> {
    if !(0.0..1.0).contains(&valid_size) {
        return Err(InvalidValidSize(valid_size));
    }
    let n_valid = (valid_size * n as f64).floor() as usize;
    let mut indices: Vec<i64> = (0..n as i64).collect();
    indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let train = indices.split_off(n_valid);
    Ok(Split { train, valid: indices })
}

/// The RNG of one epoch: independent of every other epoch's, so that a run resumed at any
/// epoch draws exactly what an uninterrupted run draws.
fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Stream 0 made the split; epoch e uses stream e + 1.
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// What one training epoch draws: the order of the training positions (a permutation of
/// `0..len`) and, per position in that order, whether the image is flipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    pub order: Vec<usize>,
    pub flips: Vec<bool>,
}

/// The seeded plan of `epoch` (0-based) for a training split of `len` images.
pub fn epoch_plan(len: usize, seed: u64, epoch: usize) -> EpochPlan {
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    let flips = (0..len).map(|_| rng.gen_bool(0.5)).collect();
    EpochPlan { order, flips }
}

/// Batches per epoch, the last partial batch included (704 for 45,000 images at 64).
pub fn steps_per_epoch(len: usize, batch_size: usize) -> usize {
    len.div_ceil(batch_size)
}

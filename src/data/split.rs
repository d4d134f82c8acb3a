//! The recipe's train/validation split and the per-epoch sampling order.
//!
//! The recipe shuffles the indices of the 50,000 training images with
//! `np.random.seed(seed); np.random.shuffle(indices)`, puts the first
//! `floor(valid_size × 50,000)` in validation and the rest in training, and then draws each
//! split through a `SubsetRandomSampler` (a fresh permutation every epoch).
//!
//! The split here is NumPy's, draw for draw ([`SplitRng::Numpy`], the default): MT19937
//! seeded as `RandomState.seed` does, NumPy's legacy Fisher–Yates and its bounded draw (mask,
//! then reject), so the validation images are the tutorial's. [`SplitRng::Chacha`] keeps the
//! ChaCha8 split of runs made before. Each epoch's order and flips come from ChaCha8 streams
//! (a pure function of seed and epoch, which makes resuming exact).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The generator that shuffles the indices before the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SplitRng {
    /// NumPy's `np.random.seed(seed); np.random.shuffle(indices)`: the tutorial's split.
    Numpy,
    /// ChaCha8 seeded with the seed (the split of runs made before the NumPy one existed).
    Chacha,
}

impl SplitRng {
    pub fn name(self) -> &'static str {
        match self {
            SplitRng::Numpy => "numpy",
            SplitRng::Chacha => "chacha",
        }
    }
}

/// `np.random.seed(seed); np.random.shuffle(x)` on a one-dimensional `x`: NumPy's legacy
/// `RandomState` (MT19937 seeded by `init_genrand`), Fisher–Yates from the end, each `j` drawn
/// in `[0, i]` by masking 32-bit outputs to the next power of two minus one and rejecting
/// values above `i` (`random_interval` in NumPy's `distributions.c`).
pub fn numpy_shuffle<T>(x: &mut [T], seed: u32) {
    let mut mt = rand_mt::Mt::new(seed);
    for i in (1..x.len()).rev() {
        let max = i as u64;
        let mask = u64::MAX >> max.leading_zeros();
        let j = if max <= u32::MAX as u64 {
            loop {
                let value = mt.next_u32() as u64 & mask;
                if value <= max {
                    break value;
                }
            }
        } else {
            loop {
                // NumPy's next_uint64 for MT19937: two 32-bit outputs, high word first.
                let value = ((mt.next_u32() as u64) << 32 | mt.next_u32() as u64) & mask;
                if value <= max {
                    break value;
                }
            }
        };
        x.swap(i, j as usize);
    }
}

/// What a split cannot be made from.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("valid size must be in [0, 1), got {0}")]
    ValidSize(f64),
    #[error(
        "NumPy's seed must be in 0..=4294967295 (np.random.seed), got {0}; use a smaller --seed or --split-rng chacha"
    )]
    NumpySeed(u64),
}

/// Indices into the training files, for training and for validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<i64>,
    pub valid: Vec<i64>,
}

/// Splits `0..n` as the recipe does: `floor(valid_size × n)` indices, chosen by a seeded
/// shuffle, for validation; the others for training. Both keep the shuffled order
/// (`valid = indices[:split]`, `train = indices[split:]`).
pub fn train_valid_split(n: usize, valid_size: f64, seed: u64, rng: SplitRng) -> Result<Split, SplitError> {
    if !(0.0..1.0).contains(&valid_size) {
        return Err(SplitError::ValidSize(valid_size));
    }
    // NumPy computes the split point in float64 too: int(np.floor(valid_size * num_train)).
    let n_valid = (valid_size * n as f64).floor() as usize;
    let mut indices: Vec<i64> = (0..n as i64).collect();
    match rng {
        SplitRng::Numpy => {
            let seed = u32::try_from(seed).map_err(|_| SplitError::NumpySeed(seed))?;
            numpy_shuffle(&mut indices, seed);
        }
        SplitRng::Chacha => indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed)),
    }
    let train = indices.split_off(n_valid);
    Ok(Split { train, valid: indices })
}

/// `split.json` of a run folder: the whole split in the tutorial's order, before any `--limit-*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitFile {
    pub rng: SplitRng,
    pub seed: u64,
    pub valid: Vec<i64>,
    pub train: Vec<i64>,
}

/// The RNG of one epoch: independent of every other epoch's, so that a run resumed at any
/// epoch draws exactly what an uninterrupted run draws.
fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Stream 0 made the split; epoch e uses stream e + 1.
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// The first stream of the crop offsets' RNG: epoch e draws its offsets from stream
/// `CROP_STREAMS + e`, far from the split's (0) and the epochs' orders and flips (e + 1).
const CROP_STREAMS: u64 = 1 << 63;

/// What one training epoch draws: the order of the training positions (a permutation of
/// `0..len`) and, per position in that order, whether the image is flipped and, when the
/// transforms crop, the crop's `[top, left]` offsets (empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    pub order: Vec<usize>,
    pub flips: Vec<bool>,
    pub crops: Vec<[i64; 2]>,
}

/// The seeded plan of `epoch` (0-based) for a training split of `len` images, without crop
/// offsets (see [`EpochPlan::with_crops`]).
pub fn epoch_plan(len: usize, seed: u64, epoch: usize) -> EpochPlan {
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    let flips = (0..len).map(|_| rng.gen_bool(0.5)).collect();
    EpochPlan { order, flips, crops: Vec::new() }
}

impl EpochPlan {
    /// The plan with crop offsets for `RandomCrop(size, padding)` at the image's own size: per
    /// position, `[top, left]` uniform in `0..=2·padding` (torchvision's `get_params` draws
    /// the top first). They come from a ChaCha8 stream of their own, a pure function of
    /// `(seed, epoch)`: the order and flips stay those of [`epoch_plan`], and a resumed run
    /// draws the same offsets.
    pub fn with_crops(mut self, seed: u64, epoch: usize, padding: i64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(CROP_STREAMS + epoch as u64);
        let max = 2 * padding.max(0);
        self.crops = (0..self.order.len()).map(|_| [rng.gen_range(0..=max), rng.gen_range(0..=max)]).collect();
        self
    }

    /// Rank `rank`'s share of the epoch in a job of `world_size` processes, as
    /// `DistributedSampler(shuffle=True, drop_last=False)` takes it from the epoch's order:
    /// padded with its own start to a multiple of the world size, then positions `rank,
    /// rank + world_size, …`. Flips and crop offsets travel with their positions.
    pub fn shard(self, rank: usize, world_size: usize) -> EpochPlan {
        if world_size == 1 || self.order.is_empty() {
            return self;
        }
        let total = self.order.len().div_ceil(world_size) * world_size;
        let padded = |i: usize| i % self.order.len();
        let positions: Vec<usize> = (rank..total).step_by(world_size).map(padded).collect();
        EpochPlan {
            order: positions.iter().map(|&p| self.order[p]).collect(),
            flips: positions.iter().map(|&p| self.flips[p]).collect(),
            // Empty when the transforms do not crop.
            crops: positions.iter().filter_map(|&p| self.crops.get(p).copied()).collect(),
        }
    }
}

/// Batches per epoch, the last partial batch included (704 for 45,000 images at 64).
pub fn steps_per_epoch(len: usize, batch_size: usize) -> usize {
    len.div_ceil(batch_size)
}

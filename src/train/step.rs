//! One optimisation step, as a PyTorch loop writes it: forward in train mode, cross-entropy,
//! backward, (gradient averaging under data parallelism, clipping), update; and the seed of
//! libtorch's generator before each step, which makes dropout a function of the step's position.

use anyhow::Result;
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

use crate::data::batches::Batch;
use crate::ffi::autocast_bf16;
use crate::train::config::TrainConfig;
use crate::train::optim::{clip_grad_norm, cross_entropy, Optimizer};

/// A seed for libtorch's generator before one step: mixes the run seed, the rank and the
/// position (SplitMix64), so dropout masks depend only on where the step is (rank 0 draws
/// what a single process draws).
pub(crate) fn step_seed(seed: u64, rank: usize, epoch: usize, step: usize) -> i64 {
    let seed = seed.wrapping_add((rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut z = seed ^ ((epoch as u64) << 32 | step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// What a training step does beyond the recipe's forward, loss, backward and update.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepSettings {
    /// bf16 autocast around the forward pass, on the device of the batch (CPU or CUDA).
    pub amp: bool,
    /// `F.cross_entropy(..., label_smoothing)`.
    pub label_smoothing: f64,
    /// Clip the gradients' total 2-norm to this after they are averaged, before the update.
    pub clip_grad_norm: Option<f64>,
}

impl StepSettings {
    /// The recipe's step: plain cross entropy, no clipping.
    pub fn recipe(amp: bool) -> Self {
        Self { amp, ..Self::default() }
    }

    /// The step `config` asks for.
    pub fn of(config: &TrainConfig) -> Self {
        Self { amp: config.bf16(), label_smoothing: config.label_smoothing, clip_grad_norm: config.clip_grad_norm }
    }
}

/// One optimisation step of the recipe: forward in train mode, cross-entropy, backward, update.
/// Returns the (detached) loss and logits; nothing is read back to the host.
pub fn train_step(
    net: &dyn ModuleT,
    optimizer: &mut dyn Optimizer,
    batch: &Batch,
    amp: bool,
) -> Result<(Tensor, Tensor)> {
    train_step_with(net, optimizer, batch, &StepSettings::recipe(amp), |_| Ok(()))
}

/// [`train_step`] with `settings` (label smoothing, clipping) and `after_backward` run on the
/// gradients before clipping and the update (data-parallel training averages them there, so
/// the norm clipped is that of the averaged gradients, as under DDP).
pub fn train_step_with(
    net: &dyn ModuleT,
    optimizer: &mut dyn Optimizer,
    batch: &Batch,
    settings: &StepSettings,
    after_backward: impl FnOnce(&dyn Optimizer) -> Result<()>,
) -> Result<(Tensor, Tensor)> {
    // The region is entered here, in the thread that runs the forward pass (libtorch keeps the
    // switch per thread); backward replays the casts autograd recorded, with no region needed.
    let logits = autocast_bf16(batch.images.device(), settings.amp, || net.forward_t(&batch.images, true))?;
    // Autocast's bf16/f16 logits: the loss in float32, as PyTorch's autocast takes it. float32
    // logits are used as they are, and float64 ones (a float64 model) keep float64: libtorch's
    // `cross_entropy_loss` (what `F.cross_entropy` calls) works in the logits' own precision.
    let logits = match logits.kind() {
        Kind::Float | Kind::Double => logits,
        _ => logits.to_kind(Kind::Float),
    };
    let loss = cross_entropy(&logits, &batch.labels, settings.label_smoothing)?;
    optimizer.zero_grad();
    loss.backward();
    after_backward(optimizer)?;
    if let Some(max_norm) = settings.clip_grad_norm {
        let params: Vec<Tensor> = optimizer.parameters().into_iter().map(|(_, p)| p).collect();
        let _total_norm = clip_grad_norm(&params, max_norm, 2.0)?;
    }
    optimizer.step()?;
    Ok((loss.detach(), logits.detach()))
}

//! PyTorch's optimizers and learning-rate schedules, step for step, with their state both ways
//! (our checkpoints and PyTorch's `optimizer.state_dict()` / `scheduler.state_dict()`).
//!
//! The seam between the two halves is [`LrGroups`]: a schedule only reads and writes each
//! parameter group's learning rate (and, for `OneCycleLR`, its momentum or `betas[0]`), as
//! PyTorch's schedulers do through `optimizer.param_groups`.
//!
//! The optimizers, each PyTorch's CPU code ported operation by operation on the same ATen
//! operators (so that the results agree bit for bit), behind one trait, [`Optimizer`]:
//!
//! - [`sgd`]: `torch.optim.SGD` (momentum, dampening, Nesterov, weight decay, maximize).
//! - [`adam`]: `torch.optim.Adam` and `AdamW` (amsgrad, maximize, and the fused kernels).
//! - [`optimizer`]: what they share (groups, per-parameter state, the traits' implementation).
//! - [`param_groups`]: PyTorch's `param_groups`, and the "no weight decay on biases and
//!   BatchNorm" split.
//! - [`pytorch_state`]: the state as PyTorch's `optimizer.state_dict()`, both ways.
//! - [`state`]: the state in this crate's own format (tensors by parameter name + JSON).
//! - [`clip`]: gradient clipping by total norm (`torch.nn.utils.clip_grad_norm_`).
//! - [`loss`]: `F.cross_entropy` with label smoothing.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tch_alexnet::train::optim::{param_groups, Adam, AdamConfig, LrGroups, Optimizer};
//! # let (vs, _net) = tch_alexnet::train::build_model(tch::Device::Cpu, 10, false)?;
//! let params = tch_alexnet::train::optim::ordered_parameters(&vs, &tch_alexnet::model::parameter_names())?;
//! let config = AdamConfig { lr: 3e-4, weight_decay: 0.05, ..AdamConfig::adamw() };
//! let mut opt = Adam::new(param_groups(params, config, true))?; // no decay on 1-dim parameters
//! // each step: opt.zero_grad(); loss.backward(); opt.step()?;
//! tch_alexnet::formats::pytorch::save("opt.pth".as_ref(), &opt.state_dict())?;
//! # Ok(()) }
//! ```

pub mod lr_scheduler;

/// What a learning-rate schedule may read and change in an optimizer: per parameter group, the
/// learning rate and the momentum (SGD's `momentum`, Adam's `betas[0]`), as PyTorch's schedulers
/// do through `optimizer.param_groups[i]['lr']` and `['momentum']` / `['betas']`.
pub trait LrGroups {
    /// How many parameter groups the optimizer has (PyTorch's `len(optimizer.param_groups)`).
    fn group_count(&self) -> usize;
    /// `param_groups[group]['lr']`.
    fn lr(&self, group: usize) -> f64;
    /// Sets `param_groups[group]['lr']`.
    fn set_lr(&mut self, group: usize, lr: f64);
    /// `param_groups[group]['momentum']` (SGD) or `['betas'][0]` (Adam, AdamW); `None` when the
    /// optimizer has neither key (PyTorch's `OneCycleLR(cycle_momentum=True)` then refuses).
    fn momentum(&self, group: usize) -> Option<f64>;
    /// Sets the momentum or `betas[0]` of `group`; ignored when [`LrGroups::momentum`] is `None`.
    fn set_momentum(&mut self, group: usize, momentum: f64);
}

pub mod adam;
pub mod clip;
pub mod loss;
pub mod optimizer;
pub mod param_groups;
pub mod pytorch_state;
pub mod sgd;
pub mod state;

pub use adam::{Adam, AdamConfig, AdamState};
pub use clip::clip_grad_norm;
pub use loss::cross_entropy;
pub use optimizer::{Optim, ParamState, Rule};
pub use param_groups::{ordered_parameters, param_groups, split_no_decay, NamedParams, OrderError, ParamGroup};
pub use sgd::{Sgd, SgdConfig, SgdState};
pub use state::SavedState;

use tch::Tensor;

use crate::ffi::optim::OpError;
use crate::formats::pytorch::PtValue;

/// What every optimizer offers the training loop, resume, checkpoints and data-parallel
/// training, whichever update rule it applies (PyTorch's `torch.optim.Optimizer` interface).
pub trait Optimizer: LrGroups + Send {
    /// PyTorch's class name: `SGD`, `Adam` or `AdamW`.
    fn name(&self) -> &'static str;
    /// One update from the gradients of the last backward pass (`optimizer.step()`);
    /// parameters without a gradient are left alone, as in PyTorch.
    fn step(&mut self) -> Result<(), OptimError>;
    /// Drops every gradient (`optimizer.zero_grad()`, whose default is `set_to_none=True`).
    fn zero_grad(&mut self);
    /// All parameters, group after group: position `i` is PyTorch's state id `i`.
    fn parameters(&self) -> Vec<(String, Tensor)>;
    /// The names of the parameters of `group`.
    fn group_parameter_names(&self, group: usize) -> Vec<String>;
    /// `param_groups[group]['weight_decay']`.
    fn weight_decay(&self, group: usize) -> f64;
    fn set_weight_decay(&mut self, group: usize, weight_decay: f64);
    /// An extra float key of `param_groups[group]` (`initial_lr`, `max_lr`, …), if set.
    fn extra(&self, group: usize, key: &str) -> Option<f64>;
    /// Sets an extra float key; the optimizer's own keys (`lr`, `betas`, …) are refused, as
    /// they have setters of their own.
    fn set_extra(&mut self, group: usize, key: &str, value: f64) -> Result<(), OptimError>;
    /// PyTorch's `optimizer.state_dict()` layout (see [`pytorch_state`]).
    fn state_dict(&self) -> PtValue;
    /// Replaces hyperparameters, extra keys and state with those of a PyTorch
    /// `optimizer.state_dict()`, as `optimizer.load_state_dict` does; nothing changes on error.
    fn load_state_dict(&mut self, state_dict: &PtValue) -> Result<(), StateError>;
    /// The state in this crate's own format, by parameter name (see [`state`]).
    fn save_state(&self) -> SavedState;
    /// Restores [`Optimizer::save_state`]'s result; nothing changes on error.
    fn load_state(&mut self, saved: &SavedState) -> Result<(), StateError>;
}

/// Errors of building or stepping an optimizer.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("{optimizer}: {reason}")]
    Config { optimizer: &'static str, reason: String },
}

/// Errors of restoring an optimizer's state; each says which part of the state is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the optimizer state is not {expected}: {reason}")]
    Layout { expected: &'static str, reason: String },
    #[error("the saved optimizer has {found} parameter groups, this one {expected}")]
    GroupCount { found: usize, expected: usize },
    #[error("parameter group {group} of the saved optimizer has {found} parameters, this one {expected}")]
    ParamCount { group: usize, found: usize, expected: usize },
    #[error("parameter group {group} of the saved optimizer: {reason}")]
    Group { group: usize, reason: String },
    #[error("the saved state of parameter {id} (`{name}`): {reason}")]
    Param { id: String, name: String, reason: String },
    #[error("the saved state was written by {found}, this optimizer is {expected}")]
    Kind { found: String, expected: &'static str },
}

//! PyTorch's optimizers and learning-rate schedules, step for step, with their state both ways
//! (our checkpoints and PyTorch's `optimizer.state_dict()` / `scheduler.state_dict()`).
//!
//! The seam between the two halves is [`LrGroups`]: a schedule only reads and writes each
//! parameter group's learning rate (and, for `OneCycleLR`, its momentum or `betas[0]`), as
//! PyTorch's schedulers do through `optimizer.param_groups`.

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

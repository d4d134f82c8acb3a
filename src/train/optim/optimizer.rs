//! What all optimizers share, as `torch.optim.Optimizer` is their base class: the parameter
//! groups, the per-parameter state, and the [`Optimizer`] and [`LrGroups`] interfaces. An
//! optimizer is an [`Optim`] with a [`Rule`]: the update of one group and the kind of state it
//! keeps per parameter.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use tch::{Device, Kind, Tensor};

use super::param_groups::{Hyper, ParamGroup};
use super::state::SavedState;
use super::{pytorch_state, state, LrGroups, OptimError, Optimizer, StateError};
use crate::formats::pytorch::PtValue;

/// The state an update rule keeps for one parameter (PyTorch's `optimizer.state[p]`).
pub trait ParamState: Sized + Send + 'static {
    type Config: Hyper;
    /// The state's tensors under PyTorch's keys, in the order PyTorch creates them.
    fn entries(&self) -> Vec<(&'static str, &Tensor)>;
    /// Builds the state of `param` from saved tensors (`get(key)`), each moved to the
    /// parameter's device and dtype and checked against its shape; the reason when something
    /// is missing or wrong.
    fn from_entries(
        get: &dyn Fn(&str) -> Option<Tensor>,
        param: &Tensor,
        config: &Self::Config,
    ) -> Result<Self, String>;
}

/// An update rule: what `torch.optim.SGD.step` or `torch.optim.Adam.step` does to one group.
pub trait Rule: Send + 'static {
    type Config: Hyper;
    type State: ParamState<Config = Self::Config>;
    /// PyTorch's class name for this configuration (`Adam` or `AdamW`).
    fn name(config: &Self::Config) -> &'static str;
    /// Updates the parameters of one group that have a gradient, creating their state on
    /// their first step; called under `no_grad`.
    fn step_group(
        config: &Self::Config,
        params: &mut [(String, Tensor)],
        state: &mut [Option<Self::State>],
    ) -> Result<(), OptimError>;
}

/// An optimizer: parameter groups and per-parameter state, updated by the rule `R`.
pub struct Optim<R: Rule> {
    pub(crate) groups: Vec<ParamGroup<R::Config>>,
    /// `state[g][i]`: the state of parameter `i` of group `g`, `None` until its first step.
    pub(crate) state: Vec<Vec<Option<R::State>>>,
    rule: PhantomData<R>,
}

impl<R: Rule> Optim<R> {
    /// An optimizer over `groups` (PyTorch: `Opt([{'params': ..., 'lr': ...}, ...])`). Each
    /// group's settings are checked as PyTorch's constructor checks them; a parameter may be
    /// in one group only.
    pub fn new(groups: Vec<ParamGroup<R::Config>>) -> Result<Self, OptimError> {
        let name = groups.first().map_or("optimizer", |g| R::name(&g.config));
        let config_err = |reason: String| OptimError::Config { optimizer: name, reason };
        if groups.iter().all(|g| g.params.is_empty()) {
            return Err(config_err("optimizer got an empty parameter list".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, group) in groups.iter().enumerate() {
            group.config.validate().map_err(|r| config_err(format!("parameter group {i}: {r}")))?;
            for (n, _) in &group.params {
                if !seen.insert(n.as_str()) {
                    return Err(config_err(format!("parameter `{n}` appears in more than one place")));
                }
            }
        }
        let state = groups.iter().map(|g| g.params.iter().map(|_| None).collect()).collect();
        Ok(Self { groups, state, rule: PhantomData })
    }

    /// The parameter groups (parameters, settings, extra keys).
    pub fn groups(&self) -> &[ParamGroup<R::Config>] {
        &self.groups
    }

    /// The settings of `group`, to change them between steps (as assigning to
    /// `param_groups[group][key]` does in PyTorch).
    pub fn config_mut(&mut self, group: usize) -> &mut R::Config {
        &mut self.groups[group].config
    }

    /// The state of parameter `id` (PyTorch's numbering: all groups, in order), if stepped.
    pub fn param_state(&self, id: usize) -> Option<&R::State> {
        self.state.iter().flatten().nth(id).and_then(Option::as_ref)
    }
}

impl<R: Rule> LrGroups for Optim<R> {
    fn group_count(&self) -> usize {
        self.groups.len()
    }
    fn lr(&self, group: usize) -> f64 {
        self.groups[group].config.lr()
    }
    fn set_lr(&mut self, group: usize, lr: f64) {
        self.groups[group].config.set_lr(lr);
    }
    fn momentum(&self, group: usize) -> Option<f64> {
        self.groups[group].config.momentum()
    }
    fn set_momentum(&mut self, group: usize, momentum: f64) {
        self.groups[group].config.set_momentum(momentum);
    }
}

impl<R: Rule> Optimizer for Optim<R> {
    fn name(&self) -> &'static str {
        R::name(&self.groups[0].config)
    }

    fn step(&mut self) -> Result<(), OptimError> {
        tch::no_grad(|| {
            for (group, state) in self.groups.iter_mut().zip(&mut self.state) {
                R::step_group(&group.config, &mut group.params, state)?;
            }
            Ok(())
        })
    }

    fn zero_grad(&mut self) {
        for (_, p) in self.groups.iter_mut().flat_map(|g| g.params.iter_mut()) {
            crate::ffi::clear_grad(p).expect("libtorch failed to drop a gradient");
        }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.groups.iter().flat_map(|g| g.params.iter().map(|(n, p)| (n.clone(), p.shallow_clone()))).collect()
    }

    fn group_parameter_names(&self, group: usize) -> Vec<String> {
        self.groups[group].params.iter().map(|(n, _)| n.clone()).collect()
    }

    fn weight_decay(&self, group: usize) -> f64 {
        self.groups[group].config.weight_decay()
    }

    fn set_weight_decay(&mut self, group: usize, weight_decay: f64) {
        self.groups[group].config.set_weight_decay(weight_decay);
    }

    fn extra(&self, group: usize, key: &str) -> Option<f64> {
        self.groups[group].extra.get(key).copied()
    }

    fn set_extra(&mut self, group: usize, key: &str, value: f64) -> Result<(), OptimError> {
        if key == "params" || <R::Config as Hyper>::KEYS.contains(&key) {
            let reason = format!("`{key}` is one of the optimizer's own settings, not an extra key");
            return Err(OptimError::Config { optimizer: self.name(), reason });
        }
        self.groups[group].extra.insert(key.to_string(), value);
        Ok(())
    }

    fn state_dict(&self) -> PtValue {
        pytorch_state::export(&self.groups, &self.state)
    }

    fn load_state_dict(&mut self, state_dict: &PtValue) -> Result<(), StateError> {
        let (groups, state) = pytorch_state::import::<R>(&self.groups, state_dict)?;
        self.install(groups, state);
        Ok(())
    }

    fn save_state(&self) -> SavedState {
        state::export::<R>(self.name(), &self.groups, &self.state)
    }

    fn load_state(&mut self, saved: &SavedState) -> Result<(), StateError> {
        let (groups, state) = state::import::<R>(self.name(), &self.groups, saved)?;
        self.install(groups, state);
        Ok(())
    }
}

/// The settings and extra keys of each group, read from a saved state.
pub(crate) type LoadedGroups<H> = Vec<(H, BTreeMap<String, f64>)>;

/// Everything a saved state gives an optimizer: each group's settings and extra keys, and the
/// state of each parameter.
pub(crate) type Loaded<R> = (LoadedGroups<<R as Rule>::Config>, Vec<Vec<Option<<R as Rule>::State>>>);

impl<R: Rule> Optim<R> {
    fn install(&mut self, groups: LoadedGroups<R::Config>, state: Vec<Vec<Option<R::State>>>) {
        for (group, (config, extra)) in self.groups.iter_mut().zip(groups) {
            group.config = config;
            group.extra = extra;
        }
        self.state = state;
    }
}

/// `saved` on the device and in the dtype of `param`, after checking its shape (PyTorch's
/// `Optimizer._process_value_according_to_param_policy`).
pub(crate) fn like_param(saved: &Tensor, param: &Tensor) -> Result<Tensor, String> {
    if saved.size() != param.size() {
        return Err(format!("shape {:?}, but the parameter has shape {:?}", saved.size(), param.size()));
    }
    Ok(own(saved, saved.to_device(param.device()).to_kind(param.kind())))
}

/// `converted`, or a copy of it where the conversion was a no-op: the optimizer's state is
/// updated in place and must not write through into the caller's saved state.
fn own(saved: &Tensor, converted: Tensor) -> Tensor {
    if converted.data_ptr() == saved.data_ptr() {
        converted.copy()
    } else {
        converted
    }
}

/// A saved `step`: a number or a one-element tensor, as a 0-dim float32 tensor on `device`.
pub(crate) fn step_tensor(saved: &Tensor, device: Device) -> Result<Tensor, String> {
    if saved.numel() != 1 {
        return Err(format!("'step' has {} elements, expected one", saved.numel()));
    }
    Ok(own(saved, saved.reshape([] as [i64; 0]).to_kind(Kind::Float).to_device(device)))
}

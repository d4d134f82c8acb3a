//! Parameter groups, as `torch.optim.Optimizer.param_groups`: each group has its parameters
//! (by name, in the order the caller gives, which must be PyTorch's `model.parameters()` order
//! for the state to line up with PyTorch's ids), its own hyperparameters, and extra float keys
//! that learning-rate schedules keep there (`initial_lr`, `max_lr`, …).
//!
//! tch's `VarStore` keeps no order, so the caller supplies it: for AlexNet,
//! [`crate::model::parameter_names`] gives PyTorch's; [`ordered_parameters`] picks those out of
//! a `VarStore`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{nn, Tensor};

use crate::formats::pytorch::PtValue;

/// Parameters by name, in `model.parameters()` order.
pub type NamedParams = Vec<(String, Tensor)>;

/// The hyperparameters of one parameter group of an optimizer, with their PyTorch spelling.
pub trait Hyper: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + 'static {
    /// The keys of a PyTorch param group that this type reads (all but `params`); any other key
    /// holding a number is carried as an extra key.
    const KEYS: &'static [&'static str];
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// SGD's `momentum`, Adam's `betas[0]`.
    fn momentum(&self) -> Option<f64>;
    fn set_momentum(&mut self, momentum: f64);
    fn weight_decay(&self) -> f64;
    fn set_weight_decay(&mut self, weight_decay: f64);
    /// Refuses what PyTorch's constructor refuses (and what is not supported here), with the
    /// reason.
    fn validate(&self) -> Result<(), String>;
    /// The group's keys as torch 2.13 writes them in `state_dict()['param_groups']`, in its
    /// order, without `params`.
    fn to_pytorch(&self) -> Vec<(&'static str, PtValue)>;
    /// Reads a PyTorch param group: numbers are required, flags missing from files of older
    /// PyTorch versions take the defaults that PyTorch's `__setstate__` gives them.
    fn from_pytorch(group: &PtValue) -> Result<Self, String>;
}

/// One parameter group: parameters, hyperparameters, and extra float keys.
#[derive(Debug)]
pub struct ParamGroup<H> {
    pub params: NamedParams,
    pub config: H,
    /// Keys that schedules add to PyTorch's param groups (`initial_lr`, `max_lr`, `min_lr`,
    /// `max_momentum`, `base_momentum`), kept through both state formats.
    pub extra: BTreeMap<String, f64>,
}

impl<H> ParamGroup<H> {
    pub fn new(params: NamedParams, config: H) -> Self {
        Self { params, config, extra: BTreeMap::new() }
    }
}

/// Splits parameters as PyTorch users usually do for "no weight decay on biases and
/// BatchNorm": `p.ndim <= 1` goes to the second list. Each list keeps the given order.
pub fn split_no_decay(params: NamedParams) -> (NamedParams, NamedParams) {
    params.into_iter().partition(|(_, p)| p.dim() > 1)
}

/// The parameter groups of a usual PyTorch recipe: one group with `config` for all parameters,
/// or with `no_decay_on_1d`, two groups as
/// `[{'params': decay}, {'params': no_decay, 'weight_decay': 0.0}]` (see [`split_no_decay`]).
/// Both groups exist even if one is empty, so that group indexes do not depend on the model.
pub fn param_groups<H: Hyper>(params: NamedParams, config: H, no_decay_on_1d: bool) -> Vec<ParamGroup<H>> {
    if !no_decay_on_1d {
        return vec![ParamGroup::new(params, config)];
    }
    let (decay, no_decay) = split_no_decay(params);
    let mut no_decay_config = config.clone();
    no_decay_config.set_weight_decay(0.0);
    vec![ParamGroup::new(decay, config), ParamGroup::new(no_decay, no_decay_config)]
}

/// What [`ordered_parameters`] refuses: an order that does not name exactly the trainable
/// variables.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("the parameter order names `{0}`, which is not a trainable variable of the model")]
    Unknown(String),
    #[error("the trainable variable `{0}` is not in the parameter order")]
    Left(String),
}

/// The trainable variables of `vs` named in `order` (PyTorch's `parameters()` order), as
/// handles on the same tensors.
pub fn ordered_parameters(vs: &nn::VarStore, order: &[String]) -> Result<NamedParams, OrderError> {
    let mut variables: BTreeMap<String, Tensor> =
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    let mut out = Vec::with_capacity(order.len());
    for name in order {
        let t = variables.remove(name).ok_or_else(|| OrderError::Unknown(name.clone()))?;
        out.push((name.clone(), t));
    }
    match variables.into_keys().next() {
        Some(left) => Err(OrderError::Left(left)),
        None => Ok(out),
    }
}

/// The reason of the first check that fails (`(passed, reason)` pairs), as a constructor's
/// argument checks.
pub(crate) fn first_failure(checks: impl IntoIterator<Item = (bool, String)>) -> Result<(), String> {
    match checks.into_iter().find(|(ok, _)| !ok) {
        Some((_, reason)) => Err(reason),
        None => Ok(()),
    }
}

/// A float from a PyTorch param group (an int is accepted: Python code writes `lr=1`).
pub(crate) fn float_key(group: &PtValue, key: &str) -> Result<f64, String> {
    match group.get(key) {
        Some(v) if v.as_bool().is_none() => {
            v.as_float().ok_or_else(|| format!("'{key}' is a {}, not a number", v.type_name()))
        }
        Some(v) => Err(format!("'{key}' is a {}, not a number", v.type_name())),
        None => Err(format!("it has no '{key}'")),
    }
}

/// A flag from a PyTorch param group, `default` when absent.
pub(crate) fn bool_key(group: &PtValue, key: &str, default: bool) -> Result<bool, String> {
    match group.get(key) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| format!("'{key}' is a {}, not a bool", v.type_name())),
    }
}

/// An optional flag (`foreach`, `fused`: `None` means "PyTorch picks").
pub(crate) fn option_bool_key(group: &PtValue, key: &str) -> Result<Option<bool>, String> {
    match group.get(key) {
        None | Some(PtValue::None) => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| format!("'{key}' is a {}, not a bool or None", v.type_name())),
    }
}

pub(crate) fn option_bool_value(v: Option<bool>) -> PtValue {
    v.map_or(PtValue::None, PtValue::Bool)
}

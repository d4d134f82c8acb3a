//! The optimizer's state in PyTorch's `optimizer.state_dict()` layout, both ways:
//!
//! ```text
//! {'state': {0: {'momentum_buffer': t},                                    # SGD
//!            1: {'step': tensor(3.), 'exp_avg': t, 'exp_avg_sq': t[, 'max_exp_avg_sq': t]},  # Adam
//!            ...},
//!  'param_groups': [{'lr': ..., <the optimizer's other keys>, <extra keys>, 'params': [0, 1, ...]},
//!                   ...]}
//! ```
//!
//! Ids run over all groups in group order, each group's parameters in the order given at
//! construction (PyTorch's `model.parameters()` order); parameters not stepped yet have no
//! entry. As `Optimizer.load_state_dict` does, loading maps the saved ids to parameters by
//! position (the first id of the first group is the first parameter, …), replaces each group's
//! settings (and extra keys) with the saved ones, and moves each state tensor to its
//! parameter's device and dtype (`step` stays a float32 scalar); every shape is checked.

use std::collections::BTreeMap;

use tch::Tensor;

use super::optimizer::{Loaded, ParamState, Rule};
use super::param_groups::{Hyper, ParamGroup};
use super::StateError;
use crate::formats::pytorch::PtValue;

const EXPECTED: &str = "an optimizer.state_dict() ({'state': {...}, 'param_groups': [...]})";

fn layout(reason: impl Into<String>) -> StateError {
    StateError::Layout { expected: EXPECTED, reason: reason.into() }
}

/// `optimizer.state_dict()` of `groups` with `state`.
pub(crate) fn export<H: Hyper, S: ParamState>(groups: &[ParamGroup<H>], state: &[Vec<Option<S>>]) -> PtValue {
    let mut entries = Vec::new();
    let mut param_groups = Vec::new();
    let mut id = 0i64;
    for (group, group_state) in groups.iter().zip(state) {
        let mut ids = Vec::new();
        for s in group_state {
            if let Some(s) = s {
                let tensors =
                    s.entries().into_iter().map(|(k, t)| (PtValue::from(k), PtValue::Tensor(t.shallow_clone())));
                entries.push((PtValue::Int(id), PtValue::Dict(tensors.collect())));
            }
            ids.push(PtValue::Int(id));
            id += 1;
        }
        let mut keys: Vec<(PtValue, PtValue)> =
            group.config.to_pytorch().into_iter().map(|(k, v)| (PtValue::from(k), v)).collect();
        keys.extend(group.extra.iter().map(|(k, v)| (PtValue::from(k.as_str()), PtValue::Float(*v))));
        keys.push((PtValue::from("params"), PtValue::List(ids)));
        param_groups.push(PtValue::Dict(keys));
    }
    PtValue::Dict(vec![
        (PtValue::from("state"), PtValue::Dict(entries)),
        (PtValue::from("param_groups"), PtValue::List(param_groups)),
    ])
}

/// The number-valued keys of a saved group that the optimizer does not know: schedules' keys.
fn extra_keys<H: Hyper>(group: &PtValue) -> BTreeMap<String, f64> {
    let items = group.as_dict().unwrap_or_default();
    items
        .iter()
        .filter_map(|(k, v)| {
            let k = k.as_str()?;
            let known = k == "params" || H::KEYS.contains(&k);
            let number = matches!(v, PtValue::Float(_) | PtValue::Int(_));
            (!known && number).then(|| (k.to_string(), v.as_float().unwrap_or_default()))
        })
        .collect()
}

/// The settings and state that `state_dict` gives an optimizer whose groups are `groups`,
/// checked through; the caller installs them only when everything is right.
pub(crate) fn import<R: Rule>(groups: &[ParamGroup<R::Config>], state_dict: &PtValue) -> Result<Loaded<R>, StateError> {
    let saved_groups = state_dict.get("param_groups").ok_or_else(|| layout("it has no 'param_groups'"))?;
    let saved_groups = saved_groups.as_list().ok_or_else(|| layout("'param_groups' is not a list"))?;
    let saved_state = match state_dict.get("state") {
        Some(s) => s.as_dict().ok_or_else(|| layout("'state' is not a dict"))?,
        None => return Err(layout("it has no 'state'")),
    };
    if saved_groups.len() != groups.len() {
        return Err(StateError::GroupCount { found: saved_groups.len(), expected: groups.len() });
    }
    let mut loaded_groups = Vec::new();
    let mut loaded_state = Vec::new();
    let mut used = 0;
    for (g, (saved, group)) in saved_groups.iter().zip(groups).enumerate() {
        let group_err = |reason: String| StateError::Group { group: g, reason };
        let ids = saved
            .get("params")
            .and_then(PtValue::as_list)
            .ok_or_else(|| group_err("it has no list 'params'".into()))?;
        if ids.len() != group.params.len() {
            return Err(StateError::ParamCount { group: g, found: ids.len(), expected: group.params.len() });
        }
        let config = R::Config::from_pytorch(saved).map_err(group_err)?;
        config.validate().map_err(group_err)?;
        let mut group_state = Vec::new();
        for (id, (name, param)) in ids.iter().zip(&group.params) {
            let id = id.as_int().ok_or_else(|| group_err(format!("'params' holds a {}, not an id", id.type_name())))?;
            let entry = saved_state.iter().find(|(k, _)| k.as_int() == Some(id)).map(|(_, v)| v);
            let param_err = |reason: String| StateError::Param { id: id.to_string(), name: name.clone(), reason };
            let state = match entry {
                None => None,
                Some(entry) => {
                    used += 1;
                    Some(param_state::<R>(entry, param, &config).map_err(param_err)?)
                }
            };
            group_state.push(state);
        }
        loaded_groups.push((config, extra_keys::<R::Config>(saved)));
        loaded_state.push(group_state);
    }
    if used != saved_state.len() {
        return Err(layout(format!("'state' has {} entries for ids that no group lists", saved_state.len() - used)));
    }
    Ok((loaded_groups, loaded_state))
}

fn param_state<R: Rule>(entry: &PtValue, param: &Tensor, config: &R::Config) -> Result<R::State, String> {
    let items = entry.as_dict().ok_or_else(|| format!("its state is a {}, not a dict", entry.type_name()))?;
    let get = |key: &str| -> Option<Tensor> {
        let value = items.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)?;
        match value {
            PtValue::Tensor(t) => Some(t.shallow_clone()),
            // Files of PyTorch < 1.12 keep `step` as a Python number.
            PtValue::Float(_) | PtValue::Int(_) => Some(Tensor::from(value.as_float()? as f32)),
            _ => None,
        }
    };
    R::State::from_entries(&get, param, config)
}

//! The optimizer's state in this crate's own format, for the run folder's checkpoints: a flat
//! map of tensors by name plus the settings as JSON, which [`SavedState::save`] writes as one
//! safetensors file (the JSON under the metadata key `optimizer`).
//!
//! - tensors: `<parameter name>.<PyTorch state key>`, e.g. `features.0.weight.exp_avg`,
//!   `features.0.weight.step` (a 0-dim float32), `fc1.1.bias.momentum_buffer`; a parameter not
//!   stepped yet has none.
//! - JSON: `{"optimizer": "AdamW", "param_groups": [{"params": [names], "config": {the group's
//!   settings, e.g. "lr", "betas", ...}, "extra": {"initial_lr": ...}}, ...]}`.
//!
//! Unlike PyTorch's layout (numbered parameters), everything is by name, so loading checks that
//! each group has the same parameters in the same order, and each tensor the parameter's shape.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::optimizer::{Loaded, ParamState, Rule};
use super::param_groups::{Hyper, ParamGroup};
use super::StateError;
use crate::formats::safetensors::{self, CheckpointError, Metadata};

/// The metadata key of the JSON in a file written by [`SavedState::save`].
pub const METADATA_KEY: &str = "optimizer";

/// An optimizer's state by parameter name, and its settings as JSON.
#[derive(Debug)]
pub struct SavedState {
    pub tensors: BTreeMap<String, Tensor>,
    pub settings: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct Settings<H> {
    optimizer: String,
    param_groups: Vec<GroupSettings<H>>,
}

#[derive(Serialize, Deserialize)]
struct GroupSettings<H> {
    params: Vec<String>,
    config: H,
    extra: BTreeMap<String, f64>,
}

impl SavedState {
    /// Writes the state to `path` (safetensors, atomically), merging `metadata` (e.g. the loop's
    /// position) with the settings, which go under [`METADATA_KEY`].
    pub fn save(&self, path: &Path, metadata: &Metadata) -> Result<(), CheckpointError> {
        let mut metadata = metadata.clone();
        metadata.insert(METADATA_KEY.to_string(), self.settings.to_string());
        safetensors::save_tensors(path, self.tensors.iter().map(|(k, t)| (k.as_str(), t)), &metadata)
    }

    /// Reads a file written by [`SavedState::save`]; also returns the whole metadata.
    pub fn load(path: &Path) -> Result<(Self, Metadata), CheckpointError> {
        let loaded = safetensors::load_tensors(path)?;
        let format = |reason: String| CheckpointError::Format { path: path.to_path_buf(), reason };
        let json = loaded.metadata.get(METADATA_KEY).ok_or_else(|| format(format!("no metadata `{METADATA_KEY}`")))?;
        let settings = serde_json::from_str(json).map_err(|e| format(format!("metadata `{METADATA_KEY}`: {e}")))?;
        Ok((Self { tensors: loaded.tensors, settings }, loaded.metadata))
    }
}

pub(crate) fn export<R: Rule>(
    name: &str,
    groups: &[ParamGroup<R::Config>],
    state: &[Vec<Option<R::State>>],
) -> SavedState {
    let mut tensors = BTreeMap::new();
    for (group, group_state) in groups.iter().zip(state) {
        for ((param, _), s) in group.params.iter().zip(group_state) {
            for (key, t) in s.iter().flat_map(ParamState::entries) {
                tensors.insert(format!("{param}.{key}"), t.shallow_clone());
            }
        }
    }
    let param_groups = groups
        .iter()
        .map(|g| GroupSettings {
            params: g.params.iter().map(|(n, _)| n.clone()).collect(),
            config: g.config.clone(),
            extra: g.extra.clone(),
        })
        .collect();
    let settings = Settings { optimizer: name.to_string(), param_groups };
    let settings = serde_json::to_value(settings).expect("optimizer settings are plain numbers, flags and names");
    SavedState { tensors, settings }
}

/// Adam and AdamW share their state and settings (AdamW is Adam with decoupled weight decay).
fn same_family(a: &str, b: &str) -> bool {
    a == b || (a.starts_with("Adam") && b.starts_with("Adam"))
}

pub(crate) fn import<R: Rule>(
    name: &'static str,
    groups: &[ParamGroup<R::Config>],
    saved: &SavedState,
) -> Result<Loaded<R>, StateError> {
    let found = saved.settings.get("optimizer").and_then(|v| v.as_str()).unwrap_or("an unknown optimizer");
    if !same_family(found, name) {
        return Err(StateError::Kind { found: found.to_string(), expected: name });
    }
    let settings: Settings<R::Config> = serde_json::from_value(saved.settings.clone())
        .map_err(|e| StateError::Layout { expected: "this crate's optimizer state", reason: e.to_string() })?;
    if settings.param_groups.len() != groups.len() {
        return Err(StateError::GroupCount { found: settings.param_groups.len(), expected: groups.len() });
    }
    let mut loaded_groups = Vec::new();
    let mut loaded_state = Vec::new();
    let mut used = 0;
    for (g, (s, group)) in settings.param_groups.into_iter().zip(groups).enumerate() {
        let names: Vec<&str> = group.params.iter().map(|(n, _)| n.as_str()).collect();
        if s.params != names {
            let reason = format!("its parameters are {:?}, this optimizer's {names:?}", s.params);
            return Err(StateError::Group { group: g, reason });
        }
        s.config.validate().map_err(|reason| StateError::Group { group: g, reason })?;
        let mut group_state = Vec::new();
        for (name, param) in &group.params {
            let prefix = format!("{name}.");
            let keys: Vec<&String> = saved
                .tensors
                .keys()
                .filter(|k| k.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('.')))
                .collect();
            if keys.is_empty() {
                group_state.push(None);
                continue;
            }
            used += keys.len();
            let get = |key: &str| saved.tensors.get(&format!("{prefix}{key}")).map(Tensor::shallow_clone);
            let state = R::State::from_entries(&get, param, &s.config).map_err(|reason| StateError::Param {
                id: name.clone(),
                name: name.clone(),
                reason,
            })?;
            group_state.push(Some(state));
        }
        loaded_groups.push((s.config, s.extra));
        loaded_state.push(group_state);
    }
    if used != saved.tensors.len() {
        let reason = format!("{} saved tensors belong to no parameter", saved.tensors.len() - used);
        return Err(StateError::Layout { expected: "this crate's optimizer state", reason });
    }
    Ok((loaded_groups, loaded_state))
}

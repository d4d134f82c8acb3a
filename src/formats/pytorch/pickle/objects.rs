//! The pickle machine's values: the allowed globals, objects, and the shared containers
//! (lists, tuples, dicts) that the memo hands out by reference, as Python does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tch::{Kind, Tensor};

use super::super::STORAGE_TYPES;

/// The globals a pickle may name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Global {
    OrderedDict,
    Counter,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(Kind),
}

pub(super) fn allowed(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("collections", "Counter") => Some(Global::Counter),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => Some(Global::RebuildParameterWithState),
        ("torch", storage) => STORAGE_TYPES.iter().find(|(n, _)| *n == storage).map(|&(_, kind)| Global::Storage(kind)),
        _ => None,
    }
}

#[derive(Clone)]
pub(super) enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Ref(Rc<RefCell<Container>>),
    Global(Global),
    /// A whole storage, as a 1-D tensor.
    Storage(Rc<Tensor>),
    Tensor(Rc<Tensor>),
}

pub(super) enum Container {
    List(Vec<Obj>),
    Tuple(Vec<Obj>),
    Dict(Dict),
}

#[derive(Clone, Default)]
pub(super) struct Dict {
    pub(super) items: Vec<(Obj, Obj)>,
    /// Positions of the string and int keys, so that a repeated key replaces the value.
    index: HashMap<Key, usize>,
    pub(super) kind: DictKind,
}

/// Which class of dict: Python's own, or one of the two subclasses allowed.
#[derive(Clone, Copy, Default)]
pub(super) enum DictKind {
    #[default]
    Plain,
    Ordered,
    Counter,
}

#[derive(Clone, Hash, PartialEq, Eq)]
pub(super) enum Key {
    Str(Rc<str>),
    Int(i64),
}

impl Dict {
    /// An empty dict of `kind`.
    pub(super) fn empty(kind: DictKind) -> Self {
        Self { kind, ..Self::default() }
    }

    /// A copy of this dict's items as a dict of `kind`.
    pub(super) fn copied_as(&self, kind: DictKind) -> Self {
        Self { kind, ..self.clone() }
    }

    pub(super) fn insert(&mut self, key: Obj, value: Obj) {
        let hashed = match &key {
            Obj::Str(s) => Some(Key::Str(s.clone())),
            Obj::Int(i) => Some(Key::Int(*i)),
            Obj::Bool(b) => Some(Key::Int(i64::from(*b))),
            _ => None,
        };
        if let Some(hashed) = hashed {
            if let Some(slot) = self.index.get(&hashed).and_then(|&i| self.items.get_mut(i)) {
                slot.1 = value;
                return;
            }
            self.index.insert(hashed, self.items.len());
        }
        self.items.push((key, value));
    }
}

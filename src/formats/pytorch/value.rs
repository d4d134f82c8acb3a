//! The Python values a checkpoint is made of ([`PtValue`]): what `load` returns and `save`
//! writes, with the accessors that find a state dict or an optimizer state in them.

use std::collections::BTreeMap;

use tch::Tensor;

/// A value read from (or to be written to) a PyTorch file: the subset of Python values that
/// checkpoints are made of.
#[derive(Debug)]
pub enum PtValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PtValue>),
    Tuple(Vec<PtValue>),
    /// A plain `dict`, in insertion order.
    Dict(Vec<(PtValue, PtValue)>),
    /// A `collections.OrderedDict` (what `state_dict()` returns), in order. Its `_metadata`
    /// attribute (module versions) is read and dropped.
    OrderedDict(Vec<(PtValue, PtValue)>),
    /// A `collections.Counter` (a dict subclass), in order: `MultiStepLR` keeps its milestones
    /// in one, each with how many times it was given.
    Counter(Vec<(PtValue, PtValue)>),
    /// A CPU tensor that owns its memory (or shares it with another tensor of the same file
    /// that covers the same whole storage, as in PyTorch).
    Tensor(Tensor),
}

impl PtValue {
    /// The entries of a `dict`, an `OrderedDict` or a `Counter`.
    pub fn as_dict(&self) -> Option<&[(PtValue, PtValue)]> {
        match self {
            PtValue::Dict(items) | PtValue::OrderedDict(items) | PtValue::Counter(items) => Some(items),
            _ => None,
        }
    }

    /// The value under the string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&PtValue> {
        self.as_dict()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PtValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            PtValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A float, or an int as a float (Python code mixes them, e.g. `lr=1`).
    pub fn as_float(&self) -> Option<f64> {
        match self {
            PtValue::Float(f) => Some(*f),
            PtValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PtValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            PtValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The items of a list or a tuple.
    pub fn as_list(&self) -> Option<&[PtValue]> {
        match self {
            PtValue::List(items) | PtValue::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The value as a `state_dict`: a dict whose keys are all strings and whose values are all
    /// tensors (shallow copies that share memory with this value's). `None` for anything else.
    pub fn as_state_dict(&self) -> Option<BTreeMap<String, Tensor>> {
        self.as_dict()?.iter().map(|(k, v)| Some((k.as_str()?.to_string(), v.as_tensor()?.shallow_clone()))).collect()
    }

    /// An `OrderedDict` of tensors, as PyTorch's `state_dict()` is, in the given order. The
    /// tensors are shallow copies (they share memory with `tensors`).
    pub fn state_dict<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> PtValue {
        PtValue::OrderedDict(
            tensors.into_iter().map(|(k, t)| (PtValue::from(k), PtValue::Tensor(t.shallow_clone()))).collect(),
        )
    }

    /// The Python type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PtValue::None => "None",
            PtValue::Bool(_) => "bool",
            PtValue::Int(_) => "int",
            PtValue::Float(_) => "float",
            PtValue::Str(_) => "str",
            PtValue::List(_) => "list",
            PtValue::Tuple(_) => "tuple",
            PtValue::Dict(_) => "dict",
            PtValue::OrderedDict(_) => "OrderedDict",
            PtValue::Counter(_) => "Counter",
            PtValue::Tensor(_) => "Tensor",
        }
    }
}

impl From<&str> for PtValue {
    fn from(s: &str) -> Self {
        PtValue::Str(s.to_string())
    }
}

impl From<String> for PtValue {
    fn from(s: String) -> Self {
        PtValue::Str(s)
    }
}

impl From<i64> for PtValue {
    fn from(i: i64) -> Self {
        PtValue::Int(i)
    }
}

impl From<f64> for PtValue {
    fn from(f: f64) -> Self {
        PtValue::Float(f)
    }
}

impl From<bool> for PtValue {
    fn from(b: bool) -> Self {
        PtValue::Bool(b)
    }
}

impl From<Tensor> for PtValue {
    fn from(t: Tensor) -> Self {
        PtValue::Tensor(t)
    }
}

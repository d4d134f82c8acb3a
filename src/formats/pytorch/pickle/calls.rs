//! What the allowed globals do (REDUCE, BUILD, persistent ids: dicts, counters, storages,
//! tensors and parameters), and the conversion of the final object tree into a [`PtValue`].

use std::rc::Rc;

use tch::{Device, Tensor};

use super::super::{contiguous_strides, Fault, PtValue, MAX_DEPTH};
use super::objects::{Container, Dict, DictKind, Global, Obj};
use super::{Machine, Storages, MAX_DIMS};

impl<S: Storages> Machine<'_, S> {
    /// The items of a tuple.
    fn tuple(&self, obj: &Obj, what: &str) -> Result<Vec<Obj>, Fault> {
        if let Obj::Ref(c) = obj {
            if let Ok(c) = c.try_borrow() {
                if let Container::Tuple(items) = &*c {
                    return Ok(items.clone());
                }
            }
        }
        Err(self.bad(format!("{what} is not a tuple")))
    }

    fn is_dict(obj: &Obj) -> bool {
        matches!(obj, Obj::Ref(c) if matches!(c.try_borrow().as_deref(), Ok(Container::Dict(_))))
    }

    /// REDUCE: the allowed globals, applied to their arguments.
    pub(super) fn call(&mut self, callable: Obj, args: Obj) -> Result<Obj, Fault> {
        let Obj::Global(global) = callable else {
            return Err(self.bad("REDUCE on something that is not an allowed global"));
        };
        let args = self.tuple(&args, "REDUCE's argument")?;
        match (global, args.as_slice()) {
            (Global::OrderedDict, []) => Ok(self.new_container(Container::Dict(Dict::empty(DictKind::Ordered)))),
            (Global::Counter, []) => Ok(self.new_container(Container::Dict(Dict::empty(DictKind::Counter)))),
            // `Counter(mapping)`, as Python pickles a Counter: a copy of the dict's items.
            (Global::Counter, [Obj::Ref(mapping)]) => {
                let copy = match &*mapping.try_borrow().map_err(|_| self.bad("a container is in use"))? {
                    Container::Dict(dict) => dict.copied_as(DictKind::Counter),
                    _ => return Err(self.bad("Counter of something that is not a dict")),
                };
                self.item_copy_budget = self
                    .item_copy_budget
                    .checked_sub(copy.items.len())
                    .ok_or_else(|| self.bad("the pickle copies more dict items than it holds"))?;
                Ok(self.new_container(Container::Dict(copy)))
            }
            (
                Global::RebuildTensorV2,
                [Obj::Storage(storage), Obj::Int(offset), size, stride, Obj::Bool(_), hooks, rest @ ..],
            ) if rest.len() <= 1 && Self::is_dict(hooks) => {
                let (size, stride) = (self.ints(size, "a tensor's size")?, self.ints(stride, "a tensor's stride")?);
                let storage = storage.clone();
                self.rebuild_tensor(&storage, *offset, &size, &stride)
            }
            (Global::RebuildParameter, [Obj::Tensor(t), Obj::Bool(_), hooks])
            | (Global::RebuildParameterWithState, [Obj::Tensor(t), Obj::Bool(_), hooks, _])
                if Self::is_dict(hooks) =>
            {
                Ok(Obj::Tensor(t.clone()))
            }
            (global, _) => Err(self.bad(format!("unexpected arguments for {global:?}"))),
        }
    }

    /// BUILD: only the attributes of a dict subclass (an OrderedDict's `_metadata`), which are
    /// dropped.
    pub(super) fn build(&mut self, state: Obj) -> Result<(), Fault> {
        let target_is_dict = Self::is_dict(self.top()?);
        if target_is_dict && (Self::is_dict(&state) || matches!(state, Obj::None)) {
            Ok(())
        } else {
            Err(self.bad("BUILD on something other than an OrderedDict"))
        }
    }

    fn ints(&self, obj: &Obj, what: &str) -> Result<Vec<i64>, Fault> {
        self.tuple(obj, what)?
            .iter()
            .map(|item| match item {
                Obj::Int(i) => Ok(*i),
                _ => Err(self.bad(format!("{what} holds something that is not an int"))),
            })
            .collect()
    }

    /// BINPERSID: `('storage', torch.<Type>Storage, key, location, numel)`.
    pub(super) fn persistent_load(&mut self, pid: Obj) -> Result<Obj, Fault> {
        let pid = self.tuple(&pid, "a persistent id")?;
        match pid.as_slice() {
            [Obj::Str(tag), Obj::Global(Global::Storage(kind)), Obj::Str(key), Obj::Str(_location), Obj::Int(numel)]
                if &**tag == "storage" && *numel >= 0 =>
            {
                Ok(Obj::Storage(self.storages.storage(key, *kind, *numel)?))
            }
            _ => Err(self.bad("a persistent id that is not ('storage', torch.<Type>Storage, key, location, numel)")),
        }
    }

    /// `torch._utils._rebuild_tensor_v2`: the view `size`/`stride`/`offset` of `storage`. A view
    /// of the whole storage in order is the storage itself; any other view is copied, so that
    /// it owns exactly its elements.
    fn rebuild_tensor(&mut self, storage: &Tensor, offset: i64, size: &[i64], stride: &[i64]) -> Result<Obj, Fault> {
        let kind = storage.kind();
        let storage_numel = i64::try_from(storage.numel()).map_err(|_| self.bad("a storage is too large"))?;
        if size.len() != stride.len() || size.len() > MAX_DIMS {
            return Err(self.bad(format!("a tensor has size {size:?} and stride {stride:?}")));
        }
        if offset < 0 || size.iter().chain(stride).any(|&d| d < 0) {
            return Err(
                self.bad(format!("a tensor has a negative size, stride or offset: {size:?} {stride:?} {offset}"))
            );
        }
        let overflow = || self.bad(format!("a tensor of size {size:?} is too large"));
        let numel = size.iter().try_fold(1i64, |n, &d| n.checked_mul(d)).ok_or_else(overflow)?;
        let end = if numel == 0 {
            Some(offset)
        } else {
            let last = |end: i64, (&n, &s): (&i64, &i64)| (n - 1).checked_mul(s)?.checked_add(end);
            offset.checked_add(1).and_then(|first| size.iter().zip(stride).try_fold(first, last))
        };
        if end.is_none_or(|end| end > storage_numel) {
            return Err(self.bad(format!(
                "a tensor (size {size:?}, stride {stride:?}, offset {offset}) reaches past its storage of {storage_numel} elements"
            )));
        }
        let tensor_err = |e: tch::TchError| Fault::Tensor(format!("cannot rebuild a tensor of size {size:?}: {e}"));
        if offset == 0 && numel == storage_numel && stride == contiguous_strides(size) {
            return Ok(Obj::Tensor(Rc::new(storage.f_reshape(size).map_err(tensor_err)?)));
        }
        let bytes = u64::try_from(numel).ok().and_then(|n| n.checked_mul(kind.elt_size_in_bytes() as u64));
        match bytes {
            Some(bytes) if bytes <= self.copy_budget => self.copy_budget -= bytes,
            _ => return Err(self.bad("the tensors copy more data than the file holds")),
        }
        let view = storage.f_as_strided(size, stride, offset).map_err(tensor_err)?;
        let mut copy = Tensor::f_empty(size, (kind, Device::Cpu)).map_err(tensor_err)?;
        copy.f_copy_(&view).map_err(tensor_err)?;
        Ok(Obj::Tensor(Rc::new(copy)))
    }

    /// The value handed out: containers become owned trees, within `MAX_DEPTH` levels and a
    /// size `budget`.
    pub(super) fn convert(&self, obj: &Obj, depth: usize, budget: &mut u64) -> Result<PtValue, Fault> {
        let cost = 48 + if let Obj::Str(s) = obj { s.len() as u64 } else { 0 };
        *budget =
            budget.checked_sub(cost).ok_or_else(|| self.bad("the pickle refers to its objects too many times"))?;
        Ok(match obj {
            Obj::None => PtValue::None,
            Obj::Bool(b) => PtValue::Bool(*b),
            Obj::Int(i) => PtValue::Int(*i),
            Obj::Float(f) => PtValue::Float(*f),
            Obj::Str(s) => PtValue::Str(s.to_string()),
            Obj::Tensor(t) => PtValue::Tensor(t.shallow_clone()),
            Obj::Global(g) => return Err(self.bad(format!("the result holds the class {g:?} itself"))),
            Obj::Storage(_) => return Err(self.bad("the result holds a bare storage, not a tensor")),
            Obj::Ref(c) => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.bad(format!("values are nested more than {MAX_DEPTH} deep (or contain themselves)"))
                    );
                }
                let c = c.try_borrow().map_err(|_| self.bad("a container is in use"))?;
                let mut all = |items: &[Obj]| -> Result<Vec<PtValue>, Fault> {
                    items.iter().map(|o| self.convert(o, depth + 1, budget)).collect()
                };
                match &*c {
                    Container::List(items) => PtValue::List(all(items)?),
                    Container::Tuple(items) => PtValue::Tuple(all(items)?),
                    Container::Dict(dict) => {
                        let items = dict
                            .items
                            .iter()
                            .map(|(k, v)| {
                                Ok((self.convert(k, depth + 1, budget)?, self.convert(v, depth + 1, budget)?))
                            })
                            .collect::<Result<_, Fault>>()?;
                        match dict.kind {
                            DictKind::Plain => PtValue::Dict(items),
                            DictKind::Ordered => PtValue::OrderedDict(items),
                            DictKind::Counter => PtValue::Counter(items),
                        }
                    }
                }
            }
        })
    }
}

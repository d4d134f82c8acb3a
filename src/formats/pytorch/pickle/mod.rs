//! A restricted unpickler for torch.save's `data.pkl`.
//!
//! It runs the pickle machine over the opcodes that `torch.save` emits (protocol 2, and those of
//! protocols 3 to 5 that it may emit with `pickle_protocol=`), but a global is only a name here:
//! the allowed ones (see [`allowed`]) are recognised and their effect is built in Rust, and any
//! other one ends the load with [`Fault::Forbidden`] at once. Nothing is imported or called.
//!
//! Containers are shared, as in Python (an object fetched from the memo is the same object,
//! mutations included); the tree handed out is checked for depth (which also catches cycles)
//! and for size (a few bytes of pickle can refer to one object many times over).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tch::{Kind, Tensor};

use super::archive::Bytes;
use super::{Fault, PtValue};

mod calls;
mod objects;

use objects::{allowed, Container, Dict, Obj};

/// Where the unpickler gets the storages that persistent ids name.
pub(super) trait Storages {
    /// The storage `key`: a 1-D tensor of `numel` elements of `kind`.
    fn storage(&mut self, key: &str, kind: Kind, numel: i64) -> Result<Rc<Tensor>, Fault>;
}

/// Dimensions allowed for a tensor.
const MAX_DIMS: usize = 64;

/// Unpickles `pickle`. Tensors that are views of part of a storage are copied, at most
/// `copy_budget` bytes in all.
pub(super) fn unpickle(pickle: &[u8], storages: &mut impl Storages, copy_budget: u64) -> Result<PtValue, Fault> {
    let mut machine = Machine {
        input: Bytes::new(pickle),
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        containers: Vec::new(),
        storages,
        copy_budget,
        // Each item of a dict took at least a byte of pickle to make.
        item_copy_budget: pickle.len(),
    };
    let root = machine.run()?;
    // The result may be at most 64 bytes per byte of pickle (strings count their length).
    let mut budget = (pickle.len() as u64).saturating_mul(64).saturating_add(1 << 20);
    machine.convert(&root, 0, &mut budget)
}

struct Machine<'a, S: Storages> {
    input: Bytes<'a>,
    /// Where the opcode being run starts, for messages.
    at: usize,
    stack: Vec<Obj>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Obj>,
    /// Every container made, so that they can all be emptied at the end: dropping a deep or
    /// cyclic structure then never recurses, nor leaks.
    containers: Vec<Rc<RefCell<Container>>>,
    storages: &'a mut S,
    copy_budget: u64,
    /// The dict items that `Counter(dict)` may still copy: without a bound, a pickle could copy
    /// one large dict once per few bytes of pickle.
    item_copy_budget: usize,
}

impl<S: Storages> Drop for Machine<'_, S> {
    fn drop(&mut self) {
        for container in &self.containers {
            if let Ok(mut c) = container.try_borrow_mut() {
                *c = Container::Tuple(Vec::new());
            }
        }
    }
}

fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'B' | b'C' | 0x8e | 0x96 | 0x97 | 0x98 => "bytes values are not supported",
        0x8f..=0x91 => "sets are not supported",
        0x81 | 0x92 | b'i' | b'o' => "objects built from classes are not supported",
        0x82..=0x84 => "extension registry codes are not supported",
        b'P' => "text persistent ids are not supported",
        b'I' | b'L' | b'F' | b'S' | b'V' | b'U' | b'T' | b'p' | b'g' => {
            "protocol 0 and 1 opcodes are not supported (torch.save writes protocol 2)"
        }
        _ => return None,
    })
}

impl<S: Storages> Machine<'_, S> {
    fn bad(&self, reason: impl Into<String>) -> Fault {
        Fault::Pickle { offset: self.at, reason: reason.into() }
    }

    fn truncated(&self) -> Fault {
        self.bad("the pickle ends in the middle of an opcode")
    }

    fn take(&mut self, len: u64) -> Result<&[u8], Fault> {
        let len = usize::try_from(len).map_err(|_| self.truncated())?;
        match self.input.take(len) {
            Some(bytes) => Ok(bytes),
            None => Err(self.truncated()),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fault> {
        self.input.array().ok_or_else(|| self.truncated())
    }

    fn string(&mut self, len: u64) -> Result<Obj, Fault> {
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Obj::Str(Rc::from(s))),
            Err(_) => Err(self.bad("a string is not valid UTF-8")),
        }
    }

    fn new_container(&mut self, container: Container) -> Obj {
        let container = Rc::new(RefCell::new(container));
        self.containers.push(container.clone());
        Obj::Ref(container)
    }

    fn pop(&mut self) -> Result<Obj, Fault> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("the stack is empty"));
        }
        self.stack.pop().ok_or_else(|| self.bad("the stack is empty"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Obj>, Fault> {
        let mark = self.marks.pop().ok_or_else(|| self.bad("no MARK to pop to"))?;
        if mark > self.stack.len() {
            return Err(self.bad("the stack is shorter than at its MARK"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Result<&Obj, Fault> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(top) if self.stack.len() > floor => Ok(top),
            _ => Err(self.bad("the stack is empty")),
        }
    }

    /// Runs `change` on the container on top of the stack.
    fn with_top<T>(&mut self, change: impl FnOnce(&mut Container) -> Option<T>, what: &str) -> Result<T, Fault> {
        let container = match self.top()? {
            Obj::Ref(c) => c.clone(),
            _ => return Err(self.bad(format!("{what} on something that is not a container"))),
        };
        let mut container = container.try_borrow_mut().map_err(|_| self.bad("a container is in use"))?;
        change(&mut container).ok_or_else(|| self.bad(format!("{what} on the wrong kind of container")))
    }

    fn append(&mut self, items: Vec<Obj>) -> Result<(), Fault> {
        self.with_top(
            |c| match c {
                Container::List(list) => {
                    list.extend(items);
                    Some(())
                }
                _ => None,
            },
            "APPEND",
        )
    }

    fn set_items(&mut self, items: Vec<Obj>) -> Result<(), Fault> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("SETITEMS with an odd number of items"));
        }
        self.with_top(
            |c| match c {
                Container::Dict(dict) => {
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        dict.insert(k, v);
                    }
                    Some(())
                }
                _ => None,
            },
            "SETITEM",
        )
    }

    fn global(&self, module: &str, name: &str) -> Result<Obj, Fault> {
        match allowed(module, name) {
            Some(global) => Ok(Obj::Global(global)),
            None => Err(Fault::Forbidden { module: module.to_string(), name: name.to_string() }),
        }
    }

    fn memo_get(&self, index: u32) -> Result<Obj, Fault> {
        self.memo.get(&index).cloned().ok_or_else(|| self.bad(format!("memo entry {index} is not set")))
    }

    fn memo_put(&mut self, index: u32) -> Result<(), Fault> {
        let top = self.top()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn run(&mut self) -> Result<Obj, Fault> {
        loop {
            self.at = self.input.pos;
            let op = self.input.u8().ok_or_else(|| self.bad("the pickle ends before its STOP opcode"))?;
            let value = match op {
                b'.' => return self.pop(),
                0x80 => match self.array::<1>()?[0] {
                    2..=5 => continue,
                    v => return Err(self.bad(format!("unsupported pickle protocol {v}"))),
                },
                0x95 => {
                    self.array::<8>()?; // FRAME: a framing hint
                    continue;
                }
                b'(' => {
                    self.marks.push(self.stack.len());
                    continue;
                }
                b'0' => {
                    self.pop()?;
                    continue;
                }
                b'1' => {
                    self.pop_mark()?;
                    continue;
                }
                b'2' => self.top()?.clone(),
                b'N' => Obj::None,
                0x88 => Obj::Bool(true),
                0x89 => Obj::Bool(false),
                b'J' => Obj::Int(i32::from_le_bytes(self.array()?).into()),
                b'K' => Obj::Int(self.array::<1>()?[0].into()),
                b'M' => Obj::Int(u16::from_le_bytes(self.array()?).into()),
                0x8a => {
                    let len = self.array::<1>()?[0];
                    self.long(len.into())?
                }
                0x8b => {
                    let len = u32::from_le_bytes(self.array()?);
                    self.long(len.into())?
                }
                b'G' => Obj::Float(f64::from_be_bytes(self.array()?)),
                b'X' => {
                    let len = u32::from_le_bytes(self.array()?);
                    self.string(len.into())?
                }
                0x8c => {
                    let len = self.array::<1>()?[0];
                    self.string(len.into())?
                }
                0x8d => {
                    let len = u64::from_le_bytes(self.array()?);
                    self.string(len)?
                }
                b']' => self.new_container(Container::List(Vec::new())),
                b')' => self.new_container(Container::Tuple(Vec::new())),
                b'}' => self.new_container(Container::Dict(Dict::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.new_container(Container::List(items))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.new_container(Container::Tuple(items))
                }
                0x85..=0x87 => {
                    let mut items = Vec::new();
                    for _ in 0..op - 0x84 {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.new_container(Container::Tuple(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = self.new_container(Container::Dict(Dict::default()));
                    self.stack.push(dict);
                    self.set_items(items)?;
                    continue;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                    continue;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                    continue;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                    continue;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                    continue;
                }
                b'q' => {
                    let index = self.array::<1>()?[0];
                    self.memo_put(index.into())?;
                    continue;
                }
                b'r' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_put(index)?;
                    continue;
                }
                0x94 => {
                    let index = u32::try_from(self.memo.len()).map_err(|_| self.bad("the memo is full"))?;
                    self.memo_put(index)?;
                    continue;
                }
                b'h' => {
                    let index = self.array::<1>()?[0];
                    self.memo_get(index.into())?
                }
                b'j' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_get(index)?
                }
                b'c' => {
                    let module = self.input.line().ok_or_else(|| self.truncated())?;
                    let name = self.input.line().ok_or_else(|| self.truncated())?;
                    match (std::str::from_utf8(module), std::str::from_utf8(name)) {
                        (Ok(module), Ok(name)) => self.global(module, name)?,
                        _ => return Err(self.bad("a global's name is not valid UTF-8")),
                    }
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Obj::Str(module), Obj::Str(name)) => self.global(&module, &name)?,
                        _ => return Err(self.bad("STACK_GLOBAL on values that are not strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.call(callable, args)?
                }
                b'b' => {
                    let state = self.pop()?;
                    self.build(state)?;
                    continue;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.persistent_load(pid)?
                }
                op => {
                    let reason = match opcode_name(op) {
                        Some(why) => format!("opcode 0x{op:02x}: {why}"),
                        None => format!("unknown opcode 0x{op:02x}"),
                    };
                    return Err(self.bad(reason));
                }
            };
            self.stack.push(value);
        }
    }

    /// A little-endian two's complement integer of `len` bytes (LONG1, LONG4).
    fn long(&mut self, len: u64) -> Result<Obj, Fault> {
        let bytes = self.take(len)?;
        if bytes.len() > 8 {
            return Err(self.bad("an integer does not fit in 64 bits"));
        }
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut full = [if negative { 0xff } else { 0 }; 8];
        full[..bytes.len()].copy_from_slice(bytes);
        Ok(Obj::Int(i64::from_le_bytes(full)))
    }
}

//! The schedules' `state_dict()`, both ways, as torch 2.13 writes it: the scheduler's
//! `__dict__` without `optimizer`, in the same key order, with the same Python types
//! (`int`s stay `int`s: `T_max`, `_step_count`, `OneCycleLR`'s last `end_step`).
//!
//! `LRScheduler` holds its own arguments, then `base_lrs`, `last_epoch`, `_step_count`,
//! `_is_initial`, `_get_lr_called_within_step` (both always `False` between calls) and
//! `_last_lr`. `SequentialLR` holds `_milestones`, `last_epoch`, `_last_lr` and the state dicts
//! of its schedulers in `_schedulers`. Loading replaces everything, arguments included, as
//! PyTorch's `load_state_dict` (`__dict__.update`) does; a state dict of another kind of
//! scheduler is refused.

use super::leaf::{Base, Leaf, Rule};
use super::one_cycle::{AnnealStrategy, EntryKey, OneCycleLr, Phase};
use super::rules::{CosineAnnealingLr, ExponentialLr, LinearLr, MultiStepLr, StepLr};
use super::sequential::Sequential;
use super::{LrScheduler, Schedule, ScheduleError};
use crate::formats::pytorch::PtValue;

/// `MultiStepLR.milestones`, a `collections.Counter` in PyTorch (written back as one, which
/// `torch.load(weights_only=True)` accepts).
pub fn milestones_to_pt(milestones: &[(i64, i64)]) -> PtValue {
    PtValue::Counter(milestones.iter().map(|&(m, n)| (PtValue::Int(m), PtValue::Int(n))).collect())
}

/// Reads `MultiStepLR.milestones` back: a `Counter` (or a plain dict of `milestone: count`).
pub fn milestones_from_pt(value: &PtValue) -> Result<Vec<(i64, i64)>, ScheduleError> {
    let items = value
        .as_dict()
        .ok_or_else(|| state_err(format!("MultiStepLR milestones: a {}, not a Counter", value.type_name())))?;
    items
        .iter()
        .map(|(k, v)| match (k.as_int(), v.as_int()) {
            (Some(m), Some(n)) => Ok((m, n)),
            _ => Err(state_err("MultiStepLR milestones: not a Counter of ints".into())),
        })
        .collect()
}

fn state_err(message: String) -> ScheduleError {
    ScheduleError::State(message)
}

fn kv(key: &str, value: PtValue) -> (PtValue, PtValue) {
    (PtValue::from(key), value)
}

fn floats(values: &[f64]) -> PtValue {
    PtValue::List(values.iter().map(|v| PtValue::Float(*v)).collect())
}

/// The keys that only one kind of scheduler has: a state dict with another kind's is refused.
const MARKERS: [(&str, &str); 6] = [
    ("StepLR", "step_size"),
    ("MultiStepLR", "milestones"),
    ("CosineAnnealingLR", "T_max"),
    ("LinearLR", "start_factor"),
    ("OneCycleLR", "total_steps"),
    ("SequentialLR", "_schedulers"),
];

fn rule_items(rule: &Rule) -> Vec<(PtValue, PtValue)> {
    match rule {
        Rule::Step(r) => vec![kv("step_size", r.step_size.into()), kv("gamma", r.gamma.into())],
        Rule::MultiStep(r) => vec![kv("milestones", milestones_to_pt(&r.milestones)), kv("gamma", r.gamma.into())],
        Rule::Exponential(r) => vec![kv("gamma", r.gamma.into())],
        Rule::CosineAnnealing(r) => vec![kv("T_max", r.t_max.into()), kv("eta_min", r.eta_min.into())],
        Rule::Linear(r) => vec![
            kv("start_factor", r.start_factor.into()),
            kv("end_factor", r.end_factor.into()),
            kv("total_iters", r.total_iters.into()),
        ],
        Rule::OneCycle(r) => one_cycle_items(r),
    }
}

fn one_cycle_items(r: &OneCycleLr) -> Vec<(PtValue, PtValue)> {
    let last = r.phases.len().saturating_sub(1);
    let phases = r.phases.iter().enumerate().map(|(i, p)| {
        // PyTorch's last phase ends at `self.total_steps - 1`, an int; the others at floats.
        let end_step = match i == last {
            true => PtValue::Int(p.end_step as i64),
            false => PtValue::Float(p.end_step),
        };
        PtValue::Dict(vec![
            kv("end_step", end_step),
            kv("start_lr", p.start_lr.name().into()),
            kv("end_lr", p.end_lr.name().into()),
            kv("start_momentum", p.start_momentum.name().into()),
            kv("end_momentum", p.end_momentum.name().into()),
        ])
    });
    let mut items = vec![
        kv("total_steps", r.total_steps.into()),
        kv("_schedule_phases", PtValue::List(phases.collect())),
        kv("_anneal_func_type", r.anneal.name().into()),
        kv("cycle_momentum", r.cycle_momentum.into()),
    ];
    if let Some(use_beta1) = r.use_beta1 {
        items.push(kv("use_beta1", use_beta1.into()));
    }
    items
}

fn leaf_to_pt(leaf: &Leaf) -> PtValue {
    let mut items = rule_items(&leaf.rule);
    items.extend([
        kv("base_lrs", floats(&leaf.base.base_lrs)),
        kv("last_epoch", leaf.base.last_epoch.into()),
        kv("_step_count", leaf.base.step_count.into()),
        kv("_is_initial", false.into()),
        kv("_get_lr_called_within_step", false.into()),
        kv("_last_lr", floats(&leaf.base.last_lr)),
    ]);
    PtValue::Dict(items)
}

/// Typed reads of a state dict's entries, with messages that name the scheduler and the key.
struct Fields<'a> {
    dict: &'a PtValue,
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(dict: &'a PtValue, what: &'static str) -> Result<Self, ScheduleError> {
        match dict.as_dict() {
            Some(_) => Ok(Fields { dict, what }),
            None => Err(state_err(format!("{what}: a {}, not a dict", dict.type_name()))),
        }
    }

    fn get(&self, key: &str) -> Result<&'a PtValue, ScheduleError> {
        self.dict.get(key).ok_or_else(|| state_err(format!("{}: no `{key}`", self.what)))
    }

    fn wrong(&self, key: &str, expected: &str, value: &PtValue) -> ScheduleError {
        state_err(format!("{}: `{key}` is a {}, not {expected}", self.what, value.type_name()))
    }

    fn int(&self, key: &str) -> Result<i64, ScheduleError> {
        let v = self.get(key)?;
        v.as_int().ok_or_else(|| self.wrong(key, "an int", v))
    }

    fn float(&self, key: &str) -> Result<f64, ScheduleError> {
        let v = self.get(key)?;
        v.as_float().ok_or_else(|| self.wrong(key, "a float", v))
    }

    fn boolean(&self, key: &str) -> Result<bool, ScheduleError> {
        let v = self.get(key)?;
        v.as_bool().ok_or_else(|| self.wrong(key, "a bool", v))
    }

    fn str(&self, key: &str) -> Result<&'a str, ScheduleError> {
        let v = self.get(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, "a str", v))
    }

    fn list(&self, key: &str) -> Result<&'a [PtValue], ScheduleError> {
        let v = self.get(key)?;
        v.as_list().ok_or_else(|| self.wrong(key, "a list", v))
    }

    /// A list of floats (a learning rate saved as a tensor is not supported).
    fn floats(&self, key: &str) -> Result<Vec<f64>, ScheduleError> {
        self.list(key)?.iter().map(|v| v.as_float().ok_or_else(|| self.wrong(key, "a list of floats", v))).collect()
    }

    /// Refuses a state dict that has another kind of scheduler's marker key.
    fn check_kind(&self) -> Result<(), ScheduleError> {
        for (class, marker) in MARKERS {
            if class != self.what && self.dict.get(marker).is_some() {
                return Err(state_err(format!(
                    "the checkpoint's scheduler is a {class} (it has `{marker}`), this run's is a {}",
                    self.what
                )));
            }
        }
        Ok(())
    }
}

fn entry_key(f: &Fields, phase: &Fields, key: &str) -> Result<EntryKey, ScheduleError> {
    let name = phase.str(key)?;
    EntryKey::from_name(name).ok_or_else(|| state_err(format!("{}: unknown phase key `{name}`", f.what)))
}

fn one_cycle_from(f: &Fields) -> Result<OneCycleLr, ScheduleError> {
    let mut phases = Vec::new();
    for value in f.list("_schedule_phases")? {
        let p = Fields::new(value, "OneCycleLR phase")?;
        phases.push(Phase {
            end_step: p.float("end_step")?,
            start_lr: entry_key(f, &p, "start_lr")?,
            end_lr: entry_key(f, &p, "end_lr")?,
            start_momentum: entry_key(f, &p, "start_momentum")?,
            end_momentum: entry_key(f, &p, "end_momentum")?,
        });
    }
    let anneal = f.str("_anneal_func_type")?;
    let cycle_momentum = f.boolean("cycle_momentum")?;
    Ok(OneCycleLr {
        total_steps: f.int("total_steps")?,
        phases,
        anneal: AnnealStrategy::from_name(anneal)
            .ok_or_else(|| state_err(format!("OneCycleLR: unknown _anneal_func_type `{anneal}`")))?,
        cycle_momentum,
        use_beta1: match f.dict.get("use_beta1") {
            Some(_) => Some(f.boolean("use_beta1")?),
            None => None,
        },
    })
}

/// A scheduler of the same kind as `leaf`, with the state in `value`.
fn leaf_from_pt(leaf: &Leaf, value: &PtValue, groups: usize) -> Result<Leaf, ScheduleError> {
    let f = Fields::new(value, leaf.rule.class_name())?;
    f.check_kind()?;
    let rule = match &leaf.rule {
        Rule::Step(_) => Rule::Step(StepLr { step_size: f.int("step_size")?, gamma: f.float("gamma")? }),
        Rule::MultiStep(_) => Rule::MultiStep(MultiStepLr {
            milestones: milestones_from_pt(f.get("milestones")?)?,
            gamma: f.float("gamma")?,
        }),
        Rule::Exponential(_) => Rule::Exponential(ExponentialLr { gamma: f.float("gamma")? }),
        Rule::CosineAnnealing(_) => {
            Rule::CosineAnnealing(CosineAnnealingLr { t_max: f.int("T_max")?, eta_min: f.float("eta_min")? })
        }
        Rule::Linear(_) => Rule::Linear(LinearLr {
            start_factor: f.float("start_factor")?,
            end_factor: f.float("end_factor")?,
            total_iters: f.int("total_iters")?,
        }),
        Rule::OneCycle(_) => Rule::OneCycle(one_cycle_from(&f)?),
    };
    let base = Base {
        base_lrs: f.floats("base_lrs")?,
        last_epoch: f.int("last_epoch")?,
        step_count: f.int("_step_count")?,
        last_lr: f.floats("_last_lr")?,
    };
    if base.base_lrs.len() != groups || base.last_lr.len() != groups {
        return Err(ScheduleError::GroupCount { optimizer: groups, schedule: base.base_lrs.len() });
    }
    Ok(Leaf { rule, base })
}

fn sequential_from_pt(ours: &Sequential, value: &PtValue, groups: usize) -> Result<Sequential, ScheduleError> {
    let f = Fields::new(value, "SequentialLR")?;
    let states = f.list("_schedulers")?;
    if states.len() != ours.schedulers.len() {
        return Err(state_err(format!(
            "the checkpoint's SequentialLR has {} schedulers, this run's {}",
            states.len(),
            ours.schedulers.len()
        )));
    }
    let milestones = f.list("_milestones")?;
    let milestones: Option<Vec<i64>> = milestones.iter().map(PtValue::as_int).collect();
    Ok(Sequential {
        milestones: milestones.ok_or_else(|| state_err("SequentialLR: `_milestones` is not a list of ints".into()))?,
        last_epoch: f.int("last_epoch")?,
        last_lr: f.floats("_last_lr")?,
        schedulers: ours
            .schedulers
            .iter()
            .zip(states)
            .map(|(leaf, state)| leaf_from_pt(leaf, state, groups))
            .collect::<Result<_, _>>()?,
    })
}

impl LrScheduler {
    /// `scheduler.state_dict()`, as PyTorch writes it (what goes under a checkpoint's
    /// `'scheduler'`).
    pub fn state_dict(&self) -> PtValue {
        match &self.schedule {
            Schedule::Single(leaf) => leaf_to_pt(leaf),
            Schedule::Sequential(s) => PtValue::Dict(vec![
                kv("_milestones", PtValue::List(s.milestones.iter().map(|m| PtValue::Int(*m)).collect())),
                kv("last_epoch", s.last_epoch.into()),
                kv("_last_lr", floats(&s.last_lr)),
                kv("_schedulers", PtValue::List(s.schedulers.iter().map(leaf_to_pt).collect())),
            ]),
        }
    }

    /// `scheduler.load_state_dict(state)` on a schedule of the same kind (built with the same
    /// schedulers). All or nothing: on an error the schedule is unchanged. The entries kept in
    /// the optimizer's `param_groups` come with [`LrScheduler::load_param_group_entries`].
    pub fn load_state_dict(&mut self, state: &PtValue) -> Result<(), ScheduleError> {
        let groups = self.entries.len();
        self.schedule = match &self.schedule {
            Schedule::Single(leaf) => Schedule::Single(leaf_from_pt(leaf, state, groups)?),
            Schedule::Sequential(s) => Schedule::Sequential(sequential_from_pt(s, state, groups)?),
        };
        Ok(())
    }
}

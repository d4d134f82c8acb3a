//! `SequentialLR`, as torch 2.13 writes it: the schedulers are built one after the other on the
//! same optimizer (each does its own initial step), then `SequentialLR` puts every group's `lr`
//! back to `initial_lr`, undoes each scheduler's initial step (`last_epoch -= 1`) and redoes the
//! initial step of the scheduler that runs at step 0. At each milestone it calls the next
//! scheduler's `_update_lr(0)` (its closed form at epoch 0, i.e. from its `base_lrs`), and its
//! `step()` elsewhere.

use serde::{Deserialize, Serialize};

use super::leaf::{Leaf, SchedulerConfig};
use super::{exact, GroupEntries, ScheduleError};
use crate::train::optim::LrGroups;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sequential {
    pub milestones: Vec<i64>,
    pub last_epoch: i64,
    #[serde(with = "exact")]
    pub last_lr: Vec<f64>,
    pub schedulers: Vec<Leaf>,
}

/// Python's `bisect.bisect_right`, step for step (so that it gives Python's answer even for a
/// list that is not sorted).
pub fn bisect_right(list: &[i64], x: i64) -> usize {
    let (mut lo, mut hi) = (0, list.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if x < list[mid] {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

impl Sequential {
    /// The schedulers' constructors in order, then `SequentialLR(optimizer, schedulers,
    /// milestones)`.
    pub fn new(
        configs: &[SchedulerConfig],
        milestones: Vec<i64>,
        groups: &mut dyn LrGroups,
        entries: &mut [GroupEntries],
    ) -> Result<Sequential, ScheduleError> {
        if configs.is_empty() {
            return Err(ScheduleError::Invalid("SequentialLR expects at least one scheduler, but got none".into()));
        }
        if milestones.len() != configs.len() - 1 {
            return Err(ScheduleError::Invalid(format!(
                "SequentialLR expects one milestone fewer than schedulers, but got {} schedulers and {} milestones",
                configs.len(),
                milestones.len()
            )));
        }
        let mut schedulers = Vec::with_capacity(configs.len());
        for config in configs {
            schedulers.push(Leaf::new(config, groups, entries)?);
        }
        for (i, entry) in entries.iter().enumerate() {
            groups.set_lr(i, entry.get(super::EntryKey::InitialLr)?);
        }
        for scheduler in &mut schedulers {
            scheduler.base.last_epoch -= 1;
        }
        let idx = bisect_right(&milestones, 0);
        schedulers[idx].initial_step(groups, entries)?;
        let last_lr = schedulers[idx].base.last_lr.clone();
        Ok(Sequential { milestones, last_epoch: 0, last_lr, schedulers })
    }

    /// `SequentialLR.step()`.
    pub fn step(&mut self, groups: &mut dyn LrGroups, entries: &[GroupEntries]) -> Result<(), ScheduleError> {
        self.last_epoch += 1;
        let idx = bisect_right(&self.milestones, self.last_epoch);
        let at_milestone = idx > 0 && self.milestones[idx - 1] == self.last_epoch;
        let scheduler = self
            .schedulers
            .get_mut(idx)
            .ok_or_else(|| ScheduleError::State(format!("SequentialLR has no scheduler {idx}")))?;
        if at_milestone {
            scheduler.update_lr_at(0, groups, entries)?;
        } else {
            scheduler.step(groups, entries)?;
        }
        self.last_lr = scheduler.base.last_lr.clone();
        Ok(())
    }
}

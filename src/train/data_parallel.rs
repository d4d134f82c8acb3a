//! Data-parallel training with PyTorch DDP's semantics, over [`crate::distributed`]'s c10d
//! process group. One process ("rank") per CPU share or GPU, each with a full model:
//!
//! - rank 0's initial weights, buffers and optimizer state (momentum buffers, Adam's moments
//!   and step counters, the groups' settings) are broadcast at the start (and after a resume,
//!   which only rank 0 reads from disk);
//! - each rank reads its share of the epoch's permutation as `DistributedSampler` does (the
//!   order padded to a multiple of the world size by repeating its start, then every
//!   `world_size`-th position from `rank`);
//! - BatchNorm statistics stay per rank, as DDP without SyncBatchNorm, and rank 0's buffers
//!   are broadcast before each forward (`broadcast_buffers=True`);
//! - gradients are averaged by bucketed all-reduce after backward, before the optimizer step;
//! - validation and test images are sharded without padding and the sums added up, so each
//!   image counts once.
//!
//! With one process every method is a no-op, and the loop is exactly the single-process one.
//!
//! Every tensor that goes through a collective is on the process group's device (the GPU for
//! NCCL, which takes nothing else): the model's tensors are there already, and the small sums
//! exchanged here (stop flags, epoch sums, evaluation counts) are made there and read back.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::{nn, Device, Tensor};

use crate::data::split::EpochPlan;
use crate::distributed::{Backend, GradientReducer, ProcessGroup, RankInfo, DEFAULT_BUCKET_BYTES};
use crate::train::evaluation::EvalResult;
use crate::train::metrics::EpochSums;
use crate::train::optim::{Optimizer, SavedState};

/// This process's place in a data-parallel job, and the group it talks through.
pub struct DataParallel {
    group: Option<ProcessGroup>,
    rank: usize,
    local_rank: usize,
    world_size: usize,
    reducer: Option<GradientReducer>,
    /// Time spent averaging gradients since [`DataParallel::take_allreduce_time`] last ran.
    allreduce_time: Duration,
}

impl DataParallel {
    /// One process: no group, nothing to exchange.
    pub fn single() -> Self {
        Self { group: None, rank: 0, local_rank: 0, world_size: 1, reducer: None, allreduce_time: Duration::ZERO }
    }

    /// Joins the job `info` describes (torchrun's variables); every collective then waits at
    /// most `timeout` for the other ranks. A world of one still gets its group, as under
    /// `torchrun --nproc-per-node 1` (every collective is then trivial).
    /// The group's device is the backend's usual one ([`Backend::default_device`]): the CPU
    /// for Gloo, `cuda:LOCAL_RANK` for NCCL, where the trainer puts this rank's model.
    pub fn join(info: &RankInfo, backend: Backend, timeout: Duration) -> Result<Self> {
        let group = ProcessGroup::new(info.process_group_options(backend, timeout))?;
        Ok(Self::with_group(group, info.local_rank))
    }

    /// This process as a rank of `group`, which it joined itself (its own device or timeout).
    pub fn with_group(group: ProcessGroup, local_rank: usize) -> Self {
        Self {
            rank: group.rank(),
            local_rank,
            world_size: group.world_size(),
            group: Some(group),
            reducer: None,
            allreduce_time: Duration::ZERO,
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// This process among those of its machine (the GPU it uses).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Rank 0: the one that writes the run folder and shows progress.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// Sums host values over the ranks: they travel as one tensor on the group's device
    /// (NCCL reduces nothing else) and come back to the host.
    fn sum_on_group<T: tch::kind::Element>(group: &ProcessGroup, values: &[T]) -> Result<Vec<T>>
    where
        Vec<T>: for<'t> TryFrom<&'t Tensor, Error = tch::TchError>,
    {
        let device = group.device();
        let t = Tensor::from_slice(values)
            .f_to_device(device)
            .with_context(|| format!("moving {} value(s) to {device:?} to sum them over the ranks", values.len()))?;
        group.all_reduce_sum(&t)?;
        Ok(Vec::try_from(&t.f_to_device(Device::Cpu)?)?)
    }

    /// Fails on every rank, before the first step, if any rank was started with other
    /// `settings` (a JSON text of what must agree) than rank 0.
    pub fn check_same_settings(&self, settings: &str) -> Result<()> {
        let Some(group) = self.group() else { return Ok(()) };
        group.store_set(&format!("settings/{}", self.rank), settings.as_bytes())?;
        let main = String::from_utf8_lossy(&group.store_get("settings/0")?).into_owned();
        if main != settings {
            let (ours, theirs): (serde_json::Value, serde_json::Value) =
                (serde_json::from_str(settings)?, serde_json::from_str(&main)?);
            let differing: Vec<String> = ours
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| theirs.get(k.as_str()) != Some(*v))
                .map(|(k, v)| {
                    format!("{k} = {v} here, {} on rank 0", theirs.get(k.as_str()).unwrap_or(&serde_json::Value::Null))
                })
                .collect();
            bail!("rank {} was started with other settings than rank 0: {}", self.rank, differing.join("; "));
        }
        Ok(())
    }

    /// Rank 0's `value` on every rank (through the store; `value` is ignored elsewhere).
    pub fn share_from_main(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        let Some(group) = self.group() else { return Ok(value.to_vec()) };
        if self.is_main() {
            group.store_set(&format!("shared/{key}"), value)?;
            return Ok(value.to_vec());
        }
        Ok(group.store_get(&format!("shared/{key}"))?)
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<()> {
        if let Some(group) = self.group() {
            group.barrier()?;
        }
        Ok(())
    }

    /// Copies rank 0's tensors into every rank's, in place. Tensors with other strides
    /// (channels-last weights) travel as contiguous copies.
    pub fn broadcast_from_main(&self, tensors: &[Tensor]) -> Result<()> {
        let Some(group) = self.group() else { return Ok(()) };
        tch::no_grad(|| -> Result<()> {
            let flat: Vec<Tensor> = tensors.iter().map(|t| t.contiguous()).collect();
            group.broadcast(&flat, 0)?;
            for (tensor, flat) in tensors.iter().zip(&flat) {
                if !tensor.is_contiguous() {
                    tensor.shallow_clone().f_copy_(flat)?;
                }
            }
            Ok(())
        })
    }

    /// Rank 0's weights, buffers and optimizer state on every rank: the start of the run.
    /// `layout` is what [`optimizer_layout`] gives on rank 0: the optimizer's settings and the
    /// name, shape and dtype of each of its state tensors, from which the other ranks make the
    /// tensors that receive rank 0's.
    pub fn broadcast_state(
        &self,
        vs: &nn::VarStore,
        optimizer: &mut dyn Optimizer,
        layout: &OptimizerLayout,
    ) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let variables: std::collections::BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        self.broadcast_from_main(&variables.into_values().collect::<Vec<_>>())?;
        // Through the group's device (NCCL takes nothing else), where the model is.
        let device = vs.device();
        let tensors: Vec<(String, Tensor)> = if self.is_main() {
            optimizer.save_state().tensors.into_iter().map(|(k, t)| (k, t.to_device(device))).collect()
        } else {
            layout
                .tensors
                .iter()
                .map(|(name, shape, kind)| {
                    Ok((name.clone(), Tensor::zeros(shape.as_slice(), (kind_from_name(kind)?, device))))
                })
                .collect::<Result<_>>()?
        };
        if tensors.len() != layout.tensors.len() {
            bail!("rank {} has {} optimizer state tensors, rank 0 {}", self.rank, tensors.len(), layout.tensors.len());
        }
        self.broadcast_from_main(&tensors.iter().map(|(_, t)| t.shallow_clone()).collect::<Vec<_>>())?;
        if !self.is_main() {
            let saved = SavedState { tensors: tensors.into_iter().collect(), settings: layout.settings.clone() };
            optimizer.load_state(&saved).context("cannot take rank 0's optimizer state")?;
        }
        Ok(())
    }

    /// Rank 0's BatchNorm buffers (running statistics, counters) on every rank, as DDP's
    /// `broadcast_buffers=True` does before each forward.
    pub fn sync_buffers(&self, vs: &nn::VarStore) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let mut buffers: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
        buffers.sort_by(|a, b| a.0.cmp(&b.0));
        self.broadcast_from_main(&buffers.into_iter().map(|(_, t)| t).collect::<Vec<_>>())
    }

    /// Replaces every gradient by its mean over the ranks (DDP's bucketed all-reduce).
    pub fn average_gradients(&mut self, optimizer: &dyn Optimizer) -> Result<()> {
        let Some(group) = self.group.as_ref() else { return Ok(()) };
        let params: Vec<Tensor> = optimizer.parameters().into_iter().map(|(_, p)| p).collect();
        if self.reducer.is_none() {
            self.reducer = Some(GradientReducer::new(&params, DEFAULT_BUCKET_BYTES)?);
        }
        let reducer = self.reducer.as_mut().context("no gradient reducer")?;
        let started = std::time::Instant::now();
        reducer.all_reduce(group, &params)?;
        self.allreduce_time += started.elapsed();
        Ok(())
    }

    /// The time spent averaging gradients since the last call (zero for one process).
    pub fn take_allreduce_time(&mut self) -> Duration {
        std::mem::take(&mut self.allreduce_time)
    }

    /// Whether `flag` is set on any rank: a stop request (Ctrl-C, SIGTERM) reaching one rank
    /// stops them all after the same step.
    pub fn any(&self, flag: bool) -> Result<bool> {
        let Some(group) = self.group() else { return Ok(flag) };
        Ok(Self::sum_on_group(group, &[i64::from(flag)])?[0] > 0)
    }

    /// The epoch sums over all ranks: `base` (already global, from a checkpoint) plus every
    /// rank's `local` sums since. Seconds are this rank's.
    pub fn global_sums(&self, base: &EpochSums, local: &EpochSums) -> Result<EpochSums> {
        let Some(group) = self.group() else { return Ok(base.plus(local)) };
        let v = Self::sum_on_group(group, &[local.loss_sum, local.correct as f64, local.seen as f64])?;
        Ok(EpochSums {
            loss_sum: base.loss_sum + v[0],
            correct: base.correct + v[1] as i64,
            seen: base.seen + v[2] as i64,
            train_seconds: base.train_seconds + local.train_seconds,
        })
    }

    /// Checks DDP's invariant: every rank holds bit-identical `tensors` (weights, buffers,
    /// momentum). Each rank hashes its bytes (XXH3) and compares with rank 0's; a difference is
    /// an error naming the rank. Returns the number of tensors checked.
    pub fn check_replicas(&self, tensors: &[(String, Tensor)]) -> Result<usize> {
        let Some(group) = self.group() else { return Ok(tensors.len()) };
        let mut hashes = Vec::with_capacity(tensors.len());
        for (name, tensor) in tensors {
            let host = tensor.to_device(tch::Device::Cpu).contiguous();
            let mut bytes = vec![0u8; host.numel() * host.kind().elt_size_in_bytes()];
            host.f_copy_data_u8(&mut bytes, host.numel())?;
            hashes.push(format!("{name}:{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)));
        }
        let ours = hashes.join("\n");
        group.store_set(&format!("replica/{}", self.rank), ours.as_bytes())?;
        let main = String::from_utf8_lossy(&group.store_get("replica/0")?).into_owned();
        if let Some((mine, theirs)) = ours.lines().zip(main.lines()).find(|(a, b)| a != b) {
            bail!(
                "rank {} has diverged from rank 0: {} differs ({mine} here, {theirs} on rank 0)",
                self.rank,
                mine.split(':').next().unwrap_or("a tensor")
            );
        }
        group.barrier()?;
        Ok(tensors.len())
    }

    /// This rank's share of an epoch ([`EpochPlan::shard`]: `DistributedSampler`'s).
    pub fn shard_epoch(&self, plan: EpochPlan) -> EpochPlan {
        plan.shard(self.rank, self.world_size)
    }

    /// This rank's evaluation images: every `world_size`-th from `rank`, no padding, so that
    /// the ranks together see each image once.
    pub fn shard_eval(&self, indices: &[i64]) -> Vec<i64> {
        indices.iter().skip(self.rank).step_by(self.world_size).copied().collect()
    }

    /// The evaluation of all ranks' shards together.
    pub fn merge_eval(&self, local: EvalResult) -> Result<EvalResult> {
        let Some(group) = self.group() else { return Ok(local) };
        let classes = local.confusion.len();
        let confusion = Self::sum_on_group(group, &local.confusion.concat())?;
        let totals = Self::sum_on_group(group, &[local.loss * local.images as f64, local.images as f64])?;
        Ok(EvalResult::from_sums(totals[1] as i64, totals[0], &confusion, classes))
    }
}

/// What the other ranks need to receive rank 0's optimizer state: its settings (JSON, as
/// [`SavedState`] holds them) and each state tensor's name, shape and dtype.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct OptimizerLayout {
    pub settings: serde_json::Value,
    pub tensors: Vec<(String, Vec<i64>, String)>,
}

/// The layout of `optimizer`'s state (see [`DataParallel::broadcast_state`]).
pub fn optimizer_layout(optimizer: &dyn Optimizer) -> OptimizerLayout {
    let saved = optimizer.save_state();
    let tensors = saved.tensors.iter().map(|(k, t)| (k.clone(), t.size(), format!("{:?}", t.kind()))).collect();
    OptimizerLayout { settings: saved.settings, tensors }
}

/// The dtypes an optimizer state holds, by their `Debug` names.
fn kind_from_name(name: &str) -> Result<tch::Kind> {
    use tch::Kind;
    Ok(match name {
        "Float" => Kind::Float,
        "Double" => Kind::Double,
        "Half" => Kind::Half,
        "BFloat16" => Kind::BFloat16,
        "Int64" => Kind::Int64,
        other => bail!("rank 0's optimizer state has a tensor of dtype {other}, which cannot be broadcast here"),
    })
}

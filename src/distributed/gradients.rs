//! Averaging gradients over the ranks after backward, as PyTorch's DistributedDataParallel
//! does (`torch/csrc/distributed/c10d/reducer.cpp`): gradients go into buckets of about 25 MB,
//! taken in reverse parameter order (the order backward produces them); each bucket is one
//! contiguous buffer, filled with the gradients times `1 / world_size` (DDP's `div_factor_`,
//! applied as they are copied in), summed over the ranks, and copied back.
//!
//! A bucket is one collective: far fewer than one per parameter, and small enough that the
//! first buckets travel while the next ones are still being filled. All buckets are launched
//! before any is waited for.
//!
//! - [`GradientReducer`]: the buckets, allocated once and reused every step, as DDP's
//!   `Reducer` keeps them (a fresh 200 MB buffer per step costs its page faults every time).
//! - [`all_reduce_gradients`]: the same in one call, buckets allocated for that call.
//!
//! The buckets live on the parameters' device, which must be the process group's
//! ([`ProcessGroup::device`]); the reducer says so before any bucket is sent.

use tch::{Device, Kind, Tensor};

use super::error::{DistError, Result};
use super::process_group::ProcessGroup;

/// DDP's default `bucket_cap_mb` (25 MiB).
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Replaces the gradient of every parameter that requires one by its mean over all ranks.
/// Every rank must call it with the same parameters, in the same order, after its backward.
/// `bucket_bytes`: the size a bucket grows to before it is sent ([`DEFAULT_BUCKET_BYTES`];
/// `usize::MAX` sends one flat buffer per dtype and device). A training loop should keep a
/// [`GradientReducer`] instead, which allocates its buckets once.
pub fn all_reduce_gradients(group: &ProcessGroup, params: &[Tensor], bucket_bytes: usize) -> Result<()> {
    GradientReducer::new(params, bucket_bytes)?.all_reduce(group, params)
}

/// DDP's gradient buckets for one list of parameters.
pub struct GradientReducer {
    buckets: Vec<Bucket>,
    /// How many parameters the list had, to catch a different list later.
    num_params: usize,
}

struct Bucket {
    /// Indices into the parameter list, in the order of the buffer.
    params: Vec<usize>,
    /// Their gradients, one after the other.
    buffer: Tensor,
}

impl GradientReducer {
    /// Buckets for the parameters of `params` that require a gradient (the gradient has the
    /// parameter's shape, dtype and device).
    pub fn new(params: &[Tensor], bucket_bytes: usize) -> Result<Self> {
        // Reverse parameter order, as DDP: roughly the order in which backward finishes them.
        let trainable: Vec<usize> = (0..params.len()).rev().filter(|&i| params[i].requires_grad()).collect();
        let layout: Vec<_> = trainable
            .iter()
            .map(|&i| {
                let p = &params[i];
                (p.numel() * p.kind().elt_size_in_bytes(), (p.kind(), p.device()))
            })
            .collect();
        let buckets = assign_buckets(&layout, bucket_bytes)
            .into_iter()
            .map(|members| {
                let members: Vec<usize> = members.into_iter().map(|k| trainable[k]).collect();
                let first = &params[members[0]];
                let total: usize = members.iter().map(|&i| params[i].numel()).sum();
                let buffer = Tensor::f_empty([total as i64], (first.kind(), first.device()))
                    .map_err(|e| tensor_error(format!("allocating a bucket of {total} elements: {e}")))?;
                Ok(Bucket { params: members, buffer })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GradientReducer { buckets, num_params: params.len() })
    }

    /// The number of buckets (one collective each).
    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Replaces the gradient of every parameter that requires one by its mean over all ranks.
    /// `params`: the list the reducer was made for. Every rank must call it at the same point,
    /// after its backward.
    pub fn all_reduce(&mut self, group: &ProcessGroup, params: &[Tensor]) -> Result<()> {
        if params.len() != self.num_params {
            return Err(tensor_error(format!(
                "the reducer was made for {} parameters, not {}",
                self.num_params,
                params.len()
            )));
        }
        // On a world of one too: a reducer on another device than the group's is a mistake the
        // first multi-rank run must not be the one to find.
        for (b, bucket) in self.buckets.iter().enumerate() {
            group.check_tensor(&bucket.buffer, &format!("gradient all-reduce, bucket {b}"))?;
        }
        if group.world_size() == 1 {
            return Ok(());
        }
        let _no_grad = tch::no_grad_guard();
        let scale = 1.0 / group.world_size() as f64;
        // Every gradient first: a missing one must fail before any bucket is sent, or the other
        // ranks would wait for a bucket this rank never sends.
        let mut grads: Vec<Vec<Tensor>> = Vec::with_capacity(self.buckets.len());
        for bucket in &self.buckets {
            grads.push(bucket.params.iter().map(|&i| gradient(params, i)).collect::<Result<_>>()?);
        }
        // Fill and launch bucket after bucket: Gloo sends the first while the next is filled.
        // Each launched bucket stays borrowed by its work until the wait below.
        let mut works = Vec::with_capacity(self.buckets.len());
        for (bucket, grads) in self.buckets.iter_mut().zip(&grads) {
            bucket.fill(grads, scale)?;
            works.push(group.all_reduce_sum_async(&mut bucket.buffer)?);
        }
        for work in works {
            work.wait()?;
        }
        for (bucket, grads) in self.buckets.iter().zip(&mut grads) {
            bucket.hand_back(params, grads)?;
        }
        Ok(())
    }
}

impl Bucket {
    /// The pieces of the buffer, one per gradient, each viewed in its gradient's shape.
    fn pieces<'a>(&'a self, grads: &'a [Tensor]) -> impl Iterator<Item = (usize, &'a Tensor, Result<Tensor>)> + 'a {
        let mut offset = 0i64;
        self.params.iter().zip(grads).map(move |(&index, grad)| {
            let numel = grad.numel() as i64;
            let piece = self
                .buffer
                .f_narrow(0, offset, numel)
                .and_then(|piece| piece.f_view_as(grad))
                .map_err(|e| tensor_error(format!("the bucket piece of parameter {index}: {e}")));
            offset += numel;
            (index, grad, piece)
        })
    }

    /// Copies `grads` times `scale` into the buffer: one pass, as DDP's `mul_out` into its
    /// bucket views.
    fn fill(&self, grads: &[Tensor], scale: f64) -> Result<()> {
        for (index, grad, piece) in self.pieces(grads) {
            // `_out` also returns its output: a second handle on the piece, dropped.
            let _ = grad
                .f_mul_scalar_out(&piece?, scale)
                .map_err(|e| tensor_error(format!("copying the gradient of parameter {index} into its bucket: {e}")))?;
        }
        Ok(())
    }

    /// Gives the averaged gradients back to the parameters: a contiguous parameter's gradient
    /// becomes its piece of the buffer (as DDP's `gradient_as_bucket_view`, with no copy; the
    /// next `zero_grad` drops it before the buffer is filled again), others get a copy in their
    /// own layout (channels-last weights).
    fn hand_back(&self, params: &[Tensor], grads: &mut [Tensor]) -> Result<()> {
        let pieces: Vec<(usize, Result<Tensor>)> = self.pieces(grads).map(|(index, _, piece)| (index, piece)).collect();
        for ((index, piece), grad) in pieces.into_iter().zip(grads.iter_mut()) {
            let piece = piece?;
            if grad.is_contiguous() {
                crate::ffi::set_grad(&mut params[index].shallow_clone(), &piece).map_err(|e| {
                    tensor_error(format!("handing the averaged gradient of parameter {index} back: {e}"))
                })?;
            } else {
                grad.f_copy_(&piece).map_err(|e| {
                    tensor_error(format!("copying the averaged gradient of parameter {index} back: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

/// The gradient of `params[index]`, which must exist and match its parameter.
fn gradient(params: &[Tensor], index: usize) -> Result<Tensor> {
    let param = &params[index];
    let grad = param.f_grad().map_err(|e| tensor_error(format!("the gradient of parameter {index}: {e}")))?;
    if !grad.defined() {
        return Err(tensor_error(format!(
            "parameter {index} (shape {:?}) has no gradient: gradients are averaged after backward, and every \
             parameter that requires a gradient must get one",
            param.size()
        )));
    }
    if grad.size() != param.size() || grad.kind() != param.kind() || grad.device() != param.device() {
        return Err(tensor_error(format!(
            "the gradient of parameter {index} ({:?} {:?} on {:?}) does not match the parameter ({:?} {:?} on {:?})",
            grad.size(),
            grad.kind(),
            grad.device(),
            param.size(),
            param.kind(),
            param.device()
        )));
    }
    Ok(grad)
}

fn tensor_error(reason: String) -> DistError {
    DistError::BadTensor { what: "gradient all-reduce".into(), reason }
}

/// Groups tensors (bytes, dtype and device each, in the order given) into buckets, as DDP's
/// `compute_bucket_assignment_by_size` does: one open bucket per dtype and device, which is
/// closed once it holds at least `bucket_bytes`; buckets are ordered by their first tensor.
/// Returns indices into `tensors`.
pub fn assign_buckets(tensors: &[(usize, (Kind, Device))], bucket_bytes: usize) -> Vec<Vec<usize>> {
    let mut closed: Vec<Vec<usize>> = Vec::new();
    // Open buckets: (key, indices, bytes). Few keys, so a list beats a map.
    let mut open: Vec<((Kind, Device), Vec<usize>, usize)> = Vec::new();
    for (index, &(bytes, key)) in tensors.iter().enumerate() {
        let slot = match open.iter().position(|(k, _, _)| *k == key) {
            Some(slot) => slot,
            None => {
                open.push((key, Vec::new(), 0));
                open.len() - 1
            }
        };
        let (_, indices, size) = &mut open[slot];
        indices.push(index);
        *size = size.saturating_add(bytes);
        if *size >= bucket_bytes {
            let (_, indices, _) = open.swap_remove(slot);
            closed.push(indices);
        }
    }
    closed.extend(open.into_iter().map(|(_, indices, _)| indices).filter(|indices| !indices.is_empty()));
    closed.sort_by_key(|indices| indices[0]);
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

    #[test]
    fn buckets_close_once_full() {
        let sizes = [(10, F32), (10, F32), (25, F32), (5, F32), (1, F32)];
        assert_eq!(assign_buckets(&sizes, 20), vec![vec![0, 1], vec![2], vec![3, 4]]);
    }

    #[test]
    fn one_bucket_when_unbounded() {
        let sizes = [(10, F32), (10, F32), (25, F32)];
        assert_eq!(assign_buckets(&sizes, usize::MAX), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn dtypes_never_share_a_bucket() {
        let f64 = (Kind::Double, Device::Cpu);
        let sizes = [(8, F32), (8, f64), (8, F32), (8, f64)];
        assert_eq!(assign_buckets(&sizes, 100), vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn empty_is_empty() {
        assert!(assign_buckets(&[], 10).is_empty());
    }
}

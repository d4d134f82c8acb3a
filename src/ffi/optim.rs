//! The Rust side of `src/ffi/optim.cpp`: ATen operators that `torch.optim` and
//! `clip_grad_norm_` call with a scalar argument tch 0.26 does not pass on (`alpha` of `add`,
//! `value` of `addcmul_` and `addcdiv_`), `torch.linalg.vector_norm`, and the fused Adam/AdamW
//! kernels. Calling the same operators as PyTorch is what makes the optimizers agree with it
//! bit for bit: `a + alpha * b` in one kernel rounds differently from `a + (alpha * b)` in two.

use std::ffi::c_void;

use tch::Tensor;

extern "C" {
    fn tch_alexnet_add_(tensor: *mut c_void, other: *const c_void, alpha: f64) -> i32;
    fn tch_alexnet_add(out: *mut *mut c_void, tensor: *const c_void, other: *const c_void, alpha: f64) -> i32;
    fn tch_alexnet_addcmul_(tensor: *mut c_void, t1: *const c_void, t2: *const c_void, value: f64) -> i32;
    fn tch_alexnet_addcdiv_(tensor: *mut c_void, t1: *const c_void, t2: *const c_void, value: f64) -> i32;
    fn tch_alexnet_vector_norm(out: *mut *mut c_void, tensor: *const c_void, ord: f64) -> i32;
    fn tch_alexnet_fused_adam_(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        max_exp_avg_sqs: *const *mut c_void,
        steps: *const *mut c_void,
        n: i32,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        amsgrad: i32,
        maximize: i32,
        decoupled: i32,
    ) -> i32;
}

/// A libtorch operator that threw (wrong shapes, devices or dtypes); the C++ message is lost at
/// the boundary, so the error names the operator and its operands' shapes.
#[derive(Debug, thiserror::Error)]
#[error("libtorch refused `{op}` on tensors of shapes {shapes:?}")]
pub struct OpError {
    pub op: &'static str,
    pub shapes: Vec<Vec<i64>>,
}

fn check(status: i32, op: &'static str, tensors: &[&Tensor]) -> Result<(), OpError> {
    if status == 0 {
        Ok(())
    } else {
        Err(OpError { op, shapes: tensors.iter().map(|t| t.size()).collect() })
    }
}

/// A tensor that the C++ side allocated with `new at::Tensor(...)`.
fn owned(status: i32, ptr: *mut c_void, op: &'static str, tensors: &[&Tensor]) -> Result<Tensor, OpError> {
    check(status, op, tensors)?;
    // SAFETY: on success the C++ side stored a fresh heap `at::Tensor*`, which tch's `Tensor`
    // takes ownership of (and deletes on drop), as with the tensors tch itself returns.
    Ok(unsafe { Tensor::from_ptr(ptr.cast()) })
}

/// `tensor.add_(other, alpha=alpha)`.
pub fn add_(tensor: &mut Tensor, other: &Tensor, alpha: f64) -> Result<(), OpError> {
    // SAFETY: both tensors are alive for the call; the C++ side only runs the operator.
    check(
        unsafe { tch_alexnet_add_(tensor.as_mut_ptr().cast(), other.as_ptr().cast(), alpha) },
        "add_",
        &[tensor, other],
    )
}

/// `tensor.add(other, alpha=alpha)`, a new tensor.
pub fn add(tensor: &Tensor, other: &Tensor, alpha: f64) -> Result<Tensor, OpError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: both tensors are alive for the call; `out` receives a new tensor on success.
    let status = unsafe { tch_alexnet_add(&mut out, tensor.as_ptr().cast(), other.as_ptr().cast(), alpha) };
    owned(status, out, "add", &[tensor, other])
}

/// `tensor.addcmul_(t1, t2, value=value)`.
pub fn addcmul_(tensor: &mut Tensor, t1: &Tensor, t2: &Tensor, value: f64) -> Result<(), OpError> {
    // SAFETY: the tensors are alive for the call; the C++ side only runs the operator.
    let status =
        unsafe { tch_alexnet_addcmul_(tensor.as_mut_ptr().cast(), t1.as_ptr().cast(), t2.as_ptr().cast(), value) };
    check(status, "addcmul_", &[tensor, t1, t2])
}

/// `tensor.addcdiv_(t1, t2, value=value)`.
pub fn addcdiv_(tensor: &mut Tensor, t1: &Tensor, t2: &Tensor, value: f64) -> Result<(), OpError> {
    // SAFETY: the tensors are alive for the call; the C++ side only runs the operator.
    let status =
        unsafe { tch_alexnet_addcdiv_(tensor.as_mut_ptr().cast(), t1.as_ptr().cast(), t2.as_ptr().cast(), value) };
    check(status, "addcdiv_", &[tensor, t1, t2])
}

/// `torch.linalg.vector_norm(tensor, ord)` over all elements, a 0-dim tensor.
pub fn vector_norm(tensor: &Tensor, ord: f64) -> Result<Tensor, OpError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: the tensor is alive for the call; `out` receives a new tensor on success.
    let status = unsafe { tch_alexnet_vector_norm(&mut out, tensor.as_ptr().cast(), ord) };
    owned(status, out, "linalg_vector_norm", &[tensor])
}

/// The tensors of one `torch._fused_adam_` / `torch._fused_adamw_` call, one entry per
/// parameter (`max_exp_avg_sqs` empty unless `amsgrad`).
pub struct FusedAdamTensors<'a> {
    pub params: &'a [&'a Tensor],
    pub grads: &'a [&'a Tensor],
    pub exp_avgs: &'a [&'a Tensor],
    pub exp_avg_sqs: &'a [&'a Tensor],
    pub max_exp_avg_sqs: &'a [&'a Tensor],
    pub steps: &'a [&'a Tensor],
}

/// The scalars of a fused Adam step (`decoupled`: AdamW's `_fused_adamw_`).
#[derive(Debug, Clone, Copy)]
pub struct FusedAdamScalars {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    pub amsgrad: bool,
    pub maximize: bool,
    pub decoupled: bool,
}

/// `torch._fused_adam_(...)` or `torch._fused_adamw_(...)`: updates parameters, moments (and
/// the running maxima) in place, in one pass per tensor. The steps must already be incremented.
pub fn fused_adam_(t: &FusedAdamTensors, s: FusedAdamScalars) -> Result<(), OpError> {
    let n = t.params.len();
    let lists = [t.grads, t.exp_avgs, t.exp_avg_sqs, t.steps];
    let amsgrad_ok = !s.amsgrad || t.max_exp_avg_sqs.len() == n;
    if lists.iter().any(|l| l.len() != n) || !amsgrad_ok || i32::try_from(n).is_err() {
        return Err(OpError { op: "_fused_adam_ (lists of different lengths)", shapes: vec![] });
    }
    // The C++ side reads the tensors through these pointers and writes through the tensors
    // themselves (shared storage), so taking const pointers as mutable is sound.
    let ptrs = |l: &[&Tensor]| l.iter().map(|x| x.as_ptr() as *mut c_void).collect::<Vec<_>>();
    let (p, g, m, v, vmax, st) =
        (ptrs(t.params), ptrs(t.grads), ptrs(t.exp_avgs), ptrs(t.exp_avg_sqs), ptrs(t.max_exp_avg_sqs), ptrs(t.steps));
    // SAFETY: every pointer is a live `at::Tensor*` for the duration of the call; the lengths
    // were checked above.
    let status = unsafe {
        tch_alexnet_fused_adam_(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            vmax.as_ptr(),
            st.as_ptr(),
            n as i32,
            s.lr,
            s.beta1,
            s.beta2,
            s.weight_decay,
            s.eps,
            i32::from(s.amsgrad),
            i32::from(s.maximize),
            i32::from(s.decoupled),
        )
    };
    check(status, "_fused_adam_", t.params)
}

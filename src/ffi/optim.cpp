// The tensor operations of torch.optim and torch.nn.utils.clip_grad_norm_ that tch 0.26 binds
// without their scalar argument: `add(other, alpha)`, `addcmul_(t1, t2, value)`,
// `addcdiv_(t1, t2, value)` (tch drops `alpha` and `value`), `linalg_vector_norm(ord)`, and the
// fused Adam/AdamW kernels (`_fused_adam_`, `_fused_adamw_`) that `torch.optim.Adam(fused=True)`
// calls. Each is the very ATen operator that PyTorch's Python code calls, so that the results
// agree bit for bit; every function catches C++ exceptions and reports them as a status.
#include <ATen/ATen.h>

#include <vector>

namespace {
std::vector<at::Tensor> list(at::Tensor* const* tensors, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}
}  // namespace

// self.add_(other, alpha=alpha)
extern "C" int tch_alexnet_add_(at::Tensor* self, const at::Tensor* other, double alpha) {
  try {
    self->add_(*other, alpha);
    return 0;
  } catch (...) {
    return 1;
  }
}

// *out = self.add(other, alpha=alpha), a new tensor that the caller owns.
extern "C" int tch_alexnet_add(at::Tensor** out, const at::Tensor* self, const at::Tensor* other, double alpha) {
  try {
    *out = new at::Tensor(self->add(*other, alpha));
    return 0;
  } catch (...) {
    return 1;
  }
}

// self.addcmul_(t1, t2, value=value)
extern "C" int tch_alexnet_addcmul_(at::Tensor* self, const at::Tensor* t1, const at::Tensor* t2, double value) {
  try {
    self->addcmul_(*t1, *t2, value);
    return 0;
  } catch (...) {
    return 1;
  }
}

// self.addcdiv_(t1, t2, value=value)
extern "C" int tch_alexnet_addcdiv_(at::Tensor* self, const at::Tensor* t1, const at::Tensor* t2, double value) {
  try {
    self->addcdiv_(*t1, *t2, value);
    return 0;
  } catch (...) {
    return 1;
  }
}

// *out = torch.linalg.vector_norm(self, ord), a new 0-dim tensor that the caller owns.
extern "C" int tch_alexnet_vector_norm(at::Tensor** out, const at::Tensor* self, double ord) {
  try {
    *out = new at::Tensor(at::linalg_vector_norm(*self, ord));
    return 0;
  } catch (...) {
    return 1;
  }
}

// torch._fused_adam_ (decoupled = 0) or torch._fused_adamw_ (decoupled = 1) over n parameters;
// the caller has already added 1 to each step, as torch.optim.adam._fused_adam does.
// max_exp_avg_sqs is read only with amsgrad (then n tensors, else ignored).
extern "C" int tch_alexnet_fused_adam_(at::Tensor* const* params, at::Tensor* const* grads,
                                       at::Tensor* const* exp_avgs, at::Tensor* const* exp_avg_sqs,
                                       at::Tensor* const* max_exp_avg_sqs, at::Tensor* const* steps, int n,
                                       double lr, double beta1, double beta2, double weight_decay, double eps,
                                       int amsgrad, int maximize, int decoupled) {
  try {
    auto p = list(params, n), g = list(grads, n), m = list(exp_avgs, n), v = list(exp_avg_sqs, n),
         s = list(steps, n);
    auto vmax = amsgrad ? list(max_exp_avg_sqs, n) : std::vector<at::Tensor>{};
    if (decoupled) {
      at::_fused_adamw_(p, g, m, v, vmax, s, lr, beta1, beta2, weight_decay, eps, amsgrad != 0, maximize != 0);
    } else {
      at::_fused_adam_(p, g, m, v, vmax, s, lr, beta1, beta2, weight_decay, eps, amsgrad != 0, maximize != 0);
    }
    return 0;
  } catch (...) {
    return 1;
  }
}

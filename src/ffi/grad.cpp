// Drops a parameter's gradient, as PyTorch's `optimizer.zero_grad()` (set_to_none=True) does.
// tch can only zero a gradient in place, which keeps every gradient allocated through the next
// forward pass and makes backward add into it instead of handing its result over.
// And sets a gradient to a given tensor (DDP's bucket views: the averaged gradients stay where
// the all-reduce left them, with no copy back).
#include <ATen/core/Tensor.h>

extern "C" int tch_alexnet_clear_grad(at::Tensor* tensor) noexcept {
  try {
    tensor->mutable_grad().reset();
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int tch_alexnet_set_grad(at::Tensor* tensor, const at::Tensor* grad) noexcept {
  try {
    tensor->mutable_grad() = *grad;
    return 0;
  } catch (...) {
    return 1;
  }
}

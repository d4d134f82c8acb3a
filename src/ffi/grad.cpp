// Drops a parameter's gradient, as PyTorch's `optimizer.zero_grad()` (set_to_none=True) does.
// tch can only zero a gradient in place, which keeps every gradient allocated through the next
// forward pass and makes backward add into it instead of handing its result over.
#include <ATen/core/Tensor.h>

extern "C" int tch_alexnet_clear_grad(at::Tensor* tensor) {
  try {
    tensor->mutable_grad().reset();
    return 0;
  } catch (...) {
    return 1;
  }
}

// Chooses the dtype of libtorch's CUDA autocast. tch exposes autocast on/off only, and
// libtorch's CUDA default is fp16, which needs a gradient scaler; bf16 (the recipe's --amp)
// has fp32's range and needs none.
//
// Both functions catch every C++ exception (none may cross into Rust) and return a status:
// 0 on success, 1 on failure.
#include <ATen/autocast_mode.h>

extern "C" int tch_alexnet_set_cuda_autocast_bf16(int bf16) noexcept {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
    return 0;
  } catch (...) {
    return 1;
  }
}

// Writes 1 to `*is_bf16` when CUDA autocast computes in bf16, else 0.
extern "C" int tch_alexnet_cuda_autocast_is_bf16(int* is_bf16) noexcept {
  try {
    *is_bf16 = at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16 ? 1 : 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

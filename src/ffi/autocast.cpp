// Chooses the dtype of libtorch's CUDA autocast. tch exposes autocast on/off only, and
// libtorch's CUDA default is fp16, which needs a gradient scaler; bf16 (the recipe's --amp)
// has fp32's range and needs none.
#include <ATen/autocast_mode.h>

extern "C" int tch_alexnet_set_cuda_autocast_bf16(int bf16) {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int tch_alexnet_cuda_autocast_is_bf16() {
  return at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16 ? 1 : 0;
}

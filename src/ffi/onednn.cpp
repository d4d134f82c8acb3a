// Switches libtorch's oneDNN (MKL-DNN) CPU kernels on or off, as `torch.backends.mkldnn.enabled`
// does in Python; tch has no binding for it. Off, convolutions fall back to ATen's own
// im2col + GEMM kernels.
//
// Both functions catch every C++ exception (none may cross into Rust) and return a status:
// 0 on success, 1 on failure.
#include <ATen/Context.h>

extern "C" int tch_alexnet_set_onednn_enabled(int enabled) noexcept {
  try {
    at::globalContext().setUserEnabledMkldnn(enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}

// Writes 1 to `*enabled` when libtorch may use oneDNN for CPU convolutions, else 0.
extern "C" int tch_alexnet_onednn_enabled(int* enabled) noexcept {
  try {
    *enabled = at::globalContext().userEnabledMkldnn() ? 1 : 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

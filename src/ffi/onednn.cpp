// Switches libtorch's oneDNN (MKL-DNN) CPU kernels on or off, as `torch.backends.mkldnn.enabled`
// does in Python; tch has no binding for it. Off, convolutions fall back to ATen's own
// im2col + GEMM kernels.
#include <ATen/Context.h>

extern "C" int tch_alexnet_set_onednn_enabled(int enabled) {
  try {
    at::globalContext().setUserEnabledMkldnn(enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int tch_alexnet_onednn_enabled() {
  return at::globalContext().userEnabledMkldnn() ? 1 : 0;
}

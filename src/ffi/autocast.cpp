// libtorch's autocast for one device type, in bf16: what `torch.autocast(device_type,
// dtype=torch.bfloat16)` does on entering and leaving its region. tch binds only the legacy
// CUDA switch (and skips it where CUDA is absent), and libtorch's CUDA default dtype is fp16,
// which needs a gradient scaler; bf16 has fp32's range and needs none.
//
// libtorch keeps the autocast switch, its dtype and the region nesting per thread, so a region
// covers only the thread that entered it.
//
// Every function catches every C++ exception (none may cross into Rust) and returns a status:
// 0 on success, 1 on failure. `device` is 0 for the CPU, 1 for CUDA.
#include <ATen/autocast_mode.h>

namespace {
c10::DeviceType device_type(int device) {
  return device == 1 ? at::kCUDA : at::kCPU;
}
}  // namespace

// Enters a bf16 autocast region for `device`'s type: writes whether autocast was on before to
// `*previous` (for the matching exit), sets the dtype to bf16 and the switch on.
extern "C" int tch_alexnet_autocast_enter(int device, int* previous) noexcept {
  try {
    const auto type = device_type(device);
    *previous = at::autocast::is_autocast_enabled(type) ? 1 : 0;
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return 1;
  }
}

// Leaves the region: the outermost exit drops the cached bf16 copies of the weights (as
// torch.autocast's __exit__ does), and the switch goes back to `previous`.
extern "C" int tch_alexnet_autocast_exit(int device, int previous) noexcept {
  try {
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(device_type(device), previous != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}

// Writes 1 to `*enabled` when autocast is on for `device`'s type on the calling thread, and 1
// to `*bf16` when its dtype is bf16 (else 0 to each).
extern "C" int tch_alexnet_autocast_state(int device, int* enabled, int* bf16) noexcept {
  try {
    const auto type = device_type(device);
    *enabled = at::autocast::is_autocast_enabled(type) ? 1 : 0;
    *bf16 = at::autocast::get_autocast_dtype(type) == at::kBFloat16 ? 1 : 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

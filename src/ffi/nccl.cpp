// Creates libtorch's ProcessGroupNCCL for c10d.cpp. Compiled only where build.rs finds nccl.h,
// the CUDA runtime headers and libtorch_cuda.so (the PyTorch CUDA wheels bring all three).
//
// ProcessGroupNCCL and its Options are allocated here, with sizes computed from this
// build's headers, while their constructors (in libtorch_cuda.so) write the fields with
// the sizes of the NCCL that libtorch was built with. The two nccl.h normally match (the
// wheel pins its NCCL), but a mismatch in ncclConfig_t or in a NCCL_HAS_* switch would
// make the constructor write past an exact-size allocation. So both objects get generous
// room to spare (`Padded`); every use after that goes through libtorch's own out-of-line code.
#include <chrono>
#include <cstddef>
#include <new>
#include <utility>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace {

constexpr std::size_t kSpareBytes = 64 * 1024;

// T with room to spare after it. A type of its own, not raw storage placed under a T: the
// object is deleted through intrusive_ptr, i.e. through T's virtual destructor, whose deleting
// variant frees with the sized operator delete and the size of the most derived type. With
// `new Padded<T>` that is sizeof(Padded<T>), the size it was allocated with; a T constructed in
// a larger raw buffer would be freed with sizeof(T), another size than allocated (undefined
// behaviour, and a real mismatch for allocators that use the size). Neither
// ProcessGroupNCCL nor its Options is final.
template <class T>
struct Padded final : T {
  template <class... Args>
  explicit Padded(Args&&... args) : T(std::forward<Args>(args)...) {}
  // Never read or written by us; a larger T of libtorch's build may reach into it.
  unsigned char spare[kSpareBytes];
};

template <class T, class... Args>
c10::intrusive_ptr<T> make_padded(Args&&... args) {
  return c10::make_intrusive<Padded<T>>(std::forward<Args>(args)...);
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> tch_alexnet_make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                               int rank, int size, std::chrono::milliseconds timeout) {
  auto options = make_padded<c10d::ProcessGroupNCCL::Options>(false);
  // The collectives' timeout, after which libtorch's watchdog aborts the communicator (and, by
  // default, ends the process: a hung NCCL collective cannot be cancelled otherwise).
  options->timeout = timeout;
  auto group = make_padded<c10d::ProcessGroupNCCL>(store, rank, size, options);
  return c10::static_intrusive_pointer_cast<c10d::Backend>(group);
}

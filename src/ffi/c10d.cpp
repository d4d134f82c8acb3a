// A thin C binding of libtorch's own c10d (torch.distributed's C++ core) for
// `src/distributed/`: a TCPStore for the rendezvous, ProcessGroupGloo (or, in
// `nccl.cpp`, ProcessGroupNCCL) for the collectives, and their Work handles.
// No collective is implemented here: every call goes to the code PyTorch runs.
//
// The gloo headers (Debian's libgloo-dev, 2022; the wheel ships none) are older
// than the gloo the wheel was built with, so nothing here may depend on gloo's
// struct layouts or inline code: no gloo type is touched at all (the device is
// made by libtorch's Options::create_default), ProcessGroupGloo holds its gloo
// objects through shared_ptr/unique_ptr only (its size does not depend on
// them), and GlooStore, whose virtuals differ between gloo versions
// (GLOO_STORE_HAS_STORE_V2), is only ever built inside libtorch. Only pointers
// and c10::intrusive_ptr cross into libtorch's out-of-line code.
//
// Every function is noexcept, catches every C++ exception and returns a status with the
// exception's message (a malloc'd string the caller frees with
// tch_alexnet_c10d_free). Built with -DUSE_C10D_GLOO only when gloo's headers
// were found (build.rs); without them, creating a Gloo group fails with
// kUnavailable.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#ifdef TCH_ALEXNET_HAVE_NCCL
// Defined in nccl.cpp, which needs the CUDA and NCCL headers.
c10::intrusive_ptr<c10d::Backend> tch_alexnet_make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                               int rank, int size, std::chrono::milliseconds timeout);
#endif

namespace {

// Statuses; src/distributed/process_group.rs mirrors them.
enum Status : int {
  kOk = 0,
  kOther = 1,       // any other exception (gloo's own IoException and EnforceNotMet among them)
  kNetwork = 2,     // c10::DistNetworkError: connect, listen, socket errors
  kStore = 3,       // c10::DistStoreError: mostly a store wait that timed out
  kBackend = 4,     // c10::DistBackendError / c10::DistError: the backend reported a failure
  kUnavailable = 5, // this build lacks the backend
  kInvalid = 6,     // a bad argument, caught before libtorch is called
};

char* copy_message(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.data(), message.size());
    out[message.size()] = '\0';
  }
  return out;
}

void set_error(char** error, const std::string& message) {
  if (error != nullptr) {
    *error = copy_message(message);
  }
}

// Runs `body`, turning any exception into a status and its message. c10 errors are reported
// without their C++ backtrace, which says nothing to a user.
template <class F>
int guarded(char** error, F&& body) {
  try {
    body();
    return kOk;
  } catch (const c10::DistNetworkError& e) {
    set_error(error, e.what_without_backtrace());
    return kNetwork;
  } catch (const c10::DistStoreError& e) {
    set_error(error, e.what_without_backtrace());
    return kStore;
  } catch (const c10::DistError& e) {
    set_error(error, e.what_without_backtrace());
    return kBackend;
  } catch (const c10::Error& e) {
    set_error(error, e.what_without_backtrace());
    return kOther;
  } catch (const std::exception& e) {
    set_error(error, e.what());
    return kOther;
  } catch (...) {
    set_error(error, "unknown C++ exception");
    return kOther;
  }
}

}  // namespace

// A process group: the TCPStore every rank shares, and the backend.
struct tch_alexnet_pg {
  c10::intrusive_ptr<c10d::Store> store;       // the TCPStore itself
  c10::intrusive_ptr<c10d::Store> user_store;  // "user/" keys, apart from the backend's own
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// An asynchronous collective in flight.
struct tch_alexnet_work {
  c10::intrusive_ptr<c10d::Work> work;
};

extern "C" void tch_alexnet_c10d_free(void* pointer) noexcept { std::free(pointer); }

// Whether this build has backend 0 (Gloo) or 1 (NCCL).
extern "C" int tch_alexnet_c10d_has_backend(int backend) noexcept {
  switch (backend) {
#ifdef USE_C10D_GLOO
    case 0:
      return 1;
#endif
#ifdef TCH_ALEXNET_HAVE_NCCL
    case 1:
      return 1;
#endif
    default:
      return 0;
  }
}

// Creates the TCPStore (hosted by rank 0, which waits for all `size` ranks to connect) and the
// backend (0: Gloo, 1: NCCL) over it. Every wait is bounded by `timeout_ms`.
extern "C" int tch_alexnet_c10d_pg_new(const char* master_addr, uint16_t master_port, int rank, int size,
                                       int64_t timeout_ms, int backend, tch_alexnet_pg** out, char** error) noexcept {
  if (out == nullptr || master_addr == nullptr || rank < 0 || size < 1 || rank >= size || timeout_ms <= 0) {
    set_error(error, "invalid process group arguments");
    return kInvalid;
  }
  *out = nullptr;
  if (tch_alexnet_c10d_has_backend(backend) == 0) {
    set_error(error, backend == 0 ? "no Gloo in this build" : "no NCCL in this build");
    return kUnavailable;
  }
  return guarded(error, [&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions options;
    options.port = master_port;
    options.isServer = rank == 0;
    options.numWorkers = static_cast<std::size_t>(size);
    options.waitWorkers = true;
    options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), options);
    // PyTorch gives each group's backend a key prefix of its own; so do we, so that the
    // caller's keys cannot collide with the backend's rendezvous keys.
    auto backend_store = c10::make_intrusive<c10d::PrefixStore>("default_pg/", store);
    auto user_store = c10::make_intrusive<c10d::PrefixStore>("user/", store);
    c10::intrusive_ptr<c10d::Backend> made;
#ifdef USE_C10D_GLOO
    if (backend == 0) {
      // create_default: the device PyTorch picks (GLOO_SOCKET_IFNAME, else this host's address,
      // else loopback), and the timeout every Gloo operation is bounded by.
      auto gloo_options = c10d::ProcessGroupGloo::Options::create_default(timeout);
      made = c10::make_intrusive<c10d::ProcessGroupGloo>(backend_store, rank, size, gloo_options);
    }
#endif
#ifdef TCH_ALEXNET_HAVE_NCCL
    if (backend == 1) {
      made = tch_alexnet_make_nccl_backend(backend_store, rank, size, timeout);
    }
#endif
    auto* pg = new tch_alexnet_pg{store, user_store, made, timeout};
    *out = pg;
  });
}

extern "C" void tch_alexnet_c10d_pg_free(tch_alexnet_pg* pg) noexcept {
  try {
    delete pg;
  } catch (...) {
    // A destructor that throws would terminate the process; nothing is left to report to.
  }
}

// Starts broadcasting `tensor` from rank `root` into every rank's `tensor`.
extern "C" int tch_alexnet_c10d_broadcast(tch_alexnet_pg* pg, at::Tensor* tensor, int root, tch_alexnet_work** out,
                                          char** error) noexcept {
  return guarded(error, [&] {
    // One tensor per call: a list means "one tensor per local device" to c10d, all of them
    // reduced or broadcast together.
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.rootTensor = 0;
    options.timeout = pg->timeout;
    *out = new tch_alexnet_work{pg->backend->broadcast(tensors, options)};
  });
}

// Starts summing `tensor` over all ranks, in place.
extern "C" int tch_alexnet_c10d_all_reduce_sum(tch_alexnet_pg* pg, at::Tensor* tensor, tch_alexnet_work** out,
                                               char** error) noexcept {
  return guarded(error, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = pg->timeout;
    *out = new tch_alexnet_work{pg->backend->allreduce(tensors, options)};
  });
}

// Starts a barrier: it completes once every rank has reached it (and, on Gloo, once this
// rank's earlier collectives have completed).
extern "C" int tch_alexnet_c10d_barrier(tch_alexnet_pg* pg, tch_alexnet_work** out, char** error) noexcept {
  return guarded(error, [&] {
    c10d::BarrierOptions options;
    options.timeout = pg->timeout;
    *out = new tch_alexnet_work{pg->backend->barrier(options)};
  });
}

// Waits for a collective, at most `timeout_ms`; fails with the collective's own error.
extern "C" int tch_alexnet_c10d_work_wait(tch_alexnet_work* work, int64_t timeout_ms, char** error) noexcept {
  return guarded(error, [&] {
    // Work::wait returns false only when the work was aborted.
    if (!work->work->wait(std::chrono::milliseconds(timeout_ms))) {
      throw std::runtime_error("the collective was aborted");
    }
  });
}

extern "C" void tch_alexnet_c10d_work_free(tch_alexnet_work* work) noexcept {
  try {
    delete work;
  } catch (...) {
  }
}

extern "C" int tch_alexnet_c10d_store_set(tch_alexnet_pg* pg, const char* key, const uint8_t* data, size_t len,
                                          char** error) noexcept {
  return guarded(error, [&] { pg->user_store->set(std::string(key), std::vector<uint8_t>(data, data + len)); });
}

// Waits (at most the store's timeout) for `key`, then returns its value in a malloc'd buffer
// (`*data`, `*len`; free it with tch_alexnet_c10d_free).
extern "C" int tch_alexnet_c10d_store_get(tch_alexnet_pg* pg, const char* key, uint8_t** data, size_t* len,
                                          char** error) noexcept {
  *data = nullptr;
  *len = 0;
  return guarded(error, [&] {
    std::vector<uint8_t> value = pg->user_store->get(std::string(key));
    // malloc(0) may return null; one byte more keeps "empty value" and "out of memory" apart.
    auto* buffer = static_cast<uint8_t*>(std::malloc(value.size() + 1));
    if (buffer == nullptr) {
      throw std::bad_alloc();
    }
    std::memcpy(buffer, value.data(), value.size());
    *data = buffer;
    *len = value.size();
  });
}

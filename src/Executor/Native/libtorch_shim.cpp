// What the executor needs of libtorch's C++ API that TorchSharp binds not (LibtorchShim.cs compiles it at run time against
// the headers of the PyTorch installation whose libtorch the process loaded, so struct layouts and thread-local state are
// that installation's own):
// - the CUDA caching allocator's statistics, those torch.cuda.memory_stats reports: c10/cuda/CUDACachingAllocator.h's
//   getDeviceStats, index 0 of each per-pool array being the aggregate over the pools (c10's StatType::AGGREGATE);
// - torch.autograd.set_multithreading_enabled for the calling thread (c10/core/AutogradState.h);
// - at::native::resize_bytes_cuda behind a catch: the storage resize ZeRO 3 and activation offload refill freed memory
//   with allocates, and a C++ exception (c10::OutOfMemoryError) must not unwind into the managed caller.
#include <c10/core/AutogradState.h>
#include <c10/core/StorageImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cstdint>
#include <cstring>
#include <exception>

namespace at::native {
// aten/src/ATen/native/cuda/Resize.h (exported by libtorch_cuda; declared here so the shim needs no ATen CUDA headers).
void resize_bytes_cuda(c10::StorageImpl* storage, size_t size_bytes);
}

extern "C" {

// out[0..5]: allocated bytes (current, peak), reserved bytes (current, peak), allocation retries, out-of-memory errors.
// Returns 0, or 1 when the allocator threw (no CUDA context on the device yet, an index out of range).
int harness_allocator_stats(int device, int64_t* out) {
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    out[0] = stats.allocated_bytes[0].current;
    out[1] = stats.allocated_bytes[0].peak;
    out[2] = stats.reserved_bytes[0].current;
    out[3] = stats.reserved_bytes[0].peak;
    out[4] = stats.num_alloc_retries;
    out[5] = stats.num_ooms;
    return 0;
  } catch (...) {
    return 1;
  }
}

// torch.cuda.reset_peak_memory_stats: the peaks restart from the current values.
int harness_allocator_reset_peaks(int device) {
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}

// torch.autograd.set_multithreading_enabled(False) for the calling thread: the autograd engine then runs the CUDA work of
// this thread's backward passes on this thread (torch/csrc/autograd/engine.cpp, Engine::ready_queue), not on the one
// worker thread it keeps per device.
int harness_autograd_multithreading(int enabled) {
  try {
    c10::AutogradState::get_tls_state().set_multithreading_enabled(enabled != 0);
    return 0;
  } catch (...) {
    return 1;
  }
}

// Resizes a CUDA storage to `bytes` (0 frees it). Returns 0, or 1 with the exception's message in `error` (NUL-terminated,
// at most `capacity` bytes).
int harness_resize_storage_cuda(void* storage, uint64_t bytes, char* error, int capacity) {
  try {
    at::native::resize_bytes_cuda(static_cast<c10::StorageImpl*>(storage), static_cast<size_t>(bytes));
    return 0;
  } catch (const std::exception& e) {
    std::strncpy(error, e.what(), capacity - 1);
    error[capacity - 1] = '\0';
    return 1;
  } catch (...) {
    std::strncpy(error, "an unknown C++ exception", capacity - 1);
    error[capacity - 1] = '\0';
    return 1;
  }
}

}

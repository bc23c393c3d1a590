// What the executor needs of libtorch's C++ API that TorchSharp binds not (LibtorchShim.cs compiles it at run time against
// the headers of the PyTorch installation whose libtorch the process loaded, so struct layouts and thread-local state are
// that installation's own):
// - the CUDA caching allocator's statistics, those torch.cuda.memory_stats reports: c10/cuda/CUDACachingAllocator.h's
//   getDeviceStats, index 0 of each per-pool array being the aggregate over the pools (c10's StatType::AGGREGATE);
// - torch.autograd.set_multithreading_enabled for the calling thread (c10/core/AutogradState.h).
#include <c10/core/AutogradState.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cstdint>

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

}

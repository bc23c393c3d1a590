// The CUDA caching allocator's statistics, for the executor (TorchSharp binds none). Compiled at run time against the
// headers of the PyTorch installation whose libtorch the process loaded (CachingAllocatorStats.cs), so the struct layout
// and the allocator are that installation's own. The statistics are those torch.cuda.memory_stats reports:
// c10/cuda/CUDACachingAllocator.h's getDeviceStats, index 0 of each per-pool array being the aggregate over the pools
// (c10's StatType::AGGREGATE).
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

}

// The torch side of kernel_errors.h, for the CUDA bindings of the ops whose kernels record bad data.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "losses/kernel_errors.h"

namespace fastops {

// Raises the current device's pending error as the op that recorded it would (IndexError for a class index,
// RuntimeError for a probability), unless the stream is being captured into a CUDA graph. No CUDA call and no wait
// unless an error is pending. Defined in losses_cuda.cpp.
void raise_recorded_kernel_error(cudaStream_t stream);

// Runs launch(stream, sink) for a kernel that may record bad data: errors recorded earlier are raised first, and this
// launch's own when the GPU has already run it by the time it is enqueued; never a wait for the GPU. With `records`
// false the launch gets a null sink (cross entropy with probability targets has nothing to record). `op` names the
// caller in the error raised when the record could not be allocated.
template <typename Launch>
void run_recording_errors(const char* op, bool records, Launch&& launch) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  raise_recorded_kernel_error(stream);
  KernelErrorSink sink{};
  if (records) {
    sink = kernel_error_sink();
    TORCH_CHECK(sink.record != nullptr, "fastops.", op,
                ": could not allocate the mapped host memory its kernels record bad data in");
  }
  launch(stream, sink);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  raise_recorded_kernel_error(stream);
}

}  // namespace fastops

// Bad data that a loss kernel finds on the GPU (a class index out of range, a probability outside [0, 1]), reported
// without a host sync and without killing the CUDA context. Torch-free: included by the .cu kernels, which record,
// and by the CUDA bindings, which raise.
//
// The mechanism, for every op that uses it (cross entropy, nll_loss, binary_cross_entropy's forward):
//  - The kernel gives every bad element or row a NaN loss (and, where it writes one, a NaN gradient), so a loss that
//    reaches the host is never plausible.
//  - The first bad value a kernel meets is recorded in a KernelErrorRecord: host memory mapped into the device's
//    address space, written by the kernel (a claim on a device counter picks one writer; __threadfence_system before
//    `posted`). One record per device and process.
//  - The host reads the record without a CUDA call or a wait. The binding of every op above checks it before and
//    after its launch and raises the error recorded there (kernel_errors_binding.h): at the next such call that
//    starts after the GPU has run the bad kernel, or at the same call when the GPU is already done with it (e.g.
//    under CUDA_LAUNCH_BLOCKING=1). Each error is raised once; the message names the op that recorded it.
//  - While the stream is being captured into a CUDA graph the record is left pending: nothing may fail the capture
//    for an error from outside it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fastops {

enum class KernelErrorKind : int32_t {
  CrossEntropyTarget = 1,  // cross entropy: class index `value` of row `index` outside [0, classes), not ignore_index
  NllTarget = 2,           // nll_loss: the same, with torch's nll_loss message
  BceInput = 3,            // binary_cross_entropy: input `real` outside [0, 1] (or NaN)
};

// What a kernel records; the fields a kind does not use are 0.
struct KernelError {
  KernelErrorKind kind;
  int64_t index;
  int64_t value;
  int64_t classes;
  int64_t ignore_index;
  double real;
};

struct KernelErrorRecord {
  KernelError error;
  uint32_t posted;    // by the recording kernel: its claim's number (consumed + 1 when it claimed)
  uint32_t consumed;  // by the host: the number of the last error it raised
};

// What a recording kernel is handed: the current device's record and its claim counter (a device global). Both null
// when the record could not be allocated; the bindings refuse to launch then.
struct KernelErrorSink {
  KernelErrorRecord* record;
  unsigned int* claims;
};

// The current device's sink (the record is allocated on first use, mapped pinned host memory, never freed: a kernel
// of any later moment may still write it). Defined in losses_cuda.cu.
KernelErrorSink kernel_error_sink();

// Whether the current device's record holds an error not raised yet (a host memory read: no CUDA call, no sync).
bool kernel_error_pending();

// Takes the current device's pending error, if any: returns false when there is none.
bool take_kernel_error(KernelError& error);

#ifdef __CUDACC__
// Records `error` unless another error is waiting for the host: a kernel that finds bad data records it only when it
// moves the claim count from the host's `consumed` to consumed + 1, so one kernel writes each record and none writes
// while the host has not raised the last.
__device__ inline void record_kernel_error(const KernelErrorSink& sink, const KernelError& error) {
  KernelErrorRecord* record = sink.record;
  const unsigned int consumed = *reinterpret_cast<volatile unsigned int*>(&record->consumed);
  if (atomicCAS(sink.claims, consumed, consumed + 1) != consumed) return;
  record->error = error;
  __threadfence_system();  // the error reaches host memory before `posted` does
  *reinterpret_cast<volatile unsigned int*>(&record->posted) = consumed + 1;
}
#endif

}  // namespace fastops

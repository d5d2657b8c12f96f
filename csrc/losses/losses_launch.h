// Torch-free entry points of the loss CUDA kernels (raw pointers, sizes, the stream). Included by losses_cuda.cu,
// which defines them, and by losses_cuda.cpp, which checks and allocates in torch terms.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "losses/loss_math.h"

namespace fastops {

// A class index out of range, as a cross-entropy kernel records it.
struct TargetError {
  int64_t row;
  int64_t target;
  int64_t classes;
  int64_t ignore_index;
};

// Out-of-range class indices never stall the stream and never pass silently. The kernel gives every such row a NaN
// loss (and, where it writes one, a NaN gradient row), so a loss that reaches the host is never plausible, and the
// first such row a kernel meets is recorded here: in host memory mapped into the device's address space, written by
// the kernel (a claim on a device counter picks one writer; __threadfence_system before `posted`). The host reads it
// without a CUDA call or a wait, and the binding raises it as an IndexError naming the target at the next
// cross-entropy call that starts after the GPU has run the bad one (the same call when the GPU is already done with
// it, e.g. under CUDA_LAUNCH_BLOCKING=1). One record per device and process; each error is raised once.
struct TargetErrorRecord {
  TargetError error;
  uint32_t posted;    // by the recording kernel: its claim's number (consumed + 1 when it claimed)
  uint32_t consumed;  // by the host: the number of the last error it raised
};

// The current device's record (allocated on first use, mapped pinned host memory, never freed), or null when the
// allocation failed.
TargetErrorRecord* target_error_record();

// Whether the current device's record holds an error not raised yet (a host memory read: no CUDA call, no sync).
bool target_error_pending();

// Takes the current device's pending error, if any: returns false when there is none.
bool take_target_error(TargetError& error);

// One cross-entropy call on contiguous [n, c] logits. `target` is int64 [n] class indices or [n, c] probabilities
// of the logits' dtype; `weight` is [c] in the math type (float, double for float64 logits) or null.
// `target_mass` is in the math type; `loss`, `row_weight`, `lse` are float64 (see losses.h).
struct CrossEntropyLaunch {
  DType dtype;
  const void* logits;
  const void* target;
  bool probability_target;
  const void* weight;
  int64_t n, c;
  // The c columns are classes class_start .. class_start + c - 1 of num_classes (cross_entropy_block_grad_; 0 and c
  // otherwise): the one-hot column is target - class_start, the smoothing mass label_smoothing / num_classes.
  int64_t class_start, num_classes;
  int64_t ignore_index;
  double label_smoothing;
  double* loss;
  double* row_weight;
  double* lse;
  void* target_mass;
  // Forward with class indices only (else null): where a row whose class index is out of range is recorded.
  TargetErrorRecord* target_errors;
};

void cross_entropy_forward_cuda(const CrossEntropyLaunch& ce, cudaStream_t stream);

// The forward that also writes the gradient, scaled by u_i = grad_scale[i or 0]: ce.loss[i] = u_i * CE_i and
// grad_logits = u_i * d CE_i / d logits_i (scale_per_row: one float64 per row, else one for all), ce.target_errors as
// in the forward (null for probability targets). grad_logits may be ce.logits (in place). ce's row_weight / lse / target_mass
// are unused.
void cross_entropy_forward_grad_cuda(const CrossEntropyLaunch& ce, const double* grad_scale, bool scale_per_row,
                                     void* grad_logits, cudaStream_t stream);

// x[r, :] *= scale[r or 0] over rows x row_len contiguous elements of `dtype`; rows whose factor is exactly 1 are
// not written.
void scale_rows_cuda(DType dtype, void* x, int64_t rows, int64_t row_len, const double* scale, bool scale_per_row,
                     cudaStream_t stream);

// grad_logits = (target_mass softmax(logits) - q) * grad_rows[:, None], with `lse` and `target_mass` from the
// forward (ce's output pointers are unused); grad_logits may be ce.logits (in place). Rows with an out-of-range
// class (which the forward has already rejected) get NaN gradients.
void cross_entropy_backward_cuda(const CrossEntropyLaunch& ce, const double* grad_rows, const double* lse,
                                 const void* target_mass, void* grad_logits, cudaStream_t stream);

// The elementwise losses over n elements of one dense layout; weight / pos_weight may be null.
struct PointwiseLaunch {
  PointwiseLoss kind;
  DType dtype;
  const void* input;
  const void* target;
  const void* weight;
  const void* pos_weight;
  int64_t n;
  double param;
};

// How many float64 partial sums pointwise_loss_reduce_cuda needs as workspace for n elements.
int64_t pointwise_loss_partials(int64_t n);

// out[i] = loss(i) ('none').
void pointwise_loss_forward_cuda(const PointwiseLaunch& p, void* out, cudaStream_t stream);

// *out (one element of the input's dtype) = sum of the losses, divided by n when mean; deterministic (fixed-order
// two-stage sum, no atomics; common/cuda_elementwise.cuh). `partials` holds pointwise_loss_partials(n) doubles.
void pointwise_loss_reduce_cuda(const PointwiseLaunch& p, bool mean, double* partials, void* out,
                                cudaStream_t stream);

// grad_input[i] = d loss(i) / d input * grad_output[i] (or * grad_output[0] * norm when grad_is_scalar).
void pointwise_loss_backward_cuda(const PointwiseLaunch& p, const void* grad_output, bool grad_is_scalar,
                                  double norm, void* grad_input, cudaStream_t stream);

}  // namespace fastops

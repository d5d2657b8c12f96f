// Torch-free entry points of the loss CUDA kernels (raw pointers, sizes, the stream). Included by losses_cuda.cu,
// which defines them, and by losses_cuda.cpp, which checks and allocates in torch terms.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "losses/kernel_errors.h"
#include "losses/loss_math.h"

namespace fastops {

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
  KernelErrorSink errors;
};

void cross_entropy_forward_cuda(const CrossEntropyLaunch& ce, cudaStream_t stream);

// The forward that also writes the gradient, scaled by u_i = grad_scale[i or 0]: ce.loss[i] = u_i * CE_i and
// grad_logits = u_i * d CE_i / d logits_i (scale_per_row: one float64 per row, else one for all), ce.errors as in
// the forward (null for probability targets). grad_logits may be ce.logits (in place). ce's row_weight / lse / target_mass
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
  // binary_cross_entropy's forward (else null): where an input outside [0, 1] is recorded (its loss is NaN).
  KernelErrorSink errors;
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

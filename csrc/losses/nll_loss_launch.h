// Torch-free entry points of the nll_loss CUDA kernels (nll_loss_math.h for the operands' view). Included by
// nll_loss_cuda.cu, which defines them, and by nll_loss_cuda.cpp, which checks and allocates in torch terms.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "losses/kernel_errors.h"
#include "losses/nll_loss_math.h"

namespace fastops {

// Per row r: loss[r] = -w[t] * input[r, t] and row_weight[r] = w[t] (float64; w = 1 without weights), both 0 where
// t == ignore_index. A row whose class is out of range gets a NaN loss and is recorded in `errors`
// (kernel_errors.h).
void nll_loss_forward_cuda(DType dtype, NllGeometry g, const void* input, const int64_t* target, const double* weight,
                           int64_t ignore_index, double* loss, double* row_weight, KernelErrorSink errors,
                           cudaStream_t stream);

// grad_input (zero-filled by the caller) gets -w[t] * grad_rows[r] at each kept row's target element.
void nll_loss_backward_cuda(DType dtype, NllGeometry g, const double* grad_rows, const int64_t* target,
                            const double* weight, int64_t ignore_index, void* grad_input, cudaStream_t stream);

}  // namespace fastops

// Torch-free entry points of the softmax CUDA kernels (raw pointers, sizes, the stream). Included by
// softmax_cuda.cu, which defines them, and by softmax_cuda.cpp, which checks and allocates in torch terms.
//
// Every tensor is contiguous and seen as [outer, dim, inner] (softmax_math.h). inner == 1 (the last dim, the common
// case) gives one block per row; inner > 1 one thread per (outer, inner) column, so that neighbouring threads read
// neighbouring addresses.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "softmax/softmax_math.h"

namespace fastops {

// y = softmax(x) (log_softmax when `log`) along the middle axis.
void softmax_forward_cuda(bool log, DType dtype, SoftmaxGeometry g, const void* x, void* y, cudaStream_t stream);

// grad_input from grad_output and the forward's output y: y * (g - sum(g * y)) for softmax, g - exp(y) * sum(g) for
// log_softmax.
void softmax_backward_cuda(bool log, DType dtype, SoftmaxGeometry g, const void* grad_output, const void* y,
                           void* grad_input, cudaStream_t stream);

}  // namespace fastops

// Torch-free entry points of the activation CUDA kernels (raw pointers, element counts, the stream). Included by
// activations_cuda.cu, which defines them, and by activations_cuda.cpp, which checks and allocates in torch terms.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "activations/activation_math.h"
#include "common/dtype.h"

namespace fastops {

// `param` carries the activation's scalar argument where it has one (LeakyReLU's negative_slope); unused otherwise.

// y[i] = act(x[i]) for n elements of one layout.
void activation_forward_cuda(Activation act, DType dtype, const void* x, void* y, int64_t n, double param,
                             cudaStream_t stream);

// grad_input[i] = grad_output[i] * act'(saved[i]); `saved` is whatever the activation's backward reads (the output
// for ReLU).
void activation_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* saved,
                              void* grad_input, int64_t n, double param, cudaStream_t stream);

}  // namespace fastops

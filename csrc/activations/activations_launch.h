// Torch-free entry points of the activation CUDA kernels (raw pointers, element counts, the stream). Included by
// activations_cuda.cu, which defines them, and by activations_cuda.cpp, which checks and allocates in torch terms.
// Every pointer may have any alignment: the kernels take 16-byte vector paths only where alignment allows.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "activations/activation_math.h"
#include "common/dtype.h"

namespace fastops {

// `params` are the activation's float parameters (activation_math.h's table; unused by most).

// y[i] = act(x[i]) for n elements of one layout.
void activation_forward_cuda(Activation act, DType dtype, const void* x, void* y, int64_t n,
                             const ActParams& params, cudaStream_t stream);

// grad_input[i] = grad_output[i] * act'(.) from `saved`: the output when backward_reads_output(act), else the input.
void activation_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* saved,
                              void* grad_input, int64_t n, const ActParams& params, cudaStream_t stream);

// y = act(x + bias) for contiguous x, y [rows, cols] and bias [cols]; y = act(x) when bias is null.
void bias_act_forward_cuda(Activation act, DType dtype, const void* x, const void* bias, void* y, int64_t rows,
                           int64_t cols, cudaStream_t stream);

// grad_x = grad * act'(x + bias) and grad_bias = column sums of grad_x, from one read of grad and x; grad_bias is
// the deterministic column sum of common/column_sum.h, whose workspace holds column_sum_workspace_bytes(dtype, rows,
// cols) bytes. With a null bias: grad_x = grad * act'(x), and grad_bias and workspace are unused.
void bias_act_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* x, const void* bias,
                            void* grad_x, void* grad_bias, void* workspace, int64_t rows, int64_t cols,
                            cudaStream_t stream);

// out[r, c] = act(gate[r * in_stride + c]) * up[r * in_stride + c]; out is contiguous [rows, cols].
void glu_forward_cuda(Activation act, DType dtype, GluRows g, const void* gate, const void* up, void* out,
                      cudaStream_t stream);

// grad_gate = grad * up * act'(gate), grad_up = grad * act(gate), written with gate/up's row stride; grad_output is
// contiguous [rows, cols].
void glu_backward_cuda(Activation act, DType dtype, GluRows g, const void* grad_output, const void* gate,
                       const void* up, void* grad_gate, void* grad_up, cudaStream_t stream);

}  // namespace fastops

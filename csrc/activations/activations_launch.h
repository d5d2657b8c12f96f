// Torch-free entry points of the activation CUDA kernels (raw pointers, element counts, the stream). Included by
// activations_cuda.cu, which defines them, and by activations_cuda.cpp, which checks and allocates in torch terms.
// Every pointer may have any alignment: the kernels take 16-byte vector paths only where alignment allows.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "activations/activation_math.h"
#include "common/dtype.h"

namespace fastops {

// `param` carries the activation's scalar argument where it has one (LeakyReLU's negative_slope); unused otherwise.

// y[i] = act(x[i]) for n elements of one layout.
void activation_forward_cuda(Activation act, DType dtype, const void* x, void* y, int64_t n, double param,
                             cudaStream_t stream);

// grad_input[i] = grad_output[i] * act'(.) from `saved`: the output when backward_reads_output(act), else the input.
void activation_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* saved,
                              void* grad_input, int64_t n, double param, cudaStream_t stream);

// y = act(x + bias) for contiguous x, y [rows, cols] and bias [cols].
void bias_act_forward_cuda(Activation act, DType dtype, const void* x, const void* bias, void* y, int64_t rows,
                           int64_t cols, cudaStream_t stream);

// Row groups of bias_act's backward: each group of rows leaves one partial grad_bias row in the workspace, and the
// groups are summed in order afterwards (deterministic, no atomics). The caller allocates a workspace of
// bias_act_backward_groups(rows) x cols accumulators: float for 16-bit types, double for float32 and float64. 64+ rows per group keeps the workspace traffic a few percent of grad + x.
inline int64_t bias_act_backward_groups(int64_t rows) { return std::clamp<int64_t>((rows + 63) / 64, 1, 256); }

// grad_x = grad * act'(x + bias) and grad_bias = column sums of grad_x, from one read of grad and x.
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

// Torch-free description of one (batched) GEMM, shared by the CPU kernel, the CUDA launchers and the torch-side
// driver (matmul.h):  C[b] = op(A[b]) . op(B[b]) (+ bias) (+ C[b] when accumulating), with op(A) of shape m x k and
// op(B) of shape k x n.
//
// Transposed operands are read through a layout flag instead of being copied, so the backward passes
// (dX = dY.W, dW = dY^T.X) run on the same kernels as the forward:
//   trans == false: X(r, c) = data[r * ld + c]   (row-major, rows ld elements apart)
//   trans == true:  X(r, c) = data[c * ld + r]   (column-major, i.e. a transposed row-major matrix)
// Batches are `batch_stride` elements apart; a stride of 0 broadcasts one matrix over the batch (torch.matmul's
// broadcasting of batch dims without materialising copies).
#pragma once

#include <cstdint>

#include "activations/activation_math.h"
#include "common/dtype.h"

namespace fastops {

struct MatrixRef {
  const void* data = nullptr;
  int64_t ld = 0;
  bool trans = false;
  int64_t batch_stride = 0;
};

struct GemmArgs {
  DType dtype = DType::Float32;  // of A, B, C and bias; accumulation is float32 (float64 for float64)
  int64_t batch = 1, m = 0, n = 0, k = 0;
  MatrixRef a, b;
  void* c = nullptr;             // row-major, ldc elements between rows, batch_stride_c between batches
  int64_t ldc = 0;
  int64_t batch_stride_c = 0;
  const void* bias = nullptr;    // n values added to every row, or nullptr
  // C = op(A).op(B) (+ bias) + C when set: each output element reads its old C value in the epilogue, adds it in
  // fp32 (the accumulator type; float64 for float64) and rounds once to C's dtype. This lets a caller sum products
  // into one buffer (a weight gradient accumulated chunk by chunk) without a second buffer of C's size.
  bool accumulate = false;
  bool allow_tf32 = false;       // float32 only: tensor cores may round the inputs to TF32 (CUDA)
  // Fused activation epilogue, for kernels that take it (GemmPlan::fuses_activation): C = act(op(A).op(B) + bias),
  // and `pre` (when non-null; ldc and batch_stride_c as C) receives op(A).op(B) before the bias, rounded to C's
  // dtype: what bias_act_backward reads, so Linear + activation needs no second pass over its output.
  bool fuse_act = false;
  Activation act = Activation::ReLU;
  void* pre = nullptr;
};

}  // namespace fastops

// Torch-free entry point of the Hopper (sm_90a) GEMM: TMA loads into a shared-memory ring on mbarriers, a producer
// warpgroup and two consumer warpgroups issuing wgmma, setmaxnreg rebalancing, a persistent grid walking a swizzled
// tile order, 2-CTA clusters sharing B by TMA multicast for large problems, split-K for small outputs, and an
// epilogue (bias, activation) that stores through shared memory with TMA stores. Computes, for 16-bit A and B (or
// float32 read as TF32, whose low 13 mantissa bits wgmma ignores) with fp32 accumulation,
//     C[m, n] = act( sum_k A[m, k] * B[n, k]  (+ bias[n]) )  (+ C[m, n] when accumulating; act optional)
// where each operand is stored either "K-major" (the K index contiguous: A as [M, K], B as [N, K] row-major) or
// "MN-major" (A as [K, M], B as [K, N] row-major). Every transpose of a Linear's forward and backward is one of
// these four, so no operand is ever copied: forward y = x W^T is A K-major, B K-major; dX = dY W has B MN-major;
// dW = dY^T X has both MN-major. torch.matmul(a, b) with row-major b is A K-major, B MN-major.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "activations/activation_math.h"
#include "common/dtype.h"

namespace fastops {

struct GemmSm90Problem {
  DType in_dtype;   // of A and B: Float16, BFloat16, or Float32 (TF32 math; both operands K-major, C float32)
  DType out_dtype;  // of C and bias: Float16, BFloat16 or Float32
  int64_t m, n, k;
  const void* a;
  int64_t lda;  // elements between consecutive rows of A as stored
  bool a_k_major;
  const void* b;
  int64_t ldb;
  bool b_k_major;
  void* c;  // [m, n], row stride ldc
  int64_t ldc;
  const void* bias;  // [n] in out_dtype, or nullptr
  bool accumulate = false;  // C += the product: the epilogue adds the old C in fp32 before its one rounding
  // C = act(product + bias), and `pre` (if non-null, row stride ldc) = the product before the bias.
  bool fuse_act = false;
  Activation act = Activation::ReLU;
  void* pre = nullptr;
  // fp32 scratch of gemm_sm90_workspace_elems() elements when that is non-zero (split-K partial sums), else unused.
  void* workspace = nullptr;
};

// nullptr when gemm_sm90 can run the problem; otherwise why not (the caller then takes the portable path).
// Requirements come from TMA (16-byte aligned bases and row strides) and wgmma (16-bit inputs, or K-major TF32).
const char* gemm_sm90_unsupported_reason(const GemmSm90Problem& p);

// Scratch the problem needs: non-zero when the output has too few tiles to fill `num_sms` SMs and K is long enough
// to split (decode-like M <= 128 shapes), in which case K slices run in parallel and a second kernel adds them.
int64_t gemm_sm90_workspace_elems(const GemmSm90Problem& p, int num_sms);

// Enqueues the GEMM on `stream`; `num_sms` sizes the persistent grid. Returns the first CUDA error met.
cudaError_t gemm_sm90(const GemmSm90Problem& p, int num_sms, cudaStream_t stream);

}  // namespace fastops

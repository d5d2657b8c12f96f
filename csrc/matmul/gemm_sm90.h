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
// The kernel's pieces are listed in gemm_sm90_config.cuh.
#pragma once

#include <cuda_runtime_api.h>

#include "matmul/gemm.h"
#include "matmul/gemm_plan.h"

namespace fastops {

// Whether the driver provides cuTensorMapEncodeTiled (GemmDevice::tma_encoder).
bool gemm_sm90_tma_encoder_available();

// Enqueues the single GEMM `args` (batch 1) on `stream` as `plan` (a GemmKernel::Wgmma plan from plan_gemm) says;
// `workspace` holds plan.workspace_elems floats. Returns the first CUDA error met.
cudaError_t gemm_sm90(const GemmArgs& args, const GemmPlan& plan, float* workspace, cudaStream_t stream);

}  // namespace fastops

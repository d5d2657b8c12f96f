// Torch-free entry points of the matmul CUDA kernels. Defined by gemm_cuda.cu and column_sum.cu; called by
// matmul_cuda.cpp, which checks, allocates and picks the stream in torch terms.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "matmul/gemm.h"
#include "matmul/gemm_plan.h"

namespace fastops {

// The current device as plan_gemm sees it (queried once per device and process).
GemmDevice current_gemm_device();

// C = op(A) . op(B) (+ bias) for every batch (all sizes > 0) on the kernel `plan` names (plan_gemm(args, ...);
// args may differ from the planned ones only in the epilogue when the plan does not fuse the activation).
// `workspace` holds plan.workspace_elems floats. Returns a CUDA error the launch itself did not raise (e.g. a TMA
// descriptor the driver refused, or an activation requested from a kernel without that epilogue); launch errors are
// left for the caller's launch check.
cudaError_t run_gemm(const GemmPlan& plan, const GemmArgs& args, float* workspace, cudaStream_t stream);

// out[j] = sum_i g[i, j] for a row-major rows x cols g (rows, cols > 0): the deterministic column sum of
// common/column_sum.h, whose workspace holds column_sum_workspace_bytes(dtype, rows, cols) bytes.
void column_sum_cuda(DType dtype, const void* g, int64_t rows, int64_t cols, void* out, void* workspace,
                     cudaStream_t stream);

}  // namespace fastops

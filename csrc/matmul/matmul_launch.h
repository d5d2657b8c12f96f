// Torch-free entry points of the matmul CUDA kernels. Included by matmul_cuda.cu, which defines them, and by
// matmul_cuda.cpp, which checks, allocates and picks the stream in torch terms.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "matmul/gemm.h"

namespace fastops {

// fp32 elements of scratch that gemm_cuda needs for `args` on the current device: the Hopper kernel's split-K
// partial sums for outputs too small to fill the GPU (decode-like M <= 128); 0 for every other problem.
int64_t gemm_cuda_workspace_elems(const GemmArgs& args);

// C = op(A) . op(B) (+ bias) for every batch (all sizes > 0). The kernel is chosen from the dtype, args.allow_tf32
// and the current device's compute capability (see select_gemm_kernel in matmul_cuda.cu). `workspace` holds
// gemm_cuda_workspace_elems(args) floats. Returns a CUDA error the launch itself did not raise (e.g. a TMA
// descriptor the driver refused); launch errors are left for the caller's launch check.
cudaError_t gemm_cuda(const GemmArgs& args, float* workspace, cudaStream_t stream);

// Whether gemm_cuda runs `args` on a kernel with the fused activation epilogue (GemmArgs::fuse_act): the Hopper
// kernel. The others refuse fuse_act (gemm_cuda returns cudaErrorInvalidValue); the caller composes instead.
bool gemm_cuda_fuses_activation(const GemmArgs& args);

// How many row bands column_sum_cuda splits `rows` into; its workspace holds that many rows of `cols` doubles.
int64_t column_sum_bands(int64_t rows);

// out[j] = sum_i g[i, j] for a row-major rows x cols g (rows, cols > 0), accumulated in double: each band of
// rows is summed into workspace[band, :], then the bands are added, so the result is deterministic (no atomics).
void column_sum_cuda(DType dtype, const void* g, int64_t rows, int64_t cols, void* out, double* workspace,
                     cudaStream_t stream);

}  // namespace fastops

// Torch-free entry points of the matmul CUDA kernels. Included by matmul_cuda.cu, which defines them, and by
// matmul_cuda.cpp, which checks, allocates and picks the stream in torch terms.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "matmul/gemm.h"

namespace fastops {

// C = op(A) . op(B) (+ bias) for every batch (all sizes > 0). The kernel is chosen from the dtype, args.allow_tf32
// and the current device's compute capability (see select_gemm_kernel in matmul_cuda.cu).
void gemm_cuda(const GemmArgs& args, cudaStream_t stream);

// How many row bands column_sum_cuda splits `rows` into; its workspace holds that many rows of `cols` doubles.
int64_t column_sum_bands(int64_t rows);

// out[j] = sum_i g[i, j] for a row-major rows x cols g (rows, cols > 0), accumulated in double: each band of
// rows is summed into workspace[band, :], then the bands are added, so the result is deterministic (no atomics).
void column_sum_cuda(DType dtype, const void* g, int64_t rows, int64_t cols, void* out, double* workspace,
                     cudaStream_t stream);

}  // namespace fastops

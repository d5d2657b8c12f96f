// The Hopper GEMM for float16 inputs and output, 128-wide tiles (see gemm_sm90_kernel.cuh).
#include "matmul/gemm_sm90_kernel.cuh"

namespace fastops::sm90 {
FASTOPS_SM90_LAUNCH(, __half, __half, 128)
}  // namespace fastops::sm90

// The Hopper GEMM for float16 inputs, split-K partial sums (fp32, 128-wide tiles) (see gemm_sm90_kernel.cuh).
#include "matmul/gemm_sm90_kernel.cuh"

namespace fastops::sm90 {
FASTOPS_SM90_LAUNCH(, __half, float, 128)
}  // namespace fastops::sm90

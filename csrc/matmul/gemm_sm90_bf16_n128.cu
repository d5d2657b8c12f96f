// The Hopper GEMM for bfloat16 inputs and output, 128-wide tiles (see gemm_sm90_kernel.cuh).
#include "matmul/gemm_sm90_kernel.cuh"

namespace fastops::sm90 {
FASTOPS_SM90_LAUNCH(, __nv_bfloat16, __nv_bfloat16, 128)
}  // namespace fastops::sm90

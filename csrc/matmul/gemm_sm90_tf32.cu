// The Hopper GEMM for float32 read as TF32, both tile widths; its 128-wide kernel also writes split-K partial sums
// (see gemm_sm90_kernel.cuh).
#include "matmul/gemm_sm90_kernel.cuh"

namespace fastops::sm90 {
FASTOPS_SM90_LAUNCH(, float, float, 128)
FASTOPS_SM90_LAUNCH(, float, float, 256)
}  // namespace fastops::sm90

// The GEMM entry points of matmul_launch.h: the device a plan is made for, and run_gemm, which launches the kernel
// family the plan names. Torch-free (see shared/DESIGN.md, rule 4).
#include <vector>

#include "matmul/gemm_cuda.cuh"
#include "matmul/gemm_sm90.h"
#include "matmul/matmul_launch.h"

namespace fastops {

// Read once per process for every device: the attributes never change.
GemmDevice current_gemm_device() {
  static const std::vector<GemmDevice> devices = [] {
    int count = 0;
    cudaGetDeviceCount(&count);
    std::vector<GemmDevice> infos(count);
    const bool tma_encoder = gemm_sm90_tma_encoder_available();
    for (int d = 0; d < count; ++d) {
      cudaDeviceGetAttribute(&infos[d].cc_major, cudaDevAttrComputeCapabilityMajor, d);
      cudaDeviceGetAttribute(&infos[d].cc_minor, cudaDevAttrComputeCapabilityMinor, d);
      cudaDeviceGetAttribute(&infos[d].num_sms, cudaDevAttrMultiProcessorCount, d);
      infos[d].tma_encoder = tma_encoder;
    }
    return infos;
  }();
  int device = 0;
  cudaGetDevice(&device);
  return devices.at(device);
}

cudaError_t run_gemm(const GemmPlan& plan, const GemmArgs& args, float* workspace, cudaStream_t stream) {
  if (args.fuse_act && !plan.fuses_activation) return cudaErrorInvalidValue;  // the caller composes instead
  switch (plan.kernel) {
    case GemmKernel::Simt: launch_simt_gemm(args, stream); return cudaSuccess;
    case GemmKernel::Float64: launch_float64_gemm(args, stream); return cudaSuccess;
    case GemmKernel::MmaSync: launch_mma_gemm(args, stream); return cudaSuccess;
    case GemmKernel::Wgmma: return gemm_sm90(args, plan, workspace, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastops

// Hopper GEMM entry point (gemm_sm90.h): turns a GemmArgs and its plan into the kernel's operands and target, and
// calls the launch_layout instantiation for the input type and tile width (compiled in gemm_sm90_<type>_*.cu, in
// parallel), then the split-K reduction when the plan splits K.
#include <algorithm>

#include "matmul/gemm_sm90.h"
#include "matmul/gemm_sm90_kernel.cuh"

namespace fastops {
namespace sm90 {

FASTOPS_SM90_INSTANTIATIONS(extern)

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult status;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

namespace {

template <typename OutT>
Epilogue<OutT> epilogue_of(const GemmArgs& args) {
  return {static_cast<const OutT*>(args.bias), args.accumulate, args.fuse_act, args.act, static_cast<OutT*>(args.pre)};
}

// C (of the input type T: 16-bit, or float32 for TF32) as the plan says: one kernel writing C through the epilogue,
// or with split-K the slices' raw fp32 sums into the workspace and reduce_splits_kernel running the epilogue once.
template <typename T>
cudaError_t run(const GemmArgs& args, const GemmPlan& plan, float* workspace, cudaStream_t stream) {
  // op(A) not transposed is A stored [m, k] (K-major); op(B) transposed is B stored [n, k] (K-major).
  const Operands p{args.m, args.n, args.k, args.a.data, args.a.ld, !args.a.trans, args.b.data, args.b.ld, args.b.trans};
  if (plan.splits == 1) {
    const Target<T> target{static_cast<T*>(args.c), args.ldc, epilogue_of<T>(args), plan.tma_store, plan.cluster_m,
                           1, plan.k_tiles_per_split, 0};
    if (plan.tile_n == kWideBN) return launch_layout<T, T, kWideBN>(p, target, plan.num_sms, stream);
    return launch_layout<T, T, kNarrowBN>(p, target, plan.num_sms, stream);
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  const Target<float> target{workspace, args.n, Epilogue<float>{}, false, 1, plan.splits, plan.k_tiles_per_split,
                             args.m * args.n};
  cudaError_t err = launch_layout<T, float, kNarrowBN>(p, target, plan.num_sms, stream);
  if (err != cudaSuccess) return err;
  const int64_t blocks = std::min<int64_t>(cuda::ceil_div(args.m * args.n, 256), 4 * plan.num_sms);
  reduce_splits_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      workspace, plan.splits, args.m, args.n, static_cast<T*>(args.c), args.ldc, epilogue_of<T>(args));
  return cudaGetLastError();
}

}  // namespace
}  // namespace sm90

bool gemm_sm90_tma_encoder_available() { return sm90::tensor_map_encoder() != nullptr; }

cudaError_t gemm_sm90(const GemmArgs& args, const GemmPlan& plan, float* workspace, cudaStream_t stream) {
  if (plan.kernel != GemmKernel::Wgmma || args.batch != 1) return cudaErrorInvalidValue;
  switch (args.dtype) {
    case DType::BFloat16: return sm90::run<__nv_bfloat16>(args, plan, workspace, stream);
    case DType::Float16: return sm90::run<__half>(args, plan, workspace, stream);
    case DType::Float32: return sm90::run<float>(args, plan, workspace, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fastops

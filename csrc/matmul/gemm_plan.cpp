// plan_gemm: the kernel selection and the Hopper kernel's tile / cluster / split-K / epilogue choices, made once per
// GEMM (see gemm_plan.h). Host code only, torch-free and CUDA-free: compiled into the operator library on every
// build, so that the CPU tests check the decisions for any device.
#include "matmul/gemm_plan.h"

#include <algorithm>
#include <atomic>

#include "common/env.h"

namespace fastops {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

int dtype_bytes(DType d) {
  switch (d) {
    case DType::Float16:
    case DType::BFloat16: return 2;
    case DType::Float32: return 4;
    case DType::Float64: return 8;
  }
  return 0;
}

// The switches as bits of one atomic word, so that a refresh on one thread and GEMMs on others never race.
constexpr uint32_t kNoSm90 = 1, kNoCluster = 2, kDirectStore = 4;

uint32_t read_switches() {
  return (env_flag("FASTOPS_NO_SM90") ? kNoSm90 : 0) | (env_flag("FASTOPS_SM90_NO_CLUSTER") ? kNoCluster : 0) |
         (env_flag("FASTOPS_SM90_DIRECT_STORE") ? kDirectStore : 0);
}

std::atomic<uint32_t>& switch_bits() {
  static std::atomic<uint32_t> bits{read_switches()};
  return bits;
}

// Why the Hopper kernel cannot run `args` (nullptr when it can). Its operands come from TMA (16-byte aligned bases
// and row strides, 32-bit coordinates) and wgmma (16-bit inputs in either layout, or float32 as TF32 K-major only).
// op(A) not transposed is A stored [m, k] (K-major); op(B) transposed is B stored [n, k] (K-major).
const char* sm90_unsupported_reason(const GemmArgs& args, const GemmDevice& device) {
  const bool a_k_major = !args.a.trans, b_k_major = args.b.trans;
  if (args.dtype == DType::Float32) {
    if (!a_k_major || !b_k_major) return "TF32 operands are not both K-major (wgmma reads TF32 K-major only)";
  } else if (args.dtype != DType::BFloat16 && args.dtype != DType::Float16) {
    return "inputs are neither 16-bit floats nor float32 (TF32)";
  }
  if (args.m >= (int64_t(1) << 31) || args.n >= (int64_t(1) << 31) || args.k >= (int64_t(1) << 31))
    return "a dimension reaches 2^31 (TMA coordinates are 32-bit)";
  if (!aligned16(args.a.data) || !aligned16(args.b.data)) return "A or B is not 16-byte aligned";
  const int bytes = dtype_bytes(args.dtype);
  if ((args.a.ld * bytes) % 16 != 0 || (args.b.ld * bytes) % 16 != 0)
    return "a row stride of A or B is not a multiple of 16 bytes";
  if (!device.tma_encoder) return "the driver does not provide cuTensorMapEncodeTiled";
  return nullptr;
}

// Why the problem does not take the Hopper kernel, checked in the order of cost (nullptr: it does).
const char* why_not_sm90(const GemmArgs& args, bool tensor_cores, const GemmDevice& device,
                         const GemmSwitches& switches) {
  if (!tensor_cores) return "not a tensor-core problem (float64, or float32 without TF32)";
  if (device.cc_major != 9 || device.cc_minor != 0) return "not an sm_90 device";
  if (args.batch != 1) return "batched (runs on the mma.sync kernel)";
  if (switches.no_sm90) return "FASTOPS_NO_SM90=1";
  return sm90_unsupported_reason(args, device);
}

// The Hopper kernel's split-K: with fewer than half as many 128 x 128 tiles as SMs (decode-like M <= 128 shapes), K
// is cut into slices of at least 4 stages so that every SM streams its share of the weights.
void plan_splits(const GemmArgs& args, int num_sms, GemmPlan& plan) {
  const int64_t tiles = ceil_div(args.m, sm90::kBM) * ceil_div(args.n, sm90::kNarrowBN);
  const int64_t stages = ceil_div(args.k, sm90::kAtomRowBytes / dtype_bytes(args.dtype));
  plan.splits = 1;
  plan.k_tiles_per_split = static_cast<int>(stages);
  if (2 * tiles > num_sms) return;
  const int64_t wanted = std::min<int64_t>({num_sms / tiles, stages / 4, 16});
  if (wanted < 2) return;
  plan.k_tiles_per_split = static_cast<int>(ceil_div(stages, wanted));
  plan.splits = static_cast<int>(ceil_div(stages, plan.k_tiles_per_split));  // every slice non-empty
}

void plan_sm90(const GemmArgs& args, const GemmDevice& device, const GemmSwitches& switches, GemmPlan& plan) {
  plan.num_sms = device.num_sms;
  plan_splits(args, device.num_sms, plan);
  if (plan.splits > 1) {
    // Partial sums go to an fp32 workspace in 128 x 128 tiles; the reduce kernel runs the epilogue once.
    plan.tile_n = sm90::kNarrowBN;
    plan.workspace_elems = plan.splits * args.m * args.n;
    return;
  }
  const bool wide_fills = ceil_div(args.m, sm90::kBM) * ceil_div(args.n, sm90::kWideBN) >= device.num_sms;
  plan.tile_n = wide_fills ? sm90::kWideBN : sm90::kNarrowBN;
  // Clusters of 2 (B multicast) for the wide tiles of large problems, which have at least two M-blocks.
  plan.cluster_m = !switches.sm90_no_cluster && plan.tile_n == sm90::kWideBN && args.m > sm90::kBM ? 2 : 1;
  // The TMA-store epilogue: for problems that do not read the old C (accumulate), whose C and pre-activation copy
  // TMA can address (16-byte aligned bases and row stride).
  plan.tma_store = !switches.sm90_direct_store && !args.accumulate && aligned16(args.c) &&
                   (args.pre == nullptr || aligned16(args.pre)) && (args.ldc * dtype_bytes(args.dtype)) % 16 == 0;
}

}  // namespace

const char* gemm_kernel_name(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::Simt: return "simt";
    case GemmKernel::Float64: return "float64";
    case GemmKernel::MmaSync: return "mma_sync";
    case GemmKernel::Wgmma: return "wgmma";
  }
  return "unknown";
}

GemmSwitches gemm_switches() {
  const uint32_t bits = switch_bits().load(std::memory_order_relaxed);
  return {(bits & kNoSm90) != 0, (bits & kNoCluster) != 0, (bits & kDirectStore) != 0};
}

void refresh_gemm_switches() { switch_bits().store(read_switches(), std::memory_order_relaxed); }

// On sm_90 (H100/H200), single GEMMs whose operands TMA can read take the wgmma kernel: 16-bit in every layout,
// float32 under TF32 when both operands are K-major (Linear's forward). Other 16-bit and TF32 GEMMs take the
// mma.sync kernel on sm_80+; float32 without TF32 and pre-Ampere GPUs take the CUDA cores, float64 its own kernel.
GemmPlan plan_gemm(const GemmArgs& args, const GemmDevice& device, const GemmSwitches& switches) {
  GemmPlan plan;
  const bool half_type = args.dtype == DType::BFloat16 || args.dtype == DType::Float16;
  const bool tensor_cores = half_type || (args.dtype == DType::Float32 && args.allow_tf32);
  plan.not_sm90 = why_not_sm90(args, tensor_cores, device, switches);
  if (plan.not_sm90 == nullptr) {
    plan.kernel = GemmKernel::Wgmma;
    plan_sm90(args, device, switches, plan);
    plan.fuses_activation = args.fuse_act;
  } else if (tensor_cores && device.cc_major >= 8) {
    plan.kernel = GemmKernel::MmaSync;
  } else {
    plan.kernel = args.dtype == DType::Float64 ? GemmKernel::Float64 : GemmKernel::Simt;
  }
  return plan;
}

std::string describe(const GemmPlan& plan) {
  return std::string("kernel=") + gemm_kernel_name(plan.kernel) + ";tile_n=" + std::to_string(plan.tile_n) +
         ";cluster=" + std::to_string(plan.cluster_m) + ";splits=" + std::to_string(plan.splits) +
         ";k_tiles_per_split=" + std::to_string(plan.k_tiles_per_split) +
         ";workspace=" + std::to_string(plan.workspace_elems) + ";tma_store=" + std::to_string(plan.tma_store) +
         ";fused=" + std::to_string(plan.fuses_activation) + ";not_sm90=" + (plan.not_sm90 ? plan.not_sm90 : "");
}

}  // namespace fastops

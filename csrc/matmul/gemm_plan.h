// One decision per GEMM, torch-free and CUDA-free: plan_gemm(args, device, switches) picks the kernel and, for the
// Hopper kernel, its tile width, cluster, split-K and epilogue; run_gemm (matmul_launch.h) only executes the plan.
// Before, the CUDA binding asked three functions (workspace size, fused epilogue, launch), each of which re-ran the
// kernel selection, rebuilt the Hopper problem and read the environment; now the plan is made once per GEMM and the
// CPU tests check its decisions for any device (fastops::_gemm_plan, gemm_plan_ops.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "matmul/gemm.h"

namespace fastops {

// Tile geometry the Hopper kernel (gemm_sm90_*.cuh) and the planner share.
namespace sm90 {
constexpr int kBM = 128;              // rows of a CTA tile: two consumer warpgroups of 64
constexpr int kAtomRowBytes = 128;    // one row of the 128-byte swizzle atom: a stage's K depth per operand row
constexpr int kNarrowBN = 128;        // tile widths: 128 x 256 reuses each loaded byte most,
constexpr int kWideBN = 256;          // 128 x 128 when the wide tiles cannot fill the SMs
}  // namespace sm90

// The kernel families (one .cu each): the CUDA-core float32 GEMM (also the pre-Ampere fallback for 16-bit and TF32),
// the float64 tiled GEMM, the mma.sync tensor-core GEMM (sm_80+) and the Hopper wgmma GEMM (sm_90a).
enum class GemmKernel : int32_t { Simt, Float64, MmaSync, Wgmma };

const char* gemm_kernel_name(GemmKernel kernel);

// What the plan needs to know about the device: compute capability, SM count (the persistent grid, split-K), and
// whether the driver provides cuTensorMapEncodeTiled (TMA descriptors).
struct GemmDevice {
  int cc_major = 0;
  int cc_minor = 0;
  int num_sms = 0;
  bool tma_encoder = false;
};

// Kernel-variant switches (FASTOPS_NO_SM90, FASTOPS_SM90_NO_CLUSTER, FASTOPS_SM90_DIRECT_STORE, each "1" to turn
// the step off). Read from the environment once per process, on the first GEMM; refresh_gemm_switches() re-reads
// them, which the benchmark does each time it sets them for a provider (fastops.bench.core._environment, through
// torch.ops.fastops._refresh_kernel_switches), so that one process still times the variants side by side.
struct GemmSwitches {
  bool no_sm90 = false;            // keep Hopper on the mma.sync kernel
  bool sm90_no_cluster = false;    // no 2-CTA clusters (B multicast)
  bool sm90_direct_store = false;  // the epilogue stores from registers instead of through shared memory + TMA
};

GemmSwitches gemm_switches();
void refresh_gemm_switches();

struct GemmPlan {
  GemmKernel kernel = GemmKernel::Simt;
  // Why the Hopper kernel does not take this problem (nullptr when it does, or when the device is not sm_90).
  const char* not_sm90 = nullptr;
  // Hopper kernel only (their defaults otherwise):
  int tile_n = 0;                 // sm90::kNarrowBN or sm90::kWideBN
  int cluster_m = 1;              // CTAs per cluster sharing B (1 or 2)
  int splits = 1;                 // K slices computed in parallel (split-K), summed by a second kernel
  int k_tiles_per_split = 0;      // K stages per slice
  int64_t workspace_elems = 0;    // fp32 scratch run_gemm needs (split-K partial sums)
  bool tma_store = false;         // the epilogue stores through shared memory with TMA stores
  int num_sms = 0;                // sizes the persistent grid
  // Whether the kernel applies args.act in its epilogue (args.fuse_act requested and the kernel has the epilogue).
  // When not, the caller composes the GEMM (into `pre`, no bias) with a bias + activation pass, and may run this
  // same plan on those args: a non-fusing kernel's plan does not depend on the epilogue.
  bool fuses_activation = false;
};

// The decision for `args` (all sizes > 0) on `device`.
GemmPlan plan_gemm(const GemmArgs& args, const GemmDevice& device, const GemmSwitches& switches);

// "kernel=wgmma;tile_n=256;cluster=2;..." : every field, for tests and error messages.
std::string describe(const GemmPlan& plan);

}  // namespace fastops

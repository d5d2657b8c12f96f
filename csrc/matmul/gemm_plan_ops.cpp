// Operators over the GEMM plan (schemas in csrc/fastops.cpp), on every build: _gemm_plan describes the plan of a
// problem on any device, so that CPU tests check the CUDA kernel selection; _refresh_kernel_switches re-reads the
// environment switches (the benchmark's ladder).
#include <torch/library.h>

#include <string>

#include "common/checks.h"
#include "matmul/gemm_plan.h"

namespace fastops {
namespace {

std::string gemm_plan_op(at::ScalarType dtype, int64_t m, int64_t n, int64_t k, int64_t batch, bool a_trans,
                         bool b_trans, at::IntArrayRef ld, at::IntArrayRef offset, bool accumulate, bool bias,
                         bool fuse_act, bool pre, bool allow_tf32, int64_t cc, int64_t num_sms, bool tma) {
  TORCH_CHECK(ld.empty() || ld.size() == 3, "fastops._gemm_plan: ld must be [lda, ldb, ldc] or empty");
  TORCH_CHECK(offset.empty() || offset.size() == 4, "fastops._gemm_plan: offset must be [a, b, c, pre] or empty");
  GemmArgs args;
  args.dtype = to_dtype(dtype);
  args.batch = batch;
  args.m = m;
  args.n = n;
  args.k = k;
  // Addresses only: the plan reads their alignment, never the memory.
  const int64_t elem = c10::elementSize(dtype);
  auto address = [&](int which) {
    const int64_t off = offset.empty() ? 0 : offset[which];
    return reinterpret_cast<void*>(static_cast<uintptr_t>((which + 1) << 20) + off * elem);
  };
  args.a = {address(0), ld.empty() ? (a_trans ? m : k) : ld[0], a_trans, 0};
  args.b = {address(1), ld.empty() ? (b_trans ? k : n) : ld[1], b_trans, 0};
  args.c = address(2);
  args.ldc = ld.empty() ? n : ld[2];
  args.bias = bias ? address(3) : nullptr;
  args.accumulate = accumulate;
  args.allow_tf32 = allow_tf32;
  args.fuse_act = fuse_act;
  args.pre = pre ? address(3) : nullptr;
  const GemmDevice device{static_cast<int>(cc / 10), static_cast<int>(cc % 10), static_cast<int>(num_sms), tma};
  return describe(plan_gemm(args, device, gemm_switches()));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CompositeImplicitAutograd, m) {
  m.impl("_gemm_plan", &gemm_plan_op);
  m.impl("_refresh_kernel_switches", &refresh_gemm_switches);
}

}  // namespace fastops

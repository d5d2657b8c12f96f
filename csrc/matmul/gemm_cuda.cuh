// What the portable GEMM kernel families share (gemm_simt.cu, gemm_float64.cu, gemm_mma.cu), and their launchers,
// which run_gemm (gemm_cuda.cu) calls as the plan says. Torch-free; included by .cu files only.
//
// All offsets are int64; edge tiles load zeros (predicated) and store under a bounds check. Every epilogue adds, in
// the accumulator type, the old C (GemmArgs::accumulate) and the bias before its one rounding to C's dtype.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "matmul/gemm.h"

namespace fastops {

// SIMT float32 GEMM (also the pre-Ampere path for 16-bit and TF32 problems): float32, float16, bfloat16.
void launch_simt_gemm(const GemmArgs& args, cudaStream_t stream);
// float64 tiled GEMM.
void launch_float64_gemm(const GemmArgs& args, cudaStream_t stream);
// mma.sync tensor-core GEMM (sm_80+): bfloat16, float16, float32 as TF32.
void launch_mma_gemm(const GemmArgs& args, cudaStream_t stream);

namespace gemm {

// Calls fn(a_k_contiguous, b_k_contiguous) as std::bool_constants, so kernels specialise their loaders per layout.
// A (m x k) is k-contiguous unless transposed; B (k x n) is k-contiguous only when transposed.
template <typename Fn>
void with_layouts(const GemmArgs& g, Fn&& fn) {
  const bool a_k = !g.a.trans, b_k = g.b.trans;
  if (a_k && b_k) return fn(std::true_type{}, std::true_type{});
  if (a_k) return fn(std::true_type{}, std::false_type{});
  if (b_k) return fn(std::false_type{}, std::true_type{});
  return fn(std::false_type{}, std::false_type{});
}

// M tiles on x (up to 2^31 - 1); N tiles and batches on y / z, which the kernels stride over past 65535.
inline dim3 grid_for(const GemmArgs& g, int tile_m, int tile_n) {
  return dim3(static_cast<unsigned>(cuda::ceil_div(g.m, tile_m)),
              static_cast<unsigned>(std::min<int64_t>(cuda::ceil_div(g.n, tile_n), 65535)),
              static_cast<unsigned>(std::min<int64_t>(g.batch, 65535)));
}

struct Problem {
  int64_t batch, m, n, k, ldc, batch_stride_c;
  bool accumulate;  // C += the product (GemmArgs::accumulate)
};

inline Problem problem_of(const GemmArgs& g) {
  return {g.batch, g.m, g.n, g.k, g.ldc, g.batch_stride_c, g.accumulate};
}

// The epilogue of one output element: + the old C when accumulating, + bias[col], one rounding to T.
template <typename T, typename Acc>
__device__ __forceinline__ void store_output(T* out, Acc v, bool accumulate, const T* bias, int64_t col) {
  if (accumulate) v += cuda::to_opmath(*out);
  if (bias != nullptr) v += cuda::to_opmath(bias[col]);
  *out = cuda::from_opmath<T>(v);
}

// One operand as a tile loader sees it: element (outer, k) — outer is M for A and N for B — lives at
// p[outer * ld + k] when `k_contiguous`, else at p[k * ld + outer].
template <typename T>
struct Operand {
  const T* p;
  int64_t ld;
  int64_t batch_stride;
  int64_t outer;  // M or N
  bool k_contiguous;
  bool vec16;  // 16-byte vector access (LDG.128, cp.async 16) is legal: pointer, ld and batch stride allow it
};

template <typename T>
Operand<T> operand_of(const MatrixRef& ref, int64_t outer, bool is_b) {
  // A is m x k: k is contiguous unless A is transposed. B is k x n: k is contiguous only when B is transposed.
  const bool k_contiguous = is_b ? ref.trans : !ref.trans;
  constexpr int64_t kPerVector = 16 / sizeof(T);
  const bool vec16 = cuda::is_aligned16(ref.data) && ref.ld % kPerVector == 0 && ref.batch_stride % kPerVector == 0;
  return {static_cast<const T*>(ref.data), ref.ld, ref.batch_stride, outer, k_contiguous, vec16};
}

// Calls body(n0, batch, a_base, b_base) for each (N tile, batch) of this block, whose M tile is blockIdx.x: N tiles
// on grid y and batches on grid z, strided past 65535. (C's batch offset is left to the epilogue, so that the
// pointer is not live through the K loop.)
template <typename T, typename Body>
__device__ __forceinline__ void for_each_tile(const Problem& pr, int64_t tile_n, const Operand<T>& a,
                                              const Operand<T>& b, Body&& body) {
  for (int64_t n_tile = blockIdx.y; n_tile * tile_n < pr.n; n_tile += gridDim.y) {
    const int64_t n0 = n_tile * tile_n;
    for (int64_t batch = blockIdx.z; batch < pr.batch; batch += gridDim.z) {
      body(n0, batch, a.p + batch * a.batch_stride, b.p + batch * b.batch_stride);
    }
  }
}

}  // namespace gemm
}  // namespace fastops

// SIMT GEMM: the CUDA-core kernel for float32 when TF32 is not allowed, and the pre-Ampere fallback for 16-bit types
// and TF32. 128x128x8 block tile, 256 threads, each thread an 8x8 register tile, shared memory double-buffered with
// register prefetch, 16-byte loads where aligned. Torch-free (see gemm_cuda.cuh).
#include <type_traits>

#include "matmul/gemm_cuda.cuh"

namespace fastops {
namespace {

using cuda::opmath_t;
using namespace gemm;

constexpr int kBM = 128, kBN = 128, kBK = 8, kThreads = 256;
// Row padding of the transposed A tile: its stores run down a column, which the padding spreads over banks.
constexpr int kPad = 4;

template <typename T>
__device__ __forceinline__ void load_four(const T* src, bool vec16, opmath_t<T> (&r)[4]) {
  if constexpr (std::is_same_v<T, float>) {
    if (vec16) {
      const float4 v = *reinterpret_cast<const float4*>(src);
      r[0] = v.x;
      r[1] = v.y;
      r[2] = v.z;
      r[3] = v.w;
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) r[i] = cuda::to_opmath(src[i]);
}

// This thread's 4 elements of the operand's kBM x kBK tile at (o0, k0), zero outside the matrix. Threads map to the
// contiguous direction so that a warp reads whole cache lines: 2 threads x 4 along k per outer index when k is
// contiguous, 32 threads x 4 along the outer dim per k otherwise.
template <typename T, bool kKContiguous>
__device__ __forceinline__ void load_tile(const Operand<T>& op, const T* base, int64_t o0, int64_t k0, int64_t k_size,
                                          int tid, opmath_t<T> (&r)[4]) {
  using Acc = opmath_t<T>;
  if constexpr (kKContiguous) {
    const int64_t o = o0 + (tid >> 1), k = k0 + (tid & 1) * 4;
    const T* src = base + o * op.ld + k;
    if (o < op.outer && k + 3 < k_size) {
      load_four(src, op.vec16, r);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) r[i] = (o < op.outer && k + i < k_size) ? cuda::to_opmath(src[i]) : Acc(0);
    }
  } else {
    const int64_t k = k0 + (tid >> 5), o = o0 + (tid & 31) * 4;
    const T* src = base + k * op.ld + o;
    if (k < k_size && o + 3 < op.outer) {
      load_four(src, op.vec16, r);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) r[i] = (k < k_size && o + i < op.outer) ? cuda::to_opmath(src[i]) : Acc(0);
    }
  }
}

// Shared-memory tiles are k-major (tile[k][outer]), so the compute loop reads 4 consecutive outer values at once.
template <bool kKContiguous, typename Acc, int kStride>
__device__ __forceinline__ void store_tile(Acc (*tile)[kStride], int tid, const Acc (&r)[4]) {
  if constexpr (kKContiguous) {
#pragma unroll
    for (int i = 0; i < 4; ++i) tile[(tid & 1) * 4 + i][tid >> 1] = r[i];
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) tile[tid >> 5][(tid & 31) * 4 + i] = r[i];
  }
}

template <typename Acc>
__device__ __forceinline__ void read_four(const Acc* p, Acc* out) {
  if constexpr (std::is_same_v<Acc, float>) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
    const double2 lo = *reinterpret_cast<const double2*>(p), hi = *reinterpret_cast<const double2*>(p + 2);
    out[0] = lo.x;
    out[1] = lo.y;
    out[2] = hi.x;
    out[3] = hi.y;
  }
}

// Thread (ty, tx) = (tid / 16, tid % 16) owns rows {ty*4 .. ty*4+3} and {64 + ty*4 ..}, columns {tx*4 ..} and
// {64 + tx*4 ..} of the block tile: the 4-wide pieces are read from shared memory as single 16-byte loads, and a
// warp's reads of B cover 16 distinct float4s (no bank conflicts beyond the 2-wavefront minimum).
// One block per SM: the 8x8 accumulators plus int64 addressing need ~175 registers (capping at 128 for two blocks
// per SM spills).
template <typename T, bool kAKContiguous, bool kBKContiguous>
__global__ void __launch_bounds__(kThreads)
    simt_gemm_kernel(Problem pr, Operand<T> a, Operand<T> b, T* __restrict__ c, const T* __restrict__ bias) {
  using Acc = opmath_t<T>;
  __shared__ __align__(16) Acc a_tile[2][kBK][kBM + kPad];
  __shared__ __align__(16) Acc b_tile[2][kBK][kBN + kPad];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t k_tiles = (pr.k + kBK - 1) / kBK;

  for_each_tile(pr, kBN, a, b, [&](int64_t n0, int64_t batch, const T* a_base, const T* b_base) {
    Acc acc[8][8] = {};

    Acc a_next[4], b_next[4];
    load_tile<T, kAKContiguous>(a, a_base, m0, 0, pr.k, tid, a_next);
    load_tile<T, kBKContiguous>(b, b_base, n0, 0, pr.k, tid, b_next);
    store_tile<kAKContiguous>(a_tile[0], tid, a_next);
    store_tile<kBKContiguous>(b_tile[0], tid, b_next);
    __syncthreads();

    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const int cur = kt & 1;
      const bool more = kt + 1 < k_tiles;
      if (more) {  // global loads of the next tile are in flight during this tile's math
        load_tile<T, kAKContiguous>(a, a_base, m0, (kt + 1) * kBK, pr.k, tid, a_next);
        load_tile<T, kBKContiguous>(b, b_base, n0, (kt + 1) * kBK, pr.k, tid, b_next);
      }
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        Acc av[8], bv[8];
        read_four(&a_tile[cur][kk][ty * 4], av);
        read_four(&a_tile[cur][kk][64 + ty * 4], av + 4);
        read_four(&b_tile[cur][kk][tx * 4], bv);
        read_four(&b_tile[cur][kk][64 + tx * 4], bv + 4);
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
      }
      if (more) {
        store_tile<kAKContiguous>(a_tile[cur ^ 1], tid, a_next);
        store_tile<kBKContiguous>(b_tile[cur ^ 1], tid, b_next);
      }
      __syncthreads();
    }

    T* c_base = c + batch * pr.batch_stride_c;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int64_t row = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
      if (row >= pr.m) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int64_t col = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
        if (col >= pr.n) continue;
        store_output(c_base + row * pr.ldc + col, acc[i][j], pr.accumulate, bias, col);
      }
    }
  });
}

template <typename T>
void launch(const GemmArgs& g, cudaStream_t stream) {
  const Operand<T> a = operand_of<T>(g.a, g.m, false), b = operand_of<T>(g.b, g.n, true);
  with_layouts(g, [&](auto a_k, auto b_k) {
    simt_gemm_kernel<T, decltype(a_k)::value, decltype(b_k)::value><<<grid_for(g, kBM, kBN), kThreads, 0, stream>>>(
        problem_of(g), a, b, static_cast<T*>(g.c), static_cast<const T*>(g.bias));
  });
}

}  // namespace

void launch_simt_gemm(const GemmArgs& args, cudaStream_t stream) {
  switch (args.dtype) {
    case DType::Float32: return launch<float>(args, stream);
    case DType::BFloat16: return launch<__nv_bfloat16>(args, stream);
    case DType::Float16: return launch<__half>(args, stream);
    case DType::Float64: return;  // launch_float64_gemm's
  }
}

}  // namespace fastops

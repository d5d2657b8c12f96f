// CUDA GEMM kernels and the kernel selector. Torch-free (see shared/DESIGN.md, rule 4).
//
//   simt_gemm_kernel   CUDA-core GEMM for float32 (when TF32 is not allowed) and float64; also the portable
//                      fallback for 16-bit types. 128x128x8 block tile, 256 threads, each thread an 8x8 register
//                      tile, shared memory double-buffered with register prefetch, 16-byte loads where aligned.
//   small_gemm_kernel  float64: a plain 32x32 shared-memory tiled kernel (correctness for gradcheck, not speed).
//   column_sum_*       the fused column reduction behind linear's bias gradient.
// All offsets are int64; edge tiles load zeros (predicated) and store under a bounds check.
#include <algorithm>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "matmul/matmul_launch.h"

namespace fastops {
namespace {

using cuda::opmath_t;

// ---------------------------------------------------------------------------------------------------------------
// SIMT GEMM
// ---------------------------------------------------------------------------------------------------------------
namespace simt {

constexpr int kBM = 128, kBN = 128, kBK = 8, kThreads = 256;
// Row padding of the transposed A tile: its stores run down a column, which the padding spreads over banks.
constexpr int kPad = 4;

// One operand as a tile loader sees it: element (outer, k) — outer is M for A and N for B — lives at
// p[outer * ld + k] when `k_contiguous`, else at p[k * ld + outer].
template <typename T>
struct Operand {
  const T* p;
  int64_t ld;
  int64_t batch_stride;
  int64_t outer;  // M or N
  bool k_contiguous;
  bool vec4;  // 4-element vector loads are aligned (pointer, ld and batch stride)
};

template <typename T>
__device__ __forceinline__ void load_four(const T* src, bool vec4, opmath_t<T> (&r)[4]) {
  if constexpr (std::is_same_v<T, float>) {
    if (vec4) {
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
template <typename T>
__device__ __forceinline__ void load_tile(const Operand<T>& op, const T* base, int64_t o0, int64_t k0, int64_t k_size,
                                          int tid, opmath_t<T> (&r)[4]) {
  using Acc = opmath_t<T>;
  if (op.k_contiguous) {
    const int64_t o = o0 + (tid >> 1), k = k0 + (tid & 1) * 4;
    const T* src = base + o * op.ld + k;
    if (o < op.outer && k + 3 < k_size) {
      load_four(src, op.vec4, r);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) r[i] = (o < op.outer && k + i < k_size) ? cuda::to_opmath(src[i]) : Acc(0);
    }
  } else {
    const int64_t k = k0 + (tid >> 5), o = o0 + (tid & 31) * 4;
    const T* src = base + k * op.ld + o;
    if (k < k_size && o + 3 < op.outer) {
      load_four(src, op.vec4, r);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) r[i] = (k < k_size && o + i < op.outer) ? cuda::to_opmath(src[i]) : Acc(0);
    }
  }
}

// Shared-memory tiles are k-major (tile[k][outer]), so the compute loop reads 4 consecutive outer values at once.
template <typename Acc, int kStride>
__device__ __forceinline__ void store_tile(Acc (*tile)[kStride], bool k_contiguous, int tid, const Acc (&r)[4]) {
  if (k_contiguous) {
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

struct Problem {
  int64_t batch, m, n, k, ldc, batch_stride_c;
};

// Thread (ty, tx) = (tid / 16, tid % 16) owns rows {ty*4 .. ty*4+3} and {64 + ty*4 ..}, columns {tx*4 ..} and
// {64 + tx*4 ..} of the block tile: the 4-wide pieces are read from shared memory as single 16-byte loads, and a
// warp's reads of B cover 16 distinct float4s (no bank conflicts beyond the 2-wavefront minimum).
// One block per SM: the 8x8 accumulators plus int64 addressing need ~175 registers (capping at 128 for two blocks
// per SM spills).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    simt_gemm_kernel(Problem pr, Operand<T> a, Operand<T> b, T* __restrict__ c, const T* __restrict__ bias) {
  using Acc = opmath_t<T>;
  __shared__ __align__(16) Acc a_tile[2][kBK][kBM + kPad];
  __shared__ __align__(16) Acc b_tile[2][kBK][kBN + kPad];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t k_tiles = (pr.k + kBK - 1) / kBK;

  for (int64_t n_tile = blockIdx.y; n_tile * kBN < pr.n; n_tile += gridDim.y) {
    const int64_t n0 = n_tile * kBN;
    for (int64_t batch = blockIdx.z; batch < pr.batch; batch += gridDim.z) {
      const T* a_base = a.p + batch * a.batch_stride;
      const T* b_base = b.p + batch * b.batch_stride;
      Acc acc[8][8];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = Acc(0);

      Acc a_next[4], b_next[4];
      load_tile(a, a_base, m0, 0, pr.k, tid, a_next);
      load_tile(b, b_base, n0, 0, pr.k, tid, b_next);
      store_tile(a_tile[0], a.k_contiguous, tid, a_next);
      store_tile(b_tile[0], b.k_contiguous, tid, b_next);
      __syncthreads();

      for (int64_t kt = 0; kt < k_tiles; ++kt) {
        const int cur = kt & 1;
        const bool more = kt + 1 < k_tiles;
        if (more) {  // global loads of the next tile are in flight during this tile's math
          load_tile(a, a_base, m0, (kt + 1) * kBK, pr.k, tid, a_next);
          load_tile(b, b_base, n0, (kt + 1) * kBK, pr.k, tid, b_next);
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
          store_tile(a_tile[cur ^ 1], a.k_contiguous, tid, a_next);
          store_tile(b_tile[cur ^ 1], b.k_contiguous, tid, b_next);
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
          Acc v = acc[i][j];
          if (bias != nullptr) v += cuda::to_opmath(bias[col]);
          c_base[row * pr.ldc + col] = cuda::from_opmath<T>(v);
        }
      }
    }
  }
}

// float64: a plain shared-memory tiled kernel (32x32 outputs per block, 2x2 per thread), the gradcheck path. The
// 8x8-per-thread tile of simt_gemm_kernel would need twice its registers in double precision.
constexpr int kSmallTile = 32;

template <typename T>
__device__ __forceinline__ void load_small_tile(const Operand<T>& op, const T* base, int64_t o0, int64_t k0,
                                                int64_t k_size, int tid, opmath_t<T> (*tile)[kSmallTile + 1]) {
#pragma unroll
  for (int i = 0; i < kSmallTile * kSmallTile / kThreads; ++i) {
    const int e = tid + i * kThreads;
    // The memory-contiguous direction varies fastest across threads (coalesced reads).
    const int o = op.k_contiguous ? e / kSmallTile : e % kSmallTile;
    const int k = op.k_contiguous ? e % kSmallTile : e / kSmallTile;
    const int64_t go = o0 + o, gk = k0 + k;
    const bool inside = go < op.outer && gk < k_size;
    tile[k][o] = inside ? cuda::to_opmath(base[op.k_contiguous ? go * op.ld + gk : gk * op.ld + go])
                        : opmath_t<T>(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    small_gemm_kernel(Problem pr, Operand<T> a, Operand<T> b, T* __restrict__ c, const T* __restrict__ bias) {
  using Acc = opmath_t<T>;
  __shared__ Acc a_tile[kSmallTile][kSmallTile + 1];
  __shared__ Acc b_tile[kSmallTile][kSmallTile + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kSmallTile;
  for (int64_t n_tile = blockIdx.y; n_tile * kSmallTile < pr.n; n_tile += gridDim.y) {
    const int64_t n0 = n_tile * kSmallTile;
    for (int64_t batch = blockIdx.z; batch < pr.batch; batch += gridDim.z) {
      const T* a_base = a.p + batch * a.batch_stride;
      const T* b_base = b.p + batch * b.batch_stride;
      Acc acc[2][2] = {};
      for (int64_t k0 = 0; k0 < pr.k; k0 += kSmallTile) {
        load_small_tile(a, a_base, m0, k0, pr.k, tid, a_tile);
        load_small_tile(b, b_base, n0, k0, pr.k, tid, b_tile);
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < kSmallTile; ++k) {
#pragma unroll
          for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) acc[i][j] = fma(a_tile[k][ty + 16 * i], b_tile[k][tx + 16 * j], acc[i][j]);
        }
        __syncthreads();
      }
      T* c_base = c + batch * pr.batch_stride_c;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int64_t row = m0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int64_t col = n0 + tx + 16 * j;
          if (row < pr.m && col < pr.n) {
            Acc v = acc[i][j];
            if (bias != nullptr) v += cuda::to_opmath(bias[col]);
            c_base[row * pr.ldc + col] = cuda::from_opmath<T>(v);
          }
        }
      }
    }
  }
}

template <typename T>
Operand<T> operand_of(const MatrixRef& ref, int64_t outer, bool is_b) {
  // A is m x k: k is contiguous unless A is transposed. B is k x n: k is contiguous only when B is transposed.
  const bool k_contiguous = is_b ? ref.trans : !ref.trans;
  const bool vec4 = cuda::is_aligned16(ref.data) && ref.ld % 4 == 0 && ref.batch_stride % 4 == 0;
  return {static_cast<const T*>(ref.data), ref.ld, ref.batch_stride, outer, k_contiguous, vec4};
}

// M tiles on x (up to 2^31 - 1); N tiles and batches on y / z, which the kernels stride over past 65535.
inline dim3 grid_for(const GemmArgs& g, int tile_m, int tile_n) {
  return dim3(static_cast<unsigned>(cuda::ceil_div(g.m, tile_m)),
              static_cast<unsigned>(std::min<int64_t>(cuda::ceil_div(g.n, tile_n), 65535)),
              static_cast<unsigned>(std::min<int64_t>(g.batch, 65535)));
}

template <typename T>
void launch(const GemmArgs& g, cudaStream_t stream) {
  const Problem pr{g.batch, g.m, g.n, g.k, g.ldc, g.batch_stride_c};
  const Operand<T> a = operand_of<T>(g.a, g.m, false), b = operand_of<T>(g.b, g.n, true);
  T* c = static_cast<T*>(g.c);
  const T* bias = static_cast<const T*>(g.bias);
  if constexpr (std::is_same_v<T, double>) {
    small_gemm_kernel<T><<<grid_for(g, kSmallTile, kSmallTile), kThreads, 0, stream>>>(pr, a, b, c, bias);
  } else {
    simt_gemm_kernel<T><<<grid_for(g, kBM, kBN), kThreads, 0, stream>>>(pr, a, b, c, bias);
  }
}

}  // namespace simt

// ---------------------------------------------------------------------------------------------------------------
// Column sum (bias gradient)
// ---------------------------------------------------------------------------------------------------------------
constexpr int kSumCols = 32, kSumRows = 8, kMaxBands = 128, kRowsPerBand = 512;

// Block (32 columns, 8 row lanes): lane y sums rows y, y + 8, ... of its band (coalesced 32-wide row reads), the 8
// lanes are combined in shared memory, and the band's sums go to workspace[band, :].
template <typename T>
__global__ void __launch_bounds__(kSumCols * kSumRows)
    column_sum_bands_kernel(const T* __restrict__ g, int64_t rows, int64_t cols, int64_t rows_per_band,
                            double* __restrict__ workspace) {
  __shared__ double partial[kSumRows][kSumCols];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kSumCols + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_band;
  const int64_t r1 = std::min(rows, r0 + rows_per_band);
  double sum = 0;
  if (col < cols) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kSumRows) sum += static_cast<double>(cuda::to_opmath(g[r * cols + col]));
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
#pragma unroll
    for (int y = 1; y < kSumRows; ++y) sum += partial[y][threadIdx.x];
    workspace[static_cast<int64_t>(blockIdx.y) * cols + col] = sum;
  }
}

template <typename T>
__global__ void column_sum_finish_kernel(const double* __restrict__ workspace, int64_t bands, int64_t cols,
                                         T* __restrict__ out) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  double sum = 0;
  for (int64_t b = 0; b < bands; ++b) sum += workspace[b * cols + col];
  out[col] = cuda::from_opmath<T>(static_cast<opmath_t<T>>(sum));
}

// ---------------------------------------------------------------------------------------------------------------
// Kernel selection
// ---------------------------------------------------------------------------------------------------------------
enum class GemmKernel { Simt };

// The seam where tensor-core kernels plug in: by dtype, TF32 permission and compute capability (a Hopper wgmma
// kernel would be chosen here for major == 9).
GemmKernel select_gemm_kernel(const GemmArgs& /*args*/, int /*cc_major*/) { return GemmKernel::Simt; }

int current_cc_major() {
  int device = 0, major = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  return major;
}

}  // namespace

void gemm_cuda(const GemmArgs& args, cudaStream_t stream) {
  switch (select_gemm_kernel(args, current_cc_major())) {
    case GemmKernel::Simt:
      cuda::dispatch_dtype(args.dtype, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        simt::launch<T>(args, stream);
      });
      return;
  }
}

int64_t column_sum_bands(int64_t rows) {
  return std::clamp<int64_t>(cuda::ceil_div(rows, kRowsPerBand), 1, kMaxBands);
}

void column_sum_cuda(DType dtype, const void* g, int64_t rows, int64_t cols, void* out, double* workspace,
                     cudaStream_t stream) {
  const int64_t bands = column_sum_bands(rows);
  const int64_t rows_per_band = cuda::ceil_div(rows, bands);
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const dim3 grid(static_cast<unsigned>(cuda::ceil_div(cols, kSumCols)), static_cast<unsigned>(bands));
    column_sum_bands_kernel<T><<<grid, dim3(kSumCols, kSumRows), 0, stream>>>(static_cast<const T*>(g), rows, cols,
                                                                              rows_per_band, workspace);
    column_sum_finish_kernel<T><<<static_cast<unsigned>(cuda::ceil_div(cols, 256)), 256, 0, stream>>>(
        workspace, bands, cols, static_cast<T*>(out));
  });
}

}  // namespace fastops

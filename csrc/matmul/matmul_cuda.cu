// CUDA GEMM kernels and the kernel selector. Torch-free (see shared/DESIGN.md, rule 4).
//
//   simt_gemm_kernel   CUDA-core GEMM for float32 when TF32 is not allowed; also the pre-Ampere fallback for
//                      16-bit types and TF32. 128x128x8 block tile, 256 threads, each thread an 8x8 register
//                      tile, shared memory double-buffered with register prefetch, 16-byte loads where aligned.
//   small_gemm_kernel  float64: a plain 32x32 shared-memory tiled kernel (correctness for gradcheck, not speed).
//   mma_gemm_kernel    bfloat16 / float16 / TF32 on tensor cores (sm_80+): 128x128 block tile (k depth 32 / 16),
//                      8 warps of 64x32, mma.sync (m16n8k16 fed by ldmatrix(.trans); m16n8k8 TF32 fed by swizzled
//                      32-bit shared loads) from a 4-stage cp.async shared-memory ring.
//   column_sum_*       the fused column reduction behind linear's bias gradient.
// All offsets are int64; edge tiles load zeros (predicated) and store under a bounds check. Every epilogue adds, in the
// accumulator type, the old C (GemmArgs::accumulate) and the bias before its one rounding to C's dtype.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/cuda_utils.cuh"
#include "common/env.h"
#include "matmul/gemm_sm90.h"
#include "matmul/matmul_launch.h"

namespace fastops {
namespace {

using cuda::opmath_t;

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
template <typename T, bool kKContiguous>
__device__ __forceinline__ void load_tile(const Operand<T>& op, const T* base, int64_t o0, int64_t k0, int64_t k_size,
                                          int tid, opmath_t<T> (&r)[4]) {
  using Acc = opmath_t<T>;
  if constexpr (kKContiguous) {
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

struct Problem {
  int64_t batch, m, n, k, ldc, batch_stride_c;
  bool accumulate;  // C += the product (GemmArgs::accumulate)
};

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
          T* out = c_base + row * pr.ldc + col;
          Acc v = acc[i][j];
          if (pr.accumulate) v += cuda::to_opmath(*out);
          if (bias != nullptr) v += cuda::to_opmath(bias[col]);
          *out = cuda::from_opmath<T>(v);
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
      Acc acc[2][2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) acc[i][j] = Acc(0);
      for (int64_t k0 = 0; k0 < pr.k; k0 += kSmallTile) {
        load_small_tile(a, a_base, m0, k0, pr.k, tid, a_tile);
        load_small_tile(b, b_base, n0, k0, pr.k, tid, b_tile);
        __syncthreads();
#pragma unroll 4
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
            T* out = c_base + row * pr.ldc + col;
            Acc v = acc[i][j];
            if (pr.accumulate) v += cuda::to_opmath(*out);
            if (bias != nullptr) v += cuda::to_opmath(bias[col]);
            *out = cuda::from_opmath<T>(v);
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
  const Problem pr{g.batch, g.m, g.n, g.k, g.ldc, g.batch_stride_c, g.accumulate};
  const Operand<T> a = operand_of<T>(g.a, g.m, false), b = operand_of<T>(g.b, g.n, true);
  T* c = static_cast<T*>(g.c);
  const T* bias = static_cast<const T*>(g.bias);
  if constexpr (std::is_same_v<T, double>) {
    small_gemm_kernel<T><<<grid_for(g, kSmallTile, kSmallTile), kThreads, 0, stream>>>(pr, a, b, c, bias);
  } else {
    with_layouts(g, [&](auto a_k, auto b_k) {
      simt_gemm_kernel<T, decltype(a_k)::value, decltype(b_k)::value>
          <<<grid_for(g, kBM, kBN), kThreads, 0, stream>>>(pr, a, b, c, bias);
    });
  }
}

}  // namespace simt

// ---------------------------------------------------------------------------------------------------------------
// Tensor-core GEMM (sm_80+): mma.sync m16n8k16 for bfloat16 / float16, fed by ldmatrix from a cp.async pipeline
// ---------------------------------------------------------------------------------------------------------------
namespace tc {

constexpr int kBM = 128, kBN = 128, kStages = 4, kThreads = 256;
// k depth of a stage: 64 bytes of k per row of a k-contiguous tile, i.e. 32 16-bit values or 16 float32 (TF32).
template <typename T>
inline constexpr int kBK = 64 / static_cast<int>(sizeof(T));
constexpr int kTileBytes = kBM * 64;  // one operand's tile in one stage
constexpr int kSmemBytes = kStages * 2 * kTileBytes;

// Shared-memory tiles are stored the way the operand is contiguous in global memory, so that every global read is a
// whole 16-byte chunk (cp.async) and every transposition happens in ldmatrix (.trans) or in the fragment gather
// instead of in registers:
//   k-contiguous operand: 128 rows (m or n) of 64 bytes of k = 4 chunks per row
//   outer-contiguous:      kBK rows (k) of 128 m or n values = 16 (16-bit) or 32 (float) chunks per row
// Chunks are XOR-swizzled within a row so that the rows read together by one ldmatrix (8 rows) or one TF32
// fragment gather (4 k rows) hit distinct bank groups; the swizzle is a bijection per row, so cp.async writes stay
// conflict-free too.
template <typename T, bool kKContiguous>
struct TileLayout {
  static constexpr int kPerChunk = 16 / static_cast<int>(sizeof(T));
  static constexpr int kChunksPerRow = kKContiguous ? 4 : kBM / kPerChunk;
  __device__ static __forceinline__ uint32_t offset(int row, int chunk) {
    int swizzled;
    if constexpr (kKContiguous) {
      swizzled = chunk ^ ((row >> 1) & 3);
    } else if constexpr (sizeof(T) == 2) {
      swizzled = chunk ^ (row & 7);
    } else {
      swizzled = chunk ^ ((row & 3) << 1);
    }
    return static_cast<uint32_t>((row * kChunksPerRow + swizzled) * 16);
  }
  // Byte offset of element (outer, k) of the tile.
  __device__ static __forceinline__ uint32_t element(int outer, int k) {
    if constexpr (kKContiguous) {
      return offset(outer, k / kPerChunk) + (k % kPerChunk) * sizeof(T);
    } else {
      return offset(k, outer / kPerChunk) + (outer % kPerChunk) * sizeof(T);
    }
  }
};

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; bytes past src_bytes are zero-filled (edge tiles, K tails).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
}

// float32 -> TF32 with round-to-nearest (the tensor cores would otherwise truncate the low mantissa bits).
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

__device__ __forceinline__ void mma_1688_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

template <typename T>
struct Operand {
  const T* p;
  int64_t ld;
  int64_t batch_stride;
  int64_t outer;  // M or N
  bool async16;   // 16-byte cp.async is legal: pointer, ld and batch stride are multiples of 16 bytes
};

// One operand's kBK slice starting at k0 into a stage: 512 chunks of 16 bytes, 2 per thread, consecutive threads
// on consecutive chunks of a row (coalesced). Chunks past the matrix edge are zero-filled; when 16-byte copies are
// not legal (odd leading dimension, misaligned view) the chunk is gathered with predicated scalar loads instead.
template <typename T, bool kKContiguous>
__device__ __forceinline__ void load_stage(const Operand<T>& op, const T* base, int64_t o0, int64_t k0, int64_t k_size,
                                           uint8_t* tile, int tid) {
  using Layout = TileLayout<T, kKContiguous>;
  constexpr int kPer = Layout::kPerChunk;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int e = tid + i * kThreads;
    const int row = e / Layout::kChunksPerRow, chunk = e % Layout::kChunksPerRow;
    int64_t outer_idx, k_idx, valid;
    if constexpr (kKContiguous) {
      outer_idx = o0 + row;
      k_idx = k0 + chunk * kPer;
      valid = outer_idx < op.outer ? k_size - k_idx : 0;
    } else {
      k_idx = k0 + row;
      outer_idx = o0 + chunk * kPer;
      valid = k_idx < k_size ? op.outer - outer_idx : 0;
    }
    valid = valid < 0 ? 0 : (valid > kPer ? kPer : valid);
    const T* src = base + (kKContiguous ? outer_idx * op.ld + k_idx : k_idx * op.ld + outer_idx);
    uint8_t* dst = tile + Layout::offset(row, chunk);
    if (op.async16) {
      cp_async16(smem_address(dst), valid > 0 ? src : base, static_cast<int>(valid * sizeof(T)));
    } else {
      alignas(16) T v[kPer];
#pragma unroll
      for (int j = 0; j < kPer; ++j) v[j] = j < valid ? src[j] : cuda::from_opmath<T>(0.0f);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
    }
  }
}

// One stage's worth of 16-bit MMAs: fragments by ldmatrix (.trans for operands stored outer-contiguous).
template <typename T, bool kAKContiguous, bool kBKContiguous>
__device__ __forceinline__ void mma_16bit_stage(const uint8_t* a_stage, const uint8_t* b_stage, int warp_m, int warp_n,
                                                int lane, float (&acc)[4][4][4]) {
  const uint32_t a_tile = smem_address(a_stage), b_tile = smem_address(b_stage);
#pragma unroll
  for (int ks = 0; ks < kBK<T> / 16; ++ks) {
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      const int m_base = warp_m * 64 + mi * 16;
      if constexpr (kAKContiguous) {  // [m][k]: lanes address rows m, matrices (m lo/hi) x (k lo/hi)
        const int row = m_base + (lane & 7) + ((lane >> 3) & 1) * 8, col = ks * 16 + (lane >> 4) * 8;
        ldmatrix_x4<false>(af[mi], a_tile + TileLayout<T, true>::offset(row, col / 8));
      } else {  // [k][m]: lanes address rows k; .trans turns each 8x8 into the row-major fragment
        const int row = ks * 16 + (lane & 7) + (lane >> 4) * 8, col = m_base + ((lane >> 3) & 1) * 8;
        ldmatrix_x4<true>(af[mi], a_tile + TileLayout<T, false>::offset(row, col / 8));
      }
    }
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      const int n_base = warp_n * 32 + np * 16;
      uint32_t r[4];
      if constexpr (kBKContiguous) {  // [n][k]: the "col" B fragment is a row-major read of n rows
        const int row = n_base + (lane & 7) + (lane >> 4) * 8, col = ks * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4<false>(r, b_tile + TileLayout<T, true>::offset(row, col / 8));
      } else {  // [k][n]
        const int row = ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = n_base + (lane >> 4) * 8;
        ldmatrix_x4<true>(r, b_tile + TileLayout<T, false>::offset(row, col / 8));
      }
      bf[2 * np][0] = r[0];
      bf[2 * np][1] = r[1];
      bf[2 * np + 1][0] = r[2];
      bf[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) mma_16816<T>(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
  }
}

// One stage's worth of TF32 MMAs. ldmatrix moves 16-bit elements, so the 32-bit fragments are gathered with plain
// shared loads (conflict-free under the tile swizzle): A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4] and B[t][g],
// B[t+4][g] with g = lane / 4, t = lane % 4.
template <bool kAKContiguous, bool kBKContiguous>
__device__ __forceinline__ void mma_tf32_stage(const uint8_t* a_stage, const uint8_t* b_stage, int warp_m, int warp_n,
                                               int lane, float (&acc)[4][4][4]) {
  using ALayout = TileLayout<float, kAKContiguous>;
  using BLayout = TileLayout<float, kBKContiguous>;
  const int g = lane >> 2, t = lane & 3;
  auto a_at = [&](int m, int k) { return to_tf32(*reinterpret_cast<const float*>(a_stage + ALayout::element(m, k))); };
  auto b_at = [&](int n, int k) { return to_tf32(*reinterpret_cast<const float*>(b_stage + BLayout::element(n, k))); };
  // Not unrolled: the two k steps' 24 gathered fragments live at once otherwise, and sm_80 then spills.
#pragma unroll 1
  for (int ks = 0; ks < kBK<float> / 8; ++ks) {
    const int k = ks * 8 + t;
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      const int m = warp_m * 64 + mi * 16 + g;
      af[mi][0] = a_at(m, k);
      af[mi][1] = a_at(m + 8, k);
      af[mi][2] = a_at(m, k + 4);
      af[mi][3] = a_at(m + 8, k + 4);
    }
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const int n = warp_n * 32 + ni * 8 + g;
      bf[ni][0] = b_at(n, k);
      bf[ni][1] = b_at(n, k + 4);
    }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) mma_1688_tf32(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
  }
}

struct Problem {
  int64_t batch, m, n, k, ldc, batch_stride_c;
  bool accumulate;  // C += the product (GemmArgs::accumulate)
};

// 8 warps as 2 (m) x 4 (n), each computing a 64 x 32 piece of the 128 x 128 block tile into 64 fp32 accumulators
// a thread. 16-bit: per 16-deep k step, 4 A fragments (ldmatrix.x4) and 4 B fragments (2 ldmatrix.x4) feed 16
// mma.sync.m16n8k16. TF32 (T = float): per 8-deep k step, fragments gathered with 32-bit shared loads and rounded
// to TF32 feed 16 mma.sync.m16n8k8.
template <typename T, bool kAKContiguous, bool kBKContiguous>
__global__ void __launch_bounds__(kThreads)
    mma_gemm_kernel(Problem pr, Operand<T> a, Operand<T> b, T* __restrict__ c, const T* __restrict__ bias) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  constexpr int kDepth = kBK<T>;
  const int64_t k_tiles = (pr.k + kDepth - 1) / kDepth;
  auto a_stage = [&](int s) { return smem + s * 2 * kTileBytes; };
  auto b_stage = [&](int s) { return smem + s * 2 * kTileBytes + kTileBytes; };

  for (int64_t n_tile = blockIdx.y; n_tile * kBN < pr.n; n_tile += gridDim.y) {
    const int64_t n0 = n_tile * kBN;
    for (int64_t batch = blockIdx.z; batch < pr.batch; batch += gridDim.z) {
      const T* a_base = a.p + batch * a.batch_stride;
      const T* b_base = b.p + batch * b.batch_stride;
      float acc[4][4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

      // Prologue: the first kStages - 1 slices in flight. A group is committed even when empty so that
      // wait_group<kStages - 2> always means "the slice about to be used has landed".
#pragma unroll
      for (int s = 0; s < kStages - 1; ++s) {
        if (s < k_tiles) {
          load_stage<T, kAKContiguous>(a, a_base, m0, s * kDepth, pr.k, a_stage(s), tid);
          load_stage<T, kBKContiguous>(b, b_base, n0, s * kDepth, pr.k, b_stage(s), tid);
        }
        cp_async_commit();
      }

      for (int64_t kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<kStages - 2>();
        __syncthreads();  // slice kt visible to all warps; every warp is done with the stage refilled below
        const int64_t next = kt + kStages - 1;
        if (next < k_tiles) {
          const int s = static_cast<int>(next % kStages);
          load_stage<T, kAKContiguous>(a, a_base, m0, next * kDepth, pr.k, a_stage(s), tid);
          load_stage<T, kBKContiguous>(b, b_base, n0, next * kDepth, pr.k, b_stage(s), tid);
        }
        cp_async_commit();

        const int s = static_cast<int>(kt % kStages);
        if constexpr (std::is_same_v<T, float>) {
          mma_tf32_stage<kAKContiguous, kBKContiguous>(a_stage(s), b_stage(s), warp_m, warp_n, lane, acc);
        } else {
          mma_16bit_stage<T, kAKContiguous, kBKContiguous>(a_stage(s), b_stage(s), warp_m, warp_n, lane, acc);
        }
      }
      cp_async_wait<0>();
      __syncthreads();  // the shared memory is reused by this block's next tile

      // Accumulator (mi, ni, r): row lane/4 (+8 for r >= 2), column 2 * (lane % 4) + (r % 2) of the 16x8 tile.
      T* c_base = c + batch * pr.batch_stride_c;
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int64_t row = m0 + warp_m * 64 + mi * 16 + (lane >> 2) + (r >> 1) * 8;
            const int64_t col = n0 + warp_n * 32 + ni * 8 + (lane & 3) * 2 + (r & 1);
            if (row < pr.m && col < pr.n) {
              T* out = c_base + row * pr.ldc + col;
              float v = acc[mi][ni][r];
              if (pr.accumulate) v += cuda::to_opmath(*out);
              if (bias != nullptr) v += cuda::to_opmath(bias[col]);
              *out = cuda::from_opmath<T>(v);
            }
          }
        }
      }
    }
  }
}

template <typename T>
Operand<T> operand_of(const MatrixRef& ref, int64_t outer) {
  constexpr int64_t kPerChunk = 16 / sizeof(T);
  const bool async16 = cuda::is_aligned16(ref.data) && ref.ld % kPerChunk == 0 && ref.batch_stride % kPerChunk == 0;
  return {static_cast<const T*>(ref.data), ref.ld, ref.batch_stride, outer, async16};
}

template <typename T>
void launch(const GemmArgs& g, dim3 grid, cudaStream_t stream) {
  const Problem pr{g.batch, g.m, g.n, g.k, g.ldc, g.batch_stride_c, g.accumulate};
  with_layouts(g, [&](auto a_k, auto b_k) {
    auto kernel = mma_gemm_kernel<T, decltype(a_k)::value, decltype(b_k)::value>;
    // Over 48 KiB of dynamic shared memory needs an opt-in (cheap; the attribute is per kernel, per device).
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    kernel<<<grid, kThreads, kSmemBytes, stream>>>(pr, operand_of<T>(g.a, g.m), operand_of<T>(g.b, g.n),
                                                    static_cast<T*>(g.c), static_cast<const T*>(g.bias));
  });
}

}  // namespace tc

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
enum class GemmKernel { Simt, MmaSync, Wgmma };

// The Hopper kernel's view of a single (unbatched) GEMM: op(A) not transposed is A stored [m, k] (K-major),
// transposed is A stored [k, m] (MN-major); op(B) not transposed is B stored [k, n] (MN-major), transposed is B
// stored [n, k] (K-major).
GemmSm90Problem sm90_problem(const GemmArgs& args) {
  GemmSm90Problem p{};
  p.in_dtype = p.out_dtype = args.dtype;
  p.m = args.m;
  p.n = args.n;
  p.k = args.k;
  p.a = args.a.data;
  p.lda = args.a.ld;
  p.a_k_major = !args.a.trans;
  p.b = args.b.data;
  p.ldb = args.b.ld;
  p.b_k_major = args.b.trans;
  p.c = args.c;
  p.ldc = args.ldc;
  p.bias = args.bias;
  p.accumulate = args.accumulate;
  p.fuse_act = args.fuse_act;
  p.act = args.act;
  p.pre = args.pre;
  return p;
}

struct DeviceInfo {
  int cc_major, cc_minor, num_sms;
};

// Read once per process for every device: gemm_cuda_workspace_elems and gemm_cuda both select the kernel on each
// call, and the attributes never change.
DeviceInfo current_device_info() {
  static const std::vector<DeviceInfo> devices = [] {
    int count = 0;
    cudaGetDeviceCount(&count);
    std::vector<DeviceInfo> infos(count);
    for (int d = 0; d < count; ++d) {
      cudaDeviceGetAttribute(&infos[d].cc_major, cudaDevAttrComputeCapabilityMajor, d);
      cudaDeviceGetAttribute(&infos[d].cc_minor, cudaDevAttrComputeCapabilityMinor, d);
      cudaDeviceGetAttribute(&infos[d].num_sms, cudaDevAttrMultiProcessorCount, d);
    }
    return infos;
  }();
  int device = 0;
  cudaGetDevice(&device);
  return devices.at(device);
}

// The seam where kernels are chosen: by dtype, TF32 permission and compute capability. On sm_90 (H100/H200),
// single GEMMs whose operands TMA can read take the wgmma kernel: 16-bit in every layout, float32 under TF32 when
// both operands are K-major (Linear's forward). Other 16-bit and TF32 GEMMs take the mma.sync tensor-core kernel
// on sm_80+; float32 without TF32, float64 and pre-Ampere GPUs take the CUDA cores. FASTOPS_NO_SM90=1 keeps
// Hopper on the mma.sync kernel (the benchmark's ladder and issue #4's target time it there).
GemmKernel select_gemm_kernel(const GemmArgs& args, const DeviceInfo& device) {
  const bool half_type = args.dtype == DType::BFloat16 || args.dtype == DType::Float16;
  const bool tensor_cores = half_type || (args.dtype == DType::Float32 && args.allow_tf32);
  if (tensor_cores && device.cc_major == 9 && device.cc_minor == 0 && args.batch == 1 &&
      !env_flag("FASTOPS_NO_SM90") && gemm_sm90_unsupported_reason(sm90_problem(args)) == nullptr) {
    return GemmKernel::Wgmma;
  }
  if (tensor_cores && device.cc_major >= 8) return GemmKernel::MmaSync;
  return GemmKernel::Simt;
}

}  // namespace

int64_t gemm_cuda_workspace_elems(const GemmArgs& args) {
  const DeviceInfo device = current_device_info();
  if (select_gemm_kernel(args, device) != GemmKernel::Wgmma) return 0;
  return gemm_sm90_workspace_elems(sm90_problem(args), device.num_sms);
}

bool gemm_cuda_fuses_activation(const GemmArgs& args) {
  return select_gemm_kernel(args, current_device_info()) == GemmKernel::Wgmma;
}

cudaError_t gemm_cuda(const GemmArgs& args, float* workspace, cudaStream_t stream) {
  const DeviceInfo device = current_device_info();
  const GemmKernel kernel = select_gemm_kernel(args, device);
  if (args.fuse_act && kernel != GemmKernel::Wgmma) return cudaErrorInvalidValue;  // see gemm_cuda_fuses_activation
  switch (kernel) {
    case GemmKernel::Simt:
      cuda::dispatch_dtype(args.dtype, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        simt::launch<T>(args, stream);
      });
      return cudaSuccess;
    case GemmKernel::MmaSync: {
      const dim3 grid = simt::grid_for(args, tc::kBM, tc::kBN);
      if (args.dtype == DType::BFloat16) tc::launch<__nv_bfloat16>(args, grid, stream);
      else if (args.dtype == DType::Float16) tc::launch<__half>(args, grid, stream);
      else tc::launch<float>(args, grid, stream);
      return cudaSuccess;
    }
    case GemmKernel::Wgmma: {
      GemmSm90Problem p = sm90_problem(args);
      p.workspace = workspace;
      return gemm_sm90(p, device.num_sms, stream);
    }
  }
  return cudaErrorInvalidValue;
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

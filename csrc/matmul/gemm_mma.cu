// Tensor-core GEMM (sm_80+) for bfloat16 / float16 / TF32: 128x128 block tile (k depth 32 / 16), 8 warps of 64x32,
// mma.sync (m16n8k16 fed by ldmatrix(.trans); m16n8k8 TF32 fed by swizzled 32-bit shared loads) from a 4-stage
// cp.async shared-memory ring. The portable path on Hopper for what the wgmma kernel does not take (batched
// problems, TF32 with an MN-major operand, unaligned operands). Torch-free (see gemm_cuda.cuh).
#include <type_traits>

#include "common/cuda_ptx.cuh"
#include "matmul/gemm_cuda.cuh"

namespace fastops {
namespace {

using namespace gemm;

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
    if (op.vec16) {
      ptx::cp_async16(ptx::smem_u32(dst), valid > 0 ? src : base, static_cast<int>(valid * sizeof(T)));
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
  const uint32_t a_tile = ptx::smem_u32(a_stage), b_tile = ptx::smem_u32(b_stage);
#pragma unroll
  for (int ks = 0; ks < kBK<T> / 16; ++ks) {
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      const int m_base = warp_m * 64 + mi * 16;
      if constexpr (kAKContiguous) {  // [m][k]: lanes address rows m, matrices (m lo/hi) x (k lo/hi)
        const int row = m_base + (lane & 7) + ((lane >> 3) & 1) * 8, col = ks * 16 + (lane >> 4) * 8;
        ptx::ldmatrix_x4<false>(af[mi], a_tile + TileLayout<T, true>::offset(row, col / 8));
      } else {  // [k][m]: lanes address rows k; .trans turns each 8x8 into the row-major fragment
        const int row = ks * 16 + (lane & 7) + (lane >> 4) * 8, col = m_base + ((lane >> 3) & 1) * 8;
        ptx::ldmatrix_x4<true>(af[mi], a_tile + TileLayout<T, false>::offset(row, col / 8));
      }
    }
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      const int n_base = warp_n * 32 + np * 16;
      uint32_t r[4];
      if constexpr (kBKContiguous) {  // [n][k]: the "col" B fragment is a row-major read of n rows
        const int row = n_base + (lane & 7) + (lane >> 4) * 8, col = ks * 16 + ((lane >> 3) & 1) * 8;
        ptx::ldmatrix_x4<false>(r, b_tile + TileLayout<T, true>::offset(row, col / 8));
      } else {  // [k][n]
        const int row = ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = n_base + (lane >> 4) * 8;
        ptx::ldmatrix_x4<true>(r, b_tile + TileLayout<T, false>::offset(row, col / 8));
      }
      bf[2 * np][0] = r[0];
      bf[2 * np][1] = r[1];
      bf[2 * np + 1][0] = r[2];
      bf[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) ptx::mma_16816<T>(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
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
  auto a_at = [&](int m, int k) { return ptx::to_tf32(*reinterpret_cast<const float*>(a_stage + ALayout::element(m, k))); };
  auto b_at = [&](int n, int k) { return ptx::to_tf32(*reinterpret_cast<const float*>(b_stage + BLayout::element(n, k))); };
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
      for (int ni = 0; ni < 4; ++ni) ptx::mma_1688_tf32(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
  }
}

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

  for_each_tile(pr, kBN, a, b, [&](int64_t n0, int64_t batch, const T* a_base, const T* b_base) {
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
      ptx::cp_async_commit();
    }

    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      ptx::cp_async_wait<kStages - 2>();
      __syncthreads();  // slice kt visible to all warps; every warp is done with the stage refilled below
      const int64_t next = kt + kStages - 1;
      if (next < k_tiles) {
        const int s = static_cast<int>(next % kStages);
        load_stage<T, kAKContiguous>(a, a_base, m0, next * kDepth, pr.k, a_stage(s), tid);
        load_stage<T, kBKContiguous>(b, b_base, n0, next * kDepth, pr.k, b_stage(s), tid);
      }
      ptx::cp_async_commit();

      const int s = static_cast<int>(kt % kStages);
      if constexpr (std::is_same_v<T, float>) {
        mma_tf32_stage<kAKContiguous, kBKContiguous>(a_stage(s), b_stage(s), warp_m, warp_n, lane, acc);
      } else {
        mma_16bit_stage<T, kAKContiguous, kBKContiguous>(a_stage(s), b_stage(s), warp_m, warp_n, lane, acc);
      }
    }
    ptx::cp_async_wait<0>();
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
            store_output(c_base + row * pr.ldc + col, acc[mi][ni][r], pr.accumulate, bias, col);
          }
        }
      }
    }
  });
}

template <typename T>
void launch(const GemmArgs& g, cudaStream_t stream) {
  with_layouts(g, [&](auto a_k, auto b_k) {
    auto kernel = mma_gemm_kernel<T, decltype(a_k)::value, decltype(b_k)::value>;
    // Over 48 KiB of dynamic shared memory needs an opt-in (cheap; the attribute is per kernel, per device).
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    kernel<<<grid_for(g, kBM, kBN), kThreads, kSmemBytes, stream>>>(
        problem_of(g), operand_of<T>(g.a, g.m, false), operand_of<T>(g.b, g.n, true), static_cast<T*>(g.c),
        static_cast<const T*>(g.bias));
  });
}

}  // namespace

void launch_mma_gemm(const GemmArgs& args, cudaStream_t stream) {
  switch (args.dtype) {
    case DType::BFloat16: return launch<__nv_bfloat16>(args, stream);
    case DType::Float16: return launch<__half>(args, stream);
    case DType::Float32: return launch<float>(args, stream);
    case DType::Float64: return;  // no tensor-core path: launch_float64_gemm's
  }
}

}  // namespace fastops

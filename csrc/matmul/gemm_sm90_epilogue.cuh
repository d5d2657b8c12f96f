// Hopper GEMM: the epilogue (see gemm_sm90_config.cuh for the file map). A consumer's 64 x BN fp32 accumulators go
// out with the bias, the old C (when accumulating) and the fused activation applied and one rounding: through a
// swizzled staging buffer in shared memory and TMA stores (store_tile_tma), or directly from registers
// (store_tile_direct: accumulating, split-K partial sums, or C not 16-byte aligned). With split-K the partial sums
// are raw and reduce_splits_kernel runs this epilogue once over their sum.
#pragma once

#include <cstring>
#include <type_traits>

#include "activations/activation_math.h"
#include "common/cuda_ptx.cuh"
#include "common/cuda_utils.cuh"
#include "matmul/gemm_sm90_config.cuh"

namespace fastops::sm90 {

// Two adjacent elements of C (2-element aligned) as floats.
template <typename OutT>
__device__ __forceinline__ float2 load_pair(const OutT* p) {
  if constexpr (std::is_same_v<OutT, float>) {
    return *reinterpret_cast<const float2*>(p);
  } else if constexpr (std::is_same_v<OutT, __nv_bfloat16>) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(p));
  }
}

// v0 and v1 rounded to OutT, as its two-element vector type (float2, __nv_bfloat162, __half2).
template <typename OutT>
__device__ __forceinline__ auto round_pair(float v0, float v1) {
  if constexpr (std::is_same_v<OutT, float>) {
    return make_float2(v0, v1);
  } else if constexpr (std::is_same_v<OutT, __nv_bfloat16>) {
    return __floats2bfloat162_rn(v0, v1);
  } else {
    return __floats2half2_rn(v0, v1);
  }
}

// p[0] = v0 and p[1] = v1 (the second only when `both`), one store when `aligned`.
template <typename OutT>
__device__ __forceinline__ void write_pair(OutT* p, float v0, float v1, bool both, bool aligned) {
  if (both && aligned) {
    using Pair = decltype(round_pair<OutT>(v0, v1));
    *reinterpret_cast<Pair*>(p) = round_pair<OutT>(v0, v1);
    return;
  }
  p[0] = cuda::from_opmath<OutT>(v0);
  if (both) p[1] = cuda::from_opmath<OutT>(v1);
}

// What happens to a product on its way out: + bias, the optional pre-activation copy, + old C, the activation.
template <typename OutT>
struct Epilogue {
  const OutT* bias;  // [n] or null
  bool accumulate;
  bool fuse_act;
  Activation act;
  OutT* pre;  // the product before the bias (fuse_act only), or null

  __device__ __forceinline__ float finish(float v, float old) const {
    v += old;
    return fuse_act ? act::forward_dynamic(act, v) : v;
  }
};

// The products v0, v1 of C[row, col] and C[row, col + 1] through the epilogue, rounded once, within bounds.
template <typename OutT>
__device__ __forceinline__ void store_pair(OutT* c, int64_t ldc, int row, int col, int m, int n, float v0, float v1,
                                           bool pair_aligned, const Epilogue<OutT>& ep) {
  if (row >= m || col >= n) return;
  const bool both = col + 1 < n;
  const int64_t offset = static_cast<int64_t>(row) * ldc + col;
  if (ep.pre != nullptr) write_pair(ep.pre + offset, v0, v1, both, pair_aligned);
  if (ep.bias != nullptr) {
    v0 += cuda::to_opmath(ep.bias[col]);
    if (both) v1 += cuda::to_opmath(ep.bias[col + 1]);
  }
  OutT* p = c + offset;
  float old0 = 0.f, old1 = 0.f;
  if (ep.accumulate) {
    if (both && pair_aligned) {
      const float2 old = load_pair(p);
      old0 = old.x;
      old1 = old.y;
    } else {
      old0 = cuda::to_opmath(p[0]);
      if (both) old1 = cuda::to_opmath(p[1]);
    }
  }
  write_pair(p, ep.finish(v0, old0), ep.finish(v1, old1), both, pair_aligned);
}

// A consumer's accumulators stored from registers. Accumulator layout of wgmma m64nN: register 4j+2h+e holds row
// 16*warp + lane/4 + 8h, column 8j + 2*(lane%4) + e of the consumer's 64 x BN piece.
template <typename OutT, int BN>
__device__ __forceinline__ void store_tile_direct(const float (&acc)[BN / 2], OutT* c, int64_t ldc, int m, int n,
                                                  int consumer_row0, int col_base, bool pair_aligned,
                                                  const Epilogue<OutT>& ep, int warp, int lane) {
  const int row0 = consumer_row0 + warp * 16 + lane / 4;
  const int col0 = col_base + 2 * (lane % 4);
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      store_pair(c, ldc, row0 + 8 * h, col0 + 8 * j, m, n, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1], pair_aligned,
                 ep);
    }
  }
}

// Two outputs, rounded to OutT, into the staging buffer at shared-memory address `addr` (st.shared: the aligned
// dynamic shared-memory base is a generic pointer, through which the compiler would emit generic stores).
template <typename OutT>
__device__ __forceinline__ void put_pair(uint32_t addr, float v0, float v1) {
  const auto pair = round_pair<OutT>(v0, v1);
  if constexpr (sizeof(pair) == 8) {
    uint64_t bits;
    memcpy(&bits, &pair, sizeof(bits));
    asm volatile("st.shared.b64 [%0], %1;" ::"r"(addr), "l"(bits) : "memory");
  } else {
    uint32_t bits;
    memcpy(&bits, &pair, sizeof(bits));
    asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(bits) : "memory");
  }
}

// Epilogue through shared memory (no accumulate): per chunk of one 128-byte swizzle row of columns, the warpgroup
// writes its 64 rows, rounded, into a staging buffer in TMA's 128-byte swizzle (conflict-free: the 8 rows one store
// instruction covers land in 8 different 16-byte columns), and one thread stores the chunk with a TMA store, which
// writes whole lines and clips the edges, while the warpgroup fills the other buffer. With a pre-activation copy,
// each chunk is staged twice: the raw product to `map_pre`, then the output to `map_c`. The last stores complete
// during the next tile's mainloop. `stores` counts the chunks this warpgroup has stored so far (over all its tiles:
// an edge tile may store an odd number), and picks the buffer.
template <typename OutT, int BN>
__device__ __forceinline__ void store_tile_tma(const float (&acc)[BN / 2], const CUtensorMap* map_c,
                                               const CUtensorMap* map_pre, unsigned char* buffers, int& stores,
                                               int row_base, int col_base, int n, const Epilogue<OutT>& ep,
                                               int consumer, int warp, int lane) {
  constexpr int kChunkCols = kAtomRowBytes / static_cast<int>(sizeof(OutT));
  constexpr int kChunks = BN / kChunkCols;
  const bool issuer = threadIdx.x % 128 == 0;
  const int local_row0 = warp * 16 + lane / 4;
#pragma unroll
  for (int chunk = 0; chunk < kChunks; ++chunk) {
    const int chunk_col = col_base + chunk * kChunkCols;
    if (chunk_col >= n) break;  // uniform over the warpgroup
    // Pass 0 stages the pre-activation copy (when kept), pass 1 the output. Not unrolled: the passes differ only in
    // what they stage, and one copy of the epilogue math is enough.
#pragma unroll 1
    for (int pass = ep.pre != nullptr ? 0 : 1; pass < 2; ++pass) {
      const bool output = pass == 1;
      unsigned char* buffer = buffers + (stores++ % kStoreBuffers) * kStoreChunkBytes;
      const uint32_t buffer_addr = ptx::smem_u32(buffer);
      // The store issued kStoreBuffers chunks ago read this buffer; wait until it has.
      if (issuer) ptx::tma_store_wait_read<kStoreBuffers - 1>();
      ptx::warpgroup_sync(1 + consumer);
#pragma unroll
      for (int jj = 0; jj < kChunkCols / 8; ++jj) {
        const int j = chunk * (kChunkCols / 8) + jj;  // accumulator column group: columns 8j .. 8j + 7 of the tile
        const int col_in_chunk = 8 * jj + 2 * (lane % 4);
        const int col = chunk_col + col_in_chunk;
        float bias0 = 0.f, bias1 = 0.f;
        if (output && ep.bias != nullptr) {
          if (col < n) bias0 = cuda::to_opmath(ep.bias[col]);
          if (col + 1 < n) bias1 = cuda::to_opmath(ep.bias[col + 1]);
        }
        const int byte = col_in_chunk * static_cast<int>(sizeof(OutT));
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = local_row0 + 8 * h;
          const uint32_t addr = buffer_addr + r * kAtomRowBytes + ((((byte >> 4) ^ (r & 7)) << 4) | (byte & 15));
          float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
          if (output) {
            v0 = ep.finish(v0 + bias0, 0.f);
            v1 = ep.finish(v1 + bias1, 0.f);
          }
          put_pair<OutT>(addr, v0, v1);
        }
      }
      ptx::fence_async_shared();
      ptx::warpgroup_sync(1 + consumer);
      if (issuer) {
        ptx::tma_store_2d(output ? map_c : map_pre, buffer, chunk_col, row_base);
        ptx::tma_store_commit();
      }
    }
  }
}

// out[i, j] = the epilogue of (sum over splits of workspace[s, i, j]): + bias[j], + the old out[i, j] when
// accumulating, the activation when fused (and its pre-activation copy), rounded once to the output dtype.
template <typename OutT>
__global__ void reduce_splits_kernel(const float* __restrict__ workspace, int splits, int64_t m, int64_t n,
                                     OutT* __restrict__ out, int64_t ldc, const Epilogue<OutT> ep) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / n, col = i % n;
    const int64_t offset = row * ldc + col;
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += workspace[s * total + i];
    if (ep.pre != nullptr) ep.pre[offset] = cuda::from_opmath<OutT>(sum);
    if (ep.bias != nullptr) sum += cuda::to_opmath(ep.bias[col]);
    out[offset] = cuda::from_opmath<OutT>(ep.finish(sum, ep.accumulate ? cuda::to_opmath(out[offset]) : 0.f));
  }
}

}  // namespace fastops::sm90

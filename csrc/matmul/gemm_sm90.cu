// Hopper GEMM (sm_90a): see gemm_sm90.h for the contract.
//
// Structure (one persistent CTA per SM, 384 threads = 3 warpgroups):
//   warpgroup 0  producer: one thread walks the CTA's tiles and, per BK slice, waits for a free ring stage, arms its
//                "full" mbarrier with the byte count and issues TMA loads of the A and B slices into it.
//   warpgroups 1-2 consumers: each owns 64 rows of the BM=128 x BN tile; per stage it waits on "full" and issues
//                kKSteps wgmma.m64nBNk16 (k8 for TF32) from shared memory as one group, keeping the previous stage's group in
//                flight meanwhile; once that one has completed, each warp arrives on its stage's "empty".
//                After the last K slice it adds the bias (and, when accumulating, the old C), applies the fused
//                activation and stores its 64 x BN fp32 accumulators as C's dtype: through a swizzled staging
//                buffer in shared memory and TMA stores (store_tile_tma; the pre-activation copy too), or, when
//                accumulating, writing split-K partial sums or when C is not 16-byte aligned, directly from
//                registers (store_pair).
// setmaxnreg moves registers from the producer (40) to the consumers (232), which hold BN/2 accumulators each.
// Large problems run as clusters of 2 CTAs on vertically adjacent tiles (same N-block): each CTA loads half of the
// shared B slice and multicasts it to both, so a CTA pulls 32 KiB per stage from L2 instead of 48; a stage is then
// free only when the consumers of both CTAs have released it.
// Shared memory uses TMA's 128-byte swizzle, which is also the layout wgmma reads without bank conflicts.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstring>

#include "common/cuda_utils.cuh"
#include "common/env.h"
#include "matmul/gemm_sm90.h"
#include "matmul/wgmma_ops.cuh"

namespace fastops {
namespace sm90 {

constexpr int kBM = 128;
constexpr int kAtomRowBytes = 128;           // one row of the 128-byte swizzle atom
// A stage holds one swizzle row of K per operand row: 64 16-bit elements, or 32 float32 (TF32).
template <typename T>
constexpr int kBK = kAtomRowBytes / static_cast<int>(sizeof(T));
// Each wgmma reads 32 bytes of every K-major row (k16 for 16-bit, k8 for TF32), so a stage is 4 instructions.
[[maybe_unused]] constexpr int kKSteps = kAtomRowBytes / 32;
// MN-major operands (16-bit only: wgmma reads TF32 K-major only) are loaded as 64 x 64 boxes: 64 k-rows of one
// swizzle row (64 elements) along M or N.
[[maybe_unused]] constexpr int kAtomElems = 64;
constexpr int kBoxBytes = 64 * kAtomRowBytes;
constexpr int kConsumers = 2;
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kTileGroupM = 8;               // tiles of 8 consecutive M-blocks share B slices in L2

// The TMA-store epilogue stages each consumer's 64 output rows in chunks of one 128-byte swizzle row per row
// (64 16-bit or 32 float32 columns: 8 KiB), double-buffered so one chunk is written while the previous one is stored.
constexpr int kStoreChunkBytes = 64 * kAtomRowBytes;
constexpr int kStoreBuffers = 2;

template <int BN>
struct Config {
  static constexpr int kABytes = kBM * kAtomRowBytes;
  static constexpr int kBBytes = BN * kAtomRowBytes;
  static constexpr int kStageBytes = kABytes + kBBytes;
  // As many stages as fit in ~192 KiB: 4 for BN=256, 6 for BN=128.
  static constexpr int kStages = (192 * 1024) / kStageBytes;
  static constexpr int kRingBytes = kStages * kStageBytes;
  static constexpr int kStoreBytes = kConsumers * kStoreBuffers * kStoreChunkBytes;  // 32 KiB
  // Stage buffers first (each 1024-byte aligned, as the 128-byte swizzle pattern repeats every 1024 bytes), then the
  // epilogue's store buffers (1024-byte aligned too), then the mbarriers; the extra 1024 bytes let the kernel align
  // the dynamic shared-memory base itself. 225 KiB of the H100's 227.
  static constexpr int kSmemBytes = kRingBytes + kStoreBytes + 2 * kStages * 8 + 1024;
};

// ---- PTX wrappers ----

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
  }
}

__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int inner, int outer) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
      ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smem_u32(bar))
      : "memory");
}

// As tma_load_2d, but the box lands at the same shared-memory offset in every CTA of `cta_mask` (bit r: cluster
// rank r), each CTA's mbarrier at `bar`'s offset receiving the byte count.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const CUtensorMap* map, uint64_t* bar, int inner,
                                                      int outer, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;"
      ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smem_u32(bar)),
      "h"(cta_mask)
      : "memory");
}

// Arrives on the mbarrier at `bar`'s offset in the shared memory of cluster CTA `rank` (this CTA's own included).
// The default (.release.cta) semantics, as CUTLASS's ClusterBarrier: what the arrival publishes is that this warp's
// wgmmas (async proxy, already complete) no longer read the stage. An explicit .release.cluster made ptxas put
// MEMBAR.ALL.GPU before every arrival in the mainloop.
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t* bar, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n"
      ::"r"(smem_u32(bar)), "r"(rank)
      : "memory");
}

__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// Every thread of every CTA in the cluster; orders shared-memory effects cluster-wide.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}

// TMA store of one box from shared memory; rows/columns outside the tensor are not written.
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, const void* src, int inner, int outer) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];"
               ::"l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smem_u32(src))
               : "memory");
}
__device__ __forceinline__ void tma_store_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
// Waits until at most `Pending` committed stores still read their shared-memory source.
template <int Pending>
__device__ __forceinline__ void tma_store_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(Pending) : "memory");
}
__device__ __forceinline__ void tma_store_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
// Makes this thread's generic shared-memory writes visible to the async proxy (TMA, wgmma).
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// Synchronises the 128 threads of one warpgroup (named barrier `id`; 0 is __syncthreads').
__device__ __forceinline__ void warpgroup_sync(int id) { asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory"); }

// wgmma shared-memory matrix descriptor with 128-byte swizzle. Field units are 16 bytes.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t leading_bytes, uint32_t stride_bytes) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(leading_bytes >> 4) << 16) |
         (static_cast<uint64_t>(stride_bytes >> 4) << 32) | (1ull << 62);
}

// K-major operand (rows of one 128-byte swizzle row of K): consecutive 8-row groups are 1024 B apart, the leading
// offset is unused with swizzling, and the k-th wgmma step starts 32 B further along the row.
__device__ __forceinline__ uint64_t k_major_desc(uint32_t tile, int kstep) {
  return smem_desc(tile + kstep * 32, 16, 8 * kAtomRowBytes);
}

// MN-major operand (rows of 64 M- or N-elements, one row per k): 64-element atoms along MN are one TMA box
// (kBoxBytes) apart, 8-row k groups 1024 B apart, and the k-th 16-element step starts 16 rows further.
__device__ __forceinline__ uint64_t mn_major_desc(uint32_t tile, int kstep) {
  return smem_desc(tile + kstep * 16 * kAtomRowBytes, kBoxBytes, 8 * kAtomRowBytes);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Waits until at most `Pending` committed wgmma groups of this warpgroup are still running.
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(Pending) : "memory");
}

// Keeps the compiler from moving accumulator reads or writes across the asynchronous wgmma boundary.
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

template <typename T, int BN, int TransA, int TransB>
__device__ __forceinline__ void wgmma_tile(float (&acc)[BN / 2], uint64_t da, uint64_t db, int scale_d) {
  if constexpr (std::is_same_v<T, float>) {
    static_assert(TransA == 0 && TransB == 0, "wgmma reads TF32 operands K-major only");
    if constexpr (BN == 256) wgmma_m64n256k8_tf32(acc, da, db, scale_d);
    else wgmma_m64n128k8_tf32(acc, da, db, scale_d);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if constexpr (BN == 256) wgmma_m64n256k16_bf16<TransA, TransB>(acc, da, db, scale_d);
    else wgmma_m64n128k16_bf16<TransA, TransB>(acc, da, db, scale_d);
  } else {
    if constexpr (BN == 256) wgmma_m64n256k16_f16<TransA, TransB>(acc, da, db, scale_d);
    else wgmma_m64n128k16_f16<TransA, TransB>(acc, da, db, scale_d);
  }
}

// Tile t of the persistent walk -> (m unit, n block), grouped so kTileGroupM M-units sweep each N-block together. An
// M-unit is one M-block, or with clusters the cluster_m vertically adjacent M-blocks a cluster computes together.
struct TileOrder {
  int tiles_m, tiles_n;
  __device__ __forceinline__ void at(int t, int& mb, int& nb) const {
    const int per_group = kTileGroupM * tiles_n;
    const int first_m = (t / per_group) * kTileGroupM;
    const int group_m = min(tiles_m - first_m, kTileGroupM);
    const int in_group = t % per_group;
    mb = first_m + in_group % group_m;
    nb = in_group / group_m;
  }
  __device__ __forceinline__ int count() const { return tiles_m * tiles_n; }
};

// The persistent walk's unit of work: an output tile, or with split-K one K-range of it (its partial sums go to
// the split's own fp32 slice of the workspace; a second kernel adds the slices). The CTAs of a cluster walk the same
// units in step (they share every B slice), each taking the M-block of its rank; with an odd number of M-blocks the
// last unit's upper CTA computes a tile wholly below C (zero-filled A, nothing stored) so its partner gets its B.
struct Schedule {
  TileOrder order;
  int splits;
  int k_tiles;
  int k_tiles_per_split;
  int cluster_m;  // CTAs per cluster (1 or 2)
  int rank;       // this CTA's rank in its cluster
  __device__ __forceinline__ int count() const { return order.count() * splits; }
  __device__ __forceinline__ int first() const { return blockIdx.x / cluster_m; }
  __device__ __forceinline__ int stride() const { return gridDim.x / cluster_m; }
  __device__ __forceinline__ void at(int t, int& mb, int& nb, int& split, int& kt_begin, int& kt_end) const {
    split = t % splits;
    int unit;
    order.at(t / splits, unit, nb);
    mb = unit * cluster_m + rank;
    kt_begin = split * k_tiles_per_split;
    kt_end = min(k_tiles, kt_begin + k_tiles_per_split);
  }
};

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
    return fuse_act ? act::forward_dynamic(act, v, 0.f) : v;
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
      const uint32_t buffer_addr = smem_u32(buffer);
      // The store issued kStoreBuffers chunks ago read this buffer; wait until it has.
      if (issuer) tma_store_wait_read<kStoreBuffers - 1>();
      warpgroup_sync(1 + consumer);
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
      fence_async_shared();
      warpgroup_sync(1 + consumer);
      if (issuer) {
        tma_store_2d(output ? map_c : map_pre, buffer, chunk_col, row_base);
        tma_store_commit();
      }
    }
  }
}

// The producer: one thread walks the CTA's work units and, per BK slice, waits for a free ring stage, arms its "full"
// mbarrier with the stage's byte count and issues TMA loads of the A and B slices into it. In a cluster it loads its
// own A and half of B, multicast to both CTAs (each CTA's "full" barrier expects the whole stage: its A, and B's
// halves from both producers).
template <typename T, int BN, bool AKMajor, bool BKMajor>
__device__ __forceinline__ void produce_stages(const CUtensorMap& map_a, const CUtensorMap& map_b,
                                               unsigned char* smem, uint64_t* full, uint64_t* empty,
                                               const Schedule& schedule) {
  using Cfg = Config<BN>;
  const bool clustered = schedule.cluster_m > 1;
  constexpr uint16_t kBothCtas = 0b11;
  int stage = 0;
  uint32_t phase = 0;
  for (int t = schedule.first(); t < schedule.count(); t += schedule.stride()) {
    int mb, nb, split, kt_begin, kt_end;
    schedule.at(t, mb, nb, split, kt_begin, kt_end);
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      // A fresh barrier's "previous phase" counts as complete, so the first pass over the ring does not block.
      mbar_wait(&empty[stage], phase ^ 1);
      unsigned char* a_tile = smem + stage * Cfg::kStageBytes;
      unsigned char* b_tile = a_tile + Cfg::kABytes;
      mbar_arrive_expect_tx(&full[stage], Cfg::kStageBytes);
      const int k0 = kt * kBK<T>;
      if constexpr (AKMajor) {
        tma_load_2d(a_tile, &map_a, &full[stage], k0, mb * kBM);
      } else {
#pragma unroll
        for (int i = 0; i < kBM / kAtomElems; ++i)
          tma_load_2d(a_tile + i * kBoxBytes, &map_a, &full[stage], mb * kBM + i * kAtomElems, k0);
      }
      if (clustered) {
        // This CTA's half of the BN rows (K-major: one box of BN/2 rows) or BN/2 columns (MN-major: BN/128 boxes).
        const int half = schedule.rank;
        if constexpr (BKMajor) {
          tma_load_2d_multicast(b_tile + half * (BN / 2) * kAtomRowBytes, &map_b, &full[stage], k0,
                                nb * BN + half * (BN / 2), kBothCtas);
        } else {
#pragma unroll
          for (int j = 0; j < BN / kAtomElems / 2; ++j) {
            const int box = half * (BN / kAtomElems / 2) + j;
            tma_load_2d_multicast(b_tile + box * kBoxBytes, &map_b, &full[stage], nb * BN + box * kAtomElems, k0,
                                  kBothCtas);
          }
        }
      } else if constexpr (BKMajor) {
        tma_load_2d(b_tile, &map_b, &full[stage], k0, nb * BN);
      } else {
#pragma unroll
        for (int j = 0; j < BN / kAtomElems; ++j)
          tma_load_2d(b_tile + j * kBoxBytes, &map_b, &full[stage], nb * BN + j * kAtomElems, k0);
      }
      if (++stage == Cfg::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
}

// A consumer warpgroup: owns rows [64 * consumer, 64 * consumer + 64) of each tile. Per stage it waits on "full" and
// issues the stage's wgmmas as one group, keeping the previous stage's group in flight meanwhile; once that one has
// completed, each warp releases its stage (in a cluster, to both CTAs' producers, as both wrote into it). After the
// last K slice, the epilogue.
template <typename T, typename OutT, int BN, bool AKMajor, bool BKMajor>
__device__ __forceinline__ void consume_stages(const CUtensorMap& map_c, const CUtensorMap& map_pre, OutT* c,
                                               int64_t ldc, int m, int n,
                                               const Epilogue<OutT>& ep, bool tma_store, int64_t split_stride,
                                               unsigned char* smem, unsigned char* store_buffers, uint64_t* full,
                                               uint64_t* empty, const Schedule& schedule, int consumer) {
  using Cfg = Config<BN>;
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x % 128) / 32;
  const bool pair_aligned = (ldc % 2 == 0) && (reinterpret_cast<uintptr_t>(c) % (2 * sizeof(OutT)) == 0);
  // Each warp releases a stage once its own wgmma wait has returned, so no warp can still be reading it.
  auto release = [&](int s) {
    if (lane != 0) return;
    if (schedule.cluster_m == 1) {
      mbar_arrive(&empty[s]);
    } else {
      for (int r = 0; r < schedule.cluster_m; ++r) mbar_arrive_cluster(&empty[s], r);
    }
  };
  float acc[BN / 2];
  int tma_stores = 0;  // chunks this warpgroup has stored through the TMA-store epilogue
  int stage = 0;
  uint32_t phase = 0;
  for (int t = schedule.first(); t < schedule.count(); t += schedule.stride()) {
    int mb, nb, split, kt_begin, kt_end;
    schedule.at(t, mb, nb, split, kt_begin, kt_end);
    OutT* c_split = c + split * split_stride;
    // One K slice's wgmmas stay in flight while the next slice's are issued (the tensor cores never drain between
    // slices); a stage is released once the wgmmas that read it have completed, i.e. one slice later.
    int reading = -1;  // the stage the in-flight wgmmas read
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      mbar_wait(&full[stage], phase);
      const uint32_t a_tile = smem_u32(smem + stage * Cfg::kStageBytes);
      const uint32_t b_tile = a_tile + Cfg::kABytes;
      // This consumer's 64 rows of A: 64 K-major rows, or the consumer-th 64-wide box of an MN-major tile.
      const uint32_t a_rows = a_tile + consumer * (AKMajor ? kAtomElems * kAtomRowBytes : kBoxBytes);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const uint64_t da = AKMajor ? k_major_desc(a_rows, ks) : mn_major_desc(a_rows, ks);
        const uint64_t db = BKMajor ? k_major_desc(b_tile, ks) : mn_major_desc(b_tile, ks);
        // scale_d = 0 on the tile's first product zeroes the accumulators.
        wgmma_tile<T, BN, AKMajor ? 0 : 1, BKMajor ? 0 : 1>(acc, da, db, (kt > kt_begin || ks > 0) ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait<1>();  // the previous slice's group has completed
      fence_registers(acc);
      if (reading >= 0) release(reading);
      reading = stage;
      if (++stage == Cfg::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    wgmma_wait<0>();
    fence_registers(acc);
    if (reading >= 0) release(reading);
    // Accumulator layout of wgmma m64nN: register 4j+2h+e holds row 16*warp + lane/4 + 8h, column 8j + 2*(lane%4) + e.
    const int consumer_row0 = mb * kBM + consumer * 64;
    if (tma_store) {
      if (consumer_row0 < m) {  // uniform over the warpgroup
        store_tile_tma<OutT, BN>(acc, &map_c, &map_pre, store_buffers + consumer * kStoreBuffers * kStoreChunkBytes,
                                 tma_stores, consumer_row0, nb * BN, n, ep, consumer, warp, lane);
      }
      continue;
    }
    const int row0 = consumer_row0 + warp * 16 + lane / 4;
    const int col0 = nb * BN + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        store_pair(c_split, ldc, row0 + 8 * h, col0 + 8 * j, m, n, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1],
                   pair_aligned, ep);
      }
    }
  }
  // Shared memory must outlive the stores that read it, and C must be complete when the kernel is.
  if (tma_store && threadIdx.x % 128 == 0) tma_store_wait_all();
}

template <typename T, typename OutT, int BN, bool AKMajor, bool BKMajor>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                const __grid_constant__ CUtensorMap map_c, const __grid_constant__ CUtensorMap map_pre, OutT* c,
                int64_t ldc, int m, int n, int k,
                const Epilogue<OutT> ep, bool tma_store, int splits, int k_tiles_per_split, int64_t split_stride,
                int cluster_m) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  // Built into the sm_80 image too (one .cu for all targets), but only ever launched on sm_90a devices.
  __trap();
#else
  using Cfg = Config<BN>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem =
      reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  unsigned char* store_buffers = smem + Cfg::kRingBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(store_buffers + Cfg::kStoreBytes);
  uint64_t* empty = full + Cfg::kStages;

  const bool clustered = cluster_m > 1;
  const int tiles_m = (m + kBM - 1) / kBM;
  const Schedule schedule{{(tiles_m + cluster_m - 1) / cluster_m, (n + BN - 1) / BN}, splits,
                          (k + kBK<T> - 1) / kBK<T>, k_tiles_per_split, cluster_m,
                          clustered ? static_cast<int>(cluster_ctarank()) : 0};

  if (threadIdx.x == 0) {
    for (int s = 0; s < Cfg::kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumers * 4 * cluster_m);  // one arrival per consumer warp of every CTA it feeds
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  // In a cluster, the partner's barriers must be initialised before this CTA's multicasts and arrivals reach them.
  if (clustered) cluster_sync();
  else __syncthreads();

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (threadIdx.x == 0) produce_stages<T, BN, AKMajor, BKMajor>(map_a, map_b, smem, full, empty, schedule);
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    consume_stages<T, OutT, BN, AKMajor, BKMajor>(map_c, map_pre, c, ldc, m, n, ep, tma_store, split_stride, smem,
                                                  store_buffers, full, empty, schedule, warpgroup - 1);
  }
  // A CTA leaves only once its partner no longer multicasts into its shared memory or arrives on its barriers.
  if (clustered) cluster_sync();
#endif
}

// ---- host side ----

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

// A 2-D row-major matrix [rows, cols] of T (cols contiguous, rows `ld` elements apart) moved in boxes of
// [box_rows, one 128-byte swizzle row]: operands read out-of-range rows/columns as zero, which pads edge tiles and K;
// stores to C skip them.
template <typename T>
bool encode_tile(CUtensorMap* map, const void* base, int64_t rows, int64_t cols, int64_t ld, int box_rows) {
  const CUtensorMapDataType type = std::is_same_v<T, float>            ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                                   : std::is_same_v<T, __nv_bfloat16> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                      : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld) * sizeof(T)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBK<T>), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  auto encode = tensor_map_encoder();
  return encode != nullptr &&
         encode(map, type, 2, const_cast<void*>(base), dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Where the kernel writes: C itself through the problem's epilogue, or with split-K the fp32 workspace slices, raw
// (the reduce kernel then runs the epilogue once, so that bias and old C are added once rather than once per split).
template <typename OutT>
struct Target {
  OutT* c;
  int64_t ldc;
  Epilogue<OutT> ep;
  bool tma_store;  // the epilogue through shared memory and TMA stores (store_tile_tma), else direct stores
  int cluster_m;   // 2: clusters of 2 CTAs sharing (multicasting) each B slice; 1: no clusters
  int splits;
  int k_tiles_per_split;
  int64_t split_stride;
};

template <typename OutT>
Epilogue<OutT> problem_epilogue(const GemmSm90Problem& p) {
  return {static_cast<const OutT*>(p.bias), p.accumulate, p.fuse_act, p.act, static_cast<OutT*>(p.pre)};
}

template <typename T, typename OutT, int BN, bool AKMajor, bool BKMajor>
cudaError_t launch(const GemmSm90Problem& p, const Target<OutT>& target, int num_sms, cudaStream_t stream) {
  CUtensorMap map_a, map_b;
  // In a cluster each CTA loads half of a K-major B slice: boxes of BN / 2 rows.
  const bool ok = (AKMajor ? encode_tile<T>(&map_a, p.a, p.m, p.k, p.lda, kBM)
                           : encode_tile<T>(&map_a, p.a, p.k, p.m, p.lda, kBK<T>)) &&
                  (BKMajor ? encode_tile<T>(&map_b, p.b, p.n, p.k, p.ldb, BN / target.cluster_m)
                           : encode_tile<T>(&map_b, p.b, p.k, p.n, p.ldb, kBK<T>));
  // The TMA-store epilogue's C and pre-activation copy, in boxes of 64 rows (one consumer's) x 128 bytes.
  CUtensorMap map_c{}, map_pre{};
  const bool store_maps_ok =
      !target.tma_store || (encode_tile<OutT>(&map_c, target.c, p.m, p.n, target.ldc, 64) &&
                            (target.ep.pre == nullptr ||
                             encode_tile<OutT>(&map_pre, target.ep.pre, p.m, p.n, target.ldc, 64)));
  if (!ok || !store_maps_ok) return cudaErrorInvalidValue;
  auto kernel = gemm_kernel<T, OutT, BN, AKMajor, BKMajor>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Config<BN>::kSmemBytes);
  if (err != cudaSuccess) return err;
  // Work units: tiles (pairs of vertically adjacent tiles with clusters) times K splits; one CTA (cluster) per SM
  // (per pair of SMs the hardware can co-schedule) walks them.
  const int cluster_m = target.cluster_m;
  const int64_t units =
      cuda::ceil_div(cuda::ceil_div(p.m, kBM), cluster_m) * cuda::ceil_div(p.n, BN) * target.splits;
  cudaLaunchAttribute cluster_dim;
  cluster_dim.id = cudaLaunchAttributeClusterDimension;
  cluster_dim.val.clusterDim.x = static_cast<unsigned>(cluster_m);
  cluster_dim.val.clusterDim.y = cluster_dim.val.clusterDim.z = 1;
  cudaLaunchConfig_t config{};
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = Config<BN>::kSmemBytes;
  config.stream = stream;
  config.attrs = &cluster_dim;
  config.numAttrs = cluster_m > 1 ? 1 : 0;
  int resident = num_sms;
  if (cluster_m > 1) {
    // How many clusters the GPCs co-schedule, which is not always num_sms / 2. A host-side query; clusters are only
    // taken by problems of at least num_sms 128 x 256 tiles, i.e. tens of microseconds of GPU work.
    config.gridDim = dim3(static_cast<unsigned>(num_sms - num_sms % cluster_m));
    err = cudaOccupancyMaxActiveClusters(&resident, kernel, &config);
    if (err != cudaSuccess) return err;
    if (resident == 0) return cudaErrorInvalidConfiguration;
  }
  config.gridDim = dim3(static_cast<unsigned>(cluster_m * std::min<int64_t>(units, resident)));
  return cudaLaunchKernelEx(&config, kernel, map_a, map_b, map_c, map_pre, target.c, target.ldc,
                            static_cast<int>(p.m), static_cast<int>(p.n), static_cast<int>(p.k), target.ep,
                            target.tma_store, target.splits, target.k_tiles_per_split, target.split_stride, cluster_m);
}

template <typename T, typename OutT, int BN>
cudaError_t launch_layout(const GemmSm90Problem& p, const Target<OutT>& target, int num_sms, cudaStream_t stream) {
  // TF32 operands are K-major (gemm_sm90_unsupported_reason turns the rest away).
  if constexpr (std::is_same_v<T, float>) {
    return launch<T, OutT, BN, true, true>(p, target, num_sms, stream);
  } else {
    if (p.a_k_major && p.b_k_major) return launch<T, OutT, BN, true, true>(p, target, num_sms, stream);
    if (p.a_k_major) return launch<T, OutT, BN, true, false>(p, target, num_sms, stream);
    if (p.b_k_major) return launch<T, OutT, BN, false, true>(p, target, num_sms, stream);
    return launch<T, OutT, BN, false, false>(p, target, num_sms, stream);
  }
}

// Bytes of one input element: 4 for float32 (TF32), 2 for the 16-bit types.
int input_bytes(const GemmSm90Problem& p) { return p.in_dtype == DType::Float32 ? 4 : 2; }

// K elements of one stage (kBK of the input type) and the stages K spans.
int64_t k_tiles(const GemmSm90Problem& p) { return cuda::ceil_div(p.k, kAtomRowBytes / input_bytes(p)); }

// 128 x 256 tiles reuse each loaded byte most; 128 x 128 when the wide tiles cannot fill the SMs.
int tile_n(const GemmSm90Problem& p, int num_sms) {
  return cuda::ceil_div(p.m, kBM) * cuda::ceil_div(p.n, 256) >= num_sms ? 256 : 128;
}

// Split-K plan: with fewer than half as many 128 x 128 tiles as SMs (decode-like M <= 128 shapes), K is cut into
// slices of at least 4 BK steps so that every SM streams its share of the weights; 1 means no split.
int plan_splits(const GemmSm90Problem& p, int num_sms, int& k_tiles_per_split) {
  const int64_t tiles = cuda::ceil_div(p.m, kBM) * cuda::ceil_div(p.n, 128);
  const int64_t stages = k_tiles(p);
  k_tiles_per_split = static_cast<int>(stages);
  if (2 * tiles > num_sms) return 1;
  const int64_t wanted = std::min<int64_t>({num_sms / tiles, stages / 4, 16});
  if (wanted < 2) return 1;
  k_tiles_per_split = static_cast<int>(cuda::ceil_div(stages, wanted));
  return static_cast<int>(cuda::ceil_div(stages, k_tiles_per_split));  // every slice non-empty
}

// The TMA-store epilogue takes problems that do not read the old C (accumulate), whose C and pre-activation copy TMA
// can address (16-byte aligned bases and row stride). FASTOPS_SM90_DIRECT_STORE=1 turns it off: a wrong result can
// be pinned on (or cleared of) the epilogue, and the benchmark's ladder times the kernel without it.
template <typename OutT>
bool use_tma_store(const GemmSm90Problem& p) {
  return !env_flag("FASTOPS_SM90_DIRECT_STORE") && !p.accumulate && cuda::is_aligned16(p.c) &&
         (p.pre == nullptr || cuda::is_aligned16(p.pre)) && (p.ldc * static_cast<int64_t>(sizeof(OutT))) % 16 == 0;
}

// Clusters of 2 (B multicast) for the 128 x 256 tiles of large problems, which have at least two M-blocks;
// FASTOPS_SM90_NO_CLUSTER=1 turns them off (gpu_check.sh's bisect, the benchmark's ladder).
int cluster_size(const GemmSm90Problem& p, int bn) {
  return !env_flag("FASTOPS_SM90_NO_CLUSTER") && bn == 256 && p.m > kBM ? 2 : 1;
}

template <typename T, typename OutT>
cudaError_t launch_direct(const GemmSm90Problem& p, int num_sms, cudaStream_t stream) {
  const int bn = tile_n(p, num_sms);
  const Target<OutT> target{static_cast<OutT*>(p.c), p.ldc, problem_epilogue<OutT>(p), use_tma_store<OutT>(p),
                            cluster_size(p, bn), 1, static_cast<int>(k_tiles(p)), 0};
  if (bn == 256) return launch_layout<T, OutT, 256>(p, target, num_sms, stream);
  return launch_layout<T, OutT, 128>(p, target, num_sms, stream);
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

template <typename T, typename OutT>
cudaError_t launch_out(const GemmSm90Problem& p, int num_sms, cudaStream_t stream) {
  int k_tiles_per_split;
  const int splits = plan_splits(p, num_sms, k_tiles_per_split);
  if (splits == 1) return launch_direct<T, OutT>(p, num_sms, stream);
  if (p.workspace == nullptr) return cudaErrorInvalidValue;
  const Target<float> target{static_cast<float*>(p.workspace), p.n, Epilogue<float>{}, false, 1, splits,
                             k_tiles_per_split, p.m * p.n};
  cudaError_t err = launch_layout<T, float, 128>(p, target, num_sms, stream);
  if (err != cudaSuccess) return err;
  const int64_t blocks = std::min<int64_t>(cuda::ceil_div(p.m * p.n, 256), 4 * num_sms);
  reduce_splits_kernel<OutT><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      static_cast<const float*>(p.workspace), splits, p.m, p.n, static_cast<OutT*>(p.c), p.ldc,
      problem_epilogue<OutT>(p));
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_in(const GemmSm90Problem& p, int num_sms, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    return p.out_dtype == DType::Float32 ? launch_out<T, float>(p, num_sms, stream) : cudaErrorInvalidValue;
  } else {
    switch (p.out_dtype) {
      case DType::Float32: return launch_out<T, float>(p, num_sms, stream);
      case DType::BFloat16: return launch_out<T, __nv_bfloat16>(p, num_sms, stream);
      case DType::Float16: return launch_out<T, __half>(p, num_sms, stream);
      default: return cudaErrorInvalidValue;
    }
  }
}

}  // namespace sm90

const char* gemm_sm90_unsupported_reason(const GemmSm90Problem& p) {
  if (p.in_dtype == DType::Float32) {
    if (!p.a_k_major || !p.b_k_major) return "TF32 operands are not both K-major (wgmma reads TF32 K-major only)";
    if (p.out_dtype != DType::Float32) return "TF32 output is not float32";
  } else if (p.in_dtype != DType::BFloat16 && p.in_dtype != DType::Float16) {
    return "inputs are neither 16-bit floats nor float32 (TF32)";
  }
  if (p.out_dtype == DType::Float64) return "float64 output";
  if (p.m <= 0 || p.n <= 0 || p.k <= 0) return "empty problem";
  if (p.m >= (int64_t(1) << 31) || p.n >= (int64_t(1) << 31) || p.k >= (int64_t(1) << 31))
    return "a dimension reaches 2^31 (TMA coordinates are 32-bit)";
  if (!cuda::is_aligned16(p.a) || !cuda::is_aligned16(p.b)) return "A or B is not 16-byte aligned";
  const int bytes = sm90::input_bytes(p);
  if ((p.lda * bytes) % 16 != 0 || (p.ldb * bytes) % 16 != 0)
    return "a row stride of A or B is not a multiple of 16 bytes";
  if (sm90::tensor_map_encoder() == nullptr) return "the driver does not provide cuTensorMapEncodeTiled";
  return nullptr;
}

int64_t gemm_sm90_workspace_elems(const GemmSm90Problem& p, int num_sms) {
  int k_tiles_per_split;
  const int splits = sm90::plan_splits(p, num_sms, k_tiles_per_split);
  return splits == 1 ? 0 : splits * p.m * p.n;
}

cudaError_t gemm_sm90(const GemmSm90Problem& p, int num_sms, cudaStream_t stream) {
  if (p.in_dtype == DType::Float32) return sm90::launch_in<float>(p, num_sms, stream);
  if (p.in_dtype == DType::BFloat16) return sm90::launch_in<__nv_bfloat16>(p, num_sms, stream);
  return sm90::launch_in<__half>(p, num_sms, stream);
}

}  // namespace fastops

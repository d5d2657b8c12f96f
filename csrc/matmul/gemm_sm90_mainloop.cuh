// Hopper GEMM: the mainloop (see gemm_sm90_config.cuh for the file map). A producer thread fills a ring of
// shared-memory stages with TMA loads; each consumer warpgroup waits on a stage, issues its wgmmas and releases it.
#pragma once

#include <type_traits>

#include "common/cuda_ptx.cuh"
#include "matmul/gemm_sm90_config.cuh"
#include "matmul/gemm_sm90_scheduler.cuh"
#include "matmul/wgmma_ops.cuh"

namespace fastops::sm90 {

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

// A position in the ring of stages: the stage and the phase its barriers are in. Producer and consumers walk the
// same sequence.
template <int BN>
struct RingCursor {
  int stage = 0;
  uint32_t phase = 0;
  __device__ __forceinline__ void advance() {
    if (++stage == Config<BN>::kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

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
  RingCursor<BN> ring;
  for (int t = schedule.first(); t < schedule.count(); t += schedule.stride()) {
    int mb, nb, split, kt_begin, kt_end;
    schedule.at(t, mb, nb, split, kt_begin, kt_end);
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      const int stage = ring.stage;
      // A fresh barrier's "previous phase" counts as complete, so the first pass over the ring does not block.
      ptx::mbar_wait(&empty[stage], ring.phase ^ 1);
      unsigned char* a_tile = smem + stage * Cfg::kStageBytes;
      unsigned char* b_tile = a_tile + Cfg::kABytes;
      ptx::mbar_arrive_expect_tx(&full[stage], Cfg::kStageBytes);
      const int k0 = kt * kBK<T>;
      if constexpr (AKMajor) {
        ptx::tma_load_2d(a_tile, &map_a, &full[stage], k0, mb * kBM);
      } else {
#pragma unroll
        for (int i = 0; i < kBM / kAtomElems; ++i)
          ptx::tma_load_2d(a_tile + i * kBoxBytes, &map_a, &full[stage], mb * kBM + i * kAtomElems, k0);
      }
      if (clustered) {
        // This CTA's half of the BN rows (K-major: one box of BN/2 rows) or BN/2 columns (MN-major: BN/128 boxes).
        const int half = schedule.rank;
        if constexpr (BKMajor) {
          ptx::tma_load_2d_multicast(b_tile + half * (BN / 2) * kAtomRowBytes, &map_b, &full[stage], k0,
                                     nb * BN + half * (BN / 2), kBothCtas);
        } else {
#pragma unroll
          for (int j = 0; j < BN / kAtomElems / 2; ++j) {
            const int box = half * (BN / kAtomElems / 2) + j;
            ptx::tma_load_2d_multicast(b_tile + box * kBoxBytes, &map_b, &full[stage], nb * BN + box * kAtomElems,
                                       k0, kBothCtas);
          }
        }
      } else if constexpr (BKMajor) {
        ptx::tma_load_2d(b_tile, &map_b, &full[stage], k0, nb * BN);
      } else {
#pragma unroll
        for (int j = 0; j < BN / kAtomElems; ++j)
          ptx::tma_load_2d(b_tile + j * kBoxBytes, &map_b, &full[stage], nb * BN + j * kAtomElems, k0);
      }
      ring.advance();
    }
  }
}

// One consumer warpgroup's product over K slices [kt_begin, kt_end) of a tile into `acc`: it owns rows
// [64 * consumer, 64 * consumer + 64). Per stage it waits on "full" and issues the stage's wgmmas as one group,
// keeping the previous stage's group in flight meanwhile (the tensor cores never drain between slices); once that
// one has completed, each warp releases its stage (in a cluster, to both CTAs' producers, as both wrote into it).
// Returns with every wgmma complete and every stage it read released.
template <typename T, int BN, bool AKMajor, bool BKMajor>
__device__ __forceinline__ void consume_k_slices(float (&acc)[BN / 2], unsigned char* smem, uint64_t* full,
                                                 uint64_t* empty, const Schedule& schedule, int consumer, int lane,
                                                 int kt_begin, int kt_end, RingCursor<BN>& ring) {
  using Cfg = Config<BN>;
  // Each warp releases a stage once its own wgmma wait has returned, so no warp can still be reading it.
  auto release = [&](int s) {
    if (lane != 0) return;
    if (schedule.cluster_m == 1) {
      ptx::mbar_arrive(&empty[s]);
    } else {
      for (int r = 0; r < schedule.cluster_m; ++r) ptx::mbar_arrive_cluster(&empty[s], r);
    }
  };
  int reading = -1;  // the stage the in-flight wgmmas read
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int stage = ring.stage;
    ptx::mbar_wait(&full[stage], ring.phase);
    const uint32_t a_tile = ptx::smem_u32(smem + stage * Cfg::kStageBytes);
    const uint32_t b_tile = a_tile + Cfg::kABytes;
    // This consumer's 64 rows of A: 64 K-major rows, or the consumer-th 64-wide box of an MN-major tile.
    const uint32_t a_rows = a_tile + consumer * (AKMajor ? kAtomElems * kAtomRowBytes : kBoxBytes);
    ptx::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const uint64_t da = AKMajor ? k_major_desc(a_rows, ks) : mn_major_desc(a_rows, ks);
      const uint64_t db = BKMajor ? k_major_desc(b_tile, ks) : mn_major_desc(b_tile, ks);
      // scale_d = 0 on the tile's first product zeroes the accumulators.
      wgmma_tile<T, BN, AKMajor ? 0 : 1, BKMajor ? 0 : 1>(acc, da, db, (kt > kt_begin || ks > 0) ? 1 : 0);
    }
    ptx::wgmma_commit();
    ptx::wgmma_wait<1>();  // the previous slice's group has completed
    ptx::fence_registers(acc);
    if (reading >= 0) release(reading);
    reading = stage;
    ring.advance();
  }
  ptx::wgmma_wait<0>();
  ptx::fence_registers(acc);
  if (reading >= 0) release(reading);
}

}  // namespace fastops::sm90

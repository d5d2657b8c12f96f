// Hopper GEMM (sm_90a): tile and shared-memory geometry. See docs/hopper_gemm.md for the design; the pieces are
//   gemm_sm90_config.cuh     this file: constants and the shared-memory layout
//   gemm_sm90_scheduler.cuh  the persistent, swizzled walk over tiles (and clusters, split-K slices)
//   gemm_sm90_mainloop.cuh   the TMA producer and the wgmma consumer loop over K
//   gemm_sm90_epilogue.cuh   bias / old C / activation, direct and TMA stores, the split-K reduction
//   gemm_sm90_kernel.cuh     the kernel and its host-side launch (TMA descriptors, cluster launch)
//   gemm_sm90.cu             the entry point (gemm_sm90.h): dtype dispatch to the instantiation files
//   gemm_sm90_<type>_*.cu    explicit instantiations, one compile unit each so that the build runs them in parallel
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "matmul/gemm_plan.h"

namespace fastops::sm90 {

// A stage holds one swizzle row of K per operand row: 64 16-bit elements, or 32 float32 (TF32).
template <typename T>
constexpr int kBK = kAtomRowBytes / static_cast<int>(sizeof(T));
// Each wgmma reads 32 bytes of every K-major row (k16 for 16-bit, k8 for TF32), so a stage is 4 instructions.
constexpr int kKSteps = kAtomRowBytes / 32;
// MN-major operands (16-bit only: wgmma reads TF32 K-major only) are loaded as 64 x 64 boxes: 64 k-rows of one
// swizzle row (64 elements) along M or N.
constexpr int kAtomElems = 64;
constexpr int kBoxBytes = 64 * kAtomRowBytes;
constexpr int kConsumers = 2;
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kTileGroupM = 8;  // tiles of 8 consecutive M-blocks share B slices in L2
// setmaxnreg: the producer gives registers up, the consumers (BN/2 fp32 accumulators each) take them.
constexpr int kProducerRegs = 40;
constexpr int kConsumerRegs = 232;

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

}  // namespace fastops::sm90

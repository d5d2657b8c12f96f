// Hopper GEMM: the kernel and its host-side launch (see gemm_sm90_config.cuh for the file map).
//
// One persistent CTA per SM (or cluster of 2 per SM pair), 384 threads = 3 warpgroups:
//   warpgroup 0    producer: one thread walks the CTA's work units and fills the ring (produce_stages).
//   warpgroups 1-2 consumers: each owns 64 rows of the BM=128 x BN tile, runs the wgmmas (consume_k_slices), then
//                  the epilogue (store_tile_tma or store_tile_direct).
// setmaxnreg moves registers from the producer (40) to the consumers (232), which hold BN/2 accumulators each.
// Large problems run as clusters of 2 CTAs on vertically adjacent tiles (same N-block): each CTA loads half of the
// shared B slice and multicasts it to both, so a CTA pulls 32 KiB per stage from L2 instead of 48; a stage is then
// free only when the consumers of both CTAs have released it.
//
// Included by the instantiation files (gemm_sm90_<type>_*.cu), each of which compiles launch_layout for one input
// type and tile width; gemm_sm90.cu declares them and dispatches.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "common/cuda_ptx.cuh"
#include "common/cuda_utils.cuh"
#include "matmul/gemm_sm90_config.cuh"
#include "matmul/gemm_sm90_epilogue.cuh"
#include "matmul/gemm_sm90_mainloop.cuh"
#include "matmul/gemm_sm90_scheduler.cuh"

namespace fastops::sm90 {

// The consumers' walk: per work unit, the K slices into the accumulators, then the epilogue.
template <typename T, typename OutT, int BN, bool AKMajor, bool BKMajor>
__device__ __forceinline__ void consume_stages(const CUtensorMap& map_c, const CUtensorMap& map_pre, OutT* c,
                                               int64_t ldc, int m, int n, const Epilogue<OutT>& ep, bool tma_store,
                                               int64_t split_stride, unsigned char* smem,
                                               unsigned char* store_buffers, uint64_t* full, uint64_t* empty,
                                               const Schedule& schedule, int consumer) {
  const int lane = threadIdx.x % 32;
  const int warp = (threadIdx.x % 128) / 32;
  const bool pair_aligned = (ldc % 2 == 0) && (reinterpret_cast<uintptr_t>(c) % (2 * sizeof(OutT)) == 0);
  float acc[BN / 2];
  int tma_stores = 0;  // chunks this warpgroup has stored through the TMA-store epilogue
  RingCursor<BN> ring;
  for (int t = schedule.first(); t < schedule.count(); t += schedule.stride()) {
    int mb, nb, split, kt_begin, kt_end;
    schedule.at(t, mb, nb, split, kt_begin, kt_end);
    consume_k_slices<T, BN, AKMajor, BKMajor>(acc, smem, full, empty, schedule, consumer, lane, kt_begin, kt_end,
                                              ring);
    const int consumer_row0 = mb * kBM + consumer * 64;
    if (tma_store) {
      if (consumer_row0 < m) {  // uniform over the warpgroup
        store_tile_tma<OutT, BN>(acc, &map_c, &map_pre, store_buffers + consumer * kStoreBuffers * kStoreChunkBytes,
                                 tma_stores, consumer_row0, nb * BN, n, ep, consumer, warp, lane);
      }
      continue;
    }
    store_tile_direct<OutT, BN>(acc, c + split * split_stride, ldc, m, n, consumer_row0, nb * BN, pair_aligned, ep,
                                warp, lane);
  }
  // Shared memory must outlive the stores that read it, and C must be complete when the kernel is.
  if (tma_store && threadIdx.x % 128 == 0) ptx::tma_store_wait_all();
}

template <typename T, typename OutT, int BN, bool AKMajor, bool BKMajor>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                const __grid_constant__ CUtensorMap map_c, const __grid_constant__ CUtensorMap map_pre, OutT* c,
                int64_t ldc, int m, int n, int k, const Epilogue<OutT> ep, bool tma_store, int splits,
                int k_tiles_per_split, int64_t split_stride, int cluster_m) {
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
                          clustered ? static_cast<int>(ptx::cluster_ctarank()) : 0};

  if (threadIdx.x == 0) {
    for (int s = 0; s < Cfg::kStages; ++s) {
      ptx::mbar_init(&full[s], 1);
      ptx::mbar_init(&empty[s], kConsumers * 4 * cluster_m);  // one arrival per consumer warp of every CTA it feeds
    }
    ptx::fence_mbarrier_init();
  }
  // In a cluster, the partner's barriers must be initialised before this CTA's multicasts and arrivals reach them.
  if (clustered) ptx::cluster_sync();
  else __syncthreads();

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    ptx::setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x == 0) produce_stages<T, BN, AKMajor, BKMajor>(map_a, map_b, smem, full, empty, schedule);
  } else {
    ptx::setmaxnreg_inc<kConsumerRegs>();
    consume_stages<T, OutT, BN, AKMajor, BKMajor>(map_c, map_pre, c, ldc, m, n, ep, tma_store, split_stride, smem,
                                                  store_buffers, full, empty, schedule, warpgroup - 1);
  }
  // A CTA leaves only once its partner no longer multicasts into its shared memory or arrives on its barriers.
  if (clustered) ptx::cluster_sync();
#endif
}

// ---- host side ----

// The operands as the kernel reads them: each either K-major (A as [m, k], B as [n, k] row-major) or MN-major
// (A as [k, m], B as [k, n]).
struct Operands {
  int64_t m, n, k;
  const void* a;
  int64_t lda;  // elements between consecutive rows of A as stored
  bool a_k_major;
  const void* b;
  int64_t ldb;
  bool b_k_major;
};

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

// cuTensorMapEncodeTiled from the driver (defined in gemm_sm90.cu), or null when the driver lacks it.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder();

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

template <typename T, typename OutT, int BN, bool AKMajor, bool BKMajor>
cudaError_t launch(const Operands& p, const Target<OutT>& target, int num_sms, cudaStream_t stream) {
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

// The kernel for the operands' layouts. Instantiated per (T, OutT, BN) in the gemm_sm90_<type>_*.cu files.
template <typename T, typename OutT, int BN>
cudaError_t launch_layout(const Operands& p, const Target<OutT>& target, int num_sms, cudaStream_t stream) {
  // TF32 operands are K-major (the plan turns the rest away).
  if constexpr (std::is_same_v<T, float>) {
    return launch<T, OutT, BN, true, true>(p, target, num_sms, stream);
  } else {
    if (p.a_k_major && p.b_k_major) return launch<T, OutT, BN, true, true>(p, target, num_sms, stream);
    if (p.a_k_major) return launch<T, OutT, BN, true, false>(p, target, num_sms, stream);
    if (p.b_k_major) return launch<T, OutT, BN, false, true>(p, target, num_sms, stream);
    return launch<T, OutT, BN, false, false>(p, target, num_sms, stream);
  }
}

// Declares (extern) or defines (in its instantiation file) launch_layout<T, OutT, BN>.
#define FASTOPS_SM90_LAUNCH(extern_, T, OutT, BN)                                                           \
  extern_ template cudaError_t launch_layout<T, OutT, BN>(const Operands&, const Target<OutT>&, int, \
                                                          cudaStream_t);

// Every instantiation the entry point uses: output in the input's type at both tile widths, and the split-K
// partial sums (fp32, 128-wide tiles). TF32's output is fp32, so its split-K kernel is its 128-wide one.
#define FASTOPS_SM90_INSTANTIATIONS(extern_)              \
  FASTOPS_SM90_LAUNCH(extern_, __nv_bfloat16, __nv_bfloat16, 128) \
  FASTOPS_SM90_LAUNCH(extern_, __nv_bfloat16, __nv_bfloat16, 256) \
  FASTOPS_SM90_LAUNCH(extern_, __nv_bfloat16, float, 128)         \
  FASTOPS_SM90_LAUNCH(extern_, __half, __half, 128)               \
  FASTOPS_SM90_LAUNCH(extern_, __half, __half, 256)               \
  FASTOPS_SM90_LAUNCH(extern_, __half, float, 128)                \
  FASTOPS_SM90_LAUNCH(extern_, float, float, 128)                 \
  FASTOPS_SM90_LAUNCH(extern_, float, float, 256)

}  // namespace fastops::sm90

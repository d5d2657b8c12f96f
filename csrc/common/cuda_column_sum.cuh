// The deterministic column sum on CUDA (plan: common/column_sum.h). A kernel that produces the rows to be summed
// (linear's bias_grad reads them; bias_act_backward computes them) runs on blocks of (kColumnSumThreads,
// kColumnSumLanes) threads over grid (column blocks, bands) and calls band_column_sums; column_sum_finish adds the
// bands. Torch-free.
#pragma once

#include <cstdint>

#include "common/column_sum.h"
#include "common/cuda_rows.cuh"
#include "common/cuda_utils.cuh"
#include "common/reduce_math.h"

namespace fastops::cuda {

constexpr int kColumnSumThreads = 32;  // threads across columns per block (each W columns)
// Rows a lane loads before adding the first (16-byte loads in flight per operand and thread).
constexpr int kColumnSumUnroll = 4;

struct ColumnBands {
  int64_t bands;
  int64_t rows_per_band;
};

inline ColumnBands column_bands(int64_t rows) {
  const int64_t bands = column_sum_bands(rows);
  return {bands, ceil_div(rows, bands)};
}

// Grid and block of a band kernel over `cols` columns in W-wide vectors.
inline dim3 column_sum_grid(int64_t cols, int w, const ColumnBands& plan) {
  return dim3(static_cast<unsigned>(ceil_div(cols, int64_t{kColumnSumThreads} * w)),
              static_cast<unsigned>(plan.bands));
}
inline dim3 column_sum_block() { return dim3(kColumnSumThreads, kColumnSumLanes); }

// Column c (of W) of this thread in a band kernel.
template <int W>
__device__ __forceinline__ int64_t band_column() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * W;
}

// This thread's lane of band blockIdx.y: rows begin + threadIdx.y, + kColumnSumLanes, ... (load / use as in
// walk_rows; use(r, loaded, sum) adds row r's W values to sum); then the lanes are folded in lane order and lane 0
// writes the band's W column sums to partial[band, c .. c + W). Threads with c >= cols only take part in the fold.
template <int W, typename Acc, typename Load, typename Use>
__device__ __forceinline__ void band_column_sums(int64_t rows, int64_t rows_per_band, int64_t cols, int64_t c,
                                                 Acc* __restrict__ partial, Load&& load, Use&& use) {
  __shared__ Acc lanes[kColumnSumLanes][kColumnSumThreads * W];
  Acc sum[W];
#pragma unroll
  for (int e = 0; e < W; ++e) sum[e] = Acc(0);
  const bool active = c < cols;
  if (active) {
    const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_band;
    const int64_t end = begin + rows_per_band < rows ? begin + rows_per_band : rows;
    walk_rows<kColumnSumUnroll>(begin + threadIdx.y, end, kColumnSumLanes, load,
                                [&](int64_t r, const auto& in) { use(r, in, sum); });
  }
#pragma unroll
  for (int e = 0; e < W; ++e) lanes[threadIdx.y][threadIdx.x * W + e] = sum[e];
  __syncthreads();
  if (threadIdx.y == 0 && active) {
    for (int y = 1; y < kColumnSumLanes; ++y) {
#pragma unroll
      for (int e = 0; e < W; ++e) sum[e] += lanes[y][threadIdx.x * W + e];
    }
#pragma unroll
    for (int e = 0; e < W; ++e) partial[static_cast<int64_t>(blockIdx.y) * cols + c + e] = sum[e];
  }
}

// out[c] = the bands' partial sums added in band order, rounded once to T.
template <typename T>
__global__ void __launch_bounds__(256)
    column_sum_finish_kernel(const reduce_math_t<T>* __restrict__ partial, int64_t bands, int64_t cols,
                             T* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += stride) {
    reduce_math_t<T> total(0);
    for (int64_t b = 0; b < bands; ++b) total += partial[b * cols + c];
    out[c] = from_opmath<T>(static_cast<opmath_t<T>>(total));
  }
}

template <typename T>
void column_sum_finish(const reduce_math_t<T>* partial, int64_t bands, int64_t cols, T* out, cudaStream_t stream) {
  const int64_t blocks = ceil_div(cols, 256) < (1 << 16) ? ceil_div(cols, 256) : (1 << 16);
  column_sum_finish_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(partial, bands, cols, out);
}

}  // namespace fastops::cuda

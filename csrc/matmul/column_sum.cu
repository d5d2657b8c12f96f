// Column sum (linear's bias gradient): out[j] = sum_i g[i, j], deterministic (the band plan of common/column_sum.h,
// shared with bias_act_backward's grad_bias). Torch-free.
#include <type_traits>

#include "common/cuda_column_sum.cuh"
#include "matmul/matmul_launch.h"

namespace fastops {
namespace {

using namespace cuda;

template <typename T, int W>
__global__ void __launch_bounds__(kColumnSumThreads * kColumnSumLanes)
    column_sum_kernel(const T* __restrict__ g, int64_t rows, int64_t cols, int64_t rows_per_band,
                      reduce_math_t<T>* __restrict__ partial) {
  using Acc = reduce_math_t<T>;
  const int64_t c = band_column<W>();
  band_column_sums<W>(
      rows, rows_per_band, cols, c, partial, [&](int64_t r) { return load_vec<T, W>(g + r * cols + c); },
      [&](int64_t, const Vec<T, W>& v, auto& sum) {
#pragma unroll
        for (int e = 0; e < W; ++e) sum[e] += static_cast<Acc>(to_opmath(v.v[e]));
      });
}

}  // namespace

void column_sum_cuda(DType dtype, const void* g, int64_t rows, int64_t cols, void* out, void* workspace,
                     cudaStream_t stream) {
  const ColumnBands plan = column_bands(rows);
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto* partial = static_cast<reduce_math_t<T>*>(workspace);
    with_width<T>(vectors_fit<T>({g}, {cols}), [&](auto w) {
      constexpr int W = decltype(w)::value;
      column_sum_kernel<T, W><<<column_sum_grid(cols, W, plan), column_sum_block(), 0, stream>>>(
          static_cast<const T*>(g), rows, cols, plan.rows_per_band, partial);
    });
    column_sum_finish<T>(partial, plan.bands, cols, static_cast<T*>(out), stream);
  });
}

}  // namespace fastops

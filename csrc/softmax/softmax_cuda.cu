// CUDA softmax / log_softmax kernels and their backward (torch-free; see softmax_launch.h).
//
// Last dim (inner == 1): a group of threads per row, a warp for rows of up to kWarpRowMax elements (8 rows per
// 256-thread block, so short rows do not leave 7/8 of a block idle), a whole 256-thread block for longer rows. Each
// sweep (maximum; sum of exp(x - max); output) walks the row with the group's lanes on neighbouring addresses
// (coalesced), and the group reduces with warp shuffles (plus shared memory across a block's warps, read in a fixed
// order: deterministic). Per-thread partial sums are in float (double for float64) and the group adds them in
// double, so a long row's sum is as accurate as the CPU kernel's.
// Other dims (inner > 1): one thread per (outer, inner) column, walking dim with stride `inner`; neighbouring threads
// read neighbouring columns, so every load is coalesced without a transpose.
// All indices are int64; grids loop (grid-stride) so that any number of rows fits.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "softmax/softmax_launch.h"

namespace fastops {
namespace {

using cuda::from_opmath;
using cuda::opmath_t;
using cuda::to_opmath;

constexpr int kBlock = 256;
constexpr int64_t kWarpRowMax = 1024;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

// exp and log below are CUDA's overloads: exp(float) is expf (measured: the same SASS as a float/double wrapper).

// NaN-propagating maximum (a NaN anywhere in a row makes the row NaN, as in torch).
template <typename A>
__device__ __forceinline__ A max_nan(A a, A b) {
  return (b > a || isnan(b)) ? b : a;
}

struct MaxOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return max_nan(a, b); }
};

struct SumOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};

// Reduces v over a group of kGroup threads (a warp, or the whole block); every thread of the group gets the result.
// `smem` holds one value per warp (block groups only).
template <int kGroup, typename R, typename Op>
__device__ __forceinline__ R group_reduce(R v, Op op, R* smem) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  if constexpr (kGroup == 32) {
    return v;
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // the previous reduction's reads of smem are done
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    R r = smem[0];
#pragma unroll
    for (int w = 1; w < kGroup / 32; ++w) r = op(r, smem[w]);
    return r;
  }
}

// A group of kGroup threads per row of n elements; kBlock / kGroup rows per block.
template <typename T, bool kLog, int kGroup>
__global__ void __launch_bounds__(kBlock) softmax_rows_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                             int64_t rows, int64_t n) {
  using A = opmath_t<T>;
  __shared__ double smem_sum[kBlock / 32];
  __shared__ A smem_max[kBlock / 32];
  constexpr int kRowsPerBlock = kBlock / kGroup;
  const int lane = threadIdx.x % kGroup;
  // The loop bound is uniform across a group (and across the block when the group is the block).
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kGroup; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* xr = x + row * n;
    T* yr = y + row * n;
    A m = -INFINITY;
    for (int64_t j = lane; j < n; j += kGroup) m = max_nan(m, to_opmath(xr[j]));
    m = group_reduce<kGroup>(m, MaxOp{}, smem_max);
    A part = 0;
    for (int64_t j = lane; j < n; j += kGroup) part += exp(to_opmath(xr[j]) - m);
    const double s = group_reduce<kGroup>(static_cast<double>(part), SumOp{}, smem_sum);
    if constexpr (kLog) {
      const A ls = static_cast<A>(log(s));
      for (int64_t j = lane; j < n; j += kGroup) yr[j] = from_opmath<T>((to_opmath(xr[j]) - m) - ls);
    } else {
      const A inv = static_cast<A>(1.0 / s);
      for (int64_t j = lane; j < n; j += kGroup) yr[j] = from_opmath<T>(exp(to_opmath(xr[j]) - m) * inv);
    }
  }
}

// softmax: gx = y (g - sum(g y)); log_softmax: gx = g - exp(y) sum(g).
template <typename T, bool kLog, int kGroup>
__global__ void __launch_bounds__(kBlock) softmax_backward_rows_kernel(const T* __restrict__ g,
                                                                      const T* __restrict__ y,
                                                                      T* __restrict__ gx, int64_t rows, int64_t n) {
  using A = opmath_t<T>;
  __shared__ double smem_sum[kBlock / 32];
  constexpr int kRowsPerBlock = kBlock / kGroup;
  const int lane = threadIdx.x % kGroup;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kGroup; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* gr = g + row * n;
    const T* yr = y + row * n;
    T* gxr = gx + row * n;
    A part = 0;
    for (int64_t j = lane; j < n; j += kGroup) {
      part += kLog ? to_opmath(gr[j]) : to_opmath(gr[j]) * to_opmath(yr[j]);
    }
    const A s = static_cast<A>(group_reduce<kGroup>(static_cast<double>(part), SumOp{}, smem_sum));
    for (int64_t j = lane; j < n; j += kGroup) {
      const A gj = to_opmath(gr[j]), yj = to_opmath(yr[j]);
      gxr[j] = from_opmath<T>(kLog ? gj - exp(yj) * s : yj * (gj - s));
    }
  }
}

// One thread per (outer, inner) column of a [outer, dim, inner] tensor.
template <typename T, bool kLog>
__global__ void __launch_bounds__(kBlock) softmax_columns_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                                SoftmaxGeometry geo) {
  using A = opmath_t<T>;
  const int64_t columns = geo.outer * geo.inner;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x; c < columns;
       c += static_cast<int64_t>(gridDim.x) * kBlock) {
    const int64_t base = (c / geo.inner) * geo.dim * geo.inner + c % geo.inner;
    A m = -INFINITY;
    for (int64_t d = 0; d < geo.dim; ++d) m = max_nan(m, to_opmath(x[base + d * geo.inner]));
    double s = 0;
    for (int64_t d = 0; d < geo.dim; ++d) s += exp(to_opmath(x[base + d * geo.inner]) - m);
    const A ls = static_cast<A>(log(s)), inv = static_cast<A>(1.0 / s);
    for (int64_t d = 0; d < geo.dim; ++d) {
      const A xd = to_opmath(x[base + d * geo.inner]) - m;
      y[base + d * geo.inner] = from_opmath<T>(kLog ? xd - ls : exp(xd) * inv);
    }
  }
}

template <typename T, bool kLog>
__global__ void __launch_bounds__(kBlock) softmax_backward_columns_kernel(const T* __restrict__ g,
                                                                         const T* __restrict__ y,
                                                                         T* __restrict__ gx, SoftmaxGeometry geo) {
  using A = opmath_t<T>;
  const int64_t columns = geo.outer * geo.inner;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x; c < columns;
       c += static_cast<int64_t>(gridDim.x) * kBlock) {
    const int64_t base = (c / geo.inner) * geo.dim * geo.inner + c % geo.inner;
    double s = 0;
    for (int64_t d = 0; d < geo.dim; ++d) {
      const int64_t i = base + d * geo.inner;
      s += kLog ? to_opmath(g[i]) : to_opmath(g[i]) * to_opmath(y[i]);
    }
    const A sa = static_cast<A>(s);
    for (int64_t d = 0; d < geo.dim; ++d) {
      const int64_t i = base + d * geo.inner;
      const A gd = to_opmath(g[i]), yd = to_opmath(y[i]);
      gx[i] = from_opmath<T>(kLog ? gd - exp(yd) * sa : yd * (gd - sa));
    }
  }
}

unsigned grid_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>(std::min(cuda::ceil_div(items, per_block), kMaxBlocks));
}

template <typename T, bool kLog>
void launch_forward(SoftmaxGeometry geo, const void* x, void* y, cudaStream_t stream) {
  const auto* xp = static_cast<const T*>(x);
  auto* yp = static_cast<T*>(y);
  if (geo.inner == 1) {
    if (geo.dim <= kWarpRowMax) {
      softmax_rows_kernel<T, kLog, 32><<<grid_for(geo.outer, kBlock / 32), kBlock, 0, stream>>>(xp, yp, geo.outer,
                                                                                              geo.dim);
    } else {
      softmax_rows_kernel<T, kLog, kBlock><<<grid_for(geo.outer, 1), kBlock, 0, stream>>>(xp, yp, geo.outer, geo.dim);
    }
  } else {
    softmax_columns_kernel<T, kLog><<<grid_for(geo.outer * geo.inner, kBlock), kBlock, 0, stream>>>(xp, yp, geo);
  }
}

template <typename T, bool kLog>
void launch_backward(SoftmaxGeometry geo, const void* g, const void* y, void* gx, cudaStream_t stream) {
  const auto* gp = static_cast<const T*>(g);
  const auto* yp = static_cast<const T*>(y);
  auto* gxp = static_cast<T*>(gx);
  if (geo.inner == 1) {
    if (geo.dim <= kWarpRowMax) {
      softmax_backward_rows_kernel<T, kLog, 32>
          <<<grid_for(geo.outer, kBlock / 32), kBlock, 0, stream>>>(gp, yp, gxp, geo.outer, geo.dim);
    } else {
      softmax_backward_rows_kernel<T, kLog, kBlock>
          <<<grid_for(geo.outer, 1), kBlock, 0, stream>>>(gp, yp, gxp, geo.outer, geo.dim);
    }
  } else {
    softmax_backward_columns_kernel<T, kLog>
        <<<grid_for(geo.outer * geo.inner, kBlock), kBlock, 0, stream>>>(gp, yp, gxp, geo);
  }
}

}  // namespace

void softmax_forward_cuda(bool log, DType dtype, SoftmaxGeometry geo, const void* x, void* y, cudaStream_t stream) {
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    log ? launch_forward<T, true>(geo, x, y, stream) : launch_forward<T, false>(geo, x, y, stream);
  });
}

void softmax_backward_cuda(bool log, DType dtype, SoftmaxGeometry geo, const void* grad_output, const void* y,
                           void* grad_input, cudaStream_t stream) {
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    log ? launch_backward<T, true>(geo, grad_output, y, grad_input, stream)
        : launch_backward<T, false>(geo, grad_output, y, grad_input, stream);
  });
}

}  // namespace fastops

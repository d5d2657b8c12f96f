// CUDA activation kernels. Unary activations are flat, vectorised elementwise maps (common/cuda_elementwise.cuh).
// bias_act and the gated units walk a [rows, cols] matrix (common/cuda_rows.cuh): each thread owns W consecutive
// columns and walks rows, kRowsPerThread loaded before any is used. bias_act's backward sums grad_bias on the
// deterministic column-sum bands (common/cuda_column_sum.cuh), so its grad_bias does not depend on the vector width
// or launch shape. Math runs in opmath (float for 16-bit types).
#include <type_traits>
#include <utility>

#include "activations/activation_math.h"
#include "activations/activations_launch.h"
#include "common/cuda_column_sum.cuh"
#include "common/cuda_elementwise.cuh"
#include "common/cuda_rows.cuh"

namespace fastops {

namespace {

using cuda::ceil_div;
using cuda::dispatch_dtype;
using cuda::from_opmath;
using cuda::load_vec;
using cuda::opmath_t;
using cuda::store_vec;
using cuda::to_opmath;
using cuda::Vec;

// grad * act'(x) from the input x (bias_act's backward without a bias: linear_act's backward when it has none).
template <Activation A>
struct BackwardFromInput {
  template <typename T>
  __device__ __forceinline__ T operator()(T grad, T x) const {
    return act::backward_from_input<A>(grad, x, ActParams{});
  }
};

// ---- unary activations ----

template <typename Op, int N>
void unary_map(DType dtype, void* out, const void* const (&in)[N], int64_t n, const Op& op, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::Inputs<T, N> inputs;
    for (int k = 0; k < N; ++k) inputs.p[k] = static_cast<const T*>(in[k]);
    cuda::launch_map<T, Op, N>(n, static_cast<T*>(out), inputs, op, stream);
  });
}

// ---- row kernels (bias_act, gated units) ----

constexpr int kRowThreads = 256;
// Rows each thread loads before computing: 4 x 16 B per operand in flight per thread. The gated backward has three
// operands and two outputs per row, and spills at 4 (float32 silu), so it takes 2.
constexpr int kRowsPerThread = 4;
constexpr int kGluBackwardRows = 2;
constexpr int64_t kMaxGridY = 65535;

// This thread's first column (of W) and its rows first_row, first_row + row_step, ... of a grid-strided row kernel.
struct RowThread {
  int64_t col, first_row, row_step;
};

template <int W>
__device__ __forceinline__ RowThread row_thread() {
  return {(static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * W,
          static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y,
          static_cast<int64_t>(gridDim.y) * blockDim.y};
}

template <typename T, int W>
__device__ __forceinline__ void load_opmath_vec(const T* p, opmath_t<T> (&out)[W]) {
  const Vec<T, W> v = load_vec<T, W>(p);
#pragma unroll
  for (int e = 0; e < W; ++e) out[e] = to_opmath(v.v[e]);
}

template <typename T, int W, Activation A>
__global__ void __launch_bounds__(kRowThreads)
    bias_act_forward_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int64_t rows,
                            int64_t cols) {
  using M = opmath_t<T>;
  const RowThread t = row_thread<W>();
  const int64_t c = t.col;
  if (c >= cols) return;
  M bm[W];
  load_opmath_vec<T, W>(bias + c, bm);
  cuda::walk_rows<kRowsPerThread>(
      t.first_row, rows, t.row_step, [&](int64_t r) { return load_vec<T, W>(x + r * cols + c); },
      [&](int64_t r, const Vec<T, W>& in) {
        Vec<T, W> out;
#pragma unroll
        for (int e = 0; e < W; ++e) out.v[e] = from_opmath<T>(act::forward<A>(to_opmath(in.v[e]) + bm[e], ActParams{}));
        store_vec<T, W>(y + r * cols + c, out);
      });
}

// One pass over grad and x: writes grad_x and leaves, per column-sum band (blockIdx.y), the column sums of its
// grad_x rows (before rounding) in partial[band, :].
template <typename T, int W, Activation A>
__global__ void __launch_bounds__(cuda::kColumnSumThreads * kColumnSumLanes)
    bias_act_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x, const T* __restrict__ bias,
                             T* __restrict__ grad_x, reduce_math_t<T>* __restrict__ partial, int64_t rows,
                             int64_t cols, int64_t rows_per_band) {
  using M = opmath_t<T>;
  using Acc = reduce_math_t<T>;
  const int64_t c = cuda::band_column<W>();
  M bm[W];
  if (c < cols) load_opmath_vec<T, W>(bias + c, bm);
  struct Loaded {
    Vec<T, W> g, in;
  };
  cuda::band_column_sums<W>(
      rows, rows_per_band, cols, c, partial,
      [&](int64_t r) { return Loaded{load_vec<T, W>(grad + r * cols + c), load_vec<T, W>(x + r * cols + c)}; },
      [&](int64_t r, const Loaded& l, auto& sum) {
        Vec<T, W> out;
#pragma unroll
        for (int e = 0; e < W; ++e) {
          const M gx = act::backward_from_input<A>(to_opmath(l.g.v[e]), to_opmath(l.in.v[e]) + bm[e], ActParams{});
          out.v[e] = from_opmath<T>(gx);
          sum[e] += static_cast<Acc>(gx);
        }
        store_vec<T, W>(grad_x + r * cols + c, out);
      });
}

template <typename T, int W, Activation A>
__global__ void __launch_bounds__(kRowThreads)
    glu_forward_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out, int64_t rows,
                       int64_t cols, int64_t in_stride) {
  using M = opmath_t<T>;
  const RowThread t = row_thread<W>();
  const int64_t c = t.col;
  if (c >= cols) return;
  struct Loaded {
    Vec<T, W> g, u;
  };
  cuda::walk_rows<kRowsPerThread>(
      t.first_row, rows, t.row_step,
      [&](int64_t r) {
        return Loaded{load_vec<T, W>(gate + r * in_stride + c), load_vec<T, W>(up + r * in_stride + c)};
      },
      [&](int64_t r, const Loaded& l) {
        Vec<T, W> y;
#pragma unroll
        for (int e = 0; e < W; ++e) {
          y.v[e] = from_opmath<T>(act::forward<A>(to_opmath(l.g.v[e]), ActParams{}) * to_opmath(l.u.v[e]));
        }
        store_vec<T, W>(out + r * cols + c, y);
      });
}

template <typename T, int W, Activation A>
__global__ void __launch_bounds__(kRowThreads)
    glu_backward_kernel(const T* __restrict__ grad, const T* __restrict__ gate, const T* __restrict__ up,
                        T* __restrict__ grad_gate, T* __restrict__ grad_up, int64_t rows, int64_t cols,
                        int64_t in_stride) {
  using M = opmath_t<T>;
  const RowThread t = row_thread<W>();
  const int64_t c = t.col;
  if (c >= cols) return;
  struct Loaded {
    Vec<T, W> d, g, u;
  };
  cuda::walk_rows<kGluBackwardRows>(
      t.first_row, rows, t.row_step,
      [&](int64_t r) {
        return Loaded{load_vec<T, W>(grad + r * cols + c), load_vec<T, W>(gate + r * in_stride + c),
                      load_vec<T, W>(up + r * in_stride + c)};
      },
      [&](int64_t r, const Loaded& l) {
        Vec<T, W> dg, du;
#pragma unroll
        for (int e = 0; e < W; ++e) {
          const M dm = to_opmath(l.d.v[e]), gm = to_opmath(l.g.v[e]), um = to_opmath(l.u.v[e]);
          dg.v[e] = from_opmath<T>(act::backward_from_input<A>(dm * um, gm, ActParams{}));
          du.v[e] = from_opmath<T>(dm * act::forward<A>(gm, ActParams{}));
        }
        store_vec<T, W>(grad_gate + r * in_stride + c, dg);
        store_vec<T, W>(grad_up + r * in_stride + c, du);
      });
}

// Grid and block of a grid-strided row kernel: tx threads across a row's W-element units (at least a warp, at most
// the block), ty rows per block; column blocks in x, row blocks in y (at most kMaxGridY, the rest strided).
struct RowLaunch {
  dim3 grid;
  dim3 block;
};

inline RowLaunch row_launch(int64_t rows, int64_t cols, int w) {
  const int64_t units = ceil_div(cols, w);
  int tx = 32;
  while (tx < kRowThreads && tx < units) tx *= 2;
  const int ty = kRowThreads / tx;
  const int64_t row_blocks = std::max<int64_t>(1, std::min(ceil_div(rows, int64_t{ty} * kRowsPerThread), kMaxGridY));
  return {dim3(static_cast<unsigned>(ceil_div(units, tx)), static_cast<unsigned>(row_blocks)),
          dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty))};
}

// The one launcher of the row kernels: calls launch(T*, integral_constant<Activation, A>, integral_constant<int, W>)
// for `act` and `dtype`, with W the 16-byte vector width when every pointer is 16-byte aligned and every length
// (row length, row strides) a multiple of it, else 1.
template <typename Fn>
void launch_row_kernel(Activation act, DType dtype, std::initializer_list<const void*> pointers,
                       std::initializer_list<int64_t> lengths, Fn&& launch) {
  dispatch_fused_activation(act, [&](auto a) {
    dispatch_dtype(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      cuda::with_width<T>(cuda::vectors_fit<T>(pointers, lengths), [&](auto w) { launch(tag, a, w); });
    });
  });
}

}  // namespace

void activation_forward_cuda(Activation act, DType dtype, const void* x, void* y, int64_t n,
                             const ActParams& params, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_activation(act, [&](auto a) {
    constexpr Activation A = decltype(a)::value;
    unary_map(dtype, y, {x}, n, act::Forward<A>{params}, stream);
  });
}

void activation_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* saved,
                              void* grad_input, int64_t n, const ActParams& params, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_activation(act, [&](auto a) {
    constexpr Activation A = decltype(a)::value;
    unary_map(dtype, grad_input, {grad_output, saved}, n, act::Backward<A>{params}, stream);
  });
}

void bias_act_forward_cuda(Activation act, DType dtype, const void* x, const void* bias, void* y, int64_t rows,
                           int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  if (bias == nullptr) return activation_forward_cuda(act, dtype, x, y, rows * cols, ActParams{}, stream);
  launch_row_kernel(act, dtype, {x, bias, y}, {cols}, [&](auto* tag, auto a, auto w) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int W = decltype(w)::value;
    const RowLaunch l = row_launch(rows, cols, W);
    bias_act_forward_kernel<T, W, decltype(a)::value><<<l.grid, l.block, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(bias), static_cast<T*>(y), rows, cols);
  });
}

void bias_act_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* x, const void* bias,
                            void* grad_x, void* grad_bias, void* workspace, int64_t rows, int64_t cols,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  if (bias == nullptr) {
    dispatch_fused_activation(act, [&](auto a) {
      unary_map(dtype, grad_x, {grad_output, x}, rows * cols, BackwardFromInput<decltype(a)::value>{}, stream);
    });
    return;
  }
  const cuda::ColumnBands plan = cuda::column_bands(rows);
  launch_row_kernel(act, dtype, {grad_output, x, bias, grad_x}, {cols}, [&](auto* tag, auto a, auto w) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int W = decltype(w)::value;
    auto* partial = static_cast<reduce_math_t<T>*>(workspace);
    bias_act_backward_kernel<T, W, decltype(a)::value>
        <<<cuda::column_sum_grid(cols, W, plan), cuda::column_sum_block(), 0, stream>>>(
            static_cast<const T*>(grad_output), static_cast<const T*>(x), static_cast<const T*>(bias),
            static_cast<T*>(grad_x), partial, rows, cols, plan.rows_per_band);
    cuda::column_sum_finish<T>(partial, plan.bands, cols, static_cast<T*>(grad_bias), stream);
  });
}

void glu_forward_cuda(Activation act, DType dtype, GluRows g, const void* gate, const void* up, void* out,
                      cudaStream_t stream) {
  if (g.rows <= 0 || g.cols <= 0) return;
  launch_row_kernel(act, dtype, {gate, up, out}, {g.cols, g.in_stride}, [&](auto* tag, auto a, auto w) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int W = decltype(w)::value;
    const RowLaunch l = row_launch(g.rows, g.cols, W);
    glu_forward_kernel<T, W, decltype(a)::value><<<l.grid, l.block, 0, stream>>>(
        static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), g.rows, g.cols, g.in_stride);
  });
}

void glu_backward_cuda(Activation act, DType dtype, GluRows g, const void* grad_output, const void* gate,
                       const void* up, void* grad_gate, void* grad_up, cudaStream_t stream) {
  if (g.rows <= 0 || g.cols <= 0) return;
  launch_row_kernel(act, dtype, {grad_output, gate, up, grad_gate, grad_up}, {g.cols, g.in_stride},
                    [&](auto* tag, auto a, auto w) {
                      using T = std::remove_pointer_t<decltype(tag)>;
                      constexpr int W = decltype(w)::value;
                      const RowLaunch l = row_launch(g.rows, g.cols, W);
                      glu_backward_kernel<T, W, decltype(a)::value><<<l.grid, l.block, 0, stream>>>(
                          static_cast<const T*>(grad_output), static_cast<const T*>(gate),
                          static_cast<const T*>(up), static_cast<T*>(grad_gate), static_cast<T*>(grad_up), g.rows,
                          g.cols, g.in_stride);
                    });
}

}  // namespace fastops

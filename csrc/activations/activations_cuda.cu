// CUDA activation kernels. Unary activations are flat, vectorised elementwise maps (common/cuda_elementwise.cuh).
// bias_act and the gated units walk a [rows, cols] matrix: each thread owns W consecutive columns (one 16-byte
// vector when the row length and every pointer allow it, else W = 1) and strides over rows, so the bias / column
// index is fixed per thread and never divided out of a flat index. Math runs in opmath (float for 16-bit types).
#include <type_traits>
#include <utility>

#include "activations/activation_math.h"
#include "activations/activations_launch.h"
#include "common/cuda_elementwise.cuh"

namespace fastops {

namespace {

using cuda::ceil_div;
using cuda::dispatch_dtype;
using cuda::from_opmath;
using cuda::is_aligned16;
using cuda::opmath_t;
using cuda::to_opmath;

template <typename T>
using DeviceMath = opmath_t<T>;

// bias_act's grad_bias accumulator: float for 16-bit types (as torch's sum), double for float32 and float64 so a
// column sum over thousands of rows stays within torch's accuracy (FP64 adds are cheap next to the memory traffic).
template <typename T>
using BiasAcc = std::conditional_t<sizeof(T) == 2, float, double>;

// ---- unary activations ----

template <Activation A>
void unary_forward(DType dtype, const void* x, void* y, int64_t n, double param, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::launch_map<T, act::Forward<A>, 1>(n, static_cast<T*>(y), {{static_cast<const T*>(x)}},
                                            act::Forward<A>{param}, stream);
  });
}

template <Activation A>
void unary_backward(DType dtype, const void* grad, const void* saved, void* grad_input, int64_t n, double param,
                    cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::launch_map<T, act::Backward<A>, 2>(n, static_cast<T*>(grad_input),
                                             {{static_cast<const T*>(grad), static_cast<const T*>(saved)}},
                                             act::Backward<A>{param}, stream);
  });
}

// ---- row-tiled kernels (bias_act, gated units) ----

constexpr int kRowThreads = 256;
// Rows each thread loads before computing: 4 x 16 B per operand in flight per thread. The gated backward has three
// operands and two outputs per row, and spills at 4 (float32 silu), so it takes 2.
constexpr int kRowsPerThread = 4;
constexpr int kGluBackwardRows = 2;
constexpr int64_t kMaxGridY = 65535;

// W consecutive elements moved as one access (16 bytes for the vector path, one element for the scalar path).
template <typename T, int W>
struct alignas(sizeof(T) * W) Vec {
  T v[W];
};

template <typename T, int W>
__device__ __forceinline__ Vec<T, W> load(const T* p) {
  return *reinterpret_cast<const Vec<T, W>*>(p);
}

template <typename T, int W>
__device__ __forceinline__ void store(T* p, const Vec<T, W>& v) {
  *reinterpret_cast<Vec<T, W>*>(p) = v;
}

// Block shape: tx threads across a row's W-element units (at least a warp, at most the block), ty rows per block.
struct RowTiles {
  int tx;
  int ty;
  int64_t col_blocks;
};

inline RowTiles row_tiles(int64_t cols, int w) {
  const int64_t units = ceil_div(cols, w);
  int tx = 32;
  while (tx < kRowThreads && tx < units) tx *= 2;
  return {tx, kRowThreads / tx, ceil_div(units, tx)};
}

template <typename T>
constexpr int vector_width() {
  return 16 / static_cast<int>(sizeof(T));
}

template <typename T, int W, Activation A>
__global__ void __launch_bounds__(kRowThreads)
    bias_act_forward_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int64_t rows,
                            int64_t cols) {
  using M = DeviceMath<T>;
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * W;
  if (c >= cols) return;
  const Vec<T, W> b = load<T, W>(bias + c);
  M bm[W];
#pragma unroll
  for (int e = 0; e < W; ++e) bm[e] = to_opmath(b.v[e]);
  const int64_t row_step = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r0 < rows;
       r0 += kRowsPerThread * row_step) {
    Vec<T, W> in[kRowsPerThread];
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int64_t r = r0 + k * row_step;
      if (r < rows) in[k] = load<T, W>(x + r * cols + c);
    }
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int64_t r = r0 + k * row_step;
      if (r < rows) {
        Vec<T, W> out;
#pragma unroll
        for (int e = 0; e < W; ++e) out.v[e] = from_opmath<T>(act::forward<A>(to_opmath(in[k].v[e]) + bm[e], M(0)));
        store<T, W>(y + r * cols + c, out);
      }
    }
  }
}

// One pass over grad and x: writes grad_x and leaves, per block row-group (blockIdx.y), the column sums of its
// grad_x rows in partial[blockIdx.y, :]. The ty rows of a block are folded through shared memory first.
template <typename T, int W, Activation A>
__global__ void __launch_bounds__(kRowThreads)
    bias_act_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x, const T* __restrict__ bias,
                             T* __restrict__ grad_x, BiasAcc<T>* __restrict__ partial, int64_t rows, int64_t cols) {
  using M = DeviceMath<T>;
  using Acc = BiasAcc<T>;
  __shared__ Acc folded[kRowThreads * W];
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * W;
  const bool active = c < cols;
  Acc sum[W];
#pragma unroll
  for (int e = 0; e < W; ++e) sum[e] = Acc(0);
  if (active) {
    const Vec<T, W> b = load<T, W>(bias + c);
    M bm[W];
#pragma unroll
    for (int e = 0; e < W; ++e) bm[e] = to_opmath(b.v[e]);
    const int64_t row_step = static_cast<int64_t>(gridDim.y) * blockDim.y;
    for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r0 < rows;
         r0 += kRowsPerThread * row_step) {
      Vec<T, W> g[kRowsPerThread], in[kRowsPerThread];
#pragma unroll
      for (int k = 0; k < kRowsPerThread; ++k) {
        const int64_t r = r0 + k * row_step;
        if (r < rows) {
          g[k] = load<T, W>(grad + r * cols + c);
          in[k] = load<T, W>(x + r * cols + c);
        }
      }
#pragma unroll
      for (int k = 0; k < kRowsPerThread; ++k) {
        const int64_t r = r0 + k * row_step;
        if (r < rows) {
          Vec<T, W> out;
#pragma unroll
          for (int e = 0; e < W; ++e) {
            const M gx = act::backward_from_input<A>(to_opmath(g[k].v[e]), to_opmath(in[k].v[e]) + bm[e], M(0));
            out.v[e] = from_opmath<T>(gx);
            sum[e] += gx;
          }
          store<T, W>(grad_x + r * cols + c, out);
        }
      }
    }
  }
  if (blockDim.y > 1) {  // uniform across the block, so the barrier is reached by every thread or none
#pragma unroll
    for (int e = 0; e < W; ++e) folded[(threadIdx.y * blockDim.x + threadIdx.x) * W + e] = sum[e];
    __syncthreads();
    if (threadIdx.y == 0) {
      for (unsigned yy = 1; yy < blockDim.y; ++yy) {
#pragma unroll
        for (int e = 0; e < W; ++e) sum[e] += folded[(yy * blockDim.x + threadIdx.x) * W + e];
      }
    }
  }
  if (threadIdx.y == 0 && active) {
#pragma unroll
    for (int e = 0; e < W; ++e) partial[static_cast<int64_t>(blockIdx.y) * cols + c + e] = sum[e];
  }
}

// grad_bias[c] = sum over groups of partial[g, c], in group order (coalesced across c).
template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    column_sum_kernel(const BiasAcc<T>* __restrict__ partial, int64_t groups, int64_t cols, T* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += stride) {
    BiasAcc<T> total(0);
    for (int64_t g = 0; g < groups; ++g) total += partial[g * cols + c];
    out[c] = from_opmath<T>(static_cast<DeviceMath<T>>(total));
  }
}

template <typename T, int W, Activation A>
__global__ void __launch_bounds__(kRowThreads)
    glu_forward_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out, int64_t rows,
                       int64_t cols, int64_t in_stride) {
  using M = DeviceMath<T>;
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * W;
  if (c >= cols) return;
  const int64_t row_step = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r0 < rows;
       r0 += kRowsPerThread * row_step) {
    Vec<T, W> g[kRowsPerThread], u[kRowsPerThread];
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int64_t r = r0 + k * row_step;
      if (r < rows) {
        g[k] = load<T, W>(gate + r * in_stride + c);
        u[k] = load<T, W>(up + r * in_stride + c);
      }
    }
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int64_t r = r0 + k * row_step;
      if (r < rows) {
        Vec<T, W> y;
#pragma unroll
        for (int e = 0; e < W; ++e) {
          y.v[e] = from_opmath<T>(act::forward<A>(to_opmath(g[k].v[e]), M(0)) * to_opmath(u[k].v[e]));
        }
        store<T, W>(out + r * cols + c, y);
      }
    }
  }
}

template <typename T, int W, Activation A>
__global__ void __launch_bounds__(kRowThreads)
    glu_backward_kernel(const T* __restrict__ grad, const T* __restrict__ gate, const T* __restrict__ up,
                        T* __restrict__ grad_gate, T* __restrict__ grad_up, int64_t rows, int64_t cols,
                        int64_t in_stride) {
  using M = DeviceMath<T>;
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * W;
  if (c >= cols) return;
  const int64_t row_step = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r0 < rows;
       r0 += kGluBackwardRows * row_step) {
    Vec<T, W> d[kGluBackwardRows], g[kGluBackwardRows], u[kGluBackwardRows];
#pragma unroll
    for (int k = 0; k < kGluBackwardRows; ++k) {
      const int64_t r = r0 + k * row_step;
      if (r < rows) {
        d[k] = load<T, W>(grad + r * cols + c);
        g[k] = load<T, W>(gate + r * in_stride + c);
        u[k] = load<T, W>(up + r * in_stride + c);
      }
    }
#pragma unroll
    for (int k = 0; k < kGluBackwardRows; ++k) {
      const int64_t r = r0 + k * row_step;
      if (r < rows) {
        Vec<T, W> dg, du;
#pragma unroll
        for (int e = 0; e < W; ++e) {
          const M dm = to_opmath(d[k].v[e]), gm = to_opmath(g[k].v[e]), um = to_opmath(u[k].v[e]);
          dg.v[e] = from_opmath<T>(act::backward_from_input<A>(dm * um, gm, M(0)));
          du.v[e] = from_opmath<T>(dm * act::forward<A>(gm, M(0)));
        }
        store<T, W>(grad_gate + r * in_stride + c, dg);
        store<T, W>(grad_up + r * in_stride + c, du);
      }
    }
  }
}

// Launch geometry of a row-tiled kernel: column blocks in x, row blocks in y (grid-strided beyond 65535).
struct RowLaunch {
  dim3 grid;
  dim3 block;
};

inline RowLaunch row_launch(int64_t rows, int64_t cols, int w, int64_t max_row_blocks) {
  const RowTiles t = row_tiles(cols, w);
  const int64_t row_blocks = std::max<int64_t>(1, std::min(ceil_div(rows, int64_t{t.ty} * kRowsPerThread),
                                                           max_row_blocks));
  return {dim3(static_cast<unsigned>(t.col_blocks), static_cast<unsigned>(row_blocks)),
          dim3(static_cast<unsigned>(t.tx), static_cast<unsigned>(t.ty))};
}

// Calls launch(std::integral_constant<int, W>) with W the 16-byte vector width when `vector_ok`, else 1.
template <typename T, typename Fn>
void with_width(bool vector_ok, Fn&& launch) {
  if (vector_ok) {
    launch(std::integral_constant<int, vector_width<T>()>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

// bias_act and the gated units take no parameter, so LeakyReLU (which needs one) is never instantiated for them.
template <Activation A>
constexpr bool fused_activation = A != Activation::LeakyReLU;

}  // namespace

void activation_forward_cuda(Activation act, DType dtype, const void* x, void* y, int64_t n, double param,
                             cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_activation(act, [&](auto a) { unary_forward<decltype(a)::value>(dtype, x, y, n, param, stream); });
}

void activation_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* saved,
                              void* grad_input, int64_t n, double param, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_activation(act, [&](auto a) {
    unary_backward<decltype(a)::value>(dtype, grad_output, saved, grad_input, n, param, stream);
  });
}

void bias_act_forward_cuda(Activation act, DType dtype, const void* x, const void* bias, void* y, int64_t rows,
                           int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_activation(act, [&](auto a) {
    constexpr Activation A = decltype(a)::value;
    if constexpr (fused_activation<A>) {
      dispatch_dtype(dtype, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        const bool vector_ok = cols % vector_width<T>() == 0 && is_aligned16(x) && is_aligned16(bias) &&
                               is_aligned16(y);
        with_width<T>(vector_ok, [&](auto w) {
          constexpr int W = decltype(w)::value;
          const RowLaunch l = row_launch(rows, cols, W, kMaxGridY);
          bias_act_forward_kernel<T, W, A><<<l.grid, l.block, 0, stream>>>(
              static_cast<const T*>(x), static_cast<const T*>(bias), static_cast<T*>(y), rows, cols);
        });
      });
    }
  });
}

void bias_act_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* x, const void* bias,
                            void* grad_x, void* grad_bias, void* workspace, int64_t rows, int64_t cols,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t groups = bias_act_backward_groups(rows);
  dispatch_activation(act, [&](auto a) {
    constexpr Activation A = decltype(a)::value;
    if constexpr (fused_activation<A>) {
      dispatch_dtype(dtype, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        using Acc = BiasAcc<T>;
        const bool vector_ok = cols % vector_width<T>() == 0 && is_aligned16(grad_output) && is_aligned16(x) &&
                               is_aligned16(bias) && is_aligned16(grad_x);
        with_width<T>(vector_ok, [&](auto w) {
          constexpr int W = decltype(w)::value;
          RowLaunch l = row_launch(rows, cols, W, groups);
          l.grid.y = static_cast<unsigned>(groups);  // one partial row per group, even where a group has no rows
          bias_act_backward_kernel<T, W, A><<<l.grid, l.block, 0, stream>>>(
              static_cast<const T*>(grad_output), static_cast<const T*>(x), static_cast<const T*>(bias),
              static_cast<T*>(grad_x), static_cast<Acc*>(workspace), rows, cols);
        });
        const int64_t blocks = std::min<int64_t>(ceil_div(cols, kRowThreads), 1 << 16);
        column_sum_kernel<T><<<static_cast<unsigned>(blocks), kRowThreads, 0, stream>>>(
            static_cast<const Acc*>(workspace), groups, cols, static_cast<T*>(grad_bias));
      });
    }
  });
}

void glu_forward_cuda(Activation act, DType dtype, GluRows g, const void* gate, const void* up, void* out,
                      cudaStream_t stream) {
  if (g.rows <= 0 || g.cols <= 0) return;
  dispatch_activation(act, [&](auto a) {
    constexpr Activation A = decltype(a)::value;
    if constexpr (fused_activation<A>) {
      dispatch_dtype(dtype, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        const bool vector_ok = g.cols % vector_width<T>() == 0 && g.in_stride % vector_width<T>() == 0 &&
                               is_aligned16(gate) && is_aligned16(up) && is_aligned16(out);
        with_width<T>(vector_ok, [&](auto w) {
          constexpr int W = decltype(w)::value;
          const RowLaunch l = row_launch(g.rows, g.cols, W, kMaxGridY);
          glu_forward_kernel<T, W, A><<<l.grid, l.block, 0, stream>>>(
              static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), g.rows, g.cols,
              g.in_stride);
        });
      });
    }
  });
}

void glu_backward_cuda(Activation act, DType dtype, GluRows g, const void* grad_output, const void* gate,
                       const void* up, void* grad_gate, void* grad_up, cudaStream_t stream) {
  if (g.rows <= 0 || g.cols <= 0) return;
  dispatch_activation(act, [&](auto a) {
    constexpr Activation A = decltype(a)::value;
    if constexpr (fused_activation<A>) {
      dispatch_dtype(dtype, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        const bool vector_ok = g.cols % vector_width<T>() == 0 && g.in_stride % vector_width<T>() == 0 &&
                               is_aligned16(grad_output) && is_aligned16(gate) && is_aligned16(up) &&
                               is_aligned16(grad_gate) && is_aligned16(grad_up);
        with_width<T>(vector_ok, [&](auto w) {
          constexpr int W = decltype(w)::value;
          const RowLaunch l = row_launch(g.rows, g.cols, W, kMaxGridY);
          glu_backward_kernel<T, W, A><<<l.grid, l.block, 0, stream>>>(
              static_cast<const T*>(grad_output), static_cast<const T*>(gate), static_cast<const T*>(up),
              static_cast<T*>(grad_gate), static_cast<T*>(grad_up), g.rows, g.cols, g.in_stride);
        });
      });
    }
  });
}

}  // namespace fastops

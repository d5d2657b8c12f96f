// CPU softmax / log_softmax kernels and their backward, on contiguous [outer, dim, inner] tensors (softmax_math.h).
//
// inner == 1 (softmax over the last dim): one task per block of rows, vectorised along the row in three sweeps
// (maximum; sum of exp(x - max); output). inner > 1 (any other dim): vectorised across `inner` (contiguous), each
// lane walking its own column along dim, so no transpose or gather is needed.
//
// Math runs in float for 16-bit types and in the type itself otherwise. A row sum along the last dim adds at most
// kFlush vectors in that type before the partial sum moves to double, so long rows lose no accuracy to the sum.
// Measured (float32, 8 rows of uniform [-8, 8) values, max relative error against float64; most of it is the input's
// own rounding, the same for both): 1000 wide 8.4e-7 (torch 8.7e-7), 32000 wide 8.7e-7 (torch 2.6e-6), 256000 wide
// 8.5e-7 (torch 1.5e-5, whose lanes sum the whole row in float).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "common/cpu_elementwise.h"
#include "common/cpu_vec_math.h"
#include "softmax/softmax.h"

namespace fastops {
namespace {

using cpu::load_opmath;
using cpu::opmath_t;
using cpu::store_opmath;
using cpu::Vectorized;

constexpr int64_t kFlush = 16;

template <typename A>
A reduce_sum(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](const Vectorized<A>& a, const Vectorized<A>& b) { return a + b; }, v);
}

template <typename A>
A reduce_max(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](const Vectorized<A>& a, const Vectorized<A>& b) { return at::vec::maximum(a, b); },
                                    v);
}

// NaN-propagating maximum, as at::vec::maximum and torch's softmax (a NaN anywhere in a row makes the row NaN).
template <typename A>
A max_nan(A a, A b) {
  return (b > a || std::isnan(b)) ? b : a;
}

template <typename T>
struct SoftmaxKernels {
  using A = opmath_t<T>;
  using V = Vectorized<A>;
  static constexpr int64_t kW = V::size();
  // float32 / float64 softmax keeps exp(x - max) in the output between sweeps 2 and 3 instead of computing it twice;
  // a 16-bit output cannot hold it without a second rounding, so 16-bit rows recompute it.
  static constexpr bool kKeepExp = std::is_same_v<T, A>;

  // ---- along the last dim (inner == 1): row x of n elements ----

  static A row_max(const T* x, int64_t n) {
    int64_t j = 0;
    V vmax(-std::numeric_limits<A>::infinity());
    for (; j + kW <= n; j += kW) vmax = at::vec::maximum(vmax, load_opmath(x + j));
    A m = reduce_max(vmax);
    for (; j < n; ++j) m = max_nan(m, static_cast<A>(x[j]));
    return m;
  }

  // sum_j f(j) for a vector body f(j) -> V and a scalar tail t(j) -> A, flushed to double every kFlush vectors.
  template <typename F, typename S>
  static double row_sum(int64_t n, const F& f, const S& t) {
    double s = 0;
    int64_t j = 0;
    while (j + kW <= n) {
      V acc(A(0));
      for (int64_t k = 0; k < kFlush && j + kW <= n; ++k, j += kW) acc = acc + f(j);
      s += static_cast<double>(reduce_sum(acc));
    }
    for (; j < n; ++j) s += static_cast<double>(t(j));
    return s;
  }

  template <bool kLog>
  static void forward_row(const T* x, T* y, int64_t n) {
    const A m = row_max(x, n);
    const V vm(m);
    const double s = row_sum(
        n,
        [&](int64_t j) {
          const V e = cpu::vmath::exp(load_opmath(x + j) - vm);
          if constexpr (!kLog && kKeepExp) e.store(y + j);
          return e;
        },
        [&](int64_t j) {
          const A e = std::exp(static_cast<A>(x[j]) - m);
          if constexpr (!kLog && kKeepExp) y[j] = e;
          return e;
        });
    int64_t j = 0;
    if constexpr (kLog) {
      // (x - max) - log(sum), as torch: x - max is exact near the row maximum, where the result is small.
      const A ls = static_cast<A>(std::log(s));
      const V vls(ls);
      for (; j + kW <= n; j += kW) store_opmath(y + j, (load_opmath(x + j) - vm) - vls);
      for (; j < n; ++j) y[j] = static_cast<T>((static_cast<A>(x[j]) - m) - ls);
    } else {
      const A inv = static_cast<A>(1.0 / s);
      const V vinv(inv);
      for (; j + kW <= n; j += kW) {
        const V e = kKeepExp ? V::loadu(y + j) : cpu::vmath::exp(load_opmath(x + j) - vm);
        store_opmath(y + j, e * vinv);
      }
      for (; j < n; ++j) {
        const A e = kKeepExp ? static_cast<A>(y[j]) : std::exp(static_cast<A>(x[j]) - m);
        y[j] = static_cast<T>(e * inv);
      }
    }
  }

  // softmax: gx = y (g - sum(g y)); log_softmax: gx = g - exp(y) sum(g).
  template <bool kLog>
  static void backward_row(const T* g, const T* y, T* gx, int64_t n) {
    const double s = row_sum(
        n,
        [&](int64_t j) { return kLog ? load_opmath(g + j) : load_opmath(g + j) * load_opmath(y + j); },
        [&](int64_t j) { return kLog ? static_cast<A>(g[j]) : static_cast<A>(g[j]) * static_cast<A>(y[j]); });
    const A sa = static_cast<A>(s);
    const V vs(sa);
    int64_t j = 0;
    for (; j + kW <= n; j += kW) {
      const V gj = load_opmath(g + j), yj = load_opmath(y + j);
      store_opmath(gx + j, kLog ? gj - cpu::vmath::exp(yj) * vs : yj * (gj - vs));
    }
    for (; j < n; ++j) {
      const A gj = static_cast<A>(g[j]), yj = static_cast<A>(y[j]);
      gx[j] = static_cast<T>(kLog ? gj - std::exp(yj) * sa : yj * (gj - sa));
    }
  }

  // ---- along another dim (inner > 1): the columns c .. c + kW of one [dim, inner] slab, lane by lane ----

  template <bool kLog>
  static void forward_columns(const T* x, T* y, int64_t dim, int64_t inner) {
    V vm = load_opmath(x);
    for (int64_t d = 1; d < dim; ++d) vm = at::vec::maximum(vm, load_opmath(x + d * inner));
    V vs(A(0));
    for (int64_t d = 0; d < dim; ++d) {
      const V e = cpu::vmath::exp(load_opmath(x + d * inner) - vm);
      if constexpr (!kLog && kKeepExp) e.store(y + d * inner);
      vs = vs + e;
    }
    if constexpr (kLog) {
      const V vls = vs.log();
      for (int64_t d = 0; d < dim; ++d) store_opmath(y + d * inner, (load_opmath(x + d * inner) - vm) - vls);
    } else {
      const V vinv = vs.reciprocal();
      for (int64_t d = 0; d < dim; ++d) {
        const V e = kKeepExp ? V::loadu(y + d * inner) : cpu::vmath::exp(load_opmath(x + d * inner) - vm);
        store_opmath(y + d * inner, e * vinv);
      }
    }
  }

  template <bool kLog>
  static void forward_column(const T* x, T* y, int64_t dim, int64_t inner) {  // one column (the tail of a slab)
    A m = static_cast<A>(x[0]);
    for (int64_t d = 1; d < dim; ++d) m = max_nan(m, static_cast<A>(x[d * inner]));
    A s = 0;
    for (int64_t d = 0; d < dim; ++d) s += std::exp(static_cast<A>(x[d * inner]) - m);
    const A ls = std::log(s), inv = A(1) / s;
    for (int64_t d = 0; d < dim; ++d) {
      const A xd = static_cast<A>(x[d * inner]) - m;
      y[d * inner] = static_cast<T>(kLog ? xd - ls : std::exp(xd) * inv);
    }
  }

  template <bool kLog>
  static void backward_columns(const T* g, const T* y, T* gx, int64_t dim, int64_t inner) {
    V vs(A(0));
    for (int64_t d = 0; d < dim; ++d) {
      vs = vs + (kLog ? load_opmath(g + d * inner) : load_opmath(g + d * inner) * load_opmath(y + d * inner));
    }
    for (int64_t d = 0; d < dim; ++d) {
      const V gd = load_opmath(g + d * inner), yd = load_opmath(y + d * inner);
      store_opmath(gx + d * inner, kLog ? gd - cpu::vmath::exp(yd) * vs : yd * (gd - vs));
    }
  }

  template <bool kLog>
  static void backward_column(const T* g, const T* y, T* gx, int64_t dim, int64_t inner) {
    A s = 0;
    for (int64_t d = 0; d < dim; ++d) {
      s += kLog ? static_cast<A>(g[d * inner]) : static_cast<A>(g[d * inner]) * static_cast<A>(y[d * inner]);
    }
    for (int64_t d = 0; d < dim; ++d) {
      const A gd = static_cast<A>(g[d * inner]), yd = static_cast<A>(y[d * inner]);
      gx[d * inner] = static_cast<T>(kLog ? gd - std::exp(yd) * s : yd * (gd - s));
    }
  }

  // Runs row(offset) for every last-dim row, or columns(offset) / column(offset) for every slab position, in
  // parallel tasks of about kElementwiseGrain elements. Offsets are element offsets of the row / column start.
  template <typename Row, typename Cols, typename Col>
  static void for_each(SoftmaxGeometry geo, const Row& row, const Cols& columns, const Col& column) {
    if (geo.inner == 1) {
      const int64_t grain = std::max<int64_t>(1, cpu::kElementwiseGrain / std::max<int64_t>(geo.dim, 1));
      at::parallel_for(0, geo.outer, grain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) row(r * geo.dim);
      });
      return;
    }
    // Work items: (outer index, block of kW columns); the last block of a slab may be a partial one.
    const int64_t blocks = (geo.inner + kW - 1) / kW;
    const int64_t grain = std::max<int64_t>(1, cpu::kElementwiseGrain / std::max<int64_t>(geo.dim * kW, 1));
    at::parallel_for(0, geo.outer * blocks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) {
        const int64_t o = w / blocks, c0 = (w % blocks) * kW;
        const int64_t base = o * geo.dim * geo.inner;
        if (c0 + kW <= geo.inner) {
          columns(base + c0);
        } else {
          for (int64_t c = c0; c < geo.inner; ++c) column(base + c);
        }
      }
    });
  }

  template <bool kLog>
  static void forward(SoftmaxGeometry geo, const T* x, T* y) {
    for_each(
        geo, [&](int64_t o) { forward_row<kLog>(x + o, y + o, geo.dim); },
        [&](int64_t o) { forward_columns<kLog>(x + o, y + o, geo.dim, geo.inner); },
        [&](int64_t o) { forward_column<kLog>(x + o, y + o, geo.dim, geo.inner); });
  }

  template <bool kLog>
  static void backward(SoftmaxGeometry geo, const T* g, const T* y, T* gx) {
    for_each(
        geo, [&](int64_t o) { backward_row<kLog>(g + o, y + o, gx + o, geo.dim); },
        [&](int64_t o) { backward_columns<kLog>(g + o, y + o, gx + o, geo.dim, geo.inner); },
        [&](int64_t o) { backward_column<kLog>(g + o, y + o, gx + o, geo.dim, geo.inner); });
  }
};

struct CpuBackend {
  static void forward(bool log, SoftmaxGeometry geo, const at::Tensor& x, at::Tensor& y) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastops_softmax", [&] {
      using K = SoftmaxKernels<scalar_t>;
      const auto* xp = x.const_data_ptr<scalar_t>();
      auto* yp = y.data_ptr<scalar_t>();
      log ? K::template forward<true>(geo, xp, yp) : K::template forward<false>(geo, xp, yp);
    });
  }

  static void backward(bool log, SoftmaxGeometry geo, const at::Tensor& grad, const at::Tensor& y,
                       at::Tensor& grad_input) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "fastops_softmax_backward", [&] {
      using K = SoftmaxKernels<scalar_t>;
      const auto* gp = grad.const_data_ptr<scalar_t>();
      const auto* yp = y.const_data_ptr<scalar_t>();
      auto* gxp = grad_input.data_ptr<scalar_t>();
      log ? K::template backward<true>(geo, gp, yp, gxp) : K::template backward<false>(geo, gp, yp, gxp);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CPU, m) { register_softmax_kernels<CpuBackend>(m); }

}  // namespace fastops

// CPU activation kernels: vectorised, multi-threaded loops (common/cpu_elementwise.h). Each activation pairs the
// scalar math shared with CUDA (activation_math.h, used for tails) with a Vectorized body written here with torch's
// own vector formulas; float32 exp/erf/tanh come from common/cpu_vec_math.h (inlined, no out-of-line Sleef call).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "activations/activation_math.h"
#include "activations/activations.h"
#include "common/cpu_elementwise.h"
#include "common/cpu_vec_math.h"

namespace fastops {
namespace {

using cpu::load_opmath;
using cpu::opmath_t;
using cpu::store_opmath;
using cpu::Vectorized;

// The vector bodies are forced inline: left to itself GCC kept gelu's backward (erf and exp inlined into it) out of
// line, and every vector register is caller-saved, so the loop spilled its state around each call: float32 gelu
// backward at 2^20 elements, one thread, took 7.3 ms at the AVX2 level and 3.9 ms at AVX-512 (torch: 3.1, 2.7).

// erf for gelu: results stored in 16 bits need far less than float's (see cpu::vmath::erf_coarse); float32 takes the
// same formula where torch's own kernel does (p.coarse_erf: coarse_gelu_erf in activations.h), float64 torch's erf.
template <typename T, typename V, typename... E>
C10_ALWAYS_INLINE V gelu_erf(const ActParams& p, const V& z, const E&... exp_minus_z_squared) {
  if constexpr (cpu::is_reduced_float<T>) {
    return cpu::vmath::erf_coarse(z, exp_minus_z_squared...);
  } else if constexpr (std::is_same_v<typename V::value_type, float>) {
    return p.coarse_erf ? cpu::vmath::erf_coarse(z, exp_minus_z_squared...)
                        : cpu::vmath::erf(z, exp_minus_z_squared...);
  } else {
    return cpu::vmath::erf(z, exp_minus_z_squared...);
  }
}

// act(x) on a vector of opmath values for results stored as T, with the activation's parameters p (activation_math.h's
// table).
template <Activation A, typename T, typename V>
C10_ALWAYS_INLINE V vec_forward(const V& x, const ActParams& p) {
  using S = typename V::value_type;
  const V one(S(1)), zero(S(0));
  if constexpr (A == Activation::ReLU) {
    // torch's relu, clamp_min(x, 0): -0 and NaN pass through, as in the scalar version. Written as a select: the
    // portable level's at::vec::clamp_min branches per lane (2^24 float32 elements: 65 ms, now 24).
    return cpu::select(cpu::lt(x, zero), zero, x);
  } else if constexpr (A == Activation::GELU) {
    return x * V(S(0.5)) * (one + gelu_erf<T>(p, x * V(S(act::kSqrt1_2))));
  } else if constexpr (A == Activation::GELUTanh) {
    const V x_cube = x * x * x;
    return V(S(0.5)) * x * (one + cpu::vmath::tanh(V(S(act::kSqrt2OverPi)) * (x + V(S(act::kGeluTanhKappa)) * x_cube)));
  } else if constexpr (A == Activation::SiLU) {
    return x / (one + cpu::vmath::exp(x.neg()));
  } else if constexpr (A == Activation::LeakyReLU) {
    return cpu::select(cpu::gt(x, zero), x, x * V(S(p.p0)));
  } else if constexpr (A == Activation::Sigmoid) {
    return (one + cpu::vmath::exp(x.neg())).reciprocal();
  } else if constexpr (A == Activation::Tanh) {
    return cpu::vmath::tanh(x);
  } else if constexpr (A == Activation::ELU) {
    const V scale(S(p.p1)), input_scale(S(p.p2)), negative_scale(S(p.p0) * S(p.p1));
    return cpu::select(cpu::lt(x, zero), cpu::vmath::expm1(x * input_scale) * negative_scale, x * scale);
  } else if constexpr (A == Activation::Softplus) {
    const V beta(S(p.p0));
    return cpu::select(cpu::gt(x * beta, V(S(p.p1))), x, cpu::vmath::exp(x * beta).log1p() / beta);
  } else if constexpr (A == Activation::Mish) {
    return x * cpu::vmath::tanh(cpu::vmath::exp(x).log1p());
  } else if constexpr (A == Activation::Hardswish) {
    return x * at::vec::minimum(at::vec::maximum(x + V(S(3)), zero), V(S(6))) / V(S(6));
  } else if constexpr (A == Activation::Hardsigmoid) {
    return at::vec::minimum(at::vec::maximum(x + V(S(3)), zero), V(S(6))) / V(S(6));
  } else {
    static_assert(A == Activation::Hardtanh);
    return at::vec::clamp(x, V(S(p.p0)), V(S(p.p1)));  // torch's clamp: -0 and NaN pass through
  }
}

// grad * act'(x) from the input x, for results stored as T.
template <Activation A, typename T, typename V>
C10_ALWAYS_INLINE V vec_backward_from_input(const V& g, const V& x, const ActParams& p) {
  using S = typename V::value_type;
  const V one(S(1)), zero(S(0));
  if constexpr (A == Activation::ReLU) {
    return cpu::zero_where(cpu::le(x, zero), g);
  } else if constexpr (A == Activation::GELU) {
    // exp(-x^2 / 2) is the normal pdf's exponential and the one inside erf(x / sqrt(2)): computed once, which took
    // float32 gelu backward (2^20 elements, one thread) from 0.80x to 1.17x torch's speed at the AVX2 level (1.41x at
    // AVX-512).
    const V e = cpu::vmath::exp_nonpositive(x * x * V(S(-0.5)));
    const V cdf = V(S(0.5)) * (one + gelu_erf<T>(p, x * V(S(act::kSqrt1_2)), e));
    const V pdf = V(S(act::kGeluPdfScale)) * e;
    return g * (cdf + x * pdf);
  } else if constexpr (A == Activation::GELUTanh) {
    const V beta(S(act::kSqrt2OverPi));
    const V kappa(S(act::kGeluTanhKappa));
    const V x_sq = x * x;
    const V t = cpu::vmath::tanh(beta * (x + kappa * (x_sq * x)));
    const V left = V(S(0.5)) * x;
    const V right = one + t;
    const V inner_derivative = beta * (one + V(S(3)) * kappa * x_sq);
    return g * (V(S(0.5)) * right + left * at::vec::fnmadd(t, t, one) * inner_derivative);
  } else if constexpr (A == Activation::SiLU) {
    const V s = one / (one + cpu::vmath::exp(x.neg()));
    return g * s * (one + x * (one - s));
  } else if constexpr (A == Activation::LeakyReLU) {
    return cpu::select(cpu::gt(x, zero), g, g * V(S(p.p0)));
  } else if constexpr (A == Activation::Sigmoid) {
    const V s = (one + cpu::vmath::exp(x.neg())).reciprocal();
    return g * (one - s) * s;
  } else if constexpr (A == Activation::Tanh) {
    const V t = cpu::vmath::tanh(x);
    return g * at::vec::fnmadd(t, t, one);
  } else if constexpr (A == Activation::ELU) {
    const V scale(S(p.p1)), input_scale(S(p.p2)), negative_scale(S(p.p0) * S(p.p1));
    return cpu::select(cpu::gt(x, zero), g * scale, g * input_scale * negative_scale * cpu::vmath::exp(x * input_scale));
  } else if constexpr (A == Activation::Softplus) {
    const V beta(S(p.p0));
    const V z = cpu::vmath::exp(x * beta);
    return cpu::select(cpu::gt(x * beta, V(S(p.p1))), g, g * z / (z + one));
  } else if constexpr (A == Activation::Mish) {
    const V s = one / (one + cpu::vmath::exp(x.neg()));
    const V t = cpu::vmath::tanh(cpu::vmath::exp(x).log1p());
    return g * (t + x * s * (one - t * t));
  } else if constexpr (A == Activation::Hardswish) {
    const V three(S(3));
    return cpu::zero_where(cpu::le(x, three.neg()), cpu::select(cpu::ge(x, three), g, g * (x / three + V(S(0.5)))));
  } else if constexpr (A == Activation::Hardsigmoid) {
    const V three(S(3));
    return cpu::keep_where(cpu::gt(x, three.neg()) & cpu::lt(x, three), g * V(S(1.0f / 6.0f)));  // torch's float 1/6
  } else {
    static_assert(A == Activation::Hardtanh);
    return cpu::keep_where(cpu::gt(x, V(S(p.p0))) & cpu::lt(x, V(S(p.p1))), g);  // a NaN x gives 0, as torch's vector body
  }
}

// grad * act'(x) from the output y (activations with backward_reads_output).
template <Activation A, typename V>
C10_ALWAYS_INLINE V vec_backward_from_output(const V& g, const V& y) {
  using S = typename V::value_type;
  if constexpr (A == Activation::ReLU) {
    return cpu::zero_where(cpu::le(y, V(S(0))), g);
  } else if constexpr (A == Activation::Sigmoid) {
    return g * (V(S(1)) - y) * y;
  } else {
    static_assert(A == Activation::Tanh);
    return g * at::vec::fnmadd(y, y, V(S(1)));
  }
}

// Whether act's vector bodies are only comparisons, selects and products (memory-bound): map_elementwise does not
// prefetch for them (see kPrefetchElements there).
constexpr bool is_piecewise(Activation a) {
  return a == Activation::ReLU || a == Activation::LeakyReLU || a == Activation::Hardswish ||
         a == Activation::Hardsigmoid || a == Activation::Hardtanh;
}

// One callable for map_elementwise: the scalar functor for tails, the vector body for the rest.
template <typename T, Activation A>
struct ForwardOp : act::Forward<A> {
  static constexpr bool kPrefetchInputs = !is_piecewise(A);
  using V = Vectorized<opmath_t<T>>;
  using act::Forward<A>::operator();
  V operator()(const V& x) const { return vec_forward<A, T>(x, this->params); }
};

template <typename T, Activation A>
struct BackwardOp : act::Backward<A> {
  // A backward from the output (sigmoid, tanh: two multiplies) is memory-bound like the piecewise ones: with the
  // prefetch, float32 sigmoid_backward on 2^22 elements (AMD EPYC, 2 threads) ran at 0.79x torch's, tanh's at 0.82x.
  static constexpr bool kPrefetchInputs = !is_piecewise(A) && !backward_reads_output(A);
  using V = Vectorized<opmath_t<T>>;
  using act::Backward<A>::operator();
  V operator()(const V& g, const V& saved) const {
    if constexpr (backward_reads_output(A)) {
      return vec_backward_from_output<A>(g, saved);
    } else {
      return vec_backward_from_input<A, T>(g, saved, this->params);
    }
  }
};

// grad * act'(x) from the input x: bias_act's backward without a bias.
template <typename T, Activation A>
struct BackwardFromInputOp {
  static constexpr bool kPrefetchInputs = !is_piecewise(A);
  using M = opmath_t<T>;
  using V = Vectorized<M>;
  ActParams params;
  V operator()(const V& g, const V& x) const { return vec_backward_from_input<A, T>(g, x, params); }
  M operator()(M g, M x) const { return act::backward_from_input<A>(g, x, params); }
};

#define FASTOPS_DISPATCH_FLOATS(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

// Rows per parallel task so that each task has about kElementwiseGrain elements.
inline int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, cpu::kElementwiseGrain / std::max<int64_t>(cols, 1)); }

struct CpuBackend {
  static void forward(Activation act, const at::Tensor& x, at::Tensor& y, const ActParams& params) {
    FASTOPS_DISPATCH_FLOATS(x.scalar_type(), "fastops_activation_forward", [&] {
      dispatch_activation(act, [&](auto a) {
        constexpr Activation A = decltype(a)::value;
        cpu::map_elementwise(x.numel(), y.data_ptr<scalar_t>(), ForwardOp<scalar_t, A>{{params}},
                             x.const_data_ptr<scalar_t>());
      });
    });
  }

  static void backward(Activation act, const at::Tensor& grad, const at::Tensor& saved, at::Tensor& grad_input,
                       const ActParams& params) {
    FASTOPS_DISPATCH_FLOATS(grad.scalar_type(), "fastops_activation_backward", [&] {
      dispatch_activation(act, [&](auto a) {
        constexpr Activation A = decltype(a)::value;
        cpu::map_elementwise(grad.numel(), grad_input.data_ptr<scalar_t>(), BackwardOp<scalar_t, A>{{params}},
                             grad.const_data_ptr<scalar_t>(), saved.const_data_ptr<scalar_t>());
      });
    });
  }

  // Parallel over rows; each row is one vectorised pass with the bias row (cached) added in opmath.
  static void bias_act_forward(Activation act, const at::Tensor& x, const at::Tensor& bias, at::Tensor& y,
                               const ActParams& params) {
    const int64_t cols = bias.numel(), rows = x.numel() / cols;
    FASTOPS_DISPATCH_FLOATS(x.scalar_type(), "fastops_bias_act_forward", [&] {
      using M = opmath_t<scalar_t>;
      using V = Vectorized<M>;
      constexpr int64_t kWidth = V::size();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      const scalar_t* bp = bias.const_data_ptr<scalar_t>();
      scalar_t* yp = y.data_ptr<scalar_t>();
      dispatch_fused_activation(act, [&](auto a) {
        constexpr Activation A = decltype(a)::value;
        at::parallel_for(0, rows, row_grain(cols), [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const scalar_t* xr = xp + r * cols;
            scalar_t* yr = yp + r * cols;
            int64_t j = 0;
            // Two independent vectors per step, stored together, as cpu::map_elementwise does. One vector a step
            // (bfloat16 stored a half-width vector at a time) left bfloat16 bias_gelu's forward behind torch's two
            // passes, x + b then gelu: [2048, 2048] on one AVX-512 thread took 2.04 ms, now 1.79 (torch 1.9-2.1).
            for (; j + 2 * kWidth <= cols; j += 2 * kWidth) {
              const V y0 = vec_forward<A, scalar_t>(load_opmath(xr + j) + load_opmath(bp + j), params);
              const V y1 =
                  vec_forward<A, scalar_t>(load_opmath(xr + j + kWidth) + load_opmath(bp + j + kWidth), params);
              cpu::store_opmath2(yr + j, y0, y1);
            }
            for (; j + kWidth <= cols; j += kWidth) {
              store_opmath(yr + j, vec_forward<A, scalar_t>(load_opmath(xr + j) + load_opmath(bp + j), params));
            }
            for (; j < cols; ++j) yr[j] = static_cast<scalar_t>(act::forward<A>(M(xr[j]) + M(bp[j]), params));
          }
        });
      });
    });
  }

  // grad_x and grad_bias in one read of grad and x: cpu::column_sums hands out chunks of rows, each written to grad_x
  // and summed into its own partial grad_bias row in a wider type (a float32 sum over thousands of rows would lose
  // to torch's cascade sum); the partial rows are summed in chunk order, so grad_bias does not depend on the thread
  // count.
  static void bias_act_backward(Activation act, const at::Tensor& grad, const at::Tensor& x,
                                const at::Tensor* bias_arg, at::Tensor& grad_x, at::Tensor* grad_bias_arg,
                                const ActParams& params) {
    if (bias_arg == nullptr) {
      FASTOPS_DISPATCH_FLOATS(x.scalar_type(), "fastops_act_backward_from_input", [&] {
        dispatch_fused_activation(act, [&](auto a) {
          cpu::map_elementwise(x.numel(), grad_x.data_ptr<scalar_t>(),
                               BackwardFromInputOp<scalar_t, decltype(a)::value>{params},
                               grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>());
        });
      });
      return;
    }
    const at::Tensor& bias = *bias_arg;
    at::Tensor& grad_bias = *grad_bias_arg;
    const int64_t cols = bias.numel(), rows = x.numel() / cols;
    FASTOPS_DISPATCH_FLOATS(x.scalar_type(), "fastops_bias_act_backward", [&] {
      using M = opmath_t<scalar_t>;
      using V = Vectorized<M>;
      constexpr int64_t kWidth = V::size();
      const scalar_t* gp = grad.const_data_ptr<scalar_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      const scalar_t* bp = bias.const_data_ptr<scalar_t>();
      scalar_t* gxp = grad_x.data_ptr<scalar_t>();
      scalar_t* gbp = grad_bias.data_ptr<scalar_t>();
      dispatch_fused_activation(act, [&](auto a) {
        constexpr Activation A = decltype(a)::value;
        const auto add_rows = [&](int64_t r0, int64_t r1, cpu::column_sum_t<scalar_t>* sum) {
          std::vector<M> row(static_cast<size_t>(cols));  // a row's grad_x before rounding to T
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t o = r * cols;
            int64_t j = 0;
            for (; j + kWidth <= cols; j += kWidth) {
              const V gx = vec_backward_from_input<A, scalar_t>(load_opmath(gp + o + j),
                                                      load_opmath(xp + o + j) + load_opmath(bp + j), params);
              store_opmath(gxp + o + j, gx);
              gx.store(row.data() + j);
            }
            for (; j < cols; ++j) {
              row[j] = act::backward_from_input<A>(M(gp[o + j]), M(xp[o + j]) + M(bp[j]), params);
              gxp[o + j] = static_cast<scalar_t>(row[j]);
            }
            for (j = 0; j < cols; ++j) sum[j] += row[j];
          }
        };
        cpu::column_sums<cpu::column_sum_t<scalar_t>>(
            rows, cols, add_rows, [&](int64_t j, auto total) { gbp[j] = static_cast<scalar_t>(total); });
      });
    });
  }

  static void glu_forward(Activation act, const at::Tensor& like, GluRows g, const void* gate, const void* up,
                          void* out) {
    FASTOPS_DISPATCH_FLOATS(like.scalar_type(), "fastops_glu_forward", [&] {
      using M = opmath_t<scalar_t>;
      using V = Vectorized<M>;
      constexpr int64_t kWidth = V::size();
      const auto* gp = static_cast<const scalar_t*>(gate);
      const auto* up_p = static_cast<const scalar_t*>(up);
      auto* yp = static_cast<scalar_t*>(out);
      dispatch_fused_activation(act, [&](auto a) {
        constexpr Activation A = decltype(a)::value;
        at::parallel_for(0, g.rows, row_grain(g.cols), [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t i = r * g.in_stride, o = r * g.cols;
            int64_t j = 0;
            for (; j + kWidth <= g.cols; j += kWidth) {
              store_opmath(yp + o + j,
                           vec_forward<A, scalar_t>(load_opmath(gp + i + j), ActParams{}) * load_opmath(up_p + i + j));
            }
            for (; j < g.cols; ++j) {
              yp[o + j] = static_cast<scalar_t>(act::forward<A>(M(gp[i + j]), ActParams{}) * M(up_p[i + j]));
            }
          }
        });
      });
    });
  }

  // d(act(gate) * up): grad_gate = grad * up * act'(gate), grad_up = grad * act(gate).
  static void glu_backward(Activation act, const at::Tensor& like, GluRows g, const void* grad_output, const void* gate,
                           const void* up, void* grad_gate, void* grad_up) {
    FASTOPS_DISPATCH_FLOATS(like.scalar_type(), "fastops_glu_backward", [&] {
      using M = opmath_t<scalar_t>;
      using V = Vectorized<M>;
      constexpr int64_t kWidth = V::size();
      const auto* dp = static_cast<const scalar_t*>(grad_output);
      const auto* gp = static_cast<const scalar_t*>(gate);
      const auto* up_p = static_cast<const scalar_t*>(up);
      auto* ggp = static_cast<scalar_t*>(grad_gate);
      auto* gup = static_cast<scalar_t*>(grad_up);
      dispatch_fused_activation(act, [&](auto a) {
        constexpr Activation A = decltype(a)::value;
        at::parallel_for(0, g.rows, row_grain(g.cols), [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t i = r * g.in_stride, o = r * g.cols;
            int64_t j = 0;
            for (; j + kWidth <= g.cols; j += kWidth) {
              const V d = load_opmath(dp + o + j), x = load_opmath(gp + i + j), u = load_opmath(up_p + i + j);
              store_opmath(ggp + i + j, vec_backward_from_input<A, scalar_t>(d * u, x, ActParams{}));
              store_opmath(gup + i + j, d * vec_forward<A, scalar_t>(x, ActParams{}));
            }
            for (; j < g.cols; ++j) {
              const M d = M(dp[o + j]), x = M(gp[i + j]), u = M(up_p[i + j]);
              ggp[i + j] = static_cast<scalar_t>(act::backward_from_input<A>(d * u, x, ActParams{}));
              gup[i + j] = static_cast<scalar_t>(d * act::forward<A>(x, ActParams{}));
            }
          }
        });
      });
    });
  }
};

}  // namespace

void bias_act_cpu(Activation act, const at::Tensor& x, const at::Tensor* bias, at::Tensor& y) {
  const ActParams params = gelu_params(act, x, /*backward=*/false);  // torch's gelu(linear(...)) sees x's layout
  if (bias != nullptr) {
    CpuBackend::bias_act_forward(act, x, *bias, y, params);
  } else {
    CpuBackend::forward(act, x, y, params);
  }
}

TORCH_LIBRARY_IMPL(fastops, CPU, m) { ActivationOps<CpuBackend>::register_kernels(m); }

}  // namespace fastops

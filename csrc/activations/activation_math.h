// Scalar activation math shared by the CPU tail loops and the CUDA kernels (torch-free, host + device), so both
// backends round the same way. T is the math type: float for 16-bit and float32 tensors, double for float64.
// The formulas are torch's own (aten/src/ATen/native/cuda/ActivationGeluKernel.cu etc.), operation for operation,
// so that results agree with torch to the last bit where the same libm is used.
#pragma once

#include "common/host_device.h"

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace fastops {

// The activations the kernels implement; the backends switch on it. GELU is the exact (erf) form, GELUTanh torch's
// approximate='tanh'. LeakyReLU reads its negative slope from the launch's `param`.
enum class Activation : int32_t { ReLU = 0, GELU, GELUTanh, SiLU, LeakyReLU, Sigmoid, Tanh };

// Whether the standalone op's backward reads the forward *output* (as torch's threshold/sigmoid/tanh backward do:
// cheaper than recomputing exp/tanh) rather than the input.
constexpr bool backward_reads_output(Activation a) {
  return a == Activation::ReLU || a == Activation::Sigmoid || a == Activation::Tanh;
}

// Calls fn(std::integral_constant<Activation, A>{}) for the runtime value `act`, so kernels are instantiated per
// activation (host code only).
template <typename Fn>
inline void dispatch_activation(Activation act, Fn&& fn) {
  using std::integral_constant;
  switch (act) {
    case Activation::ReLU: return fn(integral_constant<Activation, Activation::ReLU>{});
    case Activation::GELU: return fn(integral_constant<Activation, Activation::GELU>{});
    case Activation::GELUTanh: return fn(integral_constant<Activation, Activation::GELUTanh>{});
    case Activation::SiLU: return fn(integral_constant<Activation, Activation::SiLU>{});
    case Activation::LeakyReLU: return fn(integral_constant<Activation, Activation::LeakyReLU>{});
    case Activation::Sigmoid: return fn(integral_constant<Activation, Activation::Sigmoid>{});
    case Activation::Tanh: return fn(integral_constant<Activation, Activation::Tanh>{});
  }
}

}  // namespace fastops

namespace fastops::act {

// Overloads that pick the float or double libm function on host and device alike.
FASTOPS_HD float erf_(float x) { return ::erff(x); }
FASTOPS_HD double erf_(double x) { return ::erf(x); }
FASTOPS_HD float exp_(float x) { return ::expf(x); }
FASTOPS_HD double exp_(double x) { return ::exp(x); }
FASTOPS_HD float tanh_(float x) { return ::tanhf(x); }
FASTOPS_HD double tanh_(double x) { return ::tanh(x); }
FASTOPS_HD float fma_(float a, float b, float c) { return ::fmaf(a, b, c); }
FASTOPS_HD double fma_(double a, double b, double c) { return ::fma(a, b, c); }

// 1 - t*t with one rounding: tanh' near saturation (t -> +-1) is all cancellation, and torch's compiled kernels
// contract it into an FMA too.
template <typename T>
FASTOPS_HD T one_minus_square(T t) { return fma_(-t, t, T(1)); }

// torch's constants, built from the same <cmath> M_* values in the same order so they round identically.
constexpr double kSqrt2 = 1.41421356237309504880;       // M_SQRT2
constexpr double kSqrt1_2 = 0.70710678118654752440;     // M_SQRT1_2
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;  // M_2_SQRTPI
constexpr double kGeluPdfScale = kTwoOverSqrtPi * kSqrt1_2 * 0.5;  // 1/sqrt(2*pi): the normal pdf's constant
constexpr double kSqrt2OverPi = kSqrt2 * kTwoOverSqrtPi * 0.5;     // sqrt(2/pi), gelu tanh's inner scale
constexpr double kGeluTanhKappa = 0.044715;

template <typename T>
FASTOPS_HD T sigmoid(T x) { return T(1) / (T(1) + exp_(-x)); }

// act(x). `param` is LeakyReLU's negative slope (ignored by the others).
template <Activation A, typename T>
FASTOPS_HD T forward(T x, T param) {
  if constexpr (A == Activation::ReLU) {
    return x <= T(0) ? T(0) : x;  // false for NaN, so NaN passes through as in torch
  } else if constexpr (A == Activation::GELU) {
    return x * T(0.5) * (T(1) + erf_(x * T(kSqrt1_2)));
  } else if constexpr (A == Activation::GELUTanh) {
    const T x_cube = x * x * x;
    const T inner = T(kSqrt2OverPi) * (x + T(kGeluTanhKappa) * x_cube);
    return T(0.5) * x * (T(1) + tanh_(inner));
  } else if constexpr (A == Activation::SiLU) {
    return x / (T(1) + exp_(-x));
  } else if constexpr (A == Activation::LeakyReLU) {
    return x > T(0) ? x : x * param;
  } else if constexpr (A == Activation::Sigmoid) {
    return sigmoid(x);
  } else {
    static_assert(A == Activation::Tanh);
    return tanh_(x);
  }
}

// act(x) for an activation chosen at run time (a GEMM epilogue that serves several): one warp-uniform branch.
template <typename T>
FASTOPS_HD T forward_dynamic(Activation a, T x, T param) {
  switch (a) {
    case Activation::ReLU: return forward<Activation::ReLU>(x, param);
    case Activation::GELU: return forward<Activation::GELU>(x, param);
    case Activation::GELUTanh: return forward<Activation::GELUTanh>(x, param);
    case Activation::SiLU: return forward<Activation::SiLU>(x, param);
    case Activation::LeakyReLU: return forward<Activation::LeakyReLU>(x, param);
    case Activation::Sigmoid: return forward<Activation::Sigmoid>(x, param);
    case Activation::Tanh: return forward<Activation::Tanh>(x, param);
  }
  return x;
}

// grad * act'(x), from the forward's input x.
template <Activation A, typename T>
FASTOPS_HD T backward_from_input(T grad, T x, T param) {
  if constexpr (A == Activation::ReLU) {
    return x <= T(0) ? T(0) : grad;
  } else if constexpr (A == Activation::GELU) {
    const T cdf = T(0.5) * (T(1) + erf_(x * T(kSqrt1_2)));
    const T pdf = T(kGeluPdfScale) * exp_(x * x * T(-0.5));
    return grad * (cdf + x * pdf);
  } else if constexpr (A == Activation::GELUTanh) {
    const T x_sq = x * x;
    const T inner = T(kSqrt2OverPi) * (x + T(kGeluTanhKappa) * x_sq * x);
    const T t = tanh_(inner);
    const T left = T(0.5) * x;
    const T right = T(1) + t;
    const T inner_derivative = T(kSqrt2OverPi) * (T(1) + T(3) * T(kGeluTanhKappa) * x_sq);
    return grad * (T(0.5) * right + left * one_minus_square(t) * inner_derivative);
  } else if constexpr (A == Activation::SiLU) {
    const T s = sigmoid(x);
    return grad * s * (T(1) + x * (T(1) - s));
  } else if constexpr (A == Activation::LeakyReLU) {
    return x > T(0) ? grad : grad * param;
  } else if constexpr (A == Activation::Sigmoid) {
    const T s = sigmoid(x);
    return grad * (T(1) - s) * s;
  } else {
    static_assert(A == Activation::Tanh);
    return grad * one_minus_square(tanh_(x));
  }
}

// grad * act'(x), from the forward's output y (only for activations with backward_reads_output).
template <Activation A, typename T>
FASTOPS_HD T backward_from_output(T grad, T y) {
  static_assert(backward_reads_output(A));
  if constexpr (A == Activation::ReLU) {
    return y <= T(0) ? T(0) : grad;  // NaN outputs pass the gradient, like threshold_backward
  } else if constexpr (A == Activation::Sigmoid) {
    return grad * (T(1) - y) * y;
  } else {
    return grad * one_minus_square(y);
  }
}

// Functors for the elementwise maps. `param` travels as double and is narrowed to the math type once per call
// (the compiler hoists it out of the loops).
template <Activation A>
struct Forward {
  double param = 0.0;
  template <typename T>
  FASTOPS_HD T operator()(T x) const { return forward<A>(x, T(param)); }
};

template <Activation A>
struct Backward {
  double param = 0.0;
  // `saved` is the output when backward_reads_output(A), else the input.
  template <typename T>
  FASTOPS_HD T operator()(T grad, T saved) const {
    if constexpr (backward_reads_output(A)) {
      return backward_from_output<A>(grad, saved);
    } else {
      return backward_from_input<A>(grad, saved, T(param));
    }
  }
};

}  // namespace fastops::act

namespace fastops {

// Row view of a gated unit's operands (swiglu/geglu): `rows` x `cols` elements, gate and up (and their gradients)
// `in_stride` elements apart from one row to the next: cols for two separate tensors, 2*cols for the packed
// [..., 2H] form whose halves are read in place. The output and grad_output are contiguous [rows, cols].
struct GluRows {
  int64_t rows;
  int64_t cols;
  int64_t in_stride;
};

}  // namespace fastops

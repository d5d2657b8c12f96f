// Scalar activation math shared by the CPU tail loops and the CUDA kernels (torch-free, host + device), so both
// backends round the same way. T is the math type: float for 16-bit and float32 tensors, double for float64.
// The formulas are torch's own (aten/src/ATen/native/cpu/Activation.cpp, cuda/ActivationGeluKernel.cu etc.),
// operation for operation, so that results agree with torch to the last bit where the same libm is used.
#pragma once

#include "common/host_device.h"

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace fastops {

// ---- the activation table ----
// One row per activation the kernels implement. The enum, the dispatch, the names the fused ops' `act` argument
// takes, the standalone ops' schemas (csrc/fastops.cpp), their kernels and autograd registrations are generated
// from it. A new activation is a row here, a row in fastops/ops/activations.py's ACTIVATIONS, and its math below
// (scalar here, vector in activations_cpu.cpp, ATen in activation_aten.h).
//
// X(Enum, "name", "parameters", saved, op, fusion):
//   name        the op's name, and the fused ops' `act` value;
//   parameters  schema text of the op's float parameters after x, each ", float name=default", bound in order to
//               ActParams p0, p1, p2;
//   saved       what the backward reads: kInput (x) or kOutput (the result, as torch's threshold / sigmoid / tanh
//               backward do: cheaper than recomputing exp or tanh, and no copy of the input is kept);
//   op          kOwnOp: fastops::<name>(Tensor x, <parameters>) and fastops::<name>_backward(Tensor grad_output,
//               Tensor x or result, <parameters>) are generated; kGeluOp: reached through gelu(x, approximate),
//               whose string argument picks GELU ('none') or GELUTanh ('tanh');
//   fusion      kGemm: in linear_act's GEMM epilogue, bias_act and the gated units; kRows: in bias_act and the
//               gated units; kNone: its own op only. Fused activations take no parameters.
#define FASTOPS_ACTIVATIONS(X)                                                                                 \
  /* max(x, 0), NaN propagated */                                                                              \
  X(ReLU, "relu", "", kOutput, kOwnOp, kGemm)                                                                  \
  /* x * Phi(x), the exact erf CDF */                                                                          \
  X(GELU, "gelu", "", kInput, kGeluOp, kGemm)                                                                  \
  /* torch's approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */                            \
  X(GELUTanh, "gelu_tanh", "", kInput, kGeluOp, kGemm)                                                         \
  /* x * sigmoid(x) */                                                                                         \
  X(SiLU, "silu", "", kInput, kOwnOp, kGemm)                                                                   \
  /* x if x > 0 else x * negative_slope */                                                                     \
  X(LeakyReLU, "leaky_relu", ", float negative_slope=0.01", kInput, kOwnOp, kNone)                             \
  /* 1 / (1 + exp(-x)) */                                                                                      \
  X(Sigmoid, "sigmoid", "", kOutput, kOwnOp, kRows)                                                            \
  X(Tanh, "tanh", "", kOutput, kOwnOp, kRows)                                                                  \
  /* scale * x if x >= 0 else scale * alpha * expm1(x * input_scale): aten::elu, which selu and celu are */    \
  X(ELU, "elu", ", float alpha=1.0, float scale=1.0, float input_scale=1.0", kInput, kOwnOp, kNone)            \
  /* log(1 + exp(beta x)) / beta, or x where beta x > threshold */                                             \
  X(Softplus, "softplus", ", float beta=1.0, float threshold=20.0", kInput, kOwnOp, kNone)                     \
  /* x * tanh(softplus(x)) */                                                                                  \
  X(Mish, "mish", "", kInput, kOwnOp, kNone)                                                                   \
  /* x * relu6(x + 3) / 6 */                                                                                   \
  X(Hardswish, "hardswish", "", kInput, kOwnOp, kNone)                                                         \
  /* relu6(x + 3) / 6 */                                                                                       \
  X(Hardsigmoid, "hardsigmoid", "", kInput, kOwnOp, kNone)                                                     \
  /* x clamped to [min_val, max_val], NaN propagated (relu6 is hardtanh(x, 0, 6)) */                           \
  X(Hardtanh, "hardtanh", ", float min_val=-1.0, float max_val=1.0", kInput, kOwnOp, kNone)

enum class Activation : int32_t {
#define FASTOPS_ACTIVATION_ENUM(Enum, ...) Enum,
  FASTOPS_ACTIVATIONS(FASTOPS_ACTIVATION_ENUM)
#undef FASTOPS_ACTIVATION_ENUM
};

namespace act {

enum Saved { kInput, kOutput };
enum OpKind { kOwnOp, kGeluOp };
enum Fusion { kNone, kRows, kGemm };

struct Row {
  const char* name;
  const char* params;
  Saved saved;
  OpKind op;
  Fusion fusion;
};

inline constexpr Row kTable[] = {
#define FASTOPS_ACTIVATION_ROW(Enum, name, params, saved, op, fusion) {name, params, saved, op, fusion},
    FASTOPS_ACTIVATIONS(FASTOPS_ACTIVATION_ROW)
#undef FASTOPS_ACTIVATION_ROW
};

inline constexpr int kCount = static_cast<int>(sizeof(kTable) / sizeof(kTable[0]));

constexpr const Row& row(Activation a) { return kTable[static_cast<int>(a)]; }

// The number of float parameters: one ", float" per parameter in the schema text.
constexpr int param_count(Activation a) {
  int n = 0;
  for (const char* p = row(a).params; *p != '\0'; ++p) n += *p == ',';
  return n;
}

}  // namespace act

constexpr const char* activation_name(Activation a) { return act::row(a).name; }
constexpr bool backward_reads_output(Activation a) { return act::row(a).saved == act::kOutput; }
constexpr bool has_own_op(Activation a) { return act::row(a).op == act::kOwnOp; }
constexpr bool fused_in_rows(Activation a) { return act::row(a).fusion != act::kNone; }
constexpr bool fused_in_gemm(Activation a) { return act::row(a).fusion == act::kGemm; }
constexpr int activation_param_count(Activation a) { return act::param_count(a); }

// An activation's float parameters as the op received them (double), in the order of its schema; unused ones are 0.
// Each kernel narrows them to its math type once per call.
struct ActParams {
  double p0 = 0.0, p1 = 0.0, p2 = 0.0;
  // gelu's float32 erf on the CPU: the Abramowitz-Stegun formula where torch's own kernel takes it (coarse_gelu_erf
  // in activations.h), else one within about an ulp.
  bool coarse_erf = false;
};

// Calls fn(std::integral_constant<Activation, A>{}) for the runtime value `act`, so kernels are instantiated per
// activation (host code only).
template <typename Fn>
inline void dispatch_activation(Activation act, Fn&& fn) {
  switch (act) {
#define FASTOPS_ACTIVATION_CASE(Enum, ...) \
  case Activation::Enum: return fn(std::integral_constant<Activation, Activation::Enum>{});
    FASTOPS_ACTIVATIONS(FASTOPS_ACTIVATION_CASE)
#undef FASTOPS_ACTIVATION_CASE
  }
}

// Calls fn(std::integral_constant<Activation, A>{}) for every activation of the table (host code: registrations).
template <typename Fn, size_t... I>
inline void for_each_activation(Fn&& fn, std::index_sequence<I...>) {
  (fn(std::integral_constant<Activation, static_cast<Activation>(I)>{}), ...);
}

template <typename Fn>
inline void for_each_activation(Fn&& fn) {
  for_each_activation(fn, std::make_index_sequence<act::kCount>{});
}

// dispatch_activation for the fused kernels (bias_act, the gated units): instantiated only for the activations the
// table fuses, which are all the fused ops' `act` argument can name (activation_named).
template <typename Fn>
inline void dispatch_fused_activation(Activation act, Fn&& fn) {
  dispatch_activation(act, [&](auto a) {
    if constexpr (fused_in_rows(decltype(a)::value)) fn(a);
  });
}

}  // namespace fastops

namespace fastops::act {

// Overloads that pick the float or double libm function on host and device alike.
FASTOPS_HD float erf_(float x) { return ::erff(x); }
FASTOPS_HD double erf_(double x) { return ::erf(x); }
FASTOPS_HD float exp_(float x) { return ::expf(x); }
FASTOPS_HD double exp_(double x) { return ::exp(x); }
FASTOPS_HD float expm1_(float x) { return ::expm1f(x); }
FASTOPS_HD double expm1_(double x) { return ::expm1(x); }
FASTOPS_HD float log1p_(float x) { return ::log1pf(x); }
FASTOPS_HD double log1p_(double x) { return ::log1p(x); }
FASTOPS_HD float tanh_(float x) { return ::tanhf(x); }
FASTOPS_HD double tanh_(double x) { return ::tanh(x); }
FASTOPS_HD float fma_(float a, float b, float c) { return ::fmaf(a, b, c); }
FASTOPS_HD double fma_(double a, double b, double c) { return ::fma(a, b, c); }

// 1 - t*t with one rounding: tanh' near saturation (t -> +-1) is all cancellation, and torch's compiled kernels
// contract it into an FMA too.
template <typename T>
FASTOPS_HD T one_minus_square(T t) { return fma_(-t, t, T(1)); }

// min(max(v, lo), hi) as std::min/std::max evaluate it (torch's hardswish / hardsigmoid / hardtanh): NaN passes.
template <typename T>
FASTOPS_HD T clamp_nan(T v, T lo, T hi) {
  const T low = v < lo ? lo : v;
  return hi < low ? hi : low;
}

// torch's constants, built from the same <cmath> M_* values in the same order so they round identically.
constexpr double kSqrt2 = 1.41421356237309504880;       // M_SQRT2
constexpr double kSqrt1_2 = 0.70710678118654752440;     // M_SQRT1_2
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;  // M_2_SQRTPI
constexpr double kGeluPdfScale = kTwoOverSqrtPi * kSqrt1_2 * 0.5;  // 1/sqrt(2*pi): the normal pdf's constant
constexpr double kSqrt2OverPi = kSqrt2 * kTwoOverSqrtPi * 0.5;     // sqrt(2/pi), gelu tanh's inner scale
constexpr double kGeluTanhKappa = 0.044715;

template <typename T>
FASTOPS_HD T sigmoid(T x) { return T(1) / (T(1) + exp_(-x)); }

// act(x) with the activation's parameters p (see the table).
template <Activation A, typename T>
FASTOPS_HD T forward(T x, const ActParams& p) {
  if constexpr (A == Activation::ReLU) {
    return x < T(0) ? T(0) : x;  // torch's clamp_min(x, 0): -0 and NaN pass through
  } else if constexpr (A == Activation::GELU) {
    return x * T(0.5) * (T(1) + erf_(x * T(kSqrt1_2)));
  } else if constexpr (A == Activation::GELUTanh) {
    const T x_cube = x * x * x;
    const T inner = T(kSqrt2OverPi) * (x + T(kGeluTanhKappa) * x_cube);
    return T(0.5) * x * (T(1) + tanh_(inner));
  } else if constexpr (A == Activation::SiLU) {
    return x / (T(1) + exp_(-x));
  } else if constexpr (A == Activation::LeakyReLU) {
    return x > T(0) ? x : x * T(p.p0);
  } else if constexpr (A == Activation::Sigmoid) {
    return sigmoid(x);
  } else if constexpr (A == Activation::Tanh) {
    return tanh_(x);
  } else if constexpr (A == Activation::ELU) {
    // torch's: expm1, not exp(x) - 1, which lost all digits near zero (elu(-1e-10) was 0, and 8e-8 relative off in
    // float64); and a zero of either sign takes the linear branch, so elu(-0.0) = -0.0 whatever alpha is.
    const T scale = T(p.p1);
    return x < T(0) ? expm1_(x * T(p.p2)) * (T(p.p0) * scale) : x * scale;
  } else if constexpr (A == Activation::Softplus) {
    const T beta = T(p.p0);
    return x * beta > T(p.p1) ? x : log1p_(exp_(x * beta)) / beta;
  } else if constexpr (A == Activation::Mish) {
    return x * tanh_(log1p_(exp_(x)));
  } else if constexpr (A == Activation::Hardswish) {
    return x * clamp_nan(x + T(3), T(0), T(6)) / T(6);
  } else if constexpr (A == Activation::Hardsigmoid) {
    return clamp_nan(x + T(3), T(0), T(6)) / T(6);
  } else {
    static_assert(A == Activation::Hardtanh);
    return clamp_nan(x, T(p.p0), T(p.p1));
  }
}

// act(x) for an activation chosen at run time among those the GEMM epilogue fuses: one warp-uniform branch.
template <typename T>
FASTOPS_HD T forward_dynamic(Activation a, T x) {
  switch (a) {
#define FASTOPS_ACTIVATION_CASE(Enum, ...)                                                  \
  case Activation::Enum:                                                                    \
    if constexpr (fused_in_gemm(Activation::Enum)) return forward<Activation::Enum>(x, {}); \
    break;
    FASTOPS_ACTIVATIONS(FASTOPS_ACTIVATION_CASE)
#undef FASTOPS_ACTIVATION_CASE
  }
  return x;
}

// grad * act'(x), from the forward's input x.
template <Activation A, typename T>
FASTOPS_HD T backward_from_input(T grad, T x, const ActParams& p) {
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
    return x > T(0) ? grad : grad * T(p.p0);
  } else if constexpr (A == Activation::Sigmoid) {
    const T s = sigmoid(x);
    return grad * (T(1) - s) * s;
  } else if constexpr (A == Activation::Tanh) {
    return grad * one_minus_square(tanh_(x));
  } else if constexpr (A == Activation::ELU) {
    const T input_scale = T(p.p2);
    return x <= T(0) ? grad * input_scale * (T(p.p0) * T(p.p1)) * exp_(x * input_scale) : grad * T(p.p1);
  } else if constexpr (A == Activation::Softplus) {
    const T beta = T(p.p0);
    const T z = exp_(x * beta);
    return x * beta > T(p.p1) ? grad : grad * z / (z + T(1));
  } else if constexpr (A == Activation::Mish) {
    const T s = sigmoid(x);
    const T t = tanh_(log1p_(exp_(x)));
    return grad * (t + x * s * (T(1) - t * t));
  } else if constexpr (A == Activation::Hardswish) {
    // Both ends of [-3, 3] take the outer branch, as in torch.
    return x <= T(-3) ? T(0) : (x < T(3) ? grad * (x / T(3) + T(0.5)) : grad);
  } else if constexpr (A == Activation::Hardsigmoid) {
    // torch's 1/6 is the float one in every dtype (float64 included), so is this.
    return x > T(-3) && x < T(3) ? grad * T(1.0f / 6.0f) : T(0);
  } else {
    static_assert(A == Activation::Hardtanh);
    return x <= T(p.p0) || x >= T(p.p1) ? T(0) : grad;
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
    static_assert(A == Activation::Tanh);
    return grad * one_minus_square(y);
  }
}

// Functors for the elementwise maps.
template <Activation A>
struct Forward {
  ActParams params;
  template <typename T>
  FASTOPS_HD T operator()(T x) const { return forward<A>(x, params); }
};

template <Activation A>
struct Backward {
  ActParams params;
  // `saved` is the output when backward_reads_output(A), else the input.
  template <typename T>
  FASTOPS_HD T operator()(T grad, T saved) const {
    if constexpr (backward_reads_output(A)) {
      return backward_from_output<A>(grad, saved);
    } else {
      return backward_from_input<A>(grad, saved, params);
    }
  }
};

}  // namespace fastops::act

namespace fastops {

// Row view of a gated unit's operands (swiglu/geglu/glu): `rows` x `cols` elements, gate and up (and their
// gradients) `in_stride` elements apart from one row to the next: cols for two separate tensors, 2*cols for the
// packed [..., 2H] form whose halves are read in place (glu along a dim d of [outer, 2H, inner] is `outer` rows of
// H*inner). The output and grad_output are contiguous [rows, cols].
struct GluRows {
  int64_t rows;
  int64_t cols;
  int64_t in_stride;
};

}  // namespace fastops

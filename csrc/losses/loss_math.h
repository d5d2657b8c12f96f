// Scalar loss math shared by the CPU kernels and the CUDA kernels (torch-free, host + device), so both backends
// compute the same formulas. T is the math type: float for 16-bit and float32 tensors, double for float64.
#pragma once

#include "common/host_device.h"

#include <cmath>
#include <cstdint>

namespace fastops {

// The elementwise losses; the backends switch on it. Cross entropy is a row reduction and has its own kernels.
enum class PointwiseLoss : int32_t {
  Mse = 0,
  SmoothL1 = 1,
  Huber = 2,
  BceWithLogits = 3,
  L1 = 4,
  Bce = 5,
  KlDiv = 6,           // kl_div with probabilities as the target
  KlDivLogTarget = 7,  // kl_div with log-probabilities as the target (log_target=True)
};

// torch's at::Reduction values, which the schemas take as `int reduction`.
enum class Reduction : int32_t { None = 0, Mean = 1, Sum = 2 };

}  // namespace fastops

namespace fastops::loss {

// Every loss is value(x, t, pos_weight) and its derivative in x; the kernels multiply both by the elementwise
// weight where there is one (binary_cross_entropy and binary_cross_entropy_with_logits take a weight, only the
// latter a pos_weight; the others ignore pw).

// (x - t)^2
struct Mse {
  template <typename T>
  FASTOPS_HD T value(T x, T t, T /*pw*/, T /*param*/) const {
    const T d = x - t;
    return d * d;
  }
  template <typename T>
  FASTOPS_HD T grad(T x, T t, T /*pw*/, T /*param*/) const { return T(2) * (x - t); }
};

// 0.5 d^2 / beta for |d| < beta, |d| - 0.5 beta beyond (beta = 0 is the L1 loss, as in torch).
struct SmoothL1 {
  template <typename T>
  FASTOPS_HD T value(T x, T t, T /*pw*/, T beta) const {
    const T d = x - t;
    const T ad = d < T(0) ? -d : d;
    return ad < beta ? T(0.5) * d * d / beta : ad - T(0.5) * beta;
  }
  // Branches in torch's order (<= -beta, >= beta, else), so the kinks give torch's values; beta = 0 is torch's
  // l1_loss, whose gradient is sign(d) (0 where input == target).
  template <typename T>
  FASTOPS_HD T grad(T x, T t, T /*pw*/, T beta) const {
    const T d = x - t;
    if (beta == T(0)) return T((d > T(0)) - (d < T(0)));
    if (d <= -beta) return T(-1);
    if (d >= beta) return T(1);
    return d / beta;
  }
};

// 0.5 d^2 for |d| < delta, delta (|d| - 0.5 delta) beyond.
struct Huber {
  template <typename T>
  FASTOPS_HD T value(T x, T t, T /*pw*/, T delta) const {
    const T d = x - t;
    const T ad = d < T(0) ? -d : d;
    return ad < delta ? T(0.5) * d * d : delta * (ad - T(0.5) * delta);
  }
  template <typename T>
  FASTOPS_HD T grad(T x, T t, T /*pw*/, T delta) const {
    const T d = x - t;
    if (d < -delta) return -delta;
    if (d > delta) return delta;
    return d;
  }
};

// (1 - t) x + (1 + (pw - 1) t) softplus(-x), with softplus(-x) = log1p(exp(-|x|)) + max(-x, 0) (stable for any x).
struct BceWithLogits {
  // The softplus coefficient. Without pos_weight (pw == 1) it is exactly 1, as in torch's formula: computing
  // 1 + 0 * t would turn an infinite target into NaN where torch gives +-inf.
  template <typename T>
  FASTOPS_HD T softplus_coef(T t, T pw) const { return pw == T(1) ? T(1) : T(1) + (pw - T(1)) * t; }

  template <typename T>
  FASTOPS_HD T value(T x, T t, T pw, T /*param*/) const {
    using std::exp;
    using std::log1p;
    const T ax = x < T(0) ? -x : x;
    const T softplus_neg = log1p(exp(-ax)) + (x < T(0) ? -x : T(0));
    return (T(1) - t) * x + softplus_coef(t, pw) * softplus_neg;
  }
  // sigmoid(x) (1 + (pw - 1) t) - pw t
  template <typename T>
  FASTOPS_HD T grad(T x, T t, T pw, T /*param*/) const {
    using std::exp;
    const T sig = T(1) / (T(1) + exp(-x));
    return sig * softplus_coef(t, pw) - pw * t;
  }
};

// |x - t|; its gradient sign(x - t) is 0 where input == target and NaN for a NaN difference, as torch's sign.
struct L1 {
  template <typename T>
  FASTOPS_HD T value(T x, T t, T /*pw*/, T /*param*/) const {
    const T d = x - t;
    return d < T(0) ? -d : d;
  }
  template <typename T>
  FASTOPS_HD T grad(T x, T t, T /*pw*/, T /*param*/) const {
    const T d = x - t;
    return d != d ? d : T((d > T(0)) - (d < T(0)));
  }
};

// binary_cross_entropy on probabilities: -(t log(x) + (1 - t) log(1 - x)) with each log clamped at -100, in torch's
// form and order ((t - 1) max(log1p(-x), -100) - t max(log(x), -100): aten/src/ATen/native/Loss.cpp), so x = 0 or 1
// gives torch's finite 100 instead of inf.
struct Bce {
  template <typename T>
  FASTOPS_HD static T clamp_log(T v) { return v < T(-100) ? T(-100) : v; }  // NaN passes, as std::max(NaN, -100)

  template <typename T>
  FASTOPS_HD T value(T x, T t, T /*pw*/, T /*param*/) const {
    using std::log;
    using std::log1p;
    return (t - T(1)) * clamp_log(log1p(-x)) - t * clamp_log(log(x));
  }
  // (x - t) / max((1 - x) x, 1e-12): torch's binary_cross_entropy_backward, whose epsilon keeps x = 0 or 1 finite.
  template <typename T>
  FASTOPS_HD T grad(T x, T t, T /*pw*/, T /*param*/) const {
    const T denom = (T(1) - x) * x;
    const T eps = T(1e-12);
    return (x - t) / (denom < eps ? eps : denom);
  }
};

// kl_div(input, target) = xlogy(t, t) - t x, torch's form (aten/src/ATen/native/Loss.cpp): xlogy(t, t) is 0 where
// t == 0 (the limit of t log t) and NaN where t is NaN or negative; the product t x is not special-cased, so t = 0
// with x = -inf is NaN, as in torch.
struct KlDiv {
  template <typename T>
  FASTOPS_HD T value(T x, T t, T /*pw*/, T /*param*/) const {
    using std::log;
    return (t == T(0) ? T(0) : t * log(t)) - t * x;
  }
  template <typename T>
  FASTOPS_HD T grad(T /*x*/, T t, T /*pw*/, T /*param*/) const { return -t; }
};

// kl_div with log_target: exp(t) (t - x).
struct KlDivLogTarget {
  template <typename T>
  FASTOPS_HD T value(T x, T t, T /*pw*/, T /*param*/) const {
    using std::exp;
    return exp(t) * (t - x);
  }
  template <typename T>
  FASTOPS_HD T grad(T /*x*/, T t, T /*pw*/, T /*param*/) const {
    using std::exp;
    return -exp(t);
  }
};

// Whether a loss's float32 gradient is evaluated in double (with the upstream gradient and the weight) and rounded
// once. binary_cross_entropy's (x - t) / ((1 - x) x) takes four roundings in float, and torch's float32 CPU backward
// came out correctly rounded where that float math did not: at x = 6.3e-5, t = 0.805 it gave -19616.0996 exactly
// where float math was one ulp (0.00195) off, against a bound of 2 x torch's 3.2e-5 error + half an ulp.
template <typename Loss>
struct PreciseGrad {
  static constexpr bool value = false;
};
template <>
struct PreciseGrad<Bce> {
  static constexpr bool value = true;
};

// Calls fn(Functor{}) for the loss `kind`.
template <typename Fn>
FASTOPS_HD void visit_pointwise_loss(PointwiseLoss kind, Fn&& fn) {
  switch (kind) {
    case PointwiseLoss::Mse: fn(Mse{}); break;
    case PointwiseLoss::SmoothL1: fn(SmoothL1{}); break;
    case PointwiseLoss::Huber: fn(Huber{}); break;
    case PointwiseLoss::BceWithLogits: fn(BceWithLogits{}); break;
    case PointwiseLoss::L1: fn(L1{}); break;
    case PointwiseLoss::Bce: fn(Bce{}); break;
    case PointwiseLoss::KlDiv: fn(KlDiv{}); break;
    case PointwiseLoss::KlDivLogTarget: fn(KlDivLogTarget{}); break;
  }
}

}  // namespace fastops::loss

// The activations as ATen expressions, for backward passes that must be differentiable again (create_graph=True):
// autograd differentiates these to any order (common/autograd.h). Host-only; torch's own formulas.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/erf.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softplus.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/where.h>

#include "activations/activation_math.h"

namespace fastops {

// act(x) for the activations of the fused ops.
inline at::Tensor aten_activation(Activation a, const at::Tensor& x) {
  switch (a) {
    case Activation::ReLU: return at::relu(x);
    case Activation::GELU: return at::gelu(x);
    case Activation::GELUTanh: return at::gelu(x, "tanh");
    case Activation::SiLU: return at::silu(x);
    case Activation::Sigmoid: return at::sigmoid(x);
    case Activation::Tanh: return at::tanh(x);
    default: break;
  }
  TORCH_CHECK(false, "fastops: no fused form of ", activation_name(a));
}

// A 0/1 (or 0/c) mask in x's dtype: the derivative of the piecewise-linear activations, constant where it exists.
inline at::Tensor aten_step(const at::Tensor& where_one, double one, double otherwise, const at::Tensor& x) {
  return at::where(where_one, one, otherwise).to(x.scalar_type());
}

// act'(x) from the input x, with the activation's parameters p.
inline at::Tensor aten_derivative(Activation a, const at::Tensor& x, const ActParams& p = {}) {
  switch (a) {
    case Activation::ReLU: return aten_step(x <= 0, 0.0, 1.0, x);  // NaN passes, as relu_backward
    case Activation::LeakyReLU: return aten_step(x > 0, 1.0, p.p0, x);
    case Activation::GELU:  // Phi(x) + x phi(x)
      return 0.5 * (1 + at::erf(x * act::kSqrt1_2)) + x * at::exp(x * x * -0.5) * act::kGeluPdfScale;
    case Activation::GELUTanh: {  // with u = k (x + c x^3), t = tanh(u): 0.5 (1 + t) + 0.5 x (1 - t^2) u'
      const at::Tensor t = at::tanh(act::kSqrt2OverPi * (x + act::kGeluTanhKappa * x * x * x));
      const at::Tensor du = act::kSqrt2OverPi * (1 + 3 * act::kGeluTanhKappa * x * x);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
    }
    case Activation::SiLU: {
      const at::Tensor s = at::sigmoid(x);
      return s * (1 + x * (1 - s));
    }
    case Activation::Sigmoid: {
      const at::Tensor s = at::sigmoid(x);
      return s * (1 - s);
    }
    case Activation::Tanh: {
      const at::Tensor t = at::tanh(x);
      return 1 - t * t;
    }
    case Activation::ELU: {
      // The exponential branch reads x only where x <= 0: exp of a large x elsewhere would turn the next
      // derivative's masked-out zeros into 0 * inf = NaN.
      const at::Tensor negative = at::where(x <= 0, x, 0.0);
      return at::where(x <= 0, p.p2 * (p.p0 * p.p1) * at::exp(negative * p.p2), p.p1);
    }
    case Activation::Softplus:
      return at::where(x * p.p0 > p.p1, 1.0, at::sigmoid(x * p.p0));
    case Activation::Mish: {
      const at::Tensor t = at::tanh(at::softplus(x));
      return t + x * at::sigmoid(x) * (1 - t * t);
    }
    case Activation::Hardswish:
      return at::where(x <= -3, 0.0, at::where(x < 3, x / 3 + 0.5, 1.0));
    case Activation::Hardsigmoid: return aten_step((x > -3).logical_and(x < 3), 1.0f / 6.0f, 0.0, x);
    case Activation::Hardtanh: return aten_step((x > p.p0).logical_and(x < p.p1), 1.0, 0.0, x);
  }
  return at::Tensor();
}

// grad * act'(.) from what the standalone op saved: the output for relu, sigmoid and tanh, else the input.
inline at::Tensor aten_backward(Activation a, const at::Tensor& grad, const at::Tensor& saved, const ActParams& p) {
  switch (a) {
    case Activation::ReLU: return at::where(saved <= 0, 0.0, grad);
    case Activation::Sigmoid: return grad * (1 - saved) * saved;
    case Activation::Tanh: return grad * (1 - saved * saved);
    default: return grad * aten_derivative(a, saved, p);
  }
}

}  // namespace fastops

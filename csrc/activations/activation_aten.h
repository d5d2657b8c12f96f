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
    case Activation::LeakyReLU: break;
  }
  TORCH_CHECK(false, "fastops: no fused form of this activation");
}

// act'(x) from the input x. `slope` is LeakyReLU's negative slope.
inline at::Tensor aten_derivative(Activation a, const at::Tensor& x, double slope = 0.0) {
  switch (a) {
    case Activation::ReLU: return at::where(x <= 0, 0.0, 1.0).to(x.scalar_type());  // NaN passes, as relu_backward
    case Activation::LeakyReLU: return at::where(x > 0, 1.0, slope).to(x.scalar_type());
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
  }
  return at::Tensor();
}

}  // namespace fastops

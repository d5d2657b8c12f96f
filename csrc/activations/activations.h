// Torch-side driver shared by the CPU and CUDA activation bindings: argument checks, the common dense layout and
// the output allocation live here once; a Backend only runs the kernel on tensors it is handed.
//   Backend::forward(Activation, const Tensor& x, Tensor& y, double param)
//   Backend::backward(Activation, const Tensor& grad_output, const Tensor& saved, Tensor& grad_input, double param)
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include "activations/activation_math.h"
#include "common/checks.h"
#include "common/elementwise.h"

namespace fastops {

template <typename Backend>
at::Tensor activation_forward(const char* op, Activation act, const at::Tensor& x, double param = 0.0) {
  check_float_operands(op, {{x, "x"}});
  auto [xd] = dense_common_layout<1>({x});
  at::Tensor y = at::empty_like(xd);
  if (y.numel() > 0) Backend::forward(act, xd, y, param);
  return y;
}

// `saved_name` is what the backward reads besides the gradient ("result" for ReLU, "x" for most others).
template <typename Backend>
at::Tensor activation_backward(const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& saved,
                               const char* saved_name, double param = 0.0) {
  check_float_operands(op, {{grad_output, "grad_output"}, {saved, saved_name}});
  check_same_shape(op, {saved, saved_name}, {grad_output, "grad_output"});
  auto [gd, sd] = dense_common_layout<2>({grad_output, saved});
  at::Tensor grad_input = at::empty_like(gd);
  if (grad_input.numel() > 0) Backend::backward(act, gd, sd, grad_input, param);
  return grad_input;
}

}  // namespace fastops

// Autograd of softmax / log_softmax (see common/autograd.h for why it is C++ and for the double-backward rule). Both
// save their output, as torch's do (derivatives.yaml: _softmax_backward_data(grad, result, dim, ...)): the backward
// needs nothing else. Under create_graph the backward is written with ATen ops on that saved output, whose own
// grad_fn is this node, so autograd differentiates it to any order.
#include <ATen/TensorOperators.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include "common/autograd.h"

namespace fastops {
namespace {

using at::Tensor;
using SoftmaxOp = Tensor(const Tensor&, int64_t);
using SoftmaxBackwardOp = Tensor(const Tensor&, const Tensor&, int64_t);

template <bool kLog>
Tensor softmax_op(const Tensor& x, int64_t dim) {
  if constexpr (kLog) return FASTOPS_OP("log_softmax", "", SoftmaxOp).call(x, dim);
  return FASTOPS_OP("softmax", "", SoftmaxOp).call(x, dim);
}

template <bool kLog>
Tensor softmax_backward_op(const Tensor& g, const Tensor& y, int64_t dim) {
  if constexpr (kLog) return FASTOPS_OP("log_softmax_backward", "", SoftmaxBackwardOp).call(g, y, dim);
  return FASTOPS_OP("softmax_backward", "", SoftmaxBackwardOp).call(g, y, dim);
}

template <bool kLog>
struct Softmax : torch::autograd::Function<Softmax<kLog>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, int64_t dim) {
    Tensor y = below_autograd([&] { return softmax_op<kLog>(x, dim); });
    ctx->save_for_backward({y});
    ctx->saved_data["dim"] = dim;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor y = ctx->get_saved_variables()[0];
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const Tensor& g = grads[0];
    if (differentiable_backward()) {
      // torch's formulas (FunctionsManual.cpp: softmax_double_backward's first-order form). A 0-dim y sums over
      // dim 0 / -1 as torch's sum does.
      if constexpr (kLog) return {g - at::exp(y) * g.sum(dim, /*keepdim=*/true), Tensor()};
      return {y * (g - (g * y).sum(dim, /*keepdim=*/true)), Tensor()};
    }
    return {softmax_backward_op<kLog>(g, y, dim), Tensor()};
  }
};

template <bool kLog>
Tensor softmax_autograd(const Tensor& x, int64_t dim) {
  if (!needs_graph({&x})) return below_autograd([&] { return softmax_op<kLog>(x, dim); });
  return Softmax<kLog>::apply(x, dim);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, Autograd, m) {
  m.impl("softmax", &softmax_autograd<false>);
  m.impl("log_softmax", &softmax_autograd<true>);
}

}  // namespace fastops

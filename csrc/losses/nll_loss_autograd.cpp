// Autograd of nll_loss_forward (see common/autograd.h for why it is C++ and for the double-backward rule). The loss
// is linear in the input: d loss_r / d input = -w[t_r] at the row's target element and 0 elsewhere, so the backward
// needs the target, the weight and the input's shape only; under create_graph it is one ATen scatter of the upstream
// gradient (linear in it, so differentiable to any order; every higher derivative with respect to the input is 0).
#include <ATen/TensorOperators.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "common/autograd.h"
#include "losses/nll_loss.h"

namespace fastops {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using NllForwardOp = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&, int64_t);
using NllBackwardOp = Tensor(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, int64_t);

OptTensor present(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// The ATen form of nll_loss_backward: grad_rows (float64 [rows]) scattered into a zero input-shaped tensor.
Tensor aten_nll_backward(const Tensor& grad_rows, const Tensor& input, const Tensor& target, const Tensor& weight,
                         int64_t ignore_index) {
  const NllGeometry geo = nll_geometry(input);
  const Tensor t = target.reshape({-1});
  const Tensor kept = t != ignore_index;
  const Tensor safe = at::where(kept, t, 0);
  const Tensor w = weight.defined() ? weight.to(at::kDouble).index_select(0, safe)
                                    : at::ones({geo.rows()}, grad_rows.options());
  const Tensor coeff = at::where(kept, -w * grad_rows, 0.0).to(input.scalar_type());
  const Tensor index = safe.view({geo.outer, 1, geo.inner});
  return at::zeros({geo.outer, geo.classes, geo.inner}, input.options())
      .scatter(1, index, coeff.view({geo.outer, 1, geo.inner}))
      .view(input.sizes());
}

struct NllLossForward : torch::autograd::Function<NllLossForward> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& target, const OptTensor& weight,
                               int64_t ignore_index) {
    auto [loss, row_weight] = below_autograd(
        [&] { return FASTOPS_OP("nll_loss_forward", "", NllForwardOp).call(input, target, weight, ignore_index); });
    ctx->mark_non_differentiable({row_weight});
    // The input is saved for its shape and dtype (torch's nll_loss saves it too).
    ctx->save_for_backward({input, target, weight.value_or(Tensor())});
    ctx->saved_data["ignore_index"] = ignore_index;
    return {loss, row_weight};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &input = s[0], &target = s[1], &weight = s[2];
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor()};
    const Tensor g = grads[0].to(at::kDouble).contiguous();
    if (differentiable_backward()) {
      return {aten_nll_backward(g, input, target, weight, ignore_index), Tensor(), Tensor(), Tensor()};
    }
    return {FASTOPS_OP("nll_loss_backward", "", NllBackwardOp).call(g, input, target, present(weight), ignore_index),
            Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> nll_loss_forward_autograd(const Tensor& input, const Tensor& target,
                                                     const OptTensor& weight, int64_t ignore_index) {
  if (!needs_graph({&input})) {
    return below_autograd(
        [&] { return FASTOPS_OP("nll_loss_forward", "", NllForwardOp).call(input, target, weight, ignore_index); });
  }
  const OptTensor w = weight.has_value() && weight->defined() ? weight : std::nullopt;
  const variable_list out = NllLossForward::apply(input, target, w, ignore_index);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, Autograd, m) { m.impl("nll_loss_forward", &nll_loss_forward_autograd); }

}  // namespace fastops

// Autograd of the loss family (see common/autograd.h for why it is C++ and for the double-backward rule).
//
// Cross entropy's forward ops come in two kinds. cross_entropy_forward (the rows) and cross_entropy_loss_forward (the
// rows reduced) save the logits and per-row statistics, and their backward recomputes the softmax
// (cross_entropy_backward). cross_entropy_loss_forward_grad writes the gradient in the forward; its backward only
// scales that gradient by the upstream one (see CrossEntropyLossForwardGrad). It also keeps a reference to the logits, which a differentiable backward (create_graph=True) and the gradients of
// probability targets need; the logits are usually alive anyway (the caller's output tensor), so this costs no
// memory in the common case.
#include <ATen/Dispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/logit.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/sign.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/softplus.h>
#include <ATen/ops/where.h>
#include <ATen/ops/xlogy.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include "common/autograd.h"
#include "losses/losses.h"

namespace fastops {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

OptTensor optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// Optional tensors reach Function::apply as empty optionals when absent: they then have no graph edge, so the
// needs_input_grad index of every later tensor argument shifts down by one per absent optional before it.
OptTensor present(const OptTensor& t) { return t.has_value() && t->defined() ? t : std::nullopt; }

// torch's message for an argument autograd has no formula for (torch/csrc/autograd/FunctionsManual.cpp).
[[noreturn]] void not_differentiable(const char* name) {
  TORCH_CHECK(false, "the derivative for '", name, "' is not implemented.");
}

// ---- cross entropy ----

// Gradients of sum_i u_i loss_i (u: per-row upstream factors, [N] or [], any float dtype) with respect to
// the logits, a probability target and the class weight, as ATen expressions (differentiable to any order). For row
// i with softmax p: d loss_i / d logits_i = mass_i p_i - q_i, where q_i is the weighted (smoothed) target
// distribution and mass_i its total.
struct CrossEntropyGrads {
  Tensor logits, target, weight;
};

CrossEntropyGrads aten_cross_entropy_grads(const Tensor& logits, const Tensor& target, const Tensor& weight,
                                           int64_t ignore_index, double smoothing, const Tensor& upstream,
                                           bool want_target, bool want_weight) {
  const at::ScalarType math = loss_math_type(logits.scalar_type());
  const int64_t c = logits.size(1);
  const Tensor z = logits.to(math);
  const Tensor logp = at::log_softmax(z, 1);
  const Tensor u = upstream.to(math).reshape({-1, 1});  // [N, 1] per row, or [1, 1] for every row
  CrossEntropyGrads out;
  if (target.is_floating_point()) {
    const Tensor q = target.to(math) * (1 - smoothing) + smoothing / c;
    const Tensor wq = weight.defined() ? q * weight.to(math) : q;
    out.logits = (u * (wq.sum(1, true) * logp.exp() - wq)).to(logits.scalar_type());
    if (want_target) {
      const Tensor wlogp = weight.defined() ? logp * weight.to(math) : logp;
      out.target = (-(1 - smoothing) * u * wlogp).to(target.scalar_type());
    }
    if (want_weight) out.weight = (-(u * q * logp).sum(0)).to(weight.scalar_type());
    return out;
  }
  if (want_weight) not_differentiable("weight");
  const Tensor valid = (target != ignore_index).unsqueeze(1);
  const Tensor t = at::where(valid.squeeze(1), target, 0).unsqueeze(1);
  const Tensor w = weight.defined() ? weight.to(math).unsqueeze(0) : at::ones({1, c}, z.options());
  const Tensor target_weight = w.expand_symint({z.sym_size(0), c}).gather(1, t);  // [N, 1]
  // q = (1 - s) w_t onehot(t) + (s / C) w, zero on ignored rows.
  Tensor q = at::zeros_like(z).scatter(1, t, target_weight * (1 - smoothing));
  if (smoothing > 0) q = q + w * (smoothing / c);
  q = q * valid;
  out.logits = (u * (q.sum(1, true) * logp.exp() - q)).to(logits.scalar_type());
  return out;
}

using CrossEntropyForwardOp =
    std::tuple<Tensor, Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&, int64_t, double);
using CrossEntropyBackwardOp = Tensor(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const Tensor&,
                                      const Tensor&, int64_t, double);
using CrossEntropyLossForwardOp = std::tuple<Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const OptTensor&, int64_t, int64_t, double, at::ScalarType);
using CrossEntropyLossForwardGradOp = std::tuple<Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const OptTensor&, int64_t, int64_t, double, at::ScalarType);

// The gradients of sum_i u_i loss_i (upstream u: [N], or [] for every row) from the saved logits and the forward's
// lse / target_mass: the logits' on the kernel (cross_entropy_backward recomputes the softmax), and where a
// differentiable backward or a probability target's / class weight's gradient is wanted, as ATen expressions.
// s: the saved variables (save_for_recompute). Returns {logits, target, weight} gradients.
variable_list recomputed_grads(AutogradContext* ctx, const variable_list& s, const Tensor& upstream) {
  const Tensor &logits = s[0], &target = s[1], &weight = s[2], &lse = s[3], &target_mass = s[4];
  const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
  const double smoothing = ctx->saved_data["smoothing"].toDouble();
  const bool want_target = ctx->needs_input_grad(1), want_weight = weight.defined() && ctx->needs_input_grad(2);
  auto kernel = [&] {
    // The kernel takes float64 per-row factors, contiguous (autograd hands a sum's gradient as an expanded vector).
    Tensor rows = upstream.to(at::kDouble);
    if (rows.dim() == 0) rows = rows.expand({logits.size(0)});
    return FASTOPS_OP("cross_entropy_backward", "", CrossEntropyBackwardOp)
        .call(rows.contiguous(), logits, target, optional(weight), lse, target_mass, ignore_index, smoothing);
  };
  if (differentiable_backward() || want_target || want_weight) {
    CrossEntropyGrads g =
        aten_cross_entropy_grads(logits, target, weight, ignore_index, smoothing, upstream, want_target, want_weight);
    if (!differentiable_backward() && ctx->needs_input_grad(0)) g.logits = kernel();  // the logits' on the kernel
    return {g.logits, g.target, g.weight};
  }
  return {kernel(), Tensor(), Tensor()};
}

// Saves what recomputed_grads reads, and `divisor` after it.
void save_for_recompute(AutogradContext* ctx, const Tensor& logits, const Tensor& target, const OptTensor& weight,
                        const Tensor& lse, const Tensor& target_mass, int64_t ignore_index, double smoothing,
                        const Tensor& divisor = Tensor()) {
  ctx->save_for_backward({logits, target, weight.value_or(Tensor()), lse, target_mass, divisor});
  ctx->saved_data["ignore_index"] = ignore_index;
  ctx->saved_data["smoothing"] = smoothing;
}

struct CrossEntropyForward : torch::autograd::Function<CrossEntropyForward> {
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, const OptTensor& weight,
                               int64_t ignore_index, double smoothing) {
    auto [loss, row_weight, lse, target_mass] = below_autograd([&] {
      return FASTOPS_OP("cross_entropy_forward", "", CrossEntropyForwardOp)
          .call(logits, target, weight, ignore_index, smoothing);
    });
    ctx->mark_non_differentiable({row_weight, lse, target_mass});
    ctx->set_materialize_grads(false);  // the statistics get no gradient: no zeros made for them
    save_for_recompute(ctx, logits, target, weight, lse, target_mass, ignore_index, smoothing);
    return {loss, row_weight, lse, target_mass};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    const variable_list g = recomputed_grads(ctx, ctx->get_saved_variables(), grads[0]);
    return {g[0], g[1], g[2], Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor> cross_entropy_forward_autograd(const Tensor& logits, const Tensor& target,
                                                                          const OptTensor& weight,
                                                                          int64_t ignore_index, double smoothing) {
  const Tensor w = weight.has_value() ? *weight : Tensor();
  if (!needs_graph({&logits, &target, &w})) {
    return below_autograd([&] {
      return FASTOPS_OP("cross_entropy_forward", "", CrossEntropyForwardOp)
          .call(logits, target, weight, ignore_index, smoothing);
    });
  }
  const variable_list out = CrossEntropyForward::apply(logits, target, present(weight), ignore_index, smoothing);
  return {out[0], out[1], out[2], out[3]};
}

// cross_entropy_loss_forward: the reduced loss; the backward hands the kernel u_i = upstream (per row for 'none',
// over the divisor for 'mean').
struct CrossEntropyLossForward : torch::autograd::Function<CrossEntropyLossForward> {
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, const OptTensor& weight,
                               int64_t reduction, int64_t ignore_index, double smoothing, at::ScalarType dtype) {
    auto [loss, lse, target_mass, divisor] = below_autograd([&] {
      return FASTOPS_OP("cross_entropy_loss_forward", "", CrossEntropyLossForwardOp)
          .call(logits, target, weight, reduction, ignore_index, smoothing, dtype);
    });
    ctx->mark_non_differentiable({lse, target_mass, divisor});
    ctx->set_materialize_grads(false);
    save_for_recompute(ctx, logits, target, weight, lse, target_mass, ignore_index, smoothing,
                       reduction == static_cast<int64_t>(Reduction::Mean) ? divisor : Tensor());
    return {loss, lse, target_mass, divisor};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(7);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    const Tensor& divisor = s[5];
    const variable_list g = recomputed_grads(ctx, s, divisor.defined() ? grads[0] / divisor : grads[0]);
    std::copy(g.begin(), g.end(), out.begin());
    return out;
  }
};

// Whether t is a plain CPU tensor (not fake, functional or batched: its data are readable) holding the single value
// 1, read on the host. The usual upstream gradient of a loss; skipping its float64 conversion and the scale_rows_
// call that would skip the rows anyway took ~1 us off a [2, 8] backward.
bool is_host_one(const Tensor& t) {
  constexpr c10::DispatchKeySet kNotPlain({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                           c10::DispatchKey::Functionalize, c10::DispatchKey::FuncTorchBatched,
                                           c10::DispatchKey::FuncTorchGradWrapper, c10::DispatchKey::Conjugate,
                                           c10::DispatchKey::Negative});
  if (t.numel() != 1 || !t.is_cpu() || t.layout() != at::kStrided || t.key_set().has_any(kNotPlain)) return false;
  bool one = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "fastops_is_host_one", [&] {
    one = static_cast<double>(*t.const_data_ptr<scalar_t>()) == 1.0;
  });
  return one;
}

// cross_entropy_loss_forward_grad: the forward wrote the gradient for an upstream gradient of 1; the backward scales
// it by the upstream gradient, in place (scale_rows_ skips a factor of exactly 1, so the usual loss.backward() writes
// nothing) unless the graph is kept for another backward (retain_graph=True): then out of place, so that every
// backward sees the gradient the forward wrote, whatever the factor (0 included).
struct CrossEntropyLossForwardGrad : torch::autograd::Function<CrossEntropyLossForwardGrad> {
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, const OptTensor& weight,
                               int64_t reduction, int64_t ignore_index, double smoothing, at::ScalarType dtype) {
    auto [loss, grad, grad_scale] = below_autograd([&] {
      return FASTOPS_OP("cross_entropy_loss_forward_grad", "", CrossEntropyLossForwardGradOp)
          .call(logits, target, weight, reduction, ignore_index, smoothing, dtype);
    });
    ctx->mark_non_differentiable({grad, grad_scale});
    ctx->set_materialize_grads(false);  // no [N, C] zeros for the gradient output, which gets no gradient
    ctx->save_for_backward({grad, logits, target, weight.value_or(Tensor()), grad_scale});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["smoothing"] = smoothing;
    return {loss, grad, grad_scale};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(7);
    if (!grads[0].defined()) return out;
    variable_list s = ctx->get_saved_variables();
    Tensor &grad = s[0], &logits = s[1], &target = s[2], &weight = s[3], &grad_scale = s[4];
    const bool want_target = ctx->needs_input_grad(1), want_weight = weight.defined() && ctx->needs_input_grad(2);
    if (differentiable_backward() || want_target || want_weight) {
      CrossEntropyGrads g = aten_cross_entropy_grads(
          logits, target, weight, ctx->saved_data["ignore_index"].toInt(), ctx->saved_data["smoothing"].toDouble(),
          grads[0].to(at::kDouble) * grad_scale, want_target, want_weight);
      out[0] = g.logits;
      out[1] = g.target;
      out[2] = g.weight;
    }
    if (!differentiable_backward() && ctx->needs_input_grad(0)) {
      const bool keep_graph = torch::autograd::get_current_graph_task_keep_graph();
      if (!keep_graph && is_host_one(grads[0])) {  // loss.backward(): the gradient is final as written
        out[0] = grad;
        return out;
      }
      const Tensor factor = grads[0].to(at::kDouble);
      if (keep_graph) {
        out[0] = grad * factor.to(grad.scalar_type());
      } else {  // this backward is the gradient's last reader
        below_autograd([&] { FASTOPS_OP("scale_rows_", "", void(Tensor&, const Tensor&)).call(grad, factor); });
        out[0] = grad;
      }
    }
    return out;
  }
};

template <typename Fn, typename Op>
auto cross_entropy_loss_autograd(const Tensor& logits, const Tensor& target, const OptTensor& weight,
                                 int64_t reduction, int64_t ignore_index, double smoothing, at::ScalarType dtype,
                                 const Op& op) {
  using Result = decltype(op.call(logits, target, weight, reduction, ignore_index, smoothing, dtype));
  const Tensor w = weight.has_value() ? *weight : Tensor();
  if (!needs_graph({&logits, &target, &w})) {
    return below_autograd([&] { return op.call(logits, target, weight, reduction, ignore_index, smoothing, dtype); });
  }
  const variable_list out = Fn::apply(logits, target, present(weight), reduction, ignore_index, smoothing, dtype);
  Result result;
  std::apply([&](auto&... r) {
    size_t i = 0;
    ((r = out[i++]), ...);
  }, result);
  return result;
}

// ---- elementwise losses ----

// d loss / d input of each elementwise loss as ATen expressions (without the upstream gradient and the 1/n of
// 'mean'), and d loss / d target.
Tensor aten_pointwise_grad_input(PointwiseLoss kind, const Tensor& x, const Tensor& t, const Tensor& w,
                                 const Tensor& pw, double param) {
  const Tensor d = x - t;
  switch (kind) {
    case PointwiseLoss::Mse: return 2 * d;
    case PointwiseLoss::SmoothL1:
      if (param == 0) return at::sign(d);
      return at::where(d <= -param, -1.0, at::where(d >= param, 1.0, d / param));
    case PointwiseLoss::Huber: return at::where(d <= -param, -param, at::where(d >= param, param, d));
    case PointwiseLoss::L1: return at::sign(d);
    case PointwiseLoss::Bce: {  // w (x - t) / max((1 - x) x, 1e-12), torch's binary_cross_entropy_backward
      const Tensor g = d / ((1 - x) * x).clamp_min(1e-12);
      return w.defined() ? g * w : g;
    }
    case PointwiseLoss::BceWithLogits: {
      // w [(1 + (pw - 1) t) sigmoid(x) - pw t]
      const Tensor g = pw.defined() ? (1 + (pw - 1) * t) * at::sigmoid(x) - pw * t : at::sigmoid(x) - t;
      return w.defined() ? g * w : g;
    }
    case PointwiseLoss::KlDiv: return -t;
    case PointwiseLoss::KlDivLogTarget: return -at::exp(t.to(loss_math_type(t.scalar_type())));
  }
  return Tensor();
}

// Whether a loss depends on input - target only, so that its target gradient is minus its input gradient.
bool of_difference(PointwiseLoss kind) {
  switch (kind) {
    case PointwiseLoss::Mse:
    case PointwiseLoss::SmoothL1:
    case PointwiseLoss::Huber:
    case PointwiseLoss::L1: return true;
    case PointwiseLoss::BceWithLogits:
    case PointwiseLoss::Bce:
    case PointwiseLoss::KlDiv:
    case PointwiseLoss::KlDivLogTarget: return false;
  }
  return false;
}

Tensor aten_pointwise_grad_target(PointwiseLoss kind, const Tensor& x, const Tensor& t, const Tensor& w,
                                  const Tensor& pw, double param) {
  if (kind == PointwiseLoss::Bce) {  // w (log(1 - x) - log(x)) = -w logit(x), torch's binary_cross_entropy_target_backward
    const Tensor g = -at::logit(x);
    return w.defined() ? g * w : g;
  }
  if (kind == PointwiseLoss::KlDiv || kind == PointwiseLoss::KlDivLogTarget) {
    // torch's kl_div is an ATen composite whose autograd differentiates xlogy(t, t) - t x into
    // xlogy(t != 0, t) + t / t - x (NaN where t == 0, where t log t has no derivative) and exp(t) (t - x) into
    // exp(t) (t - x + 1); the same expressions here, in the math type so that a 16-bit gradient is rounded once.
    const at::ScalarType math = loss_math_type(c10::promoteTypes(x.scalar_type(), t.scalar_type()));
    const Tensor xm = x.to(math), tm = t.to(math);
    if (kind == PointwiseLoss::KlDivLogTarget) return at::exp(tm) * (tm - xm + 1);
    return at::xlogy(tm != 0, tm) + tm / tm - xm;
  }
  if (of_difference(kind)) return -aten_pointwise_grad_input(kind, x, t, w, pw, param);
  const Tensor g = pw.defined() ? (pw - 1) * at::softplus(-x) - x : -x;  // d/dt of (1 - t) x + (1 + (pw - 1) t) sp(-x)
  return w.defined() ? g * w : g;
}

using RegressionOp = Tensor(const Tensor&, const Tensor&, int64_t);
using RegressionParamOp = Tensor(const Tensor&, const Tensor&, int64_t, double);
using RegressionBackwardOp = Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t);
using RegressionParamBackwardOp = Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t, double);
using BceOp = Tensor(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, int64_t);
using BceBackwardOp = Tensor(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, int64_t);
using BceProbOp = Tensor(const Tensor&, const Tensor&, const OptTensor&, int64_t);
using BceProbBackwardOp = Tensor(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, int64_t);
using KlDivOp = Tensor(const Tensor&, const Tensor&, int64_t, bool);
using KlDivBackwardOp = Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t, bool);

Tensor pointwise_forward_op(PointwiseLoss kind, const Tensor& x, const Tensor& t, const Tensor& w, const Tensor& pw,
                            int64_t reduction, double param) {
  switch (kind) {
    case PointwiseLoss::Mse: return FASTOPS_OP("mse_loss", "", RegressionOp).call(x, t, reduction);
    case PointwiseLoss::SmoothL1:
      return FASTOPS_OP("smooth_l1_loss", "", RegressionParamOp).call(x, t, reduction, param);
    case PointwiseLoss::Huber: return FASTOPS_OP("huber_loss", "", RegressionParamOp).call(x, t, reduction, param);
    case PointwiseLoss::BceWithLogits:
      return FASTOPS_OP("binary_cross_entropy_with_logits", "", BceOp).call(x, t, optional(w), optional(pw), reduction);
    case PointwiseLoss::L1: return FASTOPS_OP("l1_loss", "", RegressionOp).call(x, t, reduction);
    case PointwiseLoss::Bce:
      return FASTOPS_OP("binary_cross_entropy", "", BceProbOp).call(x, t, optional(w), reduction);
    case PointwiseLoss::KlDiv:
    case PointwiseLoss::KlDivLogTarget:
      return FASTOPS_OP("kl_div", "", KlDivOp).call(x, t, reduction, kind == PointwiseLoss::KlDivLogTarget);
  }
  return Tensor();
}

Tensor pointwise_backward_op(PointwiseLoss kind, const Tensor& g, const Tensor& x, const Tensor& t, const Tensor& w,
                             const Tensor& pw, int64_t reduction, double param) {
  switch (kind) {
    case PointwiseLoss::Mse: return FASTOPS_OP("mse_loss_backward", "", RegressionBackwardOp).call(g, x, t, reduction);
    case PointwiseLoss::SmoothL1:
      return FASTOPS_OP("smooth_l1_loss_backward", "", RegressionParamBackwardOp).call(g, x, t, reduction, param);
    case PointwiseLoss::Huber:
      return FASTOPS_OP("huber_loss_backward", "", RegressionParamBackwardOp).call(g, x, t, reduction, param);
    case PointwiseLoss::BceWithLogits:
      return FASTOPS_OP("binary_cross_entropy_with_logits_backward", "", BceBackwardOp)
          .call(g, x, t, optional(w), optional(pw), reduction);
    case PointwiseLoss::L1: return FASTOPS_OP("l1_loss_backward", "", RegressionBackwardOp).call(g, x, t, reduction);
    case PointwiseLoss::Bce:
      return FASTOPS_OP("binary_cross_entropy_backward", "", BceProbBackwardOp).call(g, x, t, optional(w), reduction);
    case PointwiseLoss::KlDiv:
    case PointwiseLoss::KlDivLogTarget:
      return FASTOPS_OP("kl_div_backward", "", KlDivBackwardOp)
          .call(g, x, t, reduction, kind == PointwiseLoss::KlDivLogTarget);
  }
  return Tensor();
}

struct PointwiseLossFn : torch::autograd::Function<PointwiseLossFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& t, const OptTensor& w, const OptTensor& pw,
                        int64_t reduction, double param, int64_t kind) {
    ctx->save_for_backward({x, t, w.value_or(Tensor()), pw.value_or(Tensor())});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["param"] = param;
    ctx->saved_data["kind"] = kind;
    return below_autograd([&] {
      return pointwise_forward_op(static_cast<PointwiseLoss>(kind), x, t, w.value_or(Tensor()),
                                  pw.value_or(Tensor()), reduction, param);
    });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &x = s[0], &t = s[1], &w = s[2], &pw = s[3];
    const auto kind = static_cast<PointwiseLoss>(ctx->saved_data["kind"].toInt());
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const double param = ctx->saved_data["param"].toDouble();
    // The upstream gradient per element: as is for 'none', the scalar (over n for 'mean') otherwise.
    const Tensor& g = grads[0];
    auto per_element = [&](const Tensor& local) {
      return reduction == static_cast<int64_t>(Reduction::Mean) ? local * g / c10::Scalar(x.sym_numel()) : local * g;
    };
    Tensor grad_x, grad_t;
    if (ctx->needs_input_grad(0)) {
      grad_x = differentiable_backward() ? per_element(aten_pointwise_grad_input(kind, x, t, w, pw, param))
                                         : pointwise_backward_op(kind, g, x, t, w, pw, reduction, param);
    }
    if (ctx->needs_input_grad(1)) {
      grad_t = of_difference(kind) && grad_x.defined()
                   ? -grad_x  // these depend on input - target only
                   : per_element(aten_pointwise_grad_target(kind, x, t, w, pw, param));
    }
    return {grad_x, grad_t, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor pointwise_autograd(PointwiseLoss kind, const Tensor& x, const Tensor& t, const OptTensor& weight,
                          const OptTensor& pos_weight, int64_t reduction, double param) {
  const Tensor w = weight.has_value() ? *weight : Tensor();
  const Tensor pw = pos_weight.has_value() ? *pos_weight : Tensor();
  if (!needs_graph({&x, &t, &w, &pw})) {
    return below_autograd([&] { return pointwise_forward_op(kind, x, t, w, pw, reduction, param); });
  }
  // torch refuses a weight or pos_weight that requires grad (it has no formula for them) when the forward runs.
  for (const auto& [t, name] : {std::pair{&w, "weight"}, std::pair{&pw, "pos_weight"}}) {
    TORCH_CHECK(!(t->defined() && t->requires_grad()), "The function '",
                kind == PointwiseLoss::Bce ? "binary_cross_entropy" : "binary_cross_entropy_with_logits",
                "' is not differentiable with respect to argument '", name,
                "'. This input cannot have requires_grad True.");
  }
  return PointwiseLossFn::apply(x, t, present(weight), present(pos_weight), reduction, param, static_cast<int64_t>(kind));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, Autograd, m) {
  using T = const Tensor&;
  m.impl("cross_entropy_forward", &cross_entropy_forward_autograd);
  m.impl("cross_entropy_loss_forward", [](T logits, T target, const OptTensor& weight, int64_t reduction,
                                          int64_t ignore_index, double smoothing, at::ScalarType dtype) {
    return cross_entropy_loss_autograd<CrossEntropyLossForward>(
        logits, target, weight, reduction, ignore_index, smoothing, dtype,
        FASTOPS_OP("cross_entropy_loss_forward", "", CrossEntropyLossForwardOp));
  });
  m.impl("cross_entropy_loss_forward_grad", [](T logits, T target, const OptTensor& weight, int64_t reduction,
                                               int64_t ignore_index, double smoothing, at::ScalarType dtype) {
    return cross_entropy_loss_autograd<CrossEntropyLossForwardGrad>(
        logits, target, weight, reduction, ignore_index, smoothing, dtype,
        FASTOPS_OP("cross_entropy_loss_forward_grad", "", CrossEntropyLossForwardGradOp));
  });
  m.impl("mse_loss", [](T x, T t, int64_t red) {
    return pointwise_autograd(PointwiseLoss::Mse, x, t, std::nullopt, std::nullopt, red, 0.0);
  });
  m.impl("smooth_l1_loss", [](T x, T t, int64_t red, double beta) {
    return pointwise_autograd(PointwiseLoss::SmoothL1, x, t, std::nullopt, std::nullopt, red, beta);
  });
  m.impl("huber_loss", [](T x, T t, int64_t red, double delta) {
    return pointwise_autograd(PointwiseLoss::Huber, x, t, std::nullopt, std::nullopt, red, delta);
  });
  m.impl("l1_loss", [](T x, T t, int64_t red) {
    return pointwise_autograd(PointwiseLoss::L1, x, t, std::nullopt, std::nullopt, red, 0.0);
  });
  m.impl("binary_cross_entropy", [](T x, T t, const OptTensor& w, int64_t red) {
    return pointwise_autograd(PointwiseLoss::Bce, x, t, w, std::nullopt, red, 0.0);
  });
  m.impl("kl_div", [](T x, T t, int64_t red, bool log_target) {
    return pointwise_autograd(kl_div_kind(log_target), x, t, std::nullopt, std::nullopt, red, 0.0);
  });
  m.impl("binary_cross_entropy_with_logits", [](T x, T t, const OptTensor& w, const OptTensor& pw, int64_t red) {
    return pointwise_autograd(PointwiseLoss::BceWithLogits, x, t, w, pw, red, 0.0);
  });
}

}  // namespace fastops

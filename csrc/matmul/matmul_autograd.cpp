// Autograd of the matmul family (see common/autograd.h for why it is C++). Every gradient runs on fastops' own
// kernels: for C = A.B, dA = dC.B^T and dB = A^T.dC on the same GEMM, the transposes read in place through layout
// flags (.mT is a view); for linear, dX = dY.W, dW = dY^T.X (the token dims folded into K) and db = bias_grad(dY).
// Those gradients are built from fastops::matmul and fastops::bias_grad, which are differentiable themselves, so
// matmul and linear differentiate to any order with no special path.
#include <ATen/TensorOperators.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "activations/activation_aten.h"
#include "activations/activations.h"
#include "common/autograd.h"
#include "matmul/matmul.h"

namespace fastops {
namespace {

using at::Tensor;

using MatmulOp = Tensor(const Tensor&, const Tensor&);
using LinearOp = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&);
using LinearActOp =
    std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view, bool);
using BiasActBackwardOp =
    std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view);

Tensor matmul_op(const Tensor& a, const Tensor& b) { return FASTOPS_OP("matmul", "", MatmulOp).call(a, b); }

Tensor bias_grad_op(const Tensor& g) { return FASTOPS_OP("bias_grad", "", Tensor(const Tensor&)).call(g); }

// Shapes here are symbolic (SymInt): under torch.compile(dynamic=True) a concrete size would specialise the graph to
// it and recompile for every batch size.
c10::SymInt product(c10::SymIntArrayRef sizes) {
  c10::SymInt n = 1;
  for (const c10::SymInt& s : sizes) n = n * s;
  return n;
}

// ---- matmul ----

// The gradient of operand `x` (a: which=0, b: which=1) of a (..., m, k) . b (..., k, n) for the output gradient g.
// Where x was broadcast along output batch dims, the gradient sums over them: those dims are folded into the GEMM's K
// (permute + reshape), so the sum runs inside one fp32-accumulating GEMM with one rounding, as torch's does, instead
// of a batch of rounded products summed afterwards.
Tensor matmul_operand_grad(const Tensor& g, const Tensor& a, const Tensor& b, int which) {
  const Tensor& x = which == 0 ? a : b;
  const int64_t nb = g.dim() - 2;
  const c10::SymIntArrayRef batch = g.sym_sizes().slice(0, nb);
  // x's own sizes aligned to the output's batch dims: kept dims and dims x was broadcast over (reduced).
  std::vector<int64_t> kept, reduced;
  std::vector<c10::SymInt> kept_sizes;
  const int64_t own_offset = nb - (x.dim() - 2);
  for (int64_t d = 0; d < nb; ++d) {
    const c10::SymInt own = d < own_offset ? c10::SymInt(1) : x.sym_size(d - own_offset);
    if (own == 1 && batch[d] != 1) {
      reduced.push_back(d);
    } else {
      kept.push_back(d);
      kept_sizes.push_back(batch[d]);
    }
  }
  const c10::SymInt m = a.sym_size(-2), k = a.sym_size(-1), n = b.sym_size(-1);
  const int64_t m_dim = nb, n_dim = nb + 1;
  c10::SymInt folded = 1;
  for (int64_t d : reduced) folded = folded * batch[d];
  auto dims = [](std::initializer_list<std::vector<int64_t>> parts) {
    std::vector<int64_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  auto shape = [&](const c10::SymInt& r, const c10::SymInt& c) {
    std::vector<c10::SymInt> s = kept_sizes;
    s.push_back(r);
    s.push_back(c);
    return s;
  };
  auto full = [&](const c10::SymInt& r, const c10::SymInt& c) {
    std::vector<c10::SymInt> s(batch.begin(), batch.end());
    s.push_back(r);
    s.push_back(c);
    return s;
  };
  if (which == 0) {  // dA = dC . B^T, the reduced dims folded with n
    const Tensor gf = g.permute(dims({kept, {m_dim}, reduced, {n_dim}})).reshape_symint(shape(m, folded * n));
    const Tensor bt = b.expand_symint(full(k, n))
                          .permute(dims({kept, reduced, {n_dim}, {m_dim}}))
                          .reshape_symint(shape(folded * n, k));
    return matmul_op(gf, bt).reshape_symint(a.sym_sizes());
  }
  // dB = A^T . dC, the reduced dims folded with m
  const Tensor at_ = a.expand_symint(full(m, k))
                         .permute(dims({kept, {n_dim}, reduced, {m_dim}}))
                         .reshape_symint(shape(k, folded * m));
  const Tensor gf = g.permute(dims({kept, reduced, {m_dim}, {n_dim}})).reshape_symint(shape(folded * m, n));
  return matmul_op(at_, gf).reshape_symint(b.sym_sizes());
}

struct Matmul : torch::autograd::Function<Matmul> {
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& b) {
    ctx->save_for_backward({a, b});
    return below_autograd([&] { return matmul_op(a, b); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    return {ctx->needs_input_grad(0) ? matmul_operand_grad(grads[0], saved[0], saved[1], 0) : Tensor(),
            ctx->needs_input_grad(1) ? matmul_operand_grad(grads[0], saved[0], saved[1], 1) : Tensor()};
  }
};

Tensor matmul_autograd(const Tensor& a, const Tensor& b) {
  if (!needs_graph({&a, &b})) return below_autograd([&] { return matmul_op(a, b); });
  return Matmul::apply(a, b);
}

// ---- bias_grad: the column sum of linear's bias gradient ----

struct BiasGrad : torch::autograd::Function<BiasGrad> {
  static Tensor forward(AutogradContext* ctx, const Tensor& g) {
    ctx->saved_data["shape"] = g.sym_sizes();
    return below_autograd([&] { return bias_grad_op(g); });
  }

  // d(sum over rows)/d(input) broadcasts the gradient back over the rows: a view, no kernel.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0].expand_symint(ctx->saved_data["shape"].toSymIntVector())};
  }
};

Tensor bias_grad_autograd(const Tensor& g) {
  if (!needs_graph({&g})) return below_autograd([&] { return bias_grad_op(g); });
  return BiasGrad::apply(g);
}

// ---- linear ----

// (dX, dW) of y = x . weight^T for the output gradient g; each undefined unless wanted.
std::pair<Tensor, Tensor> linear_operand_grads(const Tensor& g, const Tensor& x, const Tensor& weight, bool want_x,
                                               bool want_weight) {
  const c10::SymInt out_features = weight.sym_size(0), in_features = weight.sym_size(1);
  const c10::SymInt rows = product(x.sym_sizes().slice(0, x.dim() - 1));  // not -1: ambiguous when a size is 0
  const Tensor g_rows = g.reshape_symint({rows, out_features});
  Tensor grad_x, grad_weight;
  if (want_x) grad_x = matmul_op(g_rows, weight).reshape_symint(x.sym_sizes());
  if (want_weight) grad_weight = matmul_op(g_rows.mT(), x.reshape_symint({rows, in_features}));
  return {grad_x, grad_weight};
}

Tensor linear_op(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
  return FASTOPS_OP("linear", "", LinearOp).call(x, weight, bias);
}

// An absent bias is passed to Function::apply as an empty optional: it then has no graph edge, so the bias's
// needs_input_grad index exists only when it does.
std::optional<Tensor> present(const std::optional<Tensor>& t) {
  return t.has_value() && t->defined() ? t : std::nullopt;
}

struct Linear : torch::autograd::Function<Linear> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
    ctx->save_for_backward({x, weight});
    ctx->saved_data["has_bias"] = bias.has_value();
    return below_autograd([&] { return linear_op(x, weight, bias); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    auto [grad_x, grad_weight] =
        linear_operand_grads(grads[0], saved[0], saved[1], ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    const bool want_bias = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2);
    return {grad_x, grad_weight, want_bias ? bias_grad_autograd(grads[0]) : Tensor()};
  }
};

Tensor linear_autograd(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
  const Tensor b = bias.has_value() ? *bias : Tensor();
  if (!needs_graph({&x, &weight, &b})) return below_autograd([&] { return linear_op(x, weight, bias); });
  return Linear::apply(x, weight, present(bias));
}

// ---- linear_act: act(x . weight^T + bias), and the product before the bias when store_pre ----

struct LinearAct : torch::autograd::Function<LinearAct> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                               const std::optional<Tensor>& bias, const std::string& act) {
    auto [out, pre] =
        below_autograd([&] { return FASTOPS_OP("linear_act", "", LinearActOp).call(x, weight, bias, act, true); });
    ctx->mark_non_differentiable({pre});
    ctx->save_for_backward({x, weight, bias.value_or(Tensor()), pre, out});
    ctx->saved_data["act"] = act;
    return {out, pre};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &bias = saved[2], &out = saved[4];
    const std::string act = ctx->saved_data["act"].toStringRef();
    const Activation a = linear_activation(act);
    const bool want_bias = bias.defined() && ctx->needs_input_grad(2);
    Tensor grad_pre, grad_bias;
    if (differentiable_backward()) {
      // Recomputed through the (differentiable) linear, so that the second derivative sees pre's dependence on x.
      const Tensor h = linear_autograd(x, weight, bias.defined() ? std::optional<Tensor>(bias) : std::nullopt);
      grad_pre = grads[0] * aten_derivative(a, h);
      if (want_bias) grad_bias = grad_pre.reshape_symint({-1, weight.sym_size(0)}).sum(0);
    } else {
      const Tensor& pre = saved[3];
      if (bias.defined()) {
        std::tie(grad_pre, grad_bias) =
            FASTOPS_OP("bias_act_backward", "", BiasActBackwardOp).call(grads[0], pre, bias, act);
      } else {
        grad_pre = activation_backward_op(a, grads[0], pre, out);
      }
    }
    auto [grad_x, grad_weight] =
        linear_operand_grads(grad_pre, x, weight, ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    return {grad_x, grad_weight, want_bias ? grad_bias : Tensor(), Tensor()};
  }

  // grad * act'(pre) with no bias, on the activation's own backward kernel (relu's reads the output).
  static Tensor activation_backward_op(Activation a, const Tensor& grad, const Tensor& pre, const Tensor& out) {
    using Backward = Tensor(const Tensor&, const Tensor&);
    using GeluBackward = Tensor(const Tensor&, const Tensor&, c10::string_view);
    switch (a) {
      case Activation::ReLU: return FASTOPS_OP("relu_backward", "", Backward).call(grad, out);
      case Activation::GELU: return FASTOPS_OP("gelu_backward", "", GeluBackward).call(grad, pre, "none");
      case Activation::GELUTanh: return FASTOPS_OP("gelu_backward", "", GeluBackward).call(grad, pre, "tanh");
      default: return FASTOPS_OP("silu_backward", "", Backward).call(grad, pre);
    }
  }
};

// When it records a backward, the autograd kernel keeps the product before the bias whatever store_pre says (the
// backward reads it), so the caller's store_pre only asks for it where no gradient is recorded. The functional API
// passes False: a traced or scripted graph then holds one constant that is right with and without autograd.
std::tuple<Tensor, Tensor> linear_act_autograd(const Tensor& x, const Tensor& weight,
                                               const std::optional<Tensor>& bias, c10::string_view act,
                                               bool store_pre) {
  const Tensor b = bias.has_value() ? *bias : Tensor();
  if (!needs_graph({&x, &weight, &b})) {
    return below_autograd(
        [&] { return FASTOPS_OP("linear_act", "", LinearActOp).call(x, weight, bias, act, store_pre); });
  }
  variable_list outs = LinearAct::apply(x, weight, present(bias), std::string(act));
  return {outs[0], outs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, Autograd, m) {
  m.impl("matmul", &matmul_autograd);
  m.impl("linear", &linear_autograd);
  m.impl("linear_act", &linear_act_autograd);
  m.impl("bias_grad", &bias_grad_autograd);
}

}  // namespace fastops

// Autograd of the activation family (see common/autograd.h for why it is C++ and for the double-backward rule).
// Each forward saves what its backward kernel reads: the output for relu, sigmoid and tanh (as torch does: cheaper
// than recomputing exp/tanh, and it needs no copy of the input), the input for the others; the fused ops save their
// operands and recompute x + bias / act(gate) in the backward.
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/where.h>
#include <torch/library.h>

#include <string>

#include "activations/activation_aten.h"
#include "activations/activations.h"
#include "common/autograd.h"

namespace fastops {
namespace {

using at::Tensor;

// ---- unary activations ----
// A Spec names the op and its backward: Param is what the schema carries besides x (double when nothing).

template <typename Spec>
struct UnaryActivation : torch::autograd::Function<UnaryActivation<Spec>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, typename Spec::Param param) {
    Tensor y = below_autograd([&] { return Spec::forward(x, param); });
    ctx->save_for_backward({Spec::kSavesOutput ? y : x});
    ctx->saved_data["param"] = param;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor saved = ctx->get_saved_variables()[0];
    const auto param = ctx->saved_data["param"].template to<typename Spec::Param>();
    Tensor grad = differentiable_backward() ? Spec::aten_backward(grads[0], saved, param)
                                            : Spec::backward(grads[0], saved, param);
    return {grad, Tensor()};
  }
};

template <typename Spec>
Tensor unary_autograd(const Tensor& x, typename Spec::Param param) {
  if (!needs_graph({&x})) return below_autograd([&] { return Spec::forward(x, param); });
  return UnaryActivation<Spec>::apply(x, param);
}

using UnaryOp = Tensor(const Tensor&);
using BinaryOp = Tensor(const Tensor&, const Tensor&);

struct ReluSpec {
  using Param = double;
  static constexpr bool kSavesOutput = true;
  static Tensor forward(const Tensor& x, double) { return FASTOPS_OP("relu", "", UnaryOp).call(x); }
  static Tensor backward(const Tensor& g, const Tensor& y, double) {
    return FASTOPS_OP("relu_backward", "", BinaryOp).call(g, y);
  }
  static Tensor aten_backward(const Tensor& g, const Tensor& y, double) { return at::where(y <= 0, 0.0, g); }
};

struct SigmoidSpec {
  using Param = double;
  static constexpr bool kSavesOutput = true;
  static Tensor forward(const Tensor& x, double) { return FASTOPS_OP("sigmoid", "", UnaryOp).call(x); }
  static Tensor backward(const Tensor& g, const Tensor& y, double) {
    return FASTOPS_OP("sigmoid_backward", "", BinaryOp).call(g, y);
  }
  static Tensor aten_backward(const Tensor& g, const Tensor& y, double) { return g * (1 - y) * y; }
};

struct TanhSpec {
  using Param = double;
  static constexpr bool kSavesOutput = true;
  static Tensor forward(const Tensor& x, double) { return FASTOPS_OP("tanh", "", UnaryOp).call(x); }
  static Tensor backward(const Tensor& g, const Tensor& y, double) {
    return FASTOPS_OP("tanh_backward", "", BinaryOp).call(g, y);
  }
  static Tensor aten_backward(const Tensor& g, const Tensor& y, double) { return g * (1 - y * y); }
};

struct SiluSpec {
  using Param = double;
  static constexpr bool kSavesOutput = false;
  static Tensor forward(const Tensor& x, double) { return FASTOPS_OP("silu", "", UnaryOp).call(x); }
  static Tensor backward(const Tensor& g, const Tensor& x, double) {
    return FASTOPS_OP("silu_backward", "", BinaryOp).call(g, x);
  }
  static Tensor aten_backward(const Tensor& g, const Tensor& x, double) {
    return g * aten_derivative(Activation::SiLU, x);
  }
};

struct GeluSpec {
  using Param = std::string;  // approximate
  static constexpr bool kSavesOutput = false;
  static Tensor forward(const Tensor& x, const std::string& approximate) {
    return FASTOPS_OP("gelu", "", Tensor(const Tensor&, c10::string_view)).call(x, approximate);
  }
  static Tensor backward(const Tensor& g, const Tensor& x, const std::string& approximate) {
    return FASTOPS_OP("gelu_backward", "", Tensor(const Tensor&, const Tensor&, c10::string_view))
        .call(g, x, approximate);
  }
  static Tensor aten_backward(const Tensor& g, const Tensor& x, const std::string& approximate) {
    return g * aten_derivative(gelu_kind("gelu", approximate), x);
  }
};

struct LeakyReluSpec {
  using Param = double;  // negative_slope
  static constexpr bool kSavesOutput = false;
  static Tensor forward(const Tensor& x, double slope) {
    return FASTOPS_OP("leaky_relu", "", Tensor(const Tensor&, double)).call(x, slope);
  }
  static Tensor backward(const Tensor& g, const Tensor& x, double slope) {
    return FASTOPS_OP("leaky_relu_backward", "", Tensor(const Tensor&, const Tensor&, double)).call(g, x, slope);
  }
  static Tensor aten_backward(const Tensor& g, const Tensor& x, double slope) {
    return g * aten_derivative(Activation::LeakyReLU, x, slope);
  }
};

// ---- bias_act: act(x + bias) ----

using BiasActOp = Tensor(const Tensor&, const Tensor&, c10::string_view);
using BiasActBackwardOp =
    std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view);
using GluBackwardOp = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, c10::string_view);

struct BiasAct : torch::autograd::Function<BiasAct> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& bias, const std::string& act) {
    ctx->save_for_backward({x, bias});  // x + bias is recomputed in the backward (see activations.h)
    ctx->saved_data["act"] = act;
    return below_autograd([&] { return FASTOPS_OP("bias_act", "", BiasActOp).call(x, bias, act); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &bias = saved[1];
    const std::string act = ctx->saved_data["act"].toStringRef();
    if (differentiable_backward()) {
      const Tensor grad_x = grads[0] * aten_derivative(activation_named("bias_act", act), x + bias);
      return {grad_x, grad_x.reshape_symint({-1, bias.sym_size(0)}).sum(0), Tensor()};
    }
    auto [grad_x, grad_bias] = FASTOPS_OP("bias_act_backward", "", BiasActBackwardOp).call(grads[0], x, bias, act);
    return {grad_x, grad_bias, Tensor()};
  }
};

Tensor bias_act_autograd(const Tensor& x, const Tensor& bias, c10::string_view act) {
  if (!needs_graph({&x, &bias})) {
    return below_autograd([&] { return FASTOPS_OP("bias_act", "", BiasActOp).call(x, bias, act); });
  }
  return BiasAct::apply(x, bias, std::string(act));
}

// ---- gated units: act(gate) * up, act = silu (swiglu) or gelu / gelu_tanh (geglu) ----

// The forward op of a gated unit for the activation name glu_backward takes.
Tensor glu_op(const Tensor& gate, const Tensor& up, const std::string& act) {
  if (act == "silu") return FASTOPS_OP("swiglu", "", BinaryOp).call(gate, up);
  return FASTOPS_OP("geglu", "", Tensor(const Tensor&, const Tensor&, c10::string_view))
      .call(gate, up, act == "gelu" ? "none" : "tanh");
}

Tensor glu_packed_op(const Tensor& x, const std::string& act) {
  if (act == "silu") return FASTOPS_OP("swiglu", "packed", UnaryOp).call(x);
  return FASTOPS_OP("geglu", "packed", Tensor(const Tensor&, c10::string_view)).call(x, act == "gelu" ? "none" : "tanh");
}

// (grad_gate, grad_up) of act(gate) * up as ATen expressions.
std::pair<Tensor, Tensor> aten_glu_backward(const Tensor& grad, const Tensor& gate, const Tensor& up,
                                            const std::string& act) {
  const Activation a = activation_named("glu_backward", act);
  return {grad * up * aten_derivative(a, gate), grad * aten_activation(a, gate)};
}

struct Glu : torch::autograd::Function<Glu> {
  static Tensor forward(AutogradContext* ctx, const Tensor& gate, const Tensor& up, const std::string& act) {
    ctx->save_for_backward({gate, up});
    ctx->saved_data["act"] = act;
    return below_autograd([&] { return glu_op(gate, up, act); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const std::string act = ctx->saved_data["act"].toStringRef();
    if (differentiable_backward()) {
      auto [grad_gate, grad_up] = aten_glu_backward(grads[0], saved[0], saved[1], act);
      return {grad_gate, grad_up, Tensor()};
    }
    auto [grad_gate, grad_up] = FASTOPS_OP("glu_backward", "", GluBackwardOp).call(grads[0], saved[0], saved[1], act);
    return {grad_gate, grad_up, Tensor()};
  }
};

struct GluPacked : torch::autograd::Function<GluPacked> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const std::string& act) {
    ctx->save_for_backward({x});
    ctx->saved_data["act"] = act;
    return below_autograd([&] { return glu_packed_op(x, act); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor x = ctx->get_saved_variables()[0];
    const std::string act = ctx->saved_data["act"].toStringRef();
    if (differentiable_backward()) {
      const auto halves = x.chunk(2, -1);
      auto [grad_gate, grad_up] = aten_glu_backward(grads[0], halves[0], halves[1], act);
      return {at::cat({grad_gate, grad_up}, -1), Tensor()};
    }
    return {FASTOPS_OP("glu_packed_backward", "", BiasActOp).call(grads[0], x, act), Tensor()};
  }
};

Tensor glu_autograd(const Tensor& gate, const Tensor& up, const std::string& act) {
  if (!needs_graph({&gate, &up})) return below_autograd([&] { return glu_op(gate, up, act); });
  return Glu::apply(gate, up, act);
}

Tensor glu_packed_autograd(const Tensor& x, const std::string& act) {
  if (!needs_graph({&x})) return below_autograd([&] { return glu_packed_op(x, act); });
  return GluPacked::apply(x, act);
}

std::string geglu_act(c10::string_view approximate) {
  return gelu_kind("geglu", approximate) == Activation::GELU ? "gelu" : "gelu_tanh";
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, Autograd, m) {
  m.impl("relu", [](const Tensor& x) { return unary_autograd<ReluSpec>(x, 0.0); });
  m.impl("sigmoid", [](const Tensor& x) { return unary_autograd<SigmoidSpec>(x, 0.0); });
  m.impl("tanh", [](const Tensor& x) { return unary_autograd<TanhSpec>(x, 0.0); });
  m.impl("silu", [](const Tensor& x) { return unary_autograd<SiluSpec>(x, 0.0); });
  m.impl("gelu", [](const Tensor& x, c10::string_view approximate) {
    return unary_autograd<GeluSpec>(x, std::string(approximate));
  });
  m.impl("leaky_relu", [](const Tensor& x, double slope) { return unary_autograd<LeakyReluSpec>(x, slope); });
  m.impl("bias_act", &bias_act_autograd);
  m.impl("swiglu", [](const Tensor& gate, const Tensor& up) { return glu_autograd(gate, up, "silu"); });
  m.impl("swiglu.packed", [](const Tensor& x) { return glu_packed_autograd(x, "silu"); });
  m.impl("geglu", [](const Tensor& gate, const Tensor& up, c10::string_view approximate) {
    return glu_autograd(gate, up, geglu_act(approximate));
  });
  m.impl("geglu.packed", [](const Tensor& x, c10::string_view approximate) {
    return glu_packed_autograd(x, geglu_act(approximate));
  });
}

}  // namespace fastops

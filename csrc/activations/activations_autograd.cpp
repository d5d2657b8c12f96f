// Autograd of the activation family (see common/autograd.h for why it is C++ and for the double-backward rule).
// Each forward saves what its backward kernel reads (the table's `saved` column in activation_math.h: the output for
// relu, sigmoid and tanh, the input for the others); the fused ops save their operands and recompute x + bias /
// act(gate) in the backward.
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/where.h>
#include <torch/library.h>

#include <string>
#include <utility>
#include <vector>

#include "activations/activation_aten.h"
#include "activations/activations.h"
#include "common/autograd.h"

namespace fastops {
namespace {

using at::Tensor;

// ---- unary activations ----
// A Spec names the op and its backward: Param is what the schema carries besides x, kept in the graph node's
// saved_data (an IValue).

template <typename Spec>
struct UnaryActivation : torch::autograd::Function<UnaryActivation<Spec>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const typename Spec::Param& param) {
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
Tensor unary_autograd(const Tensor& x, const typename Spec::Param& param) {
  if (!needs_graph({&x})) return below_autograd([&] { return Spec::forward(x, param); });
  return UnaryActivation<Spec>::apply(x, param);
}

// The ops of a table activation with its own op (activation_math.h), called with its float parameters.
template <Activation A>
struct TableSpec {
  using Param = std::vector<double>;  // the float parameters in schema order
  static constexpr bool kSavesOutput = backward_reads_output(A);
  static constexpr int kParams = activation_param_count(A);

  template <size_t... I>
  static Tensor forward_op(const Tensor& x, const Param& p, std::index_sequence<I...>) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow((std::string("fastops::") + activation_name(A)).c_str(), "")
                               .typed<Tensor(const Tensor&, FloatParam<I>...)>();
    return op.call(x, p[I]...);
  }

  template <size_t... I>
  static Tensor backward_op(const Tensor& g, const Tensor& saved, const Param& p, std::index_sequence<I...>) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow((std::string("fastops::") + activation_name(A) + "_backward").c_str(), "")
            .typed<Tensor(const Tensor&, const Tensor&, FloatParam<I>...)>();
    return op.call(g, saved, p[I]...);
  }

  static Tensor forward(const Tensor& x, const Param& p) {
    return forward_op(x, p, std::make_index_sequence<kParams>{});
  }
  static Tensor backward(const Tensor& g, const Tensor& saved, const Param& p) {
    return backward_op(g, saved, p, std::make_index_sequence<kParams>{});
  }
  static Tensor aten_backward(const Tensor& g, const Tensor& saved, const Param& p) {
    return fastops::aten_backward(A, g, saved, act_params(p));
  }

};

template <Activation A, size_t... I>
void register_activation_autograd(torch::Library& m, std::index_sequence<I...>) {
  m.impl(activation_name(A), +[](const Tensor& x, FloatParam<I>... params) {
    return unary_autograd<TableSpec<A>>(x, std::vector<double>{params...});
  });
}

void register_activations_autograd(torch::Library& m) {
  for_each_activation([&](auto a) {
    constexpr Activation A = decltype(a)::value;
    if constexpr (has_own_op(A)) {
      register_activation_autograd<A>(m, std::make_index_sequence<activation_param_count(A)>{});
    }
  });
}

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

// ---- bias_act: act(x + bias) ----

using UnaryOp = Tensor(const Tensor&);
using BinaryOp = Tensor(const Tensor&, const Tensor&);

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

// ---- torch's glu(x, dim) = a * sigmoid(b) ----

struct GluDim : torch::autograd::Function<GluDim> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, int64_t dim) {
    ctx->save_for_backward({x});
    ctx->saved_data["dim"] = dim;
    return below_autograd([&] { return FASTOPS_OP("glu", "", Tensor(const Tensor&, int64_t)).call(x, dim); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor x = ctx->get_saved_variables()[0];
    const int64_t dim = ctx->saved_data["dim"].toInt();
    if (differentiable_backward()) {
      const auto halves = x.chunk(2, dim);
      const Tensor s = at::sigmoid(halves[1]);
      return {at::cat({grads[0] * s, grads[0] * halves[0] * s * (1 - s)}, dim), Tensor()};
    }
    return {FASTOPS_OP("glu_dim_backward", "", Tensor(const Tensor&, const Tensor&, int64_t)).call(grads[0], x, dim),
            Tensor()};
  }
};

Tensor glu_dim_autograd(const Tensor& x, int64_t dim) {
  if (!needs_graph({&x})) {
    return below_autograd([&] { return FASTOPS_OP("glu", "", Tensor(const Tensor&, int64_t)).call(x, dim); });
  }
  return GluDim::apply(x, dim);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, Autograd, m) {
  register_activations_autograd(m);
  m.impl("gelu", [](const Tensor& x, c10::string_view approximate) {
    return unary_autograd<GeluSpec>(x, std::string(approximate));
  });
  m.impl("bias_act", &bias_act_autograd);
  m.impl("swiglu", [](const Tensor& gate, const Tensor& up) { return glu_autograd(gate, up, "silu"); });
  m.impl("swiglu.packed", [](const Tensor& x) { return glu_packed_autograd(x, "silu"); });
  m.impl("geglu", [](const Tensor& gate, const Tensor& up, c10::string_view approximate) {
    return glu_autograd(gate, up, geglu_act(approximate));
  });
  m.impl("geglu.packed", [](const Tensor& x, c10::string_view approximate) {
    return glu_packed_autograd(x, geglu_act(approximate));
  });
  m.impl("glu", &glu_dim_autograd);
}

}  // namespace fastops

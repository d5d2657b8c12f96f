// Torch-side driver shared by the CPU and CUDA activation bindings: argument checks, layouts and output allocation
// live here once; a Backend only runs kernels on the tensors it is handed:
//   Backend::forward(Activation, const Tensor& x, Tensor& y, double param)
//   Backend::backward(Activation, const Tensor& grad_output, const Tensor& saved, Tensor& grad_input, double param)
//   Backend::bias_act_forward(Activation, const Tensor& x, const Tensor& bias, Tensor& y)        (contiguous [M, N])
//   Backend::bias_act_backward(Activation, const Tensor& grad, const Tensor& x, const Tensor* bias,
//                              Tensor& grad_x, Tensor* grad_bias)   (bias and grad_bias null: grad * act'(x))
//   Backend::glu_forward(Activation, const Tensor& like, GluRows, const void* gate, const void* up, void* out)
//   Backend::glu_backward(Activation, const Tensor& like, GluRows, const void* grad_output, const void* gate,
//                         const void* up, void* grad_gate, void* grad_up)
// (the gated units hand over raw row views because the packed form's halves are not tensors; `like` is an operand
// that gives the dtype and device)
// ActivationOps<Backend>::register_kernels(m) registers every op of the family for that backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "activations/activation_math.h"
#include "common/checks.h"
#include "common/elementwise.h"

namespace fastops {

// gelu's `approximate` argument, with torch's two spellings.
inline Activation gelu_kind(const char* op, c10::string_view approximate) {
  if (approximate == "none") return Activation::GELU;
  if (approximate == "tanh") return Activation::GELUTanh;
  // torch's wording ("approximate argument must be either none or tanh"), which its OpInfo error inputs match.
  TORCH_CHECK(false, "fastops.", op, ": approximate argument must be either none or tanh, got '", approximate, "'");
}

// The `act` argument of the fused ops (bias_act, the gated units' backward). LeakyReLU is left out: it would need
// a slope argument these schemas do not carry.
inline Activation activation_named(const char* op, c10::string_view name) {
  if (name == "relu") return Activation::ReLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "gelu_tanh") return Activation::GELUTanh;
  if (name == "silu") return Activation::SiLU;
  if (name == "sigmoid") return Activation::Sigmoid;
  if (name == "tanh") return Activation::Tanh;
  TORCH_CHECK(false, "fastops.", op, ": act must be one of relu, gelu, gelu_tanh, silu, sigmoid, tanh; got '", name,
              "'");
}

template <typename Backend>
at::Tensor activation_forward(const char* op, Activation act, const at::Tensor& x, double param = 0.0) {
  check_float_operands(op, {{x, "x"}});
  auto [xd] = dense_common_layout<1>({x});
  at::Tensor y = at::empty_like(xd);
  if (y.numel() > 0) Backend::forward(act, xd, y, param);
  return y;
}

// `saved_name` is what the backward reads besides the gradient ("result" when backward_reads_output, else "x").
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

// The CPU bias + activation pass as a direct call, y = act(x + bias) (act(x) when bias is null) for contiguous x and
// y: linear_act's second pass where the GEMM has no activation epilogue (defined in activations_cpu.cpp).
void bias_act_cpu(Activation act, const at::Tensor& x, const at::Tensor* bias, at::Tensor& y);

// bias_act(x, bias, act) = act(x + bias) with bias [N] broadcast over the rows of x [..., N]. The kernels see x as a
// contiguous [M, N] matrix (a non-contiguous x is copied once).
inline void check_bias_act_inputs(const char* op, const at::Tensor& x, const at::Tensor& bias) {
  check_float_operands(op, {{x, "x"}, {bias, "bias"}});
  TORCH_CHECK(x.dim() >= 1, "fastops.", op, ": x must have at least one dimension (the features), got a scalar");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(-1), "fastops.", op, ": bias must have shape [",
              x.size(-1), "] (x's last dimension), got ", bias.sizes());
}

// What the forward saves for the backward: x and bias, not the pre-activation x + bias. The backward recomputes
// x + bias while it reads x (the bias row stays in cache), so the forward writes one tensor instead of two and
// nothing beyond what autograd already keeps (x and the parameter) stays alive.
template <typename Backend>
at::Tensor bias_act_forward(const at::Tensor& x, const at::Tensor& bias, c10::string_view act) {
  constexpr const char* op = "bias_act";
  const Activation a = activation_named(op, act);
  check_bias_act_inputs(op, x, bias);
  const at::Tensor xc = x.contiguous(), bc = bias.contiguous();
  at::Tensor y = at::empty(xc.sizes(), xc.options());
  if (y.numel() > 0) Backend::bias_act_forward(a, xc, bc, y);
  return y;
}

// Without a bias (linear_act's backward when the layer has none) it is grad * act'(x) and grad_bias is empty.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor> bias_act_backward(const at::Tensor& grad_output, const at::Tensor& x,
                                                     const std::optional<at::Tensor>& bias, c10::string_view act) {
  constexpr const char* op = "bias_act_backward";
  const Activation a = activation_named(op, act);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    check_bias_act_inputs(op, x, *bias);
  } else {
    check_float_operands(op, {{x, "x"}});
  }
  check_float_operands(op, {{x, "x"}, {grad_output, "grad_output"}});
  check_same_shape(op, {x, "x"}, {grad_output, "grad_output"});
  const at::Tensor gc = grad_output.contiguous(), xc = x.contiguous();
  const at::Tensor bc = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor grad_x = at::empty(xc.sizes(), xc.options());
  if (!has_bias) {
    if (xc.numel() > 0) Backend::bias_act_backward(a, gc, xc, nullptr, grad_x, nullptr);
    return {grad_x, at::empty({0}, xc.options())};
  }
  if (xc.numel() == 0) return {grad_x, at::zeros_like(*bias, at::MemoryFormat::Contiguous)};  // sum over no rows
  at::Tensor grad_bias = at::empty({bias->size(0)}, bias->options());
  Backend::bias_act_backward(a, gc, xc, &bc, grad_x, &grad_bias);
  return {grad_x, grad_bias};
}

// The gated units act(gate) * up: on two same-shaped tensors, or ("packed") on one [..., 2H] tensor whose first
// half along the last dimension is the gate and second half is up, read in place (a non-contiguous input is made
// contiguous once first).
inline int64_t last_dim(const at::Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }

inline GluRows glu_rows(const at::Tensor& t, int64_t cols, int64_t in_stride) {
  return GluRows{cols == 0 ? 0 : t.numel() / in_stride, cols, in_stride};
}

template <typename Backend>
at::Tensor glu_forward(const char* op, Activation a, const at::Tensor& gate, const at::Tensor& up) {
  check_float_operands(op, {{gate, "gate"}, {up, "up"}});
  check_same_shape(op, {gate, "gate"}, {up, "up"});
  const at::Tensor gc = gate.contiguous(), uc = up.contiguous();
  at::Tensor y = at::empty(gc.sizes(), gc.options());
  const int64_t cols = last_dim(gc);
  if (y.numel() > 0) {
    Backend::glu_forward(a, gc, glu_rows(gc, cols, cols), gc.const_data_ptr(), uc.const_data_ptr(),
                         y.data_ptr());
  }
  return y;
}

inline int64_t packed_half(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "fastops.", op, ": x must have a last dimension of size 2H to split, got a scalar");
  TORCH_CHECK(x.size(-1) % 2 == 0, "fastops.", op,
              ": x's last dimension must be even (gate and up halves), got ", x.size(-1));
  return x.size(-1) / 2;
}

inline std::vector<int64_t> halved_shape(const at::Tensor& x, int64_t half) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = half;
  return shape;
}

// The up half starts `half` elements into each row of the packed tensor.
inline const void* up_half(const at::Tensor& xc, int64_t half) {
  return static_cast<const char*>(xc.const_data_ptr()) + half * xc.element_size();
}

template <typename Backend>
at::Tensor glu_packed_forward(const char* op, Activation a, const at::Tensor& x) {
  check_float_operands(op, {{x, "x"}});
  const int64_t half = packed_half(op, x);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(halved_shape(xc, half), xc.options());
  if (y.numel() > 0) {
    Backend::glu_forward(a, xc, glu_rows(xc, half, 2 * half), xc.const_data_ptr(), up_half(xc, half),
                         y.data_ptr());
  }
  return y;
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> glu_backward(const at::Tensor& grad_output, const at::Tensor& gate,
                                                const at::Tensor& up, c10::string_view act) {
  constexpr const char* op = "glu_backward";
  const Activation a = activation_named(op, act);
  check_float_operands(op, {{gate, "gate"}, {up, "up"}, {grad_output, "grad_output"}});
  check_same_shape(op, {gate, "gate"}, {up, "up"});
  check_same_shape(op, {gate, "gate"}, {grad_output, "grad_output"});
  const at::Tensor gc = gate.contiguous(), uc = up.contiguous(), goc = grad_output.contiguous();
  at::Tensor grad_gate = at::empty(gc.sizes(), gc.options());
  at::Tensor grad_up = at::empty(gc.sizes(), gc.options());
  const int64_t cols = last_dim(gc);
  if (gc.numel() > 0) {
    Backend::glu_backward(a, gc, glu_rows(gc, cols, cols), goc.const_data_ptr(), gc.const_data_ptr(),
                          uc.const_data_ptr(), grad_gate.data_ptr(), grad_up.data_ptr());
  }
  return {grad_gate, grad_up};
}

// The gradient of the packed form is one [..., 2H] tensor: grad_gate in its first half, grad_up in its second.
template <typename Backend>
at::Tensor glu_packed_backward(const at::Tensor& grad_output, const at::Tensor& x, c10::string_view act) {
  constexpr const char* op = "glu_packed_backward";
  const Activation a = activation_named(op, act);
  check_float_operands(op, {{x, "x"}, {grad_output, "grad_output"}});
  const int64_t half = packed_half(op, x);
  TORCH_CHECK(grad_output.sizes() == c10::IntArrayRef(halved_shape(x, half)), "fastops.", op,
              ": grad_output must have x's shape with the last dimension halved ", c10::IntArrayRef(halved_shape(x, half)),
              ", got ", grad_output.sizes());
  const at::Tensor xc = x.contiguous(), goc = grad_output.contiguous();
  at::Tensor grad_x = at::empty(xc.sizes(), xc.options());
  if (xc.numel() > 0) {
    char* grad_gate = static_cast<char*>(grad_x.data_ptr());
    Backend::glu_backward(a, xc, glu_rows(xc, half, 2 * half), goc.const_data_ptr(),
                          xc.const_data_ptr(), up_half(xc, half), grad_gate, grad_gate + half * xc.element_size());
  }
  return grad_x;
}

// Every op of the family for one backend; the CPU and CUDA bindings differ only in their Backend.
template <typename Backend>
struct ActivationOps {
  static at::Tensor relu(const at::Tensor& x) { return activation_forward<Backend>("relu", Activation::ReLU, x); }
  static at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& result) {
    return activation_backward<Backend>("relu_backward", Activation::ReLU, grad_output, result, "result");
  }

  static at::Tensor gelu(const at::Tensor& x, c10::string_view approximate) {
    return activation_forward<Backend>("gelu", gelu_kind("gelu", approximate), x);
  }
  static at::Tensor gelu_backward(const at::Tensor& grad_output, const at::Tensor& x, c10::string_view approximate) {
    return activation_backward<Backend>("gelu_backward", gelu_kind("gelu_backward", approximate), grad_output, x,
                                        "x");
  }

  static at::Tensor silu(const at::Tensor& x) { return activation_forward<Backend>("silu", Activation::SiLU, x); }
  static at::Tensor silu_backward(const at::Tensor& grad_output, const at::Tensor& x) {
    return activation_backward<Backend>("silu_backward", Activation::SiLU, grad_output, x, "x");
  }

  static at::Tensor leaky_relu(const at::Tensor& x, double negative_slope) {
    return activation_forward<Backend>("leaky_relu", Activation::LeakyReLU, x, negative_slope);
  }
  static at::Tensor leaky_relu_backward(const at::Tensor& grad_output, const at::Tensor& x, double negative_slope) {
    return activation_backward<Backend>("leaky_relu_backward", Activation::LeakyReLU, grad_output, x, "x",
                                        negative_slope);
  }

  static at::Tensor sigmoid(const at::Tensor& x) {
    return activation_forward<Backend>("sigmoid", Activation::Sigmoid, x);
  }
  static at::Tensor sigmoid_backward(const at::Tensor& grad_output, const at::Tensor& result) {
    return activation_backward<Backend>("sigmoid_backward", Activation::Sigmoid, grad_output, result, "result");
  }

  static at::Tensor tanh(const at::Tensor& x) { return activation_forward<Backend>("tanh", Activation::Tanh, x); }
  static at::Tensor tanh_backward(const at::Tensor& grad_output, const at::Tensor& result) {
    return activation_backward<Backend>("tanh_backward", Activation::Tanh, grad_output, result, "result");
  }

  static at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
    return glu_forward<Backend>("swiglu", Activation::SiLU, gate, up);
  }
  static at::Tensor swiglu_packed(const at::Tensor& x) {
    return glu_packed_forward<Backend>("swiglu", Activation::SiLU, x);
  }
  static at::Tensor geglu(const at::Tensor& gate, const at::Tensor& up, c10::string_view approximate) {
    return glu_forward<Backend>("geglu", gelu_kind("geglu", approximate), gate, up);
  }
  static at::Tensor geglu_packed(const at::Tensor& x, c10::string_view approximate) {
    return glu_packed_forward<Backend>("geglu", gelu_kind("geglu", approximate), x);
  }

  static void register_kernels(torch::Library& m) {
    m.impl("relu", &relu);
    m.impl("relu_backward", &relu_backward);
    m.impl("gelu", &gelu);
    m.impl("gelu_backward", &gelu_backward);
    m.impl("silu", &silu);
    m.impl("silu_backward", &silu_backward);
    m.impl("leaky_relu", &leaky_relu);
    m.impl("leaky_relu_backward", &leaky_relu_backward);
    m.impl("sigmoid", &sigmoid);
    m.impl("sigmoid_backward", &sigmoid_backward);
    m.impl("tanh", &tanh);
    m.impl("tanh_backward", &tanh_backward);
    m.impl("bias_act", &bias_act_forward<Backend>);
    m.impl("bias_act_backward", &bias_act_backward<Backend>);
    m.impl("swiglu", &swiglu);
    m.impl("swiglu.packed", &swiglu_packed);
    m.impl("geglu", &geglu);
    m.impl("geglu.packed", &geglu_packed);
    m.impl("glu_backward", &glu_backward<Backend>);
    m.impl("glu_packed_backward", &glu_packed_backward<Backend>);
  }
};

}  // namespace fastops

// Torch-side driver shared by the CPU and CUDA activation bindings: argument checks, layouts and output allocation
// live here once; a Backend only runs kernels on the tensors it is handed:
//   Backend::forward(Activation, const Tensor& x, Tensor& y, const ActParams&)
//   Backend::backward(Activation, const Tensor& grad_output, const Tensor& saved, Tensor& grad_input, const ActParams&)
//   Backend::bias_act_forward(Activation, const Tensor& x, const Tensor& bias, Tensor& y, const ActParams&)
//                             (contiguous [M, N])
//   Backend::bias_act_backward(Activation, const Tensor& grad, const Tensor& x, const Tensor* bias,
//                              Tensor& grad_x, Tensor* grad_bias, const ActParams&)
//                              (bias and grad_bias null: grad * act'(x))
//   Backend::glu_forward(Activation, const Tensor& like, GluRows, const void* gate, const void* up, void* out)
//   Backend::glu_backward(Activation, const Tensor& like, GluRows, const void* grad_output, const void* gate,
//                         const void* up, void* grad_gate, void* grad_up)
// (the gated units hand over raw row views because the packed form's halves are not tensors; `like` is an operand
// that gives the dtype and device)
// ActivationOps<Backend>::register_kernels(m) registers every op of the family for that backend.
#pragma once

#include <ATen/Config.h>
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/gelu_backward.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/WrapDimMinimal.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
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

// Whether torch's float32 gelu (approximate='none') on the CPU takes erf from the Abramowitz-Stegun formula (7.1.26,
// 1.5e-7 absolute) for this input. oneDNN's eltwise kernel runs torch's gelu and gelu_backward where the input is
// contiguous with more than one element and oneDNN is enabled (aten Activation.cpp, use_mkldnn); its backward uses
// that formula, its forward too below its AVX-512 kernels (which take a polynomial within a few ulps; the ISA is
// oneDNN's choice: the CPU and ONEDNN_MAX_CPU_ISA). Elsewhere ATen's kernel calls std::erf (strided and single
// elements). fastops' float32 gelu takes the same formula where torch does and an erf within about an ulp elsewhere:
// the accurate one costs twice the work (float32 gelu forward at avx2 0.82x torch's with it), the formula alone failed
// the accuracy rule where torch is exact (a transposed 5x3 input's gradient erred 1.6e-7 against torch's 3.8e-8).
//
// Which erf oneDNN takes is asked of torch once, on two elements of x = -1.2973689, where the formula errs 13 ulps
// (9.7e-8) and std::erf's result 2.3e-8.
inline bool torch_gelu_erf_is_coarse(bool backward) {
  static const std::array<bool, 2> coarse = [] {
    const float x = -1.2973689f;
    const at::Tensor input = at::full({2}, x, at::kFloat);
    const double forward = at::gelu(input)[0].item<float>();
    const double derivative = at::gelu_backward(at::ones_like(input), input)[0].item<float>();
    constexpr double kFormulaError = 5e-8;
    // The float64 values from the scalar gelu (activation_math.h: std::erf and std::exp in double).
    return std::array<bool, 2>{
        std::abs(forward - act::forward<Activation::GELU>(double{x}, ActParams{})) > kFormulaError,
        std::abs(derivative - act::backward_from_input<Activation::GELU>(1.0, double{x}, ActParams{})) >
            kFormulaError};
  }();
  return coarse[backward ? 1 : 0];
}

inline bool coarse_gelu_erf(const at::Tensor& x, bool backward) {
#if AT_MKLDNN_ENABLED()
  return x.is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.numel() > 1 &&
         at::globalContext().userEnabledMkldnn() && torch_gelu_erf_is_coarse(backward);
#else
  return false;
#endif
}

inline ActParams gelu_params(Activation kind, const at::Tensor& x, bool backward) {
  ActParams params;
  params.coarse_erf = kind == Activation::GELU && coarse_gelu_erf(x, backward);
  return params;
}

// The activation called `name` among those `allowed` keeps, or an error naming them all: the `act` argument of the
// fused ops (the table's fused activations) and of linear_act (those the GEMM epilogue fuses).
template <typename Allowed>
Activation activation_named_in(const char* op, c10::string_view name, Allowed allowed) {
  std::string names;
  for (int i = 0; i < act::kCount; ++i) {
    const auto a = static_cast<Activation>(i);
    if (!allowed(a)) continue;
    if (name == activation_name(a)) return a;
    names += (names.empty() ? "" : ", ") + std::string(activation_name(a));
  }
  TORCH_CHECK(false, "fastops.", op, ": act must be one of ", names, "; got '", name, "'");
}

inline Activation activation_named(const char* op, c10::string_view name) {
  return activation_named_in(op, name, fused_in_rows);
}

// The float parameters of an op call, in schema order (at most 3, as ActParams holds).
inline ActParams act_params(c10::ArrayRef<double> values) {
  const auto value = [&](size_t i) { return i < values.size() ? values[i] : 0.0; };
  return {value(0), value(1), value(2)};
}

// An op's float parameter, one per index of an index_sequence (a pack of `double`s as long as the schema's list).
template <size_t>
using FloatParam = double;

template <typename Backend>
at::Tensor activation_forward(const char* op, Activation act, const at::Tensor& x, const ActParams& params = {}) {
  check_float_operands(op, {{x, "x"}});
  auto [xd] = dense_common_layout<1>({x});
  at::Tensor y = at::empty_like(xd);
  if (y.numel() > 0) Backend::forward(act, xd, y, params);
  return y;
}

// `saved_name` is what the backward reads besides the gradient ("result" when backward_reads_output, else "x").
template <typename Backend>
at::Tensor activation_backward(const char* op, Activation act, const at::Tensor& grad_output, const at::Tensor& saved,
                               const char* saved_name, const ActParams& params = {}) {
  check_float_operands(op, {{grad_output, "grad_output"}, {saved, saved_name}});
  check_same_shape(op, {saved, saved_name}, {grad_output, "grad_output"});
  auto [gd, sd] = dense_common_layout<2>({grad_output, saved});
  at::Tensor grad_input = at::empty_like(gd);
  if (grad_input.numel() > 0) Backend::backward(act, gd, sd, grad_input, params);
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
  // torch's gelu(x + bias) sees x's layout.
  if (y.numel() > 0) Backend::bias_act_forward(a, xc, bc, y, gelu_params(a, x, /*backward=*/false));
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
  const ActParams params = gelu_params(a, x, /*backward=*/true);
  if (!has_bias) {
    if (xc.numel() > 0) Backend::bias_act_backward(a, gc, xc, nullptr, grad_x, nullptr, params);
    return {grad_x, at::empty({0}, xc.options())};
  }
  if (xc.numel() == 0) return {grad_x, at::zeros_like(*bias, at::MemoryFormat::Contiguous)};  // sum over no rows
  at::Tensor grad_bias = at::empty({bias->size(0)}, bias->options());
  Backend::bias_act_backward(a, gc, xc, &bc, grad_x, &grad_bias, params);
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

inline std::vector<int64_t> halved_shape(const at::Tensor& x, int64_t dim) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[dim] /= 2;
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
  at::Tensor y = at::empty(halved_shape(xc, xc.dim() - 1), xc.options());
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
  const std::vector<int64_t> shape = halved_shape(x, x.dim() - 1);
  TORCH_CHECK(grad_output.sizes() == c10::IntArrayRef(shape), "fastops.", op,
              ": grad_output must have x's shape with the last dimension halved ", c10::IntArrayRef(shape), ", got ",
              grad_output.sizes());
  const at::Tensor xc = x.contiguous(), goc = grad_output.contiguous();
  at::Tensor grad_x = at::empty(xc.sizes(), xc.options());
  if (xc.numel() > 0) {
    char* grad_gate = static_cast<char*>(grad_x.data_ptr());
    Backend::glu_backward(a, xc, glu_rows(xc, half, 2 * half), goc.const_data_ptr(),
                          xc.const_data_ptr(), up_half(xc, half), grad_gate, grad_gate + half * xc.element_size());
  }
  return grad_x;
}

// torch's glu(x, dim) = a * sigmoid(b), a and b the first and second halves of x along dim: the gated unit with the
// gate in the second half. For x contiguous [outer, 2H, inner] around dim, each of the `outer` rows holds a (H*inner
// elements) then b, so the row view is the packed form's with the halves swapped.
struct GluSplit {
  int64_t dim;
  GluRows rows;
  int64_t half_offset;  // elements from a row's start to its b half
};

inline GluSplit glu_split(const at::Tensor& x, int64_t dim) {
  // torch's messages (aten GatedLinearUnit.cpp), which its OpInfo error inputs match.
  TORCH_CHECK(x.dim() > 0, "glu does not support scalars because halving size must be even");
  const int64_t d = c10::maybe_wrap_dim(dim, x.dim());
  const int64_t size = x.size(d);
  TORCH_CHECK(size % 2 == 0, "Halving dimension must be even, but dimension ", d, " is size ", size);
  int64_t inner = 1;
  for (int64_t k = d + 1; k < x.dim(); ++k) inner *= x.size(k);
  const int64_t cols = size / 2 * inner;
  return {d, GluRows{cols == 0 ? 0 : x.numel() / (2 * cols), cols, 2 * cols}, cols};
}

inline const void* element_at(const at::Tensor& t, int64_t offset) {
  return static_cast<const char*>(t.const_data_ptr()) + offset * t.element_size();
}

template <typename Backend>
at::Tensor glu_dim_forward(const at::Tensor& x, int64_t dim) {
  check_float_operands("glu", {{x, "x"}});
  const GluSplit g = glu_split(x, dim);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(halved_shape(xc, g.dim), xc.options());
  if (y.numel() > 0) {
    Backend::glu_forward(Activation::Sigmoid, xc, g.rows, element_at(xc, g.half_offset), xc.const_data_ptr(),
                         y.data_ptr());
  }
  return y;
}

// The gradient of glu is one tensor of x's shape: grad_a in the first half along dim, grad_b in the second.
template <typename Backend>
at::Tensor glu_dim_backward(const at::Tensor& grad_output, const at::Tensor& x, int64_t dim) {
  constexpr const char* op = "glu_dim_backward";
  check_float_operands(op, {{x, "x"}, {grad_output, "grad_output"}});
  const GluSplit g = glu_split(x, dim);
  const std::vector<int64_t> shape = halved_shape(x, g.dim);
  TORCH_CHECK(grad_output.sizes() == c10::IntArrayRef(shape), "fastops.", op,
              ": grad_output must have x's shape with dim halved ", c10::IntArrayRef(shape), ", got ",
              grad_output.sizes());
  const at::Tensor xc = x.contiguous(), goc = grad_output.contiguous();
  at::Tensor grad_x = at::empty(xc.sizes(), xc.options());
  if (xc.numel() > 0) {
    char* grad_a = static_cast<char*>(grad_x.data_ptr());
    Backend::glu_backward(Activation::Sigmoid, xc, g.rows, goc.const_data_ptr(), element_at(xc, g.half_offset),
                          xc.const_data_ptr(), grad_a + g.half_offset * xc.element_size(), grad_a);
  }
  return grad_x;
}

// The standalone ops of the table's activations with their own op: fastops::<name>(x, <float parameters>) and
// <name>_backward(grad_output, x or result, <float parameters>), one kernel pair per activation.
template <typename Backend, Activation A, size_t... I>
void register_activation_op(torch::Library& m, std::index_sequence<I...>) {
  static const std::string backward_name = std::string(activation_name(A)) + "_backward";
  m.impl(activation_name(A), +[](const at::Tensor& x, FloatParam<I>... params) {
    return activation_forward<Backend>(activation_name(A), A, x, act_params({params...}));
  });
  m.impl(backward_name.c_str(), +[](const at::Tensor& grad_output, const at::Tensor& saved, FloatParam<I>... params) {
    return activation_backward<Backend>(backward_name.c_str(), A, grad_output, saved,
                                        backward_reads_output(A) ? "result" : "x", act_params({params...}));
  });
}

template <typename Backend>
void register_activation_ops(torch::Library& m) {
  for_each_activation([&](auto a) {
    constexpr Activation A = decltype(a)::value;
    if constexpr (has_own_op(A)) {
      register_activation_op<Backend, A>(m, std::make_index_sequence<activation_param_count(A)>{});
    }
  });
}

// Every op of the family for one backend; the CPU and CUDA bindings differ only in their Backend.
template <typename Backend>
struct ActivationOps {
  static at::Tensor gelu(const at::Tensor& x, c10::string_view approximate) {
    const Activation kind = gelu_kind("gelu", approximate);
    return activation_forward<Backend>("gelu", kind, x, gelu_params(kind, x, /*backward=*/false));
  }
  static at::Tensor gelu_backward(const at::Tensor& grad_output, const at::Tensor& x, c10::string_view approximate) {
    const Activation kind = gelu_kind("gelu_backward", approximate);
    return activation_backward<Backend>("gelu_backward", kind, grad_output, x, "x",
                                        gelu_params(kind, x, /*backward=*/true));
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
    register_activation_ops<Backend>(m);
    m.impl("gelu", &gelu);
    m.impl("gelu_backward", &gelu_backward);
    m.impl("bias_act", &bias_act_forward<Backend>);
    m.impl("bias_act_backward", &bias_act_backward<Backend>);
    m.impl("swiglu", &swiglu);
    m.impl("swiglu.packed", &swiglu_packed);
    m.impl("geglu", &geglu);
    m.impl("geglu.packed", &geglu_packed);
    m.impl("glu_backward", &glu_backward<Backend>);
    m.impl("glu_packed_backward", &glu_packed_backward<Backend>);
    m.impl("glu", &glu_dim_forward<Backend>);
    m.impl("glu_dim_backward", &glu_dim_backward<Backend>);
  }
};

}  // namespace fastops

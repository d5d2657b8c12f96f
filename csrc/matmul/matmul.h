// Torch-side driver shared by the CPU and CUDA matmul bindings: argument checks, the operand layouts (read in place
// through GemmArgs' layout flags and batch strides wherever torch's strides allow it), output allocation and the
// empty / K == 0 cases live here once; a Backend only runs kernels on what it is handed:
//   Backend::plan(const GemmArgs&) -> Backend::Plan     the backend's one decision for a GEMM (every size > 0): the
//                                                        kernel, and Plan::fuses_activation, whether that kernel
//                                                        applies args.act in its epilogue (CUDA: gemm_plan.h; the
//                                                        backend adds its settings, e.g. torch's TF32 permission)
//   Backend::run(const Plan&, const GemmArgs&)           C = op(A) . op(B) (+ bias) (+ C), as planned
//   Backend::bias_act(Activation, const Tensor& x, const Tensor* bias, Tensor& y)
//                                                        y = act(x + bias) (bias may be null) for contiguous [.., N]
//                                                        x and y: linear_act's second pass where the GEMM has no
//                                                        activation epilogue, called directly (not by op name)
//   Backend::column_sum(const Tensor& g, Tensor& out)    out[j] = sum_i g[i, j], g 2-D contiguous with rows > 0
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/SmallVector.h>

#include <optional>
#include <utility>

#include "activations/activations.h"
#include "common/checks.h"
#include "matmul/gemm.h"

namespace fastops {

using Shape = c10::SmallVector<int64_t, 6>;

// The leading (batch) dims broadcast against each other as torch.matmul does.
inline Shape broadcast_batch(const char* op, at::IntArrayRef a, at::IntArrayRef b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n, 1);
  for (size_t i = 0; i < n; ++i) {
    const int64_t sa = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t sb = i < n - b.size() ? 1 : b[i - (n - b.size())];
    TORCH_CHECK(sa == sb || sa == 1 || sb == 1, "fastops.", op, ": batch dims of a ", a, " and b ", b,
                " cannot be broadcast together");
    out[i] = sa == 1 ? sb : sa;
  }
  return out;
}

// The one stride that walks all batch dims (every dim but the last two) as a single flattened index, when one
// exists: contiguous batches, a broadcast (stride 0) operand, and anything that collapses like a view.
inline std::optional<int64_t> flat_batch_stride(const at::Tensor& t) {
  std::optional<int64_t> stride;
  int64_t next = 0;  // the stride the next outer non-trivial dim must have to continue the flat index
  for (int64_t d = t.dim() - 3; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (!stride) {
      stride = t.stride(d);
    } else if (t.stride(d) != next) {
      return std::nullopt;
    }
    next = t.stride(d) * t.size(d);
  }
  return stride.value_or(0);
}

// An operand (..., rows, cols) as the kernels read it. `storage` owns the memory `ref` points into: the input
// itself when its layout is readable in place, else a contiguous copy.
struct Operand {
  at::Tensor storage;
  MatrixRef ref;
};

inline Operand matrix_operand(const at::Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t row_stride = t.stride(-2), col_stride = t.stride(-1);
  const std::optional<int64_t> batch_stride = flat_batch_stride(t);
  if (batch_stride) {
    if (col_stride == 1 || cols == 1) {
      return {t, {t.const_data_ptr(), rows == 1 ? cols : row_stride, false, *batch_stride}};
    }
    if (row_stride == 1 || rows == 1) {
      return {t, {t.const_data_ptr(), cols == 1 ? rows : col_stride, true, *batch_stride}};
    }
  }
  at::Tensor dense = t.contiguous();
  return {dense, {dense.const_data_ptr(), cols, false, rows * cols}};
}

inline GemmArgs gemm_args(const Operand& a, const Operand& b, at::Tensor& c, int64_t batch, int64_t m, int64_t n,
                          int64_t k, const at::Tensor* bias) {
  GemmArgs args;
  args.dtype = to_dtype(c.scalar_type());
  args.batch = batch;
  args.m = m;
  args.n = n;
  args.k = k;
  args.a = a.ref;
  args.b = b.ref;
  args.c = c.data_ptr();
  args.ldc = n;
  args.batch_stride_c = m * n;
  args.bias = bias ? bias->const_data_ptr() : nullptr;
  return args;
}

// One GEMM: planned once, then run.
template <typename Backend>
void run_gemm(const GemmArgs& args) {
  Backend::run(Backend::plan(args), args);
}

// torch.matmul for operands of at least 2 dims (fastops.functional.matmul adds and removes the dims of 1-D ones).
template <typename Backend>
at::Tensor matmul_forward(const at::Tensor& a, const at::Tensor& b) {
  check_float_operands("matmul", {{a, "a"}, {b, "b"}});
  TORCH_CHECK(a.dim() >= 2 && b.dim() >= 2, "fastops.matmul: a and b must have at least 2 dims, got ", a.dim(),
              " and ", b.dim());
  TORCH_CHECK(a.size(-1) == b.size(-2), "fastops.matmul: a's last dim (", a.size(-1),
              ") must equal b's second-to-last dim (", b.size(-2), "); shapes ", a.sizes(), " and ", b.sizes());
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  Shape shape = broadcast_batch("matmul", a.sizes().slice(0, a.dim() - 2), b.sizes().slice(0, b.dim() - 2));
  int64_t batch = 1;
  for (int64_t s : shape) batch *= s;
  Shape a_shape = shape, b_shape = shape;
  a_shape.append({m, k});
  b_shape.append({k, n});
  shape.append({m, n});
  at::Tensor out = at::empty(shape, a.options());
  if (out.numel() == 0) return out;
  if (k == 0) return out.zero_();
  const Operand ao = matrix_operand(a.expand(a_shape)), bo = matrix_operand(b.expand(b_shape));
  run_gemm<Backend>(gemm_args(ao, bo, out, batch, m, n, k, nullptr));
  return out;
}

// Checks linear's operands (x (..., in), weight (out, in), bias (out) or none) and returns the output's shape.
inline Shape check_linear(const char* op, const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias) {
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    check_float_operands(op, {{x, "x"}, {weight, "weight"}, {*bias, "bias"}});
  } else {
    check_float_operands(op, {{x, "x"}, {weight, "weight"}});
  }
  TORCH_CHECK(x.dim() >= 1, "fastops.", op, ": x must have at least 1 dim, got a scalar");
  TORCH_CHECK(weight.dim() == 2, "fastops.", op, ": weight must be 2-D (out_features, in_features), got ",
              weight.sizes());
  TORCH_CHECK(x.size(-1) == weight.size(1), "fastops.", op, ": x's last dim (", x.size(-1),
              ") must equal weight's in_features (", weight.size(1), ")");
  const int64_t n = weight.size(0);
  TORCH_CHECK(!has_bias || (bias->dim() == 1 && bias->size(0) == n), "fastops.", op, ": bias must have shape [", n,
              "], got ", has_bias ? bias->sizes() : at::IntArrayRef{});
  Shape shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(n);
  return shape;
}

// The GEMM of linear into `out` (x's leading dims flattened into rows); the weight is read transposed in place.
inline GemmArgs linear_gemm_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias,
                                 at::Tensor& out, Operand& x_operand, Operand& w_operand) {
  const int64_t n = weight.size(0), k = weight.size(1);
  x_operand = matrix_operand(x.dim() == 2 ? x : x.reshape({-1, k}));
  w_operand = matrix_operand(weight.t());
  at::Tensor out2 = out.view({-1, n});
  return gemm_args(x_operand, w_operand, out2, 1, out2.size(0), n, k, bias);
}

// torch.nn.functional.linear: x (..., in) . weight(out, in)^T + bias(out).
template <typename Backend>
at::Tensor linear_forward(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const Shape shape = check_linear("linear", x, weight, bias);
  const bool has_bias = bias.has_value() && bias->defined();
  at::Tensor out = at::empty(shape, x.options());
  if (out.numel() == 0) return out;
  if (weight.size(1) == 0) return has_bias ? out.copy_(*bias) : out.zero_();
  const at::Tensor bias_dense = has_bias ? bias->contiguous() : at::Tensor();
  Operand xo, wo;
  run_gemm<Backend>(linear_gemm_args(x, weight, has_bias ? &bias_dense : nullptr, out, xo, wo));
  return out;
}

// The activations linear_act fuses (the table's fused_in_gemm), by the names torch-side callers use.
inline Activation linear_activation(c10::string_view name) {
  return activation_named_in("linear_act", name, fused_in_gemm);
}

// act(x . weight^T + bias) and, when store_pre, the product before the bias (what bias_act_backward reads; else an
// empty tensor). One plan: where the backend's kernel has the activation epilogue (Plan::fuses_activation: the
// Hopper kernel) that is one GEMM writing out (and pre); elsewhere the same plan's GEMM writes the product without
// the bias and one Backend::bias_act pass reads it back, as torch's linear-then-activation would.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor> linear_act_forward(const at::Tensor& x, const at::Tensor& weight,
                                                      const std::optional<at::Tensor>& bias, c10::string_view act,
                                                      bool store_pre) {
  const Activation activation = linear_activation(act);
  const Shape shape = check_linear("linear_act", x, weight, bias);
  const bool has_bias = bias.has_value() && bias->defined();
  at::Tensor out = at::empty(shape, x.options());
  at::Tensor pre = store_pre ? at::empty(shape, x.options()) : at::empty({0}, x.options());
  if (out.numel() == 0) return {out, pre};
  const at::Tensor bias_dense = has_bias ? bias->contiguous() : at::Tensor();
  const at::Tensor* bias_arg = has_bias ? &bias_dense : nullptr;
  // Where the composed path puts the product: pre when kept, else a temporary (allocated only on that path).
  at::Tensor product = store_pre ? pre : at::Tensor();
  if (weight.size(1) == 0) {
    product = store_pre ? pre.zero_() : at::zeros(shape, x.options());
  } else {
    Operand xo, wo;
    GemmArgs args = linear_gemm_args(x, weight, bias_arg, out, xo, wo);
    args.fuse_act = true;
    args.act = activation;
    args.pre = store_pre ? pre.data_ptr() : nullptr;
    const auto plan = Backend::plan(args);
    if (plan.fuses_activation) {
      Backend::run(plan, args);
      return {out, pre};
    }
    // A non-fusing kernel's plan does not depend on the epilogue, so it serves the product's GEMM as well.
    if (!product.defined()) product = at::empty(shape, x.options());
    args.fuse_act = false;
    args.bias = nullptr;
    args.pre = nullptr;
    args.c = product.data_ptr();
    Backend::run(plan, args);
  }
  Backend::bias_act(activation, product, bias_arg, out);
  return {out, pre};
}

// Whether x and y lie in one storage with intersecting spans (first to last element). Conservative: interleaved views
// that share no element count too (no GEMM caller writes its output between its operands' elements).
inline bool spans_intersect(const at::Tensor& x, const at::Tensor& y) {
  if (x.numel() == 0 || y.numel() == 0 || !x.storage().is_alias_of(y.storage())) return false;
  auto span = [](const at::Tensor& t) {
    int64_t last = 0;  // offset of the last element (torch strides are never negative)
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    const char* begin = static_cast<const char*>(t.const_data_ptr());
    return std::make_pair(begin, begin + (last + 1) * t.element_size());
  };
  const auto [x_begin, x_end] = span(x);
  const auto [y_begin, y_end] = span(y);
  return x_begin < y_end && y_begin < x_end;
}

// out += a . b for 2-D a (m, k) and b (k, n) into a row-major out (m, n), summed in the accumulator type and rounded
// once (GemmArgs::accumulate). a and b are read in place through their layout flags (a transposed view such as
// g.mT costs no copy); out's rows may be any distance apart (a slice of a wider matrix), its columns must be
// adjacent, and it must not share memory with a or b (tiles would read outputs already overwritten).
template <typename Backend>
void matmul_accumulate_forward(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  constexpr const char* op = "matmul_accumulate_";
  check_float_operands(op, {{out, "out"}, {a, "a"}, {b, "b"}});
  TORCH_CHECK(out.dim() == 2 && a.dim() == 2 && b.dim() == 2, "fastops.", op,
              ": out, a and b must be 2-D, got ", out.dim(), ", ", a.dim(), " and ", b.dim(), " dims");
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  TORCH_CHECK(b.size(0) == k, "fastops.", op, ": a's columns (", k, ") must equal b's rows (", b.size(0),
              "); shapes ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(out.size(0) == m && out.size(1) == n, "fastops.", op, ": out must have shape [", m, ", ", n,
              "] (a's rows, b's columns), got ", out.sizes());
  TORCH_CHECK((out.stride(1) == 1 || n == 1) && (out.stride(0) >= n || m == 1), "fastops.", op,
              ": out must be row-major (unit column stride, rows not overlapping), got strides ", out.strides());
  for (const Arg& input : {Arg{a, "a"}, Arg{b, "b"}}) {
    TORCH_CHECK(!spans_intersect(out, input.t), "fastops.", op, ": out must not share memory with ", input.name);
  }
  if (out.numel() == 0 || k == 0) return;  // nothing to add: out keeps its values
  const Operand ao = matrix_operand(a), bo = matrix_operand(b);
  GemmArgs args = gemm_args(ao, bo, out, 1, m, n, k, nullptr);
  args.ldc = m == 1 ? n : out.stride(0);
  args.accumulate = true;
  run_gemm<Backend>(args);
}

// The bias gradient of linear: grad_output summed over every dim but the last.
template <typename Backend>
at::Tensor bias_grad_forward(const at::Tensor& grad_output) {
  check_float_operands("bias_grad", {{grad_output, "grad_output"}});
  TORCH_CHECK(grad_output.dim() >= 1, "fastops.bias_grad: grad_output must have at least 1 dim, got a scalar");
  const int64_t n = grad_output.size(-1);
  at::Tensor out = at::empty({n}, grad_output.options());
  if (n == 0) return out;
  if (grad_output.numel() == 0) return out.zero_();
  const at::Tensor g = grad_output.reshape({-1, n}).contiguous();
  Backend::column_sum(g, out);
  return out;
}

}  // namespace fastops

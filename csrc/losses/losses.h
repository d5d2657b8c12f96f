// Torch-side driver shared by the CPU and CUDA loss bindings: argument checks, layouts and output allocation live
// here once; a Backend only runs kernels on the tensors it is handed:
//   Backend::cross_entropy_forward(const CrossEntropyTensors&, int64_t ignore_index, double label_smoothing)
//   Backend::cross_entropy_backward(const CrossEntropyTensors&, const Tensor& grad_rows, int64_t ignore_index,
//                                   double label_smoothing, Tensor& grad_logits)   (grad may be ce.logits; the
//                                   logits may be a block of classes: ce.class_start, ce.num_classes)
//   Backend::cross_entropy_forward_grad(const CrossEntropyTensors&, int64_t ignore_index, double label_smoothing,
//                                       const Tensor& grad_scale, Tensor& grad_logits)   (grad may be ce.logits)
//   Backend::cross_entropy_reduce(const Tensor& rows, const Tensor& row_weight, Tensor& loss, Tensor& divisor)
//                                   (float64 rows -> loss: [N] each rounded to loss's dtype, or [] their sum,
//                                   divided by the sum of row_weight when that is defined; a defined divisor gets
//                                   that sum, or 1)
//   Backend::cross_entropy_grad_scale(const CrossEntropyTensors&, int64_t ignore_index, Reduction, Tensor& scale)
//                                   ([] float64: 1 / the summed row weight of the rows not ignored for 'mean', 1 for
//                                   'sum')
//   Backend::scale_rows(Tensor& x, const Tensor& scale)
//   Backend::pointwise_forward(PointwiseLoss, const PointwiseTensors&, double param, Reduction, Tensor& out)
//   Backend::pointwise_backward(PointwiseLoss, const Tensor& grad_output, const PointwiseTensors&, double param,
//                               Reduction, Tensor& grad_input)
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <optional>

#include "common/checks.h"
#include "common/elementwise.h"
#include "losses/loss_math.h"

namespace fastops {

// The math type of a loss over `dtype` inputs: float32, or float64 for float64 inputs. Class weights and the
// cross-entropy target mass live in this type.
inline at::ScalarType loss_math_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// ---- cross entropy ----

// Everything a cross-entropy kernel touches; all tensors are contiguous. `target` is int64 [N] (class indices) or
// [N, C] probabilities of the logits' dtype; `weight` is [C] in the math type or undefined. Per row: `loss` and
// `row_weight` (w[target], 0 for ignored rows, 1 for probabilities) and `lse` (log-sum-exp of the logits) in
// float64, so that the 'mean' / 'sum' over rows adds no rounding of its own and the backward's z - lse is exact to
// float precision; `target_mass` (sum_j q_j, the total weight the target puts on the classes, see
// losses_cpu.cpp) in the math type.
// The logits' C columns are classes class_start .. class_start + C - 1 of num_classes: all of them (0, C) except in
// cross_entropy_block_grad_, which sees one block of a wider problem.
struct CrossEntropyTensors {
  at::Tensor logits, target, weight;
  at::Tensor loss, row_weight, lse, target_mass;
  int64_t class_start = 0, num_classes = 0;
  bool probability_target() const { return target.is_floating_point(); }
};

inline void check_cross_entropy_inputs(const char* op, const at::Tensor& logits, const at::Tensor& target,
                                       const std::optional<at::Tensor>& weight, double label_smoothing) {
  check_float_operands(op, {{logits, "logits"}});
  TORCH_CHECK(logits.dim() == 2, "fastops.", op, ": logits must be 2-D [N, C], got shape ", logits.sizes());
  TORCH_CHECK(logits.size(1) > 0, "fastops.", op, ": logits must have at least one class, got shape ",
              logits.sizes());
  check_defined(op, {target, "target"});
  TORCH_CHECK(target.device() == logits.device(), "fastops.", op, ": target must be on the device of logits (",
              logits.device(), "), got ", target.device());
  if (target.is_floating_point()) {
    TORCH_CHECK(target.scalar_type() == logits.scalar_type(), "fastops.", op,
                ": probability target must have the dtype of logits (", logits.scalar_type(), "), got ",
                target.scalar_type());
    check_same_shape(op, {logits, "logits"}, {target, "probability target"});
  } else {
    TORCH_CHECK(target.scalar_type() == at::kLong, "fastops.", op,
                ": target must be int64 class indices or floating-point class probabilities, got ",
                target.scalar_type());
    TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), "fastops.", op,
                ": class-index target must have shape [N] = [", logits.size(0), "], got ", target.sizes());
  }
  if (weight.has_value() && weight->defined()) {
    const at::ScalarType math = loss_math_type(logits.scalar_type());
    TORCH_CHECK(weight->scalar_type() == math, "fastops.", op, ": weight must be ", math, " for ",
                logits.scalar_type(), " logits, got ", weight->scalar_type());
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == logits.size(1), "fastops.", op,
                ": weight must have one entry per class (", logits.size(1), "), got shape ", weight->sizes());
    TORCH_CHECK(weight->device() == logits.device(), "fastops.", op, ": weight must be on the device of logits (",
                logits.device(), "), got ", weight->device());
  }
  TORCH_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, "fastops.", op,
              ": label_smoothing must be between 0.0 and 1.0, got ", label_smoothing);
}

// The kernels walk rows of C contiguous elements; other layouts are copied once here.
inline CrossEntropyTensors cross_entropy_operands(const at::Tensor& logits, const at::Tensor& target,
                                                  const std::optional<at::Tensor>& weight) {
  CrossEntropyTensors ce;
  ce.num_classes = logits.size(1);
  ce.logits = logits.contiguous();
  ce.target = target.contiguous();
  if (weight.has_value() && weight->defined()) ce.weight = weight->contiguous();
  return ce;
}

// Returns (loss, row_weight, lse, target_mass), each [N].
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cross_entropy_forward(
    const at::Tensor& logits, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, double label_smoothing) {
  check_cross_entropy_inputs("cross_entropy_forward", logits, target, weight, label_smoothing);
  CrossEntropyTensors ce = cross_entropy_operands(logits, target, weight);
  const auto math = logits.options().dtype(loss_math_type(logits.scalar_type()));
  const int64_t n = logits.size(0);
  ce.loss = at::empty({n}, logits.options().dtype(at::kDouble));
  ce.row_weight = at::empty({n}, logits.options().dtype(at::kDouble));
  ce.lse = at::empty({n}, logits.options().dtype(at::kDouble));
  ce.target_mass = at::empty({n}, math);
  if (n > 0) Backend::cross_entropy_forward(ce, ignore_index, label_smoothing);
  return {ce.loss, ce.row_weight, ce.lse, ce.target_mass};
}

// The backward's per-row inputs: float64 `doubles` and the math-type target_mass, each [N] on the logits' device.
inline void check_row_vectors(const char* op, const at::Tensor& logits,
                              std::initializer_list<std::pair<const at::Tensor&, const char*>> doubles,
                              const at::Tensor& target_mass) {
  const int64_t n = logits.size(0);
  auto check = [&](const at::Tensor& t, const char* name, at::ScalarType dtype) {
    check_defined(op, {t, name});
    TORCH_CHECK(t.scalar_type() == dtype, "fastops.", op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "fastops.", op, ": ", name, " must have shape [N] = [", n, "], got ",
                t.sizes());
    TORCH_CHECK(t.device() == logits.device(), "fastops.", op, ": ", name, " must be on the device of logits (",
                logits.device(), "), got ", t.device());
  };
  for (const auto& [t, name] : doubles) check(t, name, at::kDouble);
  check(target_mass, "target_mass", loss_math_type(logits.scalar_type()));
}

// grad_logits[i, j] = grad_rows[i] * (target_mass[i] softmax(logits[i])_j - q_ij): one read of the logits and one
// rounding of each gradient element.
template <typename Backend>
at::Tensor cross_entropy_backward(const at::Tensor& grad_rows, const at::Tensor& logits, const at::Tensor& target,
                                  const std::optional<at::Tensor>& weight, const at::Tensor& lse,
                                  const at::Tensor& target_mass, int64_t ignore_index, double label_smoothing) {
  constexpr const char* op = "cross_entropy_backward";
  check_cross_entropy_inputs(op, logits, target, weight, label_smoothing);
  check_row_vectors(op, logits, {{grad_rows, "grad_rows"}, {lse, "lse"}}, target_mass);
  CrossEntropyTensors ce = cross_entropy_operands(logits, target, weight);
  // Autograd hands the gradient of a sum / mean as an expanded (stride 0) vector: N scalars, cheap to materialise.
  ce.lse = lse.contiguous();
  ce.target_mass = target_mass.contiguous();
  at::Tensor grad_logits = at::empty_like(ce.logits);
  if (grad_logits.numel() > 0) {
    Backend::cross_entropy_backward(ce, grad_rows.contiguous(), ignore_index, label_smoothing, grad_logits);
  }
  return grad_logits;
}

// grad_scale of the forward-with-gradient: float64 on the logits' device, one element (every row) or [N] (row i).
inline void check_grad_scale(const char* op, const at::Tensor& grad_scale, const at::Tensor& logits) {
  check_defined(op, {grad_scale, "grad_scale"});
  TORCH_CHECK(grad_scale.scalar_type() == at::kDouble, "fastops.", op, ": grad_scale must be float64, got ",
              grad_scale.scalar_type());
  TORCH_CHECK(grad_scale.numel() == 1 || (grad_scale.dim() == 1 && grad_scale.size(0) == logits.size(0)), "fastops.",
              op, ": grad_scale must have one element or shape [N] = [", logits.size(0), "], got ",
              grad_scale.sizes());
  TORCH_CHECK(grad_scale.device() == logits.device(), "fastops.", op, ": grad_scale must be on the device of logits (",
              logits.device(), "), got ", grad_scale.device());
}

// Shared by the out-of-place and in-place forms: loss per row (float64) and grad = grad_scale * d loss / d logits.
template <typename Backend>
at::Tensor cross_entropy_forward_grad_into(CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing,
                                           const at::Tensor& grad_scale, at::Tensor& grad) {
  ce.loss = at::empty({ce.logits.size(0)}, ce.logits.options().dtype(at::kDouble));
  if (ce.logits.size(0) > 0) {
    Backend::cross_entropy_forward_grad(ce, ignore_index, label_smoothing, grad_scale.contiguous(), grad);
  }
  return ce.loss;
}

inline void check_loss_reduction(const char* op, int64_t reduction, at::ScalarType dtype, bool reduced_only) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "fastops.", op, ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ",
              reduction);
  TORCH_CHECK(!reduced_only || reduction != static_cast<int64_t>(Reduction::None), "fastops.", op,
              ": reduction must be 1 (mean) or 2 (sum), got 0 (none)");
  TORCH_CHECK(is_supported_float(dtype), "fastops.", op, ": dtype must be float16/bfloat16/float32/float64, got ", dtype);
}

// cross_entropy_loss's forward in one call: the rows (loss, row weight, lse, target mass) and their reduction, which
// the backend does in float64 in row order and rounds once to `dtype`. Returns (loss, lse, target_mass, divisor).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cross_entropy_loss_forward(
    const at::Tensor& logits, const at::Tensor& target, const std::optional<at::Tensor>& weight, int64_t reduction,
    int64_t ignore_index, double label_smoothing, at::ScalarType dtype) {
  constexpr const char* op = "cross_entropy_loss_forward";
  check_cross_entropy_inputs(op, logits, target, weight, label_smoothing);
  check_loss_reduction(op, reduction, dtype, false);
  const auto red = static_cast<Reduction>(reduction);
  CrossEntropyTensors ce = cross_entropy_operands(logits, target, weight);
  const int64_t n = logits.size(0);
  const auto doubles = logits.options().dtype(at::kDouble);
  ce.loss = at::empty({n}, doubles);
  ce.row_weight = at::empty({n}, doubles);
  ce.lse = at::empty({n}, doubles);
  ce.target_mass = at::empty({n}, logits.options().dtype(loss_math_type(logits.scalar_type())));
  if (n > 0) Backend::cross_entropy_forward(ce, ignore_index, label_smoothing);
  at::Tensor loss = red == Reduction::None ? at::empty({n}, logits.options().dtype(dtype))
                                           : at::empty({}, logits.options().dtype(dtype));
  at::Tensor divisor = at::empty({}, doubles);
  Backend::cross_entropy_reduce(ce.loss, red == Reduction::Mean ? ce.row_weight : at::Tensor(), loss, divisor);
  return {loss, ce.lse, ce.target_mass, divisor};
}

// The same for 'mean' / 'sum' with the gradient, d loss / d logits, written by the forward. Returns (loss, grad_logits,
// grad_scale).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_loss_forward_grad(
    const at::Tensor& logits, const at::Tensor& target, const std::optional<at::Tensor>& weight, int64_t reduction,
    int64_t ignore_index, double label_smoothing, at::ScalarType dtype) {
  constexpr const char* op = "cross_entropy_loss_forward_grad";
  check_cross_entropy_inputs(op, logits, target, weight, label_smoothing);
  check_loss_reduction(op, reduction, dtype, true);
  CrossEntropyTensors ce = cross_entropy_operands(logits, target, weight);
  at::Tensor grad_scale = at::empty({}, logits.options().dtype(at::kDouble));
  Backend::cross_entropy_grad_scale(ce, ignore_index, static_cast<Reduction>(reduction), grad_scale);
  at::Tensor grad = at::empty_like(ce.logits);
  const at::Tensor rows = cross_entropy_forward_grad_into<Backend>(ce, ignore_index, label_smoothing, grad_scale, grad);
  at::Tensor loss = at::empty({}, logits.options().dtype(dtype)), no_divisor;
  Backend::cross_entropy_reduce(rows, at::Tensor(), loss, no_divisor);  // the rows come scaled: a plain sum
  return {loss, grad, grad_scale};
}

// The in-place form: the gradient overwrites the (contiguous) logits, whose values are not needed afterwards.
template <typename Backend>
at::Tensor cross_entropy_forward_grad_(at::Tensor& logits, const at::Tensor& target,
                                       const std::optional<at::Tensor>& weight, int64_t ignore_index,
                                       double label_smoothing, const at::Tensor& grad_scale) {
  constexpr const char* op = "cross_entropy_forward_grad_";
  check_cross_entropy_inputs(op, logits, target, weight, label_smoothing);
  check_grad_scale(op, grad_scale, logits);
  TORCH_CHECK(logits.is_contiguous(), "fastops.", op, ": logits must be contiguous to be overwritten in place");
  CrossEntropyTensors ce = cross_entropy_operands(logits, target, weight);
  return cross_entropy_forward_grad_into<Backend>(ce, ignore_index, label_smoothing, grad_scale, logits);
}

// The gradient of classes class_start .. class_start + C - 1 of a num_classes-class problem, written over those
// (contiguous) logits: the backward's formula with the row statistics of all the classes, each row scaled by
// grad_scale. An index target outside the block only adds no one-hot term here.
template <typename Backend>
void cross_entropy_block_grad_(at::Tensor& logits, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                               const at::Tensor& lse, const at::Tensor& target_mass, const at::Tensor& grad_scale,
                               int64_t class_start, int64_t num_classes, int64_t ignore_index,
                               double label_smoothing) {
  constexpr const char* op = "cross_entropy_block_grad_";
  check_cross_entropy_inputs(op, logits, target, weight, label_smoothing);
  check_grad_scale(op, grad_scale, logits);
  check_row_vectors(op, logits, {{lse, "lse"}}, target_mass);
  TORCH_CHECK(logits.is_contiguous(), "fastops.", op, ": logits must be contiguous to be overwritten in place");
  TORCH_CHECK(class_start >= 0 && class_start + logits.size(1) <= num_classes, "fastops.", op, ": classes [",
              class_start, ", ", class_start + logits.size(1), ") must lie within num_classes (", num_classes, ")");
  CrossEntropyTensors ce = cross_entropy_operands(logits, target, weight);
  ce.class_start = class_start;
  ce.num_classes = num_classes;
  ce.lse = lse.contiguous();
  ce.target_mass = target_mass.contiguous();
  if (logits.numel() == 0) return;
  Backend::cross_entropy_backward(ce, grad_scale.expand({logits.size(0)}).contiguous(), ignore_index,
                                  label_smoothing, logits);
}

// x[r, ...] *= scale[r] (or scale[0] for a one-element scale) in place; rows whose factor is exactly 1 are not
// touched, so scaling a gradient by an upstream 1 costs nothing.
template <typename Backend>
void scale_rows_(at::Tensor& x, const at::Tensor& scale) {
  constexpr const char* op = "scale_rows_";
  check_float_operands(op, {{x, "x"}});
  check_defined(op, {scale, "scale"});
  TORCH_CHECK(x.dim() >= 1, "fastops.", op, ": x must have at least 1 dim, got a scalar");
  TORCH_CHECK(x.is_contiguous(), "fastops.", op, ": x must be contiguous");
  TORCH_CHECK(scale.scalar_type() == at::kDouble, "fastops.", op, ": scale must be float64, got ",
              scale.scalar_type());
  TORCH_CHECK(scale.numel() == 1 || (scale.dim() == 1 && scale.size(0) == x.size(0)), "fastops.", op,
              ": scale must have one element or one per row of x (", x.size(0), "), got shape ", scale.sizes());
  TORCH_CHECK(scale.device() == x.device(), "fastops.", op, ": scale must be on the device of x (", x.device(),
              "), got ", scale.device());
  if (x.numel() == 0) return;
  Backend::scale_rows(x, scale.contiguous());
}

// ---- elementwise losses (mse, l1, smooth_l1, huber, binary_cross_entropy, binary_cross_entropy_with_logits, kl_div) ----

// input and target, plus BCE's optional weight and pos_weight (undefined when absent), in one dense layout.
struct PointwiseTensors {
  at::Tensor input, target, weight, pos_weight;
};

inline Reduction to_reduction(const char* op, int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "fastops.", op,
              ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  return static_cast<Reduction>(reduction);
}

// The dtype an elementwise loss computes and returns in, as torch's does: mse, smooth_l1 and kl_div promote input and
// target, huber keeps input's, binary_cross_entropy needs one dtype, binary_cross_entropy_with_logits takes target's
// (torch's formula writes in place into target's dtype). An integer target is fine where the rule gives a floating
// dtype (mse_loss(float, long) is float), except for kl_div, which torch refuses with its own messages.
inline at::ScalarType pointwise_loss_dtype(const char* op, PointwiseLoss kind, const at::Tensor& input,
                                           const at::Tensor& target) {
  check_defined(op, {input, "input"});
  check_defined(op, {target, "target"});
  at::ScalarType dtype = input.scalar_type();
  if (kind == PointwiseLoss::BceWithLogits) {
    dtype = target.scalar_type();
  } else if (kind == PointwiseLoss::Bce) {
    // torch's binary_cross_entropy takes no mixed dtypes (its TensorIterator's message).
    TORCH_CHECK(target.scalar_type() == input.scalar_type(), "Found dtype ", target.scalar_type(), " but expected ",
                input.scalar_type());
  } else if (kind == PointwiseLoss::KlDiv || kind == PointwiseLoss::KlDivLogTarget) {
    TORCH_CHECK(!input.is_complex() && !target.is_complex(), "kl_div: Complex inputs not supported.");
    TORCH_CHECK(!at::isIntegralType(input.scalar_type(), /*includeBool=*/true) &&
                    !at::isIntegralType(target.scalar_type(), /*includeBool=*/true),
                "kl_div: Integral inputs not supported.");
    dtype = c10::promoteTypes(input.scalar_type(), target.scalar_type());
  } else if (kind != PointwiseLoss::Huber) {
    dtype = c10::promoteTypes(input.scalar_type(), target.scalar_type());
  }
  TORCH_CHECK(is_supported_float(dtype), "fastops.", op, ": input and target must give a float16/bfloat16/float32/"
              "float64 result, got ", input.scalar_type(), " input and ", target.scalar_type(), " target");
  return dtype;
}

// smooth_l1's beta and huber's delta, refused with torch's own messages (torch checks them in the op, so must we: a
// negative delta would otherwise give a negative loss).
inline void check_pointwise_loss_param(PointwiseLoss kind, double param) {
  TORCH_CHECK(kind != PointwiseLoss::SmoothL1 || param >= 0,
              "smooth_l1_loss does not support negative values for beta.");
  TORCH_CHECK(kind != PointwiseLoss::Huber || param > 0, "huber_loss does not support non-positive values for delta.");
}

inline PointwiseTensors pointwise_operands(const char* op, PointwiseLoss kind, const at::Tensor& input,
                                           const at::Tensor& target, const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& pos_weight) {
  const at::ScalarType dtype = pointwise_loss_dtype(op, kind, input, target);
  TORCH_CHECK(target.device() == input.device(), "fastops.", op, ": target must be on the device of input (",
              input.device(), "), got ", target.device());
  check_same_shape(op, {input, "input"}, {target, "target"});
  const bool has_w = weight.has_value() && weight->defined();
  const bool has_pw = pos_weight.has_value() && pos_weight->defined();
  // Optional operands must match input exactly (the Python wrapper broadcasts them), then share its layout.
  for (const auto& [t, name, present] : {std::tuple{&weight, "weight", has_w}, {&pos_weight, "pos_weight", has_pw}}) {
    if (!present) continue;
    check_floating(op, {**t, name});
    TORCH_CHECK((*t)->device() == input.device(), "fastops.", op, ": ", name, " must be on the device of input (",
                input.device(), "), got ", (*t)->device());
    check_same_shape(op, {input, "input"}, {**t, name});
  }
  const at::Tensor x = input.to(dtype), tt = target.to(dtype);
  PointwiseTensors p;
  if (has_w && has_pw) {
    auto [xd, td, w, pw] = dense_common_layout<4>({x, tt, weight->to(dtype), pos_weight->to(dtype)});
    p = {xd, td, w, pw};
  } else if (has_w || has_pw) {
    auto [xd, td, extra] = dense_common_layout<3>({x, tt, (has_w ? *weight : *pos_weight).to(dtype)});
    p = {xd, td, has_w ? extra : at::Tensor(), has_pw ? extra : at::Tensor()};
  } else {
    auto [xd, td] = dense_common_layout<2>({x, tt});
    p = {xd, td, at::Tensor(), at::Tensor()};
  }
  return p;
}

// 'none' returns the elementwise loss in input's layout; 'mean' / 'sum' a 0-dim tensor of input's dtype.
template <typename Backend>
at::Tensor pointwise_loss_forward(const char* op, PointwiseLoss kind, const at::Tensor& input,
                                  const at::Tensor& target, const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& pos_weight, int64_t reduction, double param) {
  const Reduction red = to_reduction(op, reduction);
  check_pointwise_loss_param(kind, param);
  const PointwiseTensors p = pointwise_operands(op, kind, input, target, weight, pos_weight);
  at::Tensor out = red == Reduction::None ? at::empty_like(p.input) : at::empty({}, p.input.options());
  if (p.input.numel() > 0) {
    Backend::pointwise_forward(kind, p, param, red, out);
  } else if (red != Reduction::None) {
    out.fill_(red == Reduction::Mean ? std::numeric_limits<double>::quiet_NaN() : 0.0);  // torch: mean of nothing
  }
  return out;
}

// grad_output is the loss's gradient: input-shaped for 'none', 0-dim for 'mean' / 'sum'.
template <typename Backend>
at::Tensor pointwise_loss_backward(const char* op, PointwiseLoss kind, const at::Tensor& grad_output,
                                   const at::Tensor& input, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& pos_weight, int64_t reduction, double param) {
  const Reduction red = to_reduction(op, reduction);
  check_pointwise_loss_param(kind, param);
  const at::ScalarType dtype = pointwise_loss_dtype(op, kind, input, target);
  check_floating(op, {grad_output, "grad_output"});
  TORCH_CHECK(grad_output.device() == input.device(), "fastops.", op, ": grad_output must be on the device of input (",
              input.device(), "), got ", grad_output.device());
  at::Tensor grad = grad_output.to(dtype);
  PointwiseTensors p;
  if (red == Reduction::None) {
    check_same_shape(op, {input, "input"}, {grad_output, "grad_output"});
    p = pointwise_operands(op, kind, input, target, weight, pos_weight);
    // The kernel walks grad_output with the operands' flat index, so it must share their layout.
    if (grad.strides() != p.input.strides()) {
      p.input = p.input.contiguous();
      p.target = p.target.contiguous();
      if (p.weight.defined()) p.weight = p.weight.contiguous();
      if (p.pos_weight.defined()) p.pos_weight = p.pos_weight.contiguous();
      grad = grad.contiguous();
    }
  } else {
    TORCH_CHECK(grad_output.dim() == 0, "fastops.", op, ": grad_output of a reduced loss must be 0-dim, got shape ",
                grad_output.sizes());
    p = pointwise_operands(op, kind, input, target, weight, pos_weight);
  }
  at::Tensor grad_input = at::empty_like(p.input);
  if (grad_input.numel() > 0) Backend::pointwise_backward(kind, grad, p, param, red, grad_input);
  return grad_input;
}

inline PointwiseLoss kl_div_kind(bool log_target) {
  return log_target ? PointwiseLoss::KlDivLogTarget : PointwiseLoss::KlDiv;
}

// Registers every loss schema's kernel for one backend (the CPU and CUDA bindings differ only in Backend).
template <typename Backend>
void register_loss_kernels(torch::Library& m) {
  using Opt = const std::optional<at::Tensor>&;
  using T = const at::Tensor&;
  m.impl("cross_entropy_forward", &cross_entropy_forward<Backend>);
  m.impl("cross_entropy_backward", &cross_entropy_backward<Backend>);
  m.impl("cross_entropy_loss_forward", &cross_entropy_loss_forward<Backend>);
  m.impl("cross_entropy_loss_forward_grad", &cross_entropy_loss_forward_grad<Backend>);
  m.impl("cross_entropy_forward_grad_", &cross_entropy_forward_grad_<Backend>);
  m.impl("cross_entropy_block_grad_", &cross_entropy_block_grad_<Backend>);
  m.impl("scale_rows_", &scale_rows_<Backend>);
  m.impl("mse_loss", [](T x, T t, int64_t red) {
    return pointwise_loss_forward<Backend>("mse_loss", PointwiseLoss::Mse, x, t, {}, {}, red, 0.0);
  });
  m.impl("mse_loss_backward", [](T g, T x, T t, int64_t red) {
    return pointwise_loss_backward<Backend>("mse_loss_backward", PointwiseLoss::Mse, g, x, t, {}, {}, red, 0.0);
  });
  m.impl("smooth_l1_loss", [](T x, T t, int64_t red, double beta) {
    return pointwise_loss_forward<Backend>("smooth_l1_loss", PointwiseLoss::SmoothL1, x, t, {}, {}, red, beta);
  });
  m.impl("smooth_l1_loss_backward", [](T g, T x, T t, int64_t red, double beta) {
    return pointwise_loss_backward<Backend>("smooth_l1_loss_backward", PointwiseLoss::SmoothL1, g, x, t, {}, {}, red,
                                            beta);
  });
  m.impl("huber_loss", [](T x, T t, int64_t red, double delta) {
    return pointwise_loss_forward<Backend>("huber_loss", PointwiseLoss::Huber, x, t, {}, {}, red, delta);
  });
  m.impl("huber_loss_backward", [](T g, T x, T t, int64_t red, double delta) {
    return pointwise_loss_backward<Backend>("huber_loss_backward", PointwiseLoss::Huber, g, x, t, {}, {}, red, delta);
  });
  m.impl("l1_loss", [](T x, T t, int64_t red) {
    return pointwise_loss_forward<Backend>("l1_loss", PointwiseLoss::L1, x, t, {}, {}, red, 0.0);
  });
  m.impl("l1_loss_backward", [](T g, T x, T t, int64_t red) {
    return pointwise_loss_backward<Backend>("l1_loss_backward", PointwiseLoss::L1, g, x, t, {}, {}, red, 0.0);
  });
  m.impl("binary_cross_entropy", [](T x, T t, Opt w, int64_t red) {
    return pointwise_loss_forward<Backend>("binary_cross_entropy", PointwiseLoss::Bce, x, t, w, {}, red, 0.0);
  });
  m.impl("binary_cross_entropy_backward", [](T g, T x, T t, Opt w, int64_t red) {
    return pointwise_loss_backward<Backend>("binary_cross_entropy_backward", PointwiseLoss::Bce, g, x, t, w, {}, red,
                                            0.0);
  });
  m.impl("kl_div", [](T x, T t, int64_t red, bool log_target) {
    return pointwise_loss_forward<Backend>("kl_div", kl_div_kind(log_target), x, t, {}, {}, red, 0.0);
  });
  m.impl("kl_div_backward", [](T g, T x, T t, int64_t red, bool log_target) {
    return pointwise_loss_backward<Backend>("kl_div_backward", kl_div_kind(log_target), g, x, t, {}, {}, red, 0.0);
  });
  m.impl("binary_cross_entropy_with_logits", [](T x, T t, Opt w, Opt pw, int64_t red) {
    return pointwise_loss_forward<Backend>("binary_cross_entropy_with_logits", PointwiseLoss::BceWithLogits, x, t, w,
                                           pw, red, 0.0);
  });
  m.impl("binary_cross_entropy_with_logits_backward", [](T g, T x, T t, Opt w, Opt pw, int64_t red) {
    return pointwise_loss_backward<Backend>("binary_cross_entropy_with_logits_backward", PointwiseLoss::BceWithLogits,
                                            g, x, t, w, pw, red, 0.0);
  });
}

}  // namespace fastops

// fastops::cross_entropy_loss and fastops::nll_loss (at the end): torch.nn.functional.cross_entropy's whole contract as one CompositeImplicitAutograd
// op over the row kernels (cross_entropy_loss_forward / cross_entropy_loss_forward_grad), so that the Python wrapper is a
// single call (per-call cost, TorchScript) and the rules live in one place. The rules are torch's own
// (aten/src/ATen/native/LossNLL.cpp: cross_entropy_loss, nll_loss_nd and nll_loss's meta function), checked here in
// the same order with the same exception types:
//   - a target of the input's shape holds class probabilities (it must then be floating, with no ignore_index);
//     any other target holds class indices (int64 or uint8), [N] / [] / [N, d1, ...] for input [N, C] / [C] /
//     [N, C, d1, ...];
//   - class weights have the input's dtype for class indices; probability targets promote input, target and weight
//     to one dtype, as torch's composite does;
//   - label_smoothing in (0, 1] smooths, <= 0 is ignored (torch checks only the upper bound);
//   - under autocast the loss is float32 (cross entropy is on autocast's float32 list) without a float32 copy of the
//     logits for class indices: the kernels read 16-bit logits and compute in float32 either way.
// The rows go to one kernel op that also reduces them (cross_entropy_loss_forward), or for 'mean' / 'sum' with logits
// that require grad, the one that also writes the gradient (cross_entropy_loss_forward_grad; losses_autograd.cpp).
#include <ATen/TensorOperators.h>
#include <ATen/autocast_mode.h>
#include <ATen/ops/result_type.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include "common/autograd.h"
#include "losses/losses.h"

namespace fastops {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

bool autocast_enabled_for(const Tensor& t) {
  const c10::DeviceType type = t.device().type();
  return (type == c10::DeviceType::CPU || type == c10::DeviceType::CUDA) && at::autocast::is_autocast_enabled(type);
}

void check_same_device(const Tensor& input, const Tensor& other, const char* name, const char* op = "cross_entropy") {
  TORCH_CHECK(!other.defined() || other.device() == input.device(), "fastops.", op, ": ", name,
              " must be on the device of input (", input.device(), "), got ", other.device());
}

void check_weight_shape(const Tensor& weight, const c10::SymInt& classes, const char* prefix) {
  TORCH_CHECK(!weight.defined() || (weight.dim() == 1 && weight.sym_numel() == classes), prefix,
              "weight tensor should be defined either for all ", classes, " classes or no classes but got weight tensor",
              " of shape: ", weight.sizes());
}

// The checks nll_loss_nd and nll_loss / nll_loss2d make of a class-index target against input [N, C, d...] / [C].
// Sizes are compared symbolically: under torch.compile(dynamic=True) that adds guards on relations, never on values.
void check_class_target(const Tensor& input, const Tensor& target) {
  TORCH_CHECK_VALUE(input.dim() >= 1, "Expected 1 or more dimensions (got ", input.dim(), ")");
  TORCH_CHECK_VALUE(input.dim() == 1 || (target.dim() >= 1 && input.sym_size(0) == target.sym_size(0)),
                    "Expected input batch_size (", input.sym_size(0), ") to match target batch_size (",
                    target.dim() >= 1 ? target.sym_size(0) : c10::SymInt(1), ").");
  TORCH_CHECK(target.scalar_type() == at::kLong || target.scalar_type() == at::kByte,
              "expected target dtype to be Long or Byte, but got ", target.scalar_type());
  if (input.dim() <= 2) {
    TORCH_CHECK(target.dim() <= 1, "0D or 1D target tensor expected, multi-target not supported");
    // torch 2.13 takes a one-element 1D target for a 1D input as the 0D one.
    TORCH_CHECK_VALUE(!(input.dim() == 1 && target.dim() == 1) || target.sym_size(0) == 1,
                      "For 1D input, 1D target must have size 1, but got target size: ", target.sym_size(0));
    TORCH_CHECK((input.dim() == 1 && target.dim() <= 1) || (target.dim() == 1 && input.sym_size(0) == target.sym_size(0)),
                "size mismatch (got input: ", input.sym_sizes(), ", target: ", target.sym_sizes(), ")");
  } else if (input.dim() == 4) {
    TORCH_CHECK(target.dim() == 3, "only batches of spatial targets supported (3D tensors) but got targets of "
                "dimension: ", target.dim());
    TORCH_CHECK(input.sym_size(0) == target.sym_size(0) && input.sym_size(2) == target.sym_size(1) &&
                    input.sym_size(3) == target.sym_size(2),
                "size mismatch (got input: ", input.sym_sizes(), " , target: ", target.sym_sizes());
  } else {
    std::vector<c10::SymInt> expected{input.sym_size(0)};
    expected.insert(expected.end(), input.sym_sizes().begin() + 2, input.sym_sizes().end());
    TORCH_CHECK(target.sym_sizes() == c10::SymIntArrayRef(expected), "Expected target size ",
                c10::SymIntArrayRef(expected), ", got ", target.sym_sizes());
  }
}

// [N, C] rows of C classes: [C] -> [1, C], [N, C, d...] -> [N * d..., C] (the class dim moved last, one copy).
Tensor as_rows(const Tensor& t) {
  if (t.dim() == 1) return t.unsqueeze(0);
  if (t.dim() == 2) return t;
  return t.movedim(1, -1).reshape_symint({-1, t.sym_size(1)});
}

// The loss of the rows in one kernel op call, which also reduces them ('none': per row, reshaped to the batch shape;
// 'mean' / 'sum': float64 until the final rounding to out_dtype): the ATen ops that did the reduction and the 'mean'
// divisor here (3 sums, 2 conversions, a comparison, a division, and their autograd nodes) made a [2, 8] 'mean' cost
// 2.4x torch's forward.
Tensor reduce_rows(const Tensor& input, const Tensor& logits, const Tensor& target, const Tensor& weight,
                   int64_t ignore_index, double smoothing, Reduction red, at::ScalarType out_dtype,
                   c10::SymIntArrayRef batch_shape) {
  using LossForwardOp = std::tuple<Tensor, Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&,
                                                                   int64_t, int64_t, double, at::ScalarType);
  using LossForwardGradOp = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&,
                                                               int64_t, int64_t, double, at::ScalarType);
  const OptTensor w = weight.defined() ? OptTensor(weight) : std::nullopt;
  const auto reduction = static_cast<int64_t>(red);
  if (red != Reduction::None && c10::GradMode::is_enabled() && logits.requires_grad() && logits.sym_size(0) > 0 &&
      logits.scalar_type() != at::kDouble) {
    // The forward writes the final gradient for an upstream gradient of 1. float64 (the dtype of gradchecks rather
    // than of speed) keeps the recomputing backward, which rounds once for every upstream gradient.
    return std::get<0>(FASTOPS_OP("cross_entropy_loss_forward_grad", "", LossForwardGradOp)
                           .call(logits, target, w, reduction, ignore_index, smoothing, out_dtype));
  }
  const Tensor loss = std::get<0>(FASTOPS_OP("cross_entropy_loss_forward", "", LossForwardOp)
                                      .call(logits, target, w, reduction, ignore_index, smoothing, out_dtype));
  return red == Reduction::None && input.dim() != 2 ? loss.reshape_symint(batch_shape) : loss;
}

Tensor cross_entropy_loss(const Tensor& input, const Tensor& target, const OptTensor& weight_opt, int64_t reduction,
                          int64_t ignore_index, double label_smoothing) {
  const Reduction red = to_reduction("cross_entropy", reduction);
  Tensor weight = weight_opt.has_value() ? *weight_opt : Tensor();
  check_same_device(input, target, "target");
  check_same_device(input, weight, "weight");
  check_floating("cross_entropy", {input, "input"});
  const bool autocast = autocast_enabled_for(input) && input.scalar_type() != at::kDouble;
  std::vector<c10::SymInt> batch_shape;
  if (input.dim() >= 2) {
    batch_shape.push_back(input.sym_size(0));
    batch_shape.insert(batch_shape.end(), input.sym_sizes().begin() + 2, input.sym_sizes().end());
  }

  if (input.sym_sizes() == target.sym_sizes()) {  // class probabilities
    TORCH_CHECK(at::isFloatingType(target.scalar_type()),
                "Expected floating point type for target with class probabilities, got ", target.scalar_type());
    TORCH_CHECK(ignore_index < 0, "ignore_index is not supported for floating point target");
    TORCH_CHECK_VALUE(input.dim() >= 1, "Expected 1 or more dimensions (got ", input.dim(), ")");
    const c10::SymInt classes = input.sym_size(input.dim() == 1 ? 0 : 1);
    check_weight_shape(weight, classes, "cross_entropy: ");
    TORCH_CHECK(label_smoothing <= 1.0, "label_smoothing must be between 0.0 and 1.0. Got: ", label_smoothing);
    // One dtype for logits and target (the kernels read both): float32 under autocast, else torch's promotion.
    at::ScalarType dtype = autocast ? at::kFloat : at::result_type(input, target);
    if (weight.defined() && !autocast) dtype = c10::promoteTypes(dtype, weight.scalar_type());
    const Tensor logits = as_rows(input.to(dtype)), probs = as_rows(target.to(dtype));
    if (weight.defined()) weight = weight.to(loss_math_type(dtype));
    return reduce_rows(input, logits, probs, weight, ignore_index, label_smoothing > 0 ? label_smoothing : 0.0, red,
                       dtype, batch_shape);
  }

  // class indices
  TORCH_CHECK(label_smoothing <= 1.0, "label_smoothing must be between 0.0 and 1.0. Got: ", label_smoothing);
  check_class_target(input, target);
  const c10::SymInt classes = input.sym_size(input.dim() == 1 ? 0 : 1);
  check_weight_shape(weight, classes, "");
  const at::ScalarType out_dtype = autocast ? at::kFloat : input.scalar_type();
  if (weight.defined()) {
    if (autocast) weight = weight.to(at::kFloat);  // autocast casts every floating argument to float32
    TORCH_CHECK(weight.scalar_type() == out_dtype, "expected scalar type ", out_dtype, " but found ",
                weight.scalar_type());
    TORCH_CHECK(!(c10::GradMode::is_enabled() && weight.requires_grad()),
                "The function 'cross_entropy' is not differentiable with respect to argument 'weight' for class-index"
                " targets (as torch's nll_loss_forward). This input cannot have requires_grad True.");
    weight = weight.to(loss_math_type(input.scalar_type()));
  }
  // [N] int64 targets (the usual case) go in as they are: no reshape or conversion op.
  const Tensor indices =
      target.dim() == 1 && target.scalar_type() == at::kLong ? target : target.reshape({-1}).to(at::kLong);
  return reduce_rows(input, as_rows(input), indices, weight, ignore_index,
                     label_smoothing > 0 ? label_smoothing : 0.0, red, out_dtype, batch_shape);
}

// torch.nn.functional.nll_loss (aten's nll_loss_nd): the rules of class-index cross entropy above, over the row op
// nll_loss_forward (one gathered element per row, float64) reduced here in float64 and rounded once.
Tensor nll_loss(const Tensor& input, const Tensor& target, const OptTensor& weight_opt, int64_t reduction,
                int64_t ignore_index) {
  using NllForwardOp = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const OptTensor&, int64_t);
  const Reduction red = to_reduction("nll_loss", reduction);
  Tensor weight = weight_opt.has_value() ? *weight_opt : Tensor();
  check_same_device(input, target, "target", "nll_loss");
  check_same_device(input, weight, "weight", "nll_loss");
  check_floating("nll_loss", {input, "input"});
  check_class_target(input, target);
  check_weight_shape(weight, input.sym_size(input.dim() == 1 ? 0 : 1), "");
  // nll_loss is on autocast's float32 list: a float32 loss; the kernel reads 16-bit input and computes in float64
  // either way, so no float32 copy of the input is made.
  const bool autocast = autocast_enabled_for(input) && input.scalar_type() != at::kDouble;
  const at::ScalarType out_dtype = autocast ? at::kFloat : input.scalar_type();
  if (weight.defined()) {
    if (autocast) weight = weight.to(at::kFloat);
    TORCH_CHECK(weight.scalar_type() == out_dtype, "expected scalar type ", out_dtype, " but found ",
                weight.scalar_type());
    TORCH_CHECK(!(c10::GradMode::is_enabled() && weight.requires_grad()),
                "The function 'nll_loss' is not differentiable with respect to argument 'weight' (as torch's "
                "nll_loss_forward). This input cannot have requires_grad True.");
  }
  std::vector<c10::SymInt> batch_shape;
  if (input.dim() >= 2) {
    batch_shape.push_back(input.sym_size(0));
    batch_shape.insert(batch_shape.end(), input.sym_sizes().begin() + 2, input.sym_sizes().end());
  }
  const OptTensor w = weight.defined() ? OptTensor(weight) : std::nullopt;
  auto [loss, row_weight] =
      FASTOPS_OP("nll_loss_forward", "", NllForwardOp).call(input, target.to(at::kLong), w, ignore_index);
  if (red == Reduction::None) return loss.reshape_symint(batch_shape).to(out_dtype);
  const Tensor total = loss.sum();
  return (red == Reduction::Mean ? total / row_weight.sum() : total).to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CompositeImplicitAutograd, m) {
  m.impl("cross_entropy_loss", &cross_entropy_loss);
  m.impl("nll_loss", &nll_loss);
}

}  // namespace fastops

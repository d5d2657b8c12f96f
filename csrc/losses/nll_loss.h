// Torch-side driver of the nll_loss row kernels, shared by the CPU and CUDA bindings: argument checks, the
// [outer, C, inner] view (nll_loss_math.h) and allocation live here once; a Backend only runs kernels:
//   Backend::nll_loss_forward(NllGeometry, const Tensor& input, const Tensor& target, const Tensor& weight,
//                             int64_t ignore_index, Tensor& loss, Tensor& row_weight)   (raises for a bad target;
//                             CUDA without a host sync: kernel_errors.h)
//   Backend::nll_loss_backward(NllGeometry, const Tensor& grad_rows, const Tensor& input, const Tensor& target,
//                              const Tensor& weight, int64_t ignore_index, Tensor& grad_input)  (grad_input zeroed)
// torch.nn.functional.nll_loss's argument rules live in the composite (cross_entropy_loss.cpp: fastops::nll_loss),
// which hands these ops input [C] / [N, C] / [N, C, d...] and the flattened int64 target.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>

#include "common/checks.h"
#include "losses/nll_loss_math.h"

namespace fastops {

inline NllGeometry nll_geometry(const at::Tensor& input) {
  if (input.dim() == 1) return {1, input.size(0), 1};
  int64_t inner = 1;
  for (int64_t d = 2; d < input.dim(); ++d) inner *= input.size(d);
  return {input.size(0), input.size(1), inner};
}

// The operands in the kernels' terms: input contiguous, target int64 contiguous, weight float64 [C] or undefined.
struct NllOperands {
  at::Tensor input, target, weight;
  NllGeometry geo;
};

inline NllOperands nll_operands(const char* op, const at::Tensor& input, const at::Tensor& target,
                                const std::optional<at::Tensor>& weight) {
  check_float_operands(op, {{input, "input"}});
  check_defined(op, {target, "target"});
  TORCH_CHECK(input.dim() >= 1, "fastops.", op, ": input must have at least 1 dim (the classes), got a scalar");
  TORCH_CHECK(target.scalar_type() == at::kLong, "fastops.", op, ": target must be int64, got ", target.scalar_type());
  const NllGeometry geo = nll_geometry(input);
  TORCH_CHECK(target.numel() == geo.rows(), "fastops.", op, ": target must have one class per row (", geo.rows(),
              "), got ", target.numel());
  TORCH_CHECK(target.device() == input.device(), "fastops.", op, ": target must be on the device of input (",
              input.device(), "), got ", target.device());
  NllOperands p{input.contiguous(), target.reshape({-1}).contiguous(), at::Tensor(), geo};
  if (weight.has_value() && weight->defined()) {
    check_floating(op, {*weight, "weight"});
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == geo.classes, "fastops.", op, ": weight must have shape [",
                geo.classes, "], got ", weight->sizes());
    TORCH_CHECK(weight->device() == input.device(), "fastops.", op, ": weight must be on the device of input (",
                input.device(), "), got ", weight->device());
    p.weight = weight->to(at::kDouble).contiguous();
  }
  return p;
}

// (loss, row_weight), both float64 [rows]: -w[t] x[t] and w[t] per row, 0 for ignored rows.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor> nll_loss_forward(const at::Tensor& input, const at::Tensor& target,
                                                    const std::optional<at::Tensor>& weight, int64_t ignore_index) {
  const NllOperands p = nll_operands("nll_loss_forward", input, target, weight);
  const auto options = p.input.options().dtype(at::kDouble);
  at::Tensor loss = at::empty({p.geo.rows()}, options), row_weight = at::empty({p.geo.rows()}, options);
  // With no classes every target not ignored is out of range: the kernels raise for it.
  if (p.geo.rows() > 0) Backend::nll_loss_forward(p.geo, p.input, p.target, p.weight, ignore_index, loss, row_weight);
  return {loss, row_weight};
}

// d loss / d input for the per-row upstream gradient grad_rows (float64 [rows]): input-shaped, contiguous.
template <typename Backend>
at::Tensor nll_loss_backward(const at::Tensor& grad_rows, const at::Tensor& input, const at::Tensor& target,
                             const std::optional<at::Tensor>& weight, int64_t ignore_index) {
  constexpr const char* op = "nll_loss_backward";
  const NllOperands p = nll_operands(op, input, target, weight);
  check_defined(op, {grad_rows, "grad_rows"});
  TORCH_CHECK(grad_rows.scalar_type() == at::kDouble, "fastops.", op, ": grad_rows must be float64, got ",
              grad_rows.scalar_type());
  TORCH_CHECK(grad_rows.dim() == 1 && grad_rows.size(0) == p.geo.rows(), "fastops.", op,
              ": grad_rows must have shape [", p.geo.rows(), "], got ", grad_rows.sizes());
  TORCH_CHECK(grad_rows.device() == input.device(), "fastops.", op, ": grad_rows must be on the device of input (",
              input.device(), "), got ", grad_rows.device());
  at::Tensor grad_input = at::zeros(p.input.sizes(), p.input.options());
  if (p.geo.rows() > 0 && p.geo.classes > 0) {
    Backend::nll_loss_backward(p.geo, grad_rows.contiguous(), p.input, p.target, p.weight, ignore_index, grad_input);
  }
  return grad_input;
}

template <typename Backend>
void register_nll_loss_kernels(torch::Library& m) {
  m.impl("nll_loss_forward", &nll_loss_forward<Backend>);
  m.impl("nll_loss_backward", &nll_loss_backward<Backend>);
}

}  // namespace fastops

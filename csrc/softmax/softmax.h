// Torch-side driver shared by the CPU and CUDA softmax bindings: argument checks, the [outer, dim, inner] view and
// output allocation live here once; a Backend only runs kernels on contiguous tensors:
//   Backend::forward(bool log, SoftmaxGeometry, const Tensor& x, Tensor& y)
//   Backend::backward(bool log, SoftmaxGeometry, const Tensor& grad_output, const Tensor& y, Tensor& grad_input)
// The outputs are contiguous, as torch's softmax / log_softmax and their backward are (at::empty_like with
// LEGACY_CONTIGUOUS_MEMORY_FORMAT in aten/src/ATen/native/SoftMax.cpp); fastops/ops/softmax.py's fakes say the same.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/WrapDimMinimal.h>
#include <torch/library.h>

#include "common/checks.h"
#include "softmax/softmax_math.h"

namespace fastops {

// x seen as [outer, dim, inner] around the (wrapped) softmax dim; a 0-dim tensor is one row of one element.
inline SoftmaxGeometry softmax_geometry(const at::Tensor& x, int64_t dim) {
  SoftmaxGeometry g{1, 1, 1};
  if (x.dim() == 0) return g;
  g.dim = x.size(dim);
  for (int64_t d = 0; d < dim; ++d) g.outer *= x.size(d);
  for (int64_t d = dim + 1; d < x.dim(); ++d) g.inner *= x.size(d);
  return g;
}

// torch's dim rule and message ("Dimension out of range (expected to be in range of [-2, 1], but got 2)"); a 0-dim
// tensor takes dim 0 or -1, as in torch.
inline int64_t softmax_dim(const at::Tensor& x, int64_t dim) { return c10::maybe_wrap_dim(dim, x.dim()); }

template <typename Backend>
at::Tensor softmax_forward(const char* op, bool log, const at::Tensor& x, int64_t dim) {
  check_float_operands(op, {{x, "x"}});
  const int64_t d = softmax_dim(x, dim);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(xc.sizes(), xc.options());
  if (y.numel() > 0) Backend::forward(log, softmax_geometry(xc, d), xc, y);
  return y;
}

template <typename Backend>
at::Tensor softmax_backward(const char* op, bool log, const at::Tensor& grad_output, const at::Tensor& output,
                            int64_t dim) {
  check_float_operands(op, {{grad_output, "grad_output"}, {output, "output"}});
  check_same_shape(op, {output, "output"}, {grad_output, "grad_output"});
  const int64_t d = softmax_dim(output, dim);
  // Autograd hands the gradient of a sum as an expanded (stride 0) tensor; one copy makes every operand contiguous.
  const at::Tensor gc = grad_output.contiguous(), yc = output.contiguous();
  at::Tensor grad_input = at::empty(yc.sizes(), yc.options());
  if (grad_input.numel() > 0) Backend::backward(log, softmax_geometry(yc, d), gc, yc, grad_input);
  return grad_input;
}

template <typename Backend>
void register_softmax_kernels(torch::Library& m) {
  using T = const at::Tensor&;
  m.impl("softmax", [](T x, int64_t dim) { return softmax_forward<Backend>("softmax", false, x, dim); });
  m.impl("log_softmax", [](T x, int64_t dim) { return softmax_forward<Backend>("log_softmax", true, x, dim); });
  m.impl("softmax_backward", [](T g, T y, int64_t dim) {
    return softmax_backward<Backend>("softmax_backward", false, g, y, dim);
  });
  m.impl("log_softmax_backward", [](T g, T y, int64_t dim) {
    return softmax_backward<Backend>("log_softmax_backward", true, g, y, dim);
  });
}

}  // namespace fastops

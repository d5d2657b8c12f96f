// Layout rule shared by every elementwise op (CPU and CUDA): the kernels walk a flat buffer, so all operands must
// share one non-overlapping, dense layout. When they already do (contiguous, transposed, channels-last, with any
// storage offset) they are used as they are and the output copies that layout, as TensorIterator does; otherwise
// (slices with gaps, broadcasts, mismatched strides) every operand is made contiguous once. The fake kernels in
// fastops/ops/_layout.py mirror this rule so that compiled graphs see the same strides as eager.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>

namespace fastops {

template <size_t N>
std::array<at::Tensor, N> dense_common_layout(std::array<at::Tensor, N> ts) {
  bool shared = ts[0].is_non_overlapping_and_dense();
  for (size_t i = 1; i < N && shared; ++i) shared = ts[i].strides() == ts[0].strides();
  if (!shared) {
    for (auto& t : ts) t = t.contiguous();
  }
  return ts;
}

}  // namespace fastops

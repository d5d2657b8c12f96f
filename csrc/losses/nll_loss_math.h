// The view the nll_loss kernels take of their operands (no torch or CUDA headers): input is contiguous and read as
// [outer, C, inner] (outer = N, inner = d1 * d2 * ...; a [C] input is outer = inner = 1), the target as `outer *
// inner` int64 class indices in that order (target [N, d1, ...] flattened), the class weights as C doubles or null.
// Each (o, k) is one "row" of the loss: it reads the single element input[o, target[o * inner + k], k].
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace fastops {

struct NllGeometry {
  int64_t outer, classes, inner;
  FASTOPS_HD int64_t rows() const { return outer * inner; }
  // The flat index of input[o, c, k] for row r = o * inner + k.
  FASTOPS_HD int64_t element(int64_t r, int64_t c) const { return ((r / inner) * classes + c) * inner + r % inner; }
};

}  // namespace fastops

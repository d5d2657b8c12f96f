// The softmax family's view of a tensor, shared by the CPU kernels, the CUDA launchers and the torch-side driver
// (no torch or CUDA headers). Every tensor a kernel sees is contiguous and read as [outer, dim, inner]: the softmax
// runs along the middle axis, whose elements lie `inner` apart.
#pragma once

#include <cstdint>

namespace fastops {

struct SoftmaxGeometry {
  int64_t outer, dim, inner;
};

}  // namespace fastops

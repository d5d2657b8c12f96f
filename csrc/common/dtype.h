// Torch-free description of the element types fastops kernels handle. The CUDA launchers (.cu files) take this
// enum instead of at::ScalarType so that they compile without torch headers (see shared/DESIGN.md, rule 4).
#pragma once

#include <cstdint>

namespace fastops {

enum class DType : int32_t { Float16 = 0, BFloat16 = 1, Float32 = 2, Float64 = 3 };

}  // namespace fastops

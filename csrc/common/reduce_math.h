// The type sums over many elements accumulate in, shared by the CPU and CUDA kernels (torch-free, CUDA-free):
// float for 16-bit inputs (whose results round to 8 or 11 bits, as torch's own sums accumulate), double for
// float32 and float64, so that a float32 result is as accurate as torch's cascade sums (each term exact to float
// precision before the sum). T is the storage type (c10::Half / __half, c10::BFloat16 / __nv_bfloat16, float,
// double). Loss reductions, column sums (bias gradients) and cross entropy's row statistics use it.
#pragma once

#include <type_traits>

namespace fastops {

template <typename T>
using reduce_math_t = std::conditional_t<sizeof(T) == 2, float, double>;

}  // namespace fastops

// Scalar activation math shared by the CPU tail loops and the CUDA kernels (torch-free, host + device), so both
// backends round the same way. T is the math type: float for 16-bit and float32 tensors, double for float64.
#pragma once

#if defined(__CUDACC__)
#define FASTOPS_HD __host__ __device__ __forceinline__
#else
#define FASTOPS_HD inline
#endif

#include <cstdint>

namespace fastops {

// The activations the kernels implement; the backends switch on it.
enum class Activation : int32_t { ReLU = 0 };

}  // namespace fastops

namespace fastops::act {

// relu(x) = max(x, 0) with NaN propagated, as torch does: the comparison is false for NaN, so x passes through.
struct ReluForward {
  template <typename T>
  FASTOPS_HD T operator()(T x) const { return x <= T(0) ? T(0) : x; }
};

// d relu: the gradient passes where the saved *output* is positive (and for NaN outputs, like threshold_backward).
struct ReluBackward {
  template <typename T>
  FASTOPS_HD T operator()(T grad, T result) const { return result <= T(0) ? T(0) : grad; }
};

}  // namespace fastops::act

// CUDA activation kernels: one flat, vectorised elementwise map per activation (common/cuda_elementwise.cuh).
#include "activations/activation_math.h"
#include "activations/activations_launch.h"
#include "common/cuda_elementwise.cuh"

namespace fastops {

namespace {

template <typename Op>
void forward_with(Op op, DType dtype, const void* x, void* y, int64_t n, cudaStream_t stream) {
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::launch_map<T, Op, 1>(n, static_cast<T*>(y), {{static_cast<const T*>(x)}}, op, stream);
  });
}

template <typename Op>
void backward_with(Op op, DType dtype, const void* grad, const void* saved, void* grad_input, int64_t n,
                   cudaStream_t stream) {
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cuda::launch_map<T, Op, 2>(n, static_cast<T*>(grad_input),
                               {{static_cast<const T*>(grad), static_cast<const T*>(saved)}}, op, stream);
  });
}

}  // namespace

void activation_forward_cuda(Activation act, DType dtype, const void* x, void* y, int64_t n, double /*param*/,
                             cudaStream_t stream) {
  switch (act) {
    case Activation::ReLU: return forward_with(act::ReluForward{}, dtype, x, y, n, stream);
  }
}

void activation_backward_cuda(Activation act, DType dtype, const void* grad_output, const void* saved,
                              void* grad_input, int64_t n, double /*param*/, cudaStream_t stream) {
  switch (act) {
    case Activation::ReLU: return backward_with(act::ReluBackward{}, dtype, grad_output, saved, grad_input, n, stream);
  }
}

}  // namespace fastops

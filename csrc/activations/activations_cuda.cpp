// CUDA binding of the activation kernels: device guard, current stream, dtype -> launcher, launch check.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "activations/activations.h"
#include "activations/activations_launch.h"

namespace fastops {
namespace {

struct CudaBackend {
  static void forward(Activation act, const at::Tensor& x, at::Tensor& y, double param) {
    const c10::cuda::CUDAGuard guard(x.device());
    activation_forward_cuda(act, to_dtype(x.scalar_type()), x.const_data_ptr(), y.data_ptr(), x.numel(), param,
                            c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void backward(Activation act, const at::Tensor& grad, const at::Tensor& saved, at::Tensor& grad_input,
                       double param) {
    const c10::cuda::CUDAGuard guard(grad.device());
    activation_backward_cuda(act, to_dtype(grad.scalar_type()), grad.const_data_ptr(), saved.const_data_ptr(),
                             grad_input.data_ptr(), grad.numel(), param, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor relu_cuda(const at::Tensor& x) { return activation_forward<CudaBackend>("relu", Activation::ReLU, x); }

at::Tensor relu_backward_cuda(const at::Tensor& grad_output, const at::Tensor& result) {
  return activation_backward<CudaBackend>("relu_backward", Activation::ReLU, grad_output, result, "result");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CUDA, m) {
  m.impl("relu", &relu_cuda);
  m.impl("relu_backward", &relu_backward_cuda);
}

}  // namespace fastops

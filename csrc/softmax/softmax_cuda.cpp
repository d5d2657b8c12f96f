// CUDA binding of the softmax kernels: device guard, current stream, dtype -> launcher, launch check. Checks, the
// [outer, dim, inner] view and allocation are the shared driver's (softmax.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "softmax/softmax.h"
#include "softmax/softmax_launch.h"

namespace fastops {
namespace {

struct CudaBackend {
  static void forward(bool log, SoftmaxGeometry geo, const at::Tensor& x, at::Tensor& y) {
    const c10::cuda::CUDAGuard guard(x.device());
    softmax_forward_cuda(log, to_dtype(x.scalar_type()), geo, x.const_data_ptr(), y.data_ptr(),
                         c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void backward(bool log, SoftmaxGeometry geo, const at::Tensor& grad, const at::Tensor& y,
                       at::Tensor& grad_input) {
    const c10::cuda::CUDAGuard guard(y.device());
    softmax_backward_cuda(log, to_dtype(y.scalar_type()), geo, grad.const_data_ptr(), y.const_data_ptr(),
                          grad_input.data_ptr(), c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CUDA, m) { register_softmax_kernels<CudaBackend>(m); }

}  // namespace fastops

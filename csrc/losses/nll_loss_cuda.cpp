// CUDA binding of the nll_loss kernels: device guard, current stream, launch check, and the out-of-range classes the
// forward kernel records, raised without waiting for the GPU (kernel_errors.h, as for cross entropy).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "losses/kernel_errors_binding.h"
#include "losses/nll_loss.h"
#include "losses/nll_loss_launch.h"

namespace fastops {
namespace {

const double* weight_ptr(const at::Tensor& weight) {
  return weight.defined() ? weight.const_data_ptr<double>() : nullptr;
}

struct CudaBackend {
  static void nll_loss_forward(NllGeometry geo, const at::Tensor& input, const at::Tensor& target,
                               const at::Tensor& weight, int64_t ignore_index, at::Tensor& loss,
                               at::Tensor& row_weight) {
    const c10::cuda::CUDAGuard guard(input.device());
    run_recording_errors("nll_loss", true, [&](cudaStream_t stream, KernelErrorSink sink) {
      nll_loss_forward_cuda(to_dtype(input.scalar_type()), geo, input.const_data_ptr(),
                            target.const_data_ptr<int64_t>(), weight_ptr(weight), ignore_index,
                            loss.data_ptr<double>(), row_weight.data_ptr<double>(), sink, stream);
    });
  }

  static void nll_loss_backward(NllGeometry geo, const at::Tensor& grad_rows, const at::Tensor& input,
                                const at::Tensor& target, const at::Tensor& weight, int64_t ignore_index,
                                at::Tensor& grad_input) {
    const c10::cuda::CUDAGuard guard(input.device());
    nll_loss_backward_cuda(to_dtype(input.scalar_type()), geo, grad_rows.const_data_ptr<double>(),
                           target.const_data_ptr<int64_t>(), weight_ptr(weight), ignore_index, grad_input.data_ptr(),
                           c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CUDA, m) { register_nll_loss_kernels<CudaBackend>(m); }

}  // namespace fastops

// CUDA binding of the activation kernels: device guard, current stream, dtype -> launcher, launch check. Checks,
// layouts and allocation are the shared driver's (activations.h).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "activations/activations.h"
#include "activations/activations_launch.h"
#include "common/column_sum.h"

namespace fastops {
namespace {

struct CudaBackend {
  static void forward(Activation act, const at::Tensor& x, at::Tensor& y, const ActParams& params) {
    const c10::cuda::CUDAGuard guard(x.device());
    activation_forward_cuda(act, to_dtype(x.scalar_type()), x.const_data_ptr(), y.data_ptr(), x.numel(), params,
                            c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void backward(Activation act, const at::Tensor& grad, const at::Tensor& saved, at::Tensor& grad_input,
                       const ActParams& params) {
    const c10::cuda::CUDAGuard guard(grad.device());
    activation_backward_cuda(act, to_dtype(grad.scalar_type()), grad.const_data_ptr(), saved.const_data_ptr(),
                             grad_input.data_ptr(), grad.numel(), params, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void bias_act_forward(Activation act, const at::Tensor& x, const at::Tensor& bias, at::Tensor& y,
                               const ActParams&) {
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t cols = bias.numel();
    bias_act_forward_cuda(act, to_dtype(x.scalar_type()), x.const_data_ptr(), bias.const_data_ptr(), y.data_ptr(),
                          x.numel() / cols, cols, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void bias_act_backward(Activation act, const at::Tensor& grad, const at::Tensor& x, const at::Tensor* bias,
                                at::Tensor& grad_x, at::Tensor* grad_bias, const ActParams&) {
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t cols = x.size(-1), rows = x.numel() / cols;
    const DType dtype = to_dtype(x.scalar_type());
    // The grad_bias bands' partial column sums (common/column_sum.h), added by a second kernel.
    const at::Tensor workspace =
        bias != nullptr ? at::empty({column_sum_workspace_bytes(dtype, rows, cols)}, x.options().dtype(at::kByte))
                        : at::Tensor();
    bias_act_backward_cuda(act, dtype, grad.const_data_ptr(), x.const_data_ptr(),
                           bias != nullptr ? bias->const_data_ptr() : nullptr, grad_x.data_ptr(),
                           grad_bias != nullptr ? grad_bias->data_ptr() : nullptr,
                           bias != nullptr ? workspace.data_ptr() : nullptr, rows, cols,
                           c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void glu_forward(Activation act, const at::Tensor& like, GluRows g, const void* gate, const void* up,
                          void* out) {
    const c10::cuda::CUDAGuard guard(like.device());
    glu_forward_cuda(act, to_dtype(like.scalar_type()), g, gate, up, out, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void glu_backward(Activation act, const at::Tensor& like, GluRows g, const void* grad_output,
                           const void* gate, const void* up, void* grad_gate, void* grad_up) {
    const c10::cuda::CUDAGuard guard(like.device());
    glu_backward_cuda(act, to_dtype(like.scalar_type()), g, grad_output, gate, up, grad_gate, grad_up,
                      c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CUDA, m) { ActivationOps<CudaBackend>::register_kernels(m); }

}  // namespace fastops

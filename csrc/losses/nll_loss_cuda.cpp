// CUDA binding of the nll_loss kernels: device guard, current stream, launch check, and the out-of-range class
// check (a device flag read back after the forward kernel, as for cross entropy in losses_cuda.cpp).
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

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
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    at::Tensor bad_row = at::full({1}, -1, input.options().dtype(at::kLong));
    nll_loss_forward_cuda(to_dtype(input.scalar_type()), geo, input.const_data_ptr(), target.const_data_ptr<int64_t>(),
                          weight_ptr(weight), ignore_index, loss.data_ptr<double>(), row_weight.data_ptr<double>(),
                          bad_row.data_ptr<int64_t>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // While a CUDA graph is being captured nothing can be read back: a bad target then shows as a NaN loss.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) return;
    const int64_t bad = bad_row.item<int64_t>();
    TORCH_CHECK_INDEX(bad < 0, "Target ", bad < 0 ? 0 : target[bad].item<int64_t>(), " is out of bounds.");
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

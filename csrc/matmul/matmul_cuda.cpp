// CUDA binding of the matmul family: device guard, current stream, torch's TF32 setting, the GEMM plan and its
// workspace, launch check.
#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "activations/activations_launch.h"
#include "common/column_sum.h"
#include "matmul/matmul.h"
#include "matmul/matmul_launch.h"

namespace fastops {
namespace {

struct CudaBackend {
  using Plan = GemmPlan;

  // torch's TF32 setting is read here, at call time (not baked into a graph), so eager and torch.compile follow
  // torch.backends.cuda.matmul.allow_tf32 / torch.set_float32_matmul_precision alike; the kernel-variant switches
  // are the process's (gemm_switches()).
  static GemmPlan plan(const GemmArgs& args) {
    GemmArgs planned = args;
    planned.allow_tf32 = at::globalContext().allowTF32CuBLAS();
    return plan_gemm(planned, current_gemm_device(), gemm_switches());
  }

  static void run(const GemmPlan& plan, const GemmArgs& args) {
    at::Tensor workspace;  // alive until the kernels are enqueued; the caching allocator orders later reuse
    if (plan.workspace_elems > 0) {
      workspace = at::empty({plan.workspace_elems},
                            at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, c10::cuda::current_device()));
    }
    C10_CUDA_CHECK(run_gemm(plan, args, plan.workspace_elems > 0 ? workspace.data_ptr<float>() : nullptr,
                            c10::cuda::getCurrentCUDAStream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void bias_act(Activation act, const at::Tensor& x, const at::Tensor* bias, at::Tensor& y) {
    const int64_t cols = x.size(-1);
    bias_act_forward_cuda(act, to_dtype(x.scalar_type()), x.const_data_ptr(),
                          bias != nullptr ? bias->const_data_ptr() : nullptr, y.data_ptr(), x.numel() / cols, cols,
                          c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void column_sum(const at::Tensor& g, at::Tensor& out) {
    const int64_t rows = g.size(0), cols = g.size(1);
    const DType dtype = to_dtype(g.scalar_type());
    at::Tensor workspace = at::empty({column_sum_workspace_bytes(dtype, rows, cols)}, g.options().dtype(at::kByte));
    column_sum_cuda(dtype, g.const_data_ptr(), rows, cols, out.data_ptr(), workspace.data_ptr(),
                    c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// The device of `t`, current while the kernels are enqueued. Set only when t is on CUDA: a CPU operand reaching
// here (mixed devices) then fails the driver's device check with its message instead of inside the guard.
void set_device_of(c10::cuda::OptionalCUDAGuard& guard, const at::Tensor& t) {
  if (t.is_cuda()) guard.set_device(t.device());
}

at::Tensor matmul_cuda(const at::Tensor& a, const at::Tensor& b) {
  c10::cuda::OptionalCUDAGuard guard;
  set_device_of(guard, a);
  return matmul_forward<CudaBackend>(a, b);
}

at::Tensor linear_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  c10::cuda::OptionalCUDAGuard guard;
  set_device_of(guard, x);
  return linear_forward<CudaBackend>(x, weight, bias);
}

std::tuple<at::Tensor, at::Tensor> linear_act_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                   const std::optional<at::Tensor>& bias, c10::string_view act,
                                                   bool store_pre) {
  c10::cuda::OptionalCUDAGuard guard;
  set_device_of(guard, x);
  return linear_act_forward<CudaBackend>(x, weight, bias, act, store_pre);
}

at::Tensor bias_grad_cuda(const at::Tensor& grad_output) {
  c10::cuda::OptionalCUDAGuard guard;
  set_device_of(guard, grad_output);
  return bias_grad_forward<CudaBackend>(grad_output);
}

void matmul_accumulate_cuda(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  c10::cuda::OptionalCUDAGuard guard;
  set_device_of(guard, out);
  matmul_accumulate_forward<CudaBackend>(out, a, b);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CUDA, m) {
  m.impl("matmul", &matmul_cuda);
  m.impl("linear", &linear_cuda);
  m.impl("linear_act", &linear_act_cuda);
  m.impl("bias_grad", &bias_grad_cuda);
  m.impl("matmul_accumulate_", &matmul_accumulate_cuda);
}

}  // namespace fastops

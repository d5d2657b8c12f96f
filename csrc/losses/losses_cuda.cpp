// CUDA binding of the loss kernels: device guard, current stream, tensors -> launch structs, launch check, and the
// bad data the kernels record (cross entropy's class indices, binary_cross_entropy's probabilities), raised without
// waiting for the GPU (kernel_errors.h; raise_recorded_kernel_error, which nll_loss's binding shares, is here).
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/reciprocal.h>
#include <ATen/ops/where.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "losses/kernel_errors_binding.h"
#include "losses/losses.h"
#include "losses/losses_launch.h"

namespace fastops {
namespace {

CrossEntropyLaunch cross_entropy_launch(const CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing) {
  CrossEntropyLaunch l{};
  l.dtype = to_dtype(ce.logits.scalar_type());
  l.logits = ce.logits.const_data_ptr();
  l.target = ce.target.const_data_ptr();
  l.probability_target = ce.probability_target();
  l.weight = ce.weight.defined() ? ce.weight.const_data_ptr() : nullptr;
  l.n = ce.logits.size(0);
  l.c = ce.logits.size(1);
  l.class_start = ce.class_start;
  l.num_classes = ce.num_classes;
  l.ignore_index = ignore_index;
  l.label_smoothing = label_smoothing;
  return l;
}

PointwiseLaunch pointwise_launch(PointwiseLoss kind, const PointwiseTensors& p, double param) {
  return {kind,
          to_dtype(p.input.scalar_type()),
          p.input.const_data_ptr(),
          p.target.const_data_ptr(),
          p.weight.defined() ? p.weight.const_data_ptr() : nullptr,
          p.pos_weight.defined() ? p.pos_weight.const_data_ptr() : nullptr,
          p.input.numel(),
          param,
          KernelErrorSink{}};  // binary_cross_entropy's forward sets it
}

struct CudaBackend {
  static void cross_entropy_forward(const CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing) {
    const c10::cuda::CUDAGuard guard(ce.logits.device());
    CrossEntropyLaunch l = cross_entropy_launch(ce, ignore_index, label_smoothing);
    l.loss = ce.loss.data_ptr<double>();
    l.row_weight = ce.row_weight.data_ptr<double>();
    l.lse = ce.lse.data_ptr<double>();
    l.target_mass = ce.target_mass.data_ptr();
    run_recording_errors("cross_entropy", !ce.probability_target(), [&](cudaStream_t stream, KernelErrorSink sink) {
      l.errors = sink;
      cross_entropy_forward_cuda(l, stream);
    });
  }

  static void cross_entropy_forward_grad(const CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing,
                                         const at::Tensor& grad_scale, at::Tensor& grad_logits) {
    const c10::cuda::CUDAGuard guard(ce.logits.device());
    CrossEntropyLaunch l = cross_entropy_launch(ce, ignore_index, label_smoothing);
    l.loss = ce.loss.data_ptr<double>();
    run_recording_errors("cross_entropy", !ce.probability_target(), [&](cudaStream_t stream, KernelErrorSink sink) {
      l.errors = sink;
      cross_entropy_forward_grad_cuda(l, grad_scale.const_data_ptr<double>(), grad_scale.numel() > 1,
                                      grad_logits.data_ptr(), stream);
    });
  }

  // cross_entropy_loss's reduction and 'mean' scale as ATen ops on the device (a few launches, no host sync); the
  // CPU backend does them in the kernel, where the ops' per-call cost mattered.
  static void cross_entropy_reduce(const at::Tensor& rows, const at::Tensor& row_weight, at::Tensor& loss,
                                   at::Tensor& divisor) {
    const c10::cuda::CUDAGuard guard(rows.device());
    if (loss.dim() == 1) {
      loss.copy_(rows);
    } else {
      loss.copy_(row_weight.defined() ? rows.sum() / row_weight.sum() : rows.sum());
    }
    if (divisor.defined()) {
      if (row_weight.defined()) {
        divisor.copy_(row_weight.sum());
      } else {
        divisor.fill_(1.0);
      }
    }
  }

  static void cross_entropy_grad_scale(const CrossEntropyTensors& ce, int64_t ignore_index, Reduction red,
                                       at::Tensor& scale) {
    const c10::cuda::CUDAGuard guard(ce.logits.device());
    if (red == Reduction::Sum) {
      scale.fill_(1.0);
    } else if (ce.probability_target()) {
      scale.fill_(1.0 / static_cast<double>(ce.logits.size(0)));
    } else {
      // The weight the forward gives each row (w[y], 0 when ignored); an out-of-range class, which the kernel raises
      // for, counts 0.
      const at::Tensor counted = (ce.target != ignore_index) & (ce.target >= 0) & (ce.target < ce.num_classes);
      const at::Tensor total = ce.weight.defined()
          ? at::where(counted, ce.weight.to(at::kDouble).index_select(0, at::where(counted, ce.target, 0)), 0.0).sum()
          : counted.sum(at::kDouble);
      scale.copy_(at::reciprocal(total));
    }
  }

  static void scale_rows(at::Tensor& x, const at::Tensor& scale) {
    const c10::cuda::CUDAGuard guard(x.device());
    scale_rows_cuda(to_dtype(x.scalar_type()), x.data_ptr(), x.size(0), x.numel() / x.size(0),
                    scale.const_data_ptr<double>(), scale.numel() > 1, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void cross_entropy_backward(const CrossEntropyTensors& ce, const at::Tensor& grad_rows,
                                     int64_t ignore_index, double label_smoothing, at::Tensor& grad_logits) {
    const c10::cuda::CUDAGuard guard(ce.logits.device());
    const CrossEntropyLaunch l = cross_entropy_launch(ce, ignore_index, label_smoothing);
    cross_entropy_backward_cuda(l, grad_rows.const_data_ptr<double>(), ce.lse.const_data_ptr<double>(),
                                ce.target_mass.const_data_ptr(), grad_logits.data_ptr(),
                                c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void pointwise_forward(PointwiseLoss kind, const PointwiseTensors& p, double param, Reduction red,
                                at::Tensor& out) {
    const c10::cuda::CUDAGuard guard(p.input.device());
    PointwiseLaunch l = pointwise_launch(kind, p, param);
    auto launch = [&](cudaStream_t stream, KernelErrorSink sink) {
      l.errors = sink;
      if (red == Reduction::None) {
        pointwise_loss_forward_cuda(l, out.data_ptr(), stream);
        return;
      }
      // The partial sums live until the second kernel has run: the caching allocator keeps the block reserved for
      // this stream until then.
      at::Tensor partials = at::empty({pointwise_loss_partials(l.n)}, p.input.options().dtype(at::kDouble));
      pointwise_loss_reduce_cuda(l, red == Reduction::Mean, partials.data_ptr<double>(), out.data_ptr(), stream);
    };
    // binary_cross_entropy's inputs must lie in [0, 1]: torch's CUDA kernel asserts it (which kills the context),
    // its CPU kernel raises; here the kernel records the first one outside, without a sync.
    run_recording_errors("binary_cross_entropy", kind == PointwiseLoss::Bce, launch);
  }

  static void pointwise_backward(PointwiseLoss kind, const at::Tensor& grad_output, const PointwiseTensors& p,
                                 double param, Reduction red, at::Tensor& grad_input) {
    const c10::cuda::CUDAGuard guard(p.input.device());
    const PointwiseLaunch l = pointwise_launch(kind, p, param);
    const bool scalar = red != Reduction::None;
    const double norm = red == Reduction::Mean ? 1.0 / static_cast<double>(l.n) : 1.0;
    pointwise_loss_backward_cuda(l, grad_output.const_data_ptr(), scalar, norm, grad_input.data_ptr(),
                                 c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

void raise_recorded_kernel_error(cudaStream_t stream) {
  if (!kernel_error_pending()) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  KernelError e{};
  if (!take_kernel_error(e)) return;
  switch (e.kind) {
    case KernelErrorKind::CrossEntropyTarget:
      TORCH_CHECK_INDEX(false, "fastops.cross_entropy: target ", e.value, " (row ", e.index, ") is out of bounds for ",
                        e.classes, " classes (ignore_index is ", e.ignore_index, ")");
    case KernelErrorKind::NllTarget:  // torch's nll_loss message, as the CPU kernel raises it
      TORCH_CHECK_INDEX(false, "fastops.nll_loss: Target ", e.value, " is out of bounds. (row ", e.index, ", ",
                        e.classes, " classes)");
    case KernelErrorKind::BceInput:  // torch's CPU message
      TORCH_CHECK(false, "fastops.binary_cross_entropy: all elements of input should be between 0 and 1, got ", e.real);
  }
  TORCH_CHECK(false, "fastops: a loss kernel recorded an unknown error kind ", static_cast<int>(e.kind));
}

TORCH_LIBRARY_IMPL(fastops, CUDA, m) { register_loss_kernels<CudaBackend>(m); }

}  // namespace fastops

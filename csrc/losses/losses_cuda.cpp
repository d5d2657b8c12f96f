// CUDA binding of the loss kernels: device guard, current stream, tensors -> launch structs, launch check, and the
// out-of-range class errors of cross entropy, which the kernels record in mapped host memory and this binding raises
// without waiting for the GPU (losses_launch.h: TargetErrorRecord).
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/reciprocal.h>
#include <ATen/ops/where.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

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
          param};
}

// Raises, as an IndexError naming the target, a class index out of range that an earlier kernel on this device
// recorded and the GPU has already run. No CUDA call and no wait unless one is pending; left pending while the
// stream is being captured into a CUDA graph (nothing may fail the capture for an error outside it).
void raise_recorded_target_error(cudaStream_t stream) {
  if (!target_error_pending()) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  TargetError e{};
  if (!take_target_error(e)) return;
  TORCH_CHECK_INDEX(false, "fastops.cross_entropy: target ", e.target, " (row ", e.row, ") is out of bounds for ",
                    e.classes, " classes (ignore_index is ", e.ignore_index, ")");
}

// Runs launch(stream) for a forward kernel. Class-index targets out of range never make this wait for the GPU (a
// training step's chunks and kernels keep queueing): their rows get a NaN loss (and gradient) and the error is
// raised by the first cross-entropy call that finds it recorded, this one when the GPU has already run its kernel.
template <typename Launch>
void run_checking_targets(const CrossEntropyTensors& ce, CrossEntropyLaunch& l, Launch&& launch) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  raise_recorded_target_error(stream);
  if (!ce.probability_target()) {
    l.target_errors = target_error_record();
    TORCH_CHECK(l.target_errors != nullptr,
                "fastops.cross_entropy: could not allocate the mapped host memory its kernels record bad targets in");
  }
  launch(stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  raise_recorded_target_error(stream);
}

struct CudaBackend {
  static void cross_entropy_forward(const CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing) {
    const c10::cuda::CUDAGuard guard(ce.logits.device());
    CrossEntropyLaunch l = cross_entropy_launch(ce, ignore_index, label_smoothing);
    l.loss = ce.loss.data_ptr<double>();
    l.row_weight = ce.row_weight.data_ptr<double>();
    l.lse = ce.lse.data_ptr<double>();
    l.target_mass = ce.target_mass.data_ptr();
    run_checking_targets(ce, l, [&](cudaStream_t stream) { cross_entropy_forward_cuda(l, stream); });
  }

  static void cross_entropy_forward_grad(const CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing,
                                         const at::Tensor& grad_scale, at::Tensor& grad_logits) {
    const c10::cuda::CUDAGuard guard(ce.logits.device());
    CrossEntropyLaunch l = cross_entropy_launch(ce, ignore_index, label_smoothing);
    l.loss = ce.loss.data_ptr<double>();
    run_checking_targets(ce, l, [&](cudaStream_t stream) {
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
    const PointwiseLaunch l = pointwise_launch(kind, p, param);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    if (red == Reduction::None) {
      pointwise_loss_forward_cuda(l, out.data_ptr(), stream);
    } else {
      // The partial sums live until the second kernel has run: the caching allocator keeps the block reserved for
      // this stream until then.
      at::Tensor partials = at::empty({pointwise_loss_partials(l.n)}, p.input.options().dtype(at::kDouble));
      pointwise_loss_reduce_cuda(l, red == Reduction::Mean, partials.data_ptr<double>(), out.data_ptr(), stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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

TORCH_LIBRARY_IMPL(fastops, CUDA, m) { register_loss_kernels<CudaBackend>(m); }

}  // namespace fastops

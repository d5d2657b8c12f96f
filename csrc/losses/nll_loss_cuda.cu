// CUDA nll_loss kernels (torch-free; see nll_loss_launch.h): one thread per row, grid-stride, int64 indices. The
// forward gathers one element per row and writes the row's loss and weight in float64; the backward scatters one
// element per row into the zero-filled gradient. A row whose class is out of range is recorded for the binding to
// raise an IndexError without a host sync (kernel_errors.h; a device assert would kill the CUDA context).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "losses/nll_loss_launch.h"

namespace fastops {
namespace {

using cuda::from_opmath;
using cuda::to_opmath;

constexpr int kBlock = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

template <typename T>
__global__ void __launch_bounds__(kBlock) nll_forward_kernel(NllGeometry g, const T* __restrict__ x,
                                                            const int64_t* __restrict__ target,
                                                            const double* __restrict__ weight, int64_t ignore_index,
                                                            double* __restrict__ loss, double* __restrict__ row_weight,
                                                            KernelErrorSink errors) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x; r < g.rows();
       r += static_cast<int64_t>(gridDim.x) * kBlock) {
    const int64_t c = target[r];
    if (c == ignore_index) {
      loss[r] = 0.0;
      row_weight[r] = 0.0;
    } else if (c < 0 || c >= g.classes) {
      record_kernel_error(errors, {KernelErrorKind::NllTarget, r, c, g.classes, ignore_index, 0.0});
      loss[r] = NAN;
      row_weight[r] = 0.0;
    } else {
      const double w = weight != nullptr ? weight[c] : 1.0;
      loss[r] = -w * static_cast<double>(to_opmath(x[g.element(r, c)]));
      row_weight[r] = w;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock) nll_backward_kernel(NllGeometry g, const double* __restrict__ grad_rows,
                                                             const int64_t* __restrict__ target,
                                                             const double* __restrict__ weight, int64_t ignore_index,
                                                             T* __restrict__ grad_input) {
  using A = cuda::opmath_t<T>;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x; r < g.rows();
       r += static_cast<int64_t>(gridDim.x) * kBlock) {
    const int64_t c = target[r];
    if (c == ignore_index || c < 0 || c >= g.classes) continue;
    const double v = -(weight != nullptr ? weight[c] : 1.0) * grad_rows[r];
    grad_input[g.element(r, c)] = from_opmath<T>(static_cast<A>(v));
  }
}

unsigned grid_for(int64_t rows) { return static_cast<unsigned>(std::min(cuda::ceil_div(rows, kBlock), kMaxBlocks)); }

}  // namespace

void nll_loss_forward_cuda(DType dtype, NllGeometry g, const void* input, const int64_t* target, const double* weight,
                           int64_t ignore_index, double* loss, double* row_weight, KernelErrorSink errors,
                           cudaStream_t stream) {
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    nll_forward_kernel<T><<<grid_for(g.rows()), kBlock, 0, stream>>>(g, static_cast<const T*>(input), target, weight,
                                                                       ignore_index, loss, row_weight, errors);
  });
}

void nll_loss_backward_cuda(DType dtype, NllGeometry g, const double* grad_rows, const int64_t* target,
                            const double* weight, int64_t ignore_index, void* grad_input, cudaStream_t stream) {
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    nll_backward_kernel<T><<<grid_for(g.rows()), kBlock, 0, stream>>>(g, grad_rows, target, weight, ignore_index,
                                                                        static_cast<T*>(grad_input));
  });
}

}  // namespace fastops

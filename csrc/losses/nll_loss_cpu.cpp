// CPU nll_loss kernels: one gather (forward) or scatter (backward) per row, in float64; the rows are independent,
// so they split over threads with no reduction (the 'mean' / 'sum' is the composite's float64 sum of the rows).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>

#include "losses/nll_loss.h"

namespace fastops {
namespace {

constexpr int64_t kRowGrain = 16384;

struct CpuBackend {
  static void nll_loss_forward(NllGeometry geo, const at::Tensor& input, const at::Tensor& target,
                               const at::Tensor& weight, int64_t ignore_index, at::Tensor& loss,
                               at::Tensor& row_weight) {
    const int64_t* t = target.const_data_ptr<int64_t>();
    const double* w = weight.defined() ? weight.const_data_ptr<double>() : nullptr;
    double* lp = loss.data_ptr<double>();
    double* rwp = row_weight.data_ptr<double>();
    std::atomic<int64_t> bad{-1};
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fastops_nll_loss_forward", [&] {
      const scalar_t* x = input.const_data_ptr<scalar_t>();
      at::parallel_for(0, geo.rows(), kRowGrain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t c = t[r];
          if (c == ignore_index) {
            lp[r] = 0.0;
            rwp[r] = 0.0;
            continue;
          }
          if (c < 0 || c >= geo.classes) {
            bad.store(r);
            lp[r] = std::numeric_limits<double>::quiet_NaN();
            rwp[r] = 0.0;
            continue;
          }
          const double wc = w != nullptr ? w[c] : 1.0;
          lp[r] = -wc * static_cast<double>(x[geo.element(r, c)]);
          rwp[r] = wc;
        }
      });
    });
    const int64_t r = bad.load();
    // torch's exception type and wording (aten/src/ATen/native/LossNLL.cpp).
    TORCH_CHECK_INDEX(r < 0, "Target ", r < 0 ? 0 : t[r], " is out of bounds.");
  }

  static void nll_loss_backward(NllGeometry geo, const at::Tensor& grad_rows, const at::Tensor& input,
                                const at::Tensor& target, const at::Tensor& weight, int64_t ignore_index,
                                at::Tensor& grad_input) {
    const int64_t* t = target.const_data_ptr<int64_t>();
    const double* w = weight.defined() ? weight.const_data_ptr<double>() : nullptr;
    const double* g = grad_rows.const_data_ptr<double>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fastops_nll_loss_backward", [&] {
      scalar_t* gx = grad_input.data_ptr<scalar_t>();
      at::parallel_for(0, geo.rows(), kRowGrain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t c = t[r];
          if (c == ignore_index || c < 0 || c >= geo.classes) continue;
          gx[geo.element(r, c)] = static_cast<scalar_t>(-(w != nullptr ? w[c] : 1.0) * g[r]);
        }
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CPU, m) { register_nll_loss_kernels<CpuBackend>(m); }

}  // namespace fastops

// CPU activation kernels: vectorised, multi-threaded elementwise maps (common/cpu_elementwise.h). Each activation
// pairs the scalar math shared with CUDA (activation_math.h) with a Vectorized body written here.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "activations/activation_math.h"
#include "activations/activations.h"
#include "common/cpu_elementwise.h"

namespace fastops {
namespace {

using cpu::Vectorized;

// Pairs a scalar functor (tail loop) with a vector lambda (body) into one callable for map_elementwise.
template <typename Scalar, typename Vector>
struct Elementwise : Scalar, Vector {
  using Scalar::operator();
  using Vector::operator();
};
template <typename Scalar, typename Vector>
Elementwise(Scalar, Vector) -> Elementwise<Scalar, Vector>;

template <typename T>
auto relu_forward_op() {
  using V = Vectorized<cpu::opmath_t<T>>;
  // maximum() propagates NaN like the scalar version.
  return Elementwise{act::ReluForward{}, [](const V& x) { return at::vec::maximum(x, V(0)); }};
}

template <typename T>
auto relu_backward_op() {
  using V = Vectorized<cpu::opmath_t<T>>;
  return Elementwise{act::ReluBackward{}, [](const V& g, const V& r) { return V::blendv(g, V(0), r <= V(0)); }};
}

struct CpuBackend {
  static void forward(Activation act, const at::Tensor& x, at::Tensor& y, double /*param*/) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastops_activation_forward", [&] {
      const int64_t n = x.numel();
      switch (act) {
        case Activation::ReLU:
          return cpu::map_elementwise(n, y.data_ptr<scalar_t>(), relu_forward_op<scalar_t>(),
                                      x.const_data_ptr<scalar_t>());
      }
    });
  }

  static void backward(Activation act, const at::Tensor& grad, const at::Tensor& saved, at::Tensor& grad_input,
                       double /*param*/) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "fastops_activation_backward", [&] {
      const int64_t n = grad.numel();
      switch (act) {
        case Activation::ReLU:
          return cpu::map_elementwise(n, grad_input.data_ptr<scalar_t>(), relu_backward_op<scalar_t>(),
                                      grad.const_data_ptr<scalar_t>(), saved.const_data_ptr<scalar_t>());
      }
    });
  }
};

at::Tensor relu_cpu(const at::Tensor& x) { return activation_forward<CpuBackend>("relu", Activation::ReLU, x); }

at::Tensor relu_backward_cpu(const at::Tensor& grad_output, const at::Tensor& result) {
  return activation_backward<CpuBackend>("relu_backward", Activation::ReLU, grad_output, result, "result");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CPU, m) {
  m.impl("relu", &relu_cpu);
  m.impl("relu_backward", &relu_backward_cpu);
}

}  // namespace fastops

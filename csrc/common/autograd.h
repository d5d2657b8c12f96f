// Pieces shared by the C++ autograd kernels (csrc/<family>/<family>_autograd.cpp, registered to the Autograd key).
//
// Why C++: a Python autograd kernel (torch.library.register_autograd) cost every call ~4 us with no gradient wanted
// and ~12 us with one on these CPUs (torch.ops.fastops.relu on a [2, 8] tensor: 6.2 / 13.7 us against torch.relu's
// 1.1 / 1.9), which made small models train up to 1.31x slower than in torch.nn. A C++ kernel costs what torch's
// own generated autograd costs.
//
// The rule every backward here follows for higher derivatives: when grad mode is on inside the backward
// (create_graph=True: gradient penalties, Hessian-vector products, MAML), the gradient is computed from ATen ops,
// which autograd differentiates to any order; otherwise from fastops' backward kernels. torch's own derivatives
// make the same switch (derivatives.yaml: silu's GradMode::is_enabled() ? infinitely_differentiable_silu_backward).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <initializer_list>

namespace fastops {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The typed dispatcher handle of fastops::<name>[.<overload>], looked up once per call site.
#define FASTOPS_OP(name, overload, signature)                                                     \
  ([]() -> const c10::TypedOperatorHandle<signature>& {                                          \
    static const auto handle =                                                                    \
        c10::Dispatcher::singleton().findSchemaOrThrow("fastops::" name, overload).typed<signature>(); \
    return handle;                                                                                \
  }())

// Whether a call must record a graph node: grad mode on and some input requiring grad. Calls that need none skip
// the node (and its allocation), as torch's generated autograd kernels do.
inline bool needs_graph(std::initializer_list<const at::Tensor*> inputs) {
  if (!c10::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

// Runs `f` with the Autograd and ADInplaceOrView keys excluded: the op's backend (or fake) kernel.
template <typename F>
decltype(auto) below_autograd(F&& f) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return f();
}

// Whether the backward being computed must itself be differentiable (create_graph=True).
inline bool differentiable_backward() { return c10::GradMode::is_enabled(); }

}  // namespace fastops

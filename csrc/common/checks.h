// Input checks shared by the CPU and CUDA bindings. Every failure raises a Python RuntimeError whose message names
// the op, the argument and the rule, e.g. "fastops.relu: x must be float16/bfloat16/float32/float64, got Int".
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <utility>

#include "common/dtype.h"

namespace fastops {

// An argument as the user named it, for error messages.
struct Arg {
  const at::Tensor& t;
  const char* name;
};

inline bool is_supported_float(at::ScalarType s) {
  return s == at::kHalf || s == at::kBFloat16 || s == at::kFloat || s == at::kDouble;
}

inline void check_floating(const char* op, const Arg& a) {
  TORCH_CHECK(is_supported_float(a.t.scalar_type()), "fastops.", op, ": ", a.name,
              " must be float16/bfloat16/float32/float64, got ", a.t.scalar_type());
}

inline void check_defined(const char* op, const Arg& a) {
  TORCH_CHECK(a.t.defined(), "fastops.", op, ": ", a.name, " must be a defined tensor");
}

// All tensors are defined, floating, of one dtype and on one device.
inline void check_float_operands(const char* op, std::initializer_list<Arg> args) {
  const Arg* first = nullptr;
  for (const Arg& a : args) {
    check_defined(op, a);
    check_floating(op, a);
    if (first == nullptr) {
      first = &a;
      continue;
    }
    TORCH_CHECK(a.t.scalar_type() == first->t.scalar_type(), "fastops.", op, ": ", a.name, " must have the dtype of ",
                first->name, " (", first->t.scalar_type(), "), got ", a.t.scalar_type());
    TORCH_CHECK(a.t.device() == first->t.device(), "fastops.", op, ": ", a.name, " must be on the device of ",
                first->name, " (", first->t.device(), "), got ", a.t.device());
  }
}

inline void check_same_shape(const char* op, const Arg& a, const Arg& b) {
  TORCH_CHECK(a.t.sizes() == b.t.sizes(), "fastops.", op, ": ", b.name, " must have the shape of ", a.name, " ",
              a.t.sizes(), ", got ", b.t.sizes());
}

// torch's dtype <-> the kernels' torch-free DType (common/dtype.h).
inline DType to_dtype(at::ScalarType s) {
  switch (s) {
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    default: TORCH_CHECK(false, "fastops: unsupported dtype ", s);
  }
}

inline at::ScalarType scalar_type_of(DType d) {
  switch (d) {
    case DType::Float16: return at::kHalf;
    case DType::BFloat16: return at::kBFloat16;
    case DType::Float32: return at::kFloat;
    case DType::Float64: return at::kDouble;
  }
  TORCH_CHECK(false, "fastops: unknown DType ", static_cast<int>(d));
}

}  // namespace fastops

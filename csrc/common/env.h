// Kernel-variant switches from the environment, torch-free.
#pragma once

#include <cstdlib>
#include <cstring>

namespace fastops {

// True when environment variable `name` is "1". The caller decides when to read: the CPU GEMM's
// FASTOPS_CPU_GEMM_FALLBACK at every call (~100 ns, nothing next to a GEMM), the CUDA GEMM's switches once per
// process until refreshed (matmul/gemm_plan.h).
inline bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::strcmp(value, "1") == 0;
}

}  // namespace fastops

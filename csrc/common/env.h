// Kernel-variant switches from the environment, torch-free (the .cu files use them too).
#pragma once

#include <cstdlib>
#include <cstring>

namespace fastops {

// True when environment variable `name` is "1". Read at every call, not once per process, so that a test or the
// benchmark can compare kernel variants in one process (getenv costs ~100 ns, nothing next to a GEMM launch).
inline bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::strcmp(value, "1") == 0;
}

}  // namespace fastops

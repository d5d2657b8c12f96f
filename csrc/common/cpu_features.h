// Which CPU capability levels this machine can run (torch-free): the run-time half of the per-level CPU kernel
// libraries that setup.py builds. A level counts only when the CPU has its instructions *and* the OS saves their
// register state (GCC's and clang's __builtin_cpu_supports read CPUID and XGETBV both), so a kernel never meets
// an AVX-512 instruction that the OS has switched off.
#pragma once

namespace fastops {

// Levels, lowest first; each includes the ones before it.
constexpr const char* kCpuLevels[] = {"default", "avx2", "avx512"};

// The index in kCpuLevels of the best level this CPU and OS support.
inline int best_cpu_level() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
  if (avx512) return 2;
  // F16C has no __builtin_cpu_supports name in GCC 12; every AVX2 CPU shipped has it (Haswell, Excavator onward).
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

}  // namespace fastops

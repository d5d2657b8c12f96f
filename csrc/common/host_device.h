// FASTOPS_HD marks math shared by the CPU kernels and the CUDA kernels: __host__ __device__ under nvcc, plain
// inline for the host compiler (the torch-side .cpp files).
#pragma once

#if defined(__CUDACC__)
#define FASTOPS_HD __host__ __device__ __forceinline__
#else
#define FASTOPS_HD inline
#endif

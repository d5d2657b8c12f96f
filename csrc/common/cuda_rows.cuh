// Row walking for CUDA kernels over a [rows, cols] matrix, torch-free: each thread owns W consecutive columns (one
// 16-byte vector when the row length, the row strides and every pointer allow it, else W = 1) and walks rows, so
// the column index (and a bias value) is fixed per thread and never divided out of a flat index. Used by the
// activation row kernels (bias_act, the gated units) and the column sums.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "common/cuda_utils.cuh"

namespace fastops::cuda {

// W consecutive elements moved as one access (16 bytes for the vector path, one element for the scalar path).
template <typename T, int W>
struct alignas(sizeof(T) * W) Vec {
  T v[W];
};

template <typename T, int W>
__device__ __forceinline__ Vec<T, W> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, W>*>(p);
}

template <typename T, int W>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, W>& v) {
  *reinterpret_cast<Vec<T, W>*>(p) = v;
}

template <typename T>
constexpr int vector_width() {
  return 16 / static_cast<int>(sizeof(T));
}

// Whether W = vector_width<T>() is legal: every pointer 16-byte aligned and every length (row length, row strides)
// a multiple of W.
template <typename T>
bool vectors_fit(std::initializer_list<const void*> pointers, std::initializer_list<int64_t> lengths) {
  for (const void* p : pointers) {
    if (!is_aligned16(p)) return false;
  }
  for (int64_t n : lengths) {
    if (n % vector_width<T>() != 0) return false;
  }
  return true;
}

// Calls launch(std::integral_constant<int, W>) with W the 16-byte vector width when `vector_ok`, else 1.
template <typename T, typename Fn>
void with_width(bool vector_ok, Fn&& launch) {
  if (vector_ok) {
    launch(std::integral_constant<int, vector_width<T>()>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

// Rows first, first + step, ... below end, kUnroll at a time: load(r) for each of them before use(r, loaded) for any,
// so that kUnroll rows' loads per operand are in flight per thread before the first is used.
template <int kUnroll, typename Load, typename Use>
__device__ __forceinline__ void walk_rows(int64_t first, int64_t end, int64_t step, Load&& load, Use&& use) {
  using Loaded = decltype(load(first));
  for (int64_t r0 = first; r0 < end; r0 += kUnroll * step) {
    Loaded in[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t r = r0 + k * step;
      if (r < end) in[k] = load(r);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t r = r0 + k * step;
      if (r < end) use(r, in[k]);
    }
  }
}

}  // namespace fastops::cuda

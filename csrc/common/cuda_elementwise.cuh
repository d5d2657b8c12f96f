// Flat elementwise map for CUDA: out[i] = op(in[0][i], in[1][i], ...) over n elements, math in opmath_t<T>.
// Fast path: each thread moves kPacksPerThread 16-byte packs per operand with all loads issued before any math,
// so a warp keeps 16 B x 32 x kPacksPerThread x operands in flight (needed to approach the 3.0 TB/s copy ceiling).
// Fallback: a grid-stride scalar loop, taken when any pointer is not 16-byte aligned (slices, storage offsets),
// and for the tail that does not fill a pack. Indices are int64: 2^31+ element tensors are normal.
#pragma once

#include <utility>

#include "common/cuda_utils.cuh"

namespace fastops::cuda {

constexpr int kElementwiseThreads = 256;
constexpr int kPacksPerThread = 2;

template <typename T, int N>
struct Inputs {
  const T* p[N];
};

template <typename T, typename Op, size_t... K>
__device__ __forceinline__ T apply_to_packs(const Op& op, const Pack16<T>* packs, int e, std::index_sequence<K...>) {
  return from_opmath<T>(op(to_opmath(packs[K].v[e])...));
}

template <typename T, typename Op, int N, size_t... K>
__device__ __forceinline__ T apply_at(const Op& op, const Inputs<T, N>& in, int64_t i, std::index_sequence<K...>) {
  return from_opmath<T>(op(to_opmath(in.p[K][i])...));
}

template <typename T, typename Op, int N>
__global__ void __launch_bounds__(kElementwiseThreads)
    map_packed_kernel(int64_t n_packs, T* __restrict__ out, Inputs<T, N> in, Op op) {
  using P = Pack16<T>;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kPacksPerThread * blockDim.x + threadIdx.x;
  P loaded[kPacksPerThread][N];
#pragma unroll
  for (int u = 0; u < kPacksPerThread; ++u) {
    const int64_t p = first + static_cast<int64_t>(u) * blockDim.x;
    if (p < n_packs) {
#pragma unroll
      for (int k = 0; k < N; ++k) loaded[u][k] = reinterpret_cast<const P*>(in.p[k])[p];
    }
  }
#pragma unroll
  for (int u = 0; u < kPacksPerThread; ++u) {
    const int64_t p = first + static_cast<int64_t>(u) * blockDim.x;
    if (p < n_packs) {
      P result;
#pragma unroll
      for (int e = 0; e < P::kSize; ++e) result.v[e] = apply_to_packs(op, loaded[u], e, std::make_index_sequence<N>{});
      reinterpret_cast<P*>(out)[p] = result;
    }
  }
}

template <typename T, typename Op, int N>
__global__ void __launch_bounds__(kElementwiseThreads)
    map_scalar_kernel(int64_t n, T* __restrict__ out, Inputs<T, N> in, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = apply_at(op, in, i, std::make_index_sequence<N>{});
  }
}

template <typename T, typename Op, int N>
void launch_scalar_map(int64_t n, T* out, Inputs<T, N> in, Op op, cudaStream_t stream) {
  // Grid-stride: 2^16 blocks of 256 threads cover any size without overflowing gridDim.x.
  const int64_t blocks = std::min<int64_t>(ceil_div(n, kElementwiseThreads), 1 << 16);
  map_scalar_kernel<<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, stream>>>(n, out, in, op);
}

// Enqueues out = op(in...) on `stream`. The caller checks the launch (cudaGetLastError) afterwards.
template <typename T, typename Op, int N>
void launch_map(int64_t n, T* out, Inputs<T, N> in, Op op, cudaStream_t stream) {
  if (n <= 0) return;
  bool aligned = is_aligned16(out);
  for (int k = 0; k < N; ++k) aligned = aligned && is_aligned16(in.p[k]);
  if (!aligned) {
    launch_scalar_map(n, out, in, op, stream);
    return;
  }
  constexpr int64_t kPack = Pack16<T>::kSize;
  const int64_t n_packs = n / kPack;
  if (n_packs > 0) {
    const int64_t blocks = ceil_div(n_packs, static_cast<int64_t>(kElementwiseThreads) * kPacksPerThread);
    map_packed_kernel<<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, stream>>>(n_packs, out, in, op);
  }
  const int64_t done = n_packs * kPack;
  if (done < n) {
    Inputs<T, N> tail = in;
    for (int k = 0; k < N; ++k) tail.p[k] += done;
    launch_scalar_map(n - done, out + done, tail, op, stream);
  }
}

}  // namespace fastops::cuda

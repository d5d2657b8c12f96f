// Flat elementwise maps and sums for CUDA over n elements of one layout, math in opmath_t<T>, torch-free:
//   launch_map:          out[i] = op(in[0][i], in[1][i], ...)
//   launch_sum:          scale * sum_i op(in[0][i], ...) in a wider type R, as fixed-order per-block partial sums
//                        (deterministic: the blocks and their elements depend on n only) and one finishing block.
// Fast path: 16-byte packs of every operand, taken when every pointer is 16-byte aligned; the map's threads each move
// kPacksPerThread packs per operand with all loads issued before any math, so a warp keeps 16 B x 32 x
// kPacksPerThread x operands in flight (needed to approach the copy ceiling). Fallback: a grid-stride scalar loop,
// for a misaligned pointer (slices, storage offsets) and for the map's tail that does not fill a pack. Indices are
// int64: 2^31+ element tensors are normal.
#pragma once

#include <utility>

#include "common/cuda_utils.cuh"

namespace fastops::cuda {

constexpr int kElementwiseThreads = 256;
// The map's packs per thread, all loaded before any math, so a warp keeps 16 B x 32 x kPacksPerThread x operands in
// flight (needed to approach the copy ceiling).
constexpr int kPacksPerThread = 2;

template <typename T, int N>
struct Inputs {
  const T* p[N];
};

template <typename T, int N>
bool all_aligned16(const void* out, const Inputs<T, N>& in) {
  bool aligned = out == nullptr || is_aligned16(out);
  for (int k = 0; k < N; ++k) aligned = aligned && is_aligned16(in.p[k]);
  return aligned;
}

// op on element e of each operand's pack, the operands widened to V.
template <typename V, typename T, typename Op, size_t... K>
__device__ __forceinline__ auto apply_to_packs(const Op& op, const Pack16<T>* packs, int e, std::index_sequence<K...>) {
  return op(static_cast<V>(to_opmath(packs[K].v[e]))...);
}

template <typename V, typename T, typename Op, int N, size_t... K>
__device__ __forceinline__ auto apply_at(const Op& op, const Inputs<T, N>& in, int64_t i, std::index_sequence<K...>) {
  return op(static_cast<V>(to_opmath(in.p[K][i]))...);
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
      for (int e = 0; e < P::kSize; ++e) {
        result.v[e] = from_opmath<T>(apply_to_packs<opmath_t<T>>(op, loaded[u], e, std::make_index_sequence<N>{}));
      }
      reinterpret_cast<P*>(out)[p] = result;
    }
  }
}

template <typename T, typename Op, int N>
__global__ void __launch_bounds__(kElementwiseThreads)
    map_scalar_kernel(int64_t n, T* __restrict__ out, Inputs<T, N> in, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = from_opmath<T>(apply_at<opmath_t<T>>(op, in, i, std::make_index_sequence<N>{}));
  }
}

template <typename T, typename Op, int N>
void launch_scalar_map(int64_t n, T* out, Inputs<T, N> in, Op op, cudaStream_t stream) {
  // Grid-stride: 2^16 blocks of 256 threads cover any size without overflowing gridDim.x.
  const int64_t blocks = std::min<int64_t>(ceil_div(n, kElementwiseThreads), 1 << 16);
  map_scalar_kernel<<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, stream>>>(n, out, in, op);
}

// Enqueues out = op(in...) on `stream`; op takes and returns opmath_t<T>. The caller checks the launch
// (cudaGetLastError) afterwards.
template <typename T, typename Op, int N>
void launch_map(int64_t n, T* out, Inputs<T, N> in, Op op, cudaStream_t stream) {
  if (n <= 0) return;
  if (!all_aligned16(out, in)) {
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

// ---- deterministic sums ----

constexpr int kSumThreads = 256;
constexpr int kMaxSumPartials = 1024;

// The blocks (and double partial sums) of a sum over n elements: about 16 elements per thread, at most
// kMaxSumPartials. A function of n alone, so the order of the additions never depends on the device.
inline int64_t sum_partials(int64_t n) {
  const int64_t blocks = ceil_div(n, int64_t{kSumThreads} * 16);
  return blocks < 1 ? 1 : (blocks > kMaxSumPartials ? kMaxSumPartials : blocks);
}

// The sum of v over the block's threads, valid in thread 0 (warp shuffles, then one warp over the warp sums).
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[kSumThreads / 32];
  for (int mask = 16; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = 0;
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : 0.0;
    for (int mask = 16; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
  }
  return v;
}

// partials[block] = the sum, in R, of op over this block's elements: grid-stride over 16-byte packs when `packed`,
// then over the elements past the last whole pack (every element, when not packed).
template <typename R, typename T, typename Op, int N>
__global__ void __launch_bounds__(kSumThreads)
    sum_partials_kernel(int64_t n, Inputs<T, N> in, Op op, bool packed, double* __restrict__ partials) {
  using P = Pack16<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_packs = packed ? n / P::kSize : 0;
  R acc = 0;
  for (int64_t p = first; p < n_packs; p += stride) {
    P packs[N];
#pragma unroll
    for (int k = 0; k < N; ++k) packs[k] = reinterpret_cast<const P*>(in.p[k])[p];
#pragma unroll
    for (int e = 0; e < P::kSize; ++e) acc += apply_to_packs<R>(op, packs, e, std::make_index_sequence<N>{});
  }
  for (int64_t i = n_packs * P::kSize + first; i < n; i += stride) {
    acc += apply_at<R>(op, in, i, std::make_index_sequence<N>{});
  }
  const double total = block_sum(static_cast<double>(acc));
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename T>
__global__ void __launch_bounds__(kSumThreads)
    finish_sum_kernel(const double* __restrict__ partials, int n_partials, double scale, T* __restrict__ out) {
  double acc = 0;
  for (int k = threadIdx.x; k < n_partials; k += blockDim.x) acc += partials[k];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = from_opmath<T>(static_cast<opmath_t<T>>(total * scale));
}

// *out = scale * sum_i op(in...) with op evaluated in R; `partials` holds sum_partials(n) doubles.
template <typename R, typename T, typename Op, int N>
void launch_sum(int64_t n, Inputs<T, N> in, Op op, double scale, double* partials, T* out, cudaStream_t stream) {
  if (n <= 0) return;
  const int n_partials = static_cast<int>(sum_partials(n));
  sum_partials_kernel<R><<<n_partials, kSumThreads, 0, stream>>>(n, in, op, all_aligned16(nullptr, in), partials);
  finish_sum_kernel<T><<<1, kSumThreads, 0, stream>>>(partials, n_partials, scale, out);
}

}  // namespace fastops::cuda

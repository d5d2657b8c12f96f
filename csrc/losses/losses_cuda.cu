// CUDA loss kernels (torch-free; see losses_launch.h).
//
// Cross entropy: one block per row. The forward reads the row once, keeping per thread the running softmax
// statistics (max m, s = sum exp(z - m), and the target terms qz = sum q (z - m), qsum = sum q, all rescaled when
// m grows), merges them across the block and writes the row's loss, lse and target mass; nothing [N, C]-sized is
// written. The backward reads the row once more and writes (qsum exp(z - lse) - q) * upstream. Rows are read as
// 16-byte packs when the base pointers are aligned (a few scalar head / tail elements per row when C * sizeof(T)
// is not a multiple of 16), else element by element. All indices are int64: N * C > 2^31 is normal.
//
// Elementwise losses: grid-stride loops over 16-byte packs (scalar when a pointer is misaligned) calling the
// loss_math.h formulas; reductions write one double partial per block and a second one-block kernel adds them in
// a fixed order (deterministic, no atomics).
#include <cmath>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "losses/loss_math.h"
#include "losses/losses_launch.h"

namespace fastops {
namespace {

using cuda::from_opmath;
using cuda::opmath_t;
using cuda::Pack16;
using cuda::to_opmath;

// The type sums over many elements accumulate in: float for 16-bit inputs (whose results round to 8 or 11 bits),
// double for float32 / float64, so that a float32 result is as accurate as torch's (each element exact to float
// precision before the sum, as on the CPU).
template <typename T>
using reduce_math_t = std::conditional_t<std::is_same_v<T, float> || std::is_same_v<T, double>, double, float>;

// ---- cross entropy ----

// Row kernels are bounded to two resident 512-thread blocks per SM (<= 64 registers): memory-bound kernels need
// the warps.
constexpr int kRowThreadsMax = 512;

// 16-byte packs each thread loads before using any (bytes in flight); one for float64 (two doubles, double math)
// to stay within the register bound.
template <typename T>
constexpr int row_unroll() {
  return sizeof(T) >= 8 ? 1 : 4;
}

// exp for a gradient element that is then rounded to T: the MUFU approximation (relative error ~1e-7) is far
// below a 16-bit result's rounding, so 16-bit types take it; float32 / float64 keep the accurate exp.
template <typename T>
__device__ __forceinline__ opmath_t<T> grad_exp(opmath_t<T> x) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    return __expf(x);
  } else {
    return exp(x);
  }
}

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -INFINITY;
}

// Softmax statistics of a part of a row, relative to its own maximum m (see the file comment). The identity is
// m = -inf with zero sums.
template <typename A>
struct RowStats {
  A m, s, qz, qsum;

  __device__ __forceinline__ static RowStats identity() { return {neg_inf<A>(), A(0), A(0), A(0)}; }

  // Re-expresses the sums relative to new_m (>= m, or NaN). Parts that saw only -inf have nothing to rescale.
  __device__ __forceinline__ void rebase(A new_m) {
    if (m == neg_inf<A>() || m == new_m) return;
    s *= exp(m - new_m);
    qz -= qsum * (new_m - m);
  }

  __device__ __forceinline__ void merge(RowStats o) {
    const A new_m = (o.m > m || o.m != o.m) ? o.m : m;  // NaN propagates
    rebase(new_m);
    o.rebase(new_m);
    m = new_m;
    s += o.s;
    qz += o.qz;
    qsum += o.qsum;
  }
};

template <typename A>
__device__ __forceinline__ RowStats<A> shfl_xor(const RowStats<A>& v, int lane_mask) {
  return {__shfl_xor_sync(0xffffffffu, v.m, lane_mask), __shfl_xor_sync(0xffffffffu, v.s, lane_mask),
          __shfl_xor_sync(0xffffffffu, v.qz, lane_mask), __shfl_xor_sync(0xffffffffu, v.qsum, lane_mask)};
}

// The whole block's statistics, valid in thread 0.
template <typename A>
__device__ RowStats<A> block_merge(RowStats<A> v) {
  __shared__ RowStats<A> warp_stats[kRowThreadsMax / 32];
  for (int mask = 16; mask > 0; mask >>= 1) v.merge(shfl_xor(v, mask));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_stats[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? warp_stats[lane] : RowStats<A>::identity();
    for (int mask = 16; mask > 0; mask >>= 1) v.merge(shfl_xor(v, mask));
  }
  return v;
}

// Per-call constants of a cross-entropy launch, in the math type A.
template <typename T>
struct RowParams {
  using A = opmath_t<T>;
  const T* logits;
  const int64_t* index;  // class-index targets, or null
  const T* prob;         // probability targets, or null
  const A* weight;       // class weights, or null
  int64_t c, ignore_index;
  double keep, spread;  // 1 - eps and eps / C
  bool smooth;          // q has more than the one-hot term
  bool aligned;         // every base pointer is 16-byte aligned: rows can be read as packs

  // q_j without the one-hot term, in Q (double where the forward accumulates in double).
  template <typename Q>
  __device__ __forceinline__ Q q_at(const T* t_row, int64_t j) const {
    const Q q = prob ? static_cast<Q>(to_opmath(t_row[j])) * static_cast<Q>(keep) + static_cast<Q>(spread)
                     : static_cast<Q>(spread);
    return weight ? q * static_cast<Q>(__ldg(weight + j)) : q;
  }
};

// Calls f(j, v) for every element j of row `row` (v = its logit in A), with 16-byte loads where possible: scalar
// head elements up to the first 16-byte boundary, packs (row_unroll() in flight per thread), scalar tail.
template <typename T, typename F>
__device__ __forceinline__ void walk_row(const RowParams<T>& rp, int64_t row, F&& f) {
  using P = Pack16<T>;
  constexpr int kPack = P::kSize;
  const int64_t c = rp.c;
  const T* z = rp.logits + row * c;
  int64_t head = c;
  if (rp.aligned) {
    const int64_t misalign = (row * c) % kPack;  // bases are aligned, so the row start decides
    head = misalign == 0 ? 0 : (kPack - misalign < c ? kPack - misalign : c);
  }
  const int64_t n_packs = (c - head) / kPack;
  const int64_t tail = head + n_packs * kPack;
  for (int64_t j = threadIdx.x; j < head; j += blockDim.x) f(j, to_opmath(z[j]));
  const P* packs = reinterpret_cast<const P*>(z + head);
  constexpr int kUnroll = row_unroll<T>();
  const int64_t step = static_cast<int64_t>(blockDim.x) * kUnroll;
  for (int64_t p0 = threadIdx.x; p0 < n_packs; p0 += step) {
    P buf[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t p = p0 + static_cast<int64_t>(u) * blockDim.x;
      if (p < n_packs) buf[u] = packs[p];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t p = p0 + static_cast<int64_t>(u) * blockDim.x;
      if (p < n_packs) {
#pragma unroll
        for (int e = 0; e < kPack; ++e) f(head + p * kPack + e, to_opmath(buf[u].v[e]));
      }
    }
  }
  for (int64_t j = tail + threadIdx.x; j < c; j += blockDim.x) f(j, to_opmath(z[j]));
}

// A row's loss, log-sum-exp and target mass (qsum), valid in thread 0 (the block merges the threads' parts).
struct RowResult {
  double loss, lse, qsum;
};

// One read of row `row` (of class y, or any y for probability targets) with the online softmax statistics.
template <typename T>
__device__ RowResult row_result(const RowParams<T>& rp, int64_t row, int64_t y) {
  using A = opmath_t<T>;
  const T* t_row = rp.prob ? rp.prob + row * rp.c : nullptr;
  using S = reduce_math_t<T>;
  RowStats<S> st = RowStats<S>::identity();
  walk_row(rp, row, [&](int64_t j, A logit) {
    const S v = static_cast<S>(logit);
    if (v > st.m || v != v) {  // a new maximum (or NaN, which then propagates)
      st.rebase(v);
      st.m = v;
    }
    const S d = v - st.m;
    if (st.m != neg_inf<S>()) st.s += exp(d);
    if (rp.smooth) {
      const S q = rp.template q_at<S>(t_row, j);
      st.qz += q * d;
      st.qsum += q;
    }
  });
  st = block_merge(st);
  double qz = st.qz, qsum = st.qsum;
  if (rp.index && threadIdx.x == 0) {  // the one-hot term
    const double one_hot = rp.keep * (rp.weight ? static_cast<double>(rp.weight[y]) : 1.0);
    qz += one_hot * (static_cast<double>(to_opmath(rp.logits[row * rp.c + y])) - static_cast<double>(st.m));
    qsum += one_hot;
  }
  const double log_s = log(static_cast<double>(st.s));
  return {qsum * log_s - qz, static_cast<double>(st.m) + log_s, qsum};
}

// The class of `row` for index targets (0 for probabilities), or -1 for an ignored row and -2 for a class out of
// range, which is flagged in *bad_row (raised as a Python error by the binding; never a device assert).
template <typename T>
__device__ __forceinline__ int64_t row_class(const RowParams<T>& rp, int64_t row, int64_t* bad_row) {
  if (!rp.index) return 0;
  const int64_t y = rp.index[row];
  if (y == rp.ignore_index) return -1;
  if (y < 0 || y >= rp.c) {
    if (threadIdx.x == 0 && bad_row != nullptr) *bad_row = row;
    return -2;
  }
  return y;
}

// Writes (b exp(z - lse) - q) * u over row `row` into g (the row's gradient; g may be the logits row itself: each
// element is read by the thread that then writes it, and the target logit is not read again).
template <typename T>
__device__ void write_row_grad(const RowParams<T>& rp, int64_t row, int64_t y, opmath_t<T> u, opmath_t<T> b,
                               double lse_row, T* g) {
  using A = opmath_t<T>;
  using P = Pack16<T>;
  constexpr int kPack = P::kSize;
  const int64_t c = rp.c;
  // lse = hi + lo in two math-type numbers: (z - hi) - lo keeps a float64 lse's precision.
  const A hi = static_cast<A>(lse_row);
  const A lo = static_cast<A>(lse_row - static_cast<double>(hi));
  const A one_hot = rp.index ? static_cast<A>(rp.keep * (rp.weight ? rp.weight[y] : 1.0)) : A(0);
  const T* t_row = rp.prob ? rp.prob + row * c : nullptr;
  const A keep = static_cast<A>(rp.keep), spread = static_cast<A>(rp.spread);
  auto grad_at = [&](int64_t j, A v) -> T {
    A q = A(0);
    if (rp.smooth) {
      q = t_row ? to_opmath(t_row[j]) * keep + spread : spread;
      if (rp.weight) q *= __ldg(rp.weight + j);
    }
    if (j == y) q += one_hot;
    return from_opmath<T>(fma(grad_exp<T>((v - hi) - lo), b, -q) * u);
  };
  const T* z = rp.logits + row * c;
  if (!rp.aligned) {
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) g[j] = grad_at(j, to_opmath(z[j]));
    return;
  }
  // Same head / packs / tail split as walk_row, with pack-wide stores.
  const int64_t misalign = (row * c) % kPack;
  const int64_t head = misalign == 0 ? 0 : (kPack - misalign < c ? kPack - misalign : c);
  const int64_t n_packs = (c - head) / kPack;
  const int64_t tail = head + n_packs * kPack;
  for (int64_t j = threadIdx.x; j < head; j += blockDim.x) g[j] = grad_at(j, to_opmath(z[j]));
  const P* in = reinterpret_cast<const P*>(z + head);
  P* out = reinterpret_cast<P*>(g + head);
  constexpr int kUnroll = row_unroll<T>();
  const int64_t step = static_cast<int64_t>(blockDim.x) * kUnroll;
  for (int64_t p0 = threadIdx.x; p0 < n_packs; p0 += step) {
    P buf[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t p = p0 + static_cast<int64_t>(k) * blockDim.x;
      if (p < n_packs) buf[k] = in[p];
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t p = p0 + static_cast<int64_t>(k) * blockDim.x;
      if (p < n_packs) {
        P r;
#pragma unroll
        for (int e = 0; e < kPack; ++e) r.v[e] = grad_at(head + p * kPack + e, to_opmath(buf[k].v[e]));
        out[p] = r;
      }
    }
  }
  for (int64_t j = tail + threadIdx.x; j < c; j += blockDim.x) g[j] = grad_at(j, to_opmath(z[j]));
}

// An ignored row's gradient is 0; a row with a class out of range gets NaN.
template <typename T>
__device__ void fill_row(int64_t c, bool ignored, T* g) {
  const T fill = from_opmath<T>(ignored ? opmath_t<T>(0) : opmath_t<T>(NAN));
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) g[j] = fill;
}

template <typename T>
__global__ void __launch_bounds__(kRowThreadsMax, 2)
    cross_entropy_forward_kernel(RowParams<T> rp, double* __restrict__ loss, double* __restrict__ row_weight,
                                 double* __restrict__ lse, opmath_t<T>* __restrict__ target_mass,
                                 int64_t* __restrict__ bad_row) {
  using A = opmath_t<T>;
  const int64_t row = blockIdx.x;
  const int64_t y = row_class(rp, row, bad_row);
  if (y < 0) {  // ignored (or out of range): no loss, weight or gradient
    if (threadIdx.x == 0) {
      loss[row] = y == -1 ? 0.0 : NAN;
      row_weight[row] = lse[row] = 0.0;
      target_mass[row] = A(0);
    }
    return;
  }
  const RowResult r = row_result(rp, row, y);
  if (threadIdx.x != 0) return;
  loss[row] = r.loss;
  row_weight[row] = rp.index && rp.weight ? static_cast<double>(rp.weight[y]) : 1.0;
  lse[row] = r.lse;
  target_mass[row] = static_cast<A>(r.qsum);
}

// The forward scaled by u = grad_scale[row * scale_stride]: loss_row = u * CE_row and its gradient u * d CE_row /
// d logits_row (an ignored row's loss is 0 * u). The row is read twice
// (statistics, then gradient; the second read mostly hits L2) and its gradient written once. `grad` may equal
// the logits (in place), so neither pointer is __restrict__. Both phases in one kernel need more than the 64
// registers two resident blocks allow (ptxas spilled 36 bytes for bfloat16 at that bound), so one 512-thread block
// per SM is resident: 16 warps with 4 packs each in flight, about 32 KB per SM (not yet measured on an H100).
template <typename T>
__global__ void __launch_bounds__(kRowThreadsMax, 1)
    cross_entropy_forward_grad_kernel(RowParams<T> rp, const double* __restrict__ grad_scale, int64_t scale_stride,
                                      double* __restrict__ loss, int64_t* __restrict__ bad_row, T* grad) {
  using A = opmath_t<T>;
  __shared__ double row_lse, row_mass;
  const int64_t row = blockIdx.x;
  T* g = grad + row * rp.c;
  const int64_t y = row_class(rp, row, bad_row);
  const double u = grad_scale[row * scale_stride];
  if (y < 0) {  // 0 * u is NaN when u is 1 / 0: 'mean' over only ignored rows, as torch
    if (threadIdx.x == 0) loss[row] = y == -1 ? 0.0 * u : NAN;
    fill_row(rp.c, y == -1, g);
    return;
  }
  const RowResult r = row_result(rp, row, y);
  if (threadIdx.x == 0) {
    loss[row] = u * r.loss;
    row_lse = r.lse;
    row_mass = r.qsum;
  }
  __syncthreads();
  write_row_grad(rp, row, y, static_cast<A>(u), static_cast<A>(row_mass), row_lse, g);
}

template <typename T>
__global__ void __launch_bounds__(kRowThreadsMax, 2)
    cross_entropy_backward_kernel(RowParams<T> rp, const double* __restrict__ grad_rows,
                                  const double* __restrict__ lse, const opmath_t<T>* __restrict__ target_mass,
                                  T* __restrict__ grad) {
  const int64_t row = blockIdx.x;
  T* g = grad + row * rp.c;
  const int64_t y = row_class(rp, row, nullptr);
  if (y < 0) {
    fill_row(rp.c, y == -1, g);
    return;
  }
  write_row_grad(rp, row, y, static_cast<opmath_t<T>>(grad_rows[row]), target_mass[row], lse[row], g);
}

// x[row, :] *= scale[row * scale_stride], skipping rows whose factor is exactly 1 (no write at all: the common
// backward of a loss whose gradient is 1 costs one launch). Blocks stride over the row's elements (x) and over
// rows (y); packs when every row starts 16-byte aligned.
template <typename T>
__global__ void scale_rows_kernel(T* __restrict__ x, int64_t rows, int64_t row_len, const double* __restrict__ scale,
                                  int64_t scale_stride, bool packed) {
  using A = opmath_t<T>;
  using P = Pack16<T>;
  constexpr int kPack = P::kSize;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const double f = scale[row * scale_stride];
    if (f == 1.0) continue;
    const A fa = static_cast<A>(f);
    T* r = x + row * row_len;
    int64_t done = 0;
    if (packed) {
      P* packs = reinterpret_cast<P*>(r);
      const int64_t n_packs = row_len / kPack;
      for (int64_t p = first; p < n_packs; p += stride) {
        P v = packs[p];
#pragma unroll
        for (int e = 0; e < kPack; ++e) v.v[e] = from_opmath<T>(to_opmath(v.v[e]) * fa);
        packs[p] = v;
      }
      done = n_packs * kPack;
    }
    for (int64_t j = done + first; j < row_len; j += stride) r[j] = from_opmath<T>(to_opmath(r[j]) * fa);
  }
}

// Threads per row: enough that each thread handles about 8 packs, between one warp and kRowThreadsMax.
int row_threads(int64_t c, int pack) {
  const int64_t want = cuda::ceil_div(cuda::ceil_div(c, pack), 8);
  int threads = 32;
  while (threads < kRowThreadsMax && threads < want) threads *= 2;
  return threads;
}

template <typename T>
RowParams<T> row_params(const CrossEntropyLaunch& ce, const void* extra_ptr) {
  using A = opmath_t<T>;
  RowParams<T> rp;
  rp.logits = static_cast<const T*>(ce.logits);
  rp.index = ce.probability_target ? nullptr : static_cast<const int64_t*>(ce.target);
  rp.prob = ce.probability_target ? static_cast<const T*>(ce.target) : nullptr;
  rp.weight = static_cast<const A*>(ce.weight);
  rp.c = ce.c;
  rp.ignore_index = ce.ignore_index;
  rp.keep = 1.0 - ce.label_smoothing;
  rp.spread = ce.label_smoothing / static_cast<double>(ce.c);
  rp.smooth = ce.probability_target || ce.label_smoothing > 0;
  rp.aligned = cuda::is_aligned16(ce.logits) && cuda::is_aligned16(extra_ptr) &&
               (!ce.probability_target || cuda::is_aligned16(ce.target));
  return rp;
}

// ---- elementwise losses ----

constexpr int kMapThreads = 256;
constexpr int kReduceThreads = 256;
constexpr int kMaxPartials = 1024;


template <typename T>
struct PointwiseArgs {
  const T* x;
  const T* t;
  const T* w;   // or null
  const T* pw;  // or null
  int64_t n;
  int64_t n_packs;  // 0 when a pointer is misaligned: every element then goes through the scalar loop
};

// weight * Loss::value (or ::grad) of element i in math type A.
template <typename A, bool kGrad, typename Loss, typename T>
__device__ __forceinline__ A loss_at(const Loss& loss, const PointwiseArgs<T>& a, int64_t i, A param) {
  const A x = static_cast<A>(to_opmath(a.x[i])), t = static_cast<A>(to_opmath(a.t[i]));
  const A pw = a.pw ? static_cast<A>(to_opmath(a.pw[i])) : A(1);
  const A v = kGrad ? loss.grad(x, t, pw, param) : loss.value(x, t, pw, param);
  return a.w ? v * static_cast<A>(to_opmath(a.w[i])) : v;
}

// Calls f(i, value) for every element: each thread takes 16-byte packs of every operand (grid-stride), then the
// elements past the last whole pack.
template <typename A, bool kGrad, typename Loss, typename T, typename F>
__device__ __forceinline__ void for_each_loss(const Loss& loss, const PointwiseArgs<T>& a, A param, F&& f) {
  using P = Pack16<T>;
  constexpr int kPack = P::kSize;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t p = first; p < a.n_packs; p += stride) {
    const P x = reinterpret_cast<const P*>(a.x)[p], t = reinterpret_cast<const P*>(a.t)[p];
    P w, pw;
    if (a.w) w = reinterpret_cast<const P*>(a.w)[p];
    if (a.pw) pw = reinterpret_cast<const P*>(a.pw)[p];
#pragma unroll
    for (int e = 0; e < kPack; ++e) {
      const A xv = static_cast<A>(to_opmath(x.v[e])), tv = static_cast<A>(to_opmath(t.v[e]));
      const A pwv = a.pw ? static_cast<A>(to_opmath(pw.v[e])) : A(1);
      A v = kGrad ? loss.grad(xv, tv, pwv, param) : loss.value(xv, tv, pwv, param);
      if (a.w) v *= static_cast<A>(to_opmath(w.v[e]));
      f(p * kPack + e, v);
    }
  }
  for (int64_t i = a.n_packs * kPack + first; i < a.n; i += stride) f(i, loss_at<A, kGrad>(loss, a, i, param));
}

template <typename T, typename Loss>
__global__ void __launch_bounds__(kMapThreads)
    pointwise_forward_kernel(Loss loss, PointwiseArgs<T> a, opmath_t<T> param, T* __restrict__ out) {
  using A = opmath_t<T>;
  for_each_loss<A, false>(loss, a, param, [&](int64_t i, A v) { out[i] = from_opmath<T>(v); });
}

template <typename T, typename Loss>
__global__ void __launch_bounds__(kMapThreads)
    pointwise_backward_kernel(Loss loss, PointwiseArgs<T> a, opmath_t<T> param, const T* __restrict__ grad_output,
                              bool grad_is_scalar, double norm, T* __restrict__ grad_input) {
  // double for a float32 loss of loss::PreciseGrad (see loss_math.h), rounded once.
  using A = std::conditional_t<loss::PreciseGrad<Loss>::value && std::is_same_v<T, float>, double, opmath_t<T>>;
  const A scalar_grad = grad_is_scalar ? static_cast<A>(to_opmath(grad_output[0]) * norm) : A(0);
  for_each_loss<A, true>(loss, a, static_cast<A>(param), [&](int64_t i, A v) {
    const A g = grad_is_scalar ? scalar_grad : static_cast<A>(to_opmath(grad_output[i]));
    grad_input[i] = from_opmath<T>(static_cast<opmath_t<T>>(v * g));
  });
}

__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[kReduceThreads / 32];
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

template <typename T, typename Loss>
__global__ void __launch_bounds__(kReduceThreads)
    pointwise_partial_sums_kernel(Loss loss, PointwiseArgs<T> a, reduce_math_t<T> param,
                                  double* __restrict__ partials) {
  using R = reduce_math_t<T>;
  R acc = 0;
  for_each_loss<R, false>(loss, a, param, [&](int64_t, R v) { acc += v; });
  const double total = block_sum(static_cast<double>(acc));
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    finish_sum_kernel(const double* __restrict__ partials, int n_partials, double scale, T* __restrict__ out) {
  double acc = 0;
  for (int k = threadIdx.x; k < n_partials; k += blockDim.x) acc += partials[k];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = from_opmath<T>(static_cast<opmath_t<T>>(total * scale));
}

template <typename T>
PointwiseArgs<T> pointwise_args(const PointwiseLaunch& p, const void* out) {
  PointwiseArgs<T> a{static_cast<const T*>(p.input), static_cast<const T*>(p.target),
                     static_cast<const T*>(p.weight), static_cast<const T*>(p.pos_weight), p.n, 0};
  const bool aligned = cuda::is_aligned16(p.input) && cuda::is_aligned16(p.target) &&
                       (!p.weight || cuda::is_aligned16(p.weight)) && (!p.pos_weight || cuda::is_aligned16(p.pos_weight)) &&
                       (!out || cuda::is_aligned16(out));
  if (aligned) a.n_packs = p.n / Pack16<T>::kSize;
  return a;
}

// Grid-stride grid for n elements: about two packs per thread, at most 2^16 blocks.
unsigned map_blocks(int64_t n, int pack) {
  const int64_t blocks = cuda::ceil_div(cuda::ceil_div(n, pack), static_cast<int64_t>(kMapThreads) * 2);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (1 << 16) ? (1 << 16) : blocks));
}

}  // namespace

void cross_entropy_forward_cuda(const CrossEntropyLaunch& ce, cudaStream_t stream) {
  if (ce.n <= 0) return;
  cuda::dispatch_dtype(ce.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const RowParams<T> rp = row_params<T>(ce, ce.logits);
    cross_entropy_forward_kernel<T><<<static_cast<unsigned>(ce.n), row_threads(ce.c, Pack16<T>::kSize), 0, stream>>>(
        rp, ce.loss, ce.row_weight, ce.lse, static_cast<opmath_t<T>*>(ce.target_mass), ce.bad_row);
  });
}

void cross_entropy_forward_grad_cuda(const CrossEntropyLaunch& ce, const double* grad_scale, bool scale_per_row,
                                     void* grad_logits, cudaStream_t stream) {
  if (ce.n <= 0) return;
  cuda::dispatch_dtype(ce.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const RowParams<T> rp = row_params<T>(ce, grad_logits);
    cross_entropy_forward_grad_kernel<T>
        <<<static_cast<unsigned>(ce.n), row_threads(ce.c, Pack16<T>::kSize), 0, stream>>>(
            rp, grad_scale, scale_per_row ? 1 : 0, ce.loss, ce.bad_row, static_cast<T*>(grad_logits));
  });
}

void cross_entropy_backward_cuda(const CrossEntropyLaunch& ce, const double* grad_rows, const double* lse,
                                 const void* target_mass, void* grad_logits, cudaStream_t stream) {
  if (ce.n <= 0 || ce.c <= 0) return;
  cuda::dispatch_dtype(ce.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const RowParams<T> rp = row_params<T>(ce, grad_logits);
    cross_entropy_backward_kernel<T><<<static_cast<unsigned>(ce.n), row_threads(ce.c, Pack16<T>::kSize), 0, stream>>>(
        rp, grad_rows, lse, static_cast<const opmath_t<T>*>(target_mass), static_cast<T*>(grad_logits));
  });
}

void scale_rows_cuda(DType dtype, void* x, int64_t rows, int64_t row_len, const double* scale,
                     bool scale_per_row, cudaStream_t stream) {
  if (rows <= 0 || row_len <= 0) return;
  cuda::dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int kPack = Pack16<T>::kSize;
    const bool packed = cuda::is_aligned16(x) && row_len % kPack == 0;
    // About two packs per thread along a row; rows spread over grid.y (at most 65535, the rest strided).
    const int64_t blocks_x = cuda::ceil_div(cuda::ceil_div(row_len, kPack), static_cast<int64_t>(kMapThreads) * 2);
    const dim3 grid(static_cast<unsigned>(blocks_x > (1 << 16) ? (1 << 16) : blocks_x),
                    static_cast<unsigned>(rows > 65535 ? 65535 : rows));
    scale_rows_kernel<T><<<grid, kMapThreads, 0, stream>>>(static_cast<T*>(x), rows, row_len, scale,
                                                           scale_per_row ? 1 : 0, packed);
  });
}

int64_t pointwise_loss_partials(int64_t n) {
  const int64_t blocks = cuda::ceil_div(n, static_cast<int64_t>(kReduceThreads) * 16);
  return blocks < 1 ? 1 : (blocks > kMaxPartials ? kMaxPartials : blocks);
}

void pointwise_loss_forward_cuda(const PointwiseLaunch& p, void* out, cudaStream_t stream) {
  if (p.n <= 0) return;
  cuda::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const PointwiseArgs<T> a = pointwise_args<T>(p, out);
    loss::visit_pointwise_loss(p.kind, [&](auto l) {
      pointwise_forward_kernel<T><<<map_blocks(p.n, Pack16<T>::kSize), kMapThreads, 0, stream>>>(
          l, a, static_cast<opmath_t<T>>(p.param), static_cast<T*>(out));
    });
  });
}

void pointwise_loss_reduce_cuda(const PointwiseLaunch& p, bool mean, double* partials, void* out,
                                cudaStream_t stream) {
  if (p.n <= 0) return;
  const int n_partials = static_cast<int>(pointwise_loss_partials(p.n));
  cuda::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const PointwiseArgs<T> a = pointwise_args<T>(p, nullptr);
    loss::visit_pointwise_loss(p.kind, [&](auto l) {
      pointwise_partial_sums_kernel<T><<<n_partials, kReduceThreads, 0, stream>>>(
          l, a, static_cast<reduce_math_t<T>>(p.param), partials);
    });
    finish_sum_kernel<T><<<1, kReduceThreads, 0, stream>>>(partials, n_partials,
                                                           mean ? 1.0 / static_cast<double>(p.n) : 1.0,
                                                           static_cast<T*>(out));
  });
}

void pointwise_loss_backward_cuda(const PointwiseLaunch& p, const void* grad_output, bool grad_is_scalar,
                                  double norm, void* grad_input, cudaStream_t stream) {
  if (p.n <= 0) return;
  cuda::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    PointwiseArgs<T> a = pointwise_args<T>(p, grad_input);
    if (!grad_is_scalar && !cuda::is_aligned16(grad_output)) a.n_packs = 0;
    loss::visit_pointwise_loss(p.kind, [&](auto l) {
      pointwise_backward_kernel<T><<<map_blocks(p.n, Pack16<T>::kSize), kMapThreads, 0, stream>>>(
          l, a, static_cast<opmath_t<T>>(p.param), static_cast<const T*>(grad_output), grad_is_scalar, norm,
          static_cast<T*>(grad_input));
    });
  });
}

}  // namespace fastops

// CUDA loss kernels (torch-free; see losses_launch.h).
//
// Cross entropy: one block per row. The forward reads the row once, keeping per thread the running softmax
// statistics (max m, s = sum exp(z - m), and the target terms qz = sum q (z - m), qsum = sum q, all rescaled when
// m grows), merges them across the block and writes the row's loss, lse and target mass; nothing [N, C]-sized is
// written. The backward reads the row once more and writes (qsum exp(z - lse) - q) * upstream. Rows are walked by
// one function (for_each_in_row): 16-byte packs when the base pointers are aligned (a few scalar head / tail
// elements per row when C * sizeof(T) is not a multiple of 16), else element by element. All indices are int64:
// N * C > 2^31 is normal. A class index out of range is recorded for the host (kernel_errors.h), never asserted.
//
// Elementwise losses: the loss_math.h formulas as functors of common/cuda_elementwise.cuh's map ('none', backward)
// and deterministic sum ('mean', 'sum').
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "common/cuda_elementwise.cuh"
#include "common/cuda_utils.cuh"
#include "common/reduce_math.h"
#include "losses/loss_math.h"
#include "losses/losses_launch.h"

namespace fastops {
namespace {

using cuda::from_opmath;
using cuda::opmath_t;
using cuda::Pack16;
using cuda::to_opmath;

// ---- bad data (kernel_errors.h) ----

// The claim count of every device's KernelErrorRecord (one per device: a __device__ variable lives in each device's
// copy of this module), handed to every recording kernel through its KernelErrorSink.
__device__ unsigned int kernel_error_claims;

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
  int64_t class_start, num_classes;  // the row's c columns are classes class_start .. of num_classes
  double keep, spread;  // 1 - eps and eps / num_classes
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

// Calls f(j, v) for every element j of row `row` (v = its logit in opmath): scalar head elements up to the first
// 16-byte boundary, 16-byte packs (row_unroll() in flight per thread), scalar tail; every element scalar when the
// base pointers are not aligned. When f returns a T, that is written to out[j] (pack-wide for the packs): the
// gradient row, which may be the logits row itself (each element is read by the thread that then writes it).
template <typename T, typename F>
__device__ __forceinline__ void for_each_in_row(const RowParams<T>& rp, int64_t row, T* out, F&& f) {
  using P = Pack16<T>;
  constexpr int kPack = P::kSize;
  constexpr bool kWrites = !std::is_void_v<decltype(f(int64_t{}, opmath_t<T>{}))>;
  auto visit = [&](int64_t j, opmath_t<T> v) {
    if constexpr (kWrites) {
      out[j] = f(j, v);
    } else {
      f(j, v);
    }
  };
  const int64_t c = rp.c;
  const T* z = rp.logits + row * c;
  int64_t head = c;
  if (rp.aligned) {
    const int64_t misalign = (row * c) % kPack;  // bases are aligned, so the row start decides
    head = misalign == 0 ? 0 : (kPack - misalign < c ? kPack - misalign : c);
  }
  const int64_t n_packs = (c - head) / kPack;
  const int64_t tail = head + n_packs * kPack;
  for (int64_t j = threadIdx.x; j < head; j += blockDim.x) visit(j, to_opmath(z[j]));
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
        if constexpr (kWrites) {
          P r;
#pragma unroll
          for (int e = 0; e < kPack; ++e) r.v[e] = f(head + p * kPack + e, to_opmath(buf[u].v[e]));
          reinterpret_cast<P*>(out + head)[p] = r;
        } else {
#pragma unroll
          for (int e = 0; e < kPack; ++e) f(head + p * kPack + e, to_opmath(buf[u].v[e]));
        }
      }
    }
  }
  for (int64_t j = tail + threadIdx.x; j < c; j += blockDim.x) visit(j, to_opmath(z[j]));
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
  for_each_in_row(rp, row, static_cast<T*>(nullptr), [&](int64_t j, A logit) {
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

// The class of `row` for index targets (of all num_classes; 0 for probabilities), or -1 for an ignored row and -2
// for a class out of range, which is recorded in `errors` when it has a record (raised as a Python error by the
// binding; never a device assert).
template <typename T>
__device__ __forceinline__ int64_t row_class(const RowParams<T>& rp, int64_t row, const KernelErrorSink& errors) {
  if (!rp.index) return 0;
  const int64_t y = rp.index[row];
  if (y == rp.ignore_index) return -1;
  if (y < 0 || y >= rp.num_classes) {
    if (threadIdx.x == 0 && errors.record != nullptr) {
      record_kernel_error(errors, {KernelErrorKind::CrossEntropyTarget, row, y, rp.num_classes, rp.ignore_index, 0.0});
    }
    return -2;
  }
  return y;
}

// Writes (b exp(z - lse) - q) * u over row `row` into g, y being the target's column (outside [0, c): no one-hot
// term, a block of classes without the target). g may be the logits row itself: each element is read by the
// thread that then writes it, and the target logit is not read again. As on the CPU (losses_cpu.cpp, write_grad):
// lse = hi + lo with hi in the math type, and b p_j u = exp(z_j - hi) f with the row factor f = b u exp(-lo) in
// double and rounded once; the target element and, for smoothed or probability targets, the element with p > 1/2
// are recomputed in double as b (p - 1) + (b - q), p - 1 = expm1(z - lse), where b p - q cancels.
template <typename T>
__device__ void write_row_grad(const RowParams<T>& rp, int64_t row, int64_t y, double u, double b, double lse_row,
                               T* g) {
  using A = opmath_t<T>;
  const int64_t c = rp.c;
  const A hi = static_cast<A>(lse_row);
  const A f = static_cast<A>(b * u * exp(-(lse_row - static_cast<double>(hi))));
  const A ua = static_cast<A>(u);
  const A one_hot =
      rp.index && y >= 0 && y < c ? static_cast<A>(rp.keep * (rp.weight ? rp.weight[y] : 1.0)) : A(0);
  const T* t_row = rp.prob ? rp.prob + row * c : nullptr;
  const A keep = static_cast<A>(rp.keep), spread = static_cast<A>(rp.spread);
  __shared__ A target_logit, peak_logit;
  __shared__ int64_t peak_col;  // the column with p > 1/2 of a smoothed or probability target row, or -1
  if (rp.smooth) {  // the same for every thread of the block
    if (threadIdx.x == 0) peak_col = -1;
    __syncthreads();
  }
  auto grad_at = [&](int64_t j, A v) -> T {
    A q = A(0);
    if (rp.smooth) {
      q = t_row ? to_opmath(t_row[j]) * keep + spread : spread;
      if (rp.weight) q *= __ldg(rp.weight + j);
    }
    if (j == y) {
      q += one_hot;
      target_logit = v;  // for the exact target term below (in place, g[y] may be overwriting it)
    }
    const A d = v - hi;
    if (rp.smooth && d > A(-0.6931471805599453)) {  // p > 1/2: one element per row
      peak_col = j;
      peak_logit = v;
    }
    return from_opmath<T>(fma(grad_exp<T>(d), f, -q * ua));
  };
  for_each_in_row(rp, row, g, grad_at);
  if (one_hot != A(0) || rp.smooth) {  // the same for every thread of the block (one row)
    // Done by one thread after the row, so that the row loop keeps its registers (in the loop the target term cost
    // the bf16 backward kernel 12 more spilled bytes).
    __syncthreads();
    if (threadIdx.x == 0) {
      if (rp.smooth && peak_col >= 0 && peak_col != y) {
        const double q_p = rp.template q_at<double>(t_row, peak_col);
        const double p_minus_1 = expm1(static_cast<double>(peak_logit) - lse_row);
        g[peak_col] = from_opmath<T>(static_cast<A>(fma(p_minus_1, b, b - q_p) * u));
      }
      if (one_hot != A(0)) {
        // The target class again as B (p_y - 1) + (B - q_y): B p_y - q_y from exp cancels where p_y is near 1 (300
        // ulps of a 0.02 float64 gradient in torch's CrossEntropyLoss module test, on the CPU).
        const double w = rp.weight ? static_cast<double>(rp.weight[y]) : 1.0;
        const double q_y = (rp.smooth ? rp.spread * w : 0.0) + rp.keep * w;
        g[y] = from_opmath<T>(static_cast<A>(fma(expm1(static_cast<double>(target_logit) - lse_row), b, b - q_y) * u));
      }
    }
  }
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
                                 KernelErrorSink errors) {
  using A = opmath_t<T>;
  const int64_t row = blockIdx.x;
  const int64_t y = row_class(rp, row, errors);
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
                                      double* __restrict__ loss, KernelErrorSink errors, T* grad) {
  using A = opmath_t<T>;
  __shared__ double row_lse, row_mass;
  const int64_t row = blockIdx.x;
  T* g = grad + row * rp.c;
  const int64_t y = row_class(rp, row, errors);
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
  write_row_grad(rp, row, y, u, row_mass, row_lse, g);
}

// `grad` may be the logits (cross_entropy_block_grad_ works in place), so it is not __restrict__.
template <typename T>
__global__ void __launch_bounds__(kRowThreadsMax, 2)
    cross_entropy_backward_kernel(RowParams<T> rp, const double* __restrict__ grad_rows,
                                  const double* __restrict__ lse, const opmath_t<T>* __restrict__ target_mass,
                                  T* grad) {
  const int64_t row = blockIdx.x;
  T* g = grad + row * rp.c;
  const int64_t y = row_class(rp, row, KernelErrorSink{});
  if (y < 0) {
    fill_row(rp.c, y == -1, g);
    return;
  }
  write_row_grad(rp, row, y - rp.class_start, grad_rows[row], static_cast<double>(target_mass[row]), lse[row], g);
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
  rp.class_start = ce.class_start;
  rp.num_classes = ce.num_classes;
  rp.keep = 1.0 - ce.label_smoothing;
  rp.spread = ce.label_smoothing / static_cast<double>(ce.num_classes);
  rp.smooth = ce.probability_target || ce.label_smoothing > 0;
  rp.aligned = cuda::is_aligned16(ce.logits) && cuda::is_aligned16(extra_ptr) &&
               (!ce.probability_target || cuda::is_aligned16(ce.target));
  return rp;
}

// ---- elementwise losses ----

constexpr int kMapThreads = 256;

// An elementwise loss as a functor of the elementwise map and sum: its operands arrive as x, t, then the weight and
// pos_weight when present (kW, kPw), then the upstream gradient when it is a tensor (kGradTensor); the value (or, with
// kGrad, d loss / d x times the upstream gradient) is computed in the type the operands arrive in (opmath for the
// map, reduce_math_t for the sum).
template <typename Loss, typename T, bool kGrad, bool kW, bool kPw, bool kGradTensor>
struct PointwiseOp {
  Loss loss;
  double param;
  const T* grad_scalar;  // kGrad without a gradient tensor: the 0-dim upstream gradient, times `norm`
  double norm;
  KernelErrorSink errors;  // binary_cross_entropy's forward: where an input outside [0, 1] is recorded

  template <typename V, typename... Rest>
  __device__ __forceinline__ V operator()(V x, V t, Rest... rest) const {
    if constexpr (std::is_same_v<Loss, loss::Bce> && !kGrad) {
      if (!(x >= V(0) && x <= V(1))) {  // NaN included, as torch's check
        if (errors.record != nullptr) {
          record_kernel_error(errors, {KernelErrorKind::BceInput, 0, 0, 0, 0, static_cast<double>(x)});
        }
        return V(NAN);
      }
    }
    const V extra[sizeof...(Rest) + 1] = {rest..., V(0)};
    const V w = kW ? extra[0] : V(1);
    const V pw = kPw ? extra[kW ? 1 : 0] : V(1);
    const V p = static_cast<V>(param);
    V v = kGrad ? loss.grad(x, t, pw, p) : loss.value(x, t, pw, p);
    if (kW) v *= w;
    if constexpr (kGrad) {
      v *= kGradTensor ? extra[int(kW) + int(kPw)]
                       : static_cast<V>(static_cast<double>(to_opmath(*grad_scalar)) * norm);
    }
    return v;
  }
};

// Calls run(op, inputs) with the PointwiseOp and the operand pointers of `p` (plus `grad` when not null).
template <bool kGrad, typename T, typename Run>
void with_pointwise_op(const PointwiseLaunch& p, const T* grad, const T* grad_scalar, double norm, Run&& run) {
  const T* x = static_cast<const T*>(p.input);
  const T* t = static_cast<const T*>(p.target);
  const T* w = static_cast<const T*>(p.weight);
  const T* pw = static_cast<const T*>(p.pos_weight);
  loss::visit_pointwise_loss(p.kind, [&](auto l) {
    using L = decltype(l);
    auto go = [&](auto has_w, auto has_pw, auto has_grad) {
      constexpr bool kW = decltype(has_w)::value, kPw = decltype(has_pw)::value, kG = decltype(has_grad)::value;
      constexpr int N = 2 + kW + kPw + kG;
      cuda::Inputs<T, N> in;
      int k = 0;
      in.p[k++] = x;
      in.p[k++] = t;
      if constexpr (kW) in.p[k++] = w;
      if constexpr (kPw) in.p[k++] = pw;
      if constexpr (kG) in.p[k++] = grad;
      run(PointwiseOp<L, T, kGrad, kW, kPw, kG>{l, p.param, grad_scalar, norm, p.errors}, in);
    };
    using Yes = std::true_type;
    using No = std::false_type;
    // Only binary_cross_entropy_with_logits has weight / pos_weight; only a backward has a gradient tensor.
    auto with_grad = [&](auto has_w, auto has_pw) {
      if (kGrad && grad != nullptr) {
        go(has_w, has_pw, std::integral_constant<bool, kGrad>{});
      } else {
        go(has_w, has_pw, No{});
      }
    };
    if constexpr (std::is_same_v<L, loss::BceWithLogits>) {
      if (w && pw) return with_grad(Yes{}, Yes{});
      if (w) return with_grad(Yes{}, No{});
      if (pw) return with_grad(No{}, Yes{});
    }
    with_grad(No{}, No{});
  });
}

}  // namespace

namespace {

KernelErrorRecord* kernel_error_record(int device) {
  // One record per device, in one allocation of mapped (and, with unified addressing, device-visible) pinned host
  // memory made on first use; never freed, as a kernel of any later moment may still write it.
  static int count = 0;
  static KernelErrorRecord* const records = [] {
    if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) return static_cast<KernelErrorRecord*>(nullptr);
    void* host = nullptr;
    if (cudaHostAlloc(&host, sizeof(KernelErrorRecord) * count, cudaHostAllocMapped | cudaHostAllocPortable) !=
        cudaSuccess) {
      cudaGetLastError();  // not sticky; leave no error for the caller's launch check
      return static_cast<KernelErrorRecord*>(nullptr);
    }
    std::memset(host, 0, sizeof(KernelErrorRecord) * count);
    return static_cast<KernelErrorRecord*>(host);
  }();
  return records != nullptr && device < count ? records + device : nullptr;
}

int current_device() {
  int device = 0;
  cudaGetDevice(&device);
  return device;
}

}  // namespace

KernelErrorSink kernel_error_sink() {
  constexpr int kMaxDevices = 64;
  // kernel_error_claims' address on each device, looked up once (the first lookup loads this module there).
  static std::atomic<unsigned int*> claims[kMaxDevices] = {};
  const int device = current_device();
  KernelErrorRecord* record = kernel_error_record(device);
  if (record == nullptr || device >= kMaxDevices) return {};
  unsigned int* c = claims[device].load(std::memory_order_acquire);
  if (c == nullptr) {
    void* address = nullptr;
    if (cudaGetSymbolAddress(&address, kernel_error_claims) != cudaSuccess) {
      cudaGetLastError();
      return {};
    }
    c = static_cast<unsigned int*>(address);
    claims[device].store(c, std::memory_order_release);
  }
  return {record, c};
}

bool kernel_error_pending() {
  const KernelErrorRecord* record = kernel_error_record(current_device());
  return record != nullptr && *reinterpret_cast<const volatile uint32_t*>(&record->posted) != record->consumed;
}

bool take_kernel_error(KernelError& error) {
  KernelErrorRecord* record = kernel_error_record(current_device());
  if (record == nullptr) return false;
  const uint32_t posted = *reinterpret_cast<volatile uint32_t*>(&record->posted);
  if (posted == record->consumed) return false;
  std::atomic_thread_fence(std::memory_order_acquire);  // the kernel wrote `error` before `posted`
  const volatile KernelError& recorded = record->error;
  error = {recorded.kind, recorded.index, recorded.value, recorded.classes, recorded.ignore_index, recorded.real};
  *reinterpret_cast<volatile uint32_t*>(&record->consumed) = posted;
  return true;
}

void cross_entropy_forward_cuda(const CrossEntropyLaunch& ce, cudaStream_t stream) {
  if (ce.n <= 0) return;
  cuda::dispatch_dtype(ce.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const RowParams<T> rp = row_params<T>(ce, ce.logits);
    cross_entropy_forward_kernel<T><<<static_cast<unsigned>(ce.n), row_threads(ce.c, Pack16<T>::kSize), 0, stream>>>(
        rp, ce.loss, ce.row_weight, ce.lse, static_cast<opmath_t<T>*>(ce.target_mass), ce.errors);
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
            rp, grad_scale, scale_per_row ? 1 : 0, ce.loss, ce.errors, static_cast<T*>(grad_logits));
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

int64_t pointwise_loss_partials(int64_t n) { return cuda::sum_partials(n); }

void pointwise_loss_forward_cuda(const PointwiseLaunch& p, void* out, cudaStream_t stream) {
  if (p.n <= 0) return;
  cuda::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    with_pointwise_op<false, T>(p, nullptr, nullptr, 1.0, [&](auto op, auto in) {
      cuda::launch_map(p.n, static_cast<T*>(out), in, op, stream);
    });
  });
}

void pointwise_loss_reduce_cuda(const PointwiseLaunch& p, bool mean, double* partials, void* out,
                                cudaStream_t stream) {
  if (p.n <= 0) return;
  const double scale = mean ? 1.0 / static_cast<double>(p.n) : 1.0;
  cuda::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    with_pointwise_op<false, T>(p, nullptr, nullptr, 1.0, [&](auto op, auto in) {
      cuda::launch_sum<reduce_math_t<T>>(p.n, in, op, scale, partials, static_cast<T*>(out), stream);
    });
  });
}

void pointwise_loss_backward_cuda(const PointwiseLaunch& p, const void* grad_output, bool grad_is_scalar,
                                  double norm, void* grad_input, cudaStream_t stream) {
  if (p.n <= 0) return;
  cuda::dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* grad = static_cast<const T*>(grad_output);
    with_pointwise_op<true, T>(p, grad_is_scalar ? nullptr : grad, grad_is_scalar ? grad : nullptr, norm,
                               [&](auto op, auto in) {
                                 cuda::launch_map(p.n, static_cast<T*>(grad_input), in, op, stream);
                               });
  });
}

}  // namespace fastops

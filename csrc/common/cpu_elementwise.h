// Flat elementwise map for the CPU: out[i] = op(in0[i], in1[i], ...) over n elements, parallel over cores with
// at::parallel_for and vectorised with at::vec::Vectorized. Math runs in at::opmath_type<T> (float for 16-bit
// types): 16-bit inputs are widened on load and rounded once on store.
//
// `op` is called with Vectorized<opmath> arguments for the vector body and with opmath scalars for the tail, so it
// is either one generic lambda or a struct with both overloads.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <vector>

namespace fastops::cpu {

using at::vec::Vectorized;

template <typename T>
using opmath_t = at::opmath_type<T>;

template <typename T>
inline constexpr bool is_reduced_float = std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;

// Lanewise mask ? if_true : if_false, for a mask of all-ones / all-zeros lanes (a comparison's result): V::blendv's
// order of arguments, spelled out. At the portable level Vectorized<T>::blendv is a loop that branches on each lane's
// mask, which random data mispredicts half the time (relu's backward on 2^24 float32 elements: 96 ms vs the forward's
// 27 ms); a bitwise select there is branch-free: if_false ^ ((if_false ^ if_true) & mask).
template <typename T>
inline Vectorized<T> select(const Vectorized<T>& mask, const Vectorized<T>& if_true, const Vectorized<T>& if_false) {
#if defined(CPU_CAPABILITY_DEFAULT)
  return if_false ^ ((if_false ^ if_true) & mask);
#else
  return Vectorized<T>::blendv(if_false, if_true, mask);
#endif
}

// v where mask is set (a comparison's all-ones lanes), +0 elsewhere (a NaN comparison gives 0): v & mask. Written as
// select(mask, v, 0), GCC made the AVX-512 kernels load v with a zero-masking load, which cannot issue before the
// comparison that gives its mask has its own operand from memory: hardtanh's backward on 2^24 float32 elements, one
// thread, took 7.9 ms against torch's 6.2 (a multiply, which reads as much, 6.0).
template <typename T>
inline Vectorized<T> keep_where(const Vectorized<T>& mask, const Vectorized<T>& v) {
  return v & mask;
}

// +0 where mask is set, v elsewhere (a NaN comparison leaves v): v ^ (v & mask), for the same reason.
template <typename T>
inline Vectorized<T> zero_where(const Vectorized<T>& mask, const Vectorized<T>& v) {
  return v ^ (v & mask);
}

// Lanewise comparisons, as masks for select: a < b, a <= b, a > b, a >= b (false where either is NaN). At the portable
// level Vectorized's comparison operators branch on each lane and memset it, which random signs mispredict; there
// the lanes are compared into integer masks in a loop the compiler vectorizes.
template <typename T, typename Compare>
inline Vectorized<T> compare(const Vectorized<T>& a, const Vectorized<T>& b, Compare compare_lane) {
#if defined(CPU_CAPABILITY_DEFAULT)
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(T) == sizeof(Bits));
  constexpr int kSize = Vectorized<T>::size();
  __at_align__ T lhs[kSize], rhs[kSize];
  __at_align__ Bits mask[kSize];
  a.store(lhs);
  b.store(rhs);
  for (int i = 0; i < kSize; ++i) mask[i] = compare_lane(lhs[i], rhs[i]) ? ~Bits(0) : Bits(0);
  return Vectorized<T>::loadu(mask);
#else
  return compare_lane(a, b);
#endif
}
template <typename T>
inline Vectorized<T> lt(const Vectorized<T>& a, const Vectorized<T>& b) {
  return compare(a, b, std::less<>());
}
template <typename T>
inline Vectorized<T> le(const Vectorized<T>& a, const Vectorized<T>& b) {
  return compare(a, b, std::less_equal<>());
}
template <typename T>
inline Vectorized<T> gt(const Vectorized<T>& a, const Vectorized<T>& b) {
  return compare(a, b, std::greater<>());
}
template <typename T>
inline Vectorized<T> ge(const Vectorized<T>& a, const Vectorized<T>& b) {
  return compare(a, b, std::greater_equal<>());
}

// One vector of opmath values (Vectorized<opmath_t<T>>::size() elements) read from T storage.
template <typename T>
inline Vectorized<opmath_t<T>> load_opmath(const T* p) {
  if constexpr (is_reduced_float<T>) {
    Vectorized<float> v;
    at::vec::load_to_float<T>(p, v);
    return v;
  } else {
    return Vectorized<T>::loadu(p);
  }
}

template <typename T>
inline void store_opmath(T* p, const Vectorized<opmath_t<T>>& v) {
  if constexpr (is_reduced_float<T>) {
    at::vec::convert_from_float<T>(v, v).store(p, Vectorized<float>::size());
  } else {
    v.store(p);
  }
}

// Two consecutive vectors of opmath values stored as 2 * Vectorized<opmath_t<T>>::size() elements of T. For 16-bit
// types that is one full-width Vectorized<T> store (as torch's kernels do) instead of two half-width masked ones.
template <typename T>
inline void store_opmath2(T* p, const Vectorized<opmath_t<T>>& lo, const Vectorized<opmath_t<T>>& hi) {
  if constexpr (is_reduced_float<T>) {
    at::vec::convert_from_float<T>(lo, hi).store(p);
  } else {
    lo.store(p);
    hi.store(p + Vectorized<T>::size());
  }
}

// Work below this many elements stays on one thread: spawning threads costs more than it saves.
constexpr int64_t kElementwiseGrain = 32768;

// How far ahead (one 4 KiB page) the map prefetches its inputs. Large outputs are fresh pages, so the loop takes a
// page fault every 4 KiB of output; the hardware prefetchers stop at page boundaries and restart cold after each
// fault, and a compute-heavy body (gelu, silu) issues too few loads to hide that. Prefetching a page ahead keeps the
// input stream in flight: bfloat16 gelu at 2^24 elements went from 32.1 ms to 17.9 ms (torch 20.3 ms), silu from
// 27.7 to 15.9 ms (torch 17.9), float32 gelu from 31.8 to 29.6 ms (torch 31.1); relu unchanged (one thread,
// torch.utils.benchmark min of 3 medians; /tmp bench script in the cpu-gelu report). Distances of 2 and 8 KiB
// measured the same. A memory-bound body (a few comparisons) does not prefetch (Op::kPrefetchInputs false): there the
// extra prefetches cost more than they hide; hardtanh's backward on 2^24 float32 elements with its output memory
// reused (no faults), one AMD EPYC thread, took 6.6 ms with them and 5.6-6.2 without (torch 5.6-6.0).
template <typename T>
inline constexpr int64_t kPrefetchElements = 4096 / sizeof(T);

// The map's tasks split the range at multiples of two vectors, so which elements the scalar tail computes (the
// last n mod the vector width) depends on n alone: the scalar functions round differently from the vector ones (up
// to 4.8e-7 apart in float32 gelu), and a split at a thread's chunk boundary made results depend on the thread count.
template <typename T, typename Op, typename... In>
void map_elementwise(int64_t n, T* out, const Op& op, const In*... in) {
  static_assert((std::is_same_v<T, In> && ...), "all operands share the output's dtype");
  constexpr int64_t kWidth = Vectorized<opmath_t<T>>::size();
  constexpr int64_t kStep = 2 * kWidth;
  at::parallel_for(0, (n + kStep - 1) / kStep, kElementwiseGrain / kStep, [&](int64_t step0, int64_t step1) {
    const int64_t begin = step0 * kStep, end = std::min(n, step1 * kStep);
    int64_t i = begin;
    // Two independent vectors per iteration: long dependency chains (erf/exp polynomials) of one overlap the other.
    for (; i + kStep <= end; i += kStep) {
      if constexpr (Op::kPrefetchInputs) {
        (__builtin_prefetch(in + i + kPrefetchElements<T>), ...);  // never faults, even past the end
      }
      const auto r0 = op(load_opmath(in + i)...);
      const auto r1 = op(load_opmath(in + i + kWidth)...);
      store_opmath2(out + i, r0, r1);
    }
    for (; i + kWidth <= end; i += kWidth) store_opmath(out + i, op(load_opmath(in + i)...));
    for (; i < end; ++i) out[i] = static_cast<T>(op(static_cast<opmath_t<T>>(in[i])...));
  });
}

// The type column sums are taken in: wider than the data (double for 16/32-bit, x87 long double for float64).
template <typename T>
using column_sum_t = std::conditional_t<std::is_same_v<T, double>, long double, double>;

// Rows per partial sum of a column reduction: fixed, not derived from the thread count, so that the order of every
// sum depends on the shape alone and column sums are bitwise the same on any number of threads.
constexpr int64_t kColumnSumChunkRows = 64;

// The column sums of a rows x cols matrix, in Acc: add_rows(r0, r1, sum) adds rows [r0, r1) into sum (cols values,
// zeroed) in row order; it is called for chunks of kColumnSumChunkRows rows, in parallel, each chunk into its own
// partial row, and the partial rows are then added in chunk order (in parallel over columns) and handed to
// out(j, total). Chunked sums also round less than one running sum down thousands of rows.
template <typename Acc, typename AddRows, typename Out>
void column_sums(int64_t rows, int64_t cols, const AddRows& add_rows, const Out& out) {
  const int64_t chunks = (rows + kColumnSumChunkRows - 1) / kColumnSumChunkRows;
  std::vector<Acc> partial(static_cast<size_t>(chunks * cols), Acc(0));
  const int64_t chunk_elems = kColumnSumChunkRows * std::max<int64_t>(cols, 1);
  at::parallel_for(0, chunks, std::max<int64_t>(1, kElementwiseGrain / chunk_elems), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      add_rows(c * kColumnSumChunkRows, std::min(rows, (c + 1) * kColumnSumChunkRows), partial.data() + c * cols);
    }
  });
  at::parallel_for(0, cols, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(chunks, 1)),
                   [&](int64_t j0, int64_t j1) {
                     for (int64_t j = j0; j < j1; ++j) {
                       Acc total = 0;
                       for (int64_t c = 0; c < chunks; ++c) total += partial[c * cols + j];
                       out(j, total);
                     }
                   });
}

}  // namespace fastops::cpu

// CPU GEMM: cache-blocked and packed, with a register-tiled at::vec micro-kernel, parallel with at::parallel_for.
//
// Loop nest (the classic BLIS/GotoBLAS one): for each panel of B (a kNC-wide column range, as many kKC-deep K slices
// as fit in kPanelBytes), the panel is packed once (in parallel) into kNR-wide slivers; then tasks over (kMC-row
// block of A, share of the panel's slivers) each pack their A block into kMR-tall slivers, one K slice at a time,
// and run the micro-kernel, which keeps a kMR x kNR tile of C in vector registers across the whole K slice (kMR x 2
// FMAs per pair of B loads). A small output over a long K splits K into chunks instead (run_split). How the loop nest
// is threaded, and why it opens so few parallel regions: "Threading" below.
// Packing is where the layout flags are resolved (transposed operands cost nothing extra) and where 16-bit inputs
// are widened to float; edges are zero-padded in the packed buffers so the micro-kernel never branches.
// Accumulation is in at::opmath_type<T>: partial sums across K slices go to C itself for float/double and to a
// float workspace for 16-bit types, so the output is rounded exactly once, after the bias is added. When accumulating
// (GemmArgs::accumulate), the old C joins the sum on the first K slice, so later slices carry it along and it is
// added exactly once.
//
// bfloat16 runs on AMX tiles where the CPU has them (cpu_amx.h): the same loop nest, with operands packed as raw bf16
// into AMX slivers (B in VNNI pairs) and a 32 x 32 tile micro-kernel whose fp32 block goes through the same
// store_tile epilogue, so the bias, the accumulate flag and the single rounding behave exactly as above. A CPU with
// AVX512-BF16 but no AMX runs the same slivers through a vector dot-product micro-kernel.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "activations/activations.h"
#include "common/cpu_elementwise.h"
#include "common/env.h"
#include "matmul/cpu_amx.h"
#include "matmul/matmul.h"

namespace fastops {
namespace {

using at::vec::Vectorized;

// FASTOPS_CPU_GEMM_FALLBACK=1 turns the AMX path off (the portable kernel runs instead).
bool cpu_gemm_fallback_requested() { return env_flag("FASTOPS_CPU_GEMM_FALLBACK"); }

// A buffer reused by one thread across calls: packing must not pay for a fresh allocation (and its page faults)
// on every block.
template <typename T>
T* thread_buffer(std::vector<T>& storage, size_t n) {
  if (storage.size() < n) storage.resize(n);
  return storage.data();
}

// Runs worker(next) on each of torch's threads, where next() hands out the tasks 0 .. n - 1, each to whichever thread
// asks first, then -1 (dynamic scheduling: see "Threading" in CpuGemm). One at::parallel_for region.
template <typename Worker>
void run_tasks(int64_t n, const Worker& worker) {
  std::atomic<int64_t> counter{0};
  const auto next = [&]() -> int64_t {
    const int64_t t = counter.fetch_add(1, std::memory_order_relaxed);
    return t < n ? t : -1;
  };
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) { worker(next); });
}

// Whether the vector multiply-adds of this CPU level round once (fused). The portable x86-64 level has no FMA, so
// at::vec::fmadd rounds the product and the sum apart; there the micro-kernel accumulates 16/32-bit products in
// double instead (a float product is exact in double), which keeps its error below MKL's: in float32 the rounded
// multiply-adds measured 3.4x MKL's error against float64 on the dA of a 67x300x45 product (MKL limited to SSE4.2).
#if defined(CPU_CAPABILITY_DEFAULT) && (defined(__x86_64__) || defined(__i386__)) && !defined(__FMA__)
constexpr bool kFusedMultiplyAdd = false;
#else
constexpr bool kFusedMultiplyAdd = true;
#endif

template <typename T>
using gemm_acc_t = std::conditional_t<kFusedMultiplyAdd, at::opmath_type<T>, double>;

template <typename T>
struct CpuGemm {
  using Acc = gemm_acc_t<T>;
  using V = Vectorized<Acc>;
  static constexpr int64_t kVec = V::size();
  // Register tile: 2 vectors wide; as tall as the register file allows next to 2 B vectors and 1 broadcast
  // (32 registers with AVX-512: 12 x 2 accumulators; 16 with AVX2: 6 x 2).
  static constexpr int64_t kNR = 2 * kVec;
  static constexpr int64_t kMR = sizeof(V) >= 64 ? 12 : 6;
  // Cache blocking: a kKC x kNR sliver of B stays in L1 across the micro-kernels of one A block, the kMC x kKC
  // block of A in L2, the kKC x kNC panel of B in L3.
  static constexpr int64_t kKC = 256;
  static constexpr int64_t kMC = kMR * (sizeof(Acc) == 8 ? 8 : 12);
  static constexpr int64_t kNC = 2048;

  const GemmArgs& g;
  const T* a;
  const T* b;
  T* c;
  const Acc* bias;  // widened to Acc once, or nullptr
  Acc* ws;          // partial sums across K slices (C itself when T == Acc)
  int64_t ldw;

  Acc load_a(int64_t i, int64_t p) const {
    return static_cast<Acc>(g.a.trans ? a[p * g.a.ld + i] : a[i * g.a.ld + p]);
  }
  Acc load_b(int64_t p, int64_t j) const {
    return static_cast<Acc>(g.b.trans ? b[j * g.b.ld + p] : b[p * g.b.ld + j]);
  }

  // A[i0 : i0 + mc, p0 : p0 + kc] into kMR-row slivers, each stored k-major (kMR values per k), zero-padded.
  void pack_a(Acc* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc) const {
    for (int64_t s = 0; s < mc; s += kMR) {
      const int64_t rows = std::min(kMR, mc - s);
      for (int64_t r = 0; r < kMR; ++r) {
        Acc* out = dst + r;
        if (r < rows) {
          for (int64_t p = 0; p < kc; ++p) out[p * kMR] = load_a(i0 + s + r, p0 + p);
        } else {
          for (int64_t p = 0; p < kc; ++p) out[p * kMR] = Acc(0);
        }
      }
      dst += kMR * kc;
    }
  }

  // One kNR-column sliver of B[p0 : p0 + kc, j0 : j0 + cols] stored k-major (kNR values per k), zero-padded.
  void pack_b_sliver(Acc* dst, int64_t p0, int64_t kc, int64_t j0, int64_t cols) const {
    if (!g.b.trans && cols == kNR) {  // rows of B are contiguous: a straight (widening) copy per k
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = b + (p0 + p) * g.b.ld + j0;
        for (int64_t j = 0; j < kNR; ++j) dst[p * kNR + j] = static_cast<Acc>(src[j]);
      }
      return;
    }
    int64_t p_done = 0;
    if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>) {
      if (g.b.trans && cols == kNR) {
        // B's columns are contiguous (B stored transposed): 16 x 16 blocks transposed in vector registers. Element
        // by element, [8, 2^18] x [2^18, 64] with such a B took 6.0 ms against torch's 4.3 (AMD EPYC, 2 threads).
        for (; p_done + 16 <= kc; p_done += 16) {
          for (int64_t j = 0; j < kNR; j += 16) {
            at::vec::transpose_mxn<float, 16, 16>(b + (j0 + j) * g.b.ld + p0 + p_done, g.b.ld,
                                                  dst + p_done * kNR + j, kNR);
          }
        }
      }
    }
    for (int64_t j = 0; j < kNR; ++j) {
      if (j < cols) {
        for (int64_t p = p_done; p < kc; ++p) dst[p * kNR + j] = load_b(p0 + p, j0 + j);
      } else {
        for (int64_t p = 0; p < kc; ++p) dst[p * kNR + j] = Acc(0);
      }
    }
  }

  // tile[kMR][kNR] = A sliver . B sliver over kc steps; all accumulators live in registers. The sum over k is
  // taken in chunks of kChunk steps, each chunk's sum added into the (L1-resident) tile: long K then rounds like a
  // sum of sqrt-sized pieces rather than one running sum (as accurate as MKL's kernels) for ~1% more work.
  static constexpr int64_t kChunk = 32;

  static void micro_kernel(int64_t kc, const Acc* pa, const Acc* pb, Acc* tile) {
    V acc0[kMR], acc1[kMR];
    for (int64_t c0 = 0; c0 < kc; c0 += kChunk) {
#pragma GCC unroll 16
      for (int64_t r = 0; r < kMR; ++r) acc0[r] = acc1[r] = V(Acc(0));
      const int64_t c1 = std::min(kc, c0 + kChunk);
      for (int64_t p = c0; p < c1; ++p) {
        const V b0 = V::loadu(pb), b1 = V::loadu(pb + kVec);
#pragma GCC unroll 16
        for (int64_t r = 0; r < kMR; ++r) {
          const V av(pa[r]);
          acc0[r] = at::vec::fmadd(av, b0, acc0[r]);
          acc1[r] = at::vec::fmadd(av, b1, acc1[r]);
        }
        pa += kMR;
        pb += kNR;
      }
      if (c0 == 0) {
#pragma GCC unroll 16
        for (int64_t r = 0; r < kMR; ++r) {
          acc0[r].store(tile + r * kNR);
          acc1[r].store(tile + r * kNR + kVec);
        }
      } else {
#pragma GCC unroll 16
        for (int64_t r = 0; r < kMR; ++r) {
          (V::loadu(tile + r * kNR) + acc0[r]).store(tile + r * kNR);
          (V::loadu(tile + r * kNR + kVec) + acc1[r]).store(tile + r * kNR + kVec);
        }
      }
    }
  }

  // Where one K slice's tile goes: `ws` (rows ldw apart) holds the partial sums of the slices before the last. The
  // first slice starts the sum (with the old C when old_c: an accumulating GEMM adds it exactly once); the last ends
  // it: C = sum + bias, rounded to T once.
  struct Slice {
    Acc* ws;
    int64_t ldw;
    bool first, last, old_c;
  };

  // Merges a micro-kernel tile (rows kNR apart) into rows [i, i + rows) and columns [j, j + cols) of the sum.
  void store_tile(const Acc* tile, int64_t i, int64_t rows, int64_t j, int64_t cols, const Slice& s) const {
    if constexpr (std::is_same_v<Acc, cpu::opmath_t<T>>) {  // a double accumulator takes the scalar loop below
      if (cols == kNR) {  // full-width tile: whole vectors
        for (int64_t r = 0; r < rows; ++r) {
          const Acc* t = tile + r * kNR;
          Acc* w = s.first && s.last ? nullptr : s.ws + (i + r) * s.ldw + j;
          T* out = c + (i + r) * g.ldc + j;
          for (int64_t q = 0; q < kNR; q += kVec) {
            V v = V::loadu(t + q);
            if (!s.first) {
              v = v + V::loadu(w + q);
            } else if (s.old_c) {
              v = v + cpu::load_opmath(out + q);
            }
            if (s.last) {
              if (bias) v = v + V::loadu(bias + j + q);
              cpu::store_opmath(out + q, v);
            } else {
              v.store(w + q);
            }
          }
        }
        return;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const Acc* t = tile + r * kNR;
      Acc* w = s.first && s.last ? nullptr : s.ws + (i + r) * s.ldw + j;
      T* out = c + (i + r) * g.ldc + j;
      for (int64_t q = 0; q < cols; ++q) {
        Acc v = t[q];
        if (!s.first) {
          v += w[q];
        } else if (s.old_c) {
          v += static_cast<Acc>(out[q]);
        }
        if (s.last) {
          if (bias) v += bias[j + q];
          out[q] = static_cast<T>(v);
        } else {
          w[q] = v;
        }
      }
    }
  }

  // m == 1, a vector-matrix product (bound by reading B once, so packing would not pay), summed in double for every
  // dtype: products of 16/32-bit values are exact there, and each output is rounded once, so a float32 row comes out
  // correctly rounded but for ties closer than k double ulps. A one-row product is where rounding shows most (a
  // single token's logits, whose errors the softmax gradient carries into every weight-gradient element):
  // linear_cross_entropy's float32 weight gradient over one token (1 x 33 -> 31 classes, the property test that
  // failed on an AVX2-only AMD EPYC) had 1.47e-7 error against float64 with float partial sums, above
  // the rule's 1.42e-7 (torch there: 4.13e-8, reproduced here with MKL_CBWR=COMPATIBLE); with double sums 4.65e-8.
  // Each output's sum runs in an order fixed by k alone, whatever the split into tasks.
  void run_row() const {
    const T* a_row = a;
    std::vector<T> gathered;
    if (g.a.trans && g.k > 1) {  // a column of a wider matrix: gathered once
      gathered.resize(static_cast<size_t>(g.k));
      for (int64_t p = 0; p < g.k; ++p) gathered[p] = a[p * g.a.ld];
      a_row = gathered.data();
    }
    const auto finish = [&](int64_t j, double sum) {
      if (g.accumulate) sum += static_cast<double>(c[j]);
      if (bias) sum += static_cast<double>(bias[j]);
      c[j] = static_cast<T>(sum);
    };
    if (g.b.trans) {
      // B's columns are contiguous (a Linear weight): one dot product per output, in kLanes interleaved sums (the
      // compiler keeps them in vector registers; enough of them to cover the adds' latency), added pairwise at the
      // end.
      constexpr int64_t kLanes = 32;
      at::parallel_for(0, g.n, 16, [&](int64_t j0, int64_t j1) {
        for (int64_t j = j0; j < j1; ++j) {
          const T* col = b + j * g.b.ld;
          double lane[kLanes] = {};
          int64_t p = 0;
          for (; p + kLanes <= g.k; p += kLanes) {
            for (int64_t l = 0; l < kLanes; ++l) {
              lane[l] += static_cast<double>(a_row[p + l]) * static_cast<double>(col[p + l]);
            }
          }
          for (int64_t l = 0; p + l < g.k; ++l) {
            lane[l] += static_cast<double>(a_row[p + l]) * static_cast<double>(col[p + l]);
          }
          for (int64_t width = kLanes / 2; width > 0; width /= 2) {
            for (int64_t l = 0; l < width; ++l) lane[l] += lane[l + width];
          }
          finish(j, lane[0]);
        }
      });
      return;
    }
    // B's rows are contiguous: each task keeps one running sum per output of its kRowCols columns and streams the rows
    // of B through them, reading each row segment contiguously (walking down a narrow column strip instead touched a
    // new page per k: [1, 4096] x [4096, 4096] took 53 ms against torch's 8.6).
    constexpr int64_t kRowCols = 512;
    at::parallel_for(0, (g.n + kRowCols - 1) / kRowCols, 1, [&](int64_t t0, int64_t t1) {
      std::vector<double> sums(static_cast<size_t>(kRowCols));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j0 = t * kRowCols, cols = std::min(kRowCols, g.n - j0);
        std::fill(sums.begin(), sums.end(), 0.0);
        double* acc = sums.data();
        for (int64_t p = 0; p < g.k; ++p) {
          const double av = static_cast<double>(a_row[p]);
          const T* row = b + p * g.b.ld + j0;
          for (int64_t q = 0; q < cols; ++q) acc[q] += av * static_cast<double>(row[q]);
        }
        for (int64_t q = 0; q < cols; ++q) finish(j0 + q, acc[q]);
      }
    });
  }

  // ---- AMX path (bfloat16 only; see cpu_amx.h for the sliver layouts) ----
  // K slice: the C tiles stay in tile registers across a whole slice, so a deep one spends less on storing them and
  // on the epilogue (and K <= 1024 needs no workspace); a 32 x kAmxKC B sliver (64 KiB) then lives in L2 next to
  // the kAmxMC x kAmxKC block of A (256 KiB).
  static constexpr int64_t kAmxKC = 1024;
  static constexpr int64_t kAmxMC = 128;
  // Whether this instantiation has the bf16 micro-kernels on AMX slivers: bf16, with the float tile of store_tile as
  // wide as a C block (the AVX-512 level).
  static constexpr bool kAmxCapable =
      std::is_same_v<T, c10::BFloat16> && std::is_same_v<Acc, float> && kNR == amx::kSliver;
  // The micro-kernel run() takes: AMX tiles on an AMX CPU, AVX512-BF16 dot products on a CPU with those but no AMX,
  // else the FMA kernel on widened floats (always, with FASTOPS_CPU_GEMM_FALLBACK=1).
  enum class Micro { Fma, Amx, Bf16Dot };
  static Micro micro_wanted() {
    if constexpr (kAmxCapable) {
      if (!cpu_gemm_fallback_requested()) {
        if (amx::amx_bf16_available()) return Micro::Amx;
        if (amx::avx512_bf16_available()) return Micro::Bf16Dot;
      }
    }
    return Micro::Fma;
  }

  // A[i0 : i0 + mc, p0 : p0 + kc] into 32-row AMX slivers, zero-padded to 32 rows and to kcp (a multiple of 32) k.
  void pack_a_amx(uint16_t* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int64_t kcp) const {
    const uint16_t* src = reinterpret_cast<const uint16_t*>(a);
    const int64_t ld = g.a.ld;
    for (int64_t s = 0; s < mc; s += amx::kSliver, dst += amx::kSliver * kcp) {
      const int64_t rows = std::min(amx::kSliver, mc - s);
      for (int64_t kb = 0; kb * amx::kBlockK < kcp; ++kb) {
        const int64_t p = p0 + kb * amx::kBlockK, depth = std::min(amx::kBlockK, p0 + kc - p);
        uint16_t* blk = dst + kb * amx::kBlockElems;  // [row][k], 32 k per row
        if (g.a.trans && rows == amx::kSliver && depth == amx::kBlockK) {  // a full block: vectorised transpose
          amx::pack_a_cols(src + p * ld + i0 + s, ld, blk);
          continue;
        }
        if (rows < amx::kSliver || depth < amx::kBlockK) std::fill(blk, blk + amx::kBlockElems, uint16_t{0});
        if (!g.a.trans) {  // rows of A are contiguous in k: a copy per row
          for (int64_t r = 0; r < rows; ++r) std::copy_n(src + (i0 + s + r) * ld + p, depth, blk + r * amx::kBlockK);
        } else {  // columns of A are contiguous: read along i, write with stride 32
          for (int64_t q = 0; q < depth; ++q) {
            const uint16_t* col = src + (p + q) * ld + i0 + s;
            for (int64_t r = 0; r < rows; ++r) blk[r * amx::kBlockK + q] = col[r];
          }
        }
      }
    }
  }

  // One 32-column AMX sliver of B[p0 : p0 + kc, j0 : j0 + cols] in VNNI pairs, zero-padded to 32 columns and kcp k.
  void pack_b_amx(uint16_t* dst, int64_t p0, int64_t kc, int64_t kcp, int64_t j0, int64_t cols) const {
    const uint16_t* src = reinterpret_cast<const uint16_t*>(b);
    const int64_t ld = g.b.ld;
    for (int64_t kb = 0; kb * amx::kBlockK < kcp; ++kb) {
      const int64_t p = p0 + kb * amx::kBlockK, depth = std::min(amx::kBlockK, p0 + kc - p);
      uint16_t* blk = dst + kb * amx::kBlockElems;
      if (cols == amx::kSliver && depth == amx::kBlockK) {  // a full block: vectorised interleave or transpose
        if (g.b.trans) {
          amx::pack_b_cols_vnni(src + j0 * ld + p, ld, blk);
        } else {
          amx::pack_b_rows_vnni(src + p * ld + j0, ld, blk);
        }
        continue;
      }
      if (cols < amx::kSliver || depth < amx::kBlockK) std::fill(blk, blk + amx::kBlockElems, uint16_t{0});
      // Element (k = p + q, column j0 + col) sits at [col / 16][q / 2][col % 16][q % 2].
      auto at = [blk](int64_t q, int64_t col) -> uint16_t& {
        return blk[(col / 16) * (amx::kBlockElems / 2) + (q / 2) * 32 + (col % 16) * 2 + (q % 2)];
      };
      if (!g.b.trans) {
        for (int64_t q = 0; q < depth; ++q) {
          const uint16_t* row = src + (p + q) * ld + j0;
          for (int64_t col = 0; col < cols; ++col) at(q, col) = row[col];
        }
      } else {  // B is stored transposed (a Linear weight): each column is contiguous in k
        for (int64_t col = 0; col < cols; ++col) {
          const uint16_t* column = src + (j0 + col) * ld + p;
          for (int64_t q = 0; q < depth; ++q) at(q, col) = column[q];
        }
      }
    }
  }

  // ---- The loop nest, for either micro-kernel ----
  // What the loop nest needs of a micro-kernel: its blocking, its packed operand layouts and its per-thread setup.
  struct FmaKernel {
    using Packed = Acc;
    static constexpr int64_t kKc = kKC, kMc = kMC, kNr = kNR, kMr = kMR;
    static int64_t padded(int64_t kc) { return kc; }  // k of a packed sliver
    static void begin() {}
    static void end() {}
    static void pack_a(const CpuGemm& gemm, Packed* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
      gemm.pack_a(dst, i0, mc, p0, kc);
    }
    static void pack_b(const CpuGemm& gemm, Packed* dst, int64_t p0, int64_t kc, int64_t j0, int64_t cols) {
      gemm.pack_b_sliver(dst, p0, kc, j0, cols);
    }
    static void micro(int64_t kc, const Packed* pa, const Packed* pb, Acc* tile) { micro_kernel(kc, pa, pb, tile); }
  };

  struct AmxKernel {
    using Packed = uint16_t;
    static constexpr int64_t kKc = kAmxKC, kMc = kAmxMC, kNr = amx::kSliver, kMr = amx::kSliver;
    static int64_t padded(int64_t kc) { return (kc + amx::kBlockK - 1) / amx::kBlockK * amx::kBlockK; }
    static void begin() { amx::begin(); }
    static void end() { amx::end(); }
    static void pack_a(const CpuGemm& gemm, Packed* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
      gemm.pack_a_amx(dst, i0, mc, p0, kc, padded(kc));
    }
    static void pack_b(const CpuGemm& gemm, Packed* dst, int64_t p0, int64_t kc, int64_t j0, int64_t cols) {
      gemm.pack_b_amx(dst, p0, kc, padded(kc), j0, cols);
    }
    static void micro(int64_t kc, const Packed* pa, const Packed* pb, Acc* tile) {
      amx::micro_kernel(padded(kc) / amx::kBlockK, pa, pb, tile, amx::kSliver);
    }
  };

  // The AMX slivers and blocking, multiplied by AVX512-BF16 vector instructions (no tile state to set up).
  struct Bf16DotKernel : AmxKernel {
    static void begin() {}
    static void end() {}
    static void micro(int64_t kc, const uint16_t* pa, const uint16_t* pb, Acc* tile) {
      amx::dot_micro_kernel(AmxKernel::padded(kc) / amx::kBlockK, pa, pb, tile, amx::kSliver);
    }
  };

  // Threading. Every at::parallel_for region ends in a barrier, and a thread that the OS deschedules (other processes
  // on the machine: data loader workers, a second job) stalls every region it is part of. The first version opened
  // two regions per 256-deep K slice (pack B, then compute), 32768 of them for an [8, 2^22] x [2^22, 64] product,
  // which took 64 s against torch's 0.85 s with 2 threads on a loaded machine. So: few regions per GEMM (two per
  // panel of packed B below; one plus the final sum for a split K), and inside a region the threads claim tasks one
  // at a time from a shared counter (run_tasks) instead of taking fixed shares, so a descheduled thread holds up only
  // the task it is in while the others take the rest.
  //
  // Results never depend on the thread count: how the work is cut into tasks changes only who computes a tile, not
  // the order of its sums, and whether K is split is decided by the shape alone.

  // Packed B per panel: as many K slices of a kNC-wide panel as fit, packed in one region and then consumed by one
  // region of compute tasks (L3-resident, as the single 256 x 2048 slice was).
  static constexpr int64_t kPanelBytes = int64_t{8} << 20;
  // Compute tasks wanted per thread: enough that a descheduled thread's share is taken up by the others.
  static constexpr int64_t kTasksPerThread = 4;

  // The loop nest over panels of B: a region packs the panel (tasks: K slice x sliver), then a region of tasks
  // (row block x share of the panel's slivers) each packs its A block per K slice and runs the micro-kernels.
  template <typename K>
  void run_panels() const {
    using P = typename K::Packed;
    const int64_t m = g.m, n = g.n, k = g.k;
    const int64_t row_blocks = (m + K::kMc - 1) / K::kMc;
    const int64_t total_slices = (k + K::kKc - 1) / K::kKc;
    static thread_local std::vector<P> b_storage;
    for (int64_t j0 = 0; j0 < n; j0 += kNC) {
      const int64_t nc = std::min(kNC, n - j0);
      const int64_t slivers = (nc + K::kNr - 1) / K::kNr;
      const int64_t slice_elems = slivers * K::kNr * K::padded(K::kKc);  // one packed K slice of the panel
      const int64_t panel_slices = std::clamp<int64_t>(
          kPanelBytes / static_cast<int64_t>(slice_elems * sizeof(P)), 1, total_slices);
      P* pb = thread_buffer(b_storage, static_cast<size_t>(panel_slices * slice_elems));
      const int64_t shares =
          std::min(slivers, (kTasksPerThread * at::get_num_threads() + row_blocks - 1) / row_blocks);
      for (int64_t first_slice = 0; first_slice < total_slices; first_slice += panel_slices) {
        const int64_t slices = std::min(panel_slices, total_slices - first_slice);
        run_tasks(slices * slivers, [&](const auto& next) {
          for (int64_t t; (t = next()) >= 0;) {
            const int64_t sl = t / slivers, s = t % slivers;
            const int64_t p0 = (first_slice + sl) * K::kKc, kc = std::min(K::kKc, k - p0);
            K::pack_b(*this, pb + sl * slice_elems + s * K::kNr * K::padded(kc), p0, kc, j0 + s * K::kNr,
                      std::min(K::kNr, nc - s * K::kNr));
          }
        });
        run_tasks(row_blocks * shares, [&](const auto& next) {
          static thread_local std::vector<P> a_storage;
          P* pa = thread_buffer(a_storage, static_cast<size_t>(K::kMc * K::padded(K::kKc)));
          alignas(64) Acc tile[K::kMr * kNR];
          K::begin();
          for (int64_t t; (t = next()) >= 0;) {
            const int64_t block = t / shares, share = t % shares;
            const int64_t i0 = block * K::kMc, mc = std::min(K::kMc, m - i0);
            const int64_t s_begin = slivers * share / shares, s_end = slivers * (share + 1) / shares;
            for (int64_t sl = 0; sl < slices; ++sl) {
              const int64_t p0 = (first_slice + sl) * K::kKc, kc = std::min(K::kKc, k - p0), kcp = K::padded(kc);
              const Slice dst{ws, ldw, p0 == 0, p0 + kc == k, g.accumulate};
              K::pack_a(*this, pa, i0, mc, p0, kc);
              for (int64_t s = s_begin; s < s_end; ++s) {
                const int64_t j = j0 + s * K::kNr, cols = std::min(K::kNr, n - j);
                const P* pbs = pb + sl * slice_elems + s * K::kNr * kcp;
                for (int64_t r = 0; r < mc; r += K::kMr) {
                  K::micro(kc, pa + r * kcp, pbs, tile);
                  store_tile(tile, i0 + r, std::min(K::kMr, mc - r), j, cols, dst);
                }
              }
            }
          }
          K::end();
        });
      }
    }
  }

  // When K is split (run_split), and how finely.
  static constexpr int64_t kSplitMinK = 4096;          // k per chunk, at least: the final sum is < 1/4096 of the work
  static constexpr int64_t kSplitMaxChunks = 64;
  static constexpr int64_t kSplitMaxOutput = 1 << 16;  // m * n, at most: the partials take at most 16 MiB (float)

  static int64_t k_chunks(const GemmArgs& args) {
    if (args.m == 1 || args.n > kNC || args.m * args.n > kSplitMaxOutput) return 1;
    return std::clamp<int64_t>(args.k / kSplitMinK, 1, kSplitMaxChunks);
  }

  // The chunk size, in whole K slices, for about `chunks` chunks.
  template <typename K>
  static int64_t split_chunk(int64_t k, int64_t chunks) {
    return ((k + chunks - 1) / chunks + K::kKc - 1) / K::kKc * K::kKc;
  }

  // Each K chunk's product, [chunk][m][n]: tasks (chunk x row block) pack their own slices of A and B and sum their
  // chunk into their own partial tile.
  template <typename K>
  std::vector<Acc> split_partials(int64_t chunk) const {
    using P = typename K::Packed;
    const int64_t m = g.m, n = g.n, k = g.k, chunks = (k + chunk - 1) / chunk;
    const int64_t row_blocks = (m + K::kMc - 1) / K::kMc, slivers = (n + K::kNr - 1) / K::kNr;
    std::vector<Acc> partial(static_cast<size_t>(chunks * m * n));
    run_tasks(chunks * row_blocks, [&](const auto& next) {
      static thread_local std::vector<P> a_storage, b_storage;
      P* pa = thread_buffer(a_storage, static_cast<size_t>(K::kMc * K::padded(K::kKc)));
      P* pb = thread_buffer(b_storage, static_cast<size_t>(slivers * K::kNr * K::padded(K::kKc)));
      alignas(64) Acc tile[K::kMr * kNR];
      K::begin();
      for (int64_t t; (t = next()) >= 0;) {
        const int64_t part = t / row_blocks, block = t % row_blocks;
        const int64_t i0 = block * K::kMc, mc = std::min(K::kMc, m - i0);
        const int64_t p_begin = part * chunk, p_end = std::min(k, p_begin + chunk);
        for (int64_t p0 = p_begin; p0 < p_end; p0 += K::kKc) {
          const int64_t kc = std::min(K::kKc, p_end - p0), kcp = K::padded(kc);
          const Slice dst{partial.data() + part * m * n, n, p0 == p_begin, false, false};
          for (int64_t s = 0; s < slivers; ++s) {
            K::pack_b(*this, pb + s * K::kNr * kcp, p0, kc, s * K::kNr, std::min(K::kNr, n - s * K::kNr));
          }
          K::pack_a(*this, pa, i0, mc, p0, kc);
          for (int64_t s = 0; s < slivers; ++s) {
            for (int64_t r = 0; r < mc; r += K::kMr) {
              K::micro(kc, pa + r * kcp, pb + s * K::kNr * kcp, tile);
              store_tile(tile, i0 + r, std::min(K::kMr, mc - r), s * K::kNr, std::min(K::kNr, n - s * K::kNr), dst);
            }
          }
        }
      }
      K::end();
    });
    return partial;
  }

  // The micro-kernel work of an m x n output: its tiles, padded to whole tiles.
  template <typename K>
  static int64_t padded_tiles(int64_t m, int64_t n) {
    return (m + K::kMr - 1) / K::kMr * K::kMr * ((n + K::kNr - 1) / K::kNr * K::kNr);
  }

  // Split K: a small output over a long K (the weight gradient of a small layer over many tokens) has too few tiles
  // to share among threads, and the panel loop would need one panel per few thousand k. K is cut into chunks instead
  // (split_partials), and the partial products are added in chunk order at the end. The chunks depend on the shape
  // only.
  template <typename K>
  void run_split(int64_t chunks) const {
    const int64_t m = g.m, n = g.n, k = g.k;
    const int64_t chunk = split_chunk<K>(k, chunks);
    chunks = (k + chunk - 1) / chunk;
    // An output narrower than a tile (a layer with few inputs, [64, 2^18] x [2^18, 8]) would fill a quarter of
    // each tile's columns: its partials are computed transposed, C^T = op(B)^T op(A)^T, on tiles it fills (the
    // partials' layout is ours; only the final sum writes C). The same sums in the same order either way. That
    // product took 8.6 ms, now 3.9 against torch's 6.4 (AMD EPYC, avx512, 2 threads). Only for outputs narrower
    // than a tile: the transposed product packs a row-major B as a column-major A, element by element, which cost
    // more than it saved on [16, 2^18] x [2^18, 64] at avx2 (5.0 -> 8.4 ms).
    const bool transposed = n < K::kNr && m <= kNC && padded_tiles<K>(n, m) < padded_tiles<K>(m, n);
    std::vector<Acc> partial;
    if (transposed) {
      GemmArgs gt = g;
      std::swap(gt.m, gt.n);
      gt.a = {g.b.data, g.b.ld, !g.b.trans, 0};
      gt.b = {g.a.data, g.a.ld, !g.a.trans, 0};
      partial = CpuGemm{gt, b, a, nullptr, nullptr, nullptr, 0}.template split_partials<K>(chunk);
    } else {
      partial = split_partials<K>(chunk);
    }
    const auto part = [&](int64_t q, int64_t i, int64_t j) {
      return transposed ? partial[(q * n + j) * m + i] : partial[(q * m + i) * n + j];
    };
    // C = the chunks' sums added in chunk order (+ the old C) + bias, rounded once.
    at::parallel_for(0, m, std::max<int64_t>(1, cpu::kElementwiseGrain / (chunks * n)), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        T* out = c + i * g.ldc;
        for (int64_t j = 0; j < n; ++j) {
          Acc v = part(0, i, j);
          for (int64_t q = 1; q < chunks; ++q) v += part(q, i, j);
          if (g.accumulate) v += static_cast<Acc>(out[j]);
          if (bias) v += bias[j];
          out[j] = static_cast<T>(v);
        }
      }
    });
  }

  template <typename K>
  void run_with() const {
    const int64_t chunks = k_chunks(g);
    return chunks > 1 ? run_split<K>(chunks) : run_panels<K>();
  }

  void run(Micro micro) const {
    if (g.m == 1) return run_row();
    if constexpr (kAmxCapable) {
      if (micro == Micro::Amx) return run_with<AmxKernel>();
      if (micro == Micro::Bf16Dot) return run_with<Bf16DotKernel>();
    }
    return run_with<FmaKernel>();
  }

  // All batches. Many small products run one per thread; large ones one after another, each parallel inside.
  static void run_batched(const GemmArgs& g) {
    const T* a0 = static_cast<const T*>(g.a.data);
    const T* b0 = static_cast<const T*>(g.b.data);
    T* c0 = static_cast<T*>(g.c);
    std::vector<Acc> bias;
    if (g.bias != nullptr) {
      const T* src = static_cast<const T*>(g.bias);
      bias.assign(src, src + g.n);
    }
    // No workspace when C can hold the partial sums (or there is a single K slice, or the row path or a split K
    // runs).
    const Micro micro = micro_wanted();
    const bool direct =
        std::is_same_v<T, Acc> || g.k <= (micro == Micro::Fma ? kKC : kAmxKC) || g.m == 1 || k_chunks(g) > 1;
    auto one = [&](int64_t i, std::vector<Acc>& workspace) {
      CpuGemm self{g, a0 + i * g.a.batch_stride, b0 + i * g.b.batch_stride, c0 + i * g.batch_stride_c,
                   bias.empty() ? nullptr : bias.data(), nullptr, g.ldc};
      if constexpr (std::is_same_v<T, Acc>) {
        self.ws = self.c;
      } else if (!direct) {
        workspace.resize(static_cast<size_t>(g.m * g.n));
        self.ws = workspace.data();
        self.ldw = g.n;
      }
      self.run(micro);
    };
    const bool small = g.m * g.n * g.k <= (int64_t{1} << 18);
    if (g.batch > 1 && small) {
      at::parallel_for(0, g.batch, 1, [&](int64_t i0, int64_t i1) {
        std::vector<Acc> workspace;
        for (int64_t i = i0; i < i1; ++i) one(i, workspace);
      });
    } else {
      std::vector<Acc> workspace;
      for (int64_t i = 0; i < g.batch; ++i) one(i, workspace);
    }
  }
};

// out[j] = sum over rows of g[:, j], in cpu::column_sum_t (exact enough to match torch's pairwise sums for every
// dtype), in fixed chunks of rows: the same policy as bias_act's grad_bias, independent of the thread count.
template <typename T>
void column_sum_cpu(const T* g, int64_t rows, int64_t cols, T* out) {
  using Acc = cpu::column_sum_t<T>;
  cpu::column_sums<Acc>(
      rows, cols,
      [&](int64_t r0, int64_t r1, Acc* sum) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* row = g + r * cols;
          for (int64_t j = 0; j < cols; ++j) sum[j] += static_cast<Acc>(row[j]);
        }
      },
      [&](int64_t j, Acc total) { out[j] = static_cast<T>(total); });
}

struct CpuBackend {
  // The CPU GEMM has no activation epilogue: linear_act runs the GEMM, then the bias + activation pass.
  struct Plan {
    bool fuses_activation = false;
  };
  static Plan plan(const GemmArgs&) { return {}; }

  static void run(const Plan&, const GemmArgs& args) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scalar_type_of(args.dtype), "fastops_gemm_cpu",
                                    [&] { CpuGemm<scalar_t>::run_batched(args); });
  }

  static void bias_act(Activation act, const at::Tensor& x, const at::Tensor* bias, at::Tensor& y) {
    bias_act_cpu(act, x, bias, y);
  }

  static void column_sum(const at::Tensor& g, at::Tensor& out) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "fastops_column_sum_cpu", [&] {
      column_sum_cpu(g.const_data_ptr<scalar_t>(), g.size(0), g.size(1), out.data_ptr<scalar_t>());
    });
  }
};

at::Tensor matmul_cpu(const at::Tensor& a, const at::Tensor& b) { return matmul_forward<CpuBackend>(a, b); }

at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return linear_forward<CpuBackend>(x, weight, bias);
}

std::tuple<at::Tensor, at::Tensor> linear_act_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                  const std::optional<at::Tensor>& bias, c10::string_view act,
                                                  bool store_pre) {
  return linear_act_forward<CpuBackend>(x, weight, bias, act, store_pre);
}

at::Tensor bias_grad_cpu(const at::Tensor& grad_output) { return bias_grad_forward<CpuBackend>(grad_output); }

void matmul_accumulate_cpu(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  matmul_accumulate_forward<CpuBackend>(out, a, b);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CPU, m) {
  m.impl("matmul", &matmul_cpu);
  m.impl("linear", &linear_cpu);
  m.impl("linear_act", &linear_act_cpu);
  m.impl("bias_grad", &bias_grad_cpu);
  m.impl("matmul_accumulate_", &matmul_accumulate_cpu);
}

}  // namespace fastops

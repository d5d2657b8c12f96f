// CPU GEMM: cache-blocked and packed, with a register-tiled at::vec micro-kernel, parallel with at::parallel_for.
//
// Loop nest (the classic BLIS/GotoBLAS one): for each kNC-wide column panel of C and each kKC-deep slice of K,
// B's kKC x kNC panel is packed once (in parallel) into kNR-wide slivers; then tasks over (kMC-row block of A,
// share of the panel's slivers) each pack their A block into kMR-tall slivers and run the micro-kernel, which
// keeps a kMR x kNR tile of C in vector registers across the whole K slice (kMR x 2 FMAs per pair of B loads).
// Packing is where the layout flags are resolved (transposed operands cost nothing extra) and where 16-bit inputs
// are widened to float; edges are zero-padded in the packed buffers so the micro-kernel never branches.
// Accumulation is in at::opmath_type<T>: partial sums across K slices go to C itself for float/double and to a
// float workspace for 16-bit types, so the output is rounded exactly once, after the bias is added. When accumulating
// (GemmArgs::accumulate), the old C joins the sum on the first K slice, so later slices carry it along and it is
// added exactly once.
//
// bfloat16 runs on AMX tiles where the CPU has them (cpu_amx.h): the same loop nest, with operands packed as raw bf16
// into AMX slivers (B in VNNI pairs) and a 32 x 32 tile micro-kernel whose fp32 block goes through the same
// store_tile epilogue, so the bias, the accumulate flag and the single rounding behave exactly as above.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
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
    for (int64_t j = 0; j < kNR; ++j) {
      if (j < cols) {
        for (int64_t p = 0; p < kc; ++p) dst[p * kNR + j] = load_b(p0 + p, j0 + j);
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

  // Merges a micro-kernel tile into C rows [i, i + rows) and columns [j, j + cols): adds the partial sums of the
  // earlier K slices (or, on the first slice of an accumulating GEMM, the old C), and on the last slice the bias,
  // rounding to T once.
  void store_tile(const Acc* tile, int64_t i, int64_t rows, int64_t j, int64_t cols, bool first, bool last) const {
    if constexpr (std::is_same_v<Acc, cpu::opmath_t<T>>) {  // a double accumulator takes the scalar loop below
      if (cols == kNR) {  // full-width tile: whole vectors
        for (int64_t r = 0; r < rows; ++r) {
          const Acc* t = tile + r * kNR;
          Acc* w = first && last ? nullptr : ws + (i + r) * ldw + j;
          T* out = c + (i + r) * g.ldc + j;
          for (int64_t q = 0; q < kNR; q += kVec) {
            V v = V::loadu(t + q);
            if (!first) {
              v = v + V::loadu(w + q);
            } else if (g.accumulate) {
              v = v + cpu::load_opmath(out + q);
            }
            if (last) {
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
      Acc* w = first && last ? nullptr : ws + (i + r) * ldw + j;
      T* out = c + (i + r) * g.ldc + j;
      for (int64_t q = 0; q < cols; ++q) {
        Acc v = t[q];
        if (!first) {
          v += w[q];
        } else if (g.accumulate) {
          v += static_cast<Acc>(out[q]);
        }
        if (last) {
          if (bias) v += bias[j + q];
          out[q] = static_cast<T>(v);
        } else {
          w[q] = v;
        }
      }
    }
  }

  // m == 1, a vector-matrix product (bound by reading B, so packing would not pay). Each output is summed in
  // kLanes interleaved partial sums added at the end: a long dot product then rounds about as little as BLAS's
  // gemv, where one running sum over k would lose up to kLanes times more.
  void run_row() const {
    constexpr int64_t kLanes = 8, kCols = 16;
    at::parallel_for(0, (g.n + kCols - 1) / kCols, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t j0 = blk * kCols, cols = std::min(kCols, g.n - j0);
        Acc part[kLanes][kCols] = {};
        for (int64_t p = 0; p < g.k; ++p) {
          const Acc av = load_a(0, p);
          Acc* lane = part[p % kLanes];
          for (int64_t q = 0; q < cols; ++q) lane[q] += av * load_b(p, j0 + q);
        }
        for (int64_t q = 0; q < cols; ++q) {
          Acc sum = 0;
          for (int64_t l = 0; l < kLanes; ++l) sum += part[l][q];
          if (g.accumulate) sum += static_cast<Acc>(c[j0 + q]);
          if (bias) sum += bias[j0 + q];
          c[j0 + q] = static_cast<T>(sum);
        }
      }
    });
  }

  // ---- AMX path (bfloat16 only; see cpu_amx.h for the sliver layouts) ----
  // K slice: the C tiles stay in tile registers across a whole slice, so a deep one spends less on storing them and
  // on the epilogue (and K <= 1024 needs no workspace); a 32 x kAmxKC B sliver (64 KiB) then lives in L2 next to
  // the kAmxMC x kAmxKC block of A (256 KiB).
  static constexpr int64_t kAmxKC = 1024;
  static constexpr int64_t kAmxMC = 128;
  // Whether this instantiation has the AMX path: bf16, with the float tile of store_tile as wide as a C block (the
  // AVX-512 level), and whether run() takes it: on an AMX CPU.
  static constexpr bool kAmxCapable =
      std::is_same_v<T, c10::BFloat16> && std::is_same_v<Acc, float> && kNR == amx::kSliver;
  static bool amx_wanted() {
    if constexpr (kAmxCapable) {
      return amx::amx_bf16_available() && !cpu_gemm_fallback_requested();
    }
    return false;
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

  // The loop nest of run() with AMX slivers (measured numbers: at amx::micro_kernel in cpu_amx.h).
  void run_amx() const {
    const int64_t m = g.m, n = g.n, k = g.k;
    static thread_local std::vector<uint16_t> b_storage;
    for (int64_t j0 = 0; j0 < n; j0 += kNC) {
      const int64_t nc = std::min(kNC, n - j0);
      const int64_t slivers = (nc + amx::kSliver - 1) / amx::kSliver;
      for (int64_t p0 = 0; p0 < k; p0 += kAmxKC) {
        const int64_t kc = std::min(kAmxKC, k - p0);
        const int64_t kcp = (kc + amx::kBlockK - 1) / amx::kBlockK * amx::kBlockK;
        const bool first = p0 == 0, last = p0 + kc == k;
        uint16_t* pb = thread_buffer(b_storage, static_cast<size_t>(slivers * amx::kSliver * kcp));
        at::parallel_for(0, slivers, 1, [&](int64_t s0, int64_t s1) {
          for (int64_t s = s0; s < s1; ++s) {
            pack_b_amx(pb + s * amx::kSliver * kcp, p0, kc, kcp, j0 + s * amx::kSliver,
                       std::min(amx::kSliver, nc - s * amx::kSliver));
          }
        });
        const int64_t row_blocks = (m + kAmxMC - 1) / kAmxMC;
        const int64_t shares = std::min(slivers, std::max<int64_t>(1, at::get_num_threads() / row_blocks));
        at::parallel_for(0, row_blocks * shares, 1, [&](int64_t t0, int64_t t1) {
          static thread_local std::vector<uint16_t> a_storage;
          uint16_t* pa = thread_buffer(a_storage, static_cast<size_t>(kAmxMC * kcp));
          alignas(64) Acc tile[amx::kSliver * amx::kSliver];
          int64_t packed_block = -1;
          amx::begin();
          for (int64_t task = t0; task < t1; ++task) {
            const int64_t block = task / shares, share = task % shares;
            const int64_t i0 = block * kAmxMC, mc = std::min(kAmxMC, m - i0);
            if (block != packed_block) {
              pack_a_amx(pa, i0, mc, p0, kc, kcp);
              packed_block = block;
            }
            const int64_t s_begin = slivers * share / shares, s_end = slivers * (share + 1) / shares;
            for (int64_t s = s_begin; s < s_end; ++s) {
              const int64_t j = j0 + s * amx::kSliver, cols = std::min(amx::kSliver, n - j);
              for (int64_t r = 0; r < mc; r += amx::kSliver) {
                amx::micro_kernel(kcp / amx::kBlockK, pa + r * kcp, pb + s * amx::kSliver * kcp, tile,
                                  amx::kSliver);
                store_tile(tile, i0 + r, std::min(amx::kSliver, mc - r), j, cols, first, last);
              }
            }
          }
          amx::end();
        });
      }
    }
  }

  void run(bool use_amx) const {
    const int64_t m = g.m, n = g.n, k = g.k;
    if (m == 1) return run_row();
    if constexpr (kAmxCapable) {
      if (use_amx) return run_amx();
    }
    static thread_local std::vector<Acc> b_storage;
    for (int64_t j0 = 0; j0 < n; j0 += kNC) {
      const int64_t nc = std::min(kNC, n - j0);
      const int64_t slivers = (nc + kNR - 1) / kNR;
      for (int64_t p0 = 0; p0 < k; p0 += kKC) {
        const int64_t kc = std::min(kKC, k - p0);
        const bool first = p0 == 0, last = p0 + kc == k;
        Acc* pb = thread_buffer(b_storage, static_cast<size_t>(slivers * kNR * kc));
        at::parallel_for(0, slivers, 1, [&](int64_t s0, int64_t s1) {
          for (int64_t s = s0; s < s1; ++s) {
            pack_b_sliver(pb + s * kNR * kc, p0, kc, j0 + s * kNR, std::min(kNR, nc - s * kNR));
          }
        });
        // Tasks: every kMC block of rows, times enough column shares of the panel to give each thread work.
        const int64_t row_blocks = (m + kMC - 1) / kMC;
        const int64_t shares = std::min(slivers, std::max<int64_t>(1, at::get_num_threads() / row_blocks));
        at::parallel_for(0, row_blocks * shares, 1, [&](int64_t t0, int64_t t1) {
          static thread_local std::vector<Acc> a_storage;
          Acc* pa = thread_buffer(a_storage, static_cast<size_t>(kMC * kc));
          alignas(64) Acc tile[kMR * kNR];
          int64_t packed_block = -1;
          for (int64_t task = t0; task < t1; ++task) {
            const int64_t block = task / shares, share = task % shares;
            const int64_t i0 = block * kMC, mc = std::min(kMC, m - i0);
            if (block != packed_block) {
              pack_a(pa, i0, mc, p0, kc);
              packed_block = block;
            }
            const int64_t s_begin = slivers * share / shares, s_end = slivers * (share + 1) / shares;
            for (int64_t s = s_begin; s < s_end; ++s) {
              const int64_t j = j0 + s * kNR, cols = std::min(kNR, n - j);
              for (int64_t r = 0; r < mc; r += kMR) {
                micro_kernel(kc, pa + r * kc, pb + s * kNR * kc, tile);
                store_tile(tile, i0 + r, std::min(kMR, mc - r), j, cols, first, last);
              }
            }
          }
        });
      }
    }
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
    // No workspace when C can hold the partial sums (or there is a single K slice, or the row path runs).
    const bool use_amx = amx_wanted();
    const bool direct = std::is_same_v<T, Acc> || g.k <= (use_amx ? kAmxKC : kKC) || g.m == 1;
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
      self.run(use_amx);
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

// out[j] = sum over rows of g[:, j], accumulated in double (exact enough to match torch's pairwise sums for every
// dtype): each thread sums a band of rows into its own partial vector, the partials are added at the end.
template <typename T>
void column_sum_cpu(const T* g, int64_t rows, int64_t cols, T* out) {
  const int threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * cols, 0.0);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    double* acc = partial.data() + static_cast<size_t>(at::get_thread_num()) * cols;
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = g + r * cols;
      for (int64_t j = 0; j < cols; ++j) acc[j] += static_cast<double>(row[j]);
    }
  });
  for (int64_t j = 0; j < cols; ++j) {
    double s = 0;
    for (int t = 0; t < threads; ++t) s += partial[static_cast<size_t>(t) * cols + j];
    out[j] = static_cast<T>(s);
  }
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

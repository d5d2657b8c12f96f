// Torch-free AMX (Advanced Matrix Extensions) pieces of the bfloat16 CPU GEMM: run-time detection, the tile
// configuration and a 32 x 32 micro-kernel on bf16 tiles with fp32 accumulation (TDPBF16PS); and, for CPUs with
// AVX512-BF16 but no AMX, a micro-kernel on the same packed slivers with vector dot products (VDPBF16PS).
//
// These instructions are enabled per function (target attributes), not by global compiler flags, so the extension
// still loads and runs its fallback kernel on any x86-64 (or other) CPU; amx_bf16_available() and
// avx512_bf16_available() are the run-time gates.
//
// Operand layouts the micro-kernel reads (one K block = 32 values of k; tiles are 16 rows of 64 bytes):
//   A sliver (32 rows): [k block][row 0..31][k 0..31]               -> two 16 x 32 A tiles per K block
//   B sliver (32 cols): [k block][col half 0..1][k pair 0..15][col 0..15][2]   (VNNI: the two k of a pair adjacent)
// so each K block is 1024 bf16 values of A and of B, and a 16-row half of either is the next 512.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    (defined(__clang__) || __GNUC__ >= 11)
#define FASTOPS_HAVE_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define FASTOPS_HAVE_AMX 0
#endif

namespace fastops {
namespace amx {

constexpr int64_t kBlockK = 32;     // k per tile multiply (16 pairs)
constexpr int64_t kSliver = 32;     // rows of an A sliver, columns of a B sliver, side of the C block
constexpr int64_t kBlockElems = 1024;  // bf16 values of one sliver per K block

#if FASTOPS_HAVE_AMX

// True when the CPU has AMX-TILE + AMX-BF16 (+ AVX-512F, which every AMX CPU has and the packing uses) and Linux
// grants this process the tile-data state. Linux keeps AMX's 8 KiB register state off by default; asking once per
// process (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA) enables it for every thread.
inline bool amx_bf16_available() {
  static const bool available = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool avx512f = ebx & (1u << 16), amx_bf16 = edx & (1u << 22), amx_tile = edx & (1u << 24);
    if (!(avx512f && amx_bf16 && amx_tile)) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return available;
}

// Tile configuration (palette 1): tiles 0-3 are the four 16 x 16 fp32 C tiles, 4-5 the A tiles, 6-7 the B tiles;
// all are 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

constexpr TileConfig make_tile_config() {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  return cfg;
}

// A constant in memory rather than a local: GCC 12's _tile_loadconfig tells the compiler that its asm reads only the
// first 8 bytes of the configuration, so the stores that fill a local one may be dropped as dead.
inline constexpr TileConfig kTileConfig = make_tile_config();

// The configuration is per thread state: every thread that runs micro-kernels calls begin() first and end() after
// (which drops the tile state, so the OS does not save and restore 8 KiB at each context switch).
__attribute__((target("amx-tile"))) inline void begin() { _tile_loadconfig(&kTileConfig); }

__attribute__((target("amx-tile"))) inline void end() { _tile_release(); }

// c[32][ldc] = A sliver . B sliver over kblocks K blocks (a full overwrite: the caller merges it into C). The 2 x 2
// C tiles stay in tile registers across the whole K range; each K block loads 2 A and 2 B tiles (4 KiB) for four
// 16 x 16 x 32 products, loads interleaved with the products that need them. The slivers of a deep K slice do not
// both fit in L1, and the tile loads stalled on L2 (perf: ~40% of the kernel's samples on them), so the lines of the
// K block after next are prefetched: bf16 matmul 1024^3 1.79 -> 1.49 ms on 2 cores.
// Measured (2 cores of an AMX Xeon, torch.utils.benchmark, 2 threads; fastops / torch oneDNN): bf16 matmul 1024^3
// 1.49 / 1.36 ms (was 20.8 ms on the fp32 FMA kernel), 512^3 0.23 / 0.18 ms (was 2.6), 256x1024x512 0.27-0.29 /
// 0.13 ms (was 1.25); Linear 256x512 -> 1024 (weight read transposed) 0.27 / 0.14 ms.
__attribute__((target("amx-tile,amx-bf16,sse"))) inline void micro_kernel(int64_t kblocks, const uint16_t* pa,
                                                                         const uint16_t* pb, float* c, int64_t ldc) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    // Prefetching past the end of a sliver is harmless: prefetches never fault.
    for (int line = 0; line < kBlockElems * 2 / 64; ++line) {
      _mm_prefetch(reinterpret_cast<const char*>(pa + 2 * kBlockElems) + 64 * line, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(pb + 2 * kBlockElems) + 64 * line, _MM_HINT_T0);
    }
    _tile_loadd(4, pa, 64);
    _tile_loadd(6, pb, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, pb + kBlockElems / 2, 64);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, pa + kBlockElems / 2, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
    pa += kBlockElems;
    pb += kBlockElems;
  }
  const int64_t stride = ldc * static_cast<int64_t>(sizeof(float));
  _tile_stored(0, c, stride);
  _tile_stored(1, c + 16, stride);
  _tile_stored(2, c + 16 * ldc, stride);
  _tile_stored(3, c + 16 * ldc + 16, stride);
}

// True when the CPU has AVX512-BF16 (VDPBF16PS: AMD Zen 4 and later, Intel Cooper Lake and Sapphire Rapids): the
// bfloat16 GEMM's kernel where AMX is missing. The avx512 level that runs it has already checked that the OS saves
// the AVX-512 state.
inline bool avx512_bf16_available() {
  static const bool available = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5));
  }();
  return available;
}

// The same product as micro_kernel, on the same slivers, with AVX-512 vectors: VDPBF16PS adds the two products of a
// k pair into each float lane, so a 512-bit instruction does 32 multiply-adds where the float FMA kernel does 16
// (its products are exact in float; the instruction rounds like two FMAs, treats bf16 denormals as zero and flushes
// float denormals, as torch's oneDNN kernels on such CPUs do). kRows rows at a time keep 2 x kRows accumulators
// (both 16-column halves) in registers across the whole K range, next to the two B vectors of a k pair.
// Measured (AMD EPYC with AVX512-BF16, 2 threads, python -m fastops.bench; fastops / torch oneDNN): bf16 matmul
// 1024^3 2.24 / 2.27 ms (4.70 on the fp32 FMA kernel); linear + gelu 256 x 512 -> 1024 forward 0.35 / 0.31 ms (0.70).
__attribute__((target("avx512f,avx512bf16"))) inline void dot_micro_kernel(int64_t kblocks, const uint16_t* pa,
                                                                          const uint16_t* pb, float* c,
                                                                          int64_t ldc) {
  constexpr int64_t kRows = 8;
  for (int64_t r0 = 0; r0 < kSliver; r0 += kRows) {
    __m512 acc[kRows][2];
    for (int64_t r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const uint16_t* a = pa + kb * kBlockElems + r0 * kBlockK;
      const uint16_t* b = pb + kb * kBlockElems;
      for (int64_t q = 0; q < kBlockK / 2; ++q) {
        const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + q * 32));
        const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + kBlockElems / 2 + q * 32));
#pragma GCC unroll 8
        for (int64_t r = 0; r < kRows; ++r) {
          int32_t pair;  // k = 2q and 2q + 1 of row r0 + r
          __builtin_memcpy(&pair, a + r * kBlockK + 2 * q, sizeof pair);
          const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
          acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
          acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
        }
      }
    }
    for (int64_t r = 0; r < kRows; ++r) {
      _mm512_storeu_ps(c + (r0 + r) * ldc, acc[r][0]);
      _mm512_storeu_ps(c + (r0 + r) * ldc + 16, acc[r][1]);
    }
  }
}

// One full K block of a B sliver from row-major B (k pairs of rows, 32 contiguous columns each): interleaves rows
// 2q and 2q + 1 into VNNI pairs, 16 columns (one 64-byte tile row) per step.
__attribute__((target("avx512f"))) inline void pack_b_rows_vnni(const uint16_t* src, int64_t ld, uint16_t* dst) {
  for (int64_t half = 0; half < 2; ++half) {
    for (int64_t q = 0; q < kBlockK / 2; ++q) {
      const uint16_t* r0 = src + 2 * q * ld + 16 * half;
      const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0)));
      const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + ld)));
      _mm512_storeu_si512(dst + half * (kBlockElems / 2) + q * 32, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

// 16 x 16 transpose of 32-bit elements in registers: four stages, stage s swapping bit s of the row index with bit s
// of the column index (rows i and i | 2^s exchange the half of their elements whose column has bit s set).
__attribute__((target("avx512f"))) inline void transpose_16x16_epi32(__m512i r[16]) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i from_second = _mm512_set1_epi32(16);  // permutex2var: index | 16 reads the second operand
  for (int bit = 1; bit < 16; bit <<= 1) {
    const __m512i b = _mm512_set1_epi32(bit);
    const __mmask16 high = _mm512_test_epi32_mask(iota, b);  // columns with this bit set
    const __m512i flipped = _mm512_xor_si512(iota, b);
    // Row i (bit clear) keeps its low columns and takes row i|bit's low columns into its high ones; row i|bit
    // takes row i's high columns into its low ones and keeps its high columns.
    const __m512i idx_lo = _mm512_mask_or_epi32(iota, high, flipped, from_second);
    const __m512i idx_hi = _mm512_mask_blend_epi32(high, flipped, _mm512_or_si512(iota, from_second));
    for (int i = 0; i < 16; ++i) {
      if (i & bit) continue;
      const __m512i lo = r[i], hi = r[i | bit];
      r[i] = _mm512_permutex2var_epi32(lo, idx_lo, hi);
      r[i | bit] = _mm512_permutex2var_epi32(lo, idx_hi, hi);
    }
  }
}

// One full K block of a B sliver from column-major B (a Linear weight: 32 columns, each 32 contiguous k): a column's
// 16 k pairs are 16 32-bit words, and the VNNI layout wants them transposed (a row per k pair, a word per column).
__attribute__((target("avx512f"))) inline void pack_b_cols_vnni(const uint16_t* src, int64_t ld, uint16_t* dst) {
  for (int64_t half = 0; half < 2; ++half) {
    __m512i r[16];
    for (int64_t c = 0; c < 16; ++c) r[c] = _mm512_loadu_si512(src + (16 * half + c) * ld);
    transpose_16x16_epi32(r);
    for (int64_t q = 0; q < 16; ++q) _mm512_storeu_si512(dst + half * (kBlockElems / 2) + q * 32, r[q]);
  }
}

// One full K block of an A sliver from column-major A (a transposed activation in a weight gradient: 32 k rows of
// 32 contiguous i): pairs of k rows interleaved as in pack_b_rows_vnni give, per k pair, 16 words over i; the 16 x 16
// transpose turns them into, per row i, 16 words over k pairs, i.e. the row's 32 k in order.
__attribute__((target("avx512f"))) inline void pack_a_cols(const uint16_t* src, int64_t ld, uint16_t* dst) {
  for (int64_t half = 0; half < 2; ++half) {
    __m512i r[16];
    for (int64_t q = 0; q < 16; ++q) {
      const uint16_t* r0 = src + 2 * q * ld + 16 * half;
      const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0)));
      const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + ld)));
      r[q] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
    }
    transpose_16x16_epi32(r);
    for (int64_t i = 0; i < 16; ++i) _mm512_storeu_si512(dst + (16 * half + i) * kBlockK, r[i]);
  }
}

#else

inline bool amx_bf16_available() { return false; }
inline bool avx512_bf16_available() { return false; }
inline void begin() {}
inline void end() {}
inline void micro_kernel(int64_t, const uint16_t*, const uint16_t*, float*, int64_t) {}
inline void dot_micro_kernel(int64_t, const uint16_t*, const uint16_t*, float*, int64_t) {}
inline void pack_b_rows_vnni(const uint16_t*, int64_t, uint16_t*) {}
inline void pack_b_cols_vnni(const uint16_t*, int64_t, uint16_t*) {}
inline void pack_a_cols(const uint16_t*, int64_t, uint16_t*) {}

#endif

}  // namespace amx
}  // namespace fastops

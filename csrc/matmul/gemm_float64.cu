// float64 GEMM: a plain shared-memory tiled kernel (32x32 outputs per block, 2x2 per thread), the gradcheck path.
// The 8x8-per-thread tile of the SIMT kernel would need twice its registers in double precision. Torch-free (see
// gemm_cuda.cuh).
#include "matmul/gemm_cuda.cuh"

namespace fastops {
namespace {

using cuda::opmath_t;
using namespace gemm;

constexpr int kThreads = 256;
constexpr int kSmallTile = 32;

template <typename T>
__device__ __forceinline__ void load_small_tile(const Operand<T>& op, const T* base, int64_t o0, int64_t k0,
                                                int64_t k_size, int tid, opmath_t<T> (*tile)[kSmallTile + 1]) {
#pragma unroll
  for (int i = 0; i < kSmallTile * kSmallTile / kThreads; ++i) {
    const int e = tid + i * kThreads;
    // The memory-contiguous direction varies fastest across threads (coalesced reads).
    const int o = op.k_contiguous ? e / kSmallTile : e % kSmallTile;
    const int k = op.k_contiguous ? e % kSmallTile : e / kSmallTile;
    const int64_t go = o0 + o, gk = k0 + k;
    const bool inside = go < op.outer && gk < k_size;
    tile[k][o] = inside ? cuda::to_opmath(base[op.k_contiguous ? go * op.ld + gk : gk * op.ld + go])
                        : opmath_t<T>(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    small_gemm_kernel(Problem pr, Operand<T> a, Operand<T> b, T* __restrict__ c, const T* __restrict__ bias) {
  using Acc = opmath_t<T>;
  __shared__ Acc a_tile[kSmallTile][kSmallTile + 1];
  __shared__ Acc b_tile[kSmallTile][kSmallTile + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kSmallTile;
  for_each_tile(pr, kSmallTile, a, b, [&](int64_t n0, int64_t batch, const T* a_base, const T* b_base) {
    Acc acc[2][2] = {};
    for (int64_t k0 = 0; k0 < pr.k; k0 += kSmallTile) {
      load_small_tile(a, a_base, m0, k0, pr.k, tid, a_tile);
      load_small_tile(b, b_base, n0, k0, pr.k, tid, b_tile);
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kSmallTile; ++k) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j) acc[i][j] = fma(a_tile[k][ty + 16 * i], b_tile[k][tx + 16 * j], acc[i][j]);
      }
      __syncthreads();
    }
    T* c_base = c + batch * pr.batch_stride_c;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t row = m0 + ty + 16 * i;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t col = n0 + tx + 16 * j;
        if (row < pr.m && col < pr.n) store_output(c_base + row * pr.ldc + col, acc[i][j], pr.accumulate, bias, col);
      }
    }
  });
}

}  // namespace

void launch_float64_gemm(const GemmArgs& g, cudaStream_t stream) {
  small_gemm_kernel<double><<<grid_for(g, kSmallTile, kSmallTile), kThreads, 0, stream>>>(
      problem_of(g), operand_of<double>(g.a, g.m, false), operand_of<double>(g.b, g.n, true),
      static_cast<double*>(g.c), static_cast<const double*>(g.bias));
}

}  // namespace fastops

// The deterministic column sum's band plan (CUDA; torch-free and CUDA-free, so the bindings can size its
// workspace): out[j] = sum_i x[i, j] is summed per band of consecutive rows into a workspace row, then the bands are
// added in order. Within a band, lane y (of kColumnSumLanes) adds rows y, y + kColumnSumLanes, ... in row order and
// the lanes are folded in lane order; every choice depends on the row count alone, never on the launch configuration,
// vector width or SM count, so a column's sum is bitwise the same wherever it is computed (linear's bias_grad,
// bias_act_backward's grad_bias). Device side: common/cuda_column_sum.cuh.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/dtype.h"

namespace fastops {

constexpr int kColumnSumLanes = 8;
constexpr int64_t kColumnSumRowsPerBand = 512;  // 64 rows per lane: a band's workspace row is 1/512 of the input
constexpr int64_t kColumnSumMaxBands = 128;

inline int64_t column_sum_bands(int64_t rows) {
  return std::clamp<int64_t>((rows + kColumnSumRowsPerBand - 1) / kColumnSumRowsPerBand, 1, kColumnSumMaxBands);
}

// Bytes of the workspace a column sum of a rows x cols matrix of `dtype` needs: one row of partial sums per band, in
// reduce_math_t (float for 16-bit types, double otherwise).
inline int64_t column_sum_workspace_bytes(DType dtype, int64_t rows, int64_t cols) {
  const int64_t acc_bytes = dtype == DType::Float16 || dtype == DType::BFloat16 ? 4 : 8;
  return column_sum_bands(rows) * cols * acc_bytes;
}

}  // namespace fastops

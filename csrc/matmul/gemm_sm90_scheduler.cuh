// Hopper GEMM: the persistent walk over work units (see gemm_sm90_config.cuh for the file map).
#pragma once

#include "matmul/gemm_sm90_config.cuh"

namespace fastops::sm90 {

// Tile t of the persistent walk -> (m unit, n block), grouped so kTileGroupM M-units sweep each N-block together. An
// M-unit is one M-block, or with clusters the cluster_m vertically adjacent M-blocks a cluster computes together.
struct TileOrder {
  int tiles_m, tiles_n;
  __device__ __forceinline__ void at(int t, int& mb, int& nb) const {
    const int per_group = kTileGroupM * tiles_n;
    const int first_m = (t / per_group) * kTileGroupM;
    const int group_m = min(tiles_m - first_m, kTileGroupM);
    const int in_group = t % per_group;
    mb = first_m + in_group % group_m;
    nb = in_group / group_m;
  }
  __device__ __forceinline__ int count() const { return tiles_m * tiles_n; }
};

// The persistent walk's unit of work: an output tile, or with split-K one K-range of it (its partial sums go to
// the split's own fp32 slice of the workspace; a second kernel adds the slices). The CTAs of a cluster walk the same
// units in step (they share every B slice), each taking the M-block of its rank; with an odd number of M-blocks the
// last unit's upper CTA computes a tile wholly below C (zero-filled A, nothing stored) so its partner gets its B.
struct Schedule {
  TileOrder order;
  int splits;
  int k_tiles;
  int k_tiles_per_split;
  int cluster_m;  // CTAs per cluster (1 or 2)
  int rank;       // this CTA's rank in its cluster
  __device__ __forceinline__ int count() const { return order.count() * splits; }
  __device__ __forceinline__ int first() const { return blockIdx.x / cluster_m; }
  __device__ __forceinline__ int stride() const { return gridDim.x / cluster_m; }
  __device__ __forceinline__ void at(int t, int& mb, int& nb, int& split, int& kt_begin, int& kt_end) const {
    split = t % splits;
    int unit;
    order.at(t / splits, unit, nb);
    mb = unit * cluster_m + rank;
    kt_begin = split * k_tiles_per_split;
    kt_end = min(k_tiles, kt_begin + k_tiles_per_split);
  }
};

}  // namespace fastops::sm90

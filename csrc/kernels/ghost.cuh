// Device code of the per-sample gradient products (docs/design.md §4.2). Torch-free: compiled by nvcc
// for the CUDA backend and by the host compiler for the SIMT emulator, with the same plans.
//
// All GEMM-shaped work uses one 64×64 output tile per block of 256 threads (16×16, each thread a
// 4×4 micro-tile at rows ty + 16·i, columns tx + 16·j), K in steps of 16 through shared memory.
// Both operands are K-contiguous rows ("NT" GEMM): A·Gᵀ, D1·D2ᵀ, A1·A2ᵀ.
//
// ghost_dot  (A (rows,I), D (rows,O), G (V,O,I)), rows = B·T:
//   ghost_dot_rows_kernel: grid (row tiles, O splits, V). A block computes (A Gᵀ) tiles for its
//   64 rows and dots each tile with D in registers as soon as it is complete, accumulating one
//   partial per row over its share of the O tiles: no (rows, O) intermediate, only part
//   (V, splits, rows). ghost_dot_finish_kernel: one warp per (b, v) sums part over t and the
//   splits in a fixed order. Deterministic (no atomics).
// ghost_gram (A1, D1, A2, D2): ghost_gram_kernel<DIAG=false>: a block owns SI×SJ sample pairs
//   (SI = ⌊64/T⌋ samples packed in 64 rows when T ≤ 64, else one sample whose T rows are walked
//   in 64-row sub-tiles) and accumulates (D1 D2ᵀ ⊙ A1 A2ᵀ) in registers over all sub-tiles;
//   the 64×64 accumulated products are then reduced per pair in shared memory in a fixed order.
//   Nothing of size T×T' leaves the block.
// ghost_norm: the same kernel with DIAG = true (block i owns samples i0..i0+SI on both sides,
//   keeps the diagonal pairs), or ghost_norm_t1_kernel (T = 1: ‖d‖²·‖a‖², one warp per sample).
//   For T·(I+O) > I·O the host materialises Q_i in chunks instead (cheaper, GEMM-bound).
// clip_update_kernel: one thread per position of the stably sorted index; the first of a group
//   of equal indices sums its group's s in order and writes the clipped α once.
//
// Precision: float32 and float64 kernels; accumulation in the input type. nvcc contracts
// a*b + c into FMA, the emulator (g++ -ffp-contract=off) does not: results agree within the
// rounding bound of the reduction, not to the bit.
#pragma once

#include <cstdint>

#include "simt.cuh"

namespace tlk::kernels {

constexpr int kGhostThreads = 256;
constexpr int kGhostTile = 64;   // output tile: 64 × 64
constexpr int kGhostBK = 16;     // K step
constexpr int kGhostLD = 65;     // shared row stride (one pad element)
// Blocks to aim for when splitting ghost_dot's O tiles across blocks (fills a GPU's SMs).
constexpr int64_t kGhostTargetBlocks = 256;

// acc[i][j] = Σ_k X[xrow[i], k] · Y[yrow[j'], k] for this thread's micro-tile, where the block
// loads rows xrow[l] / yrow[l] (l = 0..3, local rows ty + 16·l; -1 = padding, read as 0).
// As, Bs: (kGhostBK, kGhostLD) shared tiles. Every thread of the block must call it.
template <typename T>
TLK_DEVICE_INLINE void ghost_gemm_tile_nt(T (&acc)[4][4], T* As, T* Bs,
                                          const T* __restrict__ X,  // (*, K)
                                          const int64_t (&xrow)[4],
                                          const T* __restrict__ Y,  // (*, K)
                                          const int64_t (&yrow)[4], int64_t K, int tx, int ty) {
  TLK_UNROLL
  for (int i = 0; i < 4; ++i) {
    TLK_UNROLL
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
  }
  for (int64_t k0 = 0; k0 < K; k0 += kGhostBK) {
    const int64_t k = k0 + tx;
    TLK_UNROLL
    for (int l = 0; l < 4; ++l) {
      st_shared(&As[tx * kGhostLD + ty + 16 * l], (xrow[l] >= 0 && k < K) ? ld_global(&X[xrow[l] * K + k]) : T(0));
      st_shared(&Bs[tx * kGhostLD + ty + 16 * l], (yrow[l] >= 0 && k < K) ? ld_global(&Y[yrow[l] * K + k]) : T(0));
    }
    __syncthreads();
    TLK_UNROLL
    for (int kk = 0; kk < kGhostBK; ++kk) {
      T a[4], b[4];
      TLK_UNROLL
      for (int i = 0; i < 4; ++i) a[i] = ld_shared(&As[kk * kGhostLD + ty + 16 * i]);
      TLK_UNROLL
      for (int j = 0; j < 4; ++j) b[j] = ld_shared(&Bs[kk * kGhostLD + tx + 16 * j]);
      TLK_UNROLL
      for (int i = 0; i < 4; ++i) {
        TLK_UNROLL
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    count_flops(2 * 16 * kGhostBK);
    __syncthreads();
  }
}

// ------------------------------------------------------------------------------- ghost_dot
template <typename T>
__global__ void __launch_bounds__(kGhostThreads)
ghost_dot_rows_kernel(const T* __restrict__ A,  // (rows, I)
                      const T* __restrict__ D,  // (rows, O)
                      const T* __restrict__ G,  // (V, O, I)
                      T* __restrict__ part,     // (V, splits, rows): Σ over this split's o of d·(G a)
                      int64_t rows, int64_t I, int64_t O, int splits) {
  TLK_SHARED(T, smem, 2 * kGhostBK * kGhostLD);
  T* As = smem;
  T* Bs = smem + kGhostBK * kGhostLD;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kGhostTile;
  const int split = blockIdx.y;
  const int64_t v = blockIdx.z;
  const T* Gv = G + v * O * I;
  int64_t arow[4];
  TLK_UNROLL
  for (int l = 0; l < 4; ++l) {
    const int64_t r = r0 + ty + 16 * l;
    arow[l] = r < rows ? r : -1;
  }
  T rowsum[4] = {T(0), T(0), T(0), T(0)};
  const int64_t o_tiles = (O + kGhostTile - 1) / kGhostTile;
  for (int64_t ot = split; ot < o_tiles; ot += splits) {
    const int64_t o0 = ot * kGhostTile;
    int64_t grow[4];
    TLK_UNROLL
    for (int l = 0; l < 4; ++l) {
      const int64_t o = o0 + ty + 16 * l;
      grow[l] = o < O ? o : -1;
    }
    T acc[4][4];
    ghost_gemm_tile_nt<T>(acc, As, Bs, A, arow, Gv, grow, I, tx, ty);
    // the fused epilogue: dot the finished (A Gᵀ) tile with D
    TLK_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (TLK_BRANCH(arow[i] < 0)) continue;
      TLK_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int64_t o = o0 + tx + 16 * j;
        if (TLK_BRANCH(o < O)) rowsum[i] += acc[i][j] * ld_global(&D[arow[i] * O + o]);
      }
    }
  }
  // the 16 threads of a row (consecutive lanes tx = 0..15) combine their columns
  TLK_UNROLL
  for (int i = 0; i < 4; ++i) {
    TLK_UNROLL
    for (int off = 8; off > 0; off /= 2) rowsum[i] += __shfl_xor_sync(0xffffffffu, rowsum[i], off);
  }
  if (tx == 0) {
    TLK_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (arow[i] >= 0) st_global(&part[(v * splits + split) * rows + arow[i]], rowsum[i]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kGhostThreads)
ghost_dot_finish_kernel(const T* __restrict__ part,  // (V, splits, rows), rows = B·Tn
                        T* __restrict__ out,         // (B, V)
                        int64_t B, int64_t Tn, int64_t V, int splits) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const bool active = warp < B * V;
  const int64_t b = active ? warp / V : 0, v = active ? warp % V : 0;
  const int64_t rows = B * Tn;
  T sum = T(0);
  if (active) {
    for (int64_t t = lane; t < Tn; t += 32) {
      for (int sp = 0; sp < splits; ++sp) sum += ld_global(&part[(v * splits + sp) * rows + b * Tn + t]);
    }
  }
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (active && lane == 0) st_global(&out[b * V + v], sum);
}

// ---------------------------------------------------------------------- ghost_gram / norm
// Samples packed in one 64-row tile (T ≤ 64), or 1 sample walked in sub-tiles (T > 64).
TLK_HOST_DEVICE inline int64_t ghost_samples_per_tile(int64_t T) { return T <= kGhostTile ? kGhostTile / T : 1; }

// Global row of local row lr of sub-tile s for the samples starting at i0, or -1 (padding).
TLK_DEVICE_INLINE int64_t ghost_tile_row(int64_t lr, int64_t s, int64_t T, int64_t i0, int64_t B, int64_t per) {
  if (T <= kGhostTile) {
    const int64_t p = lr / T;
    if (p >= per || i0 + p >= B) return -1;
    return (i0 + p) * T + lr % T;
  }
  const int64_t t = s * kGhostTile + lr;
  return t < T ? i0 * T + t : -1;
}

template <typename T, bool DIAG>
__global__ void __launch_bounds__(kGhostThreads)
ghost_gram_kernel(const T* __restrict__ A1,  // (B1·T1, I)
                  const T* __restrict__ D1,  // (B1·T1, O)
                  const T* __restrict__ A2,  // (B2·T2, I)   (DIAG: A1)
                  const T* __restrict__ D2,  // (B2·T2, O)   (DIAG: D1)
                  T* __restrict__ out,       // (B1, B2), or (B1,) when DIAG
                  int64_t B1, int64_t T1, int64_t B2, int64_t T2, int64_t I, int64_t O) {
  // the K tiles during the GEMMs, then the 64×64 accumulated products P
  TLK_SHARED(T, smem, kGhostTile * kGhostLD);
  T* As = smem;
  T* Bs = smem + kGhostBK * kGhostLD;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t SI = ghost_samples_per_tile(T1), SJ = ghost_samples_per_tile(T2);
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * SI;
  const int64_t j0 = DIAG ? i0 : static_cast<int64_t>(blockIdx.x) * SJ;
  const int64_t sub1 = T1 <= kGhostTile ? 1 : (T1 + kGhostTile - 1) / kGhostTile;
  const int64_t sub2 = T2 <= kGhostTile ? 1 : (T2 + kGhostTile - 1) / kGhostTile;
  T tot[4][4];
  TLK_UNROLL
  for (int i = 0; i < 4; ++i) {
    TLK_UNROLL
    for (int j = 0; j < 4; ++j) tot[i][j] = T(0);
  }
  for (int64_t s1 = 0; s1 < sub1; ++s1) {
    int64_t row1[4];
    TLK_UNROLL
    for (int l = 0; l < 4; ++l) row1[l] = ghost_tile_row(ty + 16 * l, s1, T1, i0, B1, SI);
    for (int64_t s2 = 0; s2 < sub2; ++s2) {
      int64_t row2[4];
      TLK_UNROLL
      for (int l = 0; l < 4; ++l) row2[l] = ghost_tile_row(ty + 16 * l, s2, T2, j0, B2, SJ);
      T dd[4][4], aa[4][4];
      ghost_gemm_tile_nt<T>(dd, As, Bs, D1, row1, D2, row2, O, tx, ty);
      ghost_gemm_tile_nt<T>(aa, As, Bs, A1, row1, A2, row2, I, tx, ty);
      TLK_UNROLL
      for (int i = 0; i < 4; ++i) {
        TLK_UNROLL
        for (int j = 0; j < 4; ++j) tot[i][j] += dd[i][j] * aa[i][j];
      }
    }
  }
  __syncthreads();  // smem now holds P (64 × kGhostLD)
  T* P = smem;
  TLK_UNROLL
  for (int i = 0; i < 4; ++i) {
    TLK_UNROLL
    for (int j = 0; j < 4; ++j) st_shared(&P[(ty + 16 * i) * kGhostLD + tx + 16 * j], tot[i][j]);
  }
  __syncthreads();
  // stage 1: each row sums its columns per sample of side 2, compacted in place (the column
  // group q is written at column q ≤ its first column, by the thread that owns the row)
  const int64_t T1e = T1 <= kGhostTile ? T1 : kGhostTile, T2e = T2 <= kGhostTile ? T2 : kGhostTile;
  if (tid < kGhostTile) {
    T* row = P + tid * kGhostLD;
    for (int64_t q = 0; q < SJ; ++q) {
      T sum = T(0);
      const int64_t c1 = tlk::min<int64_t>((q + 1) * T2e, kGhostTile);
      for (int64_t c = q * T2e; c < c1; ++c) sum += ld_shared(&row[c]);
      st_shared(&row[q], sum);
    }
  }
  __syncthreads();
  // stage 2: each pair sums its rows
  for (int64_t idx = tid; idx < SI * SJ; idx += kGhostThreads) {
    const int64_t p = idx / SJ, q = idx % SJ;
    if (DIAG && p != q) continue;
    const int64_t i = i0 + p, j = j0 + q;
    if (i >= B1 || j >= B2) continue;
    T sum = T(0);
    const int64_t r1 = tlk::min<int64_t>((p + 1) * T1e, kGhostTile);
    for (int64_t r = p * T1e; r < r1; ++r) sum += ld_shared(&P[r * kGhostLD + q]);
    if (DIAG) {
      st_global(&out[i], sum);
    } else {
      st_global(&out[i * B2 + j], sum);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kGhostThreads)
ghost_norm_t1_kernel(const T* __restrict__ A,  // (B, I)
                     const T* __restrict__ D,  // (B, O)
                     T* __restrict__ out,      // (B,)
                     int64_t B, int64_t I, int64_t O) {
  const int64_t b = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  T sa = T(0), sd = T(0);
  if (b < B) {
    for (int64_t k = lane; k < I; k += 32) {
      const T x = ld_global(&A[b * I + k]);
      sa += x * x;
    }
    for (int64_t k = lane; k < O; k += 32) {
      const T x = ld_global(&D[b * O + k]);
      sd += x * x;
    }
  }
  for (int off = 16; off > 0; off /= 2) {
    sa += __shfl_xor_sync(0xffffffffu, sa, off);
    sd += __shfl_xor_sync(0xffffffffu, sd, off);
  }
  if (b < B && lane == 0) st_global(&out[b], sa * sd);
}

// ---------------------------------------------------------------------------- clip_update_
template <typename T>
__global__ void __launch_bounds__(kGhostThreads)
clip_update_kernel(T* __restrict__ alpha,                // (N,) with stride alpha_stride
                   int64_t alpha_stride,
                   const int64_t* __restrict__ sorted,   // (B,) index sorted stably
                   const int64_t* __restrict__ order,    // (B,) position in s of sorted[k]
                   const T* __restrict__ s,              // (B,)
                   int64_t B, T lr) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= B) return;
  const int64_t n = ld_global(&sorted[k]);
  if (TLK_BRANCH(k > 0 && ld_global(&sorted[k - 1]) == n)) return;  // not the first of its group
  T sum = T(0);
  for (int64_t m = k; m < B && ld_global(&sorted[m]) == n; ++m) sum += ld_global(&s[ld_global(&order[m])]);
  T v = ld_global(&alpha[n * alpha_stride]) + lr * sum;
  v = v < T(0) ? T(0) : (v > T(1) ? T(1) : v);  // NaN stays NaN, like torch.clamp
  st_global(&alpha[n * alpha_stride], v);
}

// ------------------------------------------------- reductions after a vendor GEMM (ghost_gemm.h)
// out[(p % V)·out_stride + p / V] = Σ_k X[p·L + k] · Y[(p / V)·L + k] for p < P: the row-dot of a
// GEMM result with the other operand (X = H (rows·V, L), Y (rows, L)), or a per-sample Σ X ⊙ Y.
// A group of G lanes (a power of two ≤ 32, G ≥ L when L < 32) owns one segment; consecutive lanes
// read consecutive k (coalesced), the group combines by shuffles in a fixed order.
template <typename T>
__global__ void __launch_bounds__(kGhostThreads)
ghost_segdot_kernel(const T* __restrict__ X, const T* __restrict__ Y, T* __restrict__ out, int64_t P, int64_t L,
                    int64_t V, int64_t out_stride, int G) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t p = tid / G;
  const int g = static_cast<int>(tid % G);
  const bool active = p < P;
  T sum = T(0);
  if (active) {
    const T* x = X + p * L;
    const T* y = Y + (p / V) * L;
    for (int64_t k = g; k < L; k += G) sum += ld_global(&x[k]) * ld_global(&y[k]);
    count_flops(2 * ((L - g + G - 1) / G));
  }
  for (int off = G / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (active && g == 0) st_global(&out[(p % V) * out_stride + p / V], sum);
}

// The same for long segments: one block per segment, each thread a strided partial, combined in
// shared memory in a fixed order. out[p] = Σ_k X[p·L + k] · Y[p·L + k] (V = 1).
template <typename T>
__global__ void __launch_bounds__(kGhostThreads)
ghost_segdot_block_kernel(const T* __restrict__ X, const T* __restrict__ Y, T* __restrict__ out, int64_t L) {
  TLK_SHARED(T, red, kGhostThreads);
  const int64_t p = blockIdx.x;
  const int t = threadIdx.x;
  const T* x = X + p * L;
  const T* y = Y + p * L;
  T sum = T(0);
  for (int64_t k = t; k < L; k += kGhostThreads) sum += ld_global(&x[k]) * ld_global(&y[k]);
  count_flops(2 * ((L - t + kGhostThreads - 1) / kGhostThreads));
  st_shared(&red[t], sum);
  __syncthreads();
  for (int half = kGhostThreads / 2; half > 0; half /= 2) {
    if (t < half) st_shared(&red[t], ld_shared(&red[t]) + ld_shared(&red[t + half]));
    __syncthreads();
  }
  if (t == 0) st_global(&out[p], ld_shared(&red[0]));
}

// out[i·B2 + j] += Σ over the tile's rows of sample i and columns of sample j of DD ⊙ AA, for a
// tile of GEMM results DD, AA (nr, nc) at rows r0, columns c0 of the (B1·T1) × (B2·T2) products.
// A group of G lanes owns one sample pair of the tile and walks its block row by row (consecutive
// lanes, consecutive columns). Tiles are launched one after another, so each pair is updated by
// one group per launch: deterministic.
template <typename T>
__global__ void __launch_bounds__(kGhostThreads)
ghost_pair_reduce_kernel(const T* __restrict__ DD, const T* __restrict__ AA, T* __restrict__ out, int64_t nr,
                         int64_t nc, int64_t r0, int64_t c0, int64_t T1, int64_t T2, int64_t B2, int G) {
  const int64_t i_first = r0 / T1, j_first = c0 / T2;
  const int64_t ni = (r0 + nr - 1) / T1 - i_first + 1, nj = (c0 + nc - 1) / T2 - j_first + 1;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t pair = tid / G;
  const int g = static_cast<int>(tid % G);
  const bool active = pair < ni * nj;
  const int64_t i = i_first + (active ? pair / nj : 0), j = j_first + (active ? pair % nj : 0);
  T sum = T(0);
  if (active) {
    const int64_t rb = tlk::max(r0, i * T1) - r0, re = tlk::min(r0 + nr, (i + 1) * T1) - r0;
    const int64_t cb = tlk::max(c0, j * T2) - c0, ce = tlk::min(c0 + nc, (j + 1) * T2) - c0;
    const int64_t w = ce - cb, n = (re - rb) * w;
    for (int64_t e = g; e < n; e += G) {
      const int64_t idx = (rb + e / w) * nc + cb + e % w;
      sum += ld_global(&DD[idx]) * ld_global(&AA[idx]);
    }
    count_flops(2 * ((n - g + G - 1) / G));
  }
  for (int off = G / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (active && g == 0) st_global(&out[i * B2 + j], ld_global(&out[i * B2 + j]) + sum);
}

// Lanes per segment of L elements: the smallest power of two ≥ L, at most 32.
TLK_HOST_DEVICE inline int ghost_group_lanes(int64_t L) {
  int G = 1;
  while (G < 32 && G < L) G *= 2;
  return G;
}
// Segments longer than this get a block each (ghost_segdot_block_kernel).
constexpr int64_t kGhostBlockSegment = 8192;

// ------------------------------------------------------------------- plans and dispatchers
// O splits of ghost_dot: enough blocks to fill a GPU, never more than there are O tiles.
inline int ghost_dot_splits(int64_t rows, int64_t O, int64_t V) {
  const int64_t row_tiles = (rows + kGhostTile - 1) / kGhostTile;
  const int64_t o_tiles = (O + kGhostTile - 1) / kGhostTile;
  const int64_t have = row_tiles * V;
  int64_t want = (kGhostTargetBlocks + have - 1) / tlk::max<int64_t>(1, have);
  want = tlk::max<int64_t>(1, tlk::min<int64_t>(want, o_tiles));
  return static_cast<int>(want);
}

inline tlk::LaunchPlan ghost_warps_plan(int64_t warps) {
  const int64_t per_block = kGhostThreads / 32;
  return tlk::LaunchPlan{dim3(static_cast<unsigned>((warps + per_block - 1) / per_block)), dim3(kGhostThreads), 0};
}

// s (B, V) = ghost_dot; part: (V, splits, B·Tn) scratch with splits = ghost_dot_splits(B·Tn, O, V).
// Needs B·Tn, I, O, V > 0 (the host fills zeros otherwise).
template <typename T, typename Launch>
void ghost_dot(Launch&& launch, const T* A, const T* D, const T* G, T* part, T* out, int64_t B, int64_t Tn,
               int64_t I, int64_t O, int64_t V) {
  const int64_t rows = B * Tn;
  const int splits = ghost_dot_splits(rows, O, V);
  const tlk::LaunchPlan rows_plan{dim3(static_cast<unsigned>((rows + kGhostTile - 1) / kGhostTile),
                                       static_cast<unsigned>(splits), static_cast<unsigned>(V)),
                                  dim3(kGhostThreads), 0};
  launch(rows_plan, ghost_dot_rows_kernel<T>, A, D, G, part, rows, I, O, splits);
  launch(ghost_warps_plan(B * V), ghost_dot_finish_kernel<T>, static_cast<const T*>(part), out, B, Tn, V, splits);
}

// out (B1, B2) = ghost_gram. Needs B1, B2, T1, T2 > 0.
template <typename T, typename Launch>
void ghost_gram(Launch&& launch, const T* A1, const T* D1, const T* A2, const T* D2, T* out, int64_t B1,
                int64_t T1, int64_t B2, int64_t T2, int64_t I, int64_t O) {
  const int64_t SI = ghost_samples_per_tile(T1), SJ = ghost_samples_per_tile(T2);
  const tlk::LaunchPlan plan{dim3(static_cast<unsigned>((B2 + SJ - 1) / SJ), static_cast<unsigned>((B1 + SI - 1) / SI)),
                             dim3(kGhostThreads), 0};
  launch(plan, ghost_gram_kernel<T, false>, A1, D1, A2, D2, out, B1, T1, B2, T2, I, O);
}

// out (B,) = ghost_norm from the T×T tiles (T = 1: row norms). Needs B, T > 0.
template <typename T, typename Launch>
void ghost_norm_tiles(Launch&& launch, const T* A, const T* D, T* out, int64_t B, int64_t Tn, int64_t I, int64_t O) {
  if (Tn == 1) {
    launch(ghost_warps_plan(B), ghost_norm_t1_kernel<T>, A, D, out, B, I, O);
    return;
  }
  const int64_t SI = ghost_samples_per_tile(Tn);
  const tlk::LaunchPlan plan{dim3(1, static_cast<unsigned>((B + SI - 1) / SI)), dim3(kGhostThreads), 0};
  launch(plan, ghost_gram_kernel<T, true>, A, D, A, D, out, B, Tn, B, Tn, I, O);
}

// In place α[index] = clip(α[index] + lr·Σ s, 0, 1). Needs B > 0.
template <typename T, typename Launch>
void clip_update(Launch&& launch, T* alpha, int64_t alpha_stride, const int64_t* sorted, const int64_t* order,
                 const T* s, int64_t B, T lr) {
  const tlk::LaunchPlan plan{dim3(static_cast<unsigned>((B + kGhostThreads - 1) / kGhostThreads)),
                             dim3(kGhostThreads), 0};
  launch(plan, clip_update_kernel<T>, alpha, alpha_stride, sorted, order, s, B, lr);
}

// out[(p % V)·out_stride + p / V] = Σ_k X[p·L + k] · Y[(p / V)·L + k] for p < P (see
// ghost_segdot_kernel). Long segments with V = 1 take a block each. Needs P, L > 0.
template <typename T, typename Launch>
void ghost_segdot(Launch&& launch, const T* X, const T* Y, T* out, int64_t P, int64_t L, int64_t V,
                  int64_t out_stride) {
  if (V == 1 && L >= kGhostBlockSegment) {
    launch(tlk::LaunchPlan{dim3(static_cast<unsigned>(P)), dim3(kGhostThreads), 0}, ghost_segdot_block_kernel<T>,
           X, Y, out, L);
    return;
  }
  const int G = ghost_group_lanes(L);
  const int64_t threads = P * G;
  const tlk::LaunchPlan plan{dim3(static_cast<unsigned>((threads + kGhostThreads - 1) / kGhostThreads)),
                             dim3(kGhostThreads), 0};
  launch(plan, ghost_segdot_kernel<T>, X, Y, out, P, L, V, out_stride, G);
}

// out (B, V) = Σ_t rd[v, b·Tn + t]: the row-dots rd (V, B·Tn) summed per sample in t order.
template <typename T, typename Launch>
void ghost_dot_finish(Launch&& launch, const T* rd, T* out, int64_t B, int64_t Tn, int64_t V) {
  launch(ghost_warps_plan(B * V), ghost_dot_finish_kernel<T>, rd, out, B, Tn, V, 1);
}

// out (B1, B2) += the tile's share of ghost_gram (see ghost_pair_reduce_kernel). Needs nr, nc > 0.
template <typename T, typename Launch>
void ghost_pair_reduce(Launch&& launch, const T* DD, const T* AA, T* out, int64_t nr, int64_t nc, int64_t r0,
                       int64_t c0, int64_t T1, int64_t T2, int64_t B2) {
  const int64_t ni = (r0 + nr - 1) / T1 - r0 / T1 + 1, nj = (c0 + nc - 1) / T2 - c0 / T2 + 1;
  const int64_t per_pair = tlk::min(T1, nr) * tlk::min(T2, nc);
  const int G = ghost_group_lanes(per_pair);
  const int64_t threads = ni * nj * G;
  const tlk::LaunchPlan plan{dim3(static_cast<unsigned>((threads + kGhostThreads - 1) / kGhostThreads)),
                             dim3(kGhostThreads), 0};
  launch(plan, ghost_pair_reduce_kernel<T>, DD, AA, out, nr, nc, r0, c0, T1, T2, B2, G);
}

}  // namespace tlk::kernels

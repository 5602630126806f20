// Device code of batched k-means (docs/design.md §4.3). Torch-free: compiled by nvcc for the CUDA
// backend and by the host compiler for the SIMT emulator, with the same launch plans.
//
// kmeans_assign_kernel: grid (row tiles of 128, problems), 128 threads, one row per thread.
//   The block streams over the centroids in tiles of 32: for each tile, the rows' and the
//   (mean-shifted) centroids' features go through shared memory in tiles of 32 features, every
//   thread accumulating its row's 32 dot products in registers; then it folds the tile's scores
//   b_k − 2 x·c'_k into a running argmin. No N × K matrix anywhere. Scores within the rounding
//   band of the running best are decided by exact distances Σ (x − c)² (ties → lowest index),
//   so the label is the truly nearest centroid, as on the CPU; dist2 is the winner's exact
//   distance (float32 cancellation does not show).
// kmeans_scores_kernel: the same decisions from a score block computed by a vendor GEMM
//   (kmeans_gemm.h; tensor cores on CUDA), one row per thread, within a band that covers the
//   GEMM's precision.
// kmeans_partial_kernel + kmeans_reduce_kernel: the update without atomics. Rows are cut into R
//   ranges (R a function of the shapes only); a block owns (range, 128 features, problem) and
//   each thread walks its range's rows in order adding its feature of x into the float64
//   partial sum of the row's cluster (a thread owns its column: no races). The reduction sums
//   the R partials in range order. Deterministic, bit-identical run to run.
//
// Problem p reads data set X[p / M] (M problems per data set: n_init runs, k-means++
// candidates) and centroids C[p] (or C[0] when shared).
#pragma once

#include <cstdint>

#include "simt.cuh"

namespace tlk::kernels {

constexpr int kKMeansRows = 128;    // rows per block of the assignment = threads per block
constexpr int kKMeansTK = 32;       // centroids per tile
constexpr int kKMeansTD = 32;       // features per tile
constexpr int kKMeansLD = kKMeansTD + 1;
constexpr int kKMeansUpdateThreads = 128;
constexpr int64_t kKMeansMaxGridY = 65535;

template <typename T>
TLK_DEVICE_INLINE T kmeans_sqdist(const T* __restrict__ x, const T* __restrict__ c, int64_t D) {
  T acc = T(0);
  count_flops(3 * D);
  for (int64_t d = 0; d < D; ++d) {
    const T t = ld_global(&x[d]) - ld_global(&c[d]);
    acc += t * t;
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kKMeansRows)
kmeans_assign_kernel(const T* __restrict__ X,           // (Px, N, D)
                     const T* __restrict__ Cs,          // (Pc, K, D): centroids minus their mean
                     const T* __restrict__ b,           // (Pc, K): ‖c'‖² + 2 m·c'
                     const T* __restrict__ C,           // (Pc, K, D): the centroids
                     const T* __restrict__ band_base,   // (Pc,)
                     const T* __restrict__ band_slope,  // (Pc,)
                     int64_t* __restrict__ labels,      // (P, N)
                     T* __restrict__ dist2,             // (P, N)
                     int64_t p0, int64_t N, int64_t K, int64_t D, int64_t M, int c_shared) {
  TLK_SHARED_2D(T, Xs, kKMeansRows, kKMeansLD);
  TLK_SHARED_2D(T, Ct, kKMeansTK, kKMeansLD);
  const int t = threadIdx.x;
  const int64_t p = p0 + blockIdx.y;
  const int64_t cp = c_shared ? 0 : p;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kKMeansRows;
  const int64_t n = row0 + t;
  const T* Xp = X + (p / M) * N * D;
  const T* Csp = Cs + cp * K * D;
  const T* bp = b + cp * K;
  const T* Cp = C + cp * K * D;

  T xsq = T(0);
  T band = T(0);
  T m = T(0);                                                 // smallest score seen
  int64_t best = -1;
  T best_e = T(0);                                            // exact distance of best, if known
  bool have_e = false;
  for (int64_t k0 = 0; k0 < K; k0 += kKMeansTK) {
    __syncthreads();  // the previous tile's scores (in Xs) are read before Xs is overwritten
    T acc[kKMeansTK];
    TLK_UNROLL
    for (int j = 0; j < kKMeansTK; ++j) acc[j] = T(0);
    for (int64_t d0 = 0; d0 < D; d0 += kKMeansTD) {
      // rows tile: element e = t + 128 i of the 128 × 32 tile, so consecutive threads read
      // consecutive features of a row
      for (int i = 0; i < kKMeansTD; ++i) {
        const int e = t + kKMeansRows * i;
        const int r = e / kKMeansTD, c = e % kKMeansTD;
        const int64_t gn = row0 + r, gd = d0 + c;
        st_shared(&Xs[r][c], (gn < N && gd < D) ? ld_global(&Xp[gn * D + gd]) : T(0));
      }
      for (int i = 0; i < kKMeansTK * kKMeansTD / kKMeansRows; ++i) {
        const int e = t + kKMeansRows * i;
        const int r = e / kKMeansTD, c = e % kKMeansTD;
        const int64_t gk = k0 + r, gd = d0 + c;
        st_shared(&Ct[r][c], (gk < K && gd < D) ? ld_global(&Csp[gk * D + gd]) : T(0));
      }
      __syncthreads();
      for (int c = 0; c < kKMeansTD; ++c) {
        const T xv = ld_shared(&Xs[t][c]);
        if (k0 == 0) xsq += xv * xv;
        TLK_UNROLL
        for (int j = 0; j < kKMeansTK; ++j) acc[j] += xv * ld_shared(&Ct[j][c]);
      }
      count_flops(2 * kKMeansTK * kKMeansTD);
      __syncthreads();
    }
    if (k0 == 0) {
      const T xn = sqrt(xsq);
      band = band_base[cp] + band_slope[cp] * xn;
    }
    // the tile's scores go to this thread's row of Xs (free after the barrier above), so the
    // fold below indexes shared memory, not the register array acc
    TLK_UNROLL
    for (int j = 0; j < kKMeansTK; ++j) {
      if (k0 + j < K) st_shared(&Xs[t][j], ld_global(&bp[k0 + j]) - T(2) * acc[j]);
    }
    if (n < N) {
      const T* x = Xp + n * D;
      for (int j = 0; j < kKMeansTK && k0 + j < K; ++j) {
        const int64_t k = k0 + j;
        const T s = ld_shared(&Xs[t][j]);
        if (best < 0 || s < m - band) {
          best = k;
          m = s;
          have_e = false;
        } else if (TLK_BRANCH(s <= m + band)) {  // within the rounding band of the best: exact distances decide
          if (!have_e) {
            best_e = kmeans_sqdist(x, Cp + best * D, D);
            have_e = true;
          }
          const T e = kmeans_sqdist(x, Cp + k * D, D);
          if (e < best_e) {
            best = k;
            best_e = e;
          }
          if (s < m) m = s;
        }
      }
    }
  }
  if (n < N) {
    const T e = have_e ? best_e : kmeans_sqdist(Xp + n * D, Cp + best * D, D);
    st_global(&labels[p * N + n], best);
    st_global(&dist2[p * N + n], e);
  }
}

// The epilogue of the GEMM path (kmeans_gemm.h): one row per thread, the scores b' + G of a score
// block G (cols, ldg) = (−2C')·(X − v)ᵀ of one chunk read down a column (consecutive threads, consecutive
// rows: coalesced), folded into the argmin exactly as kmeans_assign_kernel folds its tiles: scores
// within the band of the running best are decided by exact distances (ties → lowest index).
// Grid (row tiles of 128, np problems of one data set); problem p = p0 + blockIdx.y reads the
// rows q·K.. of G with q = blockIdx.y (q = 0 when C is shared).
template <typename T>
__global__ void __launch_bounds__(kKMeansRows)
kmeans_scores_kernel(const T* __restrict__ G,           // (cols, ldg): −2 (x − v)·c'
                     int64_t ldg,
                     const T* __restrict__ X,           // (Px, N, D)
                     const T* __restrict__ V,           // (Px, D): v
                     const T* __restrict__ b,           // (Pc, K): b − 2 v·c'
                     const T* __restrict__ C,           // (Pc, K, D)
                     const T* __restrict__ band_base,   // (Pc,)
                     const T* __restrict__ band_slope,  // (Pc,)
                     int64_t* __restrict__ labels,      // (P, N)
                     T* __restrict__ dist2,             // (P, N)
                     int64_t p0, int64_t n0, int64_t rows, int64_t N, int64_t K, int64_t D, int64_t M,
                     int c_shared) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kKMeansRows + threadIdx.x;
  if (TLK_BRANCH(r >= rows)) return;
  const int64_t q = blockIdx.y;
  const int64_t p = p0 + q;
  const int64_t cp = c_shared ? 0 : p;
  const int64_t n = n0 + r;
  const T* x = X + ((p / M) * N + n) * D;
  const T* Gq = G + (c_shared ? 0 : q) * K * ldg + r;
  const T* bp = b + cp * K;
  const T* Cp = C + cp * K * D;
  // ‖x − v‖ from the row the GEMM just read (in L2: the chunk is sized for it)
  const T* v = V + (p / M) * D;
  T xsq = T(0);
  for (int64_t d = 0; d < D; ++d) {
    const T t = ld_global(&x[d]) - ld_global(&v[d]);
    xsq += t * t;
  }
  const T band = ld_global(&band_base[cp]) + ld_global(&band_slope[cp]) * sqrt(xsq);
  count_flops(3 * D + 3);
  T m = T(0);
  int64_t best = -1;
  T best_e = T(0);
  bool have_e = false;
  for (int64_t k = 0; k < K; ++k) {
    const T bk = ld_global(&bp[k]);
    const T s = bk + ld_global(&Gq[k * ldg]);
    count_flops(1);
    if (best < 0 || s < m - band) {
      best = k;
      m = s;
      have_e = false;
    } else if (TLK_BRANCH(s <= m + band)) {  // within the rounding band of the best: exact distances decide
      if (!have_e) {
        best_e = kmeans_sqdist(x, Cp + best * D, D);
        have_e = true;
      }
      const T e = kmeans_sqdist(x, Cp + k * D, D);
      if (e < best_e) {
        best = k;
        best_e = e;
      }
      if (s < m) m = s;
    }
  }
  const T e = have_e ? best_e : kmeans_sqdist(x, Cp + best * D, D);
  st_global(&labels[p * N + n], best);
  st_global(&dist2[p * N + n], e);
}

// Zeroes, then fills, the float64 partials of one (range, feature tile, problem):
// part (P, R, K, D + 1), column D holding the weights (counts).
template <typename T>
__global__ void __launch_bounds__(kKMeansUpdateThreads)
kmeans_partial_kernel(const T* __restrict__ X,         // (Px, N, D)
                      const int64_t* __restrict__ L,   // (P, N), all in [0, K) (checked by the host)
                      const T* __restrict__ W,         // (Pw, N) or nullptr
                      double* __restrict__ part,       // (P, R, K, D + 1)
                      int64_t p0, int64_t N, int64_t K, int64_t D, int64_t R, int64_t M, int64_t MW) {
  const int64_t r = blockIdx.x;
  const int64_t p = p0 + blockIdx.z;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kKMeansUpdateThreads + threadIdx.x;
  if (col > D) return;  // column D: the weights
  const int64_t rows = (N + R - 1) / R;
  const int64_t n0 = r * rows, n1 = tlk::min(N, n0 + rows);
  double* P_ = part + (p * R + r) * K * (D + 1);
  for (int64_t k = 0; k < K; ++k) P_[k * (D + 1) + col] = 0.0;
  const T* Xp = X + (p / M) * N * D;
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t k = ld_global(&L[p * N + n]);
    const double w = W != nullptr ? static_cast<double>(ld_global(&W[(p / MW) * N + n])) : 1.0;
    const double v = col < D ? static_cast<double>(ld_global(&Xp[n * D + col])) : 1.0;
    double* dst = &P_[k * (D + 1) + col];
    st_global(dst, ld_global(dst) + (W != nullptr ? w * v : v));
  }
}

template <typename T>
__global__ void __launch_bounds__(kKMeansUpdateThreads)
kmeans_reduce_kernel(const double* __restrict__ part,  // (P, R, K, D + 1)
                     T* __restrict__ sums,              // (P, K, D)
                     T* __restrict__ counts,            // (P, K)
                     int64_t P, int64_t K, int64_t D, int64_t R) {
  const int64_t total = P * K * (D + 1);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t col = i % (D + 1);
    const int64_t pk = i / (D + 1);
    const int64_t p = pk / K, k = pk % K;
    double acc = 0.0;
    for (int64_t r = 0; r < R; ++r) acc += ld_global(&part[((p * R + r) * K + k) * (D + 1) + col]);
    if (col < D) {
      st_global(&sums[pk * D + col], static_cast<T>(acc));
    } else {
      st_global(&counts[pk], static_cast<T>(acc));
    }
  }
}

// Row ranges of the update: a function of the shapes only; partials bounded to ~256 MiB.
inline int64_t kmeans_update_ranges(int64_t N, int64_t P, int64_t K, int64_t D) {
  const int64_t by_rows = (N + 255) / 256;
  const int64_t per_range = P * K * (D + 1) * static_cast<int64_t>(sizeof(double));
  const int64_t by_memory = (int64_t{256} << 20) / (per_range > 0 ? per_range : 1);
  int64_t R = by_rows < 256 ? by_rows : 256;
  R = R < by_memory ? R : by_memory;
  return R > 0 ? R : 1;
}

// labels / dist2 for P problems. Problems beyond gridDim.y's limit go in several launches.
template <typename T, typename Launch>
void kmeans_assign(Launch&& launch, const T* X, const T* Cs, const T* b, const T* C, const T* band_base,
                   const T* band_slope, int64_t* labels, T* dist2, int64_t P, int64_t N, int64_t K, int64_t D,
                   int64_t M, bool c_shared) {
  if (N == 0 || P == 0) return;
  const unsigned row_tiles = static_cast<unsigned>((N + kKMeansRows - 1) / kKMeansRows);
  for (int64_t p0 = 0; p0 < P; p0 += kKMeansMaxGridY) {
    const int64_t np = P - p0 < kKMeansMaxGridY ? P - p0 : kKMeansMaxGridY;
    const tlk::LaunchPlan plan{dim3(row_tiles, static_cast<unsigned>(np)), dim3(kKMeansRows), 0};
    launch(plan, kmeans_assign_kernel<T>, X, Cs, b, C, band_base, band_slope, labels, dist2, p0, N, K, D, M,
           static_cast<int>(c_shared));
  }
}

// labels / dist2 of np problems p0.. of one data set for the chunk rows n0 .. n0 + rows, from the
// chunk's score block G (cols, ldg). Problems beyond gridDim.y's limit go in several launches.
template <typename T, typename Launch>
void kmeans_scores(Launch&& launch, const T* G, int64_t ldg, const T* X, const T* V, const T* b, const T* C,
                   const T* band_base, const T* band_slope, int64_t* labels, T* dist2, int64_t p0, int64_t np,
                   int64_t n0, int64_t rows, int64_t N, int64_t K, int64_t D, int64_t M, bool c_shared) {
  if (rows == 0 || np == 0) return;
  const unsigned row_tiles = static_cast<unsigned>((rows + kKMeansRows - 1) / kKMeansRows);
  for (int64_t q0 = 0; q0 < np; q0 += kKMeansMaxGridY) {
    const int64_t nq = np - q0 < kKMeansMaxGridY ? np - q0 : kKMeansMaxGridY;
    const tlk::LaunchPlan plan{dim3(row_tiles, static_cast<unsigned>(nq)), dim3(kKMeansRows), 0};
    launch(plan, kmeans_scores_kernel<T>, G + (c_shared ? 0 : q0 * K * ldg), ldg, X, V, b, C, band_base,
           band_slope, labels, dist2, p0 + q0, n0, rows, N, K, D, M, static_cast<int>(c_shared));
  }
}

// sums / counts for P problems through part (P, R, K, D + 1) float64 scratch, R from
// kmeans_update_ranges.
template <typename T, typename Launch>
void kmeans_update(Launch&& launch, const T* X, const int64_t* L, const T* W, double* part, T* sums, T* counts,
                   int64_t P, int64_t N, int64_t K, int64_t D, int64_t R, int64_t M, int64_t MW) {
  if (P == 0) return;
  const unsigned col_tiles = static_cast<unsigned>((D + 1 + kKMeansUpdateThreads - 1) / kKMeansUpdateThreads);
  for (int64_t p0 = 0; p0 < P; p0 += kKMeansMaxGridY) {
    const int64_t np = P - p0 < kKMeansMaxGridY ? P - p0 : kKMeansMaxGridY;
    const tlk::LaunchPlan plan{dim3(static_cast<unsigned>(R), col_tiles, static_cast<unsigned>(np)),
                               dim3(kKMeansUpdateThreads), 0};
    launch(plan, kmeans_partial_kernel<T>, X, L, W, part, p0, N, K, D, R, M, MW);
  }
  const int64_t total = P * K * (D + 1);
  int64_t blocks = (total + kKMeansUpdateThreads - 1) / kKMeansUpdateThreads;
  blocks = blocks < 4096 ? blocks : 4096;
  const tlk::LaunchPlan plan{dim3(static_cast<unsigned>(blocks > 0 ? blocks : 1)), dim3(kKMeansUpdateThreads), 0};
  launch(plan, kmeans_reduce_kernel<T>, part, sums, counts, P, K, D, R);
}

}  // namespace tlk::kernels

// CPU backend of batched k-means (docs/design.md §4.3).
//
// Assignment: the rows of X are cut into chunks that fit in L2; per chunk one at::mm gives
// G = X_chunk · (−2 C')ᵀ (chunk × K, never N × K; C' the centroids minus their mean, see
// shift_centroids), and a fused epilogue forms the scores b − 2x·c', takes their minimum, and
// decides between the centroids within the rounding band of it by exact distances Σ (x − c)²
// (ties → lowest index); the winner's exact distance is dist2, so float32 cancellation shows
// neither in the labels nor in dist2 (nor in the inertia).
// When X is shared by P problems (n_init runs, k-means++ candidates), one GEMM per chunk serves
// all of them (P·K columns): X is read once. With AVX-512, float32 and K ≤ 64 the chunk skips the
// GEMM and the score block: cpu/kmeans_direct_avx512.h keeps the scores in registers (same
// decisions, same labels and distances). With AMX (Sapphire Rapids and later), float32 and K > 64,
// tile products of a two-part bf16 split replace at::mm (cpu/kmeans_amx.h), within a band widened
// by their error bound. With K = 1 (the k-means++ candidates: one-centroid
// problems sharing X) there is nothing to compare: label 0 and the exact distance, no GEMM.
//
// Update: rows are cut into ranges whose number depends only on the shapes (not on the thread
// count); each range sums into its own float64 partials in row order, and the partials are
// reduced in range order. No atomics: bit-identical results run to run, for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/kmeans_simd.h"
#include "kmeans.h"

// MKL's per-thread thread count, C interface (exported by libtorch_cpu when torch uses MKL; weak: absent in
// other builds). The GEMMs run inside at::parallel_for, one per task: they must be sequential,
// or each of the OpenMP threads would start MKL threads of its own (oversubscription).
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace tlk {
namespace {

// Sequential MKL on this thread for the guard's lifetime.
struct SequentialBlas {
  int previous = 0;
  SequentialBlas() {
    if (MKL_Set_Num_Threads_Local != nullptr) previous = MKL_Set_Num_Threads_Local(1);
  }
  ~SequentialBlas() {
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(previous);
  }
};

using kmeans_cpu::assign_row;
using kmeans_cpu::sqdist;

constexpr int64_t kChunkBytes = 1 << 18;  // the G block of one chunk stays in L2
constexpr int64_t kMaxChunkRows = 2048;
constexpr int64_t kMinChunkRows = 16;

// TLK_KMEANS_SIMD's names of the levels, in the order of kmeans_cpu::Simd.
constexpr const char* kLevelNames[] = {"scalar", "avx2", "avx512", "avx512_direct", "avx512_wide", "avx512_amx"};
constexpr int kLevels = static_cast<int>(sizeof(kLevelNames) / sizeof(kLevelNames[0]));

// The widest row kernels this CPU runs, capped by the environment variable TLK_KMEANS_SIMD
// ('scalar', 'avx2', 'avx512' (GEMM + transposed epilogue), 'avx512_direct' (the GEMM-free
// kernel for K ≤ 64), 'avx512_wide' (the GEMM-free kernel up to K = 512) or 'avx512_amx' (AMX tile
// products for K > 64); read at every call, so tests can compare the levels).
kmeans_cpu::Simd simd_level() {
  using kmeans_cpu::Simd;
  Simd best = Simd::kScalar;
#if TLK_KMEANS_X86
  if (kmeans_cpu::has_avx2()) best = kmeans_cpu::has_avx512() ? Simd::kAvx512Direct : Simd::kAvx2;
  if (best == Simd::kAvx512Direct && kmeans_cpu::has_amx()) best = Simd::kAvx512Amx;
  if (best == Simd::kAvx512Direct && kmeans_cpu::is_amd()) best = Simd::kAvx512Wide;
#endif
  const char* env = std::getenv("TLK_KMEANS_SIMD");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  int cap = 0;
  while (cap < kLevels && want != kLevelNames[cap]) ++cap;
  TORCH_CHECK_VALUE(cap < kLevels, "TLK_KMEANS_SIMD must be 'scalar', 'avx2', 'avx512', 'avx512_direct', "
                    "'avx512_wide' or 'avx512_amx', got '", want, "'");
  return cap < static_cast<int>(best) ? static_cast<Simd>(cap) : best;
}

// The rounding band of the AMX scores, per problem: the band of float32 products widened by the
// error of the bf16 split (3.1·u²·‖x‖·‖−2c'‖ with u = 2⁻⁸, taken as 6.5·u²·max‖c'‖ per unit of
// ‖x‖) and by the denormals AMX flushes (inputs treated as zero, results of the 3D additions
// flushed: ≤ 2⁻¹²⁶ each). Returns (base (Pc,), slope (Pc,)) float32.
std::pair<at::Tensor, at::Tensor> amx_band(const ShiftedCentroids& sc, int64_t D) {
  const double u2 = std::ldexp(1.0, -16), tiny = std::ldexp(1.0, -126), rd = std::sqrt(static_cast<double>(D));
  const at::Tensor maxc = sc.Cs.to(at::kDouble).square().sum(-1).sqrt().amax(-1).reshape({-1});
  const at::Tensor base = sc.band_base.to(at::kDouble) + (4.0 * static_cast<double>(D) + 8.0 * rd * maxc) * tiny;
  const at::Tensor slope = sc.band_slope.to(at::kDouble) + 6.5 * u2 * maxc + 4.0 * rd * tiny;
  return {base.to(at::kFloat).contiguous(), slope.to(at::kFloat).contiguous()};
}

// Keeps the smallest value stored (the first offending element in a fixed numbering), so that
// error messages do not depend on thread timing.
void record_min(std::atomic<int64_t>& slot, int64_t value) {
  int64_t cur = slot.load(std::memory_order_relaxed);
  while (value < cur && !slot.compare_exchange_weak(cur, value, std::memory_order_relaxed)) {
  }
}

// How many row ranges the update uses: a function of the shapes only (determinism for any
// thread count), enough for load balance, and partials bounded to ~64 MiB.
int64_t update_ranges(int64_t N, int64_t P, int64_t K, int64_t D) {
  const int64_t by_rows = (N + 2047) / 2048;
  const int64_t per_range_bytes = P * K * (D + 1) * static_cast<int64_t>(sizeof(double));
  const int64_t by_memory = std::max<int64_t>(1, (int64_t{64} << 20) / std::max<int64_t>(1, per_range_bytes));
  return std::max<int64_t>(1, std::min({by_rows, int64_t{64}, by_memory}));
}

// acc (D,) += w * x (D,) in float64.
template <typename T, bool WEIGHTED>
__attribute__((always_inline)) inline void accumulate_row(double* __restrict acc, const T* __restrict x, double w,
                                                          int64_t D) {
  for (int64_t d = 0; d < D; ++d) {
    if constexpr (WEIGHTED) {
      acc[d] += w * static_cast<double>(x[d]);
    } else {
      acc[d] += static_cast<double>(x[d]);
    }
  }
}

// One row range [n0, n1) of every problem into its partials ps (P, K, D) / pc (P, K), rows in
// order. Returns the first bad label / weight (linear index p * N + n) through the two slots.
template <typename T, bool WEIGHTED>
struct RangeArgs {
  const T* X;        // (Px, N, D)
  const int64_t* L;  // (P, N)
  const T* W;        // (Pw, N) or nullptr
  int64_t Px, M, MW, N, K, D, n0, n1;
  double* ps;
  double* pc;
};

template <typename T, bool WEIGHTED>
__attribute__((always_inline)) inline void update_range_body(const RangeArgs<T, WEIGHTED>& r, int64_t& bad_label,
                                                             int64_t& bad_weight) {
  const int64_t N = r.N, K = r.K, D = r.D, M = r.M;
  // The M problems of a data set are served by one pass over its rows.
  for (int64_t g = 0; g < r.Px; ++g) {
    for (int64_t n = r.n0; n < r.n1; ++n) {
      const T* x = r.X + (g * N + n) * D;
      for (int64_t q = 0; q < M; ++q) {
        const int64_t p = g * M + q;
        const int64_t k = r.L[p * N + n];
        if (k < 0 || k >= K) {
          bad_label = std::min(bad_label, p * N + n);
          continue;
        }
        double w = 1.0;
        if constexpr (WEIGHTED) {
          const T wt = r.W[(p / r.MW) * N + n];
          if (!(wt >= 0) || !std::isfinite(wt)) {
            bad_weight = std::min(bad_weight, p * N + n);
            continue;
          }
          w = static_cast<double>(wt);
        }
        accumulate_row<T, WEIGHTED>(r.ps + (p * K + k) * D, x, w, D);
        r.pc[p * K + k] += w;
      }
    }
  }
}

template <typename T, bool WEIGHTED>
void update_range_plain(const RangeArgs<T, WEIGHTED>& r, int64_t& bl, int64_t& bw) {
  update_range_body<T, WEIGHTED>(r, bl, bw);
}

#if TLK_KMEANS_X86
template <typename T, bool WEIGHTED>
__attribute__((target("avx2"))) void update_range_avx2(const RangeArgs<T, WEIGHTED>& r, int64_t& bl, int64_t& bw) {
  update_range_body<T, WEIGHTED>(r, bl, bw);
}

// The same loops in 512-bit vectors (each element still summed in row order: same bits).
template <typename T, bool WEIGHTED>
__attribute__((target("avx512f,avx512dq,avx512vl"))) void update_range_avx512(const RangeArgs<T, WEIGHTED>& r,
                                                                            int64_t& bl, int64_t& bw) {
  update_range_body<T, WEIGHTED>(r, bl, bw);
}
#endif

// One row range at the widest level the CPU (and TLK_KMEANS_SIMD) allows.
template <typename T, bool WEIGHTED>
void update_range(kmeans_cpu::Simd level, const RangeArgs<T, WEIGHTED>& r, int64_t& bl, int64_t& bw) {
#if TLK_KMEANS_X86
  if (static_cast<int>(level) >= static_cast<int>(kmeans_cpu::Simd::kAvx512)) return update_range_avx512<T, WEIGHTED>(r, bl, bw);
  if (level == kmeans_cpu::Simd::kAvx2) return update_range_avx2<T, WEIGHTED>(r, bl, bw);
#endif
  update_range_plain<T, WEIGHTED>(r, bl, bw);
}

// sums (P, K, D) / counts (P, K) = Σ_r partials (R, P, K, D) / (R, P, K), r in order; raises when
// a sum is not finite.
template <typename T>
void reduce_partials(const std::vector<double>& psum, const std::vector<double>& pcnt, int64_t R, int64_t P,
                     int64_t K, int64_t D, T* sums, T* counts) {
  std::atomic<bool> finite{true};
  at::parallel_for(0, P * K, 64, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(static_cast<size_t>(D));
    for (int64_t pk = begin; pk < end; ++pk) {
      std::fill(acc.begin(), acc.end(), 0.0);
      double c = 0.0;
      for (int64_t r = 0; r < R; ++r) {
        const double* ps = psum.data() + (r * P * K + pk) * D;
        for (int64_t d = 0; d < D; ++d) acc[d] += ps[d];
        c += pcnt[r * P * K + pk];
      }
      bool ok = true;
      for (int64_t d = 0; d < D; ++d) {
        sums[pk * D + d] = static_cast<T>(acc[d]);
        ok = ok && std::isfinite(sums[pk * D + d]);
      }
      counts[pk] = static_cast<T>(c);
      if (!ok) finite.store(false, std::memory_order_relaxed);
    }
  });
  TORCH_CHECK_VALUE(finite.load(), "X must be finite: the cluster sums hold NaN or inf (NaN or inf in X, "
                    "or values too large)");
}

// How one call's chunks are scored, fixed before the chunks run: the kernel level of this CPU,
// the centroids prepared for it, and the chunk geometry. Exactly one of single / direct / amx /
// neither (GEMM) holds for a chunk kernel.
template <typename T>
struct AssignPlan {
  kmeans_cpu::Simd level;
  bool single;      // K = 1: no scores to compare, the exact distances alone
  bool direct;      // few centroids, float32, AVX-512 or AVX2: the direct kernel replaces at::mm and the epilogue
  bool amx;         // AMX tile products replace at::mm; the transposed epilogue reads them with a wider band
  bool transposed;  // the score block is (cols, rows) (the AVX-512 epilogue)
  int64_t M, cols, chunk, ld_t;
  at::Tensor Cm2_flat;  // −2 c' (P·K or K, D): the GEMM's right-hand side
  std::vector<kmeans_cpu::DirectCentroids> dcs;
  std::vector<kmeans_cpu::AmxCentroids> acs;
  at::Tensor amx_base, amx_slope;
  const T* band_base;
  const T* band_slope;
};

// The centroid forms of the direct and AMX kernels, one per centroid set (one when C is shared),
// and the AMX kernel's wider rounding band.
template <typename T>
void prepare_centroids(AssignPlan<T>& plan, const ShiftedCentroids& sc, const at::Tensor& Cm2, int64_t n_sets,
                       int64_t K, int64_t D) {
#if TLK_KMEANS_X86
  if constexpr (std::is_same_v<T, float>) {
    const float* cm2 = Cm2.const_data_ptr<float>();
    const float* cnp = sc.b.const_data_ptr<float>();
    for (int64_t cp = 0; plan.direct && cp < n_sets; ++cp) {
      plan.dcs.push_back(kmeans_cpu::make_direct_centroids(cm2 + cp * K * D, cnp + cp * K, K, D));
    }
    for (int64_t cp = 0; plan.amx && cp < n_sets; ++cp) {
      plan.acs.push_back(kmeans_cpu::make_amx_centroids(cm2 + cp * K * D, K, D));
    }
    if (plan.amx) {
      std::tie(plan.amx_base, plan.amx_slope) = amx_band(sc, D);
      plan.band_base = plan.amx_base.template const_data_ptr<T>();
      plan.band_slope = plan.amx_slope.template const_data_ptr<T>();
    }
  }
#endif
}

// A thread's scratch: the score block, and the AMX kernel's packed rows and centroid pointers.
template <typename T>
struct ChunkScratch {
  std::vector<T> buf;
  std::vector<uint16_t> xb_hi, xb_lo;
  std::vector<const kmeans_cpu::AmxCentroids*> acp;
  int64_t amx_blocks = 0;

  ChunkScratch(const AssignPlan<T>& plan, int64_t N, int64_t D) {
    // (AMX: 16 spare rows for the padding of the last problem's last centroid tile)
    const int64_t rows = std::min(plan.chunk, N);
    if (!plan.direct && !plan.single) {
      buf.resize(static_cast<size_t>(plan.transposed ? (plan.cols + (plan.amx ? 16 : 0)) * plan.ld_t
                                                     : rows * plan.cols));
    }
#if TLK_KMEANS_X86
    if (plan.amx) {
      amx_blocks = (D + kmeans_cpu::kAmxDepth - 1) / kmeans_cpu::kAmxDepth;
      const size_t packed = static_cast<size_t>((rows + 15) / 16 * amx_blocks * 512);
      xb_hi.resize(packed);
      xb_lo.resize(packed);
      acp.resize(static_cast<size_t>(plan.M));
    }
#endif
  }
};

// The five chunk kernels. Each writes the labels and distances of the chunk's rows for the M
// problems of group g and returns the smallest linear index of a non-finite distance (or the max).

template <typename T>
int64_t chunk_single(const kmeans_cpu::ChunkEpilogue<T>& e, const AssignPlan<T>& plan) {
  return kmeans_cpu::single_centroid(e, plan.level);
}

template <typename T>
int64_t chunk_direct(const kmeans_cpu::ChunkEpilogue<T>& e, const AssignPlan<T>& plan) {
#if TLK_KMEANS_X86
  if constexpr (std::is_same_v<T, float>) return kmeans_cpu::direct_chunk(e, plan.dcs, plan.level);
#endif
  return std::numeric_limits<int64_t>::max();  // not reached: use_direct() is false here
}

template <typename T>
int64_t chunk_amx(const kmeans_cpu::ChunkEpilogue<T>& e, const AssignPlan<T>& plan, ChunkScratch<T>& s,
                  int64_t g, bool c_shared) {
#if TLK_KMEANS_X86
  if constexpr (std::is_same_v<T, float>) {
    kmeans_cpu::pack_amx_rows(e.x, e.rows, e.D, s.amx_blocks, s.xb_hi.data(), s.xb_lo.data());
    for (int64_t q = 0; q < plan.M; ++q) s.acp[q] = &plan.acs[c_shared ? 0 : g * plan.M + q];
    kmeans_cpu::amx_scores(s.xb_hi.data(), s.xb_lo.data(), e.rows, s.acp.data(), plan.M, e.K, s.buf.data(),
                           plan.ld_t);
  }
#endif
  return kmeans_cpu::epilogue(e, plan.level);
}

template <typename T>
int64_t chunk_gemm(const kmeans_cpu::ChunkEpilogue<T>& e, const AssignPlan<T>& plan, ChunkScratch<T>& s,
                   int64_t g, bool c_shared, const at::TensorOptions& opts) {
  const at::Tensor Cg = c_shared ? plan.Cm2_flat : plan.Cm2_flat.narrow(0, g * plan.M * e.K, plan.M * e.K);
  at::Tensor xs = at::from_blob(const_cast<T*>(e.x), {e.rows, e.D}, opts);
  if (plan.transposed) {  // (cols, rows): W rows per vector in the epilogue
    at::Tensor out = at::from_blob(s.buf.data(), {plan.cols, e.rows}, {plan.ld_t, 1}, opts);
    at::mm_out(out, Cg, xs.t());
  } else {
    at::Tensor out = at::from_blob(s.buf.data(), {e.rows, plan.cols}, opts);
    at::mm_out(out, xs, Cg.t());
  }
  return kmeans_cpu::epilogue(e, plan.level);
}

template <typename T>
int64_t assign_chunk(const kmeans_cpu::ChunkEpilogue<T>& e, const AssignPlan<T>& plan, ChunkScratch<T>& s,
                     int64_t g, bool c_shared, const at::TensorOptions& opts) {
  if (plan.single) return chunk_single(e, plan);
  if (plan.direct) return chunk_direct(e, plan);
  if (plan.amx) return chunk_amx(e, plan, s, g, c_shared);
  return chunk_gemm(e, plan, s, g, c_shared, opts);
}

// The assignment, and with FUSED the update of the new labels in the same pass (kmeans_step):
// a task is one data set's run of consecutive chunks; FUSED tasks are the update's row ranges
// (a function of the shapes only) and sum into their own float64 partials, reduced in order.
// W (Pw, N) weights (WEIGHTED), MW = P / Pw.
template <typename T, bool FUSED, bool WEIGHTED>
void assign_impl(const KMeansAssignArgs& a, int64_t* labels, T* dist2, const T* W = nullptr, int64_t MW = 1,
                 T* sums = nullptr, T* counts = nullptr) {
  const int64_t P = a.P, N = a.N, K = a.K, D = a.D;
  // One data set shared by problems that also share C: all identical, solve one and copy.
  const bool identical = a.c_shared && a.per_x() > 1;
  const int64_t P_eff = identical ? 1 : P;
  // A group is one data set with the M problems reading it: one GEMM serves all M (M·K columns).
  const int64_t groups = a.Px;

  const ShiftedCentroids sc = shift_centroids(a.C);
  const at::Tensor Cm2 = sc.Cs * -2;  // exact scaling by a power of two: G = −2 x·c'
  AssignPlan<T> plan;
  plan.level = simd_level();
  plan.single = K == 1;
  plan.direct = !plan.single && kmeans_cpu::use_direct<T>(plan.level, K);
  plan.amx = !plan.single && kmeans_cpu::use_amx<T>(plan.level, K);
  plan.transposed = kmeans_cpu::gemm_transposed(plan.level);
  plan.M = identical ? 1 : a.per_x();
  plan.cols = plan.M * K;
  plan.Cm2_flat = a.c_shared ? Cm2 : Cm2.view({P * K, D});
  plan.band_base = sc.band_base.const_data_ptr<T>();  // the AMX band replaces these
  plan.band_slope = sc.band_slope.const_data_ptr<T>();
  prepare_centroids(plan, sc, Cm2, a.c_shared ? 1 : P, K, D);
  const T* C = a.C.const_data_ptr<T>();
  const T* cnp = sc.b.const_data_ptr<T>();
  const T* X = a.X.const_data_ptr<T>();

  int64_t chunk = kChunkBytes / std::max<int64_t>(1, plan.cols * static_cast<int64_t>(sizeof(T)));
  chunk = std::clamp<int64_t>(chunk / kMinChunkRows * kMinChunkRows, kMinChunkRows, kMaxChunkRows);
  plan.chunk = chunk;
  // A transposed block (cols, rows) gets a padded leading dimension: with rows · sizeof(T) a
  // multiple of 4 KiB, walking down a column would hit a single L1 set.
  plan.ld_t = (std::min(chunk, N) + 15) / 16 * 16 + 16;
  const int64_t M = plan.M;
  const int64_t n_chunks = (N + chunk - 1) / chunk;
  const int64_t R = FUSED ? std::min(update_ranges(N, P_eff, K, D), n_chunks) : n_chunks;
  const int64_t chunks_per_task = (n_chunks + R - 1) / R;
  std::vector<double> psum(FUSED ? static_cast<size_t>(R * P_eff * K * D) : 0, 0.0);
  std::vector<double> pcnt(FUSED ? static_cast<size_t>(R * P_eff * K) : 0, 0.0);
  std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
  std::atomic<int64_t> bad_weight{std::numeric_limits<int64_t>::max()};

  at::parallel_for(0, groups * R, 1, [&](int64_t begin, int64_t end) {
    const SequentialBlas sequential_blas;
    ChunkScratch<T> scratch(plan, N, D);
    const auto opts = a.X.options();
#if TLK_KMEANS_X86
    if (plan.amx) kmeans_cpu::amx_configure();
#endif
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / R, r = task % R;
      const T* Xg = X + g * N * D;
      double* ps = FUSED ? psum.data() + r * P_eff * K * D : nullptr;
      double* pc = FUSED ? pcnt.data() + r * P_eff * K : nullptr;
      const int64_t c1 = std::min(n_chunks, (r + 1) * chunks_per_task);
      for (int64_t ch = r * chunks_per_task; ch < c1; ++ch) {
        const int64_t r0 = ch * chunk;
        const int64_t rows = std::min(chunk, N - r0);
        const kmeans_cpu::ChunkEpilogue<T> e{scratch.buf.data(), Xg + r0 * D, C, cnp, plan.band_base,
                                             plan.band_slope, rows, M, K, D, N, r0, g * M, a.c_shared,
                                             labels, dist2, plan.ld_t};
        record_min(first_bad, assign_chunk(e, plan, scratch, g, a.c_shared, opts));
        if constexpr (FUSED) {
          // the chunk's rows, still in cache, into this task's partials (labels just written)
          RangeArgs<T, WEIGHTED> ra{Xg, labels + g * M * N, WEIGHTED ? W + ((g * M) / MW) * N : nullptr, 1, M, MW,
                                    N, K, D, r0, r0 + rows, ps + g * M * K * D, pc + g * M * K};
          int64_t bl = std::numeric_limits<int64_t>::max(), bw = std::numeric_limits<int64_t>::max();
          update_range<T, WEIGHTED>(plan.level, ra, bl, bw);
          if (bw != std::numeric_limits<int64_t>::max()) record_min(bad_weight, bw + g * M * N);
        }
      }
    }
#if TLK_KMEANS_X86
    if (plan.amx) kmeans_cpu::amx_release();
#endif
  });
  const int64_t bad = first_bad.load();
  TORCH_CHECK_VALUE(bad == std::numeric_limits<int64_t>::max(),
                    "X must be finite: the distance of row ", bad % std::max<int64_t>(N, 1),
                    " (problem ", bad / std::max<int64_t>(N, 1),
                    ") to its centroid is not finite (NaN or inf in X, or values too large)");
  const int64_t bw = bad_weight.load();
  if (bw != std::numeric_limits<int64_t>::max()) {
    TORCH_CHECK_VALUE(false, "weights must be finite and non-negative, got ",
                      static_cast<double>(W[(bw / N / MW) * N + bw % N]), " at row ", bw % N);
  }
  for (int64_t p = 1; identical && p < P; ++p) {
    std::copy(labels, labels + N, labels + p * N);
    std::copy(dist2, dist2 + N, dist2 + p * N);
  }
  if constexpr (FUSED) {
    reduce_partials(psum, pcnt, R, P_eff, K, D, sums, counts);
    for (int64_t p = 1; identical && p < P; ++p) {
      std::copy(sums, sums + K * D, sums + p * K * D);
      std::copy(counts, counts + K, counts + p * K);
    }
  }
}

template <typename T, bool WEIGHTED>
void update_impl(const KMeansUpdateArgs& a, T* sums, T* counts) {
  const int64_t P = a.P, N = a.N, K = a.K, D = a.D;
  const int64_t R = update_ranges(N, P, K, D);
  const int64_t rows_per_range = (N + R - 1) / R;
  std::vector<double> psum(static_cast<size_t>(R * P * K * D), 0.0);
  std::vector<double> pcnt(static_cast<size_t>(R * P * K), 0.0);
  const T* X = a.X.const_data_ptr<T>();
  const int64_t* L = a.labels.const_data_ptr<int64_t>();
  const T* W = WEIGHTED ? a.weights.const_data_ptr<T>() : nullptr;
  std::atomic<int64_t> bad_label{std::numeric_limits<int64_t>::max()};
  std::atomic<int64_t> bad_weight{std::numeric_limits<int64_t>::max()};
  const int64_t M = a.per_x();
  const int64_t MW = WEIGHTED ? a.per_w() : 1;
  const kmeans_cpu::Simd level = simd_level();

  at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n0 = r * rows_per_range, n1 = std::min(N, n0 + rows_per_range);
      RangeArgs<T, WEIGHTED> ra{X, L, W, a.Px, M, MW, N, K, D, n0, n1,
                                psum.data() + r * P * K * D, pcnt.data() + r * P * K};
      int64_t bl = std::numeric_limits<int64_t>::max(), bw = std::numeric_limits<int64_t>::max();
      update_range<T, WEIGHTED>(level, ra, bl, bw);
      record_min(bad_label, bl);
      record_min(bad_weight, bw);
    }
  });
  const int64_t bl = bad_label.load();
  if (bl != std::numeric_limits<int64_t>::max()) {
    TORCH_CHECK_VALUE(false, "labels must lie in [0, K) = [0, ", K, "), got ", L[bl], " at row ", bl % N,
                      " (problem ", bl / N, ")");
  }
  const int64_t bw = bad_weight.load();
  if (bw != std::numeric_limits<int64_t>::max()) {
    TORCH_CHECK_VALUE(false, "weights must be finite and non-negative, got ",
                      static_cast<double>(W[(bw / N / MW) * N + bw % N]), " at row ", bw % N);
  }
  reduce_partials(psum, pcnt, R, P, K, D, sums, counts);
}

std::tuple<at::Tensor, at::Tensor> kmeans_assign_cpu(const at::Tensor& X, const at::Tensor& C) {
  KMeansAssignArgs a = check_kmeans_assign(X, C);
  at::Tensor labels = new_output(a.out_sizes(), a.X.options().dtype(at::kLong));
  at::Tensor dist2 = new_output(a.out_sizes(), a.X.options());
  if (a.N == 0 || a.P == 0) return {labels, dist2};
  AT_DISPATCH_FLOATING_TYPES(a.X.scalar_type(), "kmeans_assign_cpu", [&] {
    assign_impl<scalar_t, false, false>(a, labels.data_ptr<int64_t>(), dist2.data_ptr<scalar_t>());
  });
  return {labels, dist2};
}

std::tuple<at::Tensor, at::Tensor> kmeans_update_cpu(const at::Tensor& X, const at::Tensor& labels,
                                                     int64_t K, const c10::optional<at::Tensor>& weights) {
  KMeansUpdateArgs a = check_kmeans_update(X, labels, K, weights);
  at::Tensor sums = new_output(a.sums_sizes(), a.X.options());
  at::Tensor counts = new_output(a.counts_sizes(), a.X.options());
  if (a.P == 0) return {sums, counts};
  AT_DISPATCH_FLOATING_TYPES(a.X.scalar_type(), "kmeans_update_cpu", [&] {
    if (a.weights.defined()) {
      update_impl<scalar_t, true>(a, sums.data_ptr<scalar_t>(), counts.data_ptr<scalar_t>());
    } else {
      update_impl<scalar_t, false>(a, sums.data_ptr<scalar_t>(), counts.data_ptr<scalar_t>());
    }
  });
  return {sums, counts};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_step_cpu(const at::Tensor& X, const at::Tensor& C,
                                                                          const c10::optional<at::Tensor>& weights) {
  KMeansStepArgs s = check_kmeans_step(X, C, weights);
  KMeansAssignArgs& a = s.assign;
  at::Tensor labels = new_output(a.out_sizes(), a.X.options().dtype(at::kLong));
  at::Tensor dist2 = new_output(a.out_sizes(), a.X.options());
  at::Tensor sums = new_output(s.sums_sizes(), a.X.options());
  at::Tensor counts = new_output(s.counts_sizes(), a.X.options());
  if (a.P == 0) return {labels, dist2, sums, counts};
  if (a.N == 0) return {labels, dist2, sums.zero_(), counts.zero_()};
  if (a.c_shared && a.per_x() > 1 && s.Pw > 1) {  // problems differ only by their weights
    a.C = a.C.expand({a.P, a.K, a.D}).contiguous();
    a.c_shared = false;
  }
  AT_DISPATCH_FLOATING_TYPES(a.X.scalar_type(), "kmeans_step_cpu", [&] {
    if (s.weights.defined()) {
      assign_impl<scalar_t, true, true>(a, labels.data_ptr<int64_t>(), dist2.data_ptr<scalar_t>(),
                                        s.weights.const_data_ptr<scalar_t>(), s.per_w(), sums.data_ptr<scalar_t>(),
                                        counts.data_ptr<scalar_t>());
    } else {
      assign_impl<scalar_t, true, false>(a, labels.data_ptr<int64_t>(), dist2.data_ptr<scalar_t>(), nullptr, 1,
                                         sums.data_ptr<scalar_t>(), counts.data_ptr<scalar_t>());
    }
  });
  return {labels, dist2, sums, counts};
}

}  // namespace

// The name of the level simd_level() picks (`tlkernels info` prints it).
std::string kmeans_cpu_kernels() { return kLevelNames[static_cast<int>(simd_level())]; }

std::vector<std::string> kmeans_cpu_level_names() { return {std::begin(kLevelNames), std::end(kLevelNames)}; }

TORCH_LIBRARY_FRAGMENT(tlkernels, m) { m.def("_kmeans_cpu_kernels() -> str", &kmeans_cpu_kernels); }

TORCH_LIBRARY_IMPL(tlkernels, CPU, m) {
  m.impl("kmeans_assign", &kmeans_assign_cpu);
  m.impl("kmeans_update", &kmeans_update_cpu);
  m.impl("kmeans_step", &kmeans_step_cpu);
}

}  // namespace tlk

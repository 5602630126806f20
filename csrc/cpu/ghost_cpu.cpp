// CPU backend of the per-sample gradient products (docs/design.md §4.2).
//
// ghost_dot: one GEMM per row chunk (BLAS through at::mm) followed by a fused parallel row-dot;
//   memory in flight is one chunk of (rows, V·min(I, O)), never (B·T, O).
// ghost_gram: tiles of D1 D2ᵀ and A1 A2ᵀ (at::mm) multiplied and reduced per sample pair in one
//   pass; memory in flight is two (kTile, kTile) tiles, never the T×T' blocks of all pairs.
// ghost_norm: per sample, from its own T×T tiles or by materialising Q_i, whichever is cheaper.
// clip_update_: groups of equal indices (stable sort) summed in order, then clipped once.
// Every reduction runs in a fixed order, so results do not depend on the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "ghost.h"

namespace tlk {
namespace {

// Elements of a GEMM result chunk kept in flight (8 MiB in float32, 16 MiB in float64): BLAS
// loses up to 3x on row chunks of a few thousand rows, so the chunks are kept large.
constexpr int64_t kChunkElems = 1 << 21;
// Row / column tile of ghost_gram (two tiles of kTile² elements in flight).
constexpr int64_t kTile = 384;

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, work_per_item));
}

// ------------------------------------------------------------------------------- ghost_dot
// s[b, v] = Σ_t Σ_w H[bT+t, v·W + w] · Y[bT+t, w] with H = X Wt computed chunk by chunk.
// Side A: X = A (rows, I), Wt = G_flatᵀ (I, V·O), Y = D (rows, O), W = O.
// Side D: X = D (rows, O), Wt = G as (O, V·I), Y = A (rows, I), W = I.
// Both cost one GEMM of B·T·I·O·V; the side with the narrower W keeps the chunk smaller.
template <typename T>
void ghost_dot_impl(const GhostDotArgs& a, at::Tensor& acc /* (B,V) compute dtype, zeroed */) {
  const int64_t rows = a.B * a.T;
  const bool side_a = a.O <= a.I;
  const int64_t W = side_a ? a.O : a.I;
  const at::Tensor X = side_a ? a.A.view({rows, a.I}) : a.D.view({rows, a.O});
  const at::Tensor Y = side_a ? a.D.view({rows, a.O}) : a.A.view({rows, a.I});
  const at::Tensor Wt = side_a ? a.G.view({a.V * a.O, a.I}).t()
                               : a.G.permute({1, 0, 2}).reshape({a.O, a.V * a.I});
  const int64_t VW = a.V * W;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, kChunkElems / std::max<int64_t>(1, VW)));
  at::Tensor H = at::empty({chunk, VW}, X.options());
  at::Tensor rd = at::empty({chunk, a.V}, X.options());
  T* acc_p = acc.data_ptr<T>();
  const T* y_p = Y.const_data_ptr<T>();
  const int64_t V = a.V, Tn = a.T;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    at::Tensor h = H.narrow(0, 0, n);
    at::mm_out(h, X.narrow(0, r0, n), Wt);
    const T* h_p = h.const_data_ptr<T>();
    T* rd_p = rd.data_ptr<T>();
    at::parallel_for(0, n, grain_for(VW), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* y = y_p + (r0 + r) * W;
        for (int64_t v = 0; v < V; ++v) {
          const T* hv = h_p + r * VW + v * W;
          T sum = 0;
          for (int64_t w = 0; w < W; ++w) sum += hv[w] * y[w];
          rd_p[r * V + v] = sum;
        }
      }
    });
    // positions of one sample are added in t order (serial, B·T·V adds)
    for (int64_t r = 0; r < n; ++r) {
      T* s = acc_p + ((r0 + r) / Tn) * V;
      for (int64_t v = 0; v < V; ++v) s[v] += rd_p[r * V + v];
    }
  }
}

at::Tensor ghost_dot_cpu(const at::Tensor& A, const at::Tensor& D, const at::Tensor& G) {
  GhostDotArgs a = check_ghost_dot(A, D, G);
  at::Tensor acc = at::zeros({a.B, a.V}, a.A.options());
  if (a.B * a.T > 0 && a.I > 0 && a.O > 0 && a.V > 0) {
    AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "ghost_dot_cpu", [&] { ghost_dot_impl<scalar_t>(a, acc); });
  }
  at::Tensor out = new_output(a.multi ? at::IntArrayRef({a.B, a.V}) : at::IntArrayRef({a.B}),
                              a.A.options().dtype(a.out_dtype));
  out.copy_(a.multi ? acc : acc.view({a.B}));
  return out;
}

// ------------------------------------------------------------------------------ ghost_gram
// acc[i, j] += Σ over the tile's rows r of sample i and columns c of sample j of DD[r,c]·AA[r,c].
// Each output row i is owned by one thread, columns are visited in order: deterministic.
template <typename T>
void gram_tile_reduce(const T* dd, const T* aa, int64_t nr, int64_t nc, int64_t r0, int64_t c0,
                      int64_t T1, int64_t T2, T* acc, int64_t B2) {
  const int64_t i_first = r0 / T1, i_last = (r0 + nr - 1) / T1;
  at::parallel_for(i_first, i_last + 1, grain_for(nc * std::max<int64_t>(1, T1)), [&](int64_t ib, int64_t ie) {
    for (int64_t i = ib; i < ie; ++i) {
      const int64_t rb = std::max(r0, i * T1) - r0, re = std::min(r0 + nr, (i + 1) * T1) - r0;
      T* out = acc + i * B2;
      for (int64_t r = rb; r < re; ++r) {
        const T* ddr = dd + r * nc;
        const T* aar = aa + r * nc;
        int64_t c = 0;
        while (c < nc) {
          const int64_t j = (c0 + c) / T2;
          const int64_t ce = std::min(nc, (j + 1) * T2 - c0);
          T sum = 0;
          for (; c < ce; ++c) sum += ddr[c] * aar[c];
          out[j] += sum;
        }
      }
    }
  });
}

// A tile of `tile` rows, rounded down to whole samples when a sample is shorter than the tile.
int64_t sample_aligned_tile(int64_t T, int64_t tile) {
  return T >= tile || T == 0 ? tile : (tile / T) * T;
}

template <typename T>
void ghost_gram_impl(const GhostGramArgs& a, at::Tensor& acc) {
  const int64_t rows1 = a.B1 * a.T1, rows2 = a.B2 * a.T2;
  const at::Tensor A1 = a.A1.view({rows1, a.I}), D1 = a.D1.view({rows1, a.O});
  const at::Tensor A2 = a.A2.view({rows2, a.I}), D2 = a.D2.view({rows2, a.O});
  const int64_t tr = sample_aligned_tile(a.T1, kTile), tc = sample_aligned_tile(a.T2, kTile);
  at::Tensor dd_buf = at::empty({std::min(tr, rows1) * std::min(tc, rows2)}, A1.options());
  at::Tensor aa_buf = at::empty_like(dd_buf);
  for (int64_t r0 = 0; r0 < rows1; r0 += tr) {
    const int64_t nr = std::min(tr, rows1 - r0);
    for (int64_t c0 = 0; c0 < rows2; c0 += tc) {
      const int64_t nc = std::min(tc, rows2 - c0);
      at::Tensor dd = dd_buf.narrow(0, 0, nr * nc).view({nr, nc});
      at::Tensor aa = aa_buf.narrow(0, 0, nr * nc).view({nr, nc});
      at::mm_out(dd, D1.narrow(0, r0, nr), D2.narrow(0, c0, nc).t());
      at::mm_out(aa, A1.narrow(0, r0, nr), A2.narrow(0, c0, nc).t());
      gram_tile_reduce<T>(dd.const_data_ptr<T>(), aa.const_data_ptr<T>(), nr, nc, r0, c0, a.T1, a.T2,
                          acc.data_ptr<T>(), a.B2);
    }
  }
}

at::Tensor ghost_gram_cpu(const at::Tensor& A1, const at::Tensor& D1, const at::Tensor& A2,
                          const at::Tensor& D2) {
  GhostGramArgs a = check_ghost_gram(A1, D1, A2, D2);
  at::Tensor acc = at::zeros({a.B1, a.B2}, a.A1.options());
  if (a.B1 * a.T1 > 0 && a.B2 * a.T2 > 0) {
    AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "ghost_gram_cpu", [&] { ghost_gram_impl<scalar_t>(a, acc); });
  }
  at::Tensor out = new_output({a.B1, a.B2}, a.A1.options().dtype(a.out_dtype));
  out.copy_(acc);
  return out;
}

// ------------------------------------------------------------------------------ ghost_norm
template <typename T>
void ghost_norm_impl(const GhostNormArgs& a, T* acc) {
  const int64_t B = a.B, Tn = a.T, I = a.I, O = a.O;
  const T* ap = a.A.const_data_ptr<T>();
  const T* dp = a.D.const_data_ptr<T>();
  if (Tn == 1) {  // ‖d‖²·‖a‖²
    at::parallel_for(0, B, grain_for(I + O), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T sa = 0, sd = 0;
        for (int64_t k = 0; k < I; ++k) sa += ap[b * I + k] * ap[b * I + k];
        for (int64_t k = 0; k < O; ++k) sd += dp[b * O + k] * dp[b * O + k];
        acc[b] = sa * sd;
      }
    });
    return;
  }
  if (ghost_norm_materialise(Tn, I, O)) {  // Q_b = D_bᵀ A_b for a chunk of samples, then Σ Q²
    const int64_t per = std::max<int64_t>(1, I * O);
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(B, kChunkElems / per));
    at::Tensor q_buf = at::empty({chunk, O, I}, a.A.options());
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t n = std::min(chunk, B - b0);
      at::Tensor q = q_buf.narrow(0, 0, n);
      at::bmm_out(q, a.D.narrow(0, b0, n).transpose(1, 2), a.A.narrow(0, b0, n));
      const T* qp = q.const_data_ptr<T>();
      at::parallel_for(0, n, grain_for(per), [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
          T sum = 0;
          for (int64_t k = 0; k < per; ++k) sum += qp[s * per + k] * qp[s * per + k];
          acc[b0 + s] = sum;
        }
      });
    }
    return;
  }
  // ghost: Σ_{t,t'} (D Dᵀ)_{tt'} (A Aᵀ)_{tt'} per sample; T ≤ min(I, O) here, so T² ≤ I·O.
  const int64_t per = Tn * Tn;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(B, kChunkElems / per));
  at::Tensor dd_buf = at::empty({chunk, Tn, Tn}, a.A.options());
  at::Tensor aa_buf = at::empty_like(dd_buf);
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t n = std::min(chunk, B - b0);
    at::Tensor dd = dd_buf.narrow(0, 0, n), aa = aa_buf.narrow(0, 0, n);
    at::bmm_out(dd, a.D.narrow(0, b0, n), a.D.narrow(0, b0, n).transpose(1, 2));
    at::bmm_out(aa, a.A.narrow(0, b0, n), a.A.narrow(0, b0, n).transpose(1, 2));
    const T* ddp = dd.const_data_ptr<T>();
    const T* aap = aa.const_data_ptr<T>();
    at::parallel_for(0, n, grain_for(per), [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        T sum = 0;
        for (int64_t k = 0; k < per; ++k) sum += ddp[s * per + k] * aap[s * per + k];
        acc[b0 + s] = sum;
      }
    });
  }
}

at::Tensor ghost_norm_cpu(const at::Tensor& A, const at::Tensor& D) {
  GhostNormArgs a = check_ghost_norm(A, D);
  at::Tensor acc = at::zeros({a.B}, a.A.options());
  if (a.B > 0 && a.T > 0 && a.I > 0 && a.O > 0) {
    AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "ghost_norm_cpu",
                               [&] { ghost_norm_impl<scalar_t>(a, acc.data_ptr<scalar_t>()); });
  }
  at::Tensor out = new_output({a.B}, a.A.options().dtype(a.out_dtype));
  out.copy_(acc);
  return out;
}

// ---------------------------------------------------------------------------- clip_update_
void clip_update_cpu(at::Tensor& alpha, const at::Tensor& index, const at::Tensor& s, double lr) {
  ClipUpdateArgs c = check_clip_update(alpha, index, s, lr);
  const int64_t B = index.size(0);
  if (B == 0) return;
  AT_DISPATCH_FLOATING_TYPES(alpha.scalar_type(), "clip_update_cpu", [&] {
    scalar_t* al = alpha.data_ptr<scalar_t>();
    const int64_t stride = alpha.stride(0);
    const int64_t* idx = c.sorted_index.const_data_ptr<int64_t>();
    const int64_t* ord = c.order.const_data_ptr<int64_t>();
    const scalar_t* sp = c.s.const_data_ptr<scalar_t>();
    const scalar_t l = static_cast<scalar_t>(lr);
    at::parallel_for(0, B, 4096, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        if (k > 0 && idx[k - 1] == idx[k]) continue;  // not the head of its group
        scalar_t sum = 0;
        for (int64_t m = k; m < B && idx[m] == idx[k]; ++m) sum += sp[ord[m]];
        scalar_t v = al[idx[k] * stride] + l * sum;
        v = v < scalar_t(0) ? scalar_t(0) : (v > scalar_t(1) ? scalar_t(1) : v);  // NaN stays NaN
        al[idx[k] * stride] = v;
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels, CPU, m) {
  m.impl("ghost_dot", &ghost_dot_cpu);
  m.impl("ghost_gram", &ghost_gram_cpu);
  m.impl("ghost_norm", &ghost_norm_cpu);
  m.impl("clip_update_", &clip_update_cpu);
}

}  // namespace tlk

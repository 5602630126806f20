// AMX products of the CPU k-means assignment (float32, Intel AMX-BF16), included by kmeans_simd.h
// after kmeans_avx512.h: the transposed score block G = (−2C')·Xᵀ of one chunk, which the AVX-512
// epilogue then reads as it reads the GEMM's.
//
// Why: tile products (TDPBF16PS) run 6-7x the float32 FMA rate per core (bench/NOTES-kmeans.md).
// Float32 operands are split exactly enough into two bf16 parts, v = v_hi + v_lo + e with
// |e| ≤ u²|v| (u = 2⁻⁸), and three products (hi·hi + hi·lo + lo·hi) give x·c within
// 3.1·u²·‖x‖·‖c‖ of the exact value plus float32 accumulation error over 3D terms. amx_band()
// widens the rounding band by that bound (and by absolute terms for the denormals AMX flushes),
// so the epilogue's decisions - a single score in the band is the label, otherwise exact
// distances - give the same labels as every other level.
//
// Tiles: A = 16 centroids × 32 values of d (bf16, 64-byte rows), B = the same 32 values of 16 rows
// of X in the VNNI layout ((d/2, row, d mod 2)), C = 16 centroids × 16 rows in float32: a slice of
// the transposed block (centroids, rows) at its leading dimension. The process asks Linux for the
// tile state once (arch_prctl); without it, or without AMX, this level is not offered.
#pragma once

#if TLK_KMEANS_X86
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#define TLK_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512dq,avx512bw,avx512vl,avx512bf16")))

// GCC 12 flags the _mm512_undefined_* inside its own conversion intrinsics (a false positive, GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace tlk::kmeans_cpu {

// Whether this CPU has AMX-BF16 and this process may use the tile data (asked once).
inline bool has_amx() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
    if (!amx_bf16 || !amx_tile || !has_avx512()) return false;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;  // AVX512-BF16 for the conversions
    if (!__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) || !((a1 >> 5) & 1u)) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

constexpr int64_t kAmxTile = 16;  // rows of every tile; columns: 32 bf16 or 16 float32 (64 bytes)
constexpr int64_t kAmxDepth = 32;  // values of d per tile product

// 16 float32 -> their bf16 high parts and the bf16 of the remainders (x − hi is exact in float32).
TLK_AMX_TARGET inline void split_bf16(__m512 v, __m256i& hi, __m256i& lo) {
  hi = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
  const __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
  lo = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_sub_ps(v, hf)));
}

// One problem's −2C' as A tiles: (groups ⌈K/16⌉, blocks ⌈D/32⌉, 16, 32) bf16, high and low parts,
// zero-padded (padding centroids score 0 and are never read: the epilogue reads k < K).
struct AmxCentroids {
  std::vector<uint16_t> hi, lo;
  int64_t groups = 0, blocks = 0;
};

TLK_AMX_TARGET inline AmxCentroids make_amx_centroids(const float* cm2, int64_t K, int64_t D) {
  AmxCentroids ac;
  ac.groups = (K + kAmxTile - 1) / kAmxTile;
  ac.blocks = (D + kAmxDepth - 1) / kAmxDepth;
  const size_t n = static_cast<size_t>(ac.groups * ac.blocks * kAmxTile * kAmxDepth);
  ac.hi.assign(n, 0);
  ac.lo.assign(n, 0);
  alignas(64) float row[kAmxDepth];
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t j = 0; j < ac.blocks; ++j) {
      for (int64_t t = 0; t < kAmxDepth; ++t) row[t] = j * kAmxDepth + t < D ? cm2[k * D + j * kAmxDepth + t] : 0.0f;
      const size_t at = static_cast<size_t>((((k / kAmxTile) * ac.blocks + j) * kAmxTile + k % kAmxTile) * kAmxDepth);
      for (int h = 0; h < 2; ++h) {
        __m256i hi, lo;
        split_bf16(_mm512_load_ps(row + 16 * h), hi, lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ac.hi.data() + at + 16 * h), hi);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ac.lo.data() + at + 16 * h), lo);
      }
    }
  }
  return ac;
}

// r[i] (16 dwords each) -> r[j] holding dword j of every input row i: a 16×16 transpose in four
// stages of 16 shuffles (32-bit and 64-bit interleaves, then a 4×4 transpose of 128-bit lanes).
TLK_AMX_TARGET inline void transpose16_epi32(__m512i* r) {
  __m512i a[16], b[16];
  for (int k = 0; k < 8; ++k) {
    a[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {  // b[4k + m], 128-bit lane L: dword 4L + m of rows 4k .. 4k + 3
    b[4 * k] = _mm512_unpacklo_epi64(a[4 * k], a[4 * k + 2]);
    b[4 * k + 1] = _mm512_unpackhi_epi64(a[4 * k], a[4 * k + 2]);
    b[4 * k + 2] = _mm512_unpacklo_epi64(a[4 * k + 1], a[4 * k + 3]);
    b[4 * k + 3] = _mm512_unpackhi_epi64(a[4 * k + 1], a[4 * k + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512i t0 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0x44), t1 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0xEE);
    const __m512i t2 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0x44), t3 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0xEE);
    r[m] = _mm512_shuffle_i32x4(t0, t2, 0x88);
    r[4 + m] = _mm512_shuffle_i32x4(t0, t2, 0xDD);
    r[8 + m] = _mm512_shuffle_i32x4(t1, t3, 0x88);
    r[12 + m] = _mm512_shuffle_i32x4(t1, t3, 0xDD);
  }
}

// The chunk's rows as B tiles: (row groups, blocks, 16 pairs of d, 16 rows, 2) bf16, high and low,
// zero-padded in rows and d. xb_hi / xb_lo: room for ⌈rows/16⌉·blocks·512 values each.
TLK_AMX_TARGET inline void pack_amx_rows(const float* x, int64_t rows, int64_t D, int64_t blocks, uint16_t* xb_hi,
                                         uint16_t* xb_lo) {
  const int64_t groups = (rows + kAmxTile - 1) / kAmxTile;
  __m512i hi[16], lo[16];
  for (int64_t rg = 0; rg < groups; ++rg) {
    for (int64_t j = 0; j < blocks; ++j) {
      const int64_t d0 = j * kAmxDepth;
      // the valid values of d in the two halves of this block
      const __mmask16 m0 = static_cast<__mmask16>(D - d0 >= 16 ? 0xFFFF : (1u << (D - d0)) - 1u);
      const __mmask16 m1 = static_cast<__mmask16>(D - d0 >= 32 ? 0xFFFF : D - d0 <= 16 ? 0 : (1u << (D - d0 - 16)) - 1u);
      for (int n = 0; n < kAmxTile; ++n) {
        const int64_t i = rg * kAmxTile + n;
        __m256i h0, l0, h1, l1;
        const float* xi = x + i * D + d0;
        split_bf16(i < rows ? _mm512_maskz_loadu_ps(m0, xi) : _mm512_setzero_ps(), h0, l0);
        split_bf16(i < rows ? _mm512_maskz_loadu_ps(m1, xi + 16) : _mm512_setzero_ps(), h1, l1);
        hi[n] = _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1);  // dword p = the pair (2p, 2p + 1)
        lo[n] = _mm512_inserti64x4(_mm512_castsi256_si512(l0), l1, 1);
      }
      transpose16_epi32(hi);
      transpose16_epi32(lo);
      uint16_t* th = xb_hi + (rg * blocks + j) * kAmxTile * kAmxDepth;
      uint16_t* tl = xb_lo + (rg * blocks + j) * kAmxTile * kAmxDepth;
      for (int pr = 0; pr < kAmxTile; ++pr) {
        _mm512_storeu_si512(th + pr * kAmxDepth, hi[pr]);
        _mm512_storeu_si512(tl + pr * kAmxDepth, lo[pr]);
      }
    }
  }
}

// All eight tiles 16 rows × 64 bytes, on this thread.
TLK_AMX_TARGET inline void amx_configure() {
  struct alignas(64) Config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = kAmxTile;
  }
  asm volatile("" : : "r"(&cfg) : "memory");  // GCC 12 drops the stores above otherwise (the builtin reads no memory)
  _tile_loadconfig(&cfg);
}

TLK_AMX_TARGET inline void amx_release() { _tile_release(); }

// gt (M·K + 16, ld) float32: G of problem q in rows q·K .. q·K + K − 1 (a padded group's extra rows
// land in the next problem's, written after it, or in the 16 spare rows). xb_*: pack_amx_rows of
// the chunk; acs[q]: the centroids of problem q. amx_configure() must have run on this thread.
// Four accumulator tiles (2 centroid groups × 2 row groups) keep four independent chains of tile
// products in flight (a single chain waits for each product: measured ~3× slower).
TLK_AMX_TARGET inline void amx_scores(const uint16_t* xb_hi, const uint16_t* xb_lo, int64_t rows,
                                      const AmxCentroids* const* acs, int64_t M, int64_t K, float* gt, int64_t ld) {
  const int64_t rgroups = (rows + kAmxTile - 1) / kAmxTile;
  const int64_t tile = kAmxTile * kAmxDepth;  // bf16 values per tile
  const size_t ldb = static_cast<size_t>(ld) * sizeof(float);
  for (int64_t q = 0; q < M; ++q) {
    const AmxCentroids& ac = *acs[q];
    const int64_t blocks = ac.blocks;
    for (int64_t rg = 0; rg < rgroups; rg += 2) {
      const bool r2 = rg + 1 < rgroups;
      const uint16_t* bh0 = xb_hi + rg * blocks * tile;
      const uint16_t* bl0 = xb_lo + rg * blocks * tile;
      const uint16_t* bh1 = bh0 + blocks * tile;
      const uint16_t* bl1 = bl0 + blocks * tile;
      for (int64_t g = 0; g < ac.groups; g += 2) {
        const bool g2 = g + 1 < ac.groups;
        const uint16_t* ah0 = ac.hi.data() + g * blocks * tile;
        const uint16_t* al0 = ac.lo.data() + g * blocks * tile;
        const uint16_t* ah1 = ah0 + blocks * tile;
        const uint16_t* al1 = al0 + blocks * tile;
        // tiles 0..3: C(g, rg), C(g, rg+1), C(g+1, rg), C(g+1, rg+1); 4, 5: A of g, g+1; 6, 7: B of rg, rg+1
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t j = 0; j < blocks; ++j) {
          const int64_t o = j * tile;
          _tile_loadd(4, ah0 + o, 64);
          if (g2) _tile_loadd(5, ah1 + o, 64);
          _tile_loadd(6, bh0 + o, 64);
          if (r2) _tile_loadd(7, bh1 + o, 64);
          _tile_dpbf16ps(0, 4, 6);  // hi·hi
          if (r2) _tile_dpbf16ps(1, 4, 7);
          if (g2) _tile_dpbf16ps(2, 5, 6);
          if (g2 && r2) _tile_dpbf16ps(3, 5, 7);
          _tile_loadd(6, bl0 + o, 64);
          if (r2) _tile_loadd(7, bl1 + o, 64);
          _tile_dpbf16ps(0, 4, 6);  // hi(c)·lo(x)
          if (r2) _tile_dpbf16ps(1, 4, 7);
          if (g2) _tile_dpbf16ps(2, 5, 6);
          if (g2 && r2) _tile_dpbf16ps(3, 5, 7);
          _tile_loadd(4, al0 + o, 64);
          if (g2) _tile_loadd(5, al1 + o, 64);
          _tile_loadd(6, bh0 + o, 64);
          if (r2) _tile_loadd(7, bh1 + o, 64);
          _tile_dpbf16ps(0, 4, 6);  // lo(c)·hi(x)
          if (r2) _tile_dpbf16ps(1, 4, 7);
          if (g2) _tile_dpbf16ps(2, 5, 6);
          if (g2 && r2) _tile_dpbf16ps(3, 5, 7);
        }
        float* out = gt + (q * K + g * kAmxTile) * ld + rg * kAmxTile;
        _tile_stored(0, out, ldb);
        if (r2) _tile_stored(1, out + kAmxTile, ldb);
        if (g2) _tile_stored(2, out + kAmxTile * ld, ldb);
        if (g2 && r2) _tile_stored(3, out + kAmxTile * ld + kAmxTile, ldb);
      }
    }
  }
}

}  // namespace tlk::kmeans_cpu

#pragma GCC diagnostic pop
#undef TLK_AMX_TARGET
#endif  // TLK_KMEANS_X86

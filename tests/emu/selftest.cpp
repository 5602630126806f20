// Self-test of the SIMT emulator (csrc/emu/emu.h), independent of torch:
//   g++ -std=c++20 -O1 -pthread -I csrc tests/emu/selftest.cpp -o selftest && ./selftest
// Prints `ok <name>` or `FAIL <name>: <details>` per check (plus `info ...` lines) and exits
// non-zero when any check fails. tests/test_emulator.py runs it and knows every check name.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "selftest_kernels.cuh"

namespace {

using namespace tlk_selftest;

int g_failures = 0;

struct CheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void require(bool cond, const std::string& what) {
  if (!cond) throw CheckFailed(what);
}

void check(const char* name, const std::function<void()>& body) {
  try {
    body();
    std::printf("ok %s\n", name);
  } catch (const std::exception& e) {
    ++g_failures;
    std::string msg = e.what();
    for (char& c : msg) {
      if (c == '\n') c = ' ';
    }
    std::printf("FAIL %s: %s\n", name, msg.c_str());
  } catch (...) {
    ++g_failures;
    std::printf("FAIL %s: unknown exception\n", name);
  }
  std::fflush(stdout);
}

// Runs `body`, which must throw E with a message containing every one of `needles`.
template <typename E>
void expect_throw(const std::function<void()>& body, std::initializer_list<const char*> needles) {
  try {
    body();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const char* n : needles) {
      require(msg.find(n) != std::string::npos, "message lacks '" + std::string(n) + "': " + msg);
    }
    return;
  } catch (const std::exception& e) {
    throw CheckFailed(std::string("wrong exception type: ") + e.what());
  }
  throw CheckFailed("no exception thrown");
}

std::string at(std::size_t i) { return " at index " + std::to_string(i); }

template <typename T>
void require_equal(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  require(got.size() == want.size(), std::string(what) + ": size mismatch");
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!(got[i] == want[i])) {
      throw CheckFailed(std::string(what) + ": got " + std::to_string(got[i]) + ", want " +
                        std::to_string(want[i]) + at(i));
    }
  }
}

std::vector<float> iota_f(std::size_t n, float start = 0.0f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

// Deterministic pseudo-random ints in [lo, hi].
std::vector<int> random_ints(std::size_t n, int lo, int hi, std::uint32_t seed) {
  std::vector<int> v(n);
  std::uint32_t s = seed;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = lo + static_cast<int>((s >> 8) % static_cast<std::uint32_t>(hi - lo + 1));
  }
  return v;
}

// ---- emulator-only kernels (not valid CUDA: they throw or launch) --------------------------

struct Counted {
  static inline std::atomic<int> live{0};
  Counted() { ++live; }
  ~Counted() { --live; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
};

__global__ void throwing_kernel(int* out) {
  Counted c;  // must be destroyed in every thread, including those waiting at the barrier
  TLK_SHARED(int, s, 64);
  s[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  if (blockIdx.x == 1 && threadIdx.x == 37) throw std::runtime_error("boom from thread 37 of block 1");
  __syncthreads();
  out[blockIdx.x * 64 + threadIdx.x] = s[63 - threadIdx.x];
}

__global__ void nested_launch_kernel(int* out) {
  if (threadIdx.x == 0) tlk_emu::launch(dim3(1), dim3(1), 0, nested_launch_kernel, out);
}

// Recursion depth that needs more than the default 64 KiB of stack.
__attribute__((noinline)) int deep(int n, volatile char* sink) {
  volatile char pad[1024];
  pad[0] = static_cast<char>(n);
  sink[0] = pad[0];
  return n == 0 ? 0 : 1 + deep(n - 1, sink);
}

__global__ void deep_stack_kernel(int* out, int depth) {
  volatile char sink[1];
  out[threadIdx.x] = deep(depth, sink);
}

// Reference semantics of the shuffles, from the CUDA programming guide.
int ref_shfl(int mode, const std::vector<int>& in, unsigned i, int src, unsigned delta, int lane_mask,
             int width) {
  const unsigned warp_base = i & ~31u;
  const unsigned lane = i & 31u;
  const unsigned seg = lane & ~static_cast<unsigned>(width - 1);  // first lane of the segment
  const unsigned in_seg = lane - seg;
  switch (mode) {
    case 0:  // srcLane modulo width, within the segment
      return in[warp_base + seg + (static_cast<unsigned>(src) & static_cast<unsigned>(width - 1))];
    case 1:  // up: own value when lane - delta leaves the segment
      return in_seg >= (delta & 31u) ? in[i - (delta & 31u)] : in[i];
    case 2:  // down
      return in_seg + (delta & 31u) < static_cast<unsigned>(width) ? in[i + (delta & 31u)] : in[i];
    default: {  // xor: later segments are out of reach, earlier ones are not
      const unsigned j = lane ^ (static_cast<unsigned>(lane_mask) & 31u);
      return j < seg + static_cast<unsigned>(width) ? in[warp_base + j] : in[i];
    }
  }
}

}  // namespace

int main() {
  check("reverse_shared", [] {
    const int blocks = 3;
    auto in = iota_f(blocks * kReverseThreads, 1.0f);
    std::vector<float> out(in.size(), -7.0f), want(in.size());
    tlk_emu::launch(dim3(blocks), dim3(kReverseThreads), 0, reverse_block<true>, out.data(),
                    static_cast<const float*>(in.data()));
    for (int b = 0; b < blocks; ++b) {
      for (int t = 0; t < kReverseThreads; ++t) want[b * kReverseThreads + t] = in[b * kReverseThreads + kReverseThreads - 1 - t];
    }
    require_equal(out, want, "reversed");
  });

  check("missing_sync_wrong", [] {
    auto in = iota_f(kReverseThreads, 1.0f);
    std::vector<float> out(in.size(), -7.0f);
    tlk_emu::launch(dim3(1), dim3(kReverseThreads), 0, reverse_block<false>, out.data(),
                    static_cast<const float*>(in.data()));
    // Thread 0 ran to its end before thread 255 wrote its slot.
    require(std::isnan(out[0]), "thread 0 should read unwritten (NaN) shared memory, got " + std::to_string(out[0]));
    int wrong = 0;
    for (int t = 0; t < kReverseThreads; ++t) wrong += out[t] != in[kReverseThreads - 1 - t];
    require(wrong > 0, "the missing barrier went unnoticed");
    std::printf("info missing_sync_wrong: %d of %d outputs wrong\n", wrong, kReverseThreads);
  });

  check("missing_sync_fixed", [] {
    auto in = iota_f(kReverseThreads, 1.0f);
    std::vector<float> out(in.size(), -7.0f), want(in.rbegin(), in.rend());
    tlk_emu::launch(dim3(1), dim3(kReverseThreads), 0, reverse_block<true>, out.data(),
                    static_cast<const float*>(in.data()));
    require_equal(out, want, "reversed with the barrier");
  });

  check("early_exit_sync", [] {
    const int n = 100;
    std::vector<float> out(128, -7.0f);
    tlk_emu::launch(dim3(1), dim3(128), 0, early_exit_reverse, out.data(), n);
    for (int t = 0; t < 128; ++t) {
      const float want = t < n ? static_cast<float>(n - 1 - t) : -7.0f;
      require(out[t] == want, "wrong value" + at(t));
    }
  });

  check("syncthreads_count_and_or", [] {
    const int blocks = 3, threads = 96;
    std::vector<int> pred(blocks * threads, 0);
    for (int t = 0; t < threads; ++t) pred[t] = t % 3 == 0;   // block 0: 32 of 96
    for (int t = 0; t < threads; ++t) pred[threads + t] = 1;  // block 1: all
    std::vector<int> out(3 * blocks, -1);                      // block 2: none
    tlk_emu::launch(dim3(blocks), dim3(threads), 0, barrier_reductions, out.data(),
                    static_cast<const int*>(pred.data()));
    require_equal(out, std::vector<int>{32, 0, 1, 96, 1, 1, 0, 0, 0}, "count/and/or");
  });

  check("uninitialized_shared_nan", [] {
    std::vector<float> f(64, 0.0f);
    std::vector<double> d(64, 0.0);
    std::vector<int> i(64, 0);
    tlk_emu::launch(dim3(2), dim3(64), 0, read_unwritten_shared, f.data(), d.data(), i.data());
    for (int t = 0; t < 64; ++t) {
      require(std::isnan(f[t]) && std::isnan(d[t]) && i[t] == -1, "unwritten shared memory not poisoned" + at(t));
    }
    std::vector<float> dyn(32, 0.0f);
    tlk_emu::launch(dim3(1), dim3(32), 32 * sizeof(float), read_unwritten_dynamic, dyn.data());
    for (int t = 0; t < 32; ++t) require(std::isnan(dyn[t]), "unwritten dynamic shared memory not NaN" + at(t));
  });

  check("shared_fresh_per_block", [] {
    std::vector<float> out(3 * 32, 0.0f);
    tlk_emu::launch(dim3(3), dim3(32), 0, shared_fresh_per_block, out.data());
    for (int i = 0; i < 96; ++i) {
      require(i < 32 ? out[i] == 1.0f : std::isnan(out[i]), "block " + std::to_string(i / 32) + " saw another block's shared memory" + at(i));
    }
  });

  check("shared_in_device_function", [] {
    std::vector<float> out(64, 0.0f);
    std::vector<int> same(64, 0);
    tlk_emu::launch(dim3(2), dim3(64), 0, shared_in_device_function, out.data(), same.data());
    for (int t = 0; t < 64; ++t) require(out[t] == 42.0f && same[t] == 1, "threads got different storage" + at(t));
  });

  check("dynamic_shared_block_sum", [] {
    const int n = 1000, threads = 128, blocks = (n + threads - 1) / threads;
    auto in = iota_f(n);
    std::vector<float> out(blocks, -1.0f), want(blocks, 0.0f);
    for (int i = 0; i < n; ++i) want[i / threads] += in[i];
    tlk_emu::launch(dim3(blocks), dim3(threads), threads * sizeof(float), block_sum_dynamic, out.data(),
                    static_cast<const float*>(in.data()), n);
    require_equal(out, want, "block sums");
  });

  check("static_and_dynamic_shared", [] {
    const int threads = 128;
    std::vector<int> out(threads, 0);
    tlk_emu::launch(dim3(2), dim3(threads), threads * sizeof(int), static_and_dynamic, out.data());
    for (int t = 0; t < threads; ++t) require(out[t] == t * 3 + (threads - 1 - t) * 5, "overlap" + at(t));
  });

  check("transpose_2d_tile", [] {
    const int rows = 70, cols = 45;
    auto in = iota_f(rows * cols);
    std::vector<float> out(rows * cols, -1.0f), want(rows * cols);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) want[c * rows + r] = in[r * cols + c];
    }
    const dim3 grid((cols + kTile - 1) / kTile, (rows + kTile - 1) / kTile);
    tlk_emu::launch(grid, dim3(kTile, kTileRows), 0, transpose_tiled, out.data(),
                    static_cast<const float*>(in.data()), rows, cols);
    require_equal(out, want, "transposed");
  });

  check("shfl_down_reduce", [] {
    const int blocks = 2, threads = 128, n = blocks * threads;
    auto vi = random_ints(n, -1000, 1000, 1);
    std::vector<int> oi(n / 32, 0), wi(n / 32, 0);
    std::vector<float> vf(n), of(n / 32, 0.0f), wf(n / 32, 0.0f);
    std::vector<double> vd(n), od(n / 32, 0.0), wd(n / 32, 0.0);
    std::vector<long long> vl(n), ol(n / 32, 0), wl(n / 32, 0);
    std::vector<unsigned long long> vu(n), ou(n / 32, 0), wu(n / 32, 0);
    std::vector<unsigned> vu32(n), ou32(n / 32, 0), wu32(n / 32, 0);
    for (int i = 0; i < n; ++i) {
      vf[i] = static_cast<float>(vi[i]);
      vd[i] = vi[i] * 0.25;
      vl[i] = static_cast<long long>(vi[i]) << 33;
      vu[i] = static_cast<unsigned long long>(vi[i] + 1000) << 30;
      vu32[i] = static_cast<unsigned>(vi[i] + 1000);
      wi[i / 32] += vi[i];
      wf[i / 32] += vf[i];
      wd[i / 32] += vd[i];
      wl[i / 32] += vl[i];
      wu[i / 32] += vu[i];
      wu32[i / 32] += vu32[i];
    }
    const dim3 g(blocks), b(threads);
    tlk_emu::launch(g, b, 0, warp_reduce_down<int>, oi.data(), static_cast<const int*>(vi.data()));
    tlk_emu::launch(g, b, 0, warp_reduce_down<float>, of.data(), static_cast<const float*>(vf.data()));
    tlk_emu::launch(g, b, 0, warp_reduce_down<double>, od.data(), static_cast<const double*>(vd.data()));
    tlk_emu::launch(g, b, 0, warp_reduce_down<long long>, ol.data(), static_cast<const long long*>(vl.data()));
    tlk_emu::launch(g, b, 0, warp_reduce_down<unsigned long long>, ou.data(),
                    static_cast<const unsigned long long*>(vu.data()));
    tlk_emu::launch(g, b, 0, warp_reduce_down<unsigned>, ou32.data(), static_cast<const unsigned*>(vu32.data()));
    require_equal(oi, wi, "int");
    require_equal(of, wf, "float");  // integers: exact in any order
    require_equal(od, wd, "double");
    require_equal(ol, wl, "long long");
    require_equal(ou, wu, "unsigned long long");
    require_equal(ou32, wu32, "unsigned");
  });

  check("shfl_xor_allreduce", [] {
    const int threads = 64;
    auto in = random_ints(threads, -50, 50, 2);
    for (int width : {32, 16, 8}) {
      std::vector<int> out(threads, 0), want(threads, 0);
      for (int i = 0; i < threads; ++i) {
        const int seg = i / width * width;
        for (int k = 0; k < width; ++k) want[i] += in[seg + k];
      }
      tlk_emu::launch(dim3(1), dim3(threads), 0, warp_allreduce_xor<int>, out.data(),
                      static_cast<const int*>(in.data()), width);
      require_equal(out, want, ("width " + std::to_string(width)).c_str());
    }
    std::vector<float> inf(threads), outf(threads);
    for (int i = 0; i < threads; ++i) inf[i] = static_cast<float>(in[i]);
    tlk_emu::launch(dim3(1), dim3(threads), 0, warp_allreduce_xor<float>, outf.data(),
                    static_cast<const float*>(inf.data()), 32);
    for (int i = 0; i < threads; ++i) {
      float s = 0.0f;
      for (int k = 0; k < 32; ++k) s += inf[i / 32 * 32 + k];
      require(outf[i] == s, "float all-reduce" + at(i));
    }
  });

  check("shfl_modes_exact", [] {
    const int threads = 64;
    auto in = random_ints(threads, 0, 1 << 20, 3);
    struct Case { int src; unsigned delta; int lane_mask; int width; };
    const Case cases[] = {{5, 1, 1, 32},  {37, 3, 17, 32}, {-1, 7, 31, 32}, {3, 2, 4, 8},
                          {9, 5, 12, 8},  {-3, 0, 0, 4},   {1, 16, 16, 16}, {0, 1, 1, 1},
                          {31, 33, 40, 2}, {6, 31, 3, 32}};
    for (const Case& c : cases) {
      std::vector<int> out(4 * threads, 0);
      tlk_emu::launch(dim3(1), dim3(threads), 0, shuffle_modes, out.data(), static_cast<const int*>(in.data()),
                      c.src, c.delta, c.lane_mask, c.width);
      for (unsigned i = 0; i < threads; ++i) {
        for (int mode = 0; mode < 4; ++mode) {
          const int want = ref_shfl(mode, in, i, c.src, c.delta, c.lane_mask, c.width);
          if (out[4 * i + mode] != want) {
            throw CheckFailed("mode " + std::to_string(mode) + " src " + std::to_string(c.src) + " delta " +
                              std::to_string(c.delta) + " laneMask " + std::to_string(c.lane_mask) +
                              " width " + std::to_string(c.width) + ": lane " + std::to_string(i) +
                              " got " + std::to_string(out[4 * i + mode]) + " want " + std::to_string(want));
          }
        }
      }
    }
  });

  check("shfl_up_scan", [] {
    const int threads = 96;
    auto in = random_ints(threads, -9, 9, 4);
    std::vector<int> out(threads, 0), want(threads);
    for (int i = 0; i < threads; ++i) want[i] = in[i] + (i % 32 == 0 ? 0 : want[i - 1]);
    tlk_emu::launch(dim3(1), dim3(threads), 0, warp_scan_up, out.data(), static_cast<const int*>(in.data()));
    require_equal(out, want, "scan");
  });

  check("ballot_any_all", [] {
    const int warps = 4, threads = 32 * warps;
    std::vector<int> pred(threads, 0);
    for (int i = 0; i < 32; ++i) pred[i] = (i * 7) % 5 == 0;  // warp 0: mixed
    for (int i = 32; i < 64; ++i) pred[i] = 1;               // warp 1: all
    pred[64 + 31] = 1;                                        // warp 2: one; warp 3: none
    std::vector<unsigned> out(5 * warps, 123);
    tlk_emu::launch(dim3(1), dim3(threads), 0, warp_votes, out.data(), static_cast<const int*>(pred.data()));
    for (int w = 0; w < warps; ++w) {
      unsigned want = 0;
      for (int l = 0; l < 32; ++l) want |= static_cast<unsigned>(pred[32 * w + l] != 0) << l;
      const unsigned* o = &out[5 * w];
      const std::string ws = "warp " + std::to_string(w);
      require(o[0] == want, ws + " ballot " + std::to_string(o[0]) + " want " + std::to_string(want));
      require(o[1] == (want != 0), ws + " any");
      require(o[2] == (want == 0xffffffffu), ws + " all");
      require(o[3] == (want & 0xffffu), ws + " half-mask ballot");
      require(o[4] == 0xffffu, ws + " activemask " + std::to_string(o[4]));
    }
  });

  check("warp_reduce_intrinsics", [] {
    const int threads = 64;
    auto in = random_ints(threads, -100000, 100000, 5);
    std::vector<int> out(6, 0), want(6);
    for (int w = 0; w < 2; ++w) {
      auto b = in.begin() + 32 * w, e = b + 32;
      want[3 * w] = std::accumulate(b, e, 0);
      want[3 * w + 1] = *std::min_element(b, e);
      want[3 * w + 2] = *std::max_element(b, e);
    }
    tlk_emu::launch(dim3(1), dim3(threads), 0, warp_reduce_intrinsics, out.data(), static_cast<const int*>(in.data()));
    require_equal(out, want, "add/min/max");
  });

  check("syncwarp_exchange", [] {
    std::vector<int> out(64, 0);
    tlk_emu::launch(dim3(1), dim3(64), 0, syncwarp_exchange, out.data());
    for (int t = 0; t < 64; ++t) require(out[t] == 3 * ((t & ~31) + 31 - (t & 31)), "exchange" + at(t));
  });

  check("atomic_add_int_float", [] {
    const int n = 5000, nbins = 7;
    auto values = random_ints(n, 0, 1000, 6);
    std::vector<int> bins(nbins, 0), want(nbins, 0);
    float total = 0.0f;
    double want_total = 0.0;
    for (int v : values) {
      ++want[v % nbins];
      want_total += v;
    }
    tlk_emu::launch(dim3(5), dim3(128), 0, histogram_atomic, bins.data(), &total,
                    static_cast<const int*>(values.data()), n, nbins);
    require_equal(bins, want, "bins");
    require(total == static_cast<float>(want_total), "float total " + std::to_string(total));
  });

  check("atomics_misc", [] {
    const int n = 300;
    auto values = random_ints(n, 1, 1 << 20, 7);
    std::vector<int> r{std::numeric_limits<int>::min(), 0, 0}, olds(n, -2);
    unsigned umin = 0xffffffffu;
    int slot = -1;
    unsigned long long ull = 0;
    double dbl = 0.0;
    tlk_emu::launch(dim3(3), dim3(128), 0, atomics_misc, r.data(), &umin, olds.data(), &slot, &ull, &dbl,
                    static_cast<const int*>(values.data()), n);
    require(r[0] == *std::max_element(values.begin(), values.end()), "atomicMax");
    require(umin == static_cast<unsigned>(*std::min_element(values.begin(), values.end())), "atomicMin");
    require(r[2] == n, "atomicCAS count " + std::to_string(r[2]));
    std::vector<int> seen(olds);
    seen.push_back(slot);
    std::sort(seen.begin(), seen.end());
    for (int i = 0; i <= n; ++i) require(seen[i] == i - 1, "atomicExch chain" + at(i));
    unsigned long long want_ull = 0;
    double want_dbl = 0.0;
    for (int v : values) {
      want_ull += static_cast<unsigned long long>(v);
      want_dbl += v * 0.5;
    }
    require(ull == want_ull, "unsigned long long atomicAdd");
    require(dbl == want_dbl, "double atomicAdd");  // halves of integers below 2^53: exact
  });

  check("deterministic_float_atomics", [] {
    const int n = 4096;
    std::vector<float> values(n);
    for (int i = 0; i < n; ++i) values[i] = 0.1f * static_cast<float>(i % 97) + 1e-3f * static_cast<float>(i);
    float a = 0.0f, b = 0.0f;
    tlk_emu::launch(dim3(16), dim3(256), 0, float_sum_atomic, &a, static_cast<const float*>(values.data()), n);
    tlk_emu::launch(dim3(16), dim3(256), 0, float_sum_atomic, &b, static_cast<const float*>(values.data()), n);
    float serial = 0.0f;
    for (float v : values) serial += v;  // the emulator's order: blocks, then threads, in order
    require(std::memcmp(&a, &b, sizeof a) == 0, "two runs differ");
    require(a == serial, "not the sequential order: " + std::to_string(a) + " vs " + std::to_string(serial));
  });

  auto check_indices = [](dim3 grid, dim3 block) {
    const unsigned tpb = block.x * block.y * block.z, nb = grid.x * grid.y * grid.z;
    std::vector<unsigned> out(12ull * tpb * nb, 0xdeadbeefu);
    tlk_emu::launch(grid, block, 0, write_indices, out.data());
    std::size_t g = 0;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx)
          for (unsigned tz = 0; tz < block.z; ++tz)
            for (unsigned ty = 0; ty < block.y; ++ty)
              for (unsigned tx = 0; tx < block.x; ++tx, ++g) {
                const unsigned want[12] = {tx, ty, tz, bx, by, bz, block.x, block.y, block.z, grid.x, grid.y, grid.z};
                for (int k = 0; k < 12; ++k) {
                  require(out[12 * g + k] == want[k], "field " + std::to_string(k) + " of thread" + at(g));
                }
              }
  };
  check("indices_1d", [&] { check_indices(dim3(3), dim3(40)); });
  check("indices_2d", [&] { check_indices(dim3(3, 2), dim3(8, 4)); });
  check("indices_3d", [&] { check_indices(dim3(2, 3, 2), dim3(4, 3, 5)); });

  check("grid_stride_loop", [] {
    const int n = 10007;
    std::vector<float> in(n), out(n, 0.0f), want(n);
    for (int i = 0; i < n; ++i) {
      in[i] = static_cast<float>(i % 101) - 50.0f;
      want[i] = std::max(2.0f * in[i] + 1.0f, -1.0f);
    }
    tlk_emu::launch(dim3(7), dim3(64), 0, grid_stride_affine, out.data(), static_cast<const float*>(in.data()), n);
    require_equal(out, want, "grid-stride");
  });

  check("launch_plan_overload", [] {
    const tlk::LaunchPlan plan{dim3(2), dim3(kReverseThreads), 0};
    auto in = iota_f(2 * kReverseThreads);
    std::vector<float> out(in.size(), 0.0f);
    tlk_emu::launch(plan, reverse_block<true>, out.data(), static_cast<const float*>(in.data()));
    require(out[0] == in[kReverseThreads - 1] && out[kReverseThreads] == in[2 * kReverseThreads - 1], "plan launch");
    std::vector<float> sums(2, 0.0f);
    const tlk::LaunchPlan dyn{dim3(2), dim3(128), 128 * sizeof(float)};
    tlk_emu::launch(dyn, block_sum_dynamic, sums.data(), static_cast<const float*>(in.data()), 256);
    require(sums[0] == 127.0f * 128.0f / 2.0f, "plan dynamic shared bytes");
  });

  // ---- bugs ---------------------------------------------------------------------------------
  check("deadlock_divergent_syncthreads", [] {
    std::vector<int> out(32, 0);
    expect_throw<tlk_emu::DeadlockError>(
        [&] { tlk_emu::launch(dim3(1), dim3(32), 0, divergent_sync_deadlock, out.data()); },
        {"deadlock", "threads 0-15", "__syncthreads", "threads 16-31", "__shfl_xor_sync", "selftest_kernels.cuh"});
  });

  check("deadlock_divergent_sites", [] {
    std::vector<float> out(64, 0.0f);
    expect_throw<tlk_emu::DeadlockError>(
        [&] { tlk_emu::launch(dim3(1), dim3(64), 0, divergent_sync_sites, out.data()); },
        {"different __syncthreads", "selftest_kernels.cuh"});
  });

  check("deadlock_warp_op_mismatch", [] {
    std::vector<unsigned> out(32, 0);
    expect_throw<tlk_emu::DeadlockError>(
        [&] { tlk_emu::launch(dim3(1), dim3(32), 0, warp_op_mismatch, out.data()); },
        {"__ballot_sync", "__shfl_sync", "different warp op"});
  });

  check("warp_lane_missing", [] {
    std::vector<int> out(48, 0);
    expect_throw<tlk_emu::WarpSyncError>(
        [&] { tlk_emu::launch(dim3(1), dim3(48), 0, warp_lane_missing, out.data()); },
        {"__shfl_down_sync", "do not exist", "16 lanes"});
  });

  check("warp_lane_exited", [] {
    std::vector<int> out(32, 0);
    expect_throw<tlk_emu::WarpSyncError>(
        [&] { tlk_emu::launch(dim3(1), dim3(32), 0, warp_lane_exited, out.data()); },
        {"__shfl_sync", "lane 5", "exited"});
  });

  check("launch_error_1025_threads", [] {
    std::vector<float> out(2048);
    expect_throw<tlk_emu::LaunchError>(
        [&] { tlk_emu::launch(dim3(1), dim3(1025), 0, grid_stride_affine, out.data(), static_cast<const float*>(out.data()), 1); },
        {"block.x = 1025"});
    expect_throw<tlk_emu::LaunchError>(
        [&] { tlk_emu::launch(dim3(1), dim3(32, 33), 0, grid_stride_affine, out.data(), static_cast<const float*>(out.data()), 1); },
        {"1056 threads"});
  });

  check("launch_error_dimensions", [] {
    float x = 0.0f;
    auto go = [&](dim3 g, dim3 b) { tlk_emu::launch(g, b, 0, grid_stride_affine, &x, static_cast<const float*>(&x), 1); };
    expect_throw<tlk_emu::LaunchError>([&] { go(dim3(1), dim3(1, 1, 65)); }, {"block.z = 65"});
    expect_throw<tlk_emu::LaunchError>([&] { go(dim3(1, 65536), dim3(1)); }, {"grid.y = 65536"});
    expect_throw<tlk_emu::LaunchError>([&] { go(dim3(1, 1, 70000), dim3(1)); }, {"grid.z = 70000"});
    expect_throw<tlk_emu::LaunchError>([&] { go(dim3(2147483648u), dim3(1)); }, {"grid.x = 2147483648"});
    expect_throw<tlk_emu::LaunchError>([&] { go(dim3(0), dim3(1)); }, {"grid.x = 0"});
    expect_throw<tlk_emu::LaunchError>([&] { go(dim3(1), dim3(4, 0)); }, {"block.y = 0"});
  });

  check("launch_error_shared_memory", [] {
    std::vector<long long> out(2, 0);
    // Dynamic alone above the 48 KiB default.
    expect_throw<tlk_emu::LaunchError>(
        [&] { tlk_emu::launch(dim3(1), dim3(64), 48 * 1024 + 4, dynamic_fill_sum, out.data(), 16); },
        {"dynamic shared memory", "49156"});
    // 40 KiB static + 16 KiB dynamic > 48 KiB: found when the static array is declared.
    std::vector<float> f(64, 0.0f);
    tlk_emu::launch(dim3(1), dim3(64), 0, big_static_shared, f.data());
    require(f[0] == static_cast<float>(kBigStaticFloats - 1), "40 KiB static alone must work");
    expect_throw<tlk_emu::LaunchError>(
        [&] { tlk_emu::launch(dim3(1), dim3(64), 16 * 1024, big_static_shared, f.data()); },
        {"too much shared memory", "'s'"});
    // Opting in raises the limit for that kernel only (like cudaFuncSetAttribute).
    expect_throw<tlk_emu::LaunchError>(
        [&] { tlk_emu::set_max_dynamic_shared_memory(dynamic_fill_sum, 227 * 1024 + 1); }, {"exceeds"});
    tlk_emu::set_max_dynamic_shared_memory(dynamic_fill_sum, 200 * 1024);
    const int words = 200 * 1024 / 4;
    tlk_emu::launch(dim3(2), dim3(256), 200 * 1024, dynamic_fill_sum, out.data(), words);
    require(out[0] == static_cast<long long>(words) * (words - 1) / 2, "opted-in dynamic shared sum");
    expect_throw<tlk_emu::LaunchError>(
        [&] { tlk_emu::launch(dim3(1), dim3(64), 200 * 1024 + 4, dynamic_fill_sum, out.data(), 16); },
        {"opted in"});
  });

  check("device_exception_propagates", [] {
    std::vector<int> out(3 * 64, -1);
    try {
      tlk_emu::launch(dim3(3), dim3(64), 0, throwing_kernel, out.data());
      throw CheckFailed("no exception");
    } catch (const CheckFailed&) {
      throw;
    } catch (const std::runtime_error& e) {
      require(std::string(e.what()) == "boom from thread 37 of block 1", std::string("wrong message: ") + e.what());
    }
    require(Counted::live.load() == 0, "destructors of abandoned threads did not run: " + std::to_string(Counted::live.load()));
    require(out[0] == 63 && out[64] == -1 && out[128] == -1, "block 0 should have finished, blocks 1-2 not");
    // The thread's emulator state is clean afterwards.
    tlk_emu::launch(dim3(1), dim3(64), 0, throwing_kernel, out.data());
    require(out[0] == 63 && Counted::live.load() == 0, "launch after an exception");
  });

  check("nested_launch_rejected", [] {
    int x = 0;
    expect_throw<tlk_emu::LaunchError>([&] { tlk_emu::launch(dim3(1), dim3(2), 0, nested_launch_kernel, &x); },
                                       {"inside a kernel"});
  });

  check("builtins_outside_kernel", [] {
    expect_throw<tlk_emu::Error>([] { (void)threadIdx.x; }, {"threadIdx", "outside a kernel"});
    expect_throw<tlk_emu::Error>([] { __syncthreads(); }, {"__syncthreads", "outside a kernel"});
  });

  check("fiber_stack_size", [] {
    expect_throw<tlk_emu::Error>([] { tlk_emu::set_fiber_stack_size(1024); }, {"16 KiB"});
    const std::size_t old = tlk_emu::fiber_stack_size();
    tlk_emu::set_fiber_stack_size(1024 * 1024);
    std::vector<int> out(64, 0);
    tlk_emu::launch(dim3(2), dim3(64), 0, deep_stack_kernel, out.data(), 200);  // ~200 KiB deep
    tlk_emu::set_fiber_stack_size(old);
    for (int t = 0; t < 64; ++t) require(out[t] == 200, "deep recursion" + at(t));
  });

  check("concurrent_launches", [] {
    const int nthreads = 4, reps = 20;
    std::atomic<int> bad{0};
    std::vector<std::thread> pool;
    for (int k = 0; k < nthreads; ++k) {
      pool.emplace_back([k, &bad] {
        try {
          const int rows = 40 + k, cols = 33;
          auto in = iota_f(rows * cols, static_cast<float>(k));
          for (int r = 0; r < reps; ++r) {
            std::vector<float> out(rows * cols, -1.0f);
            tlk_emu::launch(dim3(2, 2), dim3(kTile, kTileRows), 0, transpose_tiled, out.data(),
                            static_cast<const float*>(in.data()), rows, cols);
            for (int i = 0; i < rows; ++i)
              for (int j = 0; j < cols; ++j)
                if (out[j * rows + i] != in[i * cols + j]) ++bad;
            std::vector<int> dl(32, 0);
            try {
              tlk_emu::launch(dim3(1), dim3(32), 0, divergent_sync_deadlock, dl.data());
              ++bad;
            } catch (const tlk_emu::DeadlockError&) {
            }
          }
        } catch (...) {
          ++bad;
        }
      });
    }
    for (auto& t : pool) t.join();
    require(bad.load() == 0, std::to_string(bad.load()) + " wrong results across threads");
  });

  check("timing_64x256_4_barriers", [] {
    const int blocks = 64, threads = 256;
    auto in = iota_f(blocks * threads);
    std::vector<float> out(in.size(), 0.0f);
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      tlk_emu::launch(dim3(blocks), dim3(threads), 0, four_barrier_sum, out.data(), static_cast<const float*>(in.data()));
      const auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    for (int b = 0; b < blocks; ++b) {
      float want = 0.0f;
      for (int t = 0; t < threads; ++t) want += in[b * threads + t];
      for (int t = 0; t < threads; ++t) require(out[b * threads + t] == want, "block sum" + at(b * threads + t));
    }
    std::printf("info timing_64x256_4_barriers: %.2f ms (best of 3)\n", best);
    require(best < 1000.0, "too slow: " + std::to_string(best) + " ms");
  });

  std::printf("%s: %d failure(s)\n", g_failures == 0 ? "PASSED" : "FAILED", g_failures);
  return g_failures == 0 ? 0 : 1;
}

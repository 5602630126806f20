// Kernels of the emulator self-test (tests/emu/selftest.cpp), written only against
// kernels/simt.cuh so that they are valid CUDA too (tests/test_emulator.py compiles them with
// nvcc). Some are deliberately wrong: the emulator must make their bug visible.
#pragma once

#include "kernels/simt.cuh"

namespace tlk_selftest {

constexpr unsigned kFullMask = 0xffffffffu;

// ---- __syncthreads ordering ----------------------------------------------------------------

constexpr int kReverseThreads = 256;

// out[b*T + t] = in[b*T + T-1-t] through shared memory. kSync = false is the classic bug: a
// thread reads another thread's slot without a barrier; the emulator runs thread 0 up to its
// next barrier (here: its end) before thread 255 starts, so thread 0 reads unwritten shared
// memory (NaN).
template <bool kSync>
__global__ void reverse_block(float* out, const float* in) {
  TLK_SHARED(float, s, kReverseThreads);
  const unsigned t = threadIdx.x;
  const unsigned base = blockIdx.x * blockDim.x;
  s[t] = in[base + t];
  if (kSync) __syncthreads();
  out[base + t] = s[blockDim.x - 1 - t];
}

// Threads at or past n return before the barrier; they count as arrived (sm_70+).
__global__ void early_exit_reverse(float* out, int n) {
  TLK_SHARED(float, s, 128);
  const int t = static_cast<int>(threadIdx.x);
  if (t >= n) return;
  s[t] = static_cast<float>(t);
  __syncthreads();
  out[t] = s[n - 1 - t];
}

// count / and / or of a predicate over the block: out[3*b + 0..2].
__global__ void barrier_reductions(int* out, const int* pred) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int c = __syncthreads_count(pred[i]);
  const int a = __syncthreads_and(pred[i]);
  const int o = __syncthreads_or(pred[i]);
  if (threadIdx.x == 0) {
    out[3 * blockIdx.x + 0] = c;
    out[3 * blockIdx.x + 1] = a;
    out[3 * blockIdx.x + 2] = o;
  }
}

// A block reduction with four barriers: the timing kernel (64 blocks x 256 threads).
__global__ void four_barrier_sum(float* out, const float* in) {
  TLK_SHARED(float, s, 256);
  const unsigned t = threadIdx.x;
  s[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  if (t < 128) s[t] += s[t + 128];
  __syncthreads();
  if (t < 64) s[t] += s[t + 64];
  __syncthreads();
  if (t < 32) {
    float v = s[t] + s[t + 32];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(kFullMask, v, off);
    if (t == 0) s[0] = v;
  }
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = s[0];
}

// ---- shared memory -------------------------------------------------------------------------

// Reads shared memory nobody wrote: the emulator fills it with 0xFF bytes (NaN / -1).
__global__ void read_unwritten_shared(float* out_f, double* out_d, int* out_i) {
  TLK_SHARED(float, sf, 64);
  TLK_SHARED(double, sd, 64);
  TLK_SHARED(int, si, 64);
  const unsigned t = threadIdx.x;
  out_f[t] = sf[t];
  out_d[t] = sd[t];
  out_i[t] = si[t];
}

__global__ void read_unwritten_dynamic(float* out) {
  TLK_DYNAMIC_SHARED(float, s);
  out[threadIdx.x] = s[threadIdx.x];
}

// Block 0 writes its shared array, every block reads it: shared memory is fresh for every block,
// so blocks other than 0 read NaN.
__global__ void shared_fresh_per_block(float* out) {
  TLK_SHARED(float, s, 32);
  if (blockIdx.x == 0) s[threadIdx.x] = 1.0f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];
}

// A shared array declared in a device function is one array per block, whichever call reaches it.
TLK_DEVICE_INLINE float* block_scratch() {
  TLK_SHARED(float, scratch, 32);
  return scratch;
}

__global__ void shared_in_device_function(float* out, int* same) {
  float* a = block_scratch();
  if (threadIdx.x == 0) a[0] = 42.0f;
  __syncthreads();
  float* b = block_scratch();
  same[threadIdx.x] = a == b;
  out[threadIdx.x] = b[0];
}

// Sum of each block's slice of `in` in dynamic shared memory (blockDim.x floats), tree-reduced.
__global__ void block_sum_dynamic(float* out, const float* in, int n) {
  TLK_DYNAMIC_SHARED(float, s);
  const unsigned t = threadIdx.x;
  const unsigned i = blockIdx.x * blockDim.x + t;
  s[t] = static_cast<int>(i) < n ? in[i] : 0.0f;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// Static and dynamic shared memory side by side must not overlap:
// out[t] = t * 3 + (blockDim.x - 1 - t) * 5 (static holds t * 3, dynamic holds t * 5).
__global__ void static_and_dynamic(int* out) {
  TLK_SHARED(int, st, 128);
  TLK_DYNAMIC_SHARED(int, dy);
  const unsigned t = threadIdx.x;
  st[t] = static_cast<int>(t) * 3;
  dy[t] = static_cast<int>(t) * 5;
  __syncthreads();
  out[t] = st[t] + dy[blockDim.x - 1 - t];
}

// Fills `words` ints of dynamic shared memory, then thread 0 sums them: exercises large
// (opted-in) dynamic shared memory.
__global__ void dynamic_fill_sum(long long* out, int words) {
  TLK_DYNAMIC_SHARED(int, s);
  for (int i = static_cast<int>(threadIdx.x); i < words; i += static_cast<int>(blockDim.x)) s[i] = i;
  __syncthreads();
  if (threadIdx.x == 0) {
    long long sum = 0;
    for (int i = 0; i < words; ++i) sum += s[i];
    out[blockIdx.x] = sum;
  }
}

// 40 KiB of static shared memory: legal alone, too much with 16 KiB of dynamic.
constexpr int kBigStaticFloats = 10 * 1024;
__global__ void big_static_shared(float* out) {
  TLK_SHARED(float, s, kBigStaticFloats);
  for (int i = static_cast<int>(threadIdx.x); i < kBigStaticFloats; i += static_cast<int>(blockDim.x)) {
    s[i] = static_cast<float>(i);
  }
  __syncthreads();
  out[threadIdx.x] = s[kBigStaticFloats - 1 - static_cast<int>(threadIdx.x)];
}

// Transposes a rows x cols matrix with 32 x 33 tiles; block (32, 8), grid (ceil(cols/32),
// ceil(rows/32)).
constexpr int kTile = 32;
constexpr int kTileRows = 8;
__global__ void transpose_tiled(float* out, const float* in, int rows, int cols) {
  TLK_SHARED_2D(float, tile, kTile, kTile + 1);
  int x = static_cast<int>(blockIdx.x * kTile + threadIdx.x);
  int y = static_cast<int>(blockIdx.y * kTile + threadIdx.y);
  for (int j = 0; j < kTile; j += kTileRows) {
    if (x < cols && y + j < rows) tile[threadIdx.y + j][threadIdx.x] = in[(y + j) * cols + x];
  }
  __syncthreads();
  x = static_cast<int>(blockIdx.y * kTile + threadIdx.x);
  y = static_cast<int>(blockIdx.x * kTile + threadIdx.y);
  for (int j = 0; j < kTile; j += kTileRows) {
    if (x < rows && y + j < cols) out[(y + j) * rows + x] = tile[threadIdx.x][threadIdx.y + j];
  }
}

// ---- warp operations -----------------------------------------------------------------------

// Tree reduction of each warp's 32 values with __shfl_down_sync; lane 0 writes the sum.
template <typename T>
__global__ void warp_reduce_down(T* out, const T* in) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  T v = in[i];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(kFullMask, v, off);
  if ((threadIdx.x & 31u) == 0) out[i / 32] = v;
}

// Butterfly all-reduce within segments of `width` lanes: every lane gets its segment's sum.
template <typename T>
__global__ void warp_allreduce_xor(T* out, const T* in, int width) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  T v = in[i];
  for (int m = width / 2; m > 0; m >>= 1) v += __shfl_xor_sync(kFullMask, v, m, width);
  out[i] = v;
}

// One shuffle of each kind with the given parameters, for an exact comparison with the CUDA
// definition: out[4*i + k] for k = idx, up, down, xor.
__global__ void shuffle_modes(int* out, const int* in, int src_lane, unsigned delta, int lane_mask, int width) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int v = in[i];
  out[4 * i + 0] = __shfl_sync(kFullMask, v, src_lane, width);
  out[4 * i + 1] = __shfl_up_sync(kFullMask, v, delta, width);
  out[4 * i + 2] = __shfl_down_sync(kFullMask, v, delta, width);
  out[4 * i + 3] = __shfl_xor_sync(kFullMask, v, lane_mask, width);
}

// Inclusive prefix sum of each warp with __shfl_up_sync.
__global__ void warp_scan_up(int* out, const int* in) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned lane = threadIdx.x & 31u;
  int v = in[i];
  for (unsigned d = 1; d < 32; d <<= 1) {
    const int u = __shfl_up_sync(kFullMask, v, d);
    if (lane >= d) v += u;
  }
  out[i] = v;
}

// Votes of each warp (lane 0 writes): out[5*w + 0..4] = ballot, any, all, ballot of the lower
// half with a half mask (divergent code), and __activemask of the lower half.
__global__ void warp_votes(unsigned* out, const int* pred) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned lane = threadIdx.x & 31u;
  const int p = pred[i];
  const unsigned b = __ballot_sync(kFullMask, p);
  const int a = __any_sync(kFullMask, p);
  const int l = __all_sync(kFullMask, p);
  unsigned low = 0, active = 0;
  if (lane < 16) {
    low = __ballot_sync(0x0000ffffu, p);
    active = __activemask();
  }
  __syncwarp();
  if (lane == 0) {
    const unsigned w = i / 32;
    out[5 * w + 0] = b;
    out[5 * w + 1] = static_cast<unsigned>(a);
    out[5 * w + 2] = static_cast<unsigned>(l);
    out[5 * w + 3] = low;
    out[5 * w + 4] = active;
  }
}

// sm_80 warp reductions: out[3*w + 0..2] = add, min, max of the warp's values.
__global__ void warp_reduce_intrinsics(int* out, const int* in) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int s = __reduce_add_sync(kFullMask, in[i]);
  const int lo = __reduce_min_sync(kFullMask, in[i]);
  const int hi = __reduce_max_sync(kFullMask, in[i]);
  if ((threadIdx.x & 31u) == 0) {
    out[3 * (i / 32) + 0] = s;
    out[3 * (i / 32) + 1] = lo;
    out[3 * (i / 32) + 2] = hi;
  }
}

// Lanes exchange through shared memory with __syncwarp: out[t] = 3 * (mirror lane in the warp).
__global__ void syncwarp_exchange(int* out) {
  TLK_SHARED(int, s, 64);
  const unsigned t = threadIdx.x;
  s[t] = static_cast<int>(t) * 3;
  __syncwarp();
  out[t] = s[(t & ~31u) + (31u - (t & 31u))];
}

// ---- atomics -------------------------------------------------------------------------------

// Grid-stride histogram of values[0..n) into nbins int bins, and their float sum.
__global__ void histogram_atomic(int* bins, float* total, const int* values, int n, int nbins) {
  const int stride = static_cast<int>(blockDim.x * gridDim.x);
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += stride) {
    atomicAdd(&bins[values[i] % nbins], 1);
    atomicAdd(total, static_cast<float>(values[i]));
  }
}

// Float atomics whose result depends on the order of the additions (determinism check).
__global__ void float_sum_atomic(float* total, const float* values, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) atomicAdd(total, values[i]);
}

// The other atomics on the values of each thread: r[0] max, r[1] min (as unsigned), r[2] count
// via a CAS loop; olds[i] = value atomicExch swapped out of *slot; sums: unsigned long long and
// double adds.
__global__ void atomics_misc(int* r, unsigned* umin, int* olds, int* slot, unsigned long long* ull_sum,
                             double* dbl_sum, const int* values, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  atomicMax(&r[0], values[i]);
  atomicMin(umin, static_cast<unsigned>(values[i]));
  int old = r[2];
  int assumed;
  do {
    assumed = old;
    old = atomicCAS(&r[2], assumed, assumed + 1);
  } while (old != assumed);
  olds[i] = atomicExch(slot, i);
  atomicAdd(ull_sum, static_cast<unsigned long long>(values[i]));
  atomicAdd(dbl_sum, static_cast<double>(values[i]) * 0.5);
}

// ---- indexing ------------------------------------------------------------------------------

// Every thread writes its coordinates at its global linear index g:
// out[12*g + 0..11] = threadIdx.xyz, blockIdx.xyz, blockDim.xyz, gridDim.xyz.
__global__ void write_indices(unsigned* out) {
  const unsigned block_linear = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned thread_linear = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const unsigned g = block_linear * (blockDim.x * blockDim.y * blockDim.z) + thread_linear;
  unsigned* o = out + 12 * g;
  o[0] = threadIdx.x;
  o[1] = threadIdx.y;
  o[2] = threadIdx.z;
  o[3] = blockIdx.x;
  o[4] = blockIdx.y;
  o[5] = blockIdx.z;
  o[6] = blockDim.x;
  o[7] = blockDim.y;
  o[8] = blockDim.z;
  o[9] = gridDim.x;
  o[10] = gridDim.y;
  o[11] = gridDim.z;
}

// out[i] = 2 * in[i] + 1 for i < n with a grid-stride loop (n larger than the grid).
__global__ void grid_stride_affine(float* out, const float* in, int n) {
  const int stride = static_cast<int>(blockDim.x * gridDim.x);
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += stride) {
    out[i] = tlk::max(2.0f * in[i] + 1.0f, tlk::min(-1.0f, 0.0f));
  }
}

// ---- bugs the emulator must catch ----------------------------------------------------------

// __syncthreads in divergent code: lanes 0-15 wait at the barrier, lanes 16-31 at a shuffle that
// needs lanes 0-15. Hangs on a GPU; DeadlockError under the emulator.
__global__ void divergent_sync_deadlock(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) __syncthreads();
  v += __shfl_xor_sync(kFullMask, v, 16);
  out[threadIdx.x] = v;
}

// Even and odd threads wait at different __syncthreads (undefined in CUDA): DeadlockError.
__global__ void divergent_sync_sites(float* out) {
  TLK_SHARED(float, s, 64);
  const unsigned t = threadIdx.x;
  if (t % 2 == 0) {
    s[t] = 1.0f;
    __syncthreads();
  } else {
    s[t] = 2.0f;
    __syncthreads();
  }
  out[t] = s[t ^ 1u];
}

// Lanes of one warp at different warp ops with the same mask: DeadlockError.
__global__ void warp_op_mismatch(unsigned* out) {
  const unsigned lane = threadIdx.x & 31u;
  unsigned r;
  if (lane < 16) {
    r = __ballot_sync(kFullMask, 1);
  } else {
    r = static_cast<unsigned>(__shfl_sync(kFullMask, static_cast<int>(lane), 0));
  }
  out[threadIdx.x] = r;
}

// A full-mask shuffle in a block of 48 threads: the second warp has only 16 lanes. WarpSyncError.
__global__ void warp_lane_missing(int* out) {
  out[threadIdx.x] = __shfl_down_sync(kFullMask, static_cast<int>(threadIdx.x), 1);
}

// Lane 5 returns before the full-mask shuffle the others execute. WarpSyncError.
__global__ void warp_lane_exited(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_sync(kFullMask, static_cast<int>(threadIdx.x), 0);
}

}  // namespace tlk_selftest

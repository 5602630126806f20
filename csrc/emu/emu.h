// tlk_emu: a SIMT emulator that runs CUDA device code on the CPU.
//
// Device code (csrc/kernels/<op>.cuh, written against kernels/simt.cuh) is compiled by the host
// C++ compiler (C++20, header-only, no torch) against this header and run with
//   tlk_emu::launch(grid, block, dynamic_shared_bytes, kernel, args...)   or
//   tlk_emu::launch(const tlk::LaunchPlan&, kernel, args...)
// with the launch configuration the GPU would get. launch() is synchronous and throws on error.
//
// Guarantees
//   * Every CUDA thread is a fiber with its own stack (64 KiB by default, guard page below:
//     an overflow is a SIGSEGV; tlk_emu::set_fiber_stack_size or TLK_EMU_FIBER_STACK raise it).
//     Blocks run one after another (blockIdx.x fastest, then y, then z). Inside a block, fibers
//     run round-robin in linear thread id order (x + y*bx + z*bx*by), each until it blocks at a
//     __syncthreads* or a warp operation: a launch is deterministic (float atomics included).
//   * __syncthreads has sm_70+ semantics (returned threads count as arrived); every live thread
//     must wait at the same __syncthreads call site.
//   * Warp operations (__shfl*_sync, __ballot/__any/__all_sync, __syncwarp, __match_*_sync,
//     __reduce_*_sync) follow PTX exactly (lane = linear id % 32, `width` segments). One
//     completes when every lane of its mask waits at the same kind of op with the same mask
//     (call sites may differ, as on sm_70+). A shuffle reading a lane outside the mask gets
//     poison (all bits set). __activemask() is the set of lanes of the warp waiting at the same
//     __activemask() once nothing else in the block can run.
//   * Shared memory (TLK_SHARED, TLK_SHARED_2D, TLK_DYNAMIC_SHARED) is per block and filled with
//     0xFF bytes (NaN for float/double, -1 for ints) before each block, so reading unwritten
//     shared memory shows. Limits as on the GPU: static + dynamic <= 48 KiB, or up to 227 KiB
//     for a kernel opted in with tlk_emu::set_max_dynamic_shared_memory (the analogue of
//     cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, n)).
//   * Atomics are std::atomic_ref (relaxed). All scheduler state is thread_local: launch() may
//     run on several OS threads at once; each launch runs entirely on its calling thread, which
//     keeps its fiber stacks and shared memory for its next launches
//     (tlk_emu::release_thread_resources frees them).
//   * Builds with -fsanitize=address work (stack switches are annotated) and also report
//     out-of-bounds shared memory accesses (arrays are separated by poisoned redzones).
//
// Errors (all derive from tlk_emu::Error, a std::runtime_error)
//   * LaunchError: invalid configuration, named by dimension (block.x/y > 1024, block.z > 64,
//     more than 1024 threads, grid.x > 2^31-1, grid.y/z > 65535, a zero dimension); too much
//     shared memory; a launch from inside a kernel.
//   * DeadlockError: no thread of a block can proceed (e.g. __syncthreads in divergent code
//     while other threads wait at a warp op; lanes of a mask at different warp ops), or live
//     threads waiting at different __syncthreads. The message lists which threads wait where.
//   * WarpSyncError: a warp op whose mask names a lane that exited, does not exist (partial last
//     warp) or omits the caller; a shuffle width that is not a power of two <= 32.
//   * Exceptions thrown by device code propagate out of launch() after the block's other fibers
//     have been unwound (their pending barrier throws an internal object that is not a
//     std::exception: device code must not swallow it with catch (...)).
//   * Missing barriers usually show: a thread runs up to its next barrier before the next
//     thread starts, so reading another thread's shared memory without a barrier in between
//     sees poison or stale data.
//
// Counters (counters.h): while a tlk_emu::Profile is alive, launches count the global-memory
// sectors per warp-level request, shared-memory bank conflicts, divergent branches and FLOPs that
// the device code reports through kernels/simt.cuh's accessors (tlk::ld_global, ...).
//
// Not modelled
//   * Timing, occupancy, caches, registers, __launch_bounds__ (accepted, ignored); coalescing
//     and bank conflicts only as counted above.
//   * Races that this one schedule does not expose: real warps interleave in any order and
//     lanes of a warp run in lockstep, so code that is right only under another interleaving
//     (or wrong only under one) can pass here. Pre-Volta warp-synchronous code without
//     __syncwarp is not emulated.
//   * Concurrency between blocks (spin-waiting on another block deadlocks the launch).
//   * Out-of-bounds global memory accesses (use -fsanitize=address), the fast-math intrinsics
//     (__expf, ...: guard them with __CUDA_ARCH__). The _rn intrinsics are plain IEEE
//     operations: compile with -ffp-contract=off so they are not fused.
//   * Static shared memory counts the declarations a block executes, not all of the kernel's.
//     Device code must not take sizeof of a shared array (here a pointer) nor declare shared
//     memory at namespace scope.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <source_location>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <dlfcn.h>
#include <cxxabi.h>

#include "counters.h"
#include "fiber.h"

// ---- CUDA keywords -------------------------------------------------------------------------
#ifndef __global__
#define __global__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __host__
#define __host__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
// (__noinline__ is deliberately not defined: libstdc++ spells __attribute__((__noinline__)).)
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif

// ---- CUDA built-in types -------------------------------------------------------------------
struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

inline constexpr int warpSize = 32;

namespace tlk {
// The launch plan an op header computes once; the CUDA launcher and the emulator both use it.
struct LaunchPlan {
  dim3 grid;
  dim3 block;
  std::size_t shared_bytes = 0;  // dynamic shared memory
};
}  // namespace tlk

namespace tlk_emu {

// ---- errors --------------------------------------------------------------------------------
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Invalid launch configuration or shared memory size.
struct LaunchError : Error {
  using Error::Error;
};
// The threads of a block can no longer all make progress, or wait at different __syncthreads.
struct DeadlockError : Error {
  using Error::Error;
};
// A warp operation used in a way CUDA leaves undefined (mask naming an exited, missing or other
// lane than the caller's, invalid width).
struct WarpSyncError : Error {
  using Error::Error;
};

// ---- configuration -------------------------------------------------------------------------
inline constexpr std::size_t kDefaultSharedMemoryLimit = 48 * 1024;  // static + dynamic, default
inline constexpr std::size_t kMaxStaticSharedMemory = 48 * 1024;     // what nvcc accepts
inline constexpr std::size_t kMaxSharedMemoryOptIn = 227 * 1024;     // sm_90 opt-in maximum
inline constexpr std::size_t kDefaultFiberStackSize = 64 * 1024;

namespace detail {
inline std::atomic<std::size_t>& stack_size_setting() {
  static std::atomic<std::size_t> v{[] {
    // TLK_EMU_FIBER_STACK (bytes) overrides the default, e.g. for -O0 builds of deep code.
    if (const char* e = std::getenv("TLK_EMU_FIBER_STACK")) {
      const unsigned long long n = std::strtoull(e, nullptr, 0);
      if (n >= 16 * 1024) return static_cast<std::size_t>(n);
    }
    return kDefaultFiberStackSize;
  }()};
  return v;
}

struct SharedAttributes {
  std::mutex mutex;
  std::unordered_map<const void*, std::size_t> max_dynamic;  // kernel -> opted-in bytes
};
inline SharedAttributes& shared_attributes() {
  static SharedAttributes a;
  return a;
}

template <typename Kernel>
const void* kernel_key(const Kernel& k) {
  if constexpr (std::is_pointer_v<Kernel> && std::is_function_v<std::remove_pointer_t<Kernel>>) {
    return reinterpret_cast<const void*>(k);
  } else {
    return nullptr;  // functors cannot be opted in
  }
}
}  // namespace detail

// Stack size of every fiber of later launches (process-wide; rounded up to whole pages, at least
// 16 KiB). Default 64 KiB, or the TLK_EMU_FIBER_STACK environment variable.
inline void set_fiber_stack_size(std::size_t bytes) {
  if (bytes < 16 * 1024) throw Error("tlk_emu: fiber stacks must be at least 16 KiB");
  detail::stack_size_setting().store(bytes);
}
inline std::size_t fiber_stack_size() { return detail::stack_size_setting().load(); }

// The analogue of cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, b):
// lets `kernel` launch with up to `bytes` of dynamic shared memory and up to 227 KiB of shared
// memory in all. Process-wide, like the CUDA attribute.
template <typename R, typename... P>
void set_max_dynamic_shared_memory(R (*kernel)(P...), std::size_t bytes) {
  if (bytes > kMaxSharedMemoryOptIn) {
    throw LaunchError("tlk_emu: set_max_dynamic_shared_memory(" + std::to_string(bytes) +
                      " bytes) exceeds the " + std::to_string(kMaxSharedMemoryOptIn) +
                      "-byte shared memory of a block");
  }
  auto& a = detail::shared_attributes();
  std::lock_guard<std::mutex> lock(a.mutex);
  a.max_dynamic[reinterpret_cast<const void*>(kernel)] = bytes;
}

namespace detail {

// ---- per-launch state ----------------------------------------------------------------------
enum class State : std::uint8_t { Runnable, Barrier, Warp, ActiveMask, Done };
enum class BarrierKind : std::uint8_t { Plain, Count, And, Or };
enum class WarpKind : std::uint8_t {
  ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp,
  ReduceAdd, ReduceMin, ReduceMax, ReduceAnd, ReduceOr, ReduceXor, MatchAny, MatchAll
};

struct Launch;

struct Fiber {
  Context ctx;
  Launch* launch = nullptr;
  uint3 idx{0, 0, 0};
  unsigned lid = 0;
  State state = State::Runnable;
  // What the fiber waits at (valid while state is Barrier, Warp or ActiveMask).
  const char* op = "";
  std::source_location site;
  WarpKind wkind = WarpKind::SyncWarp;
  BarrierKind bkind = BarrierKind::Plain;
  std::uint8_t vsize = 0;    // bytes of the exchanged value
  bool is_signed = false;    // __reduce_min/max_sync on int
  int width = 32;
  unsigned mask = 0;
  unsigned b = 0;            // srcLane / delta / laneMask
  std::uint64_t value = 0;   // value bits or predicate
  std::uint64_t result = 0;
  unsigned barriers_passed = 0;
};

struct SharedSite {
  const void* key;
  char* ptr;
  std::size_t bytes;
  const char* name;
};

// An anonymous mapping of `bytes` (rounded up to pages) followed by an inaccessible page.
class GuardedRegion {
 public:
  explicit GuardedRegion(std::size_t bytes) {
    const std::size_t page = page_size();
    usable_ = round_up(bytes == 0 ? 1 : bytes, page);
    total_ = usable_ + page;
    void* p = ::mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("tlk_emu: cannot map shared memory");
    base_ = static_cast<char*>(p);
    ::mprotect(base_ + usable_, page, PROT_NONE);
  }
  GuardedRegion(const GuardedRegion&) = delete;
  GuardedRegion& operator=(const GuardedRegion&) = delete;
  ~GuardedRegion() {
    unpoison(base_, usable_);
    ::munmap(base_, total_);
  }
  char* begin() const { return base_; }
  std::size_t size() const { return usable_; }
  char* guard() const { return base_ + usable_; }

 private:
  char* base_ = nullptr;
  std::size_t usable_ = 0, total_ = 0;
};

// Memory a thread keeps between its launches (mapping and protecting fiber stacks costs more than
// running a small kernel): the fiber stacks of its largest block so far, the static shared memory
// arena and its largest dynamic shared memory. Freed when the thread exits or by
// tlk_emu::release_thread_resources().
struct ThreadResources {
  std::unique_ptr<StackPool> stacks;
  std::unique_ptr<GuardedRegion> static_region;
  std::unique_ptr<GuardedRegion> dynamic_region;
  std::size_t dynamic_capacity = 0;
};

inline ThreadResources& thread_resources() {
  thread_local ThreadResources r;
  return r;
}

using Invoker = void (*)(const void*);

#if defined(TLK_EMU_ASAN)
// Under AddressSanitizer, static shared arrays are separated by poisoned redzones and everything
// outside the arrays is poisoned, so out-of-bounds shared memory accesses are reported.
inline constexpr std::size_t kSharedRedzone = 32;
inline constexpr std::size_t kStaticArenaBytes = 2 * kMaxStaticSharedMemory;
#else
inline constexpr std::size_t kSharedRedzone = 0;
inline constexpr std::size_t kStaticArenaBytes = kMaxStaticSharedMemory;
#endif

struct Launch {
  dim3 grid, block;
  uint3 block_idx{0, 0, 0};
  unsigned nthreads = 0, nwarps = 0;
  Invoker invoke = nullptr;
  const void* payload = nullptr;
  std::unique_ptr<Fiber[]> fibers;
  StackPool* stacks = nullptr;  // from the thread's cache
  Context sched;
  std::exception_ptr error;
  bool aborting = false;
  unsigned live = 0, at_barrier = 0, at_activemask = 0;
  std::vector<unsigned> warp_waiting;  // lanes in state Warp, per warp
  // Shared memory.
  char* static_base = nullptr;  // kStaticArenaBytes, from the thread's cache
  char* dynamic_ptr = nullptr;
  std::size_t dynamic_bytes = 0;
  std::size_t total_limit = kDefaultSharedMemoryLimit;
  bool opted_in = false;
  std::size_t static_used = 0;      // bytes as the GPU counts them
  std::size_t static_physical = 0;  // end of the last array in the arena (redzones included)
  std::vector<SharedSite> sites;
  Recorder* recorder = nullptr;  // counters, while a Profile is active

  void fail(std::exception_ptr e) {
    if (!error) error = std::move(e);
    aborting = true;
  }
};

// Thrown into the fibers of a block that is being abandoned after an error.
struct Cancelled {};

constinit inline thread_local Launch* tls_launch = nullptr;
constinit inline thread_local Fiber* tls_fiber = nullptr;

[[noreturn]] inline void outside_kernel(const char* what) {
  throw Error(std::string("tlk_emu: ") + what +
              " used outside a kernel launched by tlk_emu::launch on this thread");
}

inline Fiber& this_fiber(const char* what) {
  Fiber* f = tls_fiber;
  if (f == nullptr) [[unlikely]] outside_kernel(what);
  return *f;
}

inline const uint3& thread_idx() { return this_fiber("threadIdx").idx; }
inline const uint3& block_idx() { return this_fiber("blockIdx").launch->block_idx; }
inline const dim3& block_dim() { return this_fiber("blockDim").launch->block; }
inline const dim3& grid_dim() { return this_fiber("gridDim").launch->grid; }

inline std::string where(const std::source_location& s) {
  return std::string(s.file_name()) + ":" + std::to_string(s.line()) + ":" +
         std::to_string(s.column());
}

inline bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

inline std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

inline std::string block_name(const Launch& L) {
  return "block (" + std::to_string(L.block_idx.x) + "," + std::to_string(L.block_idx.y) + "," +
         std::to_string(L.block_idx.z) + ") of a launch with grid (" + std::to_string(L.grid.x) +
         "," + std::to_string(L.grid.y) + "," + std::to_string(L.grid.z) + ") and block (" +
         std::to_string(L.block.x) + "," + std::to_string(L.block.y) + "," +
         std::to_string(L.block.z) + ")";
}

inline std::string thread_name(const Fiber& f) {
  return "thread " + std::to_string(f.lid) + " (threadIdx (" + std::to_string(f.idx.x) + "," +
         std::to_string(f.idx.y) + "," + std::to_string(f.idx.z) + "), warp " +
         std::to_string(f.lid / 32) + " lane " + std::to_string(f.lid % 32) + ")";
}

// Switches from the running fiber back to the scheduler; on return, the fiber was released (or
// the block is being abandoned).
inline void suspend(Launch& L, Fiber& f) {
  context_switch(f.ctx, L.sched);
  if (L.aborting) [[unlikely]] throw Cancelled{};
}

// ---- barriers ------------------------------------------------------------------------------
inline int block_barrier(BarrierKind kind, int pred, const char* op, const std::source_location& loc) {
  Fiber& f = this_fiber(op);
  Launch& L = *f.launch;
  f.state = State::Barrier;
  f.bkind = kind;
  f.op = op;
  f.site = loc;
  f.value = pred != 0;
  ++L.at_barrier;
  suspend(L, f);
  return static_cast<int>(f.result);
}

// ---- warp operations -----------------------------------------------------------------------
inline unsigned lanes_in_warp(const Launch& L, unsigned warp) {
  const unsigned first = warp * 32;
  return L.nthreads - first >= 32 ? 32u : L.nthreads - first;
}

inline std::uint64_t warp_op(WarpKind kind, const char* op, unsigned mask, std::uint64_t value,
                             unsigned vsize, unsigned b, int width, bool is_signed,
                             const std::source_location& loc) {
  Fiber& f = this_fiber(op);
  Launch& L = *f.launch;
  const unsigned lane = f.lid % 32, warp = f.lid / 32;
  const unsigned n = lanes_in_warp(L, warp);
  const unsigned exists = n == 32 ? 0xffffffffu : (1u << n) - 1;
  auto fail = [&](const std::string& why) -> void {
    throw WarpSyncError("tlk_emu: " + std::string(op) + "(mask=" + hex(mask) + ") at " + where(loc) +
                        " by " + thread_name(f) + " in " + block_name(L) + ": " + why);
  };
  if (((mask >> lane) & 1u) == 0) fail("the calling lane is not in the mask");
  if ((mask & ~exists) != 0) {
    fail("the mask names lanes that do not exist (this warp has " + std::to_string(n) +
         " lanes, mask of missing lanes " + hex(mask & ~exists) + ")");
  }
  if (kind <= WarpKind::ShflXor && (width < 1 || width > 32 || (width & (width - 1)) != 0)) {
    fail("width " + std::to_string(width) + " is not a power of two in [1, 32]");
  }
  for (unsigned m = mask; m != 0; m &= m - 1) {
    const unsigned q = static_cast<unsigned>(std::countr_zero(m));
    if (L.fibers[warp * 32 + q].state == State::Done) {
      fail("lane " + std::to_string(q) + " of the mask has already exited");
    }
  }
  f.state = State::Warp;
  f.op = op;
  f.site = loc;
  f.wkind = kind;
  f.mask = mask;
  f.value = value;
  f.vsize = static_cast<std::uint8_t>(vsize);
  f.b = b;
  f.width = width;
  f.is_signed = is_signed;
  ++L.warp_waiting[warp];
  suspend(L, f);
  return f.result;
}

template <typename T>
std::uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "tlk_emu: warp operations exchange values of at most 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(std::uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

template <typename T>
constexpr void check_shfl_type() {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool> && sizeof(T) >= 4 && sizeof(T) <= 8,
                "tlk_emu: shuffles take int, unsigned, long, long long, their unsigned forms, "
                "float or double (as in CUDA)");
}

// ---- shared memory -------------------------------------------------------------------------
inline std::string kib(std::size_t b) { return std::to_string(b) + " bytes"; }

inline void* static_shared_bytes(const void* key, std::size_t elem, std::size_t count,
                                 std::size_t align, const char* name) {
  Fiber& f = this_fiber("TLK_SHARED");
  Launch& L = *f.launch;
  if (count != 0 && elem > SIZE_MAX / count) {
    throw LaunchError(std::string("tlk_emu: shared array '") + name + "' is too large");
  }
  const std::size_t bytes = elem * count;
  for (const SharedSite& s : L.sites) {
    if (s.key == key) {
      if (s.bytes != bytes) {
        throw Error(std::string("tlk_emu: shared array '") + name + "' declared with " +
                    kib(bytes) + " by " + thread_name(f) + " but " + kib(s.bytes) +
                    " by an earlier thread of the block (its size must be a constant)");
      }
      return s.ptr;
    }
  }
  if (align < 16) align = 16;
  const std::size_t off = round_up(L.static_used, align);
  if (off + bytes > kMaxStaticSharedMemory) {
    throw LaunchError(std::string("tlk_emu: static shared memory of the kernel exceeds ") +
                      kib(kMaxStaticSharedMemory) + " at array '" + name + "' (" + kib(bytes) +
                      ", " + kib(off) + " already declared); nvcc would reject it: use dynamic "
                      "shared memory");
  }
  if (off + bytes + L.dynamic_bytes > L.total_limit) {
    throw LaunchError(std::string("tlk_emu: too much shared memory: static ") + kib(off + bytes) +
                      " (up to array '" + name + "') + dynamic " + kib(L.dynamic_bytes) +
                      " exceed the " + kib(L.total_limit) + " limit of a block" +
                      (L.opted_in ? std::string()
                                  : std::string(" (opt in to up to ") + kib(kMaxSharedMemoryOptIn) +
                                        " with tlk_emu::set_max_dynamic_shared_memory)"));
  }
  const std::size_t phys = round_up(L.static_physical + kSharedRedzone, align);
  if (phys + bytes > kStaticArenaBytes) {
    throw Error(std::string("tlk_emu: out of static shared memory arena at array '") + name + "'");
  }
  char* p = L.static_base + phys;
  unpoison(p, bytes);
  std::memset(p, 0xFF, bytes);
  L.static_used = off + bytes;
  L.static_physical = phys + bytes;
  L.sites.push_back(SharedSite{key, p, bytes, name});
  return p;
}

template <typename T>
T* static_shared(const void* key, std::size_t count, const char* name) {
  return static_cast<T*>(static_shared_bytes(key, sizeof(T), count, alignof(T), name));
}

inline void* dynamic_shared() { return this_fiber("TLK_DYNAMIC_SHARED").launch->dynamic_ptr; }

// ---- counters (kernels/simt.cuh's accessors call these) ------------------------------------
inline void record_access(AccessKind kind, const void* p, std::uint32_t size, const std::source_location& loc) {
  Fiber& f = this_fiber(access_kind_name(kind));
  if (Recorder* r = f.launch->recorder) [[unlikely]] r->access(kind, f.lid, loc, p, size);
}
inline bool record_branch(bool taken, const std::source_location& loc) {
  Fiber& f = this_fiber("TLK_BRANCH");
  if (Recorder* r = f.launch->recorder) [[unlikely]] r->access(AccessKind::Branch, f.lid, loc, nullptr, 0, taken);
  return taken;
}
inline void record_flops(std::uint64_t n) {
  Fiber& f = this_fiber("tlk::count_flops");
  if (Recorder* r = f.launch->recorder) [[unlikely]] r->flops(n);
}

// The demangled name of a kernel function (its symbol must be exported), or its address.
inline std::string kernel_name(const void* key) {
  if (key == nullptr) return "functor";
  Dl_info info{};
  if (::dladdr(key, &info) != 0 && info.dli_sname != nullptr) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string name = status == 0 && d != nullptr ? d : info.dli_sname;
    std::free(d);
    return name;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "kernel@%p", key);
  return buf;
}

}  // namespace detail
}  // namespace tlk_emu

// ---- device-side API (global namespace, as in CUDA) ----------------------------------------
#define threadIdx (::tlk_emu::detail::thread_idx())
#define blockIdx (::tlk_emu::detail::block_idx())
#define blockDim (::tlk_emu::detail::block_dim())
#define gridDim (::tlk_emu::detail::grid_dim())

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::block_barrier(::tlk_emu::detail::BarrierKind::Plain, 0, "__syncthreads", loc);
}
inline int __syncthreads_count(int pred, std::source_location loc = std::source_location::current()) {
  return ::tlk_emu::detail::block_barrier(::tlk_emu::detail::BarrierKind::Count, pred,
                                          "__syncthreads_count", loc);
}
inline int __syncthreads_and(int pred, std::source_location loc = std::source_location::current()) {
  return ::tlk_emu::detail::block_barrier(::tlk_emu::detail::BarrierKind::And, pred,
                                          "__syncthreads_and", loc);
}
inline int __syncthreads_or(int pred, std::source_location loc = std::source_location::current()) {
  return ::tlk_emu::detail::block_barrier(::tlk_emu::detail::BarrierKind::Or, pred,
                                          "__syncthreads_or", loc);
}

inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::SyncWarp, "__syncwarp", mask, 0, 0, 0, 32,
                             false, loc);
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
              std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::check_shfl_type<T>();
  return ::tlk_emu::detail::from_bits<T>(::tlk_emu::detail::warp_op(
      ::tlk_emu::detail::WarpKind::ShflIdx, "__shfl_sync", mask, ::tlk_emu::detail::to_bits(var),
      sizeof(T), static_cast<unsigned>(srcLane), width, false, loc));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                 std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::check_shfl_type<T>();
  return ::tlk_emu::detail::from_bits<T>(::tlk_emu::detail::warp_op(
      ::tlk_emu::detail::WarpKind::ShflUp, "__shfl_up_sync", mask, ::tlk_emu::detail::to_bits(var),
      sizeof(T), delta, width, false, loc));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                   std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::check_shfl_type<T>();
  return ::tlk_emu::detail::from_bits<T>(::tlk_emu::detail::warp_op(
      ::tlk_emu::detail::WarpKind::ShflDown, "__shfl_down_sync", mask,
      ::tlk_emu::detail::to_bits(var), sizeof(T), delta, width, false, loc));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                  std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::check_shfl_type<T>();
  return ::tlk_emu::detail::from_bits<T>(::tlk_emu::detail::warp_op(
      ::tlk_emu::detail::WarpKind::ShflXor, "__shfl_xor_sync", mask,
      ::tlk_emu::detail::to_bits(var), sizeof(T), static_cast<unsigned>(laneMask), width, false,
      loc));
}

inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(
      ::tlk_emu::detail::WarpKind::Ballot, "__ballot_sync", mask, pred != 0, 4, 0, 32, false, loc));
}
inline int __any_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::Any, "__any_sync",
                                                     mask, pred != 0, 4, 0, 32, false, loc));
}
inline int __all_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::All, "__all_sync",
                                                     mask, pred != 0, 4, 0, 32, false, loc));
}

// sm_80 warp reductions.
inline unsigned __reduce_add_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceAdd,
                                                          "__reduce_add_sync", mask, value, 4, 0, 32, false, loc));
}
inline int __reduce_add_sync(unsigned mask, int value, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceAdd,
                                                     "__reduce_add_sync", mask, static_cast<unsigned>(value),
                                                     4, 0, 32, true, loc));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceMin,
                                                          "__reduce_min_sync", mask, value, 4, 0, 32, false, loc));
}
inline int __reduce_min_sync(unsigned mask, int value, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceMin,
                                                     "__reduce_min_sync", mask, static_cast<unsigned>(value),
                                                     4, 0, 32, true, loc));
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceMax,
                                                          "__reduce_max_sync", mask, value, 4, 0, 32, false, loc));
}
inline int __reduce_max_sync(unsigned mask, int value, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceMax,
                                                     "__reduce_max_sync", mask, static_cast<unsigned>(value),
                                                     4, 0, 32, true, loc));
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceAnd,
                                                          "__reduce_and_sync", mask, value, 4, 0, 32, false, loc));
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceOr,
                                                          "__reduce_or_sync", mask, value, 4, 0, 32, false, loc));
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(::tlk_emu::detail::WarpKind::ReduceXor,
                                                          "__reduce_xor_sync", mask, value, 4, 0, 32, false, loc));
}

template <typename T>
unsigned __match_any_sync(unsigned mask, T value, std::source_location loc = std::source_location::current()) {
  static_assert(std::is_integral_v<T> || std::is_floating_point_v<T>);
  return static_cast<unsigned>(::tlk_emu::detail::warp_op(
      ::tlk_emu::detail::WarpKind::MatchAny, "__match_any_sync", mask, ::tlk_emu::detail::to_bits(value),
      sizeof(T), 0, 32, false, loc));
}
template <typename T>
unsigned __match_all_sync(unsigned mask, T value, int* pred, std::source_location loc = std::source_location::current()) {
  static_assert(std::is_integral_v<T> || std::is_floating_point_v<T>);
  const auto r = static_cast<unsigned>(::tlk_emu::detail::warp_op(
      ::tlk_emu::detail::WarpKind::MatchAll, "__match_all_sync", mask, ::tlk_emu::detail::to_bits(value),
      sizeof(T), 0, 32, false, loc));
  *pred = r != 0;
  return r;
}

// The lanes of the caller's warp that reach this __activemask() together: once no other thread
// of the block can make progress, the lanes waiting at the same __activemask call site form the
// mask (maximal convergence).
inline unsigned __activemask(std::source_location loc = std::source_location::current()) {
  auto& f = ::tlk_emu::detail::this_fiber("__activemask");
  auto& L = *f.launch;
  f.state = ::tlk_emu::detail::State::ActiveMask;
  f.op = "__activemask";
  f.site = loc;
  ++L.at_activemask;
  ::tlk_emu::detail::suspend(L, f);
  return static_cast<unsigned>(f.result);
}

// ---- atomics (relaxed, as in CUDA); return the old value ------------------------------------
namespace tlk_emu::detail {
template <typename T>
T atomic_min(T* a, T v) {
  std::atomic_ref<T> r(*a);
  T old = r.load(std::memory_order_relaxed);
  while (v < old && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
}
template <typename T>
T atomic_max(T* a, T v) {
  std::atomic_ref<T> r(*a);
  T old = r.load(std::memory_order_relaxed);
  while (old < v && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
}
template <typename T>
T atomic_cas(T* a, T compare, T v) {
  std::atomic_ref<T>(*a).compare_exchange_strong(compare, v, std::memory_order_relaxed);
  return compare;  // the old value either way
}
}  // namespace tlk_emu::detail

#define TLK_EMU_RELAXED std::memory_order_relaxed
inline int atomicAdd(int* a, int v) { return std::atomic_ref<int>(*a).fetch_add(v, TLK_EMU_RELAXED); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_add(v, TLK_EMU_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_add(v, TLK_EMU_RELAXED);
}
inline float atomicAdd(float* a, float v) { return std::atomic_ref<float>(*a).fetch_add(v, TLK_EMU_RELAXED); }
inline double atomicAdd(double* a, double v) { return std::atomic_ref<double>(*a).fetch_add(v, TLK_EMU_RELAXED); }
inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v, TLK_EMU_RELAXED); }
inline unsigned atomicSub(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_sub(v, TLK_EMU_RELAXED); }
inline int atomicExch(int* a, int v) { return std::atomic_ref<int>(*a).exchange(v, TLK_EMU_RELAXED); }
inline unsigned atomicExch(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).exchange(v, TLK_EMU_RELAXED); }
inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).exchange(v, TLK_EMU_RELAXED);
}
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v, TLK_EMU_RELAXED); }
inline int atomicMin(int* a, int v) { return ::tlk_emu::detail::atomic_min(a, v); }
inline unsigned atomicMin(unsigned* a, unsigned v) { return ::tlk_emu::detail::atomic_min(a, v); }
inline long long atomicMin(long long* a, long long v) { return ::tlk_emu::detail::atomic_min(a, v); }
inline unsigned long long atomicMin(unsigned long long* a, unsigned long long v) { return ::tlk_emu::detail::atomic_min(a, v); }
inline int atomicMax(int* a, int v) { return ::tlk_emu::detail::atomic_max(a, v); }
inline unsigned atomicMax(unsigned* a, unsigned v) { return ::tlk_emu::detail::atomic_max(a, v); }
inline long long atomicMax(long long* a, long long v) { return ::tlk_emu::detail::atomic_max(a, v); }
inline unsigned long long atomicMax(unsigned long long* a, unsigned long long v) { return ::tlk_emu::detail::atomic_max(a, v); }
inline int atomicCAS(int* a, int compare, int v) { return ::tlk_emu::detail::atomic_cas(a, compare, v); }
inline unsigned atomicCAS(unsigned* a, unsigned compare, unsigned v) { return ::tlk_emu::detail::atomic_cas(a, compare, v); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long compare, unsigned long long v) {
  return ::tlk_emu::detail::atomic_cas(a, compare, v);
}
inline int atomicAnd(int* a, int v) { return std::atomic_ref<int>(*a).fetch_and(v, TLK_EMU_RELAXED); }
inline unsigned atomicAnd(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_and(v, TLK_EMU_RELAXED); }
inline unsigned long long atomicAnd(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_and(v, TLK_EMU_RELAXED);
}
inline int atomicOr(int* a, int v) { return std::atomic_ref<int>(*a).fetch_or(v, TLK_EMU_RELAXED); }
inline unsigned atomicOr(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_or(v, TLK_EMU_RELAXED); }
inline unsigned long long atomicOr(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_or(v, TLK_EMU_RELAXED);
}
inline int atomicXor(int* a, int v) { return std::atomic_ref<int>(*a).fetch_xor(v, TLK_EMU_RELAXED); }
inline unsigned atomicXor(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_xor(v, TLK_EMU_RELAXED); }
inline unsigned long long atomicXor(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_xor(v, TLK_EMU_RELAXED);
}
// ((old >= v) ? 0 : old + 1) and (((old == 0) || (old > v)) ? v : old - 1), as in CUDA.
inline unsigned atomicInc(unsigned* a, unsigned v) {
  std::atomic_ref<unsigned> r(*a);
  unsigned old = r.load(TLK_EMU_RELAXED);
  while (!r.compare_exchange_weak(old, old >= v ? 0u : old + 1, TLK_EMU_RELAXED)) {
  }
  return old;
}
inline unsigned atomicDec(unsigned* a, unsigned v) {
  std::atomic_ref<unsigned> r(*a);
  unsigned old = r.load(TLK_EMU_RELAXED);
  while (!r.compare_exchange_weak(old, (old == 0 || old > v) ? v : old - 1, TLK_EMU_RELAXED)) {
  }
  return old;
}
#undef TLK_EMU_RELAXED

inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

template <typename T>
T __ldg(const T* p) {
  return *p;
}

// ---- integer / bit-reinterpretation / correctly rounded intrinsics -------------------------
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned>(x)) + 1; }
inline int __ffsll(long long x) {
  return x == 0 ? 0 : std::countr_zero(static_cast<unsigned long long>(x)) + 1;
}
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) |
         __brev(static_cast<unsigned>(x >> 32));
}
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }

// ---- shared memory declarations (used by kernels/simt.cuh) ---------------------------------
// A per-declaration-site key: a function-local static of a lambda unique to the expansion (and to
// the template instantiation), so every thread of a block gets the same storage for the same
// declaration whatever the order in which threads reach it.
#define TLK_EMU_SHARED_SITE_KEY_ \
  ([]() -> const void* {           \
    static char tlk_shared_site_;  \
    return &tlk_shared_site_;      \
  }())

#define TLK_EMU_SHARED(type, name, count) \
  type* name = ::tlk_emu::detail::static_shared<type>(TLK_EMU_SHARED_SITE_KEY_, static_cast<std::size_t>(count), #name)

#define TLK_EMU_SHARED_2D(type, name, rows, cols)                                             \
  type(*name)[cols] = reinterpret_cast<type(*)[cols]>(::tlk_emu::detail::static_shared<type>( \
      TLK_EMU_SHARED_SITE_KEY_, static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols), #name))

#define TLK_EMU_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::tlk_emu::detail::dynamic_shared())

// ---- the scheduler -------------------------------------------------------------------------
namespace tlk_emu::detail {

inline void resume(Launch& L, Fiber& f) {
  tls_fiber = &f;
  context_switch(L.sched, f.ctx);
  tls_fiber = nullptr;
}

// Body of every fiber: runs the kernel once per block, for as many blocks as the launch has.
// Nothing with a destructor is alive at the switch at the bottom, where fibers rest between
// blocks and where they are abandoned at the end of the launch.
inline void fiber_main(void* p) {
  Fiber& f = *static_cast<Fiber*>(p);
  Launch& L = *f.launch;
  context_started(L.sched);
  for (;;) {
    if (!L.aborting) {
      try {
        L.invoke(L.payload);
      } catch (const Cancelled&) {
      } catch (...) {
        L.fail(std::current_exception());
      }
    }
    f.state = State::Done;
    --L.live;
    context_switch(f.ctx, L.sched);
  }
}

inline std::uint64_t poison(unsigned vsize) {
  return vsize >= 8 ? ~std::uint64_t{0} : ((std::uint64_t{1} << (8 * vsize)) - 1);
}

inline bool same_warp_op(const Fiber& a, const Fiber& b) {
  return a.wkind == b.wkind && a.mask == b.mask && a.vsize == b.vsize && a.width == b.width &&
         a.is_signed == b.is_signed;
}

// Computes the results of one complete warp op (every lane of `mask` waits at it).
inline void complete_warp_op(Launch& L, unsigned warp, unsigned mask) {
  Fiber* lanes = &L.fibers[warp * 32];
  const Fiber& first = lanes[std::countr_zero(mask)];
  const WarpKind kind = first.wkind;
  auto each = [&](auto&& fn) {
    for (unsigned m = mask; m != 0; m &= m - 1) fn(static_cast<unsigned>(std::countr_zero(m)));
  };
  switch (kind) {
    case WarpKind::ShflIdx:
    case WarpKind::ShflUp:
    case WarpKind::ShflDown:
    case WarpKind::ShflXor: {
      // PTX shfl.sync with c = ((32 - width) << 8) | (up ? 0 : 31).
      const unsigned segmask = static_cast<unsigned>(32 - first.width) & 31u;
      each([&](unsigned l) {
        const unsigned bval = lanes[l].b & 31u;
        const unsigned min_lane = l & segmask;
        const unsigned max_lane = kind == WarpKind::ShflUp ? min_lane : (min_lane | (31u & ~segmask));
        int j = static_cast<int>(l);
        bool in_range = true;
        switch (kind) {
          case WarpKind::ShflUp:
            j = static_cast<int>(l) - static_cast<int>(bval);
            in_range = j >= static_cast<int>(max_lane);
            break;
          case WarpKind::ShflDown:
            j = static_cast<int>(l + bval);
            in_range = j <= static_cast<int>(max_lane);
            break;
          case WarpKind::ShflXor:
            j = static_cast<int>(l ^ bval);
            in_range = j <= static_cast<int>(max_lane);
            break;
          default:
            j = static_cast<int>(min_lane | (bval & ~segmask));
            break;
        }
        if (!in_range) j = static_cast<int>(l);
        lanes[l].result = ((mask >> j) & 1u) ? lanes[j].value : poison(first.vsize);
      });
      break;
    }
    case WarpKind::Ballot:
    case WarpKind::Any:
    case WarpKind::All: {
      unsigned bits = 0;
      each([&](unsigned l) { bits |= (lanes[l].value != 0 ? 1u : 0u) << l; });
      const std::uint64_t r = kind == WarpKind::Ballot ? bits : kind == WarpKind::Any ? (bits != 0) : (bits == mask);
      each([&](unsigned l) { lanes[l].result = r; });
      break;
    }
    case WarpKind::SyncWarp:
      each([&](unsigned l) { lanes[l].result = 0; });
      break;
    case WarpKind::ReduceAdd:
    case WarpKind::ReduceMin:
    case WarpKind::ReduceMax:
    case WarpKind::ReduceAnd:
    case WarpKind::ReduceOr:
    case WarpKind::ReduceXor: {
      std::uint32_t acc = static_cast<std::uint32_t>(first.value);
      bool skip_first = true;
      each([&](unsigned l) {
        if (skip_first) {
          skip_first = false;
          return;
        }
        const auto v = static_cast<std::uint32_t>(lanes[l].value);
        switch (kind) {
          case WarpKind::ReduceAdd: acc += v; break;
          case WarpKind::ReduceMin:
            if (first.is_signed ? static_cast<std::int32_t>(v) < static_cast<std::int32_t>(acc) : v < acc) acc = v;
            break;
          case WarpKind::ReduceMax:
            if (first.is_signed ? static_cast<std::int32_t>(v) > static_cast<std::int32_t>(acc) : v > acc) acc = v;
            break;
          case WarpKind::ReduceAnd: acc &= v; break;
          case WarpKind::ReduceOr: acc |= v; break;
          default: acc ^= v; break;
        }
      });
      each([&](unsigned l) { lanes[l].result = acc; });
      break;
    }
    case WarpKind::MatchAny:
      each([&](unsigned l) {
        unsigned same = 0;
        each([&](unsigned k) { same |= (lanes[k].value == lanes[l].value ? 1u : 0u) << k; });
        lanes[l].result = same;
      });
      break;
    case WarpKind::MatchAll: {
      bool all = true;
      each([&](unsigned l) { all = all && lanes[l].value == first.value; });
      each([&](unsigned l) { lanes[l].result = all ? mask : 0u; });
      break;
    }
  }
  each([&](unsigned l) { lanes[l].state = State::Runnable; });
  L.warp_waiting[warp] -= static_cast<unsigned>(std::popcount(mask));
}

// Completes every warp op of `warp` whose mask is fully present. Returns whether one completed.
inline bool resolve_warp(Launch& L, unsigned warp) {
  Fiber* lanes = &L.fibers[warp * 32];
  const unsigned n = lanes_in_warp(L, warp);
  bool progress = false;
  for (unsigned l = 0; l < n; ++l) {
    const Fiber& p = lanes[l];
    if (p.state != State::Warp) continue;
    bool ready = true;
    for (unsigned m = p.mask; m != 0; m &= m - 1) {
      const Fiber& q = lanes[std::countr_zero(m)];
      if (q.state == State::Done) {
        L.fail(std::make_exception_ptr(WarpSyncError(
            "tlk_emu: " + std::string(p.op) + "(mask=" + hex(p.mask) + ") at " + where(p.site) +
            " by " + thread_name(p) + " in " + block_name(L) + ": lane " + std::to_string(q.lid % 32) +
            " of the mask exited without reaching it")));
        return true;
      }
      if (q.state != State::Warp || !same_warp_op(p, q)) {
        ready = false;
        break;
      }
    }
    if (!ready) continue;
    complete_warp_op(L, warp, p.mask);
    progress = true;
  }
  return progress;
}

inline std::string wait_description(const Fiber& f) {
  switch (f.state) {
    case State::Done: return "exited";
    case State::Runnable: return "runnable";
    case State::Barrier:
      return std::string(f.op) + "() at " + where(f.site) + " (after passing " +
             std::to_string(f.barriers_passed) + " barriers)";
    case State::ActiveMask: return "__activemask() at " + where(f.site);
    case State::Warp: {
      std::string s = std::string(f.op) + "(mask=" + hex(f.mask);
      if (f.wkind <= WarpKind::ShflXor) s += ", width=" + std::to_string(f.width);
      return s + ") at " + where(f.site);
    }
  }
  return "?";
}

// One line per distinct state: "  <state>: threads 0-15, 32-47 (32 threads)", threads named
// by linear id (x + y*blockDim.x + z*blockDim.x*blockDim.y).
inline std::string describe_threads(const Launch& L) {
  struct Group {
    std::string what;
    std::vector<std::pair<unsigned, unsigned>> runs;
    unsigned count = 0;
  };
  std::vector<Group> groups;
  for (unsigned i = 0; i < L.nthreads; ++i) {
    std::string d = wait_description(L.fibers[i]);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.what == d; });
    if (it == groups.end()) {
      groups.push_back(Group{std::move(d), {}, 0});
      it = groups.end() - 1;
    }
    if (!it->runs.empty() && it->runs.back().second + 1 == i) {
      it->runs.back().second = i;
    } else {
      it->runs.emplace_back(i, i);
    }
    ++it->count;
  }
  std::string out;
  for (const Group& g : groups) {
    out += "\n  " + g.what + ": thread" + (g.count > 1 ? "s " : " ");
    for (std::size_t r = 0; r < g.runs.size(); ++r) {
      if (r == 8) {
        out += ", ...";
        break;
      }
      if (r > 0) out += ", ";
      out += std::to_string(g.runs[r].first);
      if (g.runs[r].second != g.runs[r].first) {
        out += '-';
        out += std::to_string(g.runs[r].second);
      }
    }
    out += " (";
    out += std::to_string(g.count);
    out += g.count > 1 ? " threads)" : " thread)";
  }
  return out;
}

inline std::exception_ptr deadlock_error(const Launch& L) {
  std::string hints;
  for (unsigned w = 0; w < L.nwarps; ++w) {
    const Fiber* lanes = &L.fibers[w * 32];
    const unsigned n = lanes_in_warp(L, w);
    for (unsigned l = 0; l < n && hints.size() < 2000; ++l) {
      const Fiber& p = lanes[l];
      if (p.state != State::Warp) continue;
      for (unsigned m = p.mask; m != 0; m &= m - 1) {
        const Fiber& q = lanes[std::countr_zero(m)];
        if (q.state != State::Warp || !same_warp_op(p, q)) {
          hints += "\n  warp " + std::to_string(w) + " lane " + std::to_string(l) + " waits in " +
                   wait_description(p) + " but lane " + std::to_string(q.lid % 32) +
                   " of its mask waits " +
                   (q.state == State::Warp ? "in a different warp op: " : "elsewhere: ") +
                   wait_description(q);
          break;
        }
      }
      break;  // one hint per warp
    }
  }
  return std::make_exception_ptr(DeadlockError(
      "tlk_emu: deadlock in " + block_name(L) +
      ": no thread can proceed (a __syncthreads needs every live thread of the block at it; a "
      "warp op needs every lane of its mask at the same op with the same mask)." +
      (hints.empty() ? std::string() : "\nwarp ops that cannot complete:" + hints) +
      "\nthreads by linear id:" + describe_threads(L)));
}

// Every live thread waits at a __syncthreads: releases them if it is the same one.
inline void release_barrier(Launch& L) {
  const Fiber* first = nullptr;
  unsigned count = 0;
  bool all = true, any = false;
  for (unsigned i = 0; i < L.nthreads; ++i) {
    const Fiber& f = L.fibers[i];
    if (f.state != State::Barrier) continue;
    if (first == nullptr) {
      first = &f;
    } else if (!same_site(first->site, f.site) || first->bkind != f.bkind) {
      L.fail(std::make_exception_ptr(DeadlockError(
          "tlk_emu: divergent barrier in " + block_name(L) + ": the live threads wait at different "
          "__syncthreads (" + thread_name(*first) + " at " + where(first->site) + ", " +
          thread_name(f) + " at " + where(f.site) + "); every live thread of a block must reach the "
          "same __syncthreads (CUDA leaves anything else undefined).\nthreads by linear id:" + describe_threads(L))));
      return;
    }
    count += f.value != 0;
    all = all && f.value != 0;
    any = any || f.value != 0;
  }
  std::uint64_t r = 0;
  switch (first->bkind) {
    case BarrierKind::Plain: break;
    case BarrierKind::Count: r = count; break;
    case BarrierKind::And: r = all; break;
    case BarrierKind::Or: r = any; break;
  }
  for (unsigned i = 0; i < L.nthreads; ++i) {
    Fiber& f = L.fibers[i];
    if (f.state != State::Barrier) continue;
    f.result = r;
    f.state = State::Runnable;
    ++f.barriers_passed;
  }
  L.at_barrier = 0;
}

// Releases every __activemask(): lanes of a warp waiting at the same call site form the mask.
inline void release_activemask(Launch& L) {
  for (unsigned w = 0; w < L.nwarps; ++w) {
    Fiber* lanes = &L.fibers[w * 32];
    const unsigned n = lanes_in_warp(L, w);
    unsigned done = 0;
    for (unsigned l = 0; l < n; ++l) {
      if (lanes[l].state != State::ActiveMask || ((done >> l) & 1u)) continue;
      unsigned group = 0;
      for (unsigned k = l; k < n; ++k) {
        if (lanes[k].state == State::ActiveMask && same_site(lanes[k].site, lanes[l].site)) group |= 1u << k;
      }
      for (unsigned k = l; k < n; ++k) {
        if ((group >> k) & 1u) {
          lanes[k].result = group;
          lanes[k].state = State::Runnable;
        }
      }
      done |= group;
    }
  }
  L.at_activemask = 0;
}

// Called when no fiber is runnable. Returns whether some fiber was released.
inline bool resolve(Launch& L) {
  bool progress = false;
  for (unsigned w = 0; w < L.nwarps && !L.aborting; ++w) {
    if (L.warp_waiting[w] != 0) progress = resolve_warp(L, w) || progress;
  }
  if (L.aborting) return false;
  if (!progress && L.at_barrier != 0 && L.at_barrier == L.live) {
    release_barrier(L);
    if (L.aborting) return false;
    progress = true;
  }
  if (!progress && L.at_activemask != 0) {
    release_activemask(L);
    progress = true;
  }
  return progress;
}

// Runs every fiber that is not done until it is (each pending wait throws Cancelled).
inline void cancel_block(Launch& L) {
  for (unsigned i = 0; i < L.nthreads; ++i) {
    while (L.fibers[i].state != State::Done) resume(L, L.fibers[i]);
  }
}

inline void run_block(Launch& L) {
  for (unsigned i = 0; i < L.nthreads; ++i) {
    L.fibers[i].state = State::Runnable;
    L.fibers[i].barriers_passed = 0;
  }
  L.live = L.nthreads;
  L.at_barrier = L.at_activemask = 0;
  std::fill(L.warp_waiting.begin(), L.warp_waiting.end(), 0u);
  L.static_used = 0;
  L.static_physical = 0;
  L.sites.clear();
  poison(L.static_base, kStaticArenaBytes);
  if (L.dynamic_bytes != 0) std::memset(L.dynamic_ptr, 0xFF, L.dynamic_bytes);
  for (;;) {
    for (unsigned i = 0; i < L.nthreads; ++i) {
      if (L.fibers[i].state != State::Runnable) continue;
      resume(L, L.fibers[i]);
      if (L.aborting) [[unlikely]] {
        cancel_block(L);
        return;
      }
    }
    if (L.live == 0) return;
    if (!resolve(L) && !L.aborting) L.fail(deadlock_error(L));
    if (L.aborting) {
      cancel_block(L);
      return;
    }
  }
}

inline void validate_launch(dim3 grid, dim3 block) {
  auto bad = [](const std::string& what) { throw LaunchError("tlk_emu: invalid launch: " + what); };
  const char* names[] = {"x", "y", "z"};
  const unsigned g[] = {grid.x, grid.y, grid.z}, b[] = {block.x, block.y, block.z};
  const unsigned long long bmax[] = {1024, 1024, 64}, gmax[] = {2147483647ull, 65535, 65535};
  for (int i = 0; i < 3; ++i) {
    if (b[i] == 0) bad(std::string("block.") + names[i] + " = 0 (every dimension must be at least 1)");
    if (g[i] == 0) bad(std::string("grid.") + names[i] + " = 0 (every dimension must be at least 1)");
  }
  for (int i = 0; i < 3; ++i) {
    if (b[i] > bmax[i]) {
      bad(std::string("block.") + names[i] + " = " + std::to_string(b[i]) + " exceeds the maximum " +
          std::to_string(bmax[i]));
    }
    if (g[i] > gmax[i]) {
      bad(std::string("grid.") + names[i] + " = " + std::to_string(g[i]) + " exceeds the maximum " +
          std::to_string(gmax[i]));
    }
  }
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads > 1024) {
    bad("block (" + std::to_string(block.x) + "," + std::to_string(block.y) + "," +
        std::to_string(block.z) + ") has " + std::to_string(threads) +
        " threads; a block has at most 1024 (block.x * block.y * block.z)");
  }
}

inline void run_launch(dim3 grid, dim3 block, std::size_t dynamic_bytes, const void* kernel_key,
                       Invoker invoke, const void* payload) {
  validate_launch(grid, block);
  if (tls_launch != nullptr) {
    throw LaunchError("tlk_emu: invalid launch: launch() called from inside a kernel (dynamic "
                      "parallelism is not emulated)");
  }
  std::size_t opt_in = 0;
  bool opted_in = false;
  if (kernel_key != nullptr) {
    auto& a = shared_attributes();
    std::lock_guard<std::mutex> lock(a.mutex);
    auto it = a.max_dynamic.find(kernel_key);
    if (it != a.max_dynamic.end()) {
      opt_in = it->second;
      opted_in = true;
    }
  }
  if (!opted_in && dynamic_bytes > kDefaultSharedMemoryLimit) {
    throw LaunchError("tlk_emu: invalid launch: " + std::to_string(dynamic_bytes) +
                      " bytes of dynamic shared memory exceed the default limit of " +
                      std::to_string(kDefaultSharedMemoryLimit) +
                      " (opt in to up to " + std::to_string(kMaxSharedMemoryOptIn) +
                      " with tlk_emu::set_max_dynamic_shared_memory, like cudaFuncSetAttribute)");
  }
  if (opted_in && dynamic_bytes > opt_in) {
    throw LaunchError("tlk_emu: invalid launch: " + std::to_string(dynamic_bytes) +
                      " bytes of dynamic shared memory exceed the " + std::to_string(opt_in) +
                      " bytes this kernel opted in to with set_max_dynamic_shared_memory");
  }

  Launch L;
  L.grid = grid;
  L.block = block;
  L.nthreads = block.x * block.y * block.z;
  L.nwarps = (L.nthreads + 31) / 32;
  L.invoke = invoke;
  L.payload = payload;
  L.opted_in = opted_in;
  L.total_limit = opted_in ? kMaxSharedMemoryOptIn : kDefaultSharedMemoryLimit;
  L.dynamic_bytes = dynamic_bytes;
  ThreadResources& res = thread_resources();
  if (!res.static_region) res.static_region = std::make_unique<GuardedRegion>(kStaticArenaBytes);
  L.static_base = res.static_region->begin();
  if (!res.dynamic_region || res.dynamic_capacity < dynamic_bytes) {
    res.dynamic_region.reset();
    res.dynamic_region = std::make_unique<GuardedRegion>(dynamic_bytes);
    res.dynamic_capacity = dynamic_bytes;
  }
  // The dynamic array ends (16-byte aligned) right at the guard page; under AddressSanitizer the
  // rest of the region is poisoned.
  L.dynamic_ptr = res.dynamic_region->guard() - round_up(dynamic_bytes, 16);
  poison(res.dynamic_region->begin(), res.dynamic_region->size());
  unpoison(L.dynamic_ptr, dynamic_bytes);
  L.warp_waiting.assign(L.nwarps, 0u);
  L.sites.reserve(8);
  L.fibers = std::make_unique<Fiber[]>(L.nthreads);
  const std::size_t stack_bytes = round_up(fiber_stack_size(), page_size());
  if (!res.stacks || res.stacks->count() < L.nthreads || res.stacks->size() != stack_bytes) {
    const std::size_t count =
        res.stacks && res.stacks->size() == stack_bytes ? std::max<std::size_t>(res.stacks->count(), L.nthreads) : L.nthreads;
    res.stacks.reset();
    res.stacks = std::make_unique<StackPool>(count, stack_bytes);
  }
  L.stacks = res.stacks.get();
  for (unsigned z = 0, i = 0; z < block.z; ++z) {
    for (unsigned y = 0; y < block.y; ++y) {
      for (unsigned x = 0; x < block.x; ++x, ++i) {
        Fiber& f = L.fibers[i];
        f.launch = &L;
        f.idx = uint3{x, y, z};
        f.lid = i;
        context_init(f.ctx, L.stacks->bottom(i), L.stacks->size(), &fiber_main, &f);
      }
    }
  }
  struct Reset {
    ~Reset() {
      tls_launch = nullptr;
      tls_fiber = nullptr;
    }
  } reset;
  std::unique_ptr<Recorder> recorder;
  if (profiling()) {
    recorder = std::make_unique<Recorder>(kernel_name(kernel_key), L.nwarps);
    LaunchCounters& c = recorder->result();
    c.grid[0] = grid.x, c.grid[1] = grid.y, c.grid[2] = grid.z;
    c.block[0] = block.x, c.block[1] = block.y, c.block[2] = block.z;
    c.dynamic_shared_bytes = dynamic_bytes;
    L.recorder = recorder.get();
  }
  tls_launch = &L;
  for (unsigned bz = 0; bz < grid.z && !L.error; ++bz) {
    for (unsigned by = 0; by < grid.y && !L.error; ++by) {
      for (unsigned bx = 0; bx < grid.x && !L.error; ++bx) {
        L.block_idx = uint3{bx, by, bz};
        run_block(L);
        if (recorder && !L.error) recorder->finish_block(L.nthreads, L.static_used);
      }
    }
  }
  if (L.error) std::rethrow_exception(L.error);
  if (recorder) {
    auto& s = profile_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.active != 0) s.launches.push_back(std::move(recorder->result()));
  }
}

template <typename Payload>
void invoke_payload(const void* p) {
  std::apply([](const auto& kernel, const auto&... args) { kernel(args...); },
             *static_cast<const Payload*>(p));
}

}  // namespace tlk_emu::detail

namespace tlk_emu {

// Runs kernel(args...) for every thread of every block, like kernel<<<grid, block,
// dynamic_shared_bytes>>>(args...) but synchronously. Arguments are copied once; every thread
// gets its own copy of the parameters. Throws LaunchError, DeadlockError, WarpSyncError or
// whatever the device code threw.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, Kernel kernel, Args... args) {
  using Payload = std::tuple<Kernel, Args...>;
  const Payload payload(kernel, args...);
  detail::run_launch(grid, block, dynamic_shared_bytes, detail::kernel_key(kernel),
                     &detail::invoke_payload<Payload>, &payload);
}

template <typename Kernel, typename... Args>
void launch(const tlk::LaunchPlan& plan, Kernel kernel, Args... args) {
  launch(plan.grid, plan.block, plan.shared_bytes, kernel, args...);
}

// Unmaps the fiber stacks and shared memory the calling thread keeps between launches (they are
// also freed when the thread exits). Must not be called from inside a kernel.
inline void release_thread_resources() {
  if (detail::tls_launch != nullptr) {
    throw Error("tlk_emu: release_thread_resources() called from inside a kernel");
  }
  detail::ThreadResources& r = detail::thread_resources();
  r.stacks.reset();
  r.static_region.reset();
  r.dynamic_region.reset();
  r.dynamic_capacity = 0;
}

}  // namespace tlk_emu

// tlk_emu counters: what a launch would cost the GPU's memory system, counted while the SIMT
// emulator runs it (included by emu.h; torch-free).
//
// Device code reports its memory accesses through the accessors of kernels/simt.cuh
// (tlk::ld_global / st_global / ld_shared / st_shared: a plain load or store under nvcc), its
// data-dependent branches through TLK_BRANCH(cond) and its arithmetic through
// tlk::count_flops(n). Accesses written as plain `p[i]` are not counted.
//
// A warp-level request is the n-th execution of one source site (file, line, column) by the
// lanes of one warp: the n-th execution by lane 3 and the n-th by lane 17 are the same
// instruction issued together, as on the GPU when the lanes of a warp run the same path. For
// every request, with its active lanes' addresses:
//   global memory:  sectors = distinct 32-byte sectors touched; ideal = ⌈distinct bytes / 32⌉
//                   (sectors > ideal: uncoalesced or misaligned).
//   shared memory:  wavefronts = the largest number of distinct 4-byte words that fall into one
//                   of the 32 banks (words are broadcast to every lane that reads them);
//                   ideal = ⌈distinct words / 32⌉; bank conflicts = wavefronts − ideal.
//   TLK_BRANCH:     one branch per request; divergent when its lanes disagree.
// Counting is off unless a tlk_emu::Profile is active; it then slows launches down (every
// counted access is recorded) and keeps one block's requests in memory at a time.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <source_location>
#include <string>
#include <unordered_map>
#include <vector>

namespace tlk_emu {

enum class AccessKind : std::uint8_t { GlobalLoad, GlobalStore, SharedLoad, SharedStore, Branch };

inline const char* access_kind_name(AccessKind k) {
  switch (k) {
    case AccessKind::GlobalLoad: return "global_load";
    case AccessKind::GlobalStore: return "global_store";
    case AccessKind::SharedLoad: return "shared_load";
    case AccessKind::SharedStore: return "shared_store";
    case AccessKind::Branch: return "branch";
  }
  return "?";
}

// Totals of one kind of access, for one source site or for a whole launch.
struct AccessCounters {
  std::uint64_t requests = 0;   // warp-level requests (branches: warp-level branches)
  std::uint64_t lanes = 0;      // active lanes summed over the requests
  std::uint64_t bytes = 0;      // bytes the lanes asked for (0 for branches)
  std::uint64_t units = 0;      // global: sectors; shared: wavefronts; branch: divergent ones
  std::uint64_t ideal = 0;      // global: ideal sectors; shared: ideal wavefronts
  void add(const AccessCounters& o) {
    requests += o.requests;
    lanes += o.lanes;
    bytes += o.bytes;
    units += o.units;
    ideal += o.ideal;
  }
};

struct SiteCounters {
  std::string site;  // "file:line:column"
  AccessKind kind;
  AccessCounters c;
};

// Everything counted for one launch.
struct LaunchCounters {
  std::string kernel;
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  std::size_t dynamic_shared_bytes = 0;
  std::size_t static_shared_bytes = 0;  // the largest any block declared
  std::uint64_t blocks = 0, threads = 0;
  std::uint64_t flops = 0;              // as reported by tlk::count_flops
  AccessCounters kinds[5];              // indexed by AccessKind
  std::vector<SiteCounters> sites;      // by source site
};

namespace detail {

struct SiteKey {
  const char* file;
  std::uint32_t line, column;
  AccessKind kind;
  bool operator==(const SiteKey& o) const {
    return line == o.line && column == o.column && kind == o.kind &&
           (file == o.file || std::strcmp(file, o.file) == 0);
  }
};
struct SiteKeyHash {
  std::size_t operator()(const SiteKey& k) const {
    return (std::size_t{k.line} * 1000003u) ^ (std::size_t{k.column} << 8) ^ static_cast<std::size_t>(k.kind);
  }
};

// One warp-level request being assembled: the active lanes' addresses (or branch outcomes).
struct Request {
  std::uint32_t mask = 0;
  std::uint32_t taken = 0;  // branches: lanes whose condition was true
  std::uint32_t size = 0;   // bytes per lane
  std::uint64_t addr[32];
};

struct WarpSite {
  std::array<std::uint32_t, 32> next{};  // per lane: executions of the site so far in this block
  std::vector<Request> requests;
};

inline std::uint64_t distinct(std::uint64_t* v, std::size_t n) {
  std::sort(v, v + n);
  return static_cast<std::uint64_t>(std::unique(v, v + n) - v);
}

// Counts of one request of a given kind.
inline AccessCounters count_request(AccessKind kind, const Request& r) {
  AccessCounters c;
  c.requests = 1;
  c.lanes = static_cast<std::uint64_t>(__builtin_popcount(r.mask));
  if (kind == AccessKind::Branch) {
    c.units = (r.taken != 0 && r.taken != r.mask) ? 1 : 0;
    return c;
  }
  c.bytes = c.lanes * r.size;
  // every lane touches [addr, addr + size): at most 16-byte accesses, so ≤ 4 words, ≤ 2 sectors
  std::uint64_t bytes[32 * 16];
  std::uint64_t nb = 0;
  for (std::uint32_t m = r.mask; m != 0; m &= m - 1) {
    const std::uint64_t a = r.addr[__builtin_ctz(m)];
    for (std::uint32_t b = 0; b < r.size && b < 16; ++b) bytes[nb++] = a + b;
  }
  const std::uint64_t unique_bytes = distinct(bytes, nb);
  if (kind == AccessKind::GlobalLoad || kind == AccessKind::GlobalStore) {
    std::uint64_t sectors[32 * 16];
    for (std::uint64_t i = 0; i < unique_bytes; ++i) sectors[i] = bytes[i] >> 5;
    c.units = distinct(sectors, unique_bytes);
    c.ideal = (unique_bytes + 31) / 32;
  } else {
    std::uint64_t words[32 * 16];
    for (std::uint64_t i = 0; i < unique_bytes; ++i) words[i] = bytes[i] >> 2;
    const std::uint64_t nw = distinct(words, unique_bytes);
    unsigned per_bank[32] = {};
    unsigned worst = 0;
    for (std::uint64_t i = 0; i < nw; ++i) worst = std::max(worst, ++per_bank[words[i] & 31u]);
    c.units = worst;
    c.ideal = (nw + 31) / 32;
  }
  return c;
}

// Per launch: the requests of the block being run, folded into the totals when it finishes.
class Recorder {
 public:
  Recorder(std::string kernel, unsigned nwarps) : warps_(nwarps) { out_.kernel = std::move(kernel); }

  void access(AccessKind kind, unsigned lid, const std::source_location& loc, const void* p, std::uint32_t size,
              bool taken = false) {
    WarpSite& ws = warps_[lid / 32][SiteKey{loc.file_name(), loc.line(), loc.column(), kind}];
    const unsigned lane = lid % 32;
    const std::uint32_t n = ws.next[lane]++;
    if (n >= ws.requests.size()) ws.requests.resize(n + 1);
    Request& r = ws.requests[n];
    r.mask |= 1u << lane;
    r.size = size;
    r.addr[lane] = reinterpret_cast<std::uint64_t>(p);
    if (taken) r.taken |= 1u << lane;
  }

  void flops(std::uint64_t n) { out_.flops += n; }

  void finish_block(unsigned nthreads, std::size_t static_bytes) {
    ++out_.blocks;
    out_.threads += nthreads;
    out_.static_shared_bytes = std::max(out_.static_shared_bytes, static_bytes);
    for (auto& warp : warps_) {
      for (auto& [key, ws] : warp) {
        auto it = order_.find(key);
        if (it == order_.end()) {
          it = order_.emplace(key, out_.sites.size()).first;
          out_.sites.push_back(SiteCounters{std::string(key.file) + ":" + std::to_string(key.line) + ":" +
                                                std::to_string(key.column),
                                            key.kind, {}});
        }
        SiteCounters& s = out_.sites[it->second];
        for (const Request& r : ws.requests) {
          const AccessCounters c = count_request(key.kind, r);
          s.c.add(c);
          out_.kinds[static_cast<int>(key.kind)].add(c);
        }
      }
      warp.clear();
    }
  }

  // The totals, sites ordered by file, line, column and kind.
  LaunchCounters& result() {
    std::sort(out_.sites.begin(), out_.sites.end(), [](const SiteCounters& a, const SiteCounters& b) {
      return a.site != b.site ? a.site < b.site : a.kind < b.kind;
    });
    return out_;
  }

 private:
  std::vector<std::unordered_map<SiteKey, WarpSite, SiteKeyHash>> warps_;
  std::unordered_map<SiteKey, std::size_t, SiteKeyHash> order_;
  LaunchCounters out_;
};

struct ProfileState {
  std::mutex mutex;
  int active = 0;
  std::vector<LaunchCounters> launches;
};
inline ProfileState& profile_state() {
  static ProfileState s;
  return s;
}

}  // namespace detail

// While a Profile is alive, every emulator launch (on any thread) is counted; launches() returns
// them in the order they finished. Profiles do not nest: a second one throws.
class Profile {
 public:
  Profile() {
    auto& s = detail::profile_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.active != 0) throw std::runtime_error("tlk_emu: a Profile is already active");
    s.active = 1;
    s.launches.clear();
  }
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;
  ~Profile() {
    auto& s = detail::profile_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.active = 0;
  }
  std::vector<LaunchCounters> launches() const {
    auto& s = detail::profile_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    return s.launches;
  }
};

inline bool profiling() {
  auto& s = detail::profile_state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.active != 0;
}

}  // namespace tlk_emu

// The emulator's counters (emu/counters.h) for Python: tlkernels_emu::_profile_start() begins
// counting every emulator launch, _profile_stop() ends it and returns the launches as JSON
// (read by python/tlkernels/emu_profile.py).
#include <torch/library.h>

#include <memory>
#include <mutex>
#include <string>

#include "emu/emu.h"

namespace tlk {
namespace {

std::mutex g_mutex;
std::unique_ptr<tlk_emu::Profile> g_profile;

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_counters(const tlk_emu::AccessCounters& c) {
  return "{\"requests\": " + std::to_string(c.requests) + ", \"lanes\": " + std::to_string(c.lanes) +
         ", \"bytes\": " + std::to_string(c.bytes) + ", \"units\": " + std::to_string(c.units) +
         ", \"ideal\": " + std::to_string(c.ideal) + "}";
}

std::string json_launch(const tlk_emu::LaunchCounters& L) {
  std::string s = "{\"kernel\": " + json_string(L.kernel);
  s += ", \"grid\": [" + std::to_string(L.grid[0]) + ", " + std::to_string(L.grid[1]) + ", " +
       std::to_string(L.grid[2]) + "]";
  s += ", \"block\": [" + std::to_string(L.block[0]) + ", " + std::to_string(L.block[1]) + ", " +
       std::to_string(L.block[2]) + "]";
  s += ", \"dynamic_shared_bytes\": " + std::to_string(L.dynamic_shared_bytes);
  s += ", \"static_shared_bytes\": " + std::to_string(L.static_shared_bytes);
  s += ", \"blocks\": " + std::to_string(L.blocks) + ", \"threads\": " + std::to_string(L.threads);
  s += ", \"flops\": " + std::to_string(L.flops);
  s += ", \"kinds\": {";
  for (int k = 0; k < 5; ++k) {
    if (k > 0) s += ", ";
    s += json_string(tlk_emu::access_kind_name(static_cast<tlk_emu::AccessKind>(k))) + ": " +
         json_counters(L.kinds[k]);
  }
  s += "}, \"sites\": [";
  for (std::size_t i = 0; i < L.sites.size(); ++i) {
    if (i > 0) s += ", ";
    s += "{\"site\": " + json_string(L.sites[i].site) +
         ", \"kind\": " + json_string(tlk_emu::access_kind_name(L.sites[i].kind)) +
         ", \"counters\": " + json_counters(L.sites[i].c) + "}";
  }
  return s + "]}";
}

void profile_start() {
  std::lock_guard<std::mutex> lock(g_mutex);
  TORCH_CHECK(!g_profile, "tlkernels_emu._profile_start: a profile is already running");
  g_profile = std::make_unique<tlk_emu::Profile>();
}

std::string profile_stop() {
  std::lock_guard<std::mutex> lock(g_mutex);
  TORCH_CHECK(g_profile, "tlkernels_emu._profile_stop: no profile is running (call _profile_start first)");
  const auto launches = g_profile->launches();
  g_profile.reset();
  std::string s = "[";
  for (std::size_t i = 0; i < launches.size(); ++i) {
    if (i > 0) s += ", ";
    s += json_launch(launches[i]);
  }
  return s + "]";
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tlkernels_emu, m) {
  m.def("_profile_start() -> ()", &profile_start);
  m.def("_profile_stop() -> str", &profile_stop);
}

}  // namespace tlk

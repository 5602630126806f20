// Fibers of the SIMT emulator (see emu.h): guarded stacks and a context switch.
//
// Two implementations of the switch, chosen at compile time:
//   * x86_64 (default there): a few lines of assembly that save the callee-saved registers,
//     MXCSR and the x87 control word on the fiber's own stack and swap stack pointers; no system
//     call, so a switch costs a few nanoseconds.
//   * everything else (aarch64 included), or when TLK_EMU_UCONTEXT is defined: POSIX ucontext
//     (makecontext / swapcontext), which also saves the signal mask with a system call per switch.
// Exceptions never cross a switch: every fiber's entry function catches everything (emu.h).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if !defined(__x86_64__) && !defined(TLK_EMU_UCONTEXT)
#define TLK_EMU_UCONTEXT 1
#endif
#if defined(TLK_EMU_UCONTEXT)
#include <ucontext.h>
#endif

// AddressSanitizer must be told about stack switches, or it reports false errors (notably when
// an exception unwinds a fiber stack). With the annotations, emulator builds run under
// -fsanitize=address, which catches out-of-bounds global memory accesses of device code.
#if defined(__SANITIZE_ADDRESS__)
#define TLK_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TLK_EMU_ASAN 1
#endif
#endif
#if defined(TLK_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace tlk_emu::detail {

inline std::size_t page_size() {
  static const std::size_t p = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return p;
}

inline std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

// AddressSanitizer poisoning (no-ops without it). Memory is unpoisoned before it is unmapped, and
// a reused stack may still carry redzones of frames abandoned by an earlier launch.
inline void poison(const void* p, std::size_t n) {
#if defined(TLK_EMU_ASAN)
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  (void)p;
  (void)n;
#endif
}
inline void unpoison(const void* p, std::size_t n) {
#if defined(TLK_EMU_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  (void)p;
  (void)n;
#endif
}

// `count` stacks of `bytes` usable bytes each, every one with an inaccessible guard page below it
// (stacks grow down), so a stack overflow faults instead of corrupting the neighbour. Reused by
// every block of a launch and kept by the thread for its next launches (emu.h); pages are only
// committed when touched.
class StackPool {
 public:
  StackPool() = default;
  StackPool(std::size_t count, std::size_t bytes) {
    const std::size_t page = page_size();
    stride_ = round_up(bytes, page) + page;
    size_ = stride_ - page;
    count_ = count;
    total_ = stride_ * count;
    void* p = ::mmap(nullptr, total_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      throw std::runtime_error("tlk_emu: cannot map " + std::to_string(total_) +
                               " bytes of fiber stacks: " + std::strerror(errno));
    }
    base_ = static_cast<char*>(p);
    for (std::size_t i = 0; i < count; ++i) {
      if (::mprotect(base_ + i * stride_ + page, size_, PROT_READ | PROT_WRITE) != 0) {
        const int e = errno;
        ::munmap(base_, total_);
        base_ = nullptr;
        throw std::runtime_error(std::string("tlk_emu: cannot protect fiber stacks: ") + std::strerror(e));
      }
    }
  }
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool() {
    if (base_ == nullptr) return;
    for (std::size_t i = 0; i < count_; ++i) unpoison(bottom(i), size_);
    ::munmap(base_, total_);
  }
  // Lowest usable address of stack i; the stack occupies [bottom(i), bottom(i) + size()).
  char* bottom(std::size_t i) const { return base_ + i * stride_ + page_size(); }
  std::size_t size() const { return size_; }
  std::size_t count() const { return count_; }

 private:
  char* base_ = nullptr;
  std::size_t stride_ = 0, size_ = 0, count_ = 0, total_ = 0;
};

using FiberEntry = void (*)(void*);

#if defined(TLK_EMU_UCONTEXT)

struct Context {
  ucontext_t uc;
  FiberEntry entry = nullptr;
  void* arg = nullptr;
  const void* stack_bottom = nullptr;  // for AddressSanitizer
  std::size_t stack_size = 0;
};

// makecontext passes int arguments only: the Context's address travels as two halves.
inline void ucontext_start(unsigned hi, unsigned lo) {
  auto* c = reinterpret_cast<Context*>((static_cast<std::uintptr_t>(hi) << 32) | lo);
  c->entry(c->arg);
  __builtin_trap();  // the entry never returns
}

// Prepares `c` so that the first switch to it runs entry(arg) on [stack, stack + size).
// `c` must not move afterwards.
inline void context_init(Context& c, char* stack, std::size_t size, FiberEntry entry, void* arg) {
  unpoison(stack, size);
  if (::getcontext(&c.uc) != 0) throw std::runtime_error("tlk_emu: getcontext failed");
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  c.entry = entry;
  c.arg = arg;
  c.stack_bottom = stack;
  c.stack_size = size;
  const auto p = reinterpret_cast<std::uintptr_t>(&c);
  ::makecontext(&c.uc, reinterpret_cast<void (*)()>(&ucontext_start), 2,
                static_cast<unsigned>(p >> 32), static_cast<unsigned>(p & 0xffffffffu));
}

inline void raw_switch(Context& from, Context& to) { ::swapcontext(&from.uc, &to.uc); }

#else  // x86_64 assembly

struct Context {
  void* sp = nullptr;
  const void* stack_bottom = nullptr;  // for AddressSanitizer
  std::size_t stack_size = 0;
};

// switch_stack(save, load): pushes the callee-saved registers, MXCSR and the x87 control word,
// stores the stack pointer into *save, loads `load` as the stack pointer and pops the same
// frame from it. noipa keeps GCC from drawing conclusions from the assembly body.
#if defined(__clang__)
#define TLK_EMU_NAKED __attribute__((naked, noinline))
#else
#define TLK_EMU_NAKED __attribute__((naked, noinline, noipa))
#endif

TLK_EMU_NAKED inline void switch_stack(void** /*save*/, void* /*load*/) {
  asm("pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "subq $16, %rsp\n\t"
      "stmxcsr 8(%rsp)\n\t"
      "fnstcw (%rsp)\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "fldcw (%rsp)\n\t"
      "ldmxcsr 8(%rsp)\n\t"
      "addq $16, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}

// First code a new fiber runs (switch_stack's `ret` lands here): entry (r12) is called with
// arg (r13). The return address is marked undefined so unwinders stop at this frame.
TLK_EMU_NAKED inline void fiber_start() {
  asm(".cfi_undefined rip\n\t"
      "movq %r13, %rdi\n\t"
      "callq *%r12\n\t"
      "ud2\n\t");
}

#undef TLK_EMU_NAKED

inline void context_init(Context& c, char* stack, std::size_t size, FiberEntry entry, void* arg) {
  unpoison(stack, size);
  // Frame popped by switch_stack, from the lowest address: x87 CW (2 bytes, padded to 8),
  // MXCSR (4 bytes, padded to 8), r15, r14, r13, r12, rbx, rbp, return address.
  auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t{15};
  // After the `ret` the stack pointer is top - 16: 16-byte aligned, as the call in fiber_start
  // needs.
  auto* f = reinterpret_cast<std::uint64_t*>(top - 88);
  std::uint16_t cw;
  std::uint32_t mxcsr;
  asm volatile("fnstcw %0" : "=m"(cw));
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  f[0] = cw;
  f[1] = mxcsr;
  f[2] = 0;                                          // r15
  f[3] = 0;                                          // r14
  f[4] = reinterpret_cast<std::uint64_t>(arg);       // r13
  f[5] = reinterpret_cast<std::uint64_t>(entry);     // r12
  f[6] = 0;                                          // rbx
  f[7] = 0;                                          // rbp
  f[8] = reinterpret_cast<std::uint64_t>(&fiber_start);  // return address
  c.sp = f;
  c.stack_bottom = stack;
  c.stack_size = size;
}

inline void raw_switch(Context& from, Context& to) { switch_stack(&from.sp, to.sp); }

#endif

// Saves the running context into `from` and resumes `to` (which must have run before, or have
// been prepared by context_init).
inline void context_switch(Context& from, Context& to) {
#if defined(TLK_EMU_ASAN)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, to.stack_bottom, to.stack_size);
  raw_switch(from, to);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  raw_switch(from, to);
#endif
}

// First call of a fiber's entry function; `from` is the context that switched to it (its stack
// bounds are learnt here: they are those of the thread running the scheduler).
inline void context_started(Context& from) {
#if defined(TLK_EMU_ASAN)
  const void* bottom = nullptr;
  std::size_t size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
  from.stack_bottom = bottom;
  from.stack_size = size;
#else
  (void)from;
#endif
}

}  // namespace tlk_emu::detail

#include "agent/backend_conformance.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/errno_status.h"
#include "common/validation.h"

namespace iommu {
namespace agent {
namespace {

// The x86 interrupt (MSI) window every x86 IOMMU driver reserves.
constexpr uint64_t kMsiStart = 0xfee00000;
constexpr uint64_t kMsiLast = 0xfeefffff;
constexpr uint64_t k4K = 0x1000;
// Mappings go at or above 1 MiB, in a usable range with room for kPages.
constexpr uint64_t kLowestIova = 0x100000;
constexpr uint64_t kPages = 16;

// Collects the failures of one named check.
class Check final {
 public:
  explicit Check(std::string name) : name_(std::move(name)) {}
  Check(const Check&) = delete;
  Check& operator=(const Check&) = delete;

  void Fail(absl::string_view call, absl::string_view what) {
    failures_.push_back(absl::StrCat(name_, ": ", call, ": ", what));
  }
  void Answer(absl::string_view call, absl::string_view status) {
    answers_.push_back(absl::StrCat(call, " -> ", status));
  }
  ConformanceResult Result() && {
    return {name_, std::move(failures_), std::move(answers_)};
  }

 private:
  const std::string name_;
  std::vector<std::string> failures_;
  std::vector<std::string> answers_;
};

std::string StatusText(const absl::Status& s) {
  if (s.ok()) return "OK";
  return absl::StrCat(absl::StatusCodeToString(s.code()), " \"", s.message(), "\"");
}

std::string ErrnoText(int err) {
  return absl::StrCat(ErrnoName(err), " (", std::strerror(err), ")");
}

// True when `s` is OK; else records "expected OK, got ...".
bool ExpectOk(Check& check, absl::string_view call, const absl::Status& s) {
  if (s.ok()) return true;
  check.Fail(call, absl::StrCat("expected OK, got ", StatusText(s)));
  return false;
}

// Expects the status backend.h promises for `err`: ErrnoCode(err) with the
// errno's name in the message.
void ExpectErrno(Check& check, absl::string_view call, const absl::Status& s,
                 int err) {
  check.Answer(call, StatusText(s));
  if (s.code() == ErrnoCode(err) && absl::StrContains(s.message(), ErrnoName(err))) {
    return;
  }
  check.Fail(call, absl::StrCat("expected ", absl::StatusCodeToString(ErrnoCode(err)),
                                " with ", ErrnoText(err), ", got ", StatusText(s)));
}

std::string MapCall(ContainerHandle h, uint64_t iova, uint64_t vaddr,
                    uint64_t size, bool r, bool w) {
  return absl::StrCat("Map(handle=", h, " iova=", Hex(iova), " vaddr=", Hex(vaddr),
                      " size=", Hex(size), " r=", r, " w=", w, ")");
}

std::string UnmapCall(ContainerHandle h, uint64_t iova, uint64_t size) {
  return absl::StrCat("Unmap(handle=", h, " iova=", Hex(iova), " size=", Hex(size), ")");
}

std::string CreateCall(const std::vector<std::string>& devices) {
  return absl::StrCat("CreateContainer([", absl::StrJoin(devices, ","), "])");
}

std::string MappingText(const BackendMapping& m) {
  return absl::StrCat("{iova=", Hex(m.iova), " size=", Hex(m.size), " vaddr=",
                      Hex(m.vaddr), m.readable ? " r" : "", m.writable ? " w" : "",
                      "}");
}

std::string MappingsText(const std::vector<BackendMapping>& ms) {
  std::vector<std::string> parts;
  for (const BackendMapping& m : ms) parts.push_back(MappingText(m));
  return absl::StrCat("[", absl::StrJoin(parts, " "), "]");
}

bool SameMapping(const BackendMapping& a, const BackendMapping& b) {
  return a.iova == b.iova && a.size == b.size && a.vaddr == b.vaddr &&
         a.readable == b.readable && a.writable == b.writable;
}

// Page-aligned host memory the suite maps itself; unmapped on destruction.
class HostMemory final {
 public:
  HostMemory() = default;
  HostMemory(const HostMemory&) = delete;
  HostMemory& operator=(const HostMemory&) = delete;
  ~HostMemory() {
    if (raw_ != nullptr) munmap(raw_, raw_size_);
  }

  // Maps `size` bytes aligned to `align` (a power of two). Errors: the
  // errno of memfd_create/ftruncate/mmap.
  absl::Status Allocate(ConformanceMemory kind, uint64_t size, uint64_t align) {
    raw_size_ = size + align;
    int fd = -1;
    int flags = MAP_SHARED;
    if (kind == ConformanceMemory::kMemfd) {
      fd = memfd_create("backend-conformance", MFD_CLOEXEC);
      if (fd < 0) return ErrnoStatus(errno, "memfd_create backend-conformance");
      if (ftruncate(fd, static_cast<off_t>(raw_size_)) != 0) {
        const int err = errno;
        close(fd);
        return ErrnoStatus(err, absl::StrCat("ftruncate memfd size=", Hex(raw_size_)));
      }
    } else {
      flags |= MAP_ANONYMOUS;
    }
    void* p = mmap(nullptr, raw_size_, PROT_READ | PROT_WRITE, flags, fd, 0);
    const int err = errno;
    if (fd >= 0) close(fd);
    if (p == MAP_FAILED) {
      return ErrnoStatus(err, absl::StrCat("mmap size=", Hex(raw_size_)));
    }
    raw_ = p;
    const uint64_t start = reinterpret_cast<uint64_t>(p);
    base_ = (start + align - 1) & ~(align - 1);
    // Touch every page so the memory exists before the kernel pins it.
    std::memset(reinterpret_cast<void*>(base_), 0x5a, size);
    return absl::OkStatus();
  }

  uint64_t base() const { return base_; }

 private:
  void* raw_ = nullptr;
  uint64_t raw_size_ = 0;
  uint64_t base_ = 0;
};

// A container the check owns: destroyed (and a failure recorded if that
// fails) when it goes out of scope unless Destroy() was called.
class ScopedContainer final {
 public:
  ScopedContainer(Backend& backend, Check& check) : backend_(backend), check_(check) {}
  ScopedContainer(const ScopedContainer&) = delete;
  ScopedContainer& operator=(const ScopedContainer&) = delete;
  ~ScopedContainer() {
    if (handle_.has_value()) Destroy();
  }

  bool Create(const std::vector<std::string>& devices) {
    absl::StatusOr<ContainerHandle> h = backend_.CreateContainer(devices);
    if (!ExpectOk(check_, CreateCall(devices), h.status())) return false;
    handle_ = *h;
    return true;
  }

  bool Destroy() {
    const ContainerHandle h = *handle_;
    handle_.reset();
    return ExpectOk(check_, absl::StrCat("DestroyContainer(", h, ")"),
                    backend_.DestroyContainer(h));
  }

  ContainerHandle handle() const { return *handle_; }

  // Forgets the container without destroying it (a process that dies).
  void Release() { handle_.reset(); }
  // Takes over `h` (an adopted container) to destroy it at scope exit.
  void Adopt(ContainerHandle h) { handle_ = h; }

 private:
  Backend& backend_;
  Check& check_;
  std::optional<ContainerHandle> handle_;
};

// A container holding both devices, its geometry, host memory of kPages
// pages and an IOVA base with kPages pages of usable space above it.
class Fixture final {
 public:
  Fixture(Backend& backend, const ConformanceEnv& env, Check& check)
      : backend_(backend), env_(env), check_(check), container_(backend, check) {}
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  // False (with the failure recorded) when the setup failed.
  bool SetUp() {
    if (!container_.Create({env_.device_a, env_.device_b})) return false;
    absl::StatusOr<Geometry> g = backend_.GetGeometry(h());
    if (!ExpectOk(check_, absl::StrCat("GetGeometry(", h(), ")"), g.status())) {
      return false;
    }
    geometry_ = *std::move(g);
    if (geometry_.page_size_bitmap == 0) {
      check_.Fail("GetGeometry", "page_size_bitmap is 0");
      return false;
    }
    const uint64_t host_page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    page_ = std::max(MinPageSize(geometry_.page_size_bitmap), host_page);
    const uint64_t span = kPages * page_;
    bool found = false;
    for (const IovaRange& r : geometry_.usable) {
      uint64_t start = std::max(r.start, kLowestIova);
      start = (start + page_ - 1) & ~(page_ - 1);
      if (start >= r.start && start <= r.last && r.last - start >= span - 1) {
        base_ = start;
        found = true;
        break;
      }
    }
    if (!found) {
      check_.Fail("GetGeometry", absl::StrCat("no usable range holds ", Hex(span),
                                              " bytes at or above ", Hex(kLowestIova)));
      return false;
    }
    const absl::Status mem = memory_.Allocate(env_.memory, span, page_);
    return ExpectOk(check_, "allocate host memory", mem);
  }

  ContainerHandle h() const { return container_.handle(); }
  uint64_t page() const { return page_; }
  const Geometry& geometry() const { return geometry_; }
  // IOVA and host address of page `i` of the test area.
  uint64_t iova(uint64_t i) const { return base_ + i * page_; }
  uint64_t vaddr(uint64_t i) const { return memory_.base() + i * page_; }

  // Maps pages [first, first + n) read/write at the same index in IOVA and
  // memory; records a failure when it fails.
  bool MapPages(uint64_t first, uint64_t n, bool r = true, bool w = true) {
    return ExpectOk(check_, MapCall(h(), iova(first), vaddr(first), n * page_, r, w),
                    backend_.Map(h(), iova(first), vaddr(first), n * page_, r, w));
  }

  // The current mappings; nullopt (failure recorded) when listing fails.
  std::optional<std::vector<BackendMapping>> List() {
    absl::StatusOr<std::vector<BackendMapping>> m = backend_.ListMappings(h());
    if (!ExpectOk(check_, absl::StrCat("ListMappings(", h(), ")"), m.status())) {
      return std::nullopt;
    }
    return *std::move(m);
  }

  // Checks that the mappings are exactly `want` (in order).
  void ExpectMappings(absl::string_view after,
                      const std::vector<BackendMapping>& want) {
    std::optional<std::vector<BackendMapping>> got = List();
    if (!got.has_value()) return;
    bool same = got->size() == want.size();
    for (size_t i = 0; same && i < want.size(); ++i) {
      same = SameMapping((*got)[i], want[i]);
    }
    if (!same) {
      check_.Fail(absl::StrCat("ListMappings after ", after),
                  absl::StrCat("expected ", MappingsText(want), ", got ",
                               MappingsText(*got)));
    }
  }

  BackendMapping Expected(uint64_t first, uint64_t n, bool r = true,
                          bool w = true) const {
    return BackendMapping{iova(first), n * page_, vaddr(first), r, w};
  }

  // Map that must fail with `err` and change nothing.
  void ExpectMapFails(uint64_t iova, uint64_t vaddr, uint64_t size, bool r, bool w,
                      int err) {
    std::optional<std::vector<BackendMapping>> before = List();
    const std::string call = MapCall(h(), iova, vaddr, size, r, w);
    ExpectErrno(check_, call, backend_.Map(h(), iova, vaddr, size, r, w), err);
    if (before.has_value()) ExpectMappings(call, *before);
  }

  // Unmap that must fail with `err` and change nothing.
  void ExpectUnmapFails(uint64_t iova, uint64_t size, int err) {
    std::optional<std::vector<BackendMapping>> before = List();
    const std::string call = UnmapCall(h(), iova, size);
    ExpectErrno(check_, call, backend_.Unmap(h(), iova, size).status(), err);
    if (before.has_value()) ExpectMappings(call, *before);
  }

  // Unmap that must succeed and report `bytes`.
  void ExpectUnmapped(uint64_t iova, uint64_t size, uint64_t bytes) {
    const std::string call = UnmapCall(h(), iova, size);
    absl::StatusOr<uint64_t> got = backend_.Unmap(h(), iova, size);
    if (!ExpectOk(check_, call, got.status())) return;
    if (*got != bytes) {
      check_.Fail(call, absl::StrCat("expected ", Hex(bytes), " bytes unmapped, got ",
                                     Hex(*got)));
    }
  }

 private:
  Backend& backend_;
  const ConformanceEnv& env_;
  Check& check_;
  // Declared before the container so that it is unmapped after the
  // container (and its DMA mappings) are gone.
  HostMemory memory_;
  ScopedContainer container_;
  Geometry geometry_;
  uint64_t page_ = 0;
  uint64_t base_ = 0;
};

// ---- Geometry and containers ------------------------------------------------

void CheckGeometry(Backend& backend, const ConformanceEnv& env, Check& check) {
  ScopedContainer c(backend, check);
  if (!c.Create({env.device_a, env.device_b})) return;
  const std::string call = absl::StrCat("GetGeometry(", c.handle(), ")");
  absl::StatusOr<Geometry> g = backend.GetGeometry(c.handle());
  if (!ExpectOk(check, call, g.status())) return;
  if ((g->page_size_bitmap & k4K) == 0) {
    check.Fail(call, absl::StrCat("page_size_bitmap ", Hex(g->page_size_bitmap),
                                  " lacks 4K (bit 12)"));
  }
  if (g->usable.empty()) check.Fail(call, "no usable IOVA range");
  const uint64_t granule =
      g->page_size_bitmap == 0 ? k4K : MinPageSize(g->page_size_bitmap);
  for (size_t i = 0; i < g->usable.size(); ++i) {
    const IovaRange& r = g->usable[i];
    const std::string range = absl::StrCat("usable[", i, "] ", Hex(r.start), "-", Hex(r.last));
    if (r.start > r.last) check.Fail(call, absl::StrCat(range, " is empty"));
    if (r.start % granule != 0 || (r.last + 1) % granule != 0) {
      check.Fail(call, absl::StrCat(range, " is not whole pages of ", Hex(granule)));
    }
    if (i > 0 && r.start <= g->usable[i - 1].last) {
      check.Fail(call, absl::StrCat(range, " is not sorted after and disjoint from ",
                                    Hex(g->usable[i - 1].start), "-",
                                    Hex(g->usable[i - 1].last)));
    }
    if (env.expect_msi_window && r.start <= kMsiLast && r.last >= kMsiStart) {
      check.Fail(call, absl::StrCat(range, " overlaps the MSI window ", Hex(kMsiStart),
                                    "-", Hex(kMsiLast)));
    }
  }
  if (backend.kind() == "vfio-type1" && g->max_mappings == 0) {
    check.Fail(call, "max_mappings is 0 on type1 (expected dma_entry_limit > 0)");
  }
}

void CheckCreateEmptyList(Backend& backend, const ConformanceEnv&, Check& check) {
  absl::StatusOr<ContainerHandle> h = backend.CreateContainer({});
  ExpectErrno(check, CreateCall({}), h.status(), EINVAL);
  if (h.ok()) {
    ExpectOk(check, absl::StrCat("DestroyContainer(", *h, ")"),
             backend.DestroyContainer(*h));
  }
}

void CheckCreateUnknownDevice(Backend& backend, const ConformanceEnv& env,
                              Check& check) {
  for (const std::vector<std::string>& devices :
       {std::vector<std::string>{env.unknown_device},
        std::vector<std::string>{env.device_a, env.unknown_device}}) {
    absl::StatusOr<ContainerHandle> h = backend.CreateContainer(devices);
    ExpectErrno(check, CreateCall(devices), h.status(), ENODEV);
    if (h.ok()) {
      ExpectOk(check, absl::StrCat("DestroyContainer(", *h, ")"),
               backend.DestroyContainer(*h));
    }
  }
  // The failed call held nothing: device_a is free.
  ScopedContainer c(backend, check);
  c.Create({env.device_a});
}

void CheckCreateHeldDevice(Backend& backend, const ConformanceEnv& env,
                           Check& check) {
  ScopedContainer first(backend, check);
  if (!first.Create({env.device_a})) return;
  for (const std::vector<std::string>& devices :
       {std::vector<std::string>{env.device_a},
        std::vector<std::string>{env.device_b, env.device_a}}) {
    absl::StatusOr<ContainerHandle> h = backend.CreateContainer(devices);
    ExpectErrno(check, absl::StrCat(CreateCall(devices), " while container ",
                                    first.handle(), " holds ", env.device_a),
                h.status(), EBUSY);
    if (h.ok()) {
      ExpectOk(check, absl::StrCat("DestroyContainer(", *h, ")"),
               backend.DestroyContainer(*h));
    }
  }
  // The failed [b, a] left device_b free.
  ScopedContainer second(backend, check);
  second.Create({env.device_b});
}

// ---- Map --------------------------------------------------------------------

void CheckMapAligned(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  f.ExpectMappings("CreateContainer", {});
  if (!f.MapPages(0, 2)) return;
  f.ExpectMappings("one map", {f.Expected(0, 2)});
  if (!f.MapPages(4, 1, /*r=*/true, /*w=*/false)) return;
  if (!f.MapPages(3, 1, /*r=*/false, /*w=*/true)) return;
  f.ExpectMappings("three maps", {f.Expected(0, 2), f.Expected(3, 1, false, true),
                                  f.Expected(4, 1, true, false)});
}

void CheckMapUnalignedIova(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  f.ExpectMapFails(f.iova(1) + f.page() / 2, f.vaddr(1), f.page(), true, true, EINVAL);
}

void CheckMapUnalignedSize(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  f.ExpectMapFails(f.iova(1), f.vaddr(1), f.page() + f.page() / 2, true, true, EINVAL);
}

void CheckMapUnalignedVaddr(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  f.ExpectMapFails(f.iova(1), f.vaddr(1) + f.page() / 2, f.page(), true, true, EINVAL);
}

void CheckMapSizeZero(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  f.ExpectMapFails(f.iova(1), f.vaddr(1), 0, true, true, EINVAL);
}

void CheckMapNoAccess(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  f.ExpectMapFails(f.iova(1), f.vaddr(1), f.page(), false, false, EINVAL);
}

void CheckMapOverlap(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  if (!f.MapPages(4, 2)) return;  // Pages 4-5.
  const uint64_t p = f.page();
  // Exact, then partial: head, tail, inside, covering.
  f.ExpectMapFails(f.iova(4), f.vaddr(8), 2 * p, true, true, EEXIST);
  f.ExpectMapFails(f.iova(3), f.vaddr(8), 2 * p, true, true, EEXIST);
  f.ExpectMapFails(f.iova(5), f.vaddr(8), 2 * p, true, true, EEXIST);
  f.ExpectMapFails(f.iova(5), f.vaddr(8), p, true, true, EEXIST);
  f.ExpectMapFails(f.iova(2), f.vaddr(8), 6 * p, true, true, EEXIST);
  // Neighbours on both sides still fit.
  f.MapPages(3, 1);
  f.MapPages(6, 1);
  f.ExpectMappings("maps next to an existing one",
                   {f.Expected(3, 1), f.Expected(4, 2), f.Expected(6, 1)});
}

void CheckMapOutsideUsable(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  const uint64_t p = f.page();
  if (env.expect_msi_window) {
    f.ExpectMapFails(kMsiStart, f.vaddr(0), p, true, true, EINVAL);
    // Straddling into the window from below.
    f.ExpectMapFails(kMsiStart - p, f.vaddr(0), 2 * p, true, true, EINVAL);
  }
  const IovaRange& top = f.geometry().usable.back();
  if (top.last <= std::numeric_limits<uint64_t>::max() - p) {
    f.ExpectMapFails(top.last + 1, f.vaddr(0), p, true, true, EINVAL);
    // Last page inside, second page past the end.
    f.ExpectMapFails(top.last + 1 - p, f.vaddr(0), 2 * p, true, true, EINVAL);
  }
}

// ---- Unmap ------------------------------------------------------------------

void CheckUnmapOne(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  if (!f.MapPages(0, 2) || !f.MapPages(4, 1)) return;
  f.ExpectUnmapped(f.iova(0), 2 * f.page(), 2 * f.page());
  f.ExpectMappings("unmapping one", {f.Expected(4, 1)});
}

void CheckUnmapTwoWhole(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  // Pages 1 and 3-4 inside the range [1, 6), with holes; page 8 outside.
  if (!f.MapPages(1, 1) || !f.MapPages(3, 2) || !f.MapPages(8, 1)) return;
  f.ExpectUnmapped(f.iova(1), 5 * f.page(), 3 * f.page());
  f.ExpectMappings("unmapping two", {f.Expected(8, 1)});
}

void CheckUnmapCut(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  if (!f.MapPages(4, 2)) return;  // Pages 4-5.
  const uint64_t p = f.page();
  f.ExpectUnmapFails(f.iova(4), p, EINVAL);      // Head.
  f.ExpectUnmapFails(f.iova(5), p, EINVAL);      // Tail.
  f.ExpectUnmapFails(f.iova(3), 2 * p, EINVAL);  // From before into it.
  f.ExpectUnmapFails(f.iova(5), 2 * p, EINVAL);  // From inside past it.
  // The kernel kept it whole.
  f.ExpectUnmapped(f.iova(4), 2 * p, 2 * p);
}

void CheckUnmapNothingMapped(Backend& backend, const ConformanceEnv& env,
                             Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  f.ExpectUnmapFails(f.iova(0), f.page(), ENOENT);
  if (!f.MapPages(0, 1)) return;
  f.ExpectUnmapFails(f.iova(2), 2 * f.page(), ENOENT);
}

void CheckUnmapUnaligned(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  if (!f.MapPages(2, 1)) return;
  const uint64_t p = f.page();
  // Each range holds the whole mapping (page 2), so only alignment is wrong.
  f.ExpectUnmapFails(f.iova(2) - p / 2, p + p / 2, EINVAL);  // iova.
  f.ExpectUnmapFails(f.iova(2), p + p / 2, EINVAL);          // size.
}

void CheckUnmapSizeZero(Backend& backend, const ConformanceEnv& env, Check& check) {
  Fixture f(backend, env, check);
  if (!f.SetUp()) return;
  if (!f.MapPages(0, 1)) return;
  f.ExpectUnmapFails(f.iova(0), 0, EINVAL);
}

// ---- Device fds and destroy -------------------------------------------------

// The fd's /proc/self/fd link: an IOMMU-side fd is /dev/iommu,
// /dev/vfio/vfio or a group node /dev/vfio/N.
void ExpectDeviceFds(Backend& backend, Check& check, ContainerHandle h,
                     const std::vector<std::string>& devices) {
  const std::string call = absl::StrCat("DeviceFds(", h, ")");
  absl::StatusOr<std::vector<std::pair<std::string, UniqueFd>>> fds = backend.DeviceFds(h);
  if (!ExpectOk(check, call, fds.status())) return;
  std::vector<std::string> got;
  for (const auto& [address, fd] : *fds) got.push_back(address);
  if (got != devices) {
    check.Fail(call, absl::StrCat("expected addresses [", absl::StrJoin(devices, ","),
                                  "], got [", absl::StrJoin(got, ","), "]"));
  }
  for (const auto& [address, fd] : *fds) {
    const std::string what = absl::StrCat(call, " ", address, " fd=", fd.get());
    if (!fd) {
      check.Fail(what, "not a valid fd");
      continue;
    }
    const int fd_flags = fcntl(fd.get(), F_GETFD);
    if (fd_flags < 0 || (fd_flags & FD_CLOEXEC) == 0) {
      check.Fail(what, "expected FD_CLOEXEC set");
    }
    char buf[256];
    const std::string proc = absl::StrCat("/proc/self/fd/", fd.get());
    const ssize_t n = readlink(proc.c_str(), buf, sizeof(buf) - 1);
    if (n < 0) {
      check.Fail(what, absl::StrCat("readlink ", proc, ": ", ErrnoText(errno)));
      continue;
    }
    const std::string target(buf, static_cast<size_t>(n));
    absl::string_view group = target;
    uint32_t unused;
    const bool is_group = absl::ConsumePrefix(&group, "/dev/vfio/") &&
                          absl::SimpleAtoi(group, &unused);
    if (target == "/dev/iommu" || target == "/dev/vfio/vfio" || is_group) {
      check.Fail(what, absl::StrCat("is an IOMMU-side fd (", target,
                                    "), expected a device fd"));
    }
  }
}

void CheckDeviceFds(Backend& backend, const ConformanceEnv& env, Check& check) {
  ScopedContainer c(backend, check);
  if (!c.Create({env.device_a, env.device_b})) return;
  ExpectDeviceFds(backend, check, c.handle(), {env.device_a, env.device_b});
  // Each call hands out new dups; the first set is closed by now.
  ExpectDeviceFds(backend, check, c.handle(), {env.device_a, env.device_b});
}

void CheckDestroyReleasesDevices(Backend& backend, const ConformanceEnv& env,
                                 Check& check) {
  {
    Fixture f(backend, env, check);
    if (!f.SetUp()) return;
    f.MapPages(0, 2);
  }  // Destroyed with a mapping in place.
  ScopedContainer c(backend, check);
  if (!c.Create({env.device_b, env.device_a})) return;
  ExpectDeviceFds(backend, check, c.handle(), {env.device_b, env.device_a});
  absl::StatusOr<std::vector<BackendMapping>> m = backend.ListMappings(c.handle());
  if (ExpectOk(check, absl::StrCat("ListMappings(", c.handle(), ")"), m.status()) &&
      !m->empty()) {
    check.Fail("ListMappings of a new container",
               absl::StrCat("expected [], got ", MappingsText(*m)));
  }
}

void CheckUnknownHandle(Backend& backend, const ConformanceEnv& env, Check& check) {
  ContainerHandle destroyed = 0;
  {
    ScopedContainer c(backend, check);
    if (!c.Create({env.device_a})) return;
    destroyed = c.handle();
    if (!c.Destroy()) return;
  }
  for (const ContainerHandle h : {destroyed, std::numeric_limits<ContainerHandle>::max()}) {
    ExpectErrno(check, absl::StrCat("DestroyContainer(", h, ")"),
                backend.DestroyContainer(h), ENOENT);
    ExpectErrno(check, absl::StrCat("GetGeometry(", h, ")"),
                backend.GetGeometry(h).status(), ENOENT);
    ExpectErrno(check, absl::StrCat("ListMappings(", h, ")"),
                backend.ListMappings(h).status(), ENOENT);
    ExpectErrno(check, absl::StrCat("DeviceFds(", h, ")"),
                backend.DeviceFds(h).status(), ENOENT);
    ExpectErrno(check, UnmapCall(h, kLowestIova, k4K),
                backend.Unmap(h, kLowestIova, k4K).status(), ENOENT);
    HostMemory mem;
    if (ExpectOk(check, "allocate host memory", mem.Allocate(env.memory, k4K, k4K))) {
      ExpectErrno(check, MapCall(h, kLowestIova, mem.base(), k4K, true, true),
                  backend.Map(h, kLowestIova, mem.base(), k4K, true, true), ENOENT);
    }
  }
}

// ---- Persist and adopt (an agent restart) -----------------------------------

void ExpectSameGeometry(Check& check, absl::string_view call, const Geometry& want,
                        const Geometry& got) {
  bool same = want.page_size_bitmap == got.page_size_bitmap &&
              want.max_mappings == got.max_mappings && want.usable.size() == got.usable.size();
  for (size_t i = 0; same && i < want.usable.size(); ++i) {
    same = want.usable[i].start == got.usable[i].start &&
           want.usable[i].last == got.usable[i].last;
  }
  if (!same) {
    check.Fail(call, absl::StrCat("geometry differs from the created container's: page sizes ",
                                  Hex(want.page_size_bitmap), " vs ", Hex(got.page_size_bitmap),
                                  ", max_mappings ", want.max_mappings, " vs ",
                                  got.max_mappings, ", ", want.usable.size(), " vs ",
                                  got.usable.size(), " usable ranges"));
  }
}

std::map<std::string, UniqueFd> FdMap(PersistedContainer p) {
  std::map<std::string, UniqueFd> out;
  for (auto& [name, fd] : p.fds) out[name] = std::move(fd);
  return out;
}

// The first instance creates a container over both devices, maps two pages
// and persists it twice, then dies. The second adopts one persisted set with
// an fd missing (must fail and close it), then the other (must keep the
// kernel's mappings: it maps, unmaps and destroys through them). Finally the
// backend under test must be able to create over the devices again: nothing
// of the old address space is left holding them.
void CheckPersistAdopt(Backend& backend, const ConformanceEnv& env, Check& check) {
  if (!env.new_instance) {
    check.Answer("persist_adopt", "skipped: no ConformanceEnv::new_instance");
    return;
  }
  const std::vector<std::string> devices = {env.device_a, env.device_b};
  HostMemory memory;  // Outlives both instances' mappings.
  Geometry geometry;
  std::vector<BackendMapping> journal;
  PersistedContainer kept;
  PersistedContainer lost;
  uint64_t page = 0;
  uint64_t base = 0;
  {
    absl::StatusOr<std::unique_ptr<Backend>> first = env.new_instance();
    if (!ExpectOk(check, "new_instance() (first)", first.status())) return;
    ScopedContainer c(**first, check);
    if (!c.Create(devices)) return;
    absl::StatusOr<Geometry> g = (*first)->GetGeometry(c.handle());
    if (!ExpectOk(check, "GetGeometry (first)", g.status())) return;
    geometry = *g;
    page = std::max(MinPageSize(geometry.page_size_bitmap),
                    static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
    bool found = false;
    for (const IovaRange& r : geometry.usable) {
      uint64_t start = (std::max(r.start, kLowestIova) + page - 1) & ~(page - 1);
      if (start >= r.start && start <= r.last && r.last - start >= 4 * page - 1) {
        base = start;
        found = true;
        break;
      }
    }
    if (!found) {
      check.Fail("GetGeometry (first)", "no usable range holds 4 pages");
      return;
    }
    if (!ExpectOk(check, "allocate host memory",
                  memory.Allocate(env.memory, 4 * page, page))) {
      return;
    }
    for (uint64_t i = 0; i < 2; ++i) {
      const uint64_t iova = base + i * page;
      const uint64_t vaddr = memory.base() + i * page;
      if (!ExpectOk(check, MapCall(c.handle(), iova, vaddr, page, true, i == 1),
                    (*first)->Map(c.handle(), iova, vaddr, page, true, i == 1))) {
        return;
      }
    }
    absl::StatusOr<std::vector<BackendMapping>> m = (*first)->ListMappings(c.handle());
    if (!ExpectOk(check, "ListMappings (first)", m.status())) return;
    journal = *m;
    absl::StatusOr<PersistedContainer> p1 = (*first)->PersistContainer(c.handle());
    if (!ExpectOk(check, "PersistContainer (first)", p1.status())) return;
    kept = *std::move(p1);
    absl::StatusOr<PersistedContainer> p2 = (*first)->PersistContainer(c.handle());
    if (!ExpectOk(check, "PersistContainer (first, again)", p2.status())) return;
    lost = *std::move(p2);
    if (!IsValidPersistedState(kept.state)) {
      check.Fail("PersistContainer", absl::StrCat("state \"", absl::CEscape(kept.state),
                                                  "\" is not <= 256 printable ASCII bytes"));
    }
    std::set<std::string> seen;
    for (const auto& [name, fd] : kept.fds) {
      if (!IsValidPersistedFdName(name) || !seen.insert(name).second) {
        check.Fail(absl::StrCat("PersistContainer fd \"", absl::CEscape(name), "\""),
                   "expected a unique name of 1-64 characters of [A-Za-z0-9._-]");
      }
      const int flags = fcntl(fd.get(), F_GETFD);
      if (flags < 0 || (flags & FD_CLOEXEC) == 0) {
        check.Fail(absl::StrCat("PersistContainer fd ", name), "expected FD_CLOEXEC set");
      }
    }
    // The agent dies: its own fds close, the container is not destroyed.
    c.Release();
  }
  absl::StatusOr<std::unique_ptr<Backend>> second = env.new_instance();
  if (!ExpectOk(check, "new_instance() (restarted)", second.status())) return;
  Backend& b = **second;
  if (lost.fds.empty()) {
    check.Fail("PersistContainer", "returned no fds");
    return;
  }
  const std::string lost_name = lost.fds.front().first;
  lost.fds.erase(lost.fds.begin());
  {
    const std::string call = absl::StrCat("AdoptContainer without fd ", lost_name);
    const std::string state = lost.state;
    const absl::Status s =
        b.AdoptContainer(devices, FdMap(std::move(lost)), state, journal).status();
    check.Answer(call, StatusText(s));
    const std::string want = absl::StrCat("fd ", lost_name, ": missing (the fd store lost it)");
    if (s.code() != absl::StatusCode::kFailedPrecondition ||
        !absl::StrContains(s.message(), want)) {
      check.Fail(call, absl::StrCat("expected FAILED_PRECONDITION with \"", want, "\", got ",
                                    StatusText(s)));
    }
  }
  const std::string state = kept.state;
  absl::StatusOr<ContainerHandle> h =
      b.AdoptContainer(devices, FdMap(std::move(kept)), state, journal);
  if (!ExpectOk(check, "AdoptContainer", h.status())) return;
  ScopedContainer adopted(b, check);
  adopted.Adopt(*h);
  absl::StatusOr<Geometry> g = b.GetGeometry(*h);
  if (ExpectOk(check, "GetGeometry (adopted)", g.status())) {
    ExpectSameGeometry(check, "GetGeometry (adopted)", geometry, *g);
  }
  absl::StatusOr<std::vector<BackendMapping>> m = b.ListMappings(*h);
  if (ExpectOk(check, "ListMappings (adopted)", m.status()) &&
      MappingsText(*m) != MappingsText(journal)) {
    check.Fail("ListMappings (adopted)", absl::StrCat("expected ", MappingsText(journal),
                                                      ", got ", MappingsText(*m)));
  }
  // The kernel still holds the first page: mapping it again overlaps.
  ExpectErrno(check, MapCall(*h, base, memory.base(), page, true, true),
              b.Map(*h, base, memory.base(), page, true, true), EEXIST);
  ExpectOk(check, MapCall(*h, base + 2 * page, memory.base() + 2 * page, page, true, true),
           b.Map(*h, base + 2 * page, memory.base() + 2 * page, page, true, true));
  absl::StatusOr<uint64_t> bytes = b.Unmap(*h, base, page);
  if (ExpectOk(check, UnmapCall(*h, base, page), bytes.status()) && *bytes != page) {
    check.Fail(UnmapCall(*h, base, page),
               absl::StrCat("expected ", Hex(page), " bytes unmapped, got ", Hex(*bytes)));
  }
  ExpectDeviceFds(b, check, *h, devices);
  if (!adopted.Destroy()) return;
  // Revocation held across the restart: the devices are free again.
  ScopedContainer again(backend, check);
  again.Create(devices);
}

struct NamedCheck {
  const char* name;
  void (*run)(Backend&, const ConformanceEnv&, Check&);
};

constexpr NamedCheck kChecks[] = {
    {"geometry", CheckGeometry},
    {"create_empty_list", CheckCreateEmptyList},
    {"create_unknown_device", CheckCreateUnknownDevice},
    {"create_held_device", CheckCreateHeldDevice},
    {"map_aligned", CheckMapAligned},
    {"map_unaligned_iova", CheckMapUnalignedIova},
    {"map_unaligned_size", CheckMapUnalignedSize},
    {"map_unaligned_vaddr", CheckMapUnalignedVaddr},
    {"map_size_zero", CheckMapSizeZero},
    {"map_no_access", CheckMapNoAccess},
    {"map_overlap", CheckMapOverlap},
    {"map_outside_usable", CheckMapOutsideUsable},
    {"unmap_one", CheckUnmapOne},
    {"unmap_two_whole", CheckUnmapTwoWhole},
    {"unmap_cut", CheckUnmapCut},
    {"unmap_nothing_mapped", CheckUnmapNothingMapped},
    {"unmap_unaligned", CheckUnmapUnaligned},
    {"unmap_size_zero", CheckUnmapSizeZero},
    {"device_fds", CheckDeviceFds},
    {"destroy_releases_devices", CheckDestroyReleasesDevices},
    {"unknown_handle", CheckUnknownHandle},
    {"persist_adopt", CheckPersistAdopt},
};

}  // namespace

std::vector<ConformanceResult> RunBackendConformanceChecks(
    Backend& backend, const ConformanceEnv& env) {
  std::vector<ConformanceResult> out;
  for (const NamedCheck& c : kChecks) {
    Check check(c.name);
    c.run(backend, env, check);
    out.push_back(std::move(check).Result());
  }
  return out;
}

std::vector<std::string> RunBackendConformance(Backend& backend,
                                               const ConformanceEnv& env) {
  std::vector<std::string> failures;
  for (ConformanceResult& r : RunBackendConformanceChecks(backend, env)) {
    for (std::string& f : r.failures) failures.push_back(std::move(f));
  }
  return failures;
}

}  // namespace agent
}  // namespace iommu

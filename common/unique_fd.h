// UniqueFd: the move-only owner of one file descriptor, for the fds that
// have no more specific owner type (sockets, memfds, fds received over
// SCM_RIGHTS). Closing on destruction is what keeps an error path from
// leaking an fd a peer sent us.
//
// Not thread-safe: one owner at a time, like std::unique_ptr.
#ifndef COMMON_UNIQUE_FD_H_
#define COMMON_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace iommu {

class UniqueFd final {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (-1: empty).
  explicit UniqueFd(int fd) : fd_(fd) {}

  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }

  ~UniqueFd() { reset(); }

  // The fd, still owned; -1 when empty.
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership without closing; the caller must close the result.
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }

  // Closes the owned fd (if any) and takes ownership of `fd`. close() errors
  // are ignored: on Linux the fd is released even when close fails, and
  // retrying on EINTR could close an fd another thread just opened.
  void reset(int fd = -1) {
    const int old = std::exchange(fd_, fd);
    if (old >= 0) ::close(old);
  }

 private:
  int fd_ = -1;
};

}  // namespace iommu

#endif  // COMMON_UNIQUE_FD_H_

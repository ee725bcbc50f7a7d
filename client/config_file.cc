#include "client/config_file.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "client/config.h"

namespace iommu {
namespace client {
namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;

absl::Status OsError(int err, absl::string_view what) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, ": ", std::strerror(err)));
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

// Creates each missing directory of `dir` with mode 0700.
absl::Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return absl::OkStatus();
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(dir, ": not a directory"));
  }
  const size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    absl::Status parent = MakeDirs(dir.substr(0, slash));
    if (!parent.ok()) return parent;
  }
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return OsError(errno, absl::StrCat("mkdir ", dir));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultConfigPath() {
  if (std::string path = Env(kConfigEnvVar); !path.empty()) return path;
  if (std::string xdg = Env("XDG_CONFIG_HOME"); !xdg.empty()) {
    return absl::StrCat(xdg, "/iommuctl/config");
  }
  if (std::string home = Env("HOME"); !home.empty()) {
    return absl::StrCat(home, "/.config/iommuctl/config");
  }
  return "";
}

absl::StatusOr<iommu::ctl::CliConfig> LoadConfigFile(absl::string_view path) {
  const std::string p(path);
  File file(std::fopen(p.c_str(), "re"), &std::fclose);
  if (file == nullptr) {
    if (errno == ENOENT) return iommu::ctl::CliConfig();
    return OsError(errno, absl::StrCat("reading ", p));
  }
  std::string text;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    text.append(buffer, n);
    if (text.size() > kMaxConfigBytes) {
      return absl::InvalidArgumentError(absl::StrCat(p, ": larger than 1 MiB; not a config"));
    }
  }
  if (std::ferror(file.get())) return OsError(errno, absl::StrCat("reading ", p));
  return ParseConfig(text, p);
}

absl::Status SaveConfigFile(absl::string_view path, const iommu::ctl::CliConfig& config) {
  const std::string p(path);
  const size_t slash = p.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : p.substr(0, slash);
  absl::Status made = MakeDirs(dir);
  if (!made.ok()) return made;
  std::string tmp = absl::StrCat(p, ".tmp.XXXXXX");
  const int fd = mkostemp(tmp.data(), O_CLOEXEC);  // Mode 0600.
  if (fd < 0) return OsError(errno, absl::StrCat("creating a temporary file next to ", p));
  File file(fdopen(fd, "w"), &std::fclose);
  if (file == nullptr) {
    const int err = errno;
    close(fd);
    unlink(tmp.c_str());
    return OsError(err, absl::StrCat("fdopen ", tmp));
  }
  const std::string text = RenderConfig(config);
  const bool written = std::fwrite(text.data(), 1, text.size(), file.get()) == text.size() &&
                       std::fflush(file.get()) == 0 && fsync(fileno(file.get())) == 0;
  const int err = errno;
  const bool closed = std::fclose(file.release()) == 0;
  if (!written || !closed) {
    unlink(tmp.c_str());
    return OsError(written ? errno : err, absl::StrCat("writing ", tmp));
  }
  if (rename(tmp.c_str(), p.c_str()) != 0) {
    const int rename_err = errno;
    unlink(tmp.c_str());
    return OsError(rename_err, absl::StrCat("renaming ", tmp, " to ", p));
  }
  return absl::OkStatus();
}

}  // namespace client
}  // namespace iommu

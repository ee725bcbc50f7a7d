// The iommu-launcher command line, kept out of main.cc so tests link it:
// argument parsing (sizes such as 4K, 2M, 0x1000; --map and --unmap specs)
// and the run itself, which drives a LauncherClient step by step and prints
// one key=value line per step.
//
// Thread-safety: ParseSize/ParseMapSpec/ParseUnmapSpec/ParseArgs are pure.
// RunCli is meant for a single-threaded process: with --hold it blocks
// SIGINT and SIGTERM in the calling thread and waits for them.
#ifndef LAUNCHER_CLI_H_
#define LAUNCHER_CLI_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iommu {
namespace launcher {

struct MapSpec {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t iova = 0;
  bool readable = true;
  bool writable = true;
};

struct UnmapSpec {
  uint64_t iova = 0;
  uint64_t length = 0;
};

struct CliOptions {
  std::string socket;
  // From $IOMMU_LAUNCHER_TOKEN; empty when token_file is given.
  std::string token;
  // --token-file: a path, or "-" for one line of stdin. Read by RunCli.
  std::string token_file;
  uint64_t memfd_size = 0;  // --memfd; 0: not given.
  std::string file;         // --file; empty: not given.
  std::vector<MapSpec> maps;
  std::vector<UnmapSpec> unmaps;
  bool list = false;
  bool devices = false;
  bool hold = false;
  bool help = false;
};

// A byte count, as common/byte_size.h reads it (the parser iommuctl uses
// too): "4096", "0x1000", binary "4Ki" "2Mi" "1Gi", decimal "4k" "2M" "1G".
// "0" is returned as 0 (callers decide whether it is allowed).
// INVALID_ARGUMENT naming `field` for anything else ("1GB" and "4K" are
// ambiguous) and for values over 2^64-1.
absl::StatusOr<uint64_t> ParseSize(absl::string_view field,
                                   absl::string_view text);

// "OFFSET:LENGTH@IOVA[:rw|r|w]"; access defaults to rw. LENGTH must not be 0.
absl::StatusOr<MapSpec> ParseMapSpec(absl::string_view text);

// "IOVA:LENGTH"; LENGTH must not be 0.
absl::StatusOr<UnmapSpec> ParseUnmapSpec(absl::string_view text);

// Parses the arguments after argv[0] against the launcher's flag table with
// common/cli_flags.h, iommuctl's parser: "--flag=value" or "--flag value";
// switches (--list, --devices, --hold, --help) take no value or =true /
// =false; --map and --unmap repeat, other flags are given once. The token
// never comes from argv, which every local user can read in
// /proc/PID/cmdline: it comes from --token-file (a file, or "-" for stdin;
// RunCli reads it), else from `env_token` (the IOMMU_LAUNCHER_TOKEN
// variable, readable only by the same uid and root), else it is an error.
// INVALID_ARGUMENT naming the flag for unknown flags (with the closest known
// name: "did you mean --socket?"), the removed --token (the message names
// the alternatives), bad values, --memfd with --file, and --map without
// memory.
absl::StatusOr<CliOptions> ParseArgs(const std::vector<std::string>& args,
                                     const char* env_token);

// The token in `path` ("-": the first line of `stdin_fd`, read one byte at
// a time so nothing after it is consumed), without surrounding whitespace.
// INVALID_ARGUMENT "--token-file: ..." for an empty token or one over 4096
// bytes (no broker token is longer); the open/read errno otherwise.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path, int stdin_fd);

// The --help text: usage lines, then the flag list rendered from the same
// table ParseArgs reads.
std::string Usage();

// Reads --token-file if given (ReadTokenFile, stdin for "-"), connects,
// opens the session, registers the memory, maps, unmaps, lists
// and fetches devices as asked, writing one line per step to `out`, e.g.
//   step=open_session session_id=s-1 container_id=c-... tenant_id=acme ...
//   step=map memory_id=m-1 offset=0x0 length=0x200000 iova=0x100000 access=rw
// With hold, then prints "ready" (flushed) and keeps the session open until
// SIGINT, SIGTERM or EOF on stdin (OK), or until the agent closes the
// connection (UNAVAILABLE). Returns the first error, with the agent's code
// and message.
absl::Status RunCli(const CliOptions& options, std::FILE* out);

}  // namespace launcher
}  // namespace iommu

#endif  // LAUNCHER_CLI_H_

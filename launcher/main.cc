// iommu-launcher: drives the node agent's launcher socket from a shell (see
// launcher/cli.h). Only argument handling and exit codes live here.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "launcher/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<iommu::launcher::CliOptions> options =
      iommu::launcher::ParseArgs(args, std::getenv("IOMMU_LAUNCHER_TOKEN"));
  absl::Status status = options.status();
  if (status.ok() && options->help) {
    std::fputs(iommu::launcher::Usage().c_str(), stdout);
    return 0;
  }
  if (status.ok()) status = iommu::launcher::RunCli(*options, stdout);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s: %s\n",
                 absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

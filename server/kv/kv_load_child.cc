// Test helper for sqlite_kv_store_test's crash test: opens the store at
// argv[1] and writes from argv[2] threads until killed, printing
// "<key> <revision>\n" on stdout for every put acknowledged (after Txn
// returned OK, i.e. after its fsync). The parent SIGKILLs it mid-load and
// checks that every printed key survived.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/kv/sqlite_kv_store.h"

int main(int argc, char** argv) {
  int threads = 0;
  if (argc != 3 || !absl::SimpleAtoi(argv[2], &threads) || threads <= 0) {
    std::fprintf(stderr, "usage: %s <store path> <threads>\n", argv[0]);
    return 2;
  }
  auto store = iommu::kv::OpenSqliteKvStore(argv[1]);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0;; ++i) {
        const std::string key = absl::StrCat("k/", getpid(), "/", t, "/", i);
        auto r = (*store)->Put(key, std::string(100, 'v'));
        if (!r.ok()) {
          std::fprintf(stderr, "put %s: %s\n", key.c_str(), r.status().ToString().c_str());
          std::_Exit(1);
        }
        // One write(2) per line: lines from threads never interleave.
        const std::string line = absl::StrCat(key, " ", r->revision, "\n");
        if (write(STDOUT_FILENO, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
          std::_Exit(1);
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  return 0;
}

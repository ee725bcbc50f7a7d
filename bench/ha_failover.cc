// Failover time of broker replicas (bench/ha_load.sh): kill -9 of the leader
// to the first write acknowledged after it, over --trials trials.
//
// One writer runs for the whole bench, as an orchestrator would: one channel
// to every replica's address (common/broker_target.h; a standby forwards
// each call to the leader), the reconnect backoff common/reconnect.h
// recommends, and each write a SetTenantQuota with a request id, retried
// with that id until acknowledged, every attempt wait_for_ready with a 5 s
// deadline. The quota grows by one page per write, so the tenant's state
// stays one row and a read shows the last write that landed.
//
// A trial: find the leader (the replica GetVersion names, whichever replica
// answers it; with --logs, its log must also show it serving), check the
// writer is being acknowledged, kill -9 the pid in
// that replica's pid file, and wait for the first acknowledgment of an
// attempt that started after the kill: failover = that acknowledgment - the
// kill. An attempt in flight at the kill does not count even when its answer
// arrives later (the old leader may have sent it before it died). Then the
// killed replica is started again through --restart_cmd (which returns once
// it is a standby), the writer must be acknowledged again, and --settle_s
// passes before the next trial. After each trial the tenant is read back:
// its quota must be at least the last acknowledged one (nothing lost).
//
// Output: a line per trial and a summary (p50, max, the goals of issue 14:
// p50 < 3 s, max < 5 s) on stdout; with --csv, one row per trial:
//   label,trial,killed,new_leader,failover_s,restart_s,writes_failed,lost,killed_unix_ms
// (killed_unix_ms: the kill on the wall clock, to line it up with the
// brokers' logs; every duration is measured on the steady clock).
// The process management (etcd, brokers, pid files, restart) is the
// script's; this binary only measures, on one steady clock.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/broker_target.h"
#include "common/reconnect.h"
#include "grpcpp/grpcpp.h"
#include "proto/broker.grpc.pb.h"

ABSL_FLAG(std::vector<std::string>, brokers, {},
          "Required. Every replica's host:port, in replica order.");
ABSL_FLAG(std::vector<std::string>, replica_names, {},
          "Each replica's --replica-name (same order); default b0, b1, ...: GetVersion names "
          "the leader by it.");
ABSL_FLAG(std::vector<std::string>, pid_files, {},
          "Required. Each replica's pid file (same order), rewritten by --restart_cmd.");
ABSL_FLAG(std::vector<std::string>, logs, {},
          "Each replica's log file (same order, appended to across restarts). When set, a "
          "trial kills a replica only once its log shows it leads: `event=serving` after its "
          "last `event=listening`.");
ABSL_FLAG(std::string, restart_cmd, "",
          "Required. Run as `sh -c 'CMD INDEX'` to start a killed replica again; returns once it "
          "is a standby.");
ABSL_FLAG(int, trials, 20, "Leader kills.");
ABSL_FLAG(double, settle_s, 1, "Pause after the restarted replica is a standby.");
ABSL_FLAG(double, takeover_timeout_s, 30, "A trial with no acknowledged write after this fails.");
ABSL_FLAG(std::string, tenant, "failover", "The tenant the writer sets the quota of.");
ABSL_FLAG(std::string, csv, "", "Append one row per trial to this CSV file.");
ABSL_FLAG(std::string, label, "", "The CSV's label column.");

namespace iommu {
namespace {

namespace v1 = ::iommu::v1;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The writer thread and what it has seen. Thread-safe.
class Writer {
 public:
  explicit Writer(const std::string& target, std::string tenant) : tenant_(std::move(tenant)) {
    grpc::ChannelArguments args;
    // What makes a failover quick for a client (tests/broker_failover_test):
    // a short reconnect backoff, so the channel tries the new leader soon.
    SetReconnectBackoff(absl::Milliseconds(100), absl::Milliseconds(500), &args);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stub_ = v1::Broker::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }
  ~Writer() { Stop(); }

  // Creates the tenant (or finds it), then writes until Stop().
  bool Start() {
    v1::CreateTenantRequest req;
    req.set_request_id(absl::StrCat("ha-failover-tenant-", getpid()));
    req.set_tenant_id(tenant_);
    req.mutable_quota()->set_pinned_bytes(4096);
    v1::Tenant out;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ctx.set_wait_for_ready(true);
    grpc::Status s = stub_->CreateTenant(&ctx, req, &out);
    if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      std::fprintf(stderr, "ha_failover: CreateTenant: %s\n", s.error_message().c_str());
      return false;
    }
    thread_ = std::thread([this] { Loop(); });
    return true;
  }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // When the first attempt that started at or after `t` was acknowledged
  // (the writer is sequential: attempts start in the order they end).
  std::optional<Clock::time_point> FirstAckStartedAfter(Clock::time_point t) {
    absl::MutexLock l(&mu_);
    std::optional<Clock::time_point> first;
    for (auto it = acks_.rbegin(); it != acks_.rend() && it->started >= t; ++it) {
      first = it->acked;
    }
    return first;
  }
  int AcksSince(Clock::time_point t) {
    absl::MutexLock l(&mu_);
    int n = 0;
    for (auto it = acks_.rbegin(); it != acks_.rend() && it->started >= t; ++it) ++n;
    return n;
  }
  uint64_t last_acked_quota() {
    absl::MutexLock l(&mu_);
    return last_quota_;
  }
  int64_t failed_attempts() { return failed_; }
  int64_t refused() { return refused_; }
  // The tenant's quota as the leader reads it now; nullopt when unread.
  std::optional<uint64_t> ReadQuota() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.set_wait_for_ready(true);
    v1::GetTenantRequest req;
    req.set_tenant_id(tenant_);
    v1::Tenant out;
    if (!stub_->GetTenant(&ctx, req, &out).ok()) return std::nullopt;
    return out.quota().pinned_bytes();
  }

 private:
  struct Ack {
    Clock::time_point started, acked;  // Of the attempt that was acknowledged.
  };

  void Loop() {
    for (uint64_t n = 1; !stop_; ++n) {
      v1::SetTenantQuotaRequest req;
      req.set_request_id(absl::StrCat("ha-failover-", getpid(), "-", n));
      req.set_tenant_id(tenant_);
      req.mutable_quota()->set_pinned_bytes(4096 * (n + 1));
      req.mutable_update_mask()->add_paths("quota.pinned_bytes");
      while (!stop_) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        ctx.set_wait_for_ready(true);
        v1::Tenant out;
        const Clock::time_point started = Clock::now();
        grpc::Status s = stub_->SetTenantQuota(&ctx, req, &out);
        if (s.ok()) {
          absl::MutexLock l(&mu_);
          acks_.push_back({started, Clock::now()});
          last_quota_ = out.quota().pinned_bytes();
          break;
        }
        ++failed_;
        // UNAVAILABLE / DEADLINE_EXCEEDED during a failover (UNAVAILABLE
        // "fenced" from a deposed leader too), ABORTED "in flight" for a
        // retry that overtook its first attempt: all retried with the same
        // id. Anything else is a broker bug for this writer; counted and the
        // write given up.
        const grpc::StatusCode c = s.error_code();
        const bool overtaken = c == grpc::StatusCode::ABORTED &&
                               absl::StrContains(s.error_message(), "in flight");
        if (c != grpc::StatusCode::UNAVAILABLE && c != grpc::StatusCode::DEADLINE_EXCEEDED &&
            !overtaken) {
          ++refused_;
          std::fprintf(stderr, "ha_failover: write %llu refused: %d %s\n",
                       static_cast<unsigned long long>(n), static_cast<int>(c),
                       s.error_message().c_str());
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

  const std::string tenant_;
  std::unique_ptr<v1::Broker::Stub> stub_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> failed_{0}, refused_{0};
  absl::Mutex mu_;
  std::vector<Ack> acks_ ABSL_GUARDED_BY(mu_);
  uint64_t last_quota_ ABSL_GUARDED_BY(mu_) = 0;
};

// Which replica leads: the one GetVersion names. Every replica answers it (a
// standby forwards it to the leader), so the answer's name, not who
// answered, says which one leads.
class Replicas {
 public:
  Replicas(const std::vector<std::string>& addresses, std::vector<std::string> names)
      : names_(std::move(names)) {
    for (const std::string& a : addresses) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      SetReconnectBackoff(absl::Milliseconds(100), absl::Milliseconds(500), &args);
      stubs_.push_back(v1::Broker::NewStub(
          grpc::CreateCustomChannel(a, grpc::InsecureChannelCredentials(), args)));
    }
  }
  int size() const { return static_cast<int>(stubs_.size()); }

  // The leading replica's index, or -1 when none answers or it names no
  // replica of ours.
  int Leader() {
    for (int i = 0; i < size(); ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
      v1::GetVersionResponse v;
      if (!stubs_[i]->GetVersion(&ctx, v1::GetVersionRequest(), &v).ok()) continue;
      for (int j = 0; j < static_cast<int>(names_.size()); ++j) {
        if (names_[j] == v.replica()) return j;
      }
      return -1;
    }
    return -1;
  }
  int WaitLeader(double timeout_s) {
    const auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(timeout_s));
    for (int i = Leader(); Clock::now() < give_up; i = Leader()) {
      if (i >= 0) return i;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

 private:
  const std::vector<std::string> names_;
  std::vector<std::unique_ptr<v1::Broker::Stub>> stubs_;
};

pid_t ReadPid(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  int pid = 0;
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &pid) ? pid : -1;
}

// Whether the log at `path` says its replica leads: its running process
// (the last `event=listening`, a start) logged `event=serving` since. A
// second witness beside GetVersion's name, so a kill of a standby cannot
// pass for a failover.
bool LogSaysLeads(const std::string& path) {
  std::ifstream in(path);
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t start = log.rfind("event=listening ");
  return start != std::string::npos && log.find("event=serving ", start) != std::string::npos;
}

// Runs `sh -c "CMD INDEX"` and waits for it; true when it exits 0.
bool RunRestart(const std::string& cmd, int index) {
  std::string line = absl::StrCat(cmd, " ", index);
  std::vector<char*> argv = {const_cast<char*>("/bin/sh"), const_cast<char*>("-c"), line.data(),
                             nullptr};
  pid_t pid;
  // posix_spawn, not fork: this process runs gRPC's threads.
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv.data(), environ) != 0) return false;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Polls `done` every 5 ms; false when `timeout_s` passed first.
bool WaitFor(const std::function<bool()>& done, double timeout_s) {
  const auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(timeout_s));
  while (!done()) {
    if (Clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

struct Trial {
  int killed = -1, new_leader = -1;
  double failover_s = -1, restart_s = -1;
  int64_t writes_failed = 0;
  int lost = 0;  // 1: the read-back quota is below the last acknowledged one; -1: unread.
  int64_t killed_unix_ms = 0;
};

// One kill -9 of the leader and the return to a stable cluster; nullopt
// (with the reason on stderr) when the cluster is not in a state to measure.
std::optional<Trial> RunTrial(Replicas& replicas, Writer& writer,
                              const std::vector<std::string>& pid_files,
                              const std::vector<std::string>& logs) {
  Trial t;
  t.killed = replicas.WaitLeader(30);
  if (t.killed < 0) {
    std::fprintf(stderr, "ha_failover: no leader within 30 s\n");
    return std::nullopt;
  }
  // The writer is being acknowledged now, so the measured gap is the kill's.
  const auto healthy_from = Clock::now();
  if (!WaitFor([&] { return writer.AcksSince(healthy_from) >= 3; }, 30)) {
    std::fprintf(stderr, "ha_failover: the writer is not acknowledged (leader: replica %d)\n",
                 t.killed);
    return std::nullopt;
  }
  if (!logs.empty() && !WaitFor([&] { return LogSaysLeads(logs[t.killed]); }, 10)) {
    std::fprintf(stderr,
                 "ha_failover: GetVersion names replica %d the leader, but its log %s does not "
                 "show it serving\n",
                 t.killed, logs[t.killed].c_str());
    return std::nullopt;
  }
  const pid_t pid = ReadPid(pid_files[t.killed]);
  if (pid <= 0 || kill(pid, 0) != 0) {
    std::fprintf(stderr, "ha_failover: replica %d's pid file %s names no live process\n",
                 t.killed, pid_files[t.killed].c_str());
    return std::nullopt;
  }
  const int64_t failed_before = writer.failed_attempts();
  const Clock::time_point killed_at = Clock::now();
  t.killed_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  if (kill(pid, SIGKILL) != 0) {
    std::perror("ha_failover: kill");
    return std::nullopt;
  }
  std::optional<Clock::time_point> acked;
  if (!WaitFor([&] { return (acked = writer.FirstAckStartedAfter(killed_at)).has_value(); },
               absl::GetFlag(FLAGS_takeover_timeout_s))) {
    std::fprintf(stderr, "ha_failover: no write acknowledged within %.0f s of the kill\n",
                 absl::GetFlag(FLAGS_takeover_timeout_s));
    return std::nullopt;
  }
  t.failover_s = Seconds(*acked - killed_at);
  t.writes_failed = writer.failed_attempts() - failed_before;
  t.new_leader = replicas.WaitLeader(10);
  const uint64_t acked_quota = writer.last_acked_quota();
  const std::optional<uint64_t> read = writer.ReadQuota();
  t.lost = !read ? -1 : *read < acked_quota ? 1 : 0;
  const auto restart_from = Clock::now();
  if (!RunRestart(absl::GetFlag(FLAGS_restart_cmd), t.killed)) {
    std::fprintf(stderr, "ha_failover: --restart_cmd %d failed\n", t.killed);
    return std::nullopt;
  }
  t.restart_s = Seconds(Clock::now() - restart_from);
  const auto after = Clock::now();
  if (!WaitFor([&] { return writer.AcksSince(after) >= 10; }, 30)) {
    std::fprintf(stderr, "ha_failover: the writer is not acknowledged after the restart\n");
    return std::nullopt;
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_settle_s)));
  return t;
}

// Median with the two middle values averaged for an even count.
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "bench/ha_failover --brokers=H:P,H:P,H:P --pid_files=F0,F1,F2 --restart_cmd=CMD\n"
      "kill -9 of the leading broker replica to the next acknowledged write; see the source");
  absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> brokers = absl::GetFlag(FLAGS_brokers);
  const std::vector<std::string> pid_files = absl::GetFlag(FLAGS_pid_files);
  if (brokers.size() < 2 || pid_files.size() != brokers.size() ||
      absl::GetFlag(FLAGS_restart_cmd).empty()) {
    std::fprintf(stderr, "ha_failover: --brokers (2 or more), as many --pid_files and "
                         "--restart_cmd are required\n");
    return 2;
  }
  absl::StatusOr<std::string> target = BrokerTarget("--brokers", absl::StrJoin(brokers, ","));
  if (!target.ok()) {
    std::fprintf(stderr, "ha_failover: %s\n", std::string(target.status().message()).c_str());
    return 2;
  }
  FILE* csv = nullptr;
  if (const std::string path = absl::GetFlag(FLAGS_csv); !path.empty()) {
    std::ifstream existing(path);
    const bool empty = existing.peek() == std::ifstream::traits_type::eof();
    csv = std::fopen(path.c_str(), "a");
    if (csv == nullptr) {
      std::perror(path.c_str());
      return 1;
    }
    if (empty) {
      std::fprintf(csv, "label,trial,killed,new_leader,failover_s,restart_s,writes_failed,lost,"
                        "killed_unix_ms\n");
    }
  }
  std::vector<std::string> names = absl::GetFlag(FLAGS_replica_names);
  if (names.empty()) {
    for (size_t i = 0; i < brokers.size(); ++i) names.push_back(absl::StrCat("b", i));
  }
  if (names.size() != brokers.size()) {
    std::fprintf(stderr, "ha_failover: --replica_names must name every replica of --brokers\n");
    return 2;
  }
  const std::vector<std::string> logs = absl::GetFlag(FLAGS_logs);
  if (!logs.empty() && logs.size() != brokers.size()) {
    std::fprintf(stderr, "ha_failover: --logs must name every replica's log, in --brokers order\n");
    return 2;
  }
  Replicas replicas(brokers, names);
  Writer writer(*target, absl::GetFlag(FLAGS_tenant));
  if (!writer.Start()) return 1;

  std::vector<double> times;
  int lost = 0, unread = 0;
  const int trials = absl::GetFlag(FLAGS_trials);
  std::printf("trial  killed  new leader  failover s  restart s  failed attempts\n");
  for (int k = 1; k <= trials; ++k) {
    std::optional<Trial> t = RunTrial(replicas, writer, pid_files, logs);
    if (!t) break;
    times.push_back(t->failover_s);
    lost += t->lost == 1;
    unread += t->lost == -1;
    std::printf("%5d  %6d  %10d  %10.3f  %9.2f  %15lld%s\n", k, t->killed, t->new_leader,
                t->failover_s, t->restart_s, static_cast<long long>(t->writes_failed),
                t->lost == 1    ? "  LOST an acknowledged write"
                : t->lost == -1 ? "  (state not read back)"
                                : "");
    std::fflush(stdout);
    if (csv != nullptr) {
      std::fprintf(csv, "%s,%d,%d,%d,%.4f,%.3f,%lld,%d,%lld\n",
                   absl::GetFlag(FLAGS_label).c_str(), k, t->killed, t->new_leader, t->failover_s,
                   t->restart_s, static_cast<long long>(t->writes_failed), t->lost,
                   static_cast<long long>(t->killed_unix_ms));
      std::fflush(csv);
    }
  }
  writer.Stop();
  if (csv != nullptr) std::fclose(csv);
  if (times.empty()) return 1;
  const double p50 = Median(times);
  const double max = *std::max_element(times.begin(), times.end());
  const double min = *std::min_element(times.begin(), times.end());
  std::printf("\nfailover over %zu of %d trials: p50 %.2f s, min %.2f s, max %.2f s\n",
              times.size(), trials, p50, min, max);
  std::printf("goal p50 < 3 s: %s; goal max < 5 s: %s\n", p50 < 3 ? "met" : "NOT met",
              max < 5 ? "met" : "NOT met");
  std::printf("trials that lost an acknowledged write: %d (%d not read back); writes refused "
              "(not retried): %lld\n",
              lost, unread, static_cast<long long>(writer.refused()));
  return static_cast<int>(times.size()) == trials ? 0 : 1;
}

}  // namespace
}  // namespace iommu

int main(int argc, char** argv) { return iommu::Main(argc, argv); }

#include "tests/etcd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/daemon.h"

namespace iommu::testing {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";
// What etcd 3.4 logs once its client listener serves; with port 0 in the
// URL it names the port the kernel chose.
constexpr absl::string_view kServingLine = "serving insecure client requests on 127.0.0.1:";
constexpr absl::string_view kServingTlsLine = "serving client requests on 127.0.0.1:";

// The port from etcd's log, or 0 while it has not logged it yet.
int ClientPortFromLog(const std::string& log, absl::string_view serving_line) {
  const size_t at = log.find(serving_line.data(), 0, serving_line.size());
  if (at == std::string::npos) return 0;
  const size_t begin = at + serving_line.size();
  size_t end = begin;
  while (end < log.size() && log[end] >= '0' && log[end] <= '9') ++end;
  int port = 0;
  return absl::SimpleAtoi(log.substr(begin, end - begin), &port) ? port : 0;
}

// 'T' when every thread of `pid` is stopped, else the first other state.
char ThreadsState(pid_t pid) {
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const char state = ProcStatState(it->path().string() + "/stat");
    if (state != 'T') return state;
  }
  return ec ? '?' : 'T';
}

}  // namespace

EtcdProcess::~EtcdProcess() { Stop(); }

std::string EtcdProcess::endpoint() const { return absl::StrCat("127.0.0.1:", client_port_); }

std::string EtcdProcess::Log() const {
  std::ifstream in(dir_ + "/etcd.log");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> EtcdProcess::SingleMemberArgv(const std::string& client_url,
                                                       const EtcdTlsFiles* tls) {
  // Port 0 for peers: nothing to race other tests for. The advertised URLs
  // are then not reachable addresses, which a single member never uses.
  const std::string any = "http://127.0.0.1:0";
  std::vector<std::string> argv = {kEtcd,
                                   "--name=test",
                                   "--data-dir=" + dir_ + "/data",
                                   "--listen-client-urls=" + client_url,
                                   "--advertise-client-urls=" + client_url,
                                   "--listen-peer-urls=" + any,
                                   "--initial-advertise-peer-urls=" + any,
                                   "--initial-cluster=test=" + any,
                                   "--initial-cluster-state=new"};
  probe_creds_ = grpc::InsecureChannelCredentials();
  probe_server_name_.clear();
  if (tls != nullptr) {
    argv.insert(argv.end(),
                {"--cert-file=" + tls->server_cert_file, "--key-file=" + tls->server_key_file,
                 "--trusted-ca-file=" + tls->ca_file, "--client-cert-auth"});
    const auto read = [](const std::string& path) {
      std::ifstream in(path);
      std::stringstream s;
      s << in.rdbuf();
      return s.str();
    };
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read(tls->ca_file);
    ssl.pem_cert_chain = read(tls->client_cert_file);
    ssl.pem_private_key = read(tls->client_key_file);
    probe_creds_ = grpc::SslCredentials(ssl);
    probe_server_name_ = tls->server_name;
  }
  return argv;
}

absl::Status EtcdProcess::Start(absl::Duration timeout, const EtcdTlsFiles* tls) {
  if (pid_ > 0) return absl::FailedPreconditionError("etcd already started");
  if (access(kEtcd, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kEtcd, " is missing: install the Debian package `etcd-server` (scripts/setup.sh does)"));
  }
  dir_ = NewTempDir("etcd");
  client_port_ = 0;
  // Port 0: the kernel picks the client port, which etcd then logs.
  const std::string client = tls != nullptr ? "https://127.0.0.1:0" : "http://127.0.0.1:0";
  RETURN_IF_ERROR(Exec(SingleMemberArgv(client, tls)));
  return WaitReady(timeout, tls != nullptr ? kServingTlsLine : kServingLine);
}

absl::Status EtcdProcess::RestartWithTls(const EtcdTlsFiles& tls, absl::Duration timeout) {
  if (pid_ <= 0 || client_port_ == 0) {
    return absl::FailedPreconditionError("etcd is not running (RestartWithTls needs Start)");
  }
  Terminate();
  RETURN_IF_ERROR(Exec(SingleMemberArgv(absl::StrCat("https://127.0.0.1:", client_port_), &tls)));
  return WaitReady(timeout, kServingTlsLine);
}

absl::Status EtcdProcess::Exec(std::vector<std::string> argv) {
  argv_ = argv;
  const std::string log_path = dir_ + "/etcd.log";
  log_offset_ = Log().size();  // Earlier launches' lines.
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) {
    pid_ = -1;
    return absl::ErrnoToStatus(errno, "fork for etcd");
  }
  if (pid_ == 0) {
    // Only async-signal-safe calls between fork and exec (the test may
    // already run gRPC threads).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // The test died before prctl.
    // Its own process group: the kernel resumes the stopped members of a
    // group that becomes orphaned (SIGHUP, then SIGCONT), which must never
    // undo a test's Pause; the group of etcd alone keeps its parent, the
    // test, in another group of the session for as long as the test runs.
    setpgid(0, 0);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execv(kEtcd, cargv.data());
    _exit(127);
  }
  return absl::OkStatus();
}

absl::Status EtcdProcess::Launch(const EtcdMemberSpec& m) {
  if (pid_ > 0) return absl::FailedPreconditionError("etcd already started");
  if (access(kEtcd, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kEtcd, " is missing: install the Debian package `etcd-server` (scripts/setup.sh does)"));
  }
  dir_ = NewTempDir("etcd-" + m.name);
  client_port_ = m.client_port;
  probe_creds_ = grpc::InsecureChannelCredentials();
  probe_server_name_.clear();
  const std::string client = absl::StrCat("http://127.0.0.1:", m.client_port);
  const std::string peer = absl::StrCat("http://127.0.0.1:", m.peer_port);
  return Exec({kEtcd, "--name=" + m.name, "--data-dir=" + dir_ + "/data",
               "--listen-client-urls=" + client, "--advertise-client-urls=" + client,
               "--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
               "--initial-cluster=" + m.initial_cluster, "--initial-cluster-state=new",
               "--initial-cluster-token=iommu-test"});
}

absl::Status EtcdProcess::Pause(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("etcd is not running");
  if (kill(pid_, SIGSTOP) != 0) return absl::ErrnoToStatus(errno, "SIGSTOP etcd");
  const absl::Time deadline = absl::Now() + timeout;
  char state = '?';
  while (absl::Now() < deadline) {
    state = ThreadsState(pid_);
    if (state == 'T') return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(5));
  }
  return absl::DeadlineExceededError(absl::StrCat("etcd (pid ", pid_, ") not stopped after ",
                                                  absl::FormatDuration(timeout),
                                                  ": a thread in state ", std::string(1, state)));
}

absl::Status EtcdProcess::Resume() {
  if (pid_ <= 0) return absl::FailedPreconditionError("etcd is not running");
  if (kill(pid_, SIGCONT) != 0) return absl::ErrnoToStatus(errno, "SIGCONT etcd");
  return absl::OkStatus();
}

absl::Status EtcdProcess::WaitReady(absl::Duration timeout) {
  return WaitReady(timeout, kServingLine);
}

void EtcdProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

absl::Status EtcdProcess::Relaunch() {
  if (pid_ > 0) return absl::FailedPreconditionError("etcd is running");
  if (argv_.empty()) return absl::FailedPreconditionError("etcd was never launched");
  return Exec(argv_);
}

absl::Status EtcdProcess::WaitReady(absl::Duration timeout, absl::string_view serving_line) {
  if (pid_ <= 0) return absl::FailedPreconditionError("etcd is not running");
  const absl::Time deadline = absl::Now() + timeout;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::string last = "etcd has not logged that it serves clients yet";
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("etcd exited (wait status ", status, "):\n", Log()));
    }
    // Probe only once this launch serves (its log says so). A probe channel
    // that first tried while a restarted member was still starting (port
    // known, etcd not serving yet) was seen failing every attempt for 20 s
    // after etcd served, when a new channel connected at once.
    const std::string log = Log();
    const std::string launched = log.size() > log_offset_ ? log.substr(log_offset_) : "";
    const int serving_port = ClientPortFromLog(launched, serving_line);
    if (client_port_ == 0) client_port_ = serving_port;
    if (serving_port != 0) {
      if (!kv) {
        grpc::ChannelArguments args;
        if (!probe_server_name_.empty()) args.SetSslTargetNameOverride(probe_server_name_);
        kv = etcdserverpb::KV::NewStub(grpc::CreateCustomChannel(endpoint(), probe_creds_, args));
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
      etcdserverpb::RangeRequest req;
      req.set_key("ready-probe");
      etcdserverpb::RangeResponse resp;
      grpc::Status s = kv->Range(&ctx, req, &resp);
      if (s.ok()) return absl::OkStatus();
      last = absl::StrCat("Range on ", endpoint(), ": ", s.error_message());
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "etcd not ready after ", absl::FormatDuration(timeout), ": ", last, "\n", Log()));
}

void EtcdProcess::Terminate() {
  if (pid_ <= 0) return;
  TerminateAndReap(pid_, absl::Seconds(5));
  pid_ = -1;
}

void EtcdProcess::Stop() {
  Terminate();
  if (!dir_.empty()) {
    std::error_code ignored;  // Best effort: the directory is under TEST_TMPDIR.
    std::filesystem::remove_all(dir_, ignored);
    dir_.clear();
  }
}

}  // namespace iommu::testing

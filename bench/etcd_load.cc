// etcd load generator: the broker's bench/loadgen shape pointed at etcd, so
// that bench/broker_load.sh can put etcd's durable writes next to the broker's
// durable mutations measured the same way (issue 13's goal is broker >= 1.0x
// etcd). Like loadgen: one channel (one HTTP/2 connection), one completion
// queue thread, a closed loop of N outstanding RPCs ("concurrency": N clients
// each waiting for its answer before sending the next) for a fixed time; only
// calls that complete inside the measured window (after --warmup_s) count;
// latencies are exact (every sample kept and sorted). The client is the same
// shape as loadgen on purpose: a different client (threads, several
// connections) would put a different client cost into one side of a ratio.
//
// Mixes (etcd v3 KV API through the stubs generated from Debian's protos,
// //third_party/etcd:etcd_cc_grpc; every write is durable: etcd fsyncs its
// WAL before it answers):
//   put  KV.Put of a --value_bytes value to the slot's own key.
//   txn  KV.Txn: compare the mod_revision of the slot's key "a" with the
//        revision the slot last wrote it at; then Put "a" and Put "b". That
//        is the shape of a store commit guarded by a revision (issue 14's
//        fenced writes). The else branch reads "a", so a slot whose compare
//        failed (nothing else writes its keys; it would be a bug) learns the
//        revision again; the failure counts as an error.
// Each (mix, concurrency) run writes keys of its own
// (<prefix><mix>/c<concurrency>/<slot>/...), so a txn slot starts from
// "a does not exist" (mod_revision 0) and no run sees another's keys.
//
// Output: loadgen's table and CSV columns (bench/load_table.h), op "all",
// no floor (the *_vs_noop columns are empty).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/load_table.h"
#include "bench/server_cpu.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, endpoint, "", "Required. etcd's client host:port (plaintext gRPC).");
ABSL_FLAG(std::vector<std::string>, mixes, std::vector<std::string>({"put", "txn"}),
          "Comma-separated mixes, run in this order at each concurrency: put, txn.");
ABSL_FLAG(std::vector<std::string>, concurrency,
          std::vector<std::string>({"1", "2", "4", "8", "16", "32", "64"}),
          "Comma-separated numbers of outstanding RPCs (closed-loop clients).");
ABSL_FLAG(double, duration_s, 5, "Measured seconds per (mix, concurrency).");
ABSL_FLAG(double, warmup_s, 1, "Unmeasured seconds before each measurement.");
ABSL_FLAG(int, value_bytes, 256, "Size of every value written.");
ABSL_FLAG(std::string, key_prefix, "etcd-load/", "Prefix of every key written.");
ABSL_FLAG(std::string, csv, "", "Append result rows to this CSV file (loadgen's columns).");
ABSL_FLAG(std::string, label, "etcd", "The CSV's label column.");
ABSL_FLAG(int, server_pid, 0,
          "etcd's pid, when it runs on this machine: each row then says etcd's CPU per completed "
          "call (bench/server_cpu.h).");

namespace iommu {
namespace {

namespace pb = ::etcdserverpb;
using Clock = std::chrono::steady_clock;

enum class Mix { kPut, kTxn };

bool ParseMix(const std::string& name, Mix* mix) {
  if (name == "put") {
    *mix = Mix::kPut;
    return true;
  }
  if (name == "txn") {
    *mix = Mix::kTxn;
    return true;
  }
  return false;
}

struct Slot {
  Clock::time_point start;
  std::unique_ptr<grpc::ClientContext> ctx;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<pb::PutResponse>> put_reader;
  std::unique_ptr<grpc::ClientAsyncResponseReader<pb::TxnResponse>> txn_reader;
  pb::PutResponse put;
  pb::TxnResponse txn;
  std::string key_a, key_b;
  // The revision this slot last wrote key_a at (0: not written yet, which is
  // also etcd's mod_revision of a missing key).
  int64_t a_revision = 0;
};

class EtcdLoad final {
 public:
  EtcdLoad(std::shared_ptr<grpc::Channel> channel, std::string value, std::string prefix)
      : kv_(pb::KV::NewStub(std::move(channel))),
        value_(std::move(value)),
        prefix_(std::move(prefix)) {}

  // One Range, waiting up to 10 s for the connection: a clear error when
  // there is no etcd at the endpoint, before anything is measured.
  grpc::Status Ping() {
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    pb::RangeRequest req;
    req.set_key(prefix_ + "ping");
    pb::RangeResponse resp;
    return kv_->Range(&ctx, req, &resp);
  }

  // One closed-loop run of `concurrency` slots; latencies of the calls that
  // completed inside [warmup, warmup + duration) go to `us`.
  void Run(Mix mix, const std::string& mix_name, int concurrency, double warmup_s,
           double duration_s, std::vector<uint32_t>* us, int64_t* errors) {
    grpc::CompletionQueue cq;
    const auto t0 = Clock::now();
    const auto measure_from = t0 + Secs(warmup_s);
    const auto stop_at = measure_from + Secs(duration_s);
    std::vector<Slot> slots(concurrency);
    for (int i = 0; i < concurrency; ++i) {
      const std::string base = absl::StrCat(prefix_, mix_name, "/c", concurrency, "/", i, "/");
      slots[i].key_a = base + "a";
      slots[i].key_b = base + "b";
      Issue(mix, &slots[i], &cq);
    }
    int outstanding = concurrency;
    while (outstanding > 0) {
      void* tag;
      bool ok;
      if (!cq.Next(&tag, &ok)) break;
      --outstanding;
      Slot* s = static_cast<Slot*>(tag);
      const auto now = Clock::now();
      if (!ok || !s->status.ok()) {
        ++*errors;
        Complain(absl::StrCat(mix_name, ": ", s->status.error_message()));
      } else if (mix == Mix::kTxn && !s->txn.succeeded()) {
        // The else branch read "a": take its revision and go on.
        ++*errors;
        Complain(absl::StrCat("txn: compare failed on ", s->key_a, " at revision ",
                              s->a_revision));
        const auto& range = s->txn.responses_size() > 0
                                ? s->txn.responses(0).response_range()
                                : pb::RangeResponse::default_instance();
        s->a_revision = range.kvs_size() > 0 ? range.kvs(0).mod_revision() : 0;
      } else {
        if (mix == Mix::kTxn) s->a_revision = s->txn.header().revision();
        if (s->start >= measure_from && now < stop_at) {
          us->push_back(static_cast<uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(now - s->start).count()));
        }
      }
      if (now < stop_at) {
        Issue(mix, s, &cq);
        ++outstanding;
      }
    }
    cq.Shutdown();
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
    }
  }

 private:
  static Clock::duration Secs(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  void Complain(const std::string& what) {
    if (errors_printed_++ < 5) std::fprintf(stderr, "etcd_load: %s\n", what.c_str());
  }

  void Issue(Mix mix, Slot* s, grpc::CompletionQueue* cq) {
    s->ctx = std::make_unique<grpc::ClientContext>();
    s->ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    s->status = grpc::Status();
    s->start = Clock::now();
    if (mix == Mix::kPut) {
      pb::PutRequest req;
      req.set_key(s->key_a);
      req.set_value(value_);
      s->put_reader = kv_->PrepareAsyncPut(s->ctx.get(), req, cq);
      s->put_reader->StartCall();
      s->put_reader->Finish(&s->put, &s->status, s);
      return;
    }
    pb::TxnRequest req;
    pb::Compare* cmp = req.add_compare();
    cmp->set_key(s->key_a);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(s->a_revision);
    for (const std::string* key : {&s->key_a, &s->key_b}) {
      pb::PutRequest* put = req.add_success()->mutable_request_put();
      put->set_key(*key);
      put->set_value(value_);
    }
    req.add_failure()->mutable_request_range()->set_key(s->key_a);
    s->txn_reader = kv_->PrepareAsyncTxn(s->ctx.get(), req, cq);
    s->txn_reader->StartCall();
    s->txn_reader->Finish(&s->txn, &s->status, s);
  }

  std::unique_ptr<pb::KV::Stub> kv_;
  const std::string value_;
  const std::string prefix_;
  int errors_printed_ = 0;
};

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "bench/etcd_load --endpoint=HOST:PORT [--mixes=put,txn] [--concurrency=1,32]\n"
      "closed-loop durable writes against etcd; see bench/etcd_load.cc");
  absl::ParseCommandLine(argc, argv);
  const std::string endpoint = absl::GetFlag(FLAGS_endpoint);
  if (endpoint.empty()) {
    std::fprintf(stderr, "etcd_load: --endpoint: required (host:port of etcd's client URL)\n");
    return 2;
  }
  std::vector<std::pair<Mix, std::string>> mixes;
  for (const std::string& m : absl::GetFlag(FLAGS_mixes)) {
    Mix mix;
    if (!ParseMix(m, &mix)) {
      std::fprintf(stderr, "etcd_load: --mixes: unknown mix \"%s\" (put, txn)\n", m.c_str());
      return 2;
    }
    mixes.emplace_back(mix, m);
  }
  std::vector<int> levels;
  for (const std::string& c : absl::GetFlag(FLAGS_concurrency)) {
    int n;
    if (!absl::SimpleAtoi(c, &n) || n < 1 || n > 4096) {
      std::fprintf(stderr, "etcd_load: --concurrency: \"%s\" is not a number in 1..4096\n",
                   c.c_str());
      return 2;
    }
    levels.push_back(n);
  }
  const int value_bytes = absl::GetFlag(FLAGS_value_bytes);
  if (value_bytes < 0 || value_bytes > (1 << 20)) {
    std::fprintf(stderr, "etcd_load: --value_bytes: %d is not in 0..1048576\n", value_bytes);
    return 2;
  }
  // Random bytes, so nothing on the way (etcd's WAL has no compression, but
  // a file system might) gets a cheaper write than the broker's rows do.
  std::string value(value_bytes, '\0');
  std::mt19937_64 rng(getpid());
  for (char& c : value) c = static_cast<char>(rng());

  grpc::ChannelArguments args;
  // One channel, one HTTP/2 connection: what loadgen and etcd's clientv3 do.
  EtcdLoad load(grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args),
                std::move(value), absl::GetFlag(FLAGS_key_prefix));
  if (grpc::Status s = load.Ping(); !s.ok()) {
    std::fprintf(stderr, "etcd_load: etcd at %s does not answer a Range: %s\n", endpoint.c_str(),
                 s.error_message().c_str());
    return 1;
  }

  bench::LoadCsv csv;
  const std::string csv_path = absl::GetFlag(FLAGS_csv);
  if (!csv_path.empty() && !csv.Open(csv_path)) return 1;
  const std::string label = absl::GetFlag(FLAGS_label);
  const double duration = absl::GetFlag(FLAGS_duration_s);
  const double warmup = absl::GetFlag(FLAGS_warmup_s);

  bench::PrintLoadHeader(stdout);
  const bench::LoadRow no_floor;
  for (int c : levels) {
    for (const auto& [mix, name] : mixes) {
      std::vector<uint32_t> us;
      int64_t errors = 0;
      bench::ServerCpuWindow cpu(absl::GetFlag(FLAGS_server_pid), warmup, duration);
      load.Run(mix, name, c, warmup, duration, &us, &errors);
      bench::LoadRow row = bench::SummarizeLoad(name, "all", c, duration, us, errors);
      row.server_cpu_us_per_op = bench::MicrosPerOp(cpu.Seconds(), row.ops);
      bench::PrintLoadRow(stdout, row, no_floor);
      if (csv.is_open()) csv.Append(label, row, no_floor);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace iommu

int main(int argc, char** argv) { return iommu::Main(argc, argv); }

#include "tests/metrics_testing.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/http_get.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/daemon.h"

extern char** environ;

namespace iommu::testing {
namespace {

constexpr char kPrometheus[] = "/usr/bin/prometheus";

bool IsIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':'; }
bool IsIdentChar(char c) { return IsIdentStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

// Removes string literals ("...", '...', `...`), keeping the rest.
std::string DropStrings(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char q = s[i];
    if (q != '"' && q != '\'' && q != '`') {
      out.push_back(q);
      continue;
    }
    for (++i; i < s.size() && s[i] != q; ++i) {
      if (s[i] == '\\' && q != '`') ++i;
    }
    out.push_back(' ');
  }
  return out;
}

// Removes every bracketed part opened by `open` and closed by `close` (no
// nesting once strings are gone: label matchers and range selectors).
std::string DropBracketed(const std::string& s, char open, char close) {
  std::string out;
  int depth = 0;
  for (char c : s) {
    if (c == open) {
      ++depth;
    } else if (c == close && depth > 0) {
      --depth;
      out.push_back(' ');
    } else if (depth == 0) {
      out.push_back(c);
    }
  }
  return out;
}

const std::set<std::string>& PromQlKeywords() {
  static const auto* k = new std::set<std::string>{
      "by",  "without", "on",  "ignoring", "group_left", "group_right", "bool", "and",
      "or",  "unless",  "offset", "atan2", "inf",       "nan",         "Inf",  "NaN"};
  return *k;
}

}  // namespace

absl::StatusOr<std::string> ScrapeMetrics(int port) {
  absl::StatusOr<HttpResponse> r = HttpGet("127.0.0.1", port, "/metrics");
  if (!r.ok()) return r.status();
  if (r->status != 200) {
    return absl::UnavailableError(absl::StrCat("/metrics on port ", port, ": HTTP ", r->status));
  }
  return r->body;
}

absl::StatusOr<int> MetricsPortFromLog(const std::string& log) {
  static const std::regex serving(R"(event=metrics_serving .*\bport=([0-9]+))");
  std::smatch m;
  int port = 0;
  if (!std::regex_search(log, m, serving) || !absl::SimpleAtoi(m[1].str(), &port) || port == 0) {
    return absl::NotFoundError(absl::StrCat("no event=metrics_serving line in the log:\n", log));
  }
  return port;
}

std::set<std::string> ExposedSeriesNames(const std::string& exposition) {
  std::set<std::string> out;
  for (absl::string_view line : absl::StrSplit(exposition, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() < 4) continue;
      const std::string& name = parts[2];
      const std::string& type = parts[3];
      if (type == "histogram" || type == "summary") {
        out.insert(name + "_sum");
        out.insert(name + "_count");
        out.insert(type == "histogram" ? name + "_bucket" : name);
      } else {
        out.insert(name);
      }
      continue;
    }
    if (line[0] == '#') continue;
    size_t end = 0;
    while (end < line.size() && line[end] != '{' && line[end] != ' ') ++end;
    out.insert(std::string(line.substr(0, end)));
  }
  return out;
}

std::set<std::string> PromQlMetricNames(const std::string& expr) {
  std::string s = expr;
  // Grafana's label_values(metric, label): only the first argument selects.
  static const std::regex label_values(R"(label_values\s*\(([^,)]*)(,[^)]*)?\))");
  std::smatch m;
  if (std::regex_search(s, m, label_values)) s = m[1].str();
  s = DropStrings(s);
  s = DropBracketed(s, '{', '}');
  s = DropBracketed(s, '[', ']');
  static const std::regex grouping(
      R"(\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))");
  s = std::regex_replace(s, grouping, " ");
  static const std::regex grafana_vars(R"(\$\{[^}]*\}|\$[A-Za-z0-9_]+)");
  s = std::regex_replace(s, grafana_vars, " ");

  std::set<std::string> out;
  bool after_offset = false;
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      // A number or a duration (0.99, 1e3, 5m): not a name.
      while (i < s.size() && (IsIdentChar(s[i]) || s[i] == '.')) ++i;
      after_offset = false;
      continue;
    }
    if (!IsIdentStart(c)) {
      ++i;
      continue;
    }
    const size_t start = i;
    while (i < s.size() && IsIdentChar(s[i])) ++i;
    const std::string ident = s.substr(start, i - start);
    size_t next = i;
    while (next < s.size() && std::isspace(static_cast<unsigned char>(s[next]))) ++next;
    const bool is_call = next < s.size() && s[next] == '(';
    if (after_offset) {
      after_offset = false;
      continue;
    }
    if (ident == "offset") {
      after_offset = true;
      continue;
    }
    if (is_call || PromQlKeywords().count(ident)) continue;
    out.insert(ident);
  }
  return out;
}

PrometheusProcess::~PrometheusProcess() {
  if (pid_ <= 0) return;
  TerminateAndReap(pid_, absl::Seconds(10));
}

absl::Status PrometheusProcess::Start(const std::string& dir, const std::vector<Job>& jobs,
                                      absl::Duration timeout) {
  if (access(kPrometheus, X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kPrometheus, " is missing: install the Debian package `prometheus` "
                                  "(scripts/setup.sh does)"));
  }
  std::string config =
      "global:\n"
      "  scrape_interval: 1s\n"
      "  scrape_timeout: 1s\n"
      "  evaluation_interval: 1s\n"
      "scrape_configs:\n";
  for (const Job& job : jobs) {
    absl::StrAppend(&config, "  - job_name: ", job.name, "\n    static_configs:\n      - targets: [");
    for (size_t i = 0; i < job.targets.size(); ++i) {
      absl::StrAppend(&config, i ? ", " : "", "\"", job.targets[i], "\"");
    }
    absl::StrAppend(&config, "]\n");
    if (!job.labels.empty()) {
      absl::StrAppend(&config, "        labels:\n");
      for (const auto& [k, v] : job.labels) absl::StrAppend(&config, "          ", k, ": \"", v, "\"\n");
    }
  }
  const std::string config_path = dir + "/prometheus.yml";
  std::ofstream(config_path) << config;
  log_ = dir + "/prometheus.log";
  port_ = PickFreePort();

  std::vector<std::string> argv = {kPrometheus,
                                   "--config.file=" + config_path,
                                   "--storage.tsdb.path=" + dir + "/tsdb",
                                   absl::StrCat("--web.listen-address=127.0.0.1:", port_),
                                   "--log.level=info"};
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  const int rc = posix_spawn(&pid_, kPrometheus, &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    pid_ = -1;
    return absl::ErrnoToStatus(rc, absl::StrCat("posix_spawn ", kPrometheus));
  }
  const absl::Time deadline = absl::Now() + timeout;
  std::string last = "no answer yet";
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("prometheus exited (status ", status, "):\n", Log()));
    }
    absl::StatusOr<HttpResponse> r = HttpGet("127.0.0.1", port_, "/-/ready", absl::Seconds(2));
    if (r.ok() && r->status == 200) return absl::OkStatus();
    last = r.ok() ? absl::StrCat("HTTP ", r->status) : r.status().ToString();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("prometheus not ready on port ", port_, ": ", last, "\n", Log()));
}

absl::StatusOr<std::vector<PromSample>> PrometheusProcess::Query(const std::string& promql) {
  absl::StatusOr<HttpResponse> r =
      HttpGet("127.0.0.1", port_, "/api/v1/query?query=" + UrlEncode(promql));
  if (!r.ok()) return r.status();
  google::protobuf::Value answer;
  if (!google::protobuf::util::JsonStringToMessage(r->body, &answer).ok() ||
      answer.kind_case() != google::protobuf::Value::kStructValue) {
    return absl::DataLossError(absl::StrCat("query ", promql, ": not JSON: ", r->body));
  }
  auto field = [](const google::protobuf::Struct& s, const std::string& k) {
    auto it = s.fields().find(k);
    return it == s.fields().end() ? google::protobuf::Value() : it->second;
  };
  if (field(answer.struct_value(), "status").string_value() != "success") {
    return absl::InvalidArgumentError(absl::StrCat(
        "query ", promql, ": ", field(answer.struct_value(), "error").string_value()));
  }
  // `field` answers copies: keep each Value alive while reading inside it.
  const google::protobuf::Value data_value = field(answer.struct_value(), "data");
  const google::protobuf::Struct& data = data_value.struct_value();
  const std::string type = field(data, "resultType").string_value();
  const google::protobuf::Value result = field(data, "result");
  auto parse_value = [&](const google::protobuf::Value& pair, double* out) {
    if (pair.list_value().values_size() != 2) return false;
    return absl::SimpleAtod(pair.list_value().values(1).string_value(), out);
  };
  std::vector<PromSample> out;
  if (type == "scalar") {
    PromSample s;
    if (!parse_value(result, &s.value)) return absl::DataLossError(r->body);
    out.push_back(s);
    return out;
  }
  if (type != "vector") {
    return absl::InvalidArgumentError(absl::StrCat("query ", promql, ": result type ", type));
  }
  for (const google::protobuf::Value& v : result.list_value().values()) {
    PromSample s;
    const google::protobuf::Value metric = field(v.struct_value(), "metric");
    for (const auto& [k, l] : metric.struct_value().fields()) s.labels[k] = l.string_value();
    if (!parse_value(field(v.struct_value(), "value"), &s.value)) {
      return absl::DataLossError(r->body);
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string PrometheusProcess::Log() const {
  std::ifstream in(log_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace iommu::testing

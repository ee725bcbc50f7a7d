// The Grafana dashboard (deploy/grafana/iommu-broker.json) and the alert
// rules (deploy/prometheus/alerts.yml) query only metrics the daemons really
// export: a live broker and simulated agent with --metrics-address are
// scraped, and every metric name in every panel target, template variable
// query and alert expression must be among the series they offer (a
// histogram's _bucket/_sum/_count included). A renamed metric, or a panel
// written against a name that was never implemented, fails here.
#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"
#include "tests/metrics_testing.h"

namespace iommu {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using testing::ExposedSeriesNames;
using testing::PromQlMetricNames;

constexpr char kTwoEdus[] = "0000:00:04.0=1234:11e8@5,0000:00:05.0=1234:11e8@6";

// Series Prometheus itself adds to every target.
const std::set<std::string>& PrometheusBuiltins() {
  static const auto* b = new std::set<std::string>{
      "up", "scrape_duration_seconds", "scrape_samples_scraped",
      "scrape_samples_post_metric_relabeling", "scrape_series_added"};
  return *b;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A query that uses a metric, and where it sits.
struct Use {
  std::string where;
  std::string expr;
};

// Every target expr of every panel (rows' nested panels included) and every
// template variable query of a Grafana dashboard.
std::vector<Use> DashboardQueries(const google::protobuf::Value& dashboard) {
  std::vector<Use> out;
  std::function<void(const google::protobuf::Value&, const std::string&)> panels =
      [&](const google::protobuf::Value& list, const std::string& where) {
        for (const google::protobuf::Value& p : list.list_value().values()) {
          const auto& f = p.struct_value().fields();
          const std::string title =
              f.count("title") ? f.at("title").string_value() : std::string("(untitled)");
          if (f.count("targets")) {
            for (const google::protobuf::Value& t : f.at("targets").list_value().values()) {
              const auto& tf = t.struct_value().fields();
              if (tf.count("expr")) {
                out.push_back({absl::StrCat(where, "panel \"", title, "\""),
                               tf.at("expr").string_value()});
              }
            }
          }
          if (f.count("panels")) panels(f.at("panels"), absl::StrCat("row \"", title, "\" / "));
        }
      };
  const auto& top = dashboard.struct_value().fields();
  if (top.count("panels")) panels(top.at("panels"), "");
  if (top.count("templating")) {
    const auto& tf = top.at("templating").struct_value().fields();
    if (tf.count("list")) {
      for (const google::protobuf::Value& v : tf.at("list").list_value().values()) {
        const auto& vf = v.struct_value().fields();
        if (!vf.count("type") || vf.at("type").string_value() != "query") continue;
        const google::protobuf::Value& q = vf.at("query");
        // Grafana keeps the query as a string or as {"query": "..."}.
        std::string query = q.string_value();
        if (q.has_struct_value() && q.struct_value().fields().count("query")) {
          query = q.struct_value().fields().at("query").string_value();
        }
        const std::string name = vf.count("name") ? vf.at("name").string_value() : "";
        out.push_back({absl::StrCat("variable $", name), query});
      }
    }
  }
  return out;
}

// Every `expr:` of a Prometheus rules file: a one-line value or a block
// scalar (| or >) made of the lines indented deeper than the key.
std::vector<Use> AlertExpressions(const std::string& yaml) {
  std::vector<Use> out;
  std::vector<std::string> lines = absl::StrSplit(yaml, '\n');
  std::string rule = "?";
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos) continue;
    absl::string_view content = absl::string_view(line).substr(indent);
    if (absl::ConsumePrefix(&content, "- alert:") || absl::ConsumePrefix(&content, "- record:")) {
      rule = std::string(absl::StripAsciiWhitespace(content));
      continue;
    }
    if (!absl::ConsumePrefix(&content, "expr:")) continue;
    content = absl::StripAsciiWhitespace(content);
    std::string expr;
    if (absl::StartsWith(content, "|") || absl::StartsWith(content, ">")) {
      for (size_t j = i + 1; j < lines.size(); ++j) {
        const size_t ind = lines[j].find_first_not_of(' ');
        if (ind == std::string::npos) continue;
        if (ind <= indent) break;
        absl::StrAppend(&expr, lines[j].substr(ind), "\n");
      }
    } else {
      expr = std::string(content);
      if (expr.size() >= 2 && (expr.front() == '"' || expr.front() == '\'') &&
          expr.back() == expr.front()) {
        expr = expr.substr(1, expr.size() - 2);
      }
    }
    out.push_back({absl::StrCat("alert ", rule), expr});
  }
  return out;
}

// ---------------------------------------------------------- the extractors

TEST(PromQlMetricNamesTest, KeepsMetricsDropsFunctionsLabelsAndVariables) {
  EXPECT_THAT(PromQlMetricNames(
                  "histogram_quantile(0.99, sum by (node, le) (rate(iommu_agent_map_duration_"
                  "seconds_bucket{node=~\"$node\"}[$__rate_interval])))"),
              ElementsAre("iommu_agent_map_duration_seconds_bucket"));
  EXPECT_THAT(PromQlMetricNames("a_bytes{tenant=~\"$tenant\"} / (b_bytes{x='y'} > 0)"),
              ElementsAre("a_bytes", "b_bytes"));
  EXPECT_THAT(PromQlMetricNames("sum(x_total) without (errno) offset 5m"), ElementsAre("x_total"));
  EXPECT_THAT(PromQlMetricNames("a == 0 or absent(up{job=\"b\"}) unless on(node) c"),
              ElementsAre("a", "c", "up"));
  EXPECT_THAT(PromQlMetricNames("label_values(iommu_broker_node_up, node)"),
              ElementsAre("iommu_broker_node_up"));
  EXPECT_THAT(PromQlMetricNames("max_over_time(m[5m:1m]) * 1e3"), ElementsAre("m"));
  EXPECT_THAT(PromQlMetricNames("1 + 2"), IsEmpty());
}

TEST(ExposedSeriesNamesTest, HistogramsOfferTheirSeriesAndEmptyFamiliesCount) {
  const std::set<std::string> names = ExposedSeriesNames(
      "# HELP h_seconds x\n# TYPE h_seconds histogram\nh_seconds_count 0\n"
      "# TYPE c_total counter\n"
      "g_bytes{tenant=\"a\"} 1\n");
  EXPECT_THAT(names, ElementsAre("c_total", "g_bytes", "h_seconds_bucket", "h_seconds_count",
                                 "h_seconds_sum"));
}

TEST(AlertExpressionsTest, ReadsOneLineAndBlockExpressions) {
  const std::vector<Use> uses = AlertExpressions(
      "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: a == 0\n"
      "        for: 1m\n      - alert: B\n        expr: |\n          b\n            / c\n"
      "        labels: {}\n");
  ASSERT_EQ(uses.size(), 2u);
  EXPECT_EQ(uses[0].expr, "a == 0");
  EXPECT_EQ(uses[1].where, "alert B");
  EXPECT_EQ(uses[1].expr, "b\n/ c\n");
}

// ---------------------------------------------------------- against live daemons

class DashboardMetricsTest : public ::testing::Test {
 protected:
  // Both daemons pick a free metrics port (port 0) and log it.
  DashboardMetricsTest() : cluster_(Options()) {}

  static testing::ClusterOptions Options() {
    testing::ClusterOptions o;
    o.broker_args = {"--metrics-address=127.0.0.1:0"};
    return o;
  }

  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok()) << cluster_.broker().Log();
    absl::Status s = cluster_.StartAgent("n1", kTwoEdus, {"--metrics-address=127.0.0.1:0"});
    ASSERT_TRUE(s.ok()) << s << "\n" << cluster_.agent("n1").Log();
    for (const std::string& log : {cluster_.broker().Log(), cluster_.agent("n1").Log()}) {
      absl::StatusOr<int> port = testing::MetricsPortFromLog(log);
      ASSERT_TRUE(port.ok()) << port.status();
      absl::StatusOr<std::string> text = testing::ScrapeMetrics(*port);
      ASSERT_TRUE(text.ok()) << text.status();
      for (const std::string& n : ExposedSeriesNames(*text)) exported_.insert(n);
    }
  }

  // One line for every metric of `uses` the live pair does not export.
  std::vector<std::string> Unexported(const std::vector<Use>& uses) {
    std::vector<std::string> out;
    for (const Use& use : uses) {
      for (const std::string& name : PromQlMetricNames(use.expr)) {
        used_.insert(name);
        if (exported_.count(name) || PrometheusBuiltins().count(name)) continue;
        out.push_back(absl::StrCat(use.where, " queries ", name,
                                   ", which neither daemon exports (query: ", use.expr, ")"));
      }
    }
    return out;
  }

  testing::Cluster cluster_;
  std::set<std::string> exported_;
  std::set<std::string> used_;
};

TEST_F(DashboardMetricsTest, EveryPanelQueriesExportedMetrics) {
  const std::string json = ReadFile(testing::RunfilePath("deploy/grafana/iommu-broker.json"));
  ASSERT_FALSE(json.empty()) << "deploy/grafana/iommu-broker.json is missing or empty";
  google::protobuf::Value dashboard;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &dashboard).ok())
      << "deploy/grafana/iommu-broker.json is not JSON";
  const std::vector<Use> uses = DashboardQueries(dashboard);
  ASSERT_FALSE(uses.empty()) << "the dashboard has no panel queries";
  EXPECT_THAT(Unexported(uses), IsEmpty()) << "exported: " << absl::StrJoin(exported_, " ");
  // The dashboard covers both daemons.
  EXPECT_TRUE(std::any_of(used_.begin(), used_.end(),
                          [](const std::string& n) { return absl::StartsWith(n, "iommu_broker_"); }));
  EXPECT_TRUE(std::any_of(used_.begin(), used_.end(),
                          [](const std::string& n) { return absl::StartsWith(n, "iommu_agent_"); }));
}

TEST_F(DashboardMetricsTest, EveryAlertQueriesExportedMetrics) {
  const std::string yaml = ReadFile(testing::RunfilePath("deploy/prometheus/alerts.yml"));
  ASSERT_FALSE(yaml.empty()) << "deploy/prometheus/alerts.yml is missing or empty";
  const std::vector<Use> uses = AlertExpressions(yaml);
  ASSERT_FALSE(uses.empty()) << "alerts.yml has no expr";
  EXPECT_THAT(Unexported(uses), IsEmpty()) << "exported: " << absl::StrJoin(exported_, " ");
}

// The check itself: a name nobody exports is reported, with where it is used.
TEST_F(DashboardMetricsTest, ReportsAMetricNeitherDaemonExports) {
  EXPECT_THAT(Unexported({{"panel \"P\"", "iommu_broker_tenants + iommu_broker_no_such_bytes"}}),
              ElementsAre(AllOf(HasSubstr("panel \"P\" queries iommu_broker_no_such_bytes"),
                                Not(HasSubstr("queries iommu_broker_tenants")))));
  // Histogram series are exported as _bucket/_sum/_count, not bare.
  EXPECT_THAT(Unexported({{"q", "rate(iommu_broker_rpc_duration_seconds_bucket[1m])"}}),
              IsEmpty());
  EXPECT_THAT(Unexported({{"q", "iommu_broker_rpc_duration_seconds"}}), ElementsAre(HasSubstr(
                                                                          "neither daemon")));
}

}  // namespace
}  // namespace iommu

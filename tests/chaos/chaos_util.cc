#include "tests/chaos/chaos_util.h"

#include <algorithm>
#include <cstdio>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/reconnect.h"

namespace iommu::chaos {
namespace {

// Calls a list RPC page by page, handing each answer to `each`.
template <typename Req, typename Resp, typename Method, typename Each>
absl::Status ListPages(v1::Broker::Stub* stub, Method method, Req req, Each each) {
  req.set_page_size(1000);
  for (int pages = 0; pages < 1000; ++pages) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    Resp resp;
    grpc::Status s = (stub->*method)(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    }
    each(resp);
    if (resp.next_page_token().empty()) return absl::OkStatus();
    req.set_page_token(resp.next_page_token());
  }
  return absl::InternalError("more than 1000 pages");
}

}  // namespace

void Note(const std::string& line) {
  std::printf("chaos: %s\n", line.c_str());
  std::fflush(stdout);
}

std::unique_ptr<v1::Broker::Stub> BrokerStubFor(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  SetReconnectBackoff(absl::Milliseconds(50), absl::Milliseconds(200), &args);
  return v1::Broker::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

bool IsUncertain(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::ABORTED:
      return true;
    default:
      return false;
  }
}

absl::StatusOr<Fleet> ReadFleet(v1::Broker::Stub* stub) {
  Fleet f;
  absl::Status s = ListPages<v1::ListTenantsRequest, v1::ListTenantsResponse>(
      stub, &v1::Broker::Stub::ListTenants, v1::ListTenantsRequest(),
      [&](const v1::ListTenantsResponse& r) {
        for (const auto& t : r.tenants()) f.tenants[t.id()] = t;
      });
  if (!s.ok()) return s;
  s = ListPages<v1::ListNodesRequest, v1::ListNodesResponse>(
      stub, &v1::Broker::Stub::ListNodes, v1::ListNodesRequest(),
      [&](const v1::ListNodesResponse& r) {
        for (const auto& n : r.nodes()) f.nodes[n.name()] = n;
      });
  if (!s.ok()) return s;
  s = ListPages<v1::ListContainersRequest, v1::ListContainersResponse>(
      stub, &v1::Broker::Stub::ListContainers, v1::ListContainersRequest(),
      [&](const v1::ListContainersResponse& r) {
        for (const auto& c : r.containers()) f.containers[c.id()] = c;
      });
  if (!s.ok()) return s;
  s = ListPages<v1::ListWindowsRequest, v1::ListWindowsResponse>(
      stub, &v1::Broker::Stub::ListWindows, v1::ListWindowsRequest(),
      [&](const v1::ListWindowsResponse& r) {
        for (const auto& w : r.windows()) f.windows[w.id()] = w;
      });
  if (!s.ok()) return s;
  s = ListPages<v1::GetUsageRequest, v1::GetUsageResponse>(
      stub, &v1::Broker::Stub::GetUsage, v1::GetUsageRequest(),
      [&](const v1::GetUsageResponse& r) {
        for (const auto& t : r.tenants()) *f.usage.add_tenants() = t;
        for (const auto& n : r.nodes()) *f.usage.add_nodes() = n;
      });
  if (!s.ok()) return s;
  return f;
}

absl::StatusOr<Fleet> ReadSettledFleet(v1::Broker::Stub* stub, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<Fleet> f = ReadFleet(stub);
    bool settled = f.ok();
    if (settled) {
      for (const auto& [name, n] : f->nodes) settled &= n.state() == v1::NODE_STATE_READY;
      for (const auto& [id, c] : f->containers) {
        settled &= c.state() == v1::CONTAINER_STATE_READY;
      }
    }
    if (settled || absl::Now() >= deadline) return f;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

std::vector<std::string> CheckFleet(const Fleet& f) {
  std::vector<std::string> bad;
  struct Count {
    uint32_t containers = 0;
    uint32_t windows = 0;
    uint64_t window_bytes = 0;
    bool operator==(const Count& o) const {
      return std::tie(containers, windows, window_bytes) ==
             std::tie(o.containers, o.windows, o.window_bytes);
    }
    std::string ToString() const {
      return absl::StrFormat("{containers=%d windows=%d window_bytes=0x%x}", containers, windows,
                             window_bytes);
    }
  };
  std::map<std::string, Count> per_tenant;                                  // recount
  std::map<std::pair<std::string, std::string>, Count> per_tenant_node;    // recount
  std::map<std::string, Count> per_container;                              // recount
  std::map<std::string, uint32_t> per_node;                                // containers
  std::map<std::string, std::vector<const v1::Window*>> by_container;

  for (const auto& [id, c] : f.containers) {
    if (!f.tenants.count(c.tenant_id())) {
      bad.push_back(absl::StrCat("container ", id, " of missing tenant ", c.tenant_id()));
    }
    if (!f.nodes.count(c.node())) {
      bad.push_back(absl::StrCat("container ", id, " on missing node ", c.node()));
    }
    per_tenant[c.tenant_id()].containers++;
    per_tenant_node[{c.tenant_id(), c.node()}].containers++;
    per_container[id];
    per_node[c.node()]++;
  }
  for (const auto& [id, w] : f.windows) {
    auto c = f.containers.find(w.container_id());
    if (c == f.containers.end()) {
      bad.push_back(absl::StrCat("window ", id, " of missing container ", w.container_id()));
      continue;
    }
    if (c->second.tenant_id() != w.tenant_id()) {
      bad.push_back(absl::StrCat("window ", id, " of tenant ", w.tenant_id(), " in container ",
                                 c->first, " of tenant ", c->second.tenant_id()));
    }
    by_container[w.container_id()].push_back(&w);
    Count& ct = per_container[w.container_id()];
    ct.windows++;
    ct.window_bytes += w.size();
    Count& t = per_tenant[w.tenant_id()];
    t.windows++;
    t.window_bytes += w.size();
    Count& tn = per_tenant_node[{w.tenant_id(), c->second.node()}];
    tn.windows++;
    tn.window_bytes += w.size();
    // Inside a usable range, aligned.
    bool inside = false;
    for (const auto& r : c->second.geometry().usable_ranges()) {
      if (w.size() > 0 && w.base() >= r.start() && w.base() + w.size() - 1 <= r.last()) {
        inside = true;
      }
    }
    if (!inside) {
      bad.push_back(absl::StrFormat("window %s [0x%x, +0x%x) outside the usable ranges of %s",
                                    id, w.base(), w.size(), c->first));
    }
    if (w.alignment() != 0 && w.base() % w.alignment() != 0) {
      bad.push_back(absl::StrFormat("window %s base 0x%x not aligned to 0x%x", id, w.base(),
                                    w.alignment()));
    }
  }
  for (auto& [cid, ws] : by_container) {
    std::sort(ws.begin(), ws.end(),
              [](const v1::Window* a, const v1::Window* b) { return a->base() < b->base(); });
    for (size_t i = 1; i < ws.size(); ++i) {
      if (ws[i - 1]->base() + ws[i - 1]->size() > ws[i]->base()) {
        bad.push_back(absl::StrFormat("container %s: windows %s [0x%x, +0x%x) and %s [0x%x, "
                                      "+0x%x) overlap",
                                      cid, ws[i - 1]->id(), ws[i - 1]->base(), ws[i - 1]->size(),
                                      ws[i]->id(), ws[i]->base(), ws[i]->size()));
      }
    }
  }
  for (const auto& [id, c] : f.containers) {
    const Count& want = per_container[id];
    if (c.window_count() != want.windows || c.window_bytes() != want.window_bytes) {
      bad.push_back(absl::StrFormat(
          "container %s says window_count=%d window_bytes=0x%x; its listed windows: %s", id,
          c.window_count(), c.window_bytes(), want.ToString()));
    }
  }
  for (const auto& [name, n] : f.nodes) {
    const uint32_t want = per_node.count(name) ? per_node[name] : 0;
    if (n.container_count() != want) {
      bad.push_back(absl::StrCat("node ", name, " says container_count=", n.container_count(),
                                 "; listed containers there: ", want));
    }
  }
  std::map<std::string, Count> usage_tenants;
  for (const auto& u : f.usage.tenants()) {
    usage_tenants[u.tenant_id()] = {u.containers(), u.windows(), u.window_bytes()};
  }
  for (const auto& [id, t] : f.tenants) {
    if (!usage_tenants.count(id)) bad.push_back(absl::StrCat("GetUsage lacks tenant ", id));
  }
  for (const auto& [id, have] : usage_tenants) {
    if (!f.tenants.count(id)) bad.push_back(absl::StrCat("GetUsage shows unknown tenant ", id));
    const Count want = per_tenant.count(id) ? per_tenant[id] : Count();
    if (!(have == want)) {
      bad.push_back(absl::StrCat("GetUsage tenant ", id, ": ", have.ToString(),
                                 "; recount of listed objects: ", want.ToString()));
    }
  }
  std::map<std::pair<std::string, std::string>, Count> usage_nodes;
  for (const auto& n : f.usage.nodes()) {
    const Count c{n.containers(), n.windows(), n.window_bytes()};
    if (c == Count()) continue;  // A row for billing only.
    usage_nodes[{n.tenant_id(), n.node()}] = c;
  }
  if (usage_nodes != per_tenant_node) {
    for (const auto& [key, want] : per_tenant_node) {
      auto it = usage_nodes.find(key);
      const Count have = it == usage_nodes.end() ? Count() : it->second;
      if (!(have == want)) {
        bad.push_back(absl::StrCat("GetUsage tenant ", key.first, " node ", key.second, ": ",
                                   have.ToString(), "; recount: ", want.ToString()));
      }
    }
    for (const auto& [key, have] : usage_nodes) {
      if (!per_tenant_node.count(key)) {
        bad.push_back(absl::StrCat("GetUsage tenant ", key.first, " node ", key.second, ": ",
                                   have.ToString(), " but nothing listed there"));
      }
    }
  }
  return bad;
}

}  // namespace iommu::chaos

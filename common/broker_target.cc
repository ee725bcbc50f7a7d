#include "common/broker_target.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace iommu {
namespace {

bool IsIpv4(const std::string& host) {
  in_addr a;
  return inet_pton(AF_INET, host.c_str(), &a) == 1;
}

bool IsIpv6(const std::string& host) {
  in6_addr a;
  return inet_pton(AF_INET6, host.c_str(), &a) == 1;
}

}  // namespace

HostResolver SystemHostResolver() {
  return [](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
    addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res); rc != 0) {
      return absl::UnavailableError(absl::StrCat("\"", host, "\" does not resolve: ",
                                                 gai_strerror(rc)));
    }
    std::vector<std::string> out;
    for (addrinfo* p = res; p != nullptr; p = p->ai_next) {
      char buf[INET6_ADDRSTRLEN] = {};
      const void* addr = p->ai_family == AF_INET
                             ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(p->ai_addr)->sin_addr)
                             : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(p->ai_addr)->sin6_addr);
      if (inet_ntop(p->ai_family, addr, buf, sizeof(buf)) != nullptr) out.emplace_back(buf);
    }
    freeaddrinfo(res);
    return out;
  };
}

absl::StatusOr<std::string> BrokerTarget(absl::string_view flag, absl::string_view list,
                                         const HostResolver& resolve) {
  auto invalid = [&](absl::string_view entry, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": \"", entry, "\" ", why,
        " (expected HOST:PORT or a comma-separated list of them, e.g. "
        "10.0.0.1:7400,10.0.0.2:7400)"));
  };
  const std::vector<absl::string_view> entries = absl::StrSplit(list, ',');
  if (list.empty()) return invalid(list, "is empty");
  std::vector<std::pair<std::string, int>> hosts;
  for (absl::string_view e : entries) {
    const size_t colon = e.rfind(':');
    int port = 0;
    if (colon == absl::string_view::npos || colon == 0 ||
        !absl::SimpleAtoi(e.substr(colon + 1), &port) || port < 1 || port > 65535) {
      return invalid(e, "is not HOST:PORT with a port in 1..65535");
    }
    std::string host(e.substr(0, colon));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    hosts.emplace_back(std::move(host), port);
  }
  if (entries.size() == 1) return std::string(list);
  std::vector<std::string> v4, v6;
  for (const auto& [host, port] : hosts) {
    std::vector<std::string> addresses;
    if (IsIpv4(host) || IsIpv6(host)) {
      addresses.push_back(host);
    } else {
      absl::StatusOr<std::vector<std::string>> resolved = resolve(host);
      if (!resolved.ok()) {
        return absl::Status(resolved.status().code(),
                            absl::StrCat(flag, ": ", resolved.status().message()));
      }
      addresses = *resolved;
    }
    for (const std::string& a : addresses) {
      if (IsIpv4(a)) {
        v4.push_back(absl::StrCat(a, ":", port));
      } else {
        v6.push_back(absl::StrCat("[", a, "]:", port));
      }
    }
  }
  if (!v4.empty() && !v6.empty()) {
    return invalid(list, "mixes IPv4 and IPv6 addresses; list the replicas by one family");
  }
  if (v4.empty() && v6.empty()) return invalid(list, "resolves to no address");
  return v4.empty() ? absl::StrCat("ipv6:", absl::StrJoin(v6, ","))
                    : absl::StrCat("ipv4:", absl::StrJoin(v4, ","));
}

}  // namespace iommu

// Test helper: a real multi-member etcd cluster (Debian's /usr/bin/etcd) on
// loopback, each member an EtcdProcess with ports picked free just before
// (members must know each other's peer URLs before they start). Members can
// be killed and brought back on their data, as a crashed host would.
//
// Thread-compatible.
#ifndef TESTS_ETCD_CLUSTER_H_
#define TESTS_ETCD_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/etcd_process.h"

namespace iommu::testing {

class EtcdCluster final {
 public:
  EtcdCluster() = default;
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Starts `members` members and waits until each answers a linearizable
  // read (a leader is elected and the member has joined).
  absl::Status Start(int members = 3, absl::Duration timeout = absl::Seconds(30));
  // "127.0.0.1:P0,127.0.0.1:P1,...": every member's client endpoint.
  std::string endpoints() const;
  int size() const { return static_cast<int>(members_.size()); }
  EtcdProcess& member(int i) { return *members_[i]; }
  // kill -9 of member i (its data kept), and its return.
  void Kill(int i) { members_[i]->Kill(); }
  absl::Status Restart(int i, absl::Duration timeout = absl::Seconds(30));

 private:
  std::vector<std::unique_ptr<EtcdProcess>> members_;
};

}  // namespace iommu::testing

#endif  // TESTS_ETCD_CLUSTER_H_

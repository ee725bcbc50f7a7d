#include "tests/etcd_cluster.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "tests/daemon.h"

namespace iommu::testing {

absl::Status EtcdCluster::Start(int members, absl::Duration timeout) {
  if (!members_.empty()) return absl::FailedPreconditionError("cluster already started");
  std::vector<EtcdMemberSpec> specs(members);
  std::vector<std::string> peers;
  for (int i = 0; i < members; ++i) {
    specs[i].name = absl::StrCat("m", i);
    specs[i].client_port = PickFreePort();
    specs[i].peer_port = PickFreePort();
    peers.push_back(absl::StrCat(specs[i].name, "=http://127.0.0.1:", specs[i].peer_port));
  }
  for (EtcdMemberSpec& s : specs) {
    s.initial_cluster = absl::StrJoin(peers, ",");
    members_.push_back(std::make_unique<EtcdProcess>());
    RETURN_IF_ERROR(members_.back()->Launch(s));
  }
  for (auto& m : members_) RETURN_IF_ERROR(m->WaitReady(timeout));
  return absl::OkStatus();
}

std::string EtcdCluster::endpoints() const {
  std::vector<std::string> out;
  for (const auto& m : members_) out.push_back(m->endpoint());
  return absl::StrJoin(out, ",");
}

absl::Status EtcdCluster::Restart(int i, absl::Duration timeout) {
  RETURN_IF_ERROR(members_[i]->Relaunch());
  return members_[i]->WaitReady(timeout);
}

}  // namespace iommu::testing

#include "agent/peer_policy.h"

#include <optional>
#include <set>
#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Code = absl::StatusCode;

PeerPolicyOptions Limit(size_t n) {
  PeerPolicyOptions o;
  o.max_sessions_per_peer = n;
  return o;
}

TEST(PeerPolicyTest, AnyPeerIsAllowedWhenNoSetIsGiven) {
  PeerPolicy policy(Limit(4));
  EXPECT_OK(policy.Admit(0, 0));
  EXPECT_OK(policy.Admit(1000, 1000));
  EXPECT_OK(policy.Admit(65534, 65534));
}

TEST(PeerPolicyTest, UidOutsideTheAllowedSetIsRefusedAndNotCounted) {
  PeerPolicyOptions o;
  o.allowed_uids = {1000, 1001};
  PeerPolicy policy(o);
  EXPECT_THAT(policy.Admit(2000, 1000),
              StatusIs(Code::kPermissionDenied,
                       "peer: uid 2000 may not use this agent's launcher socket"));
  EXPECT_EQ(policy.held(2000), 0u);
  EXPECT_EQ(policy.peers(), 0u);
  EXPECT_OK(policy.Admit(1001, 5));
  EXPECT_EQ(policy.held(1001), 1u);
}

TEST(PeerPolicyTest, GidOutsideTheAllowedSetIsRefusedAndNotCounted) {
  PeerPolicyOptions o;
  o.allowed_gids = {107};
  PeerPolicy policy(o);
  EXPECT_THAT(policy.Admit(1000, 1000),
              StatusIs(Code::kPermissionDenied,
                       "peer: gid 1000 may not use this agent's launcher socket"));
  EXPECT_EQ(policy.held(1000), 0u);
  EXPECT_OK(policy.Admit(1000, 107));
}

TEST(PeerPolicyTest, WithBothSetsAPeerMustPassBoth) {
  PeerPolicyOptions o;
  o.allowed_uids = {1000};
  o.allowed_gids = {107};
  PeerPolicy policy(o);
  EXPECT_THAT(policy.Admit(1000, 1000), StatusIs(Code::kPermissionDenied, "peer: gid 1000"));
  EXPECT_THAT(policy.Admit(2000, 107), StatusIs(Code::kPermissionDenied, "peer: uid 2000"));
  EXPECT_OK(policy.Admit(1000, 107));
  EXPECT_EQ(policy.peers(), 1u);
}

TEST(PeerPolicyTest, ConnectionsOverThePerUidLimitAreRefusedUntilOneCloses) {
  PeerPolicy policy(Limit(2));
  EXPECT_OK(policy.Admit(1000, 1000));
  EXPECT_OK(policy.Admit(1000, 1000));
  EXPECT_THAT(policy.Admit(1000, 1000),
              StatusIs(Code::kResourceExhausted,
                       "peer: uid 1000 already holds 2 launcher connections (limit 2 per uid)"));
  EXPECT_EQ(policy.held(1000), 2u);
  // Another uid has its own count, whatever the gid.
  EXPECT_OK(policy.Admit(1001, 1000));
  EXPECT_OK(policy.Admit(1001, 1000));
  EXPECT_THAT(policy.Admit(1001, 1000), StatusIs(Code::kResourceExhausted, "uid 1001"));
  EXPECT_OK(policy.Release(1000));
  EXPECT_EQ(policy.held(1000), 1u);
  EXPECT_OK(policy.Admit(1000, 1000));
  EXPECT_THAT(policy.Admit(1000, 1000), StatusIs(Code::kResourceExhausted, "uid 1000"));
}

TEST(PeerPolicyTest, ReleasingEveryConnectionForgetsTheUid) {
  PeerPolicy policy(Limit(3));
  for (int i = 0; i < 3; ++i) ASSERT_OK(policy.Admit(7, 7));
  EXPECT_EQ(policy.peers(), 1u);
  for (int i = 0; i < 3; ++i) EXPECT_OK(policy.Release(7));
  EXPECT_EQ(policy.held(7), 0u);
  EXPECT_EQ(policy.peers(), 0u);
  for (int i = 0; i < 3; ++i) EXPECT_OK(policy.Admit(7, 7));
}

TEST(PeerPolicyTest, RefusalsNeverChangeTheCount) {
  PeerPolicyOptions o = Limit(1);
  o.allowed_gids = {7};
  PeerPolicy policy(o);
  ASSERT_OK(policy.Admit(7, 7));
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(policy.Admit(7, 7).ok());
    EXPECT_FALSE(policy.Admit(8, 8).ok());
  }
  EXPECT_EQ(policy.held(7), 1u);
  EXPECT_EQ(policy.held(8), 0u);
  EXPECT_EQ(policy.peers(), 1u);
}

// Regression (issue 11, A): this used to abort the agent.
TEST(PeerPolicyTest, ReleaseWithoutAdmitIsInternalAndChangesNothing) {
  PeerPolicy policy(Limit(1));
  ASSERT_OK(policy.Admit(7, 7));
  EXPECT_THAT(policy.Release(1000),
              StatusIs(absl::StatusCode::kInternal, "uid 1000 released a launcher connection"));
  EXPECT_EQ(policy.held(7), 1u);
  EXPECT_EQ(policy.peers(), 1u);
}

TEST(PeerPolicyTest, ValidateRefusesZeroLimitAndTheNoIdValue) {
  EXPECT_OK(ValidatePeerPolicyOptions(PeerPolicyOptions()));
  EXPECT_THAT(ValidatePeerPolicyOptions(Limit(0)),
              StatusIs(Code::kInvalidArgument, "max_sessions_per_peer: must be at least 1"));
  PeerPolicyOptions uids;
  uids.allowed_uids = {static_cast<uid_t>(-1)};
  EXPECT_THAT(ValidatePeerPolicyOptions(uids),
              StatusIs(Code::kInvalidArgument, "launcher_allowed_uids: 4294967295 is not a uid"));
  PeerPolicyOptions gids;
  gids.allowed_gids = {static_cast<gid_t>(-1)};
  EXPECT_THAT(ValidatePeerPolicyOptions(gids),
              StatusIs(Code::kInvalidArgument, "launcher_allowed_gids: 4294967295 is not a gid"));
}

TEST(ParseIdListTest, ParsesNumbersSkippingEmptyEntriesAndSpaces) {
  absl::StatusOr<std::set<uint32_t>> ids = ParseIdList("f", " 1000, ,0,1000 ,65534,");
  ASSERT_OK(ids);
  EXPECT_THAT(*ids, ElementsAre(0u, 1000u, 65534u));
  ids = ParseIdList("f", "");
  ASSERT_OK(ids);
  EXPECT_THAT(*ids, IsEmpty());
}

TEST(ParseIdListTest, RefusesWhatIsNotANumberNamingTheFieldAndEntry) {
  for (const char* bad : {"abc", "-1", "1000x", "4294967296", "+5", "0x10", "1.5"}) {
    EXPECT_THAT(ParseIdList("launcher_allowed_uids", bad),
                StatusIs(Code::kInvalidArgument,
                         std::string("launcher_allowed_uids: \"") + bad + "\" is not a number"))
        << bad;
  }
  EXPECT_THAT(ParseIdList("launcher_allowed_gids", "4294967295"),
              StatusIs(Code::kInvalidArgument, "launcher_allowed_gids: 4294967295 is not an id"));
}

TEST(ParseIdListTest, NamesGoThroughTheResolver) {
  auto resolve = [](const std::string& name) -> std::optional<uint32_t> {
    if (name == "kvm") return 107;
    return std::nullopt;
  };
  absl::StatusOr<std::set<uint32_t>> ids = ParseIdList("launcher_allowed_gids", "kvm,5", resolve);
  ASSERT_OK(ids);
  EXPECT_THAT(*ids, ElementsAre(5u, 107u));
  EXPECT_THAT(ParseIdList("launcher_allowed_gids", "kvm,nogroup", resolve),
              StatusIs(Code::kInvalidArgument,
                       "launcher_allowed_gids: \"nogroup\" is not a number or a known name"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu

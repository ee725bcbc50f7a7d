// The generated etcd v3 stubs (//third_party/etcd:etcd_cc_grpc) against a real
// single-member etcd on loopback: a put, a txn guarded by a mod_revision, a
// range, and a lease grant. Proves the stubs built from Debian's protos speak
// etcd 3.4's wire protocol; the etcd store (issue 14) and bench/etcd_load
// build on them.
#include <chrono>
#include <memory>
#include <string>

#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/etcd_process.h"

namespace iommu::testing {
namespace {

namespace pb = ::etcdserverpb;

class EtcdSmokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = etcd_.Start();
    ASSERT_TRUE(s.ok()) << s;
    channel_ = grpc::CreateChannel(etcd_.endpoint(), grpc::InsecureChannelCredentials());
    kv_ = pb::KV::NewStub(channel_);
  }

  // A context whose deadline keeps a hung etcd from hanging the test.
  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }

  pb::PutResponse Put(const std::string& key, const std::string& value) {
    pb::PutRequest req;
    req.set_key(key);
    req.set_value(value);
    pb::PutResponse resp;
    grpc::Status s = kv_->Put(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  // Txn: if mod_revision(key) == `revision` then put key=value and
  // other=value, else range key.
  pb::TxnResponse GuardedTxn(const std::string& key, int64_t revision, const std::string& other,
                             const std::string& value) {
    pb::TxnRequest req;
    pb::Compare* cmp = req.add_compare();
    cmp->set_key(key);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(revision);
    for (const std::string& k : {key, other}) {
      pb::PutRequest* put = req.add_success()->mutable_request_put();
      put->set_key(k);
      put->set_value(value);
    }
    req.add_failure()->mutable_request_range()->set_key(key);
    pb::TxnResponse resp;
    grpc::Status s = kv_->Txn(Ctx().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  EtcdProcess etcd_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::KV::Stub> kv_;
};

TEST_F(EtcdSmokeTest, PutThenGuardedTxnThenRangeSeesTheTxnsWrite) {
  const pb::PutResponse put = Put("k", "v1");
  const int64_t put_rev = put.header().revision();
  ASSERT_GT(put_rev, 0);

  const pb::TxnResponse txn = GuardedTxn("k", put_rev, "k2", "v2");
  EXPECT_TRUE(txn.succeeded());
  // Both puts of one txn land at one new revision.
  EXPECT_EQ(txn.header().revision(), put_rev + 1);

  pb::RangeRequest req;
  req.set_key("k");
  req.set_range_end("k3");  // [k, k3): k and k2.
  pb::RangeResponse range;
  grpc::Status s = kv_->Range(Ctx().get(), req, &range);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(range.kvs_size(), 2);
  EXPECT_EQ(range.kvs(0).key(), "k");
  EXPECT_EQ(range.kvs(0).value(), "v2");
  EXPECT_EQ(range.kvs(0).create_revision(), put_rev);
  EXPECT_EQ(range.kvs(0).mod_revision(), put_rev + 1);
  EXPECT_EQ(range.kvs(1).key(), "k2");
  EXPECT_EQ(range.kvs(1).mod_revision(), put_rev + 1);
}

TEST_F(EtcdSmokeTest, TxnWithStaleRevisionTakesTheElseBranchAndWritesNothing) {
  const int64_t first = Put("k", "v1").header().revision();
  Put("k", "v2");

  const pb::TxnResponse txn = GuardedTxn("k", first, "k2", "lost");
  EXPECT_FALSE(txn.succeeded());
  ASSERT_EQ(txn.responses_size(), 1);
  ASSERT_EQ(txn.responses(0).response_range().kvs_size(), 1);
  EXPECT_EQ(txn.responses(0).response_range().kvs(0).value(), "v2");

  pb::RangeRequest req;
  req.set_key("k2");
  pb::RangeResponse range;
  ASSERT_TRUE(kv_->Range(Ctx().get(), req, &range).ok());
  EXPECT_EQ(range.kvs_size(), 0);
}

TEST_F(EtcdSmokeTest, LeaseGrantAndKeyAttachedToIt) {
  std::unique_ptr<pb::Lease::Stub> lease = pb::Lease::NewStub(channel_);
  pb::LeaseGrantRequest grant_req;
  grant_req.set_ttl(60);
  pb::LeaseGrantResponse grant;
  grpc::Status s = lease->LeaseGrant(Ctx().get(), grant_req, &grant);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_NE(grant.id(), 0);
  EXPECT_EQ(grant.ttl(), 60);

  pb::PutRequest put;
  put.set_key("leased");
  put.set_value("x");
  put.set_lease(grant.id());
  pb::PutResponse put_resp;
  ASSERT_TRUE(kv_->Put(Ctx().get(), put, &put_resp).ok());

  pb::LeaseRevokeRequest revoke_req;
  revoke_req.set_id(grant.id());
  pb::LeaseRevokeResponse revoke;
  ASSERT_TRUE(lease->LeaseRevoke(Ctx().get(), revoke_req, &revoke).ok());
  pb::RangeRequest req;
  req.set_key("leased");
  pb::RangeResponse range;
  ASSERT_TRUE(kv_->Range(Ctx().get(), req, &range).ok());
  EXPECT_EQ(range.kvs_size(), 0);  // Revoking the lease deleted its key.
}

}  // namespace
}  // namespace iommu::testing

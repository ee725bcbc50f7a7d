#include "server/open_store.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace iommu {
namespace {

using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::IsEmpty;

StoreOptions Options(absl::string_view store) {
  StoreOptions o;
  absl::StatusOr<StoreSpec> spec = ParseStoreSpec(store, "/var/lib/iommu-broker/broker.db");
  EXPECT_TRUE(spec.ok()) << spec.status();
  if (spec.ok()) o.spec = *spec;
  o.etcd_cert_file = "/etc/etcd-tls/client.crt";
  o.etcd_key_file = "/etc/etcd-tls/client.key";
  o.etcd_ca_file = "/etc/etcd-tls/ca.crt";
  return o;
}

// The etcd client re-reads its files (every --tls-reload-seconds): the
// expiry gauge must follow the files on disk, so that renewing them clears
// the alert without a restart.
TEST(EtcdCertFilesTest, EtcdStoresWatchTheirClientFilesAsReloaded) {
  EXPECT_THAT(EtcdCertFiles(Options("etcd://10.0.0.1:2379")),
              ElementsAre(FieldsAre("etcd_cert", "/etc/etcd-tls/client.crt", true,
                                    "/etc/etcd-tls/client.key"),
                          FieldsAre("etcd_ca", "/etc/etcd-tls/ca.crt", true, "")));
  StoreOptions ca_only = Options("etcd://10.0.0.1:2379");
  ca_only.etcd_cert_file.clear();
  ca_only.etcd_key_file.clear();
  EXPECT_THAT(EtcdCertFiles(ca_only),
              ElementsAre(FieldsAre("etcd_ca", "/etc/etcd-tls/ca.crt", true, "")));
}

TEST(EtcdCertFilesTest, OtherStoresHaveNone) {
  EXPECT_THAT(EtcdCertFiles(Options("")), IsEmpty());
  EXPECT_THAT(EtcdCertFiles(Options("sqlite-kv:/tmp/kv.db")), IsEmpty());
  StoreOptions plaintext = Options("etcd://10.0.0.1:2379");
  plaintext.etcd_cert_file.clear();
  plaintext.etcd_key_file.clear();
  plaintext.etcd_ca_file.clear();
  EXPECT_THAT(EtcdCertFiles(plaintext), IsEmpty());
}

TEST(LeaderValueTest, NameAndAddressRoundTrip) {
  const LeaderInfo leader{"replica-a", "10.0.0.7:7400"};
  EXPECT_EQ(FormatLeaderValue(leader), "replica-a 10.0.0.7:7400");
  EXPECT_EQ(ParseLeaderValue(FormatLeaderValue(leader)), leader);
  // A leader that published no address is known by name only.
  EXPECT_EQ(ParseLeaderValue("replica-b"), (LeaderInfo{"replica-b", ""}));
  EXPECT_EQ(FormatLeaderValue({"replica-b", ""}), "replica-b");
}

}  // namespace
}  // namespace iommu

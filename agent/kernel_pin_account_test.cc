#include "agent/kernel_pin_account.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace iommu {
namespace agent {
namespace {

TEST(KernelPinAccountTest, CountsEveryMappingInFullPerTenantAndInTotal) {
  KernelPinAccount a;
  // The same page mapped twice: the kernel counts it twice.
  a.Add("t-a", 4096);
  a.Add("t-a", 4096);
  a.Add("t-b", 8192);
  EXPECT_EQ(a.tenant_bytes("t-a"), 8192u);
  EXPECT_EQ(a.tenant_bytes("t-b"), 8192u);
  EXPECT_EQ(a.total_bytes(), 16384u);
  EXPECT_EQ(a.tenants(), (std::vector<std::string>{"t-a", "t-b"}));
  a.Remove("t-b", 8192);
  EXPECT_EQ(a.tenant_bytes("t-b"), 0u);
  EXPECT_EQ(a.tenants(), (std::vector<std::string>{"t-a"}));
  EXPECT_EQ(a.total_bytes(), 8192u);
}

TEST(KernelPinAccountTest, UnlimitedByDefault) {
  KernelPinAccount a;
  a.Add("t-a", UINT64_MAX / 2);
  EXPECT_OK(a.CheckMap("t-a", UINT64_MAX / 2, "n1"));
}

TEST(KernelPinAccountTest, RefusesMapPastTheTenantShareNamingTenantBytesAndShare) {
  KernelPinAccount a;
  a.SetLimits(16384, KernelPinAccount::kUnlimited);
  a.Add("t-hostile", 12288);
  EXPECT_OK(a.CheckMap("t-hostile", 4096, "n1"));
  EXPECT_THAT(a.CheckMap("t-hostile", 8192, "n1"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "would make the kernel count 20480 bytes of pins for tenant \"t-hostile\" "
                       "on node n1, past its share of 16384 bytes (--kernel-pin-bytes-per-tenant"));
  EXPECT_OK(a.CheckMap("t-other", 16384, "n1"));
}

TEST(KernelPinAccountTest, RefusesMapPastTheNodeRoom) {
  KernelPinAccount a;
  a.SetLimits(16384, 24576);
  a.Add("t-a", 16384);
  EXPECT_THAT(a.CheckMap("t-b", 12288, "n1"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "would make the kernel count 28672 bytes of pins on node n1, past the "
                       "agent's RLIMIT_MEMLOCK room of 24576 bytes"));
  EXPECT_OK(a.CheckMap("t-b", 8192, "n1"));
}

TEST(KernelPinAccountTest, LoweredShareRefusesNewMapsOnly) {
  KernelPinAccount a;
  a.Add("t-a", 16384);
  a.SetLimits(4096, KernelPinAccount::kUnlimited);
  EXPECT_EQ(a.tenant_bytes("t-a"), 16384u);
  EXPECT_THAT(a.CheckMap("t-a", 4096, "n1"),
              StatusIs(absl::StatusCode::kResourceExhausted, "past its share of 4096 bytes"));
}

TEST(KernelPinAccountTest, HugeSizeDoesNotWrapPastTheBound) {
  KernelPinAccount a;
  a.SetLimits(8192, KernelPinAccount::kUnlimited);
  a.Add("t-a", 4096);
  EXPECT_THAT(a.CheckMap("t-a", UINT64_MAX, "n1"),
              StatusIs(absl::StatusCode::kResourceExhausted, "past its share of 8192 bytes"));
}

}  // namespace
}  // namespace agent
}  // namespace iommu

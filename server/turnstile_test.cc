#include "server/turnstile.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace iommu {
namespace {

TEST(TurnstileTest, AtMostLimitInsideTheOthersWaitThenEnterAsTurnsEnd) {
  Turnstile gate(2);
  auto first = std::make_unique<Turnstile::Turn>(&gate);
  auto second = std::make_unique<Turnstile::Turn>(&gate);
  EXPECT_EQ(gate.inside(), 2);
  std::atomic<int> entered{0};
  std::vector<std::thread> late;
  for (int i = 0; i < 3; ++i) {
    late.emplace_back([&] {
      Turnstile::Turn turn(&gate);
      entered.fetch_add(1);
    });
  }
  while (gate.waiting() < 3) std::this_thread::yield();
  EXPECT_EQ(entered.load(), 0);
  EXPECT_EQ(gate.inside(), 2);
  first.reset();
  second.reset();
  for (std::thread& t : late) t.join();
  EXPECT_EQ(entered.load(), 3);
  EXPECT_EQ(gate.inside(), 0);
  EXPECT_EQ(gate.waiting(), 0);
}

TEST(TurnstileTest, NoLimitNeverWaits) {
  Turnstile gate(0);
  std::vector<std::unique_ptr<Turnstile::Turn>> turns;
  for (int i = 0; i < 100; ++i) turns.push_back(std::make_unique<Turnstile::Turn>(&gate));
  EXPECT_EQ(gate.inside(), 100);
  EXPECT_EQ(gate.waiting(), 0);
}

}  // namespace
}  // namespace iommu

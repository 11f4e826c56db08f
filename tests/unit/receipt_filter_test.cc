#include "core/receipt_filter.h"

#include <gtest/gtest.h>

#include <string>

namespace liaison::broker {
namespace {

std::string Id(int i) { return "01J" + std::to_string(1000000 + i); }

// The guarantee dedupe rests on: no key added is ever answered "no", however
// many generations it takes; and most keys never added are answered "no".
TEST(ReceiptFilterTest, EveryKeyAddedIsAMaybeAndFewOthersAre) {
  ReceiptFilter filter(1000);
  constexpr int kKeys = 100000;
  for (int i = 0; i < kKeys; ++i) filter.Add(i % 3 ? "exit-a" : "health-b", Id(i), 1000 + i);
  EXPECT_EQ(static_cast<size_t>(kKeys), filter.keys());
  EXPECT_GT(filter.generations(), 1u) << "the test must cross generations";
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(filter.MayContain(i % 3 ? "exit-a" : "health-b", Id(i))) << i;
  }
  int maybes = 0;
  for (int i = kKeys; i < 2 * kKeys; ++i) maybes += filter.MayContain("exit-a", Id(i));
  // About 0.8% a generation; a key not added meets every generation.
  EXPECT_LT(maybes, kKeys * 5 / 100) << "false maybes";
  // Ids are unique per sender only: the same id from another sender is
  // another key.
  int other_sender = 0;
  for (int i = 0; i < kKeys; i += 3) other_sender += filter.MayContain("exit-a", Id(i));
  EXPECT_LT(other_sender, kKeys / 3 * 5 / 100);
  // About 10 bits a key, at most twice over as generations double.
  EXPECT_LT(filter.bytes(), static_cast<size_t>(kKeys) * 10 / 8 * 4);
}

TEST(ReceiptFilterTest, AGenerationGoesOnlyOnceAPurgePassedAllOfItsKeys) {
  ReceiptFilter filter(100);
  for (int i = 0; i < 100; ++i) filter.Add("a", Id(i), 1000 + i);  // due 1000..1099: full
  for (int i = 100; i < 150; ++i) filter.Add("a", Id(i), 5000);    // the next generation
  ASSERT_EQ(2u, filter.generations());

  // A purge up to 1098: the newest generation is not all due, so it is
  // not among those the purge may forget.
  uint64_t sealed = filter.Seal(1098);
  filter.Add("a", Id(150), 5000);
  filter.Forget(1098, sealed);  // one key of the first is not yet due
  EXPECT_EQ(2u, filter.generations());
  EXPECT_TRUE(filter.MayContain("a", Id(99)));
  sealed = filter.Seal(1099);
  filter.Forget(1099, sealed);
  EXPECT_EQ(1u, filter.generations());
  EXPECT_EQ(51u, filter.keys());
  for (int i = 100; i <= 150; ++i) EXPECT_TRUE(filter.MayContain("a", Id(i))) << i;
  int maybes = 0;
  for (int i = 0; i < 100; ++i) maybes += filter.MayContain("a", Id(i));
  EXPECT_LT(maybes, 10);

  // A key re-added with a later due time (a resend of a refused batch)
  // outlives its first generation's purge.
  filter.Add("a", Id(0), 9000);
  filter.Forget(5000, filter.Seal(5000));
  EXPECT_TRUE(filter.MayContain("a", Id(0)));
  filter.Forget(9000, filter.Seal(9000));
  EXPECT_EQ(0u, filter.keys());
  EXPECT_FALSE(filter.MayContain("a", Id(0)));
  // And it fills again after being emptied.
  filter.Add("b", Id(1), 10000);
  EXPECT_TRUE(filter.MayContain("b", Id(1)));
}

// What a purge may forget is what the filter held when its batch formed:
// a key added while the purge commits stays, whatever its due time says
// (a clock set back by more than the retention makes a new key look due).
TEST(ReceiptFilterTest, AKeyAddedWhileAPurgeCommitsIsNotForgottenByIt) {
  ReceiptFilter filter(100);
  for (int i = 0; i < 10; ++i) filter.Add("a", Id(i), 500);  // all due by the purge
  const uint64_t sealed = filter.Seal(1000);
  EXPECT_NE(0u, sealed);
  filter.Add("a", Id(10), 900);  // after the clock went back
  filter.Forget(1000, sealed);
  EXPECT_TRUE(filter.MayContain("a", Id(10)));
  EXPECT_EQ(1u, filter.keys());
  // The next purge may forget it.
  filter.Forget(1000, filter.Seal(1000));
  EXPECT_FALSE(filter.MayContain("a", Id(10)));

  // Nothing held when the batch formed: nothing to forget, even what came
  // after.
  const uint64_t none = filter.Seal(2000);
  filter.Add("a", Id(11), 1500);
  filter.Forget(2000, none);
  EXPECT_TRUE(filter.MayContain("a", Id(11)));
}

}  // namespace
}  // namespace liaison::broker

#include "delivery/windows.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace liaison::broker {
namespace {

InFlight Copy(const std::string& sender, const std::string& id, int64_t sent_ms = 0) {
  return {sender, id, sent_ms, "case|CaseReferral"};
}

TEST(DeliveryWindowsTest, TheWindowBoundsWhatIsInFlightAndTheCursorOnlyMovesForward) {
  DeliveryWindows windows(2, 1000);
  EXPECT_EQ(2u, windows.Room("youth"));
  EXPECT_EQ(0, windows.Cursor("youth"));
  windows.Sent("youth", 5, Copy("exit-a", "m1"));
  windows.Sent("youth", 7, Copy("exit-a", "m2"));
  EXPECT_EQ(0u, windows.Room("youth"));
  EXPECT_EQ(7, windows.Cursor("youth"));
  windows.Skip("youth", 6);  // a damaged copy behind the cursor does not move it back
  EXPECT_EQ(7, windows.Cursor("youth"));
  EXPECT_EQ(2u, windows.Room("health"));  // rows are per recipient
}

TEST(DeliveryWindowsTest, AnAckTakesOnlyTheCopyOfItsSenderAndId) {
  DeliveryWindows windows(8, 1000);
  windows.Sent("youth", 1, Copy("exit-a", "same-id"));
  windows.Sent("youth", 2, Copy("exit-b", "same-id"));
  auto acked = windows.TakeAcked("youth", "exit-b", "same-id");
  ASSERT_EQ(1u, acked.copies.size());
  EXPECT_EQ(2, acked.copies[0].first);
  EXPECT_EQ("exit-b", acked.copies[0].second.sender);
  EXPECT_EQ(7u, windows.Room("youth"));
  // Acked once: a second ACK of it names nothing.
  EXPECT_TRUE(windows.TakeAcked("youth", "exit-b", "same-id").copies.empty());
  // Another recipient cannot ack this one's copies.
  EXPECT_TRUE(windows.TakeAcked("health", "exit-a", "same-id").copies.empty());
  EXPECT_EQ(7u, windows.Room("youth"));
}

TEST(DeliveryWindowsTest, AnIdOnlyAckOfAnIdTwoSendersShareAcksNeitherAndSendsOneAtATime) {
  DeliveryWindows windows(8, 1000);
  windows.Sent("youth", 1, Copy("exit-a", "same-id"));
  windows.Sent("youth", 2, Copy("exit-b", "same-id"));
  EXPECT_TRUE(windows.MaySend("youth", "same-id"));  // nobody acked by id alone yet
  auto acked = windows.TakeAcked("youth", "", "same-id");
  EXPECT_TRUE(acked.copies.empty());
  EXPECT_EQ(2u, acked.ambiguous_senders);
  EXPECT_EQ(6u, windows.Room("youth"));  // both still await an ack
  // From now on this recipient gets one copy of an id at a time.
  windows.Reset("youth");
  windows.Sent("youth", 1, Copy("exit-a", "same-id"));
  EXPECT_FALSE(windows.MaySend("youth", "same-id"));
  EXPECT_TRUE(windows.MaySend("youth", "other-id"));
  acked = windows.TakeAcked("youth", "", "same-id");  // unambiguous now
  ASSERT_EQ(1u, acked.copies.size());
  EXPECT_EQ("exit-a", acked.copies[0].second.sender);
  EXPECT_TRUE(windows.MaySend("youth", "same-id"));
  EXPECT_TRUE(windows.MaySend("health", "same-id"));  // only the id-only acker waits
}

TEST(DeliveryWindowsTest, WithdrawnCopiesCanNoLongerBeAcked) {
  DeliveryWindows windows(8, 1000);
  windows.Sent("youth", 3, Copy("exit-a", "m1"));
  windows.Withdraw("youth", 3);
  windows.Withdraw("nobody", 3);  // no row: nothing happens
  EXPECT_TRUE(windows.TakeAcked("youth", "exit-a", "m1").copies.empty());
  EXPECT_EQ(3, windows.Cursor("youth"));  // withdrawn copies are not read again
}

TEST(DeliveryWindowsTest, OverdueWindowsStartAgainAndResetAllReturnsEveryRecipient) {
  DeliveryWindows windows(8, 1000);
  windows.Sent("youth", 1, Copy("exit-a", "m1", /*sent_ms=*/100));
  windows.Sent("youth", 2, Copy("exit-a", "m2", /*sent_ms=*/900));
  windows.Sent("health", 4, Copy("exit-a", "m3", /*sent_ms=*/1000));
  EXPECT_TRUE(windows.Overdue(1100).empty());  // exactly at the timeout: not yet
  auto overdue = windows.Overdue(1101);
  ASSERT_EQ(1u, overdue.size());
  EXPECT_EQ("youth", overdue[0].first);
  EXPECT_EQ(2u, overdue[0].second);
  EXPECT_EQ(0, windows.Cursor("youth"));  // read again from the start, in order
  EXPECT_EQ(8u, windows.Room("youth"));
  EXPECT_EQ(4, windows.Cursor("health"));
  auto all = windows.ResetAll();
  std::sort(all.begin(), all.end());
  EXPECT_EQ((std::vector<std::string>{"health", "youth"}), all);
  EXPECT_EQ(0, windows.Cursor("health"));
}

DeliveryWindows::Fresh FreshCopy(int64_t seq, const std::string& id, size_t bytes = 16) {
  return {seq, "exit-a", id, "case|CaseReferral", std::vector<uint8_t>(bytes, 0x42)};
}

// Committed copies are kept in memory only for a row that read its whole
// queue; everything that rebuilds a row from the store drops them.
TEST(DeliveryWindowsTest, FreshCopiesAreKeptOnlyForARowThatCaughtUp) {
  DeliveryWindows windows(8, 1000);
  windows.Offer("youth", FreshCopy(1, "m1"));  // no row: the store has it
  EXPECT_FALSE(windows.IsCaughtUp("youth"));
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));

  windows.Sent("youth", 3, Copy("exit-a", "m3"));
  windows.CaughtUp("youth");
  EXPECT_TRUE(windows.IsCaughtUp("youth"));
  windows.Offer("youth", FreshCopy(3, "m3"));  // a store read sent it already
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));
  windows.Offer("youth", FreshCopy(4, "m4"));
  windows.Offer("youth", FreshCopy(5, "m5"));
  ASSERT_NE(nullptr, windows.NextFresh("youth"));
  EXPECT_EQ(4, windows.NextFresh("youth")->seq);
  windows.PopFresh("youth");
  EXPECT_EQ(5, windows.NextFresh("youth")->seq);

  // An expired or erased copy that was not sent is not sent at all.
  windows.Withdraw("youth", 5);
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));
  EXPECT_TRUE(windows.IsCaughtUp("youth"));

  // A reconnect, a redelivery or a failed commit reads the store again.
  windows.Offer("youth", FreshCopy(6, "m6"));
  windows.Reset("youth");
  EXPECT_FALSE(windows.IsCaughtUp("youth"));
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));
  windows.CaughtUp("youth");
  windows.Offer("youth", FreshCopy(7, "m7"));
  windows.ResetAll();
  EXPECT_FALSE(windows.IsCaughtUp("youth"));
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));
}

TEST(DeliveryWindowsTest, AnOutOfOrderOrTooLargeBacklogFallsBackToTheStore) {
  DeliveryWindows windows(8, 1000);
  windows.CaughtUp("youth");
  windows.Offer("youth", FreshCopy(10, "m10"));
  windows.Offer("youth", FreshCopy(9, "m9"));  // behind the last fresh one
  EXPECT_FALSE(windows.IsCaughtUp("youth"));
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));

  windows.CaughtUp("youth");
  windows.Offer("youth", FreshCopy(11, "big", size_t{5} << 20));  // past the memory bound
  EXPECT_FALSE(windows.IsCaughtUp("youth"));
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));

  windows.CaughtUp("youth");
  windows.Offer("youth", FreshCopy(12, "m12"));
  windows.Forget("youth");  // e.g. a copy whose seq is not known
  EXPECT_FALSE(windows.IsCaughtUp("youth"));
  EXPECT_EQ(nullptr, windows.NextFresh("youth"));
}

}  // namespace
}  // namespace liaison::broker

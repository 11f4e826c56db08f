// The writer commits a batch off the caller's thread: all of it, or (on any
// failed write) none of it, and the caller learns which.
#include "core/commit.h"
#include "audit/ledger.h"
#include "sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <poll.h>

#include "testing/fixtures.h"

namespace liaison::broker {
namespace {

using testing::TempDir;

store::StoreKey Key() {
  store::StoreKey k;
  k.fill(7);
  return k;
}

store::WriteBatch Batch(const std::string& id, size_t body_bytes) {
  store::WriteBatch b;
  b.copies.push_back({"a", id, "b", "CASE-1", "label", std::vector<uint8_t>(body_bytes, 'x'), 1000, 1000000, 2000000});
  b.receipts.push_back({"a", id, {1, 2, 3}, 2000000});
  b.ledger.emplace_back(1, "record of " + id);
  return b;
}

// Waits (bounded) for the writer's event and takes the result.
std::optional<CommitResult> Result(Committer& c) {
  pollfd p{c.event_fd(), POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) return std::nullopt;
  return c.TakeResult();
}

TEST(CommitterTest, ABatchIsCommittedOnTheWriterThreadAndReportedThroughTheEventFd) {
  TempDir dir;
  auto writer = store::SqliteStore::Open(dir.file("s.db"), Key());
  auto reader = store::SqliteStore::Open(dir.file("s.db"), Key());
  ASSERT_TRUE(writer.ok() && reader.ok());
  auto committer = Committer::Start(writer->get());
  ASSERT_TRUE(committer.ok()) << committer.status().ToString();
  (*committer)->Submit(Batch("m1", 100));
  EXPECT_TRUE((*committer)->busy());
  auto result = Result(**committer);
  ASSERT_TRUE(result.has_value()) << "no result within 5 s";
  EXPECT_TRUE(result->ok()) << result->ToString();
  EXPECT_FALSE((*committer)->busy());
  // Committed: another connection sees all of it.
  auto pending = (*reader)->Pending("b", 0, 10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(1u, pending->size());
  EXPECT_EQ("label", (*pending)[0].label);
  auto receipt = (*reader)->FindReceipt("a", "m1");
  ASSERT_TRUE(receipt.ok() && receipt->has_value());
  auto tail = (*reader)->ReadLedgerTail();
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(std::optional<uint64_t>(1), tail->committed_seq);
}

TEST(CommitterTest, AWriteThatFailsInsideTheBatchCommitsNoneOfIt) {
  TempDir dir;
  // Values over 64 KiB are refused by SQLite: the second copy's write fails.
  auto writer = store::SqliteStore::Open(dir.file("s.db"), Key(), 64 * 1024);
  auto reader = store::SqliteStore::Open(dir.file("s.db"), Key());
  ASSERT_TRUE(writer.ok() && reader.ok());
  auto committer = Committer::Start(writer->get());
  ASSERT_TRUE(committer.ok());
  store::WriteBatch batch = Batch("small", 100);
  batch.copies.push_back(Batch("huge", 200 * 1024).copies[0]);
  (*committer)->Submit(std::move(batch));
  CommitResult result = (*committer)->Wait();
  EXPECT_FALSE(result.ok());
  auto pending = (*reader)->Pending("b", 0, 10);
  ASSERT_TRUE(pending.ok());
  EXPECT_TRUE(pending->empty()) << "a copy of a failed batch was stored";
  auto receipt = (*reader)->FindReceipt("a", "small");
  ASSERT_TRUE(receipt.ok());
  EXPECT_FALSE(receipt->has_value()) << "a receipt of a failed batch was stored";
  auto tail = (*reader)->ReadLedgerTail();
  ASSERT_TRUE(tail.ok());
  EXPECT_FALSE(tail->committed_seq.has_value()) << "a ledger record of a failed batch was stored";

  // The writer goes on: the next batch commits.
  (*committer)->Submit(Batch("next", 100));
  EXPECT_TRUE((*committer)->Wait().ok());
}

// The ledger's records are sealed on the writer's thread and committed with
// the batch: the store holds exactly the lines the file got.
TEST(CommitterTest, TheLedgerRecordsAreWrittenByTheWriterAndCommittedWithTheBatch) {
  TempDir dir;
  ASSERT_TRUE(audit::WriteSigningKey(dir.path().string(), "sign").ok());
  auto writer = store::SqliteStore::Open(dir.file("s.db"), Key());
  auto reader = store::SqliteStore::Open(dir.file("s.db"), Key());
  ASSERT_TRUE(writer.ok() && reader.ok());
  auto ledger = audit::Ledger::Open(dir.file("ledger.jsonl"), *audit::LoadSigningKey(dir.file("sign.key")),
                                    audit::DeriveCaseKey("s"), 1000);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  auto committer = Committer::Start(writer->get());
  ASSERT_TRUE(committer.ok());
  for (int i = 0; i < 3; ++i) {
    audit::Entry e;
    e.message_id = "m" + std::to_string(i);
    e.sender = "a";
    e.recipient = "b";
    (*ledger)->Add(e);
  }
  store::WriteBatch batch = Batch("m0", 100);
  batch.ledger.clear();
  (*committer)->Submit(std::move(batch), {ledger->get(), (*ledger)->TakeBatch(), /*checkpoint=*/true});
  CommitResult result = (*committer)->Wait();
  ASSERT_TRUE(result.ok()) << result.ToString();
  EXPECT_TRUE(result.ledger_written);
  EXPECT_FALSE(result.ledger_failed);
  (*ledger)->Keep();
  EXPECT_EQ(4u, (*ledger)->last_seq()) << "three records and a checkpoint";
  auto tail = (*reader)->ReadLedgerTail();
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(std::optional<uint64_t>(4), tail->committed_seq);
  ASSERT_EQ(4u, tail->lines.size());
  auto report = audit::VerifyLedger(dir.file("ledger.jsonl"), audit::LoadVerifyKey(dir.file("sign.pub"))->get());
  EXPECT_TRUE(report.ok) << report.Summary();
}

// Fail closed: a ledger that cannot be written stores nothing of the batch.
TEST(CommitterTest, ABatchWhoseLedgerCannotBeWrittenStoresNothing) {
  TempDir dir;
  ASSERT_TRUE(audit::WriteSigningKey(dir.path().string(), "sign").ok());
  auto writer = store::SqliteStore::Open(dir.file("s.db"), Key());
  auto reader = store::SqliteStore::Open(dir.file("s.db"), Key());
  ASSERT_TRUE(writer.ok() && reader.ok());
  // /dev/full refuses every write with ENOSPC: a real full disk.
  auto ledger = audit::Ledger::Open("/dev/full", *audit::LoadSigningKey(dir.file("sign.key")),
                                    audit::DeriveCaseKey("s"), 1000);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  auto committer = Committer::Start(writer->get());
  ASSERT_TRUE(committer.ok());
  audit::Entry e;
  e.message_id = "m";
  (*ledger)->Add(e);
  store::WriteBatch batch = Batch("m", 100);
  batch.ledger.clear();
  (*committer)->Submit(std::move(batch), {ledger->get(), (*ledger)->TakeBatch(), false});
  CommitResult result = (*committer)->Wait();
  EXPECT_FALSE(result.ok());
  EXPECT_TRUE(result.ledger_failed);
  EXPECT_FALSE(result.ledger_written);
  EXPECT_NE(std::string::npos, result.status.message().find("No space left")) << result.ToString();
  auto pending = (*reader)->Pending("b", 0, 10);
  ASSERT_TRUE(pending.ok());
  EXPECT_TRUE(pending->empty()) << "a copy was stored although its ledger record was not written";
  auto receipt = (*reader)->FindReceipt("a", "m");
  ASSERT_TRUE(receipt.ok());
  EXPECT_FALSE(receipt->has_value());
  EXPECT_EQ(0u, (*ledger)->last_seq());
}

}  // namespace
}  // namespace liaison::broker

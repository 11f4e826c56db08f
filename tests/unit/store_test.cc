#include "sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "testing/fixtures.h"

namespace liaison::store {
namespace {

using testing::TempDir;

StoreKey Key(uint8_t fill) {
  StoreKey k;
  k.fill(fill);
  return k;
}

TEST(StoreTest, QueuesInOrderAcksAndDedupes) {
  TempDir dir;
  auto s = SqliteStore::Open(dir.file("s.db"), Key(1));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  SqliteStore& store = **s;
  ASSERT_TRUE(store.Begin().ok());
  const std::string body = "secret referral body";
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store.Enqueue("a", "m" + std::to_string(i), "b", "CASE-1",
                              reinterpret_cast<const uint8_t*>(body.data()), body.size(), 1000,
                              1000000, 2000000).ok());
  }
  ASSERT_TRUE(store.PutReceipt("a", "m0", {1, 2, 3}, 2000000).ok());
  ASSERT_TRUE(store.Commit().ok());

  auto pending = store.Pending("b", 0, 10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(3u, pending->size());
  EXPECT_EQ("m0", (*pending)[0].message_id);
  EXPECT_EQ(body, std::string((*pending)[2].envelope.begin(), (*pending)[2].envelope.end()));
  EXPECT_LT((*pending)[0].seq, (*pending)[1].seq);
  EXPECT_EQ(1u, store.Pending("b", (*pending)[1].seq, 10)->size());

  auto receipt = store.FindReceipt("a", "m0");
  ASSERT_TRUE(receipt.ok() && receipt->has_value());
  EXPECT_EQ((std::vector<uint8_t>{1, 2, 3}), **receipt);
  EXPECT_FALSE(store.FindReceipt("a", "m1")->has_value());

  ASSERT_TRUE(store.Begin().ok());
  const int64_t seq1 = (*pending)[1].seq;
  EXPECT_FALSE(store.Ack("c", seq1, 2000)->has_value());  // not c's message
  auto sender = store.Ack("b", seq1, 2000);
  ASSERT_TRUE(sender.ok());
  EXPECT_EQ("a", sender->value().sender);
  EXPECT_FALSE(store.Ack("b", seq1, 2000)->has_value());  // twice is harmless
  ASSERT_TRUE(store.Commit().ok());
  EXPECT_EQ(2, store.QueueDepths()->at("b"));
  EXPECT_EQ(std::vector<std::string>{"b"}, *store.Disclosures("a", "CASE-1"));
  EXPECT_TRUE(store.Disclosures("a", "CASE-2")->empty());
}

// The ledger's records commit with their batch, or not at all; the store
// keeps them until the ledger file has them on disk.
TEST(StoreTest, LedgerRecordsCommitWithTheBatchOrNotAtAll) {
  TempDir dir;
  auto s = SqliteStore::Open(dir.file("s.db"), Key(1));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  SqliteStore& store = **s;
  auto tail = store.ReadLedgerTail();
  ASSERT_TRUE(tail.ok());
  EXPECT_FALSE(tail->committed_seq.has_value()) << "a new store has committed no record";

  ASSERT_TRUE(store.Begin().ok());
  ASSERT_TRUE(store.AppendLedger({{1, "one"}}).ok());
  ASSERT_TRUE(store.AppendLedger({{2, "two"}}).ok());
  ASSERT_TRUE(store.Commit().ok());
  ASSERT_TRUE(store.Begin().ok());
  ASSERT_TRUE(store.AppendLedger({{3, "three"}}).ok());
  store.Rollback();  // a batch that failed

  tail = store.ReadLedgerTail();
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(std::optional<uint64_t>(2), tail->committed_seq);
  ASSERT_EQ(2u, tail->lines.size());
  EXPECT_EQ("two", tail->lines[1].second);

  ASSERT_TRUE(store.Begin().ok());
  ASSERT_TRUE(store.AppendLedger({{3, "three"}, {4, "four"}}).ok());
  ASSERT_TRUE(store.TrimLedger(2).ok());
  ASSERT_TRUE(store.Commit().ok());
  s->reset();
  auto reopened = SqliteStore::Open(dir.file("s.db"), Key(1));
  ASSERT_TRUE(reopened.ok());
  tail = (*reopened)->ReadLedgerTail();
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(std::optional<uint64_t>(4), tail->committed_seq);
  ASSERT_EQ(2u, tail->lines.size());
  EXPECT_EQ((std::pair<uint64_t, std::string>(3, "three")), tail->lines[0]);
  EXPECT_EQ((std::pair<uint64_t, std::string>(4, "four")), tail->lines[1]);
}

TEST(StoreTest, ContentsAreEncryptedAtRest) {
  TempDir dir;
  {
    auto s = SqliteStore::Open(dir.file("s.db"), Key(2));
    ASSERT_TRUE((*s)->Begin().ok());
    const std::string body = "MARKER-Amani-Example-0042";
    ASSERT_TRUE((*s)->Enqueue("a", "m", "b", "CASE-SECRET-REF", reinterpret_cast<const uint8_t*>(body.data()),
                              body.size(), 1, 100000, 100000).ok());
    ASSERT_TRUE((*s)->Commit().ok());
  }
  std::string raw;
  for (const char* f : {"s.db", "s.db-wal"}) raw += testing::ReadText(dir.file(f));
  EXPECT_EQ(std::string::npos, raw.find("MARKER-Amani"));
  EXPECT_EQ(std::string::npos, raw.find("CASE-SECRET-REF"));
}

TEST(StoreTest, ExpiresErasesAndPurges) {
  TempDir dir;
  auto s = SqliteStore::Open(dir.file("s.db"), Key(3));
  SqliteStore& store = **s;
  ASSERT_TRUE(store.Begin().ok());
  const uint8_t b[] = {1};
  ASSERT_TRUE(store.Enqueue("a", "soon", "b", "C1", b, 1, 0, 100, 500).ok());
  ASSERT_TRUE(store.Enqueue("a", "later", "b", "C1", b, 1, 0, 10000, 20000).ok());
  ASSERT_TRUE(store.Enqueue("a", "other", "c", "C2", b, 1, 0, 10000, 20000).ok());
  auto expired = store.ExpireDue(200);
  ASSERT_TRUE(expired.ok());
  ASSERT_EQ(1u, expired->size());
  EXPECT_EQ("soon", (*expired)[0].message_id);
  auto erased = store.EraseQueued("a", "C1");  // "later": undelivered, removed
  ASSERT_TRUE(erased.ok());
  ASSERT_EQ(1u, erased->size());
  EXPECT_EQ("later", (*erased)[0].message_id);
  EXPECT_TRUE(store.Pending("b", 0, 10)->empty());
  EXPECT_EQ(1u, store.Pending("c", 0, 10)->size());
  EXPECT_EQ(1, *store.PurgeDue(1000));   // "soon": expired and past its retention
  EXPECT_EQ(1, *store.PurgeDue(30000));  // "later": erased; "other" is still queued, so kept
  ASSERT_TRUE(store.Commit().ok());
}

TEST(StoreTest, WrongKeyIsRefused) {
  TempDir dir;
  { ASSERT_TRUE(SqliteStore::Open(dir.file("s.db"), Key(4)).ok()); }
  auto wrong = SqliteStore::Open(dir.file("s.db"), Key(5));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(std::string::npos, wrong.status().message().find("store key does not match"));
  EXPECT_TRUE(SqliteStore::Open(dir.file("s.db"), Key(4)).ok());
}

TEST(StoreTest, ACorruptFileIsAClearError) {
  TempDir dir;
  testing::WriteText(dir.file("s.db"), std::string(8192, 'x'));
  auto s = SqliteStore::Open(dir.file("s.db"), Key(6));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string::npos, s.status().message().find("s.db")) << s.status().message();
  EXPECT_NE(std::string::npos, s.status().message().find("backup")) << s.status().message();
}

TEST(StoreTest, UnwritableLocationIsAClearError) {
  auto s = SqliteStore::Open("/nonexistent-dir/liaison.db", Key(7));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string::npos, s.status().message().find("/nonexistent-dir/liaison.db"));
}

}  // namespace
}  // namespace liaison::store

namespace liaison::store {
namespace {

TEST(StoreDamageTest, AMessageThatDoesNotDecryptIsSetAsideNotBlocking) {
  testing::TempDir dir;
  {
    auto s = SqliteStore::Open(dir.file("s.db"), Key(9));
    ASSERT_TRUE((*s)->Begin().ok());
    const uint8_t b[] = {1, 2, 3};
    for (const char* id : {"first", "second"}) {
      ASSERT_TRUE((*s)->Enqueue("a", id, "b", "C", b, 3, 0, 1LL << 50, 1LL << 50).ok());
    }
    ASSERT_TRUE((*s)->Commit().ok());
  }
  {
    // Damage the first message's ciphertext in place.
    sqlite3* db = nullptr;
    ASSERT_EQ(SQLITE_OK, sqlite3_open(dir.file("s.db").c_str(), &db));
    ASSERT_EQ(SQLITE_OK, sqlite3_exec(db,
                                      "UPDATE bodies SET sealed = zeroblob(40) "
                                      "WHERE seq = (SELECT seq FROM messages WHERE message_id = 'first')",
                                      nullptr, nullptr, nullptr));
    sqlite3_close(db);
  }
  auto s = SqliteStore::Open(dir.file("s.db"), Key(9));
  auto pending = (*s)->Pending("b", 0, 10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(1u, pending->size());
  EXPECT_EQ("second", (*pending)[0].message_id);
  EXPECT_EQ(1, (*s)->QueueDepths()->at("b"));  // set aside: no longer queued
}

int64_t CountRows(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

TEST(StoreLayoutTest, ADeliveredCopyIsDroppedAndOlderStoresCopiesMoveToTheirTableAtOpen) {
  testing::TempDir dir;
  const std::string path = dir.file("s.db");
  const std::string text = "a 2 KiB referral, here shorter";
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  {
    auto s = SqliteStore::Open(path, Key(11));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    ASSERT_TRUE((*s)->Begin().ok());
    for (const char* id : {"m1", "m2", "m3"}) {
      ASSERT_TRUE((*s)->Enqueue("a", id, "b", "C", bytes, text.size(), 0, 1LL << 50, 1LL << 50).ok());
    }
    // A resend of a queued copy adds no second body.
    ASSERT_TRUE((*s)->Enqueue("a", "m1", "b", "C", bytes, text.size(), 0, 1LL << 50, 1LL << 50).ok());
    ASSERT_TRUE((*s)->Commit().ok());
    EXPECT_EQ(3, CountRows(path, "SELECT COUNT(*) FROM bodies"));
    auto pending = (*s)->Pending("b", 0, 10);
    ASSERT_TRUE(pending.ok());
    ASSERT_EQ(3u, pending->size());
    ASSERT_TRUE((*s)->Begin().ok());
    auto acked = (*s)->Ack("b", (*pending)[0].seq, 5);
    ASSERT_TRUE(acked.ok() && acked->has_value());
    ASSERT_TRUE((*s)->Commit().ok());
    EXPECT_EQ(2, CountRows(path, "SELECT COUNT(*) FROM bodies"));  // delivered: its copy is gone
  }
  {
    // The layout of stores made before: each copy in its message's row.
    sqlite3* db = nullptr;
    ASSERT_EQ(SQLITE_OK, sqlite3_open(path.c_str(), &db));
    ASSERT_EQ(SQLITE_OK, sqlite3_exec(db,
                                      "UPDATE messages SET sealed = (SELECT sealed FROM bodies "
                                      "WHERE bodies.seq = messages.seq); DELETE FROM bodies;",
                                      nullptr, nullptr, nullptr));
    sqlite3_close(db);
  }
  auto s = SqliteStore::Open(path, Key(11));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(2, CountRows(path, "SELECT COUNT(*) FROM bodies"));
  EXPECT_EQ(0, CountRows(path, "SELECT COUNT(*) FROM messages WHERE sealed IS NOT NULL"));
  auto pending = (*s)->Pending("b", 0, 10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(2u, pending->size());
  EXPECT_EQ("m2", (*pending)[0].message_id);
  EXPECT_EQ(text, std::string((*pending)[1].envelope.begin(), (*pending)[1].envelope.end()));
}

// SQLite refuses a value past SQLITE_LIMIT_LENGTH at bind time; an unchecked
// bind left NULL in its place and the INSERT stored an empty row that the
// broker had answered "stored" (issue 15). Now the write fails.
TEST(StoreFaultTest, AValueSqliteRefusesFailsTheWriteInsteadOfStoringAnEmptyRow) {
  testing::TempDir dir;
  auto s = SqliteStore::Open(dir.file("s.db"), Key(10), /*max_value_bytes=*/4096);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  SqliteStore& store = **s;
  const std::string small = "fits";
  const std::string big(8192, 'x');
  ASSERT_TRUE(store.Begin().ok());
  ASSERT_TRUE(store.Enqueue("a", "small", "b", "CASE-1", reinterpret_cast<const uint8_t*>(small.data()),
                            small.size(), 1000, 1000000, 2000000).ok());
  Status st = store.Enqueue("a", "big", "b", "CASE-1", reinterpret_cast<const uint8_t*>(big.data()),
                            big.size(), 1000, 1000000, 2000000);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string::npos, st.message().find("queueing a message")) << st.ToString();
  EXPECT_EQ(std::string::npos, st.message().find("xxxx")) << "no value in the error";
  EXPECT_FALSE(store.PutReceipt("a", "big", std::vector<uint8_t>(8192, 1), 2000000).ok());
  EXPECT_FALSE(store.AddNotice("a", std::vector<uint8_t>(8192, 1)).ok());
  store.Rollback();  // as the reactor does with a failed batch
  auto pending = store.Pending("b", 0, 10);
  ASSERT_TRUE(pending.ok());
  EXPECT_TRUE(pending->empty());
  EXPECT_FALSE(store.FindReceipt("a", "big")->has_value());
}

// The broker's writer leaves copying the WAL into the database file to the
// store's own checkpointer thread: the file fills while the writer only
// commits, and everything committed reads back after a reopen.
TEST(StoreTest, BackgroundCheckpointsMoveTheWalIntoTheFile) {
  TempDir dir;
  const std::string path = dir.file("s.db");
  {
    auto s = SqliteStore::Open(path, Key(12), 0, /*background_checkpoints=*/true);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    struct stat before {};
    ASSERT_EQ(0, ::stat(path.c_str(), &before));
    // 2,000 copies of 4 KiB: some 3,000 pages, below the checkpointer's wake
    // size: its one-second timer copies them (a lightly loaded store's WAL stays small).
    for (int b = 0; b < 20; ++b) {
      WriteBatch batch;
      for (int i = 0; i < 100; ++i) {
        const std::string id = "m" + std::to_string(b * 100 + i);
        batch.copies.push_back({"a", id, "b", "CASE-1", "", std::vector<uint8_t>(4096, 'x'), 1000, 1000000, 2000000});
      }
      { auto st = (*s)->Apply(batch); ASSERT_TRUE(st.ok()) << st.ToString(); }
    }
    struct stat after {};
    for (int i = 0; i < 100; ++i) {  // at most 10 s
      ASSERT_EQ(0, ::stat(path.c_str(), &after));
      if (after.st_size > before.st_size + 4 * 1024 * 1024) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_GT(after.st_size, before.st_size + 4 * 1024 * 1024) << "the WAL was not copied into the file";
  }
  auto reopened = SqliteStore::Open(path, Key(12));
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  auto depths = (*reopened)->QueueDepths();
  ASSERT_TRUE(depths.ok());
  EXPECT_EQ(2000, (*depths)["b"]);
}

// Every backend seals copies the same way: a copy opens only under its key
// and only as the copy of its own (sender, id, recipient).
TEST(StoreTest, SealedCopiesOpenOnlyAsTheirOwnRowUnderTheirKey) {
  const std::string body = "referral body";
  const auto* data = reinterpret_cast<const uint8_t*>(body.data());
  auto sealed = Seal(Key(20), CopyAad("exit-a", "m-1", "youth-b"), data, body.size());
  ASSERT_TRUE(sealed.has_value());
  auto opened = Unseal(Key(20), CopyAad("exit-a", "m-1", "youth-b"), sealed->data(), sealed->size());
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(body, std::string(opened->begin(), opened->end()));
  EXPECT_FALSE(Unseal(Key(21), CopyAad("exit-a", "m-1", "youth-b"), sealed->data(), sealed->size()));
  EXPECT_FALSE(Unseal(Key(20), CopyAad("exit-a", "m-1", "health-c"), sealed->data(), sealed->size()));
  EXPECT_FALSE(Unseal(Key(20), CopyAad("exit-a", "m-2", "youth-b"), sealed->data(), sealed->size()));
  (*sealed)[sealed->size() / 2] ^= 1;
  EXPECT_FALSE(Unseal(Key(20), CopyAad("exit-a", "m-1", "youth-b"), sealed->data(), sealed->size()));
  // The case hash is keyed: another store key files the case elsewhere.
  EXPECT_EQ(16u, CaseHash(Key(20), "exit-a", "case-1").size());
  EXPECT_NE(CaseHash(Key(20), "exit-a", "case-1"), CaseHash(Key(21), "exit-a", "case-1"));
  EXPECT_NE(CaseHash(Key(20), "exit-a", "case-1"), CaseHash(Key(20), "exit-b", "case-1"));
}

// A new store has 8 KiB pages (three sealed 2 KiB copies share one; see
// kPageSize); a store made with SQLite's default 4 KiB keeps its pages and
// works as before: queues, acks and the reopen.
TEST(StoreTest, ANewStoreHas8KiBPagesAndAnOlderStoreKeepsItsOwn) {
  TempDir dir;
  auto page_size = [](const std::string& path) {
    sqlite3* db = nullptr;
    int64_t size = -1;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_stmt* q = nullptr;
      if (sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &q, nullptr) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
        size = sqlite3_column_int64(q, 0);
      }
      sqlite3_finalize(q);
    }
    sqlite3_close(db);
    return size;
  };
  const std::string fresh = dir.file("new.db");
  {
    auto s = SqliteStore::Open(fresh, Key(1));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
  }
  EXPECT_EQ(8192, page_size(fresh));

  const std::string older = dir.file("older.db");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(SQLITE_OK, sqlite3_open_v2(older.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr));
    ASSERT_EQ(SQLITE_OK, sqlite3_exec(db, "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; "
                                          "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
                                      nullptr, nullptr, nullptr));
    sqlite3_close(db);
  }
  const std::string body(2048, 'x');
  for (int round = 0; round < 2; ++round) {
    auto s = SqliteStore::Open(older, Key(1));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    SqliteStore& store = **s;
    ASSERT_TRUE(store.Begin().ok());
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(store.Enqueue("a", "m" + std::to_string(round) + "-" + std::to_string(i), "b", "CASE-1",
                                reinterpret_cast<const uint8_t*>(body.data()), body.size(), 1000, 1000000, 2000000)
                      .ok());
    }
    ASSERT_TRUE(store.Commit().ok());
    auto pending = store.Pending("b", 0, 100);
    ASSERT_TRUE(pending.ok()) << pending.status().ToString();
    ASSERT_EQ(10u, pending->size());  // the round before's were acked
    EXPECT_EQ(body, std::string((*pending)[9].envelope.begin(), (*pending)[9].envelope.end()));
    ASSERT_TRUE(store.Begin().ok());
    for (const auto& m : *pending) ASSERT_TRUE(store.Ack("b", m.seq, 2000).ok());
    ASSERT_TRUE(store.Commit().ok());
  }
  EXPECT_EQ(4096, page_size(older));
}

// The periodic purge (every minute, inside the writer's transaction) and the
// notices' reads find their rows through an index: a scan would read every
// row kept for the retention period and hold up every sender's commit. The
// statements are the store's own (sqlite_store.cc); the plan is SQLite's.
TEST(StoreTest, ThePurgeAndTheNoticesDoNotScanTheirTables) {
  TempDir dir;
  const std::string path = dir.file("s.db");
  {
    auto s = SqliteStore::Open(path, Key(1));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(SQLITE_OK, sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr));
  for (const char* sql : {"SELECT seq FROM messages WHERE state <> 0 AND purge_after_ms <= 1",
                          "DELETE FROM messages WHERE state <> 0 AND purge_after_ms <= 1",
                          "DELETE FROM receipts WHERE purge_after_ms <= 1",
                          "SELECT seq, receipt FROM notices WHERE agency = 'a' ORDER BY seq LIMIT 10"}) {
    sqlite3_stmt* plan = nullptr;
    ASSERT_EQ(SQLITE_OK, sqlite3_prepare_v2(db, (std::string("EXPLAIN QUERY PLAN ") + sql).c_str(), -1, &plan,
                                            nullptr))
        << sqlite3_errmsg(db);
    std::string steps;
    while (sqlite3_step(plan) == SQLITE_ROW) {
      steps += reinterpret_cast<const char*>(sqlite3_column_text(plan, 3));
      steps += "; ";
    }
    sqlite3_finalize(plan);
    EXPECT_NE(std::string::npos, steps.find("USING")) << sql << ": " << steps;
    EXPECT_EQ(std::string::npos, steps.find("SCAN")) << sql << ": " << steps;
  }
  sqlite3_close(db);
}

// What the core does per message reads the queues through indexes that hold
// only queued (or set-aside) copies, and the case index has no state: an ack
// (state 0 -> 2) then only removes the copy from two small indexes, instead
// of moving it within three (measured in make bench). A store made with the
// former indexes loses them when it is opened.
TEST(StoreTest, QueuesAreReadThroughIndexesOfQueuedCopiesAndAStoresFormerIndexesGo) {
  TempDir dir;
  const std::string path = dir.file("s.db");
  {
    auto s = SqliteStore::Open(path, Key(1));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(SQLITE_OK, sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr));
  auto sql_rows = [&db](const std::string& sql) {  // db is reopened below
    sqlite3_stmt* q = nullptr;
    EXPECT_EQ(SQLITE_OK, sqlite3_prepare_v2(db, sql.c_str(), -1, &q, nullptr)) << sqlite3_errmsg(db);
    std::string rows;
    while (q && sqlite3_step(q) == SQLITE_ROW) {
      for (int c = 0; c < sqlite3_column_count(q); ++c) {
        const unsigned char* v = sqlite3_column_text(q, c);
        rows += v ? reinterpret_cast<const char*>(v) : "NULL";
        rows += c + 1 < sqlite3_column_count(q) ? "|" : "; ";
      }
    }
    sqlite3_finalize(q);
    return rows;
  };
  // The store's own statements (sqlite_store.cc) and the index each must use.
  const std::pair<const char*, const char*> uses[] = {
      {"SELECT m.seq, m.sender, m.message_id, b.sealed, m.label, m.case_hash, k.epoch, k.wrapped "
       "FROM messages m LEFT JOIN bodies b ON b.seq = m.seq "
       "LEFT JOIN case_keys k ON k.sender = m.sender AND k.case_hash = m.case_hash "
       "WHERE m.recipient = 'r' AND m.state = 0 AND m.seq > 1 ORDER BY m.seq LIMIT 10",
       "messages_queued_by_recipient"},
      {"SELECT seq, sender, message_id, label, state, created_ms FROM messages "
       "WHERE recipient = 'r' AND (state = 0 OR state = 5) ORDER BY seq LIMIT 10",
       "messages_queued_by_recipient"},
      {"SELECT sender, message_id, recipient, label, seq FROM messages WHERE recipient = 'r' AND state = 5 ORDER BY seq",
       "messages_queued_by_recipient"},
      {"SELECT recipient, COUNT(*) FROM messages WHERE state = 0 GROUP BY recipient", "messages_queued_by_recipient"},
      {"SELECT sender, message_id, recipient, label, seq FROM messages WHERE state = 0 AND expires_ms <= 1",
       "messages_queued_by_expiry"},
      {"UPDATE messages SET state = 3 WHERE state = 0 AND expires_ms <= 1", "messages_queued_by_expiry"},
      {"SELECT message_id, recipient, label, seq FROM messages WHERE sender = 's' AND case_hash = x'00' AND state = 0",
       "messages_of_case"},
  };
  for (const auto& [sql, index] : uses) {
    const std::string plan = sql_rows(std::string("EXPLAIN QUERY PLAN ") + sql);
    EXPECT_NE(std::string::npos, plan.find(std::string("INDEX ") + index)) << sql << ": " << plan;
  }
  // The one statement that lists every queue reads the queues' index whole
  // (its size is what is queued), never the table.
  const std::string summaries = sql_rows(
      "EXPLAIN QUERY PLAN SELECT recipient, SUM(state = 0), MIN(CASE WHEN state = 0 THEN created_ms END), "
      "SUM(state = 5) FROM messages WHERE (state = 0 OR state = 5) GROUP BY recipient ORDER BY recipient");
  EXPECT_NE(std::string::npos, summaries.find("INDEX messages_queued_by_recipient")) << summaries;

  // A store of an earlier broker: its indexes are dropped at open.
  sql_rows("CREATE INDEX messages_by_recipient ON messages (recipient, state, seq)");
  sql_rows("CREATE INDEX messages_by_case ON messages (sender, case_hash, state)");
  sql_rows("CREATE INDEX messages_by_expiry ON messages (state, expires_ms)");
  EXPECT_EQ("3; ", sql_rows("SELECT COUNT(*) FROM sqlite_master WHERE name IN "
                            "('messages_by_recipient', 'messages_by_case', 'messages_by_expiry')"));
  sqlite3_close(db);
  {
    auto s = SqliteStore::Open(path, Key(1));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
  }
  ASSERT_EQ(SQLITE_OK, sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr));
  EXPECT_EQ("0; ", sql_rows("SELECT COUNT(*) FROM sqlite_master WHERE name IN "
                            "('messages_by_recipient', 'messages_by_case', 'messages_by_expiry')"));
  EXPECT_EQ("messages_of_case; messages_queued_by_expiry; messages_queued_by_recipient; ",
            sql_rows("SELECT name FROM sqlite_master WHERE type = 'index' AND name IN "
                     "('messages_queued_by_recipient', 'messages_of_case', 'messages_queued_by_expiry') ORDER BY name"));
  sqlite3_close(db);
}

}  // namespace
}  // namespace liaison::store

namespace liaison::store {
namespace {

// The case-key ring (store/case_keys.h): owner-only, opens under its store
// key only, and a rotation staged but never committed (the broker stopped
// between the ring's write and the store's commit) is undone at the store's
// next first batch, keeping the epoch the store is at.
TEST(CaseKeyRingTest, IsOwnerOnlyOpensUnderItsStoreKeyAndSettlesAnUncommittedRotation) {
  testing::TempDir dir;
  const std::string path = dir.file("store.key.ring");
  StoreKey key;
  key.fill(7);
  auto ring = CaseKeyRing::Open(path, key);
  ASSERT_TRUE(ring.ok()) << ring.status().ToString();
  struct stat st {};
  ASSERT_EQ(0, ::stat(path.c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 0777);
  EXPECT_EQ(1u, (*ring)->epoch());
  const auto kek1 = (*ring)->Kek(1);
  ASSERT_TRUE(kek1.has_value());

  StoreKey other;
  other.fill(8);
  auto refused = CaseKeyRing::Open(path, other);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string::npos, refused.status().message().find("store key does not match"))
      << refused.status().ToString();

  CaseKey case_key;
  case_key.fill(3);
  auto staged = (*ring)->Stage({{std::string("a") + '\0' + "hash", case_key}});
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  EXPECT_EQ(2u, staged->epoch);
  // As another process (a restarted broker) reads it: both epochs.
  auto reopened = CaseKeyRing::Open(path, key);
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE((*reopened)->Kek(1).has_value());
  EXPECT_TRUE((*reopened)->Kek(2).has_value());
  // The store never committed epoch 2: it settles the ring back to 1.
  ASSERT_TRUE((*reopened)->Settle(1).ok());
  EXPECT_EQ(1u, (*reopened)->epoch());
  EXPECT_FALSE((*reopened)->Kek(2).has_value());
  EXPECT_EQ(*kek1, *(*reopened)->Kek(1));
  auto settled = CaseKeyRing::Open(path, key);
  ASSERT_TRUE(settled.ok());
  EXPECT_FALSE((*settled)->Kek(2).has_value()) << "the uncommitted KEK is gone from the file too";
  // A ring without the store's epoch is refused with what to do.
  Status lost = (*settled)->Settle(5);
  EXPECT_FALSE(lost.ok());
  EXPECT_NE(std::string::npos, lost.message().find("restore the ring")) << lost.ToString();
}

}  // namespace
}  // namespace liaison::store

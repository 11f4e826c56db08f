// The storage interface's contract (store/store.h), run against every
// backend: the embedded SQLite file and PostgreSQL (a cluster this test
// starts itself, testing/pg_cluster.h). What the core relies on — batches
// durable whole or not at all, queue order, dedupe, the ledger tail, notices,
// set-aside copies, readers seeing only commits — must hold the same on both.
//
// The PostgreSQL instantiation is skipped (GTEST_SKIP, saying why) only when
// the PostgreSQL server programs are not installed.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <tuple>

#include <sqlite3.h>

#include "postgres/pg_store.h"
#include "sqlite/sqlite_store.h"
#include "store/case_keys.h"
#include "testing/fixtures.h"
#include "testing/pg_cluster.h"

namespace liaison::store {
namespace {

using testing::PgCluster;
using testing::TempDir;

StoreKey Key(uint8_t fill) {
  StoreKey k;
  k.fill(fill);
  return k;
}

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

// A stored copy as a backup of the database holds it: its row's names, the
// case key row (if any) and the sealed bytes.
struct RawCopy {
  std::string sender, message_id, recipient, case_hash;
  std::optional<uint64_t> epoch;
  std::vector<uint8_t> wrapped, sealed;
};

// One backend's fresh, empty store location per test.
class SqliteBackend {
 public:
  static constexpr const char* kName = "sqlite";
  // The SQLite store forgets ledger records once the file has them.
  static constexpr bool kKeepsWholeLedger = false;
  std::string Prepare() { return ""; }
  StatusOr<std::unique_ptr<Store>> Open(const StoreKey& key, size_t max_value_bytes = 0,
                                        std::shared_ptr<CaseKeyRing> ring = nullptr) {
    auto s = SqliteStore::Open(dir_.file("s.db"), key, max_value_bytes, false, std::move(ring));
    if (!s.ok()) return s.status();
    return std::unique_ptr<Store>(std::move(*s));
  }
  // Every stored copy, read as a backup holds it (a connection of the
  // test's own).
  std::vector<RawCopy> RawCopies() {
    std::vector<RawCopy> out;
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(dir_.file("s.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sqlite3_errmsg(db);
      sqlite3_close(db);
      return out;
    }
    sqlite3_stmt* q = nullptr;
    EXPECT_EQ(SQLITE_OK, sqlite3_prepare_v2(db, kRawSql, -1, &q, nullptr)) << sqlite3_errmsg(db);
    auto blob = [&](int i) {
      const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(q, i));
      return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(q, i)) : std::vector<uint8_t>();
    };
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
      RawCopy c;
      c.sender = reinterpret_cast<const char*>(sqlite3_column_text(q, 0));
      c.message_id = reinterpret_cast<const char*>(sqlite3_column_text(q, 1));
      c.recipient = reinterpret_cast<const char*>(sqlite3_column_text(q, 2));
      const auto h = blob(3);
      c.case_hash.assign(h.begin(), h.end());
      if (sqlite3_column_type(q, 4) != SQLITE_NULL) c.epoch = static_cast<uint64_t>(sqlite3_column_int64(q, 4));
      c.wrapped = blob(5);
      c.sealed = blob(6);
      out.push_back(std::move(c));
    }
    EXPECT_EQ(SQLITE_DONE, rc) << sqlite3_errmsg(db);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return out;
  }
  static constexpr const char* kRawSql =
      "SELECT m.sender, m.message_id, m.recipient, m.case_hash, k.epoch, k.wrapped, b.sealed FROM messages m "
      "JOIN bodies b ON b.seq = m.seq LEFT JOIN case_keys k ON k.sender = m.sender AND k.case_hash = m.case_hash "
      "ORDER BY m.seq";

 private:
  TempDir dir_;
};

class PostgresBackend {
 public:
  static constexpr const char* kName = "postgresql";
  // The database is the authoritative chain of brokers sharing it
  // (docs/audit.md): it keeps every record.
  static constexpr bool kKeepsWholeLedger = true;
  // Empty, or why the test cannot run.
  std::string Prepare() {
    std::string why;
    PgCluster* cluster = PgCluster::Shared(&why);
    if (!cluster) return why;
    static std::atomic<int> next{0};
    auto url = cluster->CreateDatabase("contract_" + std::to_string(::getpid()) + "_" + std::to_string(next++));
    if (!url.ok()) return "FAIL " + url.status().ToString();
    options_ = {*url, cluster->password()};
    return "";
  }
  StatusOr<std::unique_ptr<Store>> Open(const StoreKey& key, size_t max_value_bytes = 0,
                                        std::shared_ptr<CaseKeyRing> ring = nullptr) {
    auto s = PgStore::Open(options_, key, max_value_bytes, std::move(ring));
    if (!s.ok()) return s.status();
    return std::unique_ptr<Store>(std::move(*s));
  }
  std::vector<RawCopy> RawCopies() {
    std::vector<RawCopy> out;
    const char* keywords[] = {"dbname", "password", nullptr};
    const char* values[] = {options_.url.c_str(), options_.password.c_str(), nullptr};
    PGconn* conn = PQconnectdbParams(keywords, values, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
      ADD_FAILURE() << PQerrorMessage(conn);
      PQfinish(conn);
      return out;
    }
    // Text results; bytea as hex.
    PGresult* r = PQexec(conn,
                         "SELECT m.sender, m.message_id, m.recipient, encode(m.case_hash, 'hex'), k.epoch, "
                         "encode(k.wrapped, 'hex'), encode(b.sealed, 'hex') FROM messages m "
                         "JOIN bodies b ON b.seq = m.seq LEFT JOIN case_keys k ON k.sender = m.sender "
                         "AND k.case_hash = m.case_hash ORDER BY m.seq");
    EXPECT_EQ(PGRES_TUPLES_OK, PQresultStatus(r)) << PQerrorMessage(conn);
    auto unhex = [](const std::string& hex) {
      std::vector<uint8_t> v;
      for (size_t i = 0; i + 1 < hex.size(); i += 2) v.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      return v;
    };
    for (int row = 0; PQresultStatus(r) == PGRES_TUPLES_OK && row < PQntuples(r); ++row) {
      RawCopy c;
      c.sender = PQgetvalue(r, row, 0);
      c.message_id = PQgetvalue(r, row, 1);
      c.recipient = PQgetvalue(r, row, 2);
      const auto h = unhex(PQgetvalue(r, row, 3));
      c.case_hash.assign(h.begin(), h.end());
      if (!PQgetisnull(r, row, 4)) c.epoch = std::stoull(PQgetvalue(r, row, 4));
      c.wrapped = unhex(PQgetvalue(r, row, 5));
      c.sealed = unhex(PQgetvalue(r, row, 6));
      out.push_back(std::move(c));
    }
    PQclear(r);
    PQfinish(conn);
    return out;
  }

 private:
  PgConnectOptions options_;
};

template <typename Backend>
class StoreContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = backend_.Prepare();
    if (why.rfind("FAIL ", 0) == 0) FAIL() << why;
    if (why.find("not found") != std::string::npos) GTEST_SKIP() << Backend::kName << ": " << why;
    ASSERT_EQ("", why) << Backend::kName << " could not start";
  }
  std::unique_ptr<Store> Open(const StoreKey& key = Key(1), size_t max_value_bytes = 0,
                              std::shared_ptr<CaseKeyRing> ring = nullptr) {
    auto s = backend_.Open(key, max_value_bytes, std::move(ring));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }
  Backend backend_;
};

using Backends = ::testing::Types<SqliteBackend, PostgresBackend>;
class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};
TYPED_TEST_SUITE(StoreContractTest, Backends, BackendNames);

WriteBatch::Copy Copy(const std::string& sender, const std::string& id, const std::string& recipient,
                      const std::string& case_ref, const std::string& body, int64_t now_ms = 1000,
                      int64_t expires_ms = 1000000, int64_t purge_after_ms = 2000000) {
  WriteBatch::Copy c;
  c.sender = sender;
  c.message_id = id;
  c.recipient = recipient;
  c.case_ref = case_ref;
  c.label = "pseudonym|CaseUpdate";
  c.envelope = Bytes(body);
  c.now_ms = now_ms;
  c.expires_ms = expires_ms;
  c.purge_after_ms = purge_after_ms;
  return c;
}

// Apply tells the core the seq of each copy it queued (the core feeds
// connected receivers from memory with them), and 0 for one it did not.
TYPED_TEST(StoreContractTest, ApplyGivesTheSeqOfEachCopyItQueued) {
  auto store = this->Open();
  ASSERT_TRUE(store);
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "m0", "b", "CASE-1", "body0"));
  batch.copies.push_back(Copy("a", "m0", "c", "CASE-1", "body0"));
  batch.copies.push_back(Copy("a", "m1", "b", "CASE-1", "body1"));
  std::vector<int64_t> seqs;
  ASSERT_TRUE(store->Apply(batch, &seqs).ok());
  auto b = store->Pending("b", 0, 10, nullptr);
  auto c = store->Pending("c", 0, 10, nullptr);
  ASSERT_TRUE(b.ok() && c.ok());
  ASSERT_EQ(2u, b->size());
  ASSERT_EQ(1u, c->size());
  EXPECT_EQ((std::vector<int64_t>{(*b)[0].seq, (*c)[0].seq, (*b)[1].seq}), seqs);

  WriteBatch again;
  again.copies.push_back(Copy("a", "m1", "b", "CASE-1", "body1"));  // queued already
  again.copies.push_back(Copy("a", "m2", "b", "CASE-1", "body2"));
  ASSERT_TRUE(store->Apply(again, &seqs).ok());
  b = store->Pending("b", 0, 10, nullptr);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(3u, b->size());
  EXPECT_EQ((std::vector<int64_t>{0, (*b)[2].seq}), seqs);
}

TYPED_TEST(StoreContractTest, QueuesInOrderAcksAndDedupes) {
  auto store = this->Open();
  ASSERT_TRUE(store);
  WriteBatch batch;
  for (int i = 0; i < 3; ++i) batch.copies.push_back(Copy("a", "m" + std::to_string(i), "b", "CASE-1", "body" + std::to_string(i)));
  batch.receipts.push_back({"a", "m0", {1, 2, 3}, 2000000});
  ASSERT_TRUE(store->Apply(batch).ok());
  // A resend of the same copy is not queued twice.
  WriteBatch resend;
  resend.copies.push_back(Copy("a", "m0", "b", "CASE-1", "body0"));
  ASSERT_TRUE(store->Apply(resend).ok());

  auto pending = store->Pending("b", 0, 10, nullptr);
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  ASSERT_EQ(3u, pending->size());
  EXPECT_EQ("m0", (*pending)[0].message_id);
  EXPECT_EQ("a", (*pending)[0].sender);
  EXPECT_EQ("pseudonym|CaseUpdate", (*pending)[0].label);
  EXPECT_EQ(Bytes("body2"), (*pending)[2].envelope);
  EXPECT_LT((*pending)[0].seq, (*pending)[1].seq);
  EXPECT_EQ(1u, store->Pending("b", (*pending)[1].seq, 10, nullptr)->size());
  EXPECT_EQ(2u, store->Pending("b", 0, 2, nullptr)->size());

  auto receipt = store->FindReceipt("a", "m0");
  ASSERT_TRUE(receipt.ok() && receipt->has_value());
  EXPECT_EQ((std::vector<uint8_t>{1, 2, 3}), **receipt);
  EXPECT_FALSE(store->FindReceipt("a", "m1")->has_value());
  EXPECT_FALSE(store->FindReceipt("other-sender", "m0")->has_value()) << "ids are unique per sender only";

  WriteBatch acks;
  acks.acks.push_back({"c", (*pending)[1].seq, 2000});  // not c's copy: nothing changes
  acks.acks.push_back({"b", (*pending)[1].seq, 2000});
  acks.acks.push_back({"b", (*pending)[1].seq, 2000});  // twice is harmless
  ASSERT_TRUE(store->Apply(acks).ok());
  EXPECT_EQ(2, store->QueueDepths()->at("b"));
  EXPECT_EQ(std::vector<std::string>{"b"}, *store->Disclosures("a", "CASE-1"));
  EXPECT_TRUE(store->Disclosures("a", "CASE-2")->empty());
}

// A batch's copies are written together (PostgreSQL: one statement of
// arrays); each recipient's queue keeps the batch's order, and many
// receipts are read in one call, by position, with ids unique per sender.
TYPED_TEST(StoreContractTest, ABatchKeepsItsOrderAndManyReceiptsAreFoundAtOnce) {
  auto store = this->Open();
  ASSERT_TRUE(store);
  WriteBatch batch;
  for (int i = 0; i < 200; ++i) {
    batch.copies.push_back(Copy(i % 3 == 0 ? "a" : "x", "m" + std::to_string(i), i % 2 ? "b" : "c", "CASE-1",
                                "body" + std::to_string(i)));
    batch.receipts.push_back({i % 3 == 0 ? "a" : "x", "m" + std::to_string(i), Bytes("r" + std::to_string(i)),
                              2000000});
  }
  ASSERT_TRUE(store->Apply(batch).ok());
  for (const std::string recipient : {"b", "c"}) {
    auto pending = store->Pending(recipient, 0, 1000, nullptr);
    ASSERT_TRUE(pending.ok()) << pending.status().ToString();
    ASSERT_EQ(100u, pending->size());
    for (size_t k = 0; k < pending->size(); ++k) {
      const int i = static_cast<int>(2 * k) + (recipient == "b" ? 1 : 0);
      EXPECT_EQ("m" + std::to_string(i), (*pending)[k].message_id);
      EXPECT_EQ(Bytes("body" + std::to_string(i)), (*pending)[k].envelope);
      if (k > 0) {
        EXPECT_LT((*pending)[k - 1].seq, (*pending)[k].seq);
      }
    }
  }
  auto found = store->FindReceipts({{"a", "m3"}, {"a", "m4"}, {"x", "m4"}, {"a", "m3"}, {"a", "nope"}, {"x", "m199"}});
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_EQ(6u, found->size());
  EXPECT_EQ(Bytes("r3"), (*found)[0].value_or(std::vector<uint8_t>{}));
  EXPECT_FALSE((*found)[1].has_value()) << "m4 is x's, not a's";
  EXPECT_EQ(Bytes("r4"), (*found)[2].value_or(std::vector<uint8_t>{}));
  EXPECT_EQ(Bytes("r3"), (*found)[3].value_or(std::vector<uint8_t>{})) << "a key asked twice is answered twice";
  EXPECT_FALSE((*found)[4].has_value());
  EXPECT_EQ(Bytes("r199"), (*found)[5].value_or(std::vector<uint8_t>{}));
  EXPECT_TRUE(store->FindReceipts({})->empty());
}

// The core's receipt filter is loaded from this scan, a page at a time:
// every stored key once, in key order, with its purge-after time, and a
// purged receipt's key no more.
TYPED_TEST(StoreContractTest, EveryReceiptsKeyIsScannedOnce) {
  auto store = this->Open();
  ASSERT_TRUE(store);
  constexpr int kKeys = 20005;
  WriteBatch batch;
  for (int i = 0; i < kKeys; ++i) {
    // Two senders with the same ids: ids are unique per sender only. One
    // receipt is due early, for the purge below.
    batch.receipts.push_back({i % 2 ? "a" : "b", "m" + std::to_string(i / 2), Bytes("r"), i == 7 ? 50 : 1000000 + i});
  }
  ASSERT_TRUE(store->Apply(batch).ok());
  WriteBatch purge;
  purge.purge_before_ms = 100;
  ASSERT_TRUE(store->Apply(purge).ok());

  std::map<std::pair<std::string, std::string>, std::vector<int64_t>> seen;
  ReceiptKeyCursor after;
  std::pair<std::string, std::string> last;
  int pages = 0;
  for (; pages < 10; ++pages) {
    auto read = store->ScanReceiptKeys(&after, 7000, [&](std::string_view sender, std::string_view id,
                                                         int64_t purge_after) {
      // In key order, page after page (byte order: ASCII keys here).
      std::pair<std::string, std::string> key{std::string(sender), std::string(id)};
      EXPECT_LT(last, key);
      last = key;
      seen[key].push_back(purge_after);
    });
    ASSERT_TRUE(read.ok()) << read.status().ToString();
    EXPECT_EQ(last, std::make_pair(after.sender, after.message_id)) << "the cursor is at the page's last key";
    if (*read < 7000) break;
  }
  EXPECT_EQ(2, pages) << "three pages: 7000, 7000, 6004";
  auto past_the_end = store->ScanReceiptKeys(&after, 7000, [&](std::string_view, std::string_view, int64_t) {
    ADD_FAILURE() << "a key after the last";
  });
  ASSERT_TRUE(past_the_end.ok());
  EXPECT_EQ(0u, *past_the_end);
  EXPECT_EQ(static_cast<size_t>(kKeys - 1), seen.size());
  for (int i = 0; i < kKeys; ++i) {
    auto it = seen.find({i % 2 ? "a" : "b", "m" + std::to_string(i / 2)});
    if (i == 7) {
      EXPECT_EQ(seen.end(), it) << "the purged receipt";
      continue;
    }
    ASSERT_NE(seen.end(), it) << i;
    EXPECT_EQ(std::vector<int64_t>{1000000 + i}, it->second) << i;
  }
}

TYPED_TEST(StoreContractTest, LedgerRecordsCommitWithTheBatchAndSurviveReopening) {
  {
    auto store = this->Open();
    ASSERT_TRUE(store);
    auto tail = store->ReadLedgerTail();
    ASSERT_TRUE(tail.ok());
    EXPECT_FALSE(tail->committed_seq.has_value()) << "a new store has committed no record";
    WriteBatch first;
    first.ledger = {{1, "one"}, {2, "two"}};
    ASSERT_TRUE(store->Apply(first).ok());
    tail = store->ReadLedgerTail();
    ASSERT_TRUE(tail.ok());
    EXPECT_EQ(std::optional<uint64_t>(2), tail->committed_seq);
    ASSERT_EQ(2u, tail->lines.size());
    EXPECT_EQ((std::pair<uint64_t, std::string>(2, "two")), tail->lines[1]);
    WriteBatch second;
    second.ledger = {{3, "three"}, {4, "four"}};
    second.trim_ledger_to = 2;
    ASSERT_TRUE(store->Apply(second).ok());
  }
  auto reopened = this->Open();
  ASSERT_TRUE(reopened);
  auto tail = reopened->ReadLedgerTail();
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(std::optional<uint64_t>(4), tail->committed_seq);
  const size_t kept = TypeParam::kKeepsWholeLedger ? 4 : 2;
  ASSERT_EQ(kept, tail->lines.size());
  EXPECT_EQ((std::pair<uint64_t, std::string>(3, "three")), tail->lines[kept - 2]);
  EXPECT_EQ((std::pair<uint64_t, std::string>(4, "four")), tail->lines[kept - 1]);
}

// A batch is stored whole or not at all: one value too large fails it, and
// nothing else of it — copies, receipts, ledger records — is there after.
TYPED_TEST(StoreContractTest, AFailedBatchStoresNothingOfIt) {
  auto store = this->Open(Key(1), /*max_value_bytes=*/4096);
  ASSERT_TRUE(store);
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "small", "b", "CASE-1", "fits"));
  batch.receipts.push_back({"a", "small", {9}, 2000000});
  batch.ledger = {{1, "record"}};
  batch.copies.push_back(Copy("a", "large", "b", "CASE-1", std::string(8192, 'x')));
  Status st = store->Apply(batch);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(store->Pending("b", 0, 10, nullptr)->empty());
  EXPECT_FALSE(store->FindReceipt("a", "small")->has_value());
  EXPECT_FALSE(store->ReadLedgerTail()->committed_seq.has_value());
  EXPECT_TRUE(store->Disclosures("a", "CASE-1")->empty());
  // The store goes on: the next batch commits.
  WriteBatch next;
  next.copies.push_back(Copy("a", "small", "b", "CASE-1", "fits"));
  ASSERT_TRUE(store->Apply(next).ok());
  EXPECT_EQ(1u, store->Pending("b", 0, 10, nullptr)->size());
}

TYPED_TEST(StoreContractTest, ExpiresErasesAndPurges) {
  auto store = this->Open();
  ASSERT_TRUE(store);
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "soon", "b", "CASE-1", "x", 1000, /*expires=*/5000, /*purge=*/9000));
  batch.copies.push_back(Copy("a", "later", "b", "CASE-2", "y", 1000, /*expires=*/50000, /*purge=*/9000));
  batch.copies.push_back(Copy("a", "case2-c", "c", "CASE-2", "z", 1000, 50000, 9000));
  batch.receipts.push_back({"a", "soon", {1}, 9000});
  ASSERT_TRUE(store->Apply(batch).ok());

  auto due = store->Due(6000);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(1u, due->size());
  EXPECT_EQ("soon", (*due)[0].message_id);
  EXPECT_EQ("b", (*due)[0].recipient);
  EXPECT_EQ("pseudonym|CaseUpdate", (*due)[0].label);

  auto of_case = store->QueuedOfCase("a", "CASE-2");
  ASSERT_TRUE(of_case.ok());
  ASSERT_EQ(2u, of_case->size());
  EXPECT_EQ("a", (*of_case)[0].sender);
  EXPECT_EQ("later", (*of_case)[0].message_id);
  EXPECT_EQ("c", (*of_case)[1].recipient);
  EXPECT_EQ((std::vector<std::string>{"b", "c"}), *store->Disclosures("a", "CASE-2"));

  WriteBatch change;
  change.expired.push_back((*due)[0].seq);
  for (const auto& m : *of_case) change.erased.push_back(m.seq);
  ASSERT_TRUE(store->Apply(change).ok());
  EXPECT_TRUE(store->Pending("b", 0, 10, nullptr)->empty());
  EXPECT_TRUE(store->Due(100000)->empty());
  EXPECT_TRUE(store->QueueDepths()->empty());

  WriteBatch purge;
  purge.purge_before_ms = 10000;
  ASSERT_TRUE(store->Apply(purge).ok());
  EXPECT_FALSE(store->FindReceipt("a", "soon")->has_value());
  EXPECT_TRUE(store->QueueSummaries()->empty());
}

TYPED_TEST(StoreContractTest, NoticesWaitUntilSent) {
  auto store = this->Open();
  ASSERT_TRUE(store);
  WriteBatch batch;
  batch.notices = {{"a", {1}}, {"a", {2}}, {"b", {3}}};
  ASSERT_TRUE(store->Apply(batch).ok());
  auto notices = store->Notices("a", 10);
  ASSERT_TRUE(notices.ok());
  ASSERT_EQ(2u, notices->size());
  EXPECT_EQ(std::vector<uint8_t>{1}, (*notices)[0].receipt);
  EXPECT_EQ(1u, store->Notices("a", 1)->size());
  WriteBatch sent;
  sent.notices_sent.push_back((*notices)[0].seq);
  ASSERT_TRUE(store->Apply(sent).ok());
  notices = store->Notices("a", 10);
  ASSERT_EQ(1u, notices->size());
  EXPECT_EQ(std::vector<uint8_t>{2}, (*notices)[0].receipt);
  EXPECT_EQ(1u, store->Notices("b", 10)->size());
}

// Response deadlines: clocks start with their batch, are due in deadline
// order, fire once, stop when answered (before or after firing), survive
// reopening, and go with the purge.
TYPED_TEST(StoreContractTest, ClocksFireOnceStopWhenAnsweredAndSurviveReopening) {
  auto clock = [](const std::string& id, const std::string& recipient, int64_t due) {
    WriteBatch::ClockStart c;
    c.clock = {"a", id, recipient, "pseud|CaseReferral", /*urgency=*/1, /*started_ms=*/1000, due};
    c.purge_after_ms = 100000;
    return c;
  };
  {
    auto store = this->Open();
    ASSERT_TRUE(store);
    EXPECT_EQ(std::optional<int64_t>(), *store->OldestOpenClock());
    WriteBatch batch;
    batch.clocks_started = {clock("late", "b", 5000), clock("early", "b", 3000), clock("early", "c", 3000),
                            clock("answered", "b", 4000)};
    // Answered in the same batch it started in: never due.
    batch.clocks_answered.push_back({"a", "answered", "b", 1500});
    ASSERT_TRUE(store->Apply(batch).ok());
    EXPECT_TRUE(store->DueClocks(2999, 10)->empty());
    auto due = store->DueClocks(4500, 10);
    ASSERT_TRUE(due.ok()) << due.status().ToString();
    ASSERT_EQ(2u, due->size());
    EXPECT_EQ("early", (*due)[0].message_id);
    EXPECT_EQ("b", (*due)[0].recipient);
    EXPECT_EQ("c", (*due)[1].recipient);
    EXPECT_EQ("pseud|CaseReferral", (*due)[0].label);
    EXPECT_EQ(1, (*due)[0].urgency);
    EXPECT_EQ(1000, (*due)[0].started_ms);
    EXPECT_EQ(3000, (*due)[0].due_ms);
    EXPECT_EQ(1u, store->DueClocks(4500, 1)->size());
    // Fired once: a second firing of the same clock changes nothing, and it
    // is no longer due; answered later, it is no longer open.
    WriteBatch fire;
    fire.clocks_fired = {{"a", "early", "b", 4500}, {"a", "early", "c", 4500}};
    ASSERT_TRUE(store->Apply(fire).ok());
    ASSERT_TRUE(store->Apply(fire).ok());
    EXPECT_TRUE(store->DueClocks(4500, 10)->empty());
    EXPECT_EQ(std::optional<int64_t>(1000), *store->OldestOpenClock());
    WriteBatch late_answer;
    late_answer.clocks_answered.push_back({"a", "early", "b", 6000});
    // A response to no clock (never a referral, or a denied one) is no error.
    late_answer.clocks_answered.push_back({"a", "nothing", "b", 6000});
    ASSERT_TRUE(store->Apply(late_answer).ok());
  }
  auto store = this->Open();
  ASSERT_TRUE(store);
  auto due = store->DueClocks(10000, 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(1u, due->size());
  EXPECT_EQ("late", (*due)[0].message_id);
  // An answered clock does not fire, even when asked to.
  WriteBatch fire;
  fire.clocks_fired = {{"a", "answered", "b", 10000}};
  ASSERT_TRUE(store->Apply(fire).ok());
  EXPECT_EQ(1u, store->DueClocks(10000, 10)->size());
  EXPECT_EQ(std::optional<int64_t>(1000), *store->OldestOpenClock());  // "late" and c's "early"
  WriteBatch purge;
  purge.purge_before_ms = 100000;
  ASSERT_TRUE(store->Apply(purge).ok());
  EXPECT_TRUE(store->DueClocks(200000, 10)->empty());
  EXPECT_EQ(std::optional<int64_t>(), *store->OldestOpenClock());
}

// Case threads: a batch's thread references are found by reference with
// every field as written, survive reopening, are unknown otherwise, and go
// with the purge.
TYPED_TEST(StoreContractTest, ThreadsAreFoundByReferenceSurviveReopeningAndGoWithThePurge) {
  const std::string ref(32, 'a'), root(32, 'b');
  {
    auto store = this->Open();
    ASSERT_TRUE(store);
    WriteBatch batch;
    WriteBatch::ThreadStart t;
    t.thread = {ref, "b", "m1", root, "a", /*handling=*/3, "case-coordination", {"b", "c"}, {"d", "kind:health-service"}, {}};
    t.purge_after_ms = 100000;
    batch.threads.push_back(t);
    batch.threads.push_back(t);  // the same reference again keeps the first row
    ASSERT_TRUE(store->Apply(batch).ok());
  }
  auto store = this->Open();
  ASSERT_TRUE(store);
  auto found = store->FindThread(ref);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_TRUE(found->has_value());
  const Thread& t = **found;
  EXPECT_EQ(ref, t.ref);
  EXPECT_EQ("b", t.holder);
  EXPECT_EQ("m1", t.message_id);
  EXPECT_EQ(root, t.root);
  EXPECT_EQ("a", t.origin);
  EXPECT_EQ(3, t.handling);
  EXPECT_EQ("case-coordination", t.purpose);
  EXPECT_EQ((std::vector<std::string>{"b", "c"}), t.circle);
  EXPECT_EQ((std::vector<std::string>{"d", "kind:health-service"}), t.onward);
  EXPECT_FALSE(store->FindThread(root)->has_value());
  WriteBatch purge;
  purge.purge_before_ms = 100000;
  ASSERT_TRUE(store->Apply(purge).ok());
  EXPECT_FALSE(store->FindThread(ref)->has_value());
}

// Permission grants: kept for the thread's root, so every reference of the
// thread finds them (in order, each once, a later grant keeping one longer);
// they survive reopening and go with the purge.
TYPED_TEST(StoreContractTest, GrantsAreFoundByEveryReferenceOfTheirThreadAndGoWithThePurge) {
  const std::string holder_ref(32, 'a'), origin_ref(32, 'c'), other_ref(32, 'e'), root(32, 'b');
  {
    auto store = this->Open();
    ASSERT_TRUE(store);
    WriteBatch batch;
    WriteBatch::ThreadStart t;
    t.thread = {holder_ref, "b", "m1", root, "a", /*handling=*/3, "", {"b"}, {}, {}};
    t.purge_after_ms = 100000;
    batch.threads.push_back(t);
    t.thread.ref = origin_ref;
    t.thread.holder = "a";
    batch.threads.push_back(t);
    t.thread.ref = other_ref;
    t.thread.root = std::string(32, 'f');
    batch.threads.push_back(t);
    batch.grants.push_back({root, {"d", "c"}, 50000});
    ASSERT_TRUE(store->Apply(batch).ok());
    WriteBatch again;
    again.grants.push_back({root, {"c", "kind:prison-service", "c"}, 200000});
    ASSERT_TRUE(store->Apply(again).ok());
  }
  auto store = this->Open();
  ASSERT_TRUE(store);
  const std::vector<std::string> all = {"c", "d", "kind:prison-service"};
  for (const std::string& ref : {holder_ref, origin_ref}) {
    auto found = store->FindThread(ref);
    ASSERT_TRUE(found.ok()) << found.status().ToString();
    ASSERT_TRUE(found->has_value());
    EXPECT_EQ(all, (*found)->granted);
  }
  EXPECT_TRUE((*store->FindThread(other_ref))->granted.empty());
  // Many at once: each as FindThread finds it, in the order asked (an
  // unknown one too, and one asked twice).
  const std::vector<std::string> refs = {origin_ref, std::string(32, 'x'), other_ref, holder_ref, origin_ref};
  auto many = store->FindThreads(refs);
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  ASSERT_EQ(refs.size(), many->size());
  for (size_t i = 0; i < refs.size(); ++i) {
    auto one = store->FindThread(refs[i]);
    ASSERT_TRUE(one.ok());
    ASSERT_EQ(one->has_value(), (*many)[i].has_value()) << i;
    if (!one->has_value()) continue;
    const Thread& a = **one;
    const Thread& b = *(*many)[i];
    EXPECT_EQ(std::tie(a.ref, a.holder, a.message_id, a.root, a.origin, a.handling, a.purpose, a.circle, a.onward,
                       a.granted),
              std::tie(b.ref, b.holder, b.message_id, b.root, b.origin, b.handling, b.purpose, b.circle, b.onward,
                       b.granted))
        << i;
  }
  EXPECT_TRUE(store->FindThreads({})->empty());
  WriteBatch purge;
  purge.purge_before_ms = 60000;  // d's grant goes; c's was renewed until 200000
  ASSERT_TRUE(store->Apply(purge).ok());
  auto found = store->FindThread(holder_ref);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((std::vector<std::string>{"c", "kind:prison-service"}), (*found)->granted);
}

TYPED_TEST(StoreContractTest, SetAsideCopiesAreListedRequeuedAndPurged) {
  auto store = this->Open();
  ASSERT_TRUE(store);
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "m1", "b", "CASE-1", "one"));
  batch.copies.push_back(Copy("a", "m2", "b", "CASE-1", "two"));
  ASSERT_TRUE(store->Apply(batch).ok());
  auto pending = store->Pending("b", 0, 10, nullptr);
  ASSERT_EQ(2u, pending->size());
  WriteBatch aside;
  aside.set_aside = {(*pending)[0].seq, (*pending)[1].seq};
  ASSERT_TRUE(store->Apply(aside).ok());
  EXPECT_TRUE(store->Pending("b", 0, 10, nullptr)->empty());
  auto summaries = store->QueueSummaries();
  ASSERT_TRUE(summaries.ok());
  ASSERT_EQ(1u, summaries->size());
  EXPECT_EQ("b", (*summaries)[0].recipient);
  EXPECT_EQ(0, (*summaries)[0].queued);
  EXPECT_EQ(2, (*summaries)[0].set_aside);
  auto entries = store->QueueEntries("b", 10);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(2u, entries->size());
  EXPECT_TRUE((*entries)[0].set_aside);
  EXPECT_EQ("CaseUpdate", (*entries)[0].type);
  EXPECT_EQ(2u, store->SetAside("b")->size());

  WriteBatch decide;
  decide.requeued.push_back((*pending)[0].seq);
  decide.purged.push_back((*pending)[1].seq);
  ASSERT_TRUE(store->Apply(decide).ok());
  pending = store->Pending("b", 0, 10, nullptr);
  ASSERT_EQ(1u, pending->size());
  EXPECT_EQ(Bytes("one"), (*pending)[0].envelope) << "a requeued copy keeps its body";
  EXPECT_TRUE(store->SetAside("b")->empty());
  summaries = store->QueueSummaries();
  ASSERT_EQ(1u, summaries->size());
  EXPECT_EQ(1, (*summaries)[0].queued);
  EXPECT_EQ(1000, (*summaries)[0].oldest_created_ms);
  EXPECT_EQ(0, (*summaries)[0].set_aside);
}

// The broker writes through one connection and reads through others.
TYPED_TEST(StoreContractTest, AReaderSeesWhatTheWriterCommitted) {
  auto writer = this->Open();
  auto reader = this->Open();
  ASSERT_TRUE(writer && reader);
  EXPECT_TRUE(reader->Pending("b", 0, 10, nullptr)->empty());
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "m1", "b", "CASE-1", "one"));
  ASSERT_TRUE(writer->Apply(batch).ok());
  auto pending = reader->Pending("b", 0, 10, nullptr);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(1u, pending->size());
  EXPECT_EQ(Bytes("one"), (*pending)[0].envelope);
}

TYPED_TEST(StoreContractTest, AnotherKeyIsRefused) {
  { ASSERT_TRUE(this->Open(Key(4))); }
  auto wrong = this->backend_.Open(Key(5));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(std::string::npos, wrong.status().message().find("key")) << wrong.status().message();
  EXPECT_TRUE(this->backend_.Open(Key(4)).ok());
}



// Erasure that shreds (store/case_keys.h): a case's copies are sealed under
// its own key; shredding it in a batch (after that batch's own copies)
// leaves the rows a backup took before unopenable for that case only, with
// the store key and the current ring; a later copy of the case opens.
TYPED_TEST(StoreContractTest, AShreddedCaseDoesNotOpenFromAnEarlierCopyOfItsRows) {
  TempDir keys;
  auto ring = CaseKeyRing::Open(keys.file("store.key.ring"), Key(1));
  ASSERT_TRUE(ring.ok()) << ring.status().ToString();
  auto writer = this->Open(Key(1), 0, *ring);
  auto reader = this->Open(Key(1), 0, *ring);
  ASSERT_TRUE(writer && reader);
  WriteBatch first;
  first.copies = {Copy("a", "x1", "b", "CASE-X", "x one"), Copy("a", "y1", "b", "CASE-Y", "y one"),
                  Copy("a", "x2", "c", "CASE-X", "x two")};
  ASSERT_TRUE(writer->Apply(first).ok());
  const std::vector<RawCopy> backup = this->backend_.RawCopies();
  ASSERT_EQ(3u, backup.size());
  for (const RawCopy& c : backup) {
    ASSERT_TRUE(c.epoch.has_value()) << c.message_id << " has no case key";
    // Not under the store key: only the case key opens it.
    EXPECT_FALSE(Unseal(Key(1), CopyAad(c.sender, c.message_id, c.recipient), c.sealed.data(), c.sealed.size()));
    EXPECT_TRUE(OpenCopy(ring->get(), Key(1), c.sender, c.message_id, c.recipient, c.case_hash, c.epoch, c.wrapped,
                         c.sealed));
  }
  const uint64_t epoch_before = (*ring)->epoch();

  auto pending = reader->Pending("b", 0, 10, nullptr);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(2u, pending->size());
  WriteBatch erase;
  erase.erased = {(*pending)[0].seq};
  WriteBatch::Copy withdrawal = Copy("a", "x-erase", "b", "CASE-X", "withdrawn");
  withdrawal.case_keyed = false;
  erase.copies = {withdrawal};
  erase.shred = {{"a", "CASE-X"}};
  ASSERT_TRUE(writer->Apply(erase).ok());
  EXPECT_EQ(epoch_before + 1, (*ring)->epoch());

  // The live store: the other case and the withdrawal open; x2 (c's copy
  // of the erased case, still queued) does not.
  std::vector<int64_t> damaged;
  auto b = reader->Pending("b", 0, 10, &damaged);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(2u, b->size());
  EXPECT_EQ("y1", (*b)[0].message_id);
  EXPECT_EQ(Bytes("y one"), (*b)[0].envelope);
  EXPECT_EQ("x-erase", (*b)[1].message_id);
  EXPECT_TRUE(damaged.empty());
  auto c = reader->Pending("c", 0, 10, &damaged);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->empty());
  EXPECT_EQ(1u, damaged.size());

  // The earlier copy of the rows, with the store key and the current ring
  // (and a ring read again from its file, as another process would).
  auto reread = CaseKeyRing::Open(keys.file("store.key.ring"), Key(1));
  ASSERT_TRUE(reread.ok()) << reread.status().ToString();
  for (CaseKeyRing* r : {ring->get(), reread->get()}) {
    EXPECT_FALSE(r->Kek(epoch_before).has_value()) << "the previous epoch's KEK must be destroyed";
    for (const RawCopy& copy : backup) {
      const bool opens = OpenCopy(r, Key(1), copy.sender, copy.message_id, copy.recipient, copy.case_hash, copy.epoch,
                                  copy.wrapped, copy.sealed)
                             .has_value();
      EXPECT_EQ(copy.message_id == "y1", opens) << copy.message_id;
    }
  }

  // A later copy of the same case gets a new key and opens.
  WriteBatch later;
  later.copies = {Copy("a", "x3", "b", "CASE-X", "x three")};
  ASSERT_TRUE(writer->Apply(later).ok());
  auto again = reader->Pending("b", 0, 10, nullptr);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(3u, again->size());
  EXPECT_EQ(Bytes("x three"), (*again)[2].envelope);
}

// A batch that fails destroys no key: its staged epoch is forgotten and
// every copy still opens.
TYPED_TEST(StoreContractTest, AFailedBatchShredsNothing) {
  TempDir keys;
  auto ring = CaseKeyRing::Open(keys.file("store.key.ring"), Key(1));
  ASSERT_TRUE(ring.ok());
  auto writer = this->Open(Key(1), 4096, *ring);
  ASSERT_TRUE(writer);
  WriteBatch first;
  first.copies = {Copy("a", "x1", "b", "CASE-X", "x one"), Copy("a", "y1", "b", "CASE-Y", "y one")};
  ASSERT_TRUE(writer->Apply(first).ok());
  const uint64_t epoch = (*ring)->epoch();
  WriteBatch failing;
  failing.shred = {{"a", "CASE-X"}};
  failing.receipts.push_back({"a", "too-big", std::vector<uint8_t>(8192, 'x'), 1});  // over the store's value cap
  EXPECT_FALSE(writer->Apply(failing).ok());
  EXPECT_EQ(epoch, (*ring)->epoch());
  EXPECT_TRUE((*ring)->Kek(epoch).has_value());
  auto reader = this->Open(Key(1), 0, *ring);
  ASSERT_TRUE(reader);
  std::vector<int64_t> damaged;
  auto b = reader->Pending("b", 0, 10, &damaged);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(2u, b->size());
  EXPECT_TRUE(damaged.empty());
}

// Retention: a case whose last row is purged loses its key like an erased one.
TYPED_TEST(StoreContractTest, APurgedCaseLosesItsKey) {
  TempDir keys;
  auto ring = CaseKeyRing::Open(keys.file("store.key.ring"), Key(1));
  ASSERT_TRUE(ring.ok());
  auto writer = this->Open(Key(1), 0, *ring);
  ASSERT_TRUE(writer);
  WriteBatch first;
  first.copies = {Copy("a", "x1", "b", "CASE-X", "x one", 1000, 1500, 3000),
                  Copy("a", "y1", "b", "CASE-Y", "y one", 1000, 1000000, 2000000)};
  ASSERT_TRUE(writer->Apply(first).ok());
  const std::vector<RawCopy> backup = this->backend_.RawCopies();
  auto pending = writer->Pending("b", 0, 10, nullptr);
  ASSERT_TRUE(pending.ok());
  WriteBatch expire;
  expire.expired = {(*pending)[0].seq};
  ASSERT_TRUE(writer->Apply(expire).ok());
  const uint64_t epoch = (*ring)->epoch();
  WriteBatch purge;
  purge.purge_before_ms = 5000;
  ASSERT_TRUE(writer->Apply(purge).ok());
  EXPECT_EQ(epoch + 1, (*ring)->epoch()) << "the purge destroys x1's case key";
  for (const RawCopy& copy : backup) {
    const bool opens = OpenCopy(ring->get(), Key(1), copy.sender, copy.message_id, copy.recipient, copy.case_hash,
                                copy.epoch, copy.wrapped, copy.sealed)
                           .has_value();
    EXPECT_EQ(copy.message_id == "y1", opens) << copy.message_id;
  }
  // A later copy of the purged case, from the writer that wrote the first
  // (and may remember its key), gets a key the store holds: it opens.
  WriteBatch later;
  later.copies = {Copy("a", "x2", "b", "CASE-X", "x two", 6000, 1000000, 2000000),
                  Copy("a", "y2", "b", "CASE-Y", "y two", 6000, 1000000, 2000000)};
  ASSERT_TRUE(writer->Apply(later).ok());
  auto reader = this->Open(Key(1), 0, *ring);
  ASSERT_TRUE(reader);
  std::vector<int64_t> damaged;
  auto b = reader->Pending("b", 0, 10, &damaged);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_TRUE(damaged.empty());
  ASSERT_EQ(3u, b->size());
  EXPECT_EQ(Bytes("x two"), (*b)[1].envelope);
  EXPECT_EQ(Bytes("y two"), (*b)[2].envelope);
}

// The store's case keys are under a ring's KEK: another ring is refused at
// open, with what to do.
TYPED_TEST(StoreContractTest, AnotherRingIsRefused) {
  TempDir keys;
  auto ring = CaseKeyRing::Open(keys.file("store.key.ring"), Key(1));
  ASSERT_TRUE(ring.ok());
  {
    auto writer = this->Open(Key(1), 0, *ring);
    ASSERT_TRUE(writer);
    WriteBatch first;
    first.copies = {Copy("a", "x1", "b", "CASE-X", "x one")};
    ASSERT_TRUE(writer->Apply(first).ok());
  }
  auto other = CaseKeyRing::Open(keys.file("other.ring"), Key(1));
  ASSERT_TRUE(other.ok());
  auto refused = this->backend_.Open(Key(1), 0, *other);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string::npos, refused.status().message().find("is not this store's")) << refused.status().ToString();
}

// What only the PostgreSQL backend has: its schema version, its connection,
// and how it fails when the server drops it.
class PgStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = backend_.Prepare();
    if (why.find("not found") != std::string::npos) GTEST_SKIP() << "postgresql: " << why;
    ASSERT_EQ("", why);
    cluster_ = PgCluster::Shared(nullptr);
  }
  // A connection of the test's own, for what a broker never does.
  std::string Sql(const std::string& database_url, const std::string& sql) {
    const char* keywords[] = {"dbname", "password", nullptr};
    const char* values[] = {database_url.c_str(), cluster_->password().c_str(), nullptr};
    PGconn* conn = PQconnectdbParams(keywords, values, 1);
    std::string out;
    if (PQstatus(conn) != CONNECTION_OK) {
      ADD_FAILURE() << PQerrorMessage(conn);
    } else {
      PGresult* r = PQexec(conn, sql.c_str());
      const ExecStatusType st = PQresultStatus(r);
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) ADD_FAILURE() << sql << ": " << PQerrorMessage(conn);
      if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
      PQclear(r);
    }
    PQfinish(conn);
    return out;
  }
  // Two stores on one fresh database, as two brokers of one deployment have.
  // Both null (and the test failed) if the database or a store cannot open.
  struct TwoStores {
    std::string url;
    std::unique_ptr<PgStore> a, b;
  };
  TwoStores OpenTwo(const std::string& name) {
    TwoStores two;
    auto url = cluster_->CreateDatabase(name + "_" + std::to_string(::getpid()));
    if (!url.ok()) {
      ADD_FAILURE() << url.status().ToString();
      return two;
    }
    const PgConnectOptions options{*url, cluster_->password()};
    auto a = PgStore::Open(options, Key(1));
    auto b = PgStore::Open(options, Key(1));
    if (!a.ok() || !b.ok()) {
      ADD_FAILURE() << (a.ok() ? b.status() : a.status()).ToString();
      return two;
    }
    two.url = *url;
    two.a = std::move(*a);
    two.b = std::move(*b);
    return two;
  }
  PostgresBackend backend_;
  PgCluster* cluster_ = nullptr;
};

TEST_F(PgStoreTest, TheSchemaIsVersionedAndANewerOneIsRefused) {
  auto url = cluster_->CreateDatabase("schema_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  const PgConnectOptions options{*url, cluster_->password()};
  auto before = PgStore::ProbeSchemaVersion(options);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_EQ(0, *before) << "the dry run creates nothing";
  EXPECT_EQ("", Sql(*url, "SELECT to_regclass('messages')::text"));
  {
    auto store = PgStore::Open(options, Key(1));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
  }
  EXPECT_EQ(PgStore::kSchemaVersion, *PgStore::ProbeSchemaVersion(options));
  EXPECT_EQ(std::to_string(PgStore::kSchemaVersion), Sql(*url, "SELECT MAX(version) FROM schema_version"));
  // Opening again migrates nothing and keeps one version row.
  ASSERT_TRUE(PgStore::Open(options, Key(1)).ok());
  EXPECT_EQ(std::to_string(PgStore::kSchemaVersion), Sql(*url, "SELECT COUNT(*) FROM schema_version"))
      << "one row per step";

  Sql(*url, "INSERT INTO schema_version (version) VALUES (99)");
  auto newer = PgStore::Open(options, Key(1));
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(std::string::npos, newer.status().message().find("schema version 99")) << newer.status().message();
  EXPECT_FALSE(PgStore::ProbeSchemaVersion(options).ok());
}

// The password is in neither the error nor the description of the server,
// whether it came from the password file or was written in the URL.
TEST_F(PgStoreTest, AFailedConnectionNamesTheServerButNeverThePassword) {
  const std::string url = cluster_->Url("postgres");
  auto wrong = PgStore::Open({url, "Wrong-Secret-Pw-4711"}, Key(1));
  ASSERT_FALSE(wrong.ok());
  const std::string message = wrong.status().message();
  EXPECT_NE(std::string::npos, message.find("127.0.0.1")) << message;
  EXPECT_NE(std::string::npos, message.find(std::to_string(cluster_->port()))) << message;
  EXPECT_NE(std::string::npos, message.find("password_file")) << message;
  EXPECT_EQ(std::string::npos, message.find("Wrong-Secret-Pw-4711")) << message;

  const std::string in_url = "postgresql://liaison:Url-Secret-Pw-0815@127.0.0.1:" + std::to_string(cluster_->port()) +
                             "/postgres?sslmode=disable";
  auto from_url = PgStore::Open({in_url, ""}, Key(1));
  ASSERT_FALSE(from_url.ok());
  EXPECT_EQ(std::string::npos, from_url.status().message().find("Url-Secret-Pw-0815")) << from_url.status().message();
  EXPECT_EQ(std::string::npos, DescribePgUrl(in_url).find("Url-Secret")) << DescribePgUrl(in_url);
  EXPECT_EQ("libpq said *** twice: ***",
            MaskPassword("libpq said Url-Secret-Pw-0815 twice: Url-Secret-Pw-0815", {in_url, ""}));
}

// TLS is libpq's: the URL's sslmode (and sslrootcert, ...) reach it as
// written. This server has no TLS, so requiring it must fail, and say so.
TEST_F(PgStoreTest, TheUrlsSslmodeReachesLibpq) {
  std::string url = cluster_->Url("postgres");
  url.replace(url.find("sslmode=disable"), std::string("sslmode=disable").size(), "sslmode=require");
  auto opened = PgStore::Open({url, cluster_->password()}, Key(1));
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(std::string::npos, opened.status().message().find("SSL")) << opened.status().message();
}

// The connection is lost after the server ran COMMIT and before its answer
// arrived: the batch is stored, and Apply says so (the database keeps the
// last batch's token), so that the broker neither answers "unavailable"
// for a stored message nor undoes ledger records the database has. A
// batch the server refused is still refused when its answer is lost.
TEST_F(PgStoreTest, ACommitWhoseAnswerIsLostIsConfirmedByTheDatabase) {
  auto url = cluster_->CreateDatabase("unknown_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = PgStore::Open({*url, cluster_->password()}, Key(1));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "m1", "b", "CASE-1", "one"));
  batch.receipts.push_back({"a", "m1", {7}, 2000000});
  batch.ledger = {{1, "record"}};
  (*store)->BreakConnectionAfterNextSendForTesting();
  Status st = (*store)->Apply(batch);
  EXPECT_TRUE(st.ok()) << st.ToString();
  auto receipt = (*store)->FindReceipt("a", "m1");
  ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
  EXPECT_TRUE(receipt->has_value());
  EXPECT_EQ("1", Sql(*url, "SELECT COUNT(*) FROM messages"));

  // Refused by the server (a lease this store does not hold), answer lost.
  (*store)->FenceWith(424242);
  WriteBatch refused;
  refused.copies.push_back(Copy("a", "m2", "b", "CASE-1", "two"));
  refused.ledger = {{2, "record"}};
  (*store)->BreakConnectionAfterNextSendForTesting();
  st = (*store)->Apply(refused);
  EXPECT_FALSE(st.ok()) << "a refused batch whose answer was lost must not count as stored";
  EXPECT_EQ("1", Sql(*url, "SELECT COUNT(*) FROM messages"));
}

// A connection the server drops fails the batch that was using it (the
// broker answers unavailable), stores nothing of it, and the next batch
// connects again.
TEST_F(PgStoreTest, ALostConnectionFailsItsBatchAndTheNextOneReconnects) {
  auto url = cluster_->CreateDatabase("lost_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = PgStore::Open({*url, cluster_->password()}, Key(1));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  // With a timeout, pg_terminate_backend waits until the session is gone.
  Sql(*url, "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = 'liaison-broker' "
                "AND datname = current_database()");
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "m1", "b", "CASE-1", "one"));
  batch.ledger = {{1, "record"}};
  Status st = (*store)->Apply(batch);
  EXPECT_FALSE(st.ok()) << "a batch on a dropped connection must not count as stored";
  EXPECT_EQ(std::string::npos, st.message().find(cluster_->password()));
  EXPECT_EQ("0", Sql(*url, "SELECT COUNT(*) FROM messages"));
  ASSERT_TRUE((*store)->Apply(batch).ok()) << "the next batch connects again";
  EXPECT_EQ("1", Sql(*url, "SELECT COUNT(*) FROM messages"));
  EXPECT_EQ(1u, (*store)->Pending("b", 0, 10, nullptr)->size());
}

// Everything of a batch is in one transaction: a statement failing in the
// middle of the pipeline leaves nothing of the statements before it.
TEST_F(PgStoreTest, AStatementFailingInThePipelineRollsBackTheWholeBatch) {
  auto url = cluster_->CreateDatabase("rollback_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = PgStore::Open({*url, cluster_->password()}, Key(1));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  WriteBatch first;
  first.ledger = {{1, "one"}};
  ASSERT_TRUE((*store)->Apply(first).ok());
  // The same ledger batch again violates ledger_tail's primary key, after
  // the copy and the receipt went through in the same pipeline.
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "m1", "b", "CASE-1", "one"));
  batch.receipts.push_back({"a", "m1", {7}, 2000000});
  batch.ledger = {{1, "one"}};
  Status st = (*store)->Apply(batch);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string::npos, st.message().find("nothing of the batch was stored")) << st.message();
  EXPECT_EQ("0", Sql(*url, "SELECT COUNT(*) FROM messages"));
  EXPECT_FALSE((*store)->FindReceipt("a", "m1")->has_value());
  WriteBatch next;
  next.copies.push_back(Copy("a", "m1", "b", "CASE-1", "one"));
  EXPECT_TRUE((*store)->Apply(next).ok()) << "the connection is usable after the rollback";
}

// Copies, case references and receipts' contents are not readable in the
// database: the same sealing as the SQLite file.
TEST_F(PgStoreTest, ContentsAreEncryptedAtRest) {
  auto url = cluster_->CreateDatabase("sealed_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = PgStore::Open({*url, cluster_->password()}, Key(2));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  WriteBatch batch;
  batch.copies.push_back(Copy("a", "m", "b", "CASE-SECRET-REF", "MARKER-Amani-Example-0042"));
  ASSERT_TRUE((*store)->Apply(batch).ok());
  EXPECT_EQ("0", Sql(*url, "SELECT COUNT(*) FROM bodies WHERE position('\\x4d41524b4552'::bytea in sealed) > 0"));
  EXPECT_EQ("0", Sql(*url, "SELECT COUNT(*) FROM messages WHERE position('CASE-SECRET'::bytea in case_hash) > 0"));
  EXPECT_EQ("1", Sql(*url, "SELECT COUNT(*) FROM bodies"));
}

// A database of schema version 1 (this backend's first release) is
// migrated forward at open, its rows kept.
TEST_F(PgStoreTest, AVersionOneDatabaseIsMigratedAtOpen) {
  auto url = cluster_->CreateDatabase("schema_v1_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  const PgConnectOptions options{*url, cluster_->password()};
  {
    auto store = PgStore::Open(options, Key(1));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    WriteBatch batch;
    batch.copies.push_back(Copy("a", "m1", "b", "CASE-1", "kept"));
    ASSERT_TRUE((*store)->Apply(batch).ok());
  }
  // Back to what version 1 had.
  Sql(*url, "DROP TABLE thread_grants; DROP TABLE threads; DROP TABLE clocks; DROP TABLE case_keys; DROP TABLE last_batch; DROP INDEX messages_by_purge; "
            "DROP FUNCTION liaison_fence(bigint); DROP TABLE lease; DELETE FROM schema_version WHERE version > 1");
  EXPECT_EQ(1, *PgStore::ProbeSchemaVersion(options));
  // Opened with a case-key ring, as the broker does: the copy sealed under
  // the store key before case keys existed still opens.
  TempDir keys;
  auto ring = CaseKeyRing::Open(keys.file("store.key.ring"), Key(1));
  ASSERT_TRUE(ring.ok()) << ring.status().ToString();
  auto store = PgStore::Open(options, Key(1), 0, *ring);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(PgStore::kSchemaVersion, *PgStore::ProbeSchemaVersion(options));
  auto pending = (*store)->Pending("b", 0, 10, nullptr);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(1u, pending->size());
  EXPECT_EQ(Bytes("kept"), (*pending)[0].envelope);
  EXPECT_TRUE((*store)->AcquireLease("broker-1", 5000)->has_value()) << "the lease table is there";
  EXPECT_EQ("1", Sql(*url, "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'messages_by_purge'"))
      << "version 3's index is there";
  EXPECT_EQ("1", Sql(*url, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'last_batch'"))
      << "version 4's table is there";
  EXPECT_EQ("1", Sql(*url, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'case_keys'"))
      << "version 5's table is there";
  // Version 6's clocks table is there and takes clocks.
  WriteBatch clocks;
  WriteBatch::ClockStart c;
  c.clock = {"a", "m1", "b", "label", 1, 1000, 2000};
  c.purge_after_ms = 9000;
  clocks.clocks_started.push_back(c);
  ASSERT_TRUE((*store)->Apply(clocks).ok());
  EXPECT_EQ(1u, (*store)->DueClocks(2000, 10)->size());
  // Version 7's threads table is there and takes threads.
  WriteBatch threads;
  WriteBatch::ThreadStart t;
  t.thread.ref = std::string(32, 'c');
  t.thread.holder = "b";
  t.thread.root = std::string(32, 'd');
  t.thread.origin = "a";
  t.purge_after_ms = 9000;
  threads.threads.push_back(t);
  ASSERT_TRUE((*store)->Apply(threads).ok());
  EXPECT_TRUE((*store)->FindThread(std::string(32, 'c'))->has_value());
  // Version 9's thread_grants table is there and takes grants.
  WriteBatch grants;
  grants.grants.push_back({std::string(32, 'd'), {"c"}, 9000});
  ASSERT_TRUE((*store)->Apply(grants).ok());
  EXPECT_EQ((std::vector<std::string>{"c"}), (*(*store)->FindThread(std::string(32, 'c')))->granted);
}

// One holder at a time; another takes over only once the lease expired
// (by the database's clock), with a higher epoch; from then on the old
// holder's fenced batches fail whole and it cannot renew.
TEST_F(PgStoreTest, TheLeaseFencesABrokerThatLostIt) {
  TwoStores two = OpenTwo("lease");
  ASSERT_TRUE(two.a && two.b);
  PgStore& a = *two.a;
  PgStore& b = *two.b;

  auto epoch = a.AcquireLease("broker-a", 60000);
  ASSERT_TRUE(epoch.ok()) << epoch.status().ToString();
  ASSERT_TRUE(epoch->has_value());
  EXPECT_FALSE(b.AcquireLease("broker-b", 60000)->has_value()) << "held by broker-a";
  auto again = a.AcquireLease("broker-a", 60000);
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ(**epoch + 1, **again) << "the same holder taking it again (a restart) fences its former self";
  epoch = again;
  EXPECT_TRUE(*a.RenewLease("broker-a", **epoch, 60000));
  a.FenceWith(**epoch);
  WriteBatch batch;
  batch.copies.push_back(Copy("s", "m1", "r", "CASE-1", "one"));
  ASSERT_TRUE(a.Apply(batch).ok());

  // broker-a stops renewing: a short lease runs out.
  ASSERT_TRUE(*a.RenewLease("broker-a", **epoch, 200));
  std::optional<int64_t> taken;
  for (int i = 0; i < 100 && !taken; ++i) {  // bounded: 10 s
    auto t = b.AcquireLease("broker-b", 60000);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    taken = *t;
    if (!taken) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(taken.has_value()) << "the expired lease was not taken over";
  EXPECT_GT(*taken, **epoch);

  WriteBatch late;
  late.copies.push_back(Copy("s", "m2", "r", "CASE-1", "two"));
  late.ledger = {{1, "record"}};
  Status st = a.Apply(late);
  ASSERT_FALSE(st.ok()) << "a broker that lost its lease must commit nothing";
  EXPECT_NE(std::string::npos, st.message().find("no longer held")) << st.message();
  EXPECT_FALSE(*a.RenewLease("broker-a", **epoch, 60000));
  EXPECT_EQ(1u, b.Pending("r", 0, 10, nullptr)->size()) << "m2 was not stored";
  EXPECT_FALSE(b.ReadLedgerTail()->committed_seq.has_value());

  b.FenceWith(*taken);
  ASSERT_TRUE(b.Apply(late).ok()) << "the new holder commits";
  EXPECT_EQ(2u, b.Pending("r", 0, 10, nullptr)->size());
}

// A batch in flight holds the lease row (liaison_fence): the holder's
// renewal does not wait for it (a convoy once a second otherwise), but a
// takeover does, so no batch of the old epoch commits after it. Lock
// timeouts bound every wait: a renewal that waited fails, not hangs.
TEST_F(PgStoreTest, ARenewalDoesNotWaitForABatchInFlightButATakeoverDoes) {
  TwoStores two = OpenTwo("lease_wait");
  ASSERT_TRUE(two.a && two.b);
  PgStore& a = *two.a;
  PgStore& b = *two.b;
  ASSERT_TRUE(a.SetSessionTimeouts(/*lock_timeout_ms=*/2000, 0).ok());
  ASSERT_TRUE(b.SetSessionTimeouts(/*lock_timeout_ms=*/1000, 0).ok());
  auto epoch = a.AcquireLease("broker-a", 60000);
  ASSERT_TRUE(epoch.ok() && epoch->has_value()) << epoch.status().ToString();

  // A batch of broker-a's epoch, open: its fence passed, it has not ended.
  const char* keywords[] = {"dbname", "password", nullptr};
  const char* values[] = {two.url.c_str(), cluster_->password().c_str(), nullptr};
  PGconn* batch = PQconnectdbParams(keywords, values, 1);
  ASSERT_EQ(CONNECTION_OK, PQstatus(batch)) << PQerrorMessage(batch);
  auto exec = [&](const std::string& sql) {
    PGresult* r = PQexec(batch, sql.c_str());
    const ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  };
  ASSERT_TRUE(exec("BEGIN"));
  ASSERT_TRUE(exec("SELECT liaison_fence(" + std::to_string(**epoch) + ")")) << PQerrorMessage(batch);

  auto renewed = a.RenewLease("broker-a", **epoch, 300);
  ASSERT_TRUE(renewed.ok()) << "the renewal waited for the batch: " << renewed.status().ToString();
  EXPECT_TRUE(*renewed);

  // The lease has run out, but the batch still holds the row: the
  // takeover waits for it (here until b's lock timeout).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto blocked = b.AcquireLease("broker-b", 60000);
  EXPECT_FALSE(blocked.ok() && blocked->has_value()) << "taken while a batch of the old epoch was in flight";

  ASSERT_TRUE(exec("COMMIT"));
  PQfinish(batch);
  auto taken = b.AcquireLease("broker-b", 60000);
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  ASSERT_TRUE(taken->has_value()) << "the batch ended and the lease had run out";
  EXPECT_GT(**taken, **epoch);
}

// The lookups by arrays keep to their table's key however their plan was
// made. A prepared statement settles on a generic plan after five runs and
// keeps it as the table grows; joined plainly, the plan made while the
// receipts table was young hash-joined a scan of the whole table, and at
// 60,000 receipts each dedupe lookup (one per drain, on the core thread)
// took 20-30 ms. The test makes each keyed statement's plan on empty
// tables, as a broker's first minutes do, fills them, and reads that same
// plan.
TEST_F(PgStoreTest, KeyedReadsAndWritesUseAnIndexWhateverTablesThePlanWasMadeOn) {
  auto url = cluster_->CreateDatabase("plans_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  const PgConnectOptions options{*url, cluster_->password()};
  ASSERT_TRUE(PgStore::Open(options, Key(1)).ok()) << "the schema";

  const char* keywords[] = {"dbname", "password", nullptr};
  const char* values[] = {url->c_str(), cluster_->password().c_str(), nullptr};
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdbParams(keywords, values, 1), &PQfinish);
  ASSERT_EQ(CONNECTION_OK, PQstatus(conn.get())) << PQerrorMessage(conn.get());
  // Every row of the result, one line each ("" and a failure on error).
  auto run = [&](const std::string& sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(conn.get(), sql.c_str()), &PQclear);
    const ExecStatusType st = PQresultStatus(r.get());
    std::string out;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql.substr(0, 200) << ": " << PQerrorMessage(conn.get());
      return out;
    }
    for (int i = 0; i < PQntuples(r.get()); ++i) out += std::string(PQgetvalue(r.get(), i, 0)) + "\n";
    return out;
  };
  // No ANALYZE behind the test's back: the plan is the one made first.
  run("ALTER TABLE receipts SET (autovacuum_enabled = false)");
  run("ALTER TABLE case_keys SET (autovacuum_enabled = false)");
  for (const char* table : {"clocks", "messages", "bodies", "disclosures", "notices", "threads", "thread_grants"}) {
    run(std::string("ALTER TABLE ") + table + " SET (autovacuum_enabled = false)");
  }

  struct Lookup {
    const char* name;
    const char* table;
    const char* args;  // a few keys, one of them present once filled
    const char* also = nullptr;  // another table it reads
    const char* index = nullptr;  // the index it must go by, where others could serve
    bool planned_each_time = false;
  };
  const std::string keys = "ARRAY['s7', 'sx']::text[], ARRAY['m7', 'mx']::text[]";
  const std::string cases = "ARRAY['s7', 'sx']::text[], ARRAY['\\x00000007'::bytea, '\\xff'::bytea]";
  const std::string rewrap = cases + ", 2, ARRAY['\\x01'::bytea, '\\x02'::bytea]";
  const std::string copies = keys + ", ARRAY['r7', 'rx']::text[], ARRAY[1, 1]::bigint[]";
  Lookup lookups[] = {
      {"l_find_receipts", "receipts", keys.c_str()},
      {"l_case_keys_of", "case_keys", cases.c_str()},
      {"l_delete_case_keys", "case_keys", cases.c_str()},
      {"l_rewrap_case_keys", "case_keys", rewrap.c_str()},
      {"l_answer_clocks", "clocks", copies.c_str()},
      {"l_fire_clocks", "clocks", copies.c_str()},
      {"l_pending", "messages", "'r7', 0, 256"},
      {"l_due", "messages", "5"},
      {"l_queued_of_case", "messages", "'s7', '\\x00000007'::bytea"},
      {"l_disclosures", "disclosures", "'s7', '\\x00000007'::bytea"},
      {"l_notices", "notices", "'a7', 256"},
      {"l_delete_notices", "notices", "ARRAY[7, 9]::bigint[]"},
      {"l_find_receipt", "receipts", "'s7', 'm7'"},
      // Once at start, a page at a time.
      {"l_receipt_keys", "receipts", "'s7', 'm7', 1000"},
      {"l_find_threads", "threads", "ARRAY['t7', 'tx']::text[]", "thread_grants"},
      // Once a minute, inside a batch: the history goes by its purge index.
      {"l_purge", "messages", "5"},
      // At every batch with acks: each copy by its seq, its body too (a plan
      // by messages_by_expiry's "state = 0" reads every queued copy, and the
      // dead versions of every copy acked since the last vacuum).
      {"l_ack", "messages", "ARRAY[7, 9]::bigint[], ARRAY[1, 1]::bigint[], ARRAY['r7', 'r9']::text[]", "bodies",
       "messages_pkey"},
  };
  // As the store runs each: prepared (its generic plan made now, on empty
  // tables, and kept), or planned at each use with that use's arrays.
  auto mode = [&](const Lookup& l) {
    run(std::string("SET plan_cache_mode = ") + (l.planned_each_time ? "force_custom_plan" : "force_generic_plan"));
  };
  for (Lookup& l : lookups) {
    const char* sql = PgStore::StatementSql(l.name, &l.planned_each_time);
    ASSERT_NE(nullptr, sql) << l.name;
    mode(l);
    run(std::string("PREPARE ") + l.name + " AS " + sql);
    run(std::string("EXECUTE ") + l.name + "(" + l.args + ")");
  }
  run("INSERT INTO receipts (sender, message_id, receipt, purge_after_ms) "
      "SELECT 's' || i, 'm' || i, '\\x00'::bytea, 0 FROM generate_series(1, 20000) AS i");
  run("INSERT INTO case_keys (sender, case_hash, epoch, wrapped) "
      "SELECT 's' || i, int4send(i), 1, '\\x00'::bytea FROM generate_series(1, 20000) AS i");
  run("INSERT INTO clocks (sender, message_id, recipient, label, urgency, started_ms, due_ms, purge_after_ms) "
      "SELECT 's' || i, 'm' || i, 'r' || i, 'l', 0, 0, 0, 0 FROM generate_series(1, 20000) AS i");
  // Delivered copies, as a queue's history is, and a few queued.
  run("INSERT INTO messages (sender, message_id, recipient, case_hash, state, created_ms, expires_ms, "
      "purge_after_ms) SELECT 's' || i, 'm' || i, 'r' || (i % 100), int4send(i), CASE WHEN i % 2000 = 0 THEN 0 "
      "ELSE 2 END, i, i + 1000, i + 2000 FROM generate_series(1, 20000) AS i");
  run("INSERT INTO bodies (seq, sealed) SELECT seq, '\\x00'::bytea FROM messages");
  run("INSERT INTO disclosures (sender, case_hash, recipient) "
      "SELECT 's' || i, int4send(i), 'r' || i FROM generate_series(1, 20000) AS i");
  run("INSERT INTO notices (agency, receipt) SELECT 'a' || (i % 100), '\\x00'::bytea FROM generate_series(1, 20000) AS i");
  run("INSERT INTO threads (ref, holder, root, origin, handling, purpose, circle, onward, purge_after_ms, message_id) "
      "SELECT 't' || i, 'h', 't' || i, 'o', 0, 'p', '', '', 0, 'm' || i FROM generate_series(1, 20000) AS i");
  run("INSERT INTO thread_grants (root, grantee, purge_after_ms) "
      "SELECT 't' || i, 'g', 0 FROM generate_series(1, 20000) AS i");
  // The prepared ones first, before the statistics exist: an ANALYZE makes
  // PostgreSQL plan them anew. Those planned at each use are planned after
  // one, as autovacuum keeps a busy table's statistics.
  for (const bool analyzed : {false, true}) {
    if (analyzed) run("ANALYZE");
    for (const Lookup& l : lookups) {
      if (l.planned_each_time != analyzed) continue;
      mode(l);
      const std::string plan = run(std::string("EXPLAIN EXECUTE ") + l.name + "(" + l.args + ")");
      for (const char* table : {l.table, l.also}) {
        if (table == nullptr) continue;
        EXPECT_EQ(std::string::npos, plan.find(std::string("Seq Scan on ") + table))
            << l.name << " reads the whole of " << table << ":\n" << plan;
      }
      EXPECT_NE(std::string::npos, plan.find("Index")) << l.name << ":\n" << plan;
      if (l.index) {
        EXPECT_NE(std::string::npos, plan.find(std::string("on ") + l.index)) << l.name << ":\n" << plan;
      }
    }
  }
  // And they still answer: s7/m7 is there, sx/mx is not.
  run("SET plan_cache_mode = force_generic_plan");
  EXPECT_EQ("1\n", run("EXECUTE l_find_receipts(ARRAY['s7', 'sx']::text[], ARRAY['m7', 'mx']::text[])"));
}

}  // namespace
}  // namespace liaison::store

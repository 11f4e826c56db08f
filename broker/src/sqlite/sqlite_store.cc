#include "sqlite/sqlite_store.h"

#include "sqlite/wal_write_vfs.h"

#include "liaison/keys.h"
#include "liaison/sqlite_statement.h"
#include "store/sealing.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <mutex>
#include <optional>
#include <thread>

namespace liaison::store {
namespace {

// Rows: 0 queued, 2 acked, 3 expired, 4 erased, 5 damaged (does not decrypt),
// 6 purged by an operator (was 5).

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  sender TEXT NOT NULL,
  message_id TEXT NOT NULL,
  recipient TEXT NOT NULL,
  case_hash BLOB,
  state INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  acked_ms INTEGER,
  purge_after_ms INTEGER NOT NULL,
  sealed BLOB,  -- unused: the copy is in bodies (older stores' are moved there at open)
  label TEXT,
  UNIQUE (sender, message_id, recipient));
-- The sealed copy of each queued (or set-aside) message, apart from its
-- small row: a row's state changes touch pages of ~25 rows, and a delivered
-- copy's page is freed for the next copies instead of left mostly empty.
CREATE TABLE IF NOT EXISTS bodies (seq INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
-- The queues' indexes hold only the rows still queued (or set aside): an
-- ack then removes the copy's entries instead of moving them (a delete and
-- an insert each), and they stay the queues' size, not the retention's. The
-- case index holds no state at all, so an ack does not touch it. Queries
-- name the state as these predicates do ("state = 0 OR state = 5"; SQLite
-- uses a partial index only for a WHERE that implies its predicate).
CREATE INDEX IF NOT EXISTS messages_queued_by_recipient ON messages (recipient, state, seq)
  WHERE state = 0 OR state = 5;
CREATE INDEX IF NOT EXISTS messages_of_case ON messages (sender, case_hash);
CREATE INDEX IF NOT EXISTS messages_queued_by_expiry ON messages (expires_ms) WHERE state = 0;
-- Their predecessors (before 2026-12), which every ack rewrote.
DROP INDEX IF EXISTS messages_by_recipient;
DROP INDEX IF EXISTS messages_by_case;
DROP INDEX IF EXISTS messages_by_expiry;
CREATE TABLE IF NOT EXISTS receipts (
  sender TEXT NOT NULL, message_id TEXT NOT NULL, receipt BLOB NOT NULL,
  purge_after_ms INTEGER NOT NULL, PRIMARY KEY (sender, message_id));
CREATE TABLE IF NOT EXISTS disclosures (
  sender TEXT NOT NULL, case_hash BLOB NOT NULL, recipient TEXT NOT NULL,
  PRIMARY KEY (sender, case_hash, recipient));
CREATE TABLE IF NOT EXISTS notices (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, agency TEXT NOT NULL, receipt BLOB NOT NULL);
-- What the periodic purge and the notices' reads look up: without them each
-- scans its whole table (every row kept for the retention period) inside the
-- writer's transaction, holding up every sender's commit.
CREATE INDEX IF NOT EXISTS messages_by_purge ON messages (purge_after_ms) WHERE state <> 0;
CREATE INDEX IF NOT EXISTS receipts_by_purge ON receipts (purge_after_ms);
CREATE INDEX IF NOT EXISTS notices_by_agency ON notices (agency, seq);
-- One row per batch: its ledger lines, newline-separated; seq is the last's.
CREATE TABLE IF NOT EXISTS ledger_tail (seq INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL, lines TEXT NOT NULL);
-- Each case's key, wrapped under the case-key ring's KEK of `epoch`
-- (store/case_keys.h); deleted to shred the case.
CREATE TABLE IF NOT EXISTS case_keys (
  sender TEXT NOT NULL, case_hash BLOB NOT NULL, epoch INTEGER NOT NULL, wrapped BLOB NOT NULL,
  PRIMARY KEY (sender, case_hash));
-- Response deadlines: one clock per CaseReferral copy (added with them; a
-- store of an older broker gains the table empty when this one opens it).
CREATE TABLE IF NOT EXISTS clocks (
  sender TEXT NOT NULL, message_id TEXT NOT NULL, recipient TEXT NOT NULL, label TEXT NOT NULL,
  urgency INTEGER NOT NULL, started_ms INTEGER NOT NULL, due_ms INTEGER NOT NULL,
  purge_after_ms INTEGER NOT NULL, fired_ms INTEGER, answered_ms INTEGER,
  PRIMARY KEY (sender, message_id, recipient));
CREATE INDEX IF NOT EXISTS clocks_running ON clocks (due_ms) WHERE fired_ms IS NULL AND answered_ms IS NULL;
CREATE INDEX IF NOT EXISTS clocks_open ON clocks (started_ms) WHERE answered_ms IS NULL;
CREATE INDEX IF NOT EXISTS clocks_by_purge ON clocks (purge_after_ms);
-- Case threads: one row per stored copy, under the reference the copy
-- carries (store::Thread); added like the clocks.
CREATE TABLE IF NOT EXISTS threads (
  ref TEXT PRIMARY KEY, holder TEXT NOT NULL, message_id TEXT NOT NULL, root TEXT NOT NULL, origin TEXT NOT NULL,
  handling INTEGER NOT NULL, purpose TEXT NOT NULL, circle TEXT NOT NULL, onward TEXT NOT NULL,
  purge_after_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS threads_by_purge ON threads (purge_after_ms);
-- Permissions a thread's originator granted (PermissionGrant), for the
-- whole thread: its root and one grantee ("agency" or "kind:<kind>") a row.
CREATE TABLE IF NOT EXISTS thread_grants (
  root TEXT NOT NULL, grantee TEXT NOT NULL, purge_after_ms INTEGER NOT NULL,
  PRIMARY KEY (root, grantee));
CREATE INDEX IF NOT EXISTS thread_grants_by_purge ON thread_grants (purge_after_ms);
)sql";

// The page size of a store this broker creates (an existing store keeps its
// own; changing it takes a VACUUM outside WAL mode). A queued copy of a
// typical 2 KiB referral is ~2.3 KiB sealed: at SQLite's default 4 KiB page
// one fits a page and each copy costs a whole page in the WAL, the
// checkpoint and the file; at 8 KiB three share one. Measured in make bench
// (liaison, 1x1 saturated, alternating runs): broker CPU per message about
// 8% lower at 8 KiB and 11% at 16 KiB, while 16 KiB pages raised the median
// latency at 2,000 msg/s by about 1 ms (each small commit writes larger
// pages).
constexpr int kPageSize = 8192;

// Every statement runs through liaison's one wrapper (liaison/sqlite_statement.h).
using Query = SqliteStatement;

// SQLite's memory statistics (on in the system library's build) take a
// global mutex around every one of its allocations, a few dozen per queued
// message; nothing in liaison reads them. They can only be turned off before
// SQLite initializes: if something in this process used SQLite first, they
// stay on, which costs time, not correctness.
void DisableSqliteMemoryStatistics() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK) {
      spdlog::debug("event=sqlite_memstatus_kept reason=sqlite_already_initialized");
    }
  });
}

}  // namespace

// Copies the WAL into the database file on its own thread and connection.
// The writer's commit hook wakes it once the WAL holds kWakePages pages; it
// also runs once a second. Its checkpoints are PASSIVE: they never wait for,
// nor block, the writer or a reader; what a reader still needs is copied by
// a later one. A failure is logged and tried again: the WAL keeps every
// commit durable meanwhile, it only grows.
class Checkpointer {
 public:
  // 10x SQLite's own autocheckpoint size (~40 MiB of 4 KiB pages, ~80 MiB
  // of a new store's 8 KiB ones; measured with both): a queue's
  // hot pages (index tails, the bodies' reused pages, the ledger tail) are
  // rewritten by nearly every commit, and a checkpoint copies each page once
  // however often it was committed, so fewer, larger checkpoints copy and
  // sync far fewer pages per message (measured: the checkpointer was 7% of
  // the broker's CPU at 1,000). Under a light load the one-second timer
  // keeps the WAL small as before.
  static constexpr int kWakePages = 10000;

  static StatusOr<std::unique_ptr<Checkpointer>> Start(const std::string& path) {
    std::unique_ptr<Checkpointer> c(new Checkpointer());
    if (sqlite3_open_v2(path.c_str(), &c->db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      return Status::IoError(SqliteError(c->db_, "cannot open the store " + path + " for checkpoints"));
    }
    sqlite3_busy_timeout(c->db_, 0);  // PASSIVE: never waits
    char* error = nullptr;
    if (sqlite3_exec(c->db_, "PRAGMA synchronous=FULL", nullptr, nullptr, &error) != SQLITE_OK) {
      Status st = Status::IoError(SqliteError(c->db_, std::string("store ") + path + ": " + (error ? error : "error")));
      sqlite3_free(error);
      return st;
    }
    c->thread_ = std::thread([raw = c.get()] { raw->Loop(); });
    return c;
  }

  ~Checkpointer() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
    if (db_) sqlite3_close(db_);
  }

  // From the writer's commit hook: `pages` are in the WAL now.
  void Committed(int pages) {
    if (pages < kWakePages) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_ = true;
    }
    cv_.notify_one();
  }

 private:
  Checkpointer() = default;

  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return wake_ || stopping_; });
      wake_ = false;
      lock.unlock();
      Run();
      lock.lock();
    }
  }

  void Run() {
    int log_frames = 0, copied = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
    if (rc == SQLITE_OK || rc == SQLITE_BUSY) {
      failing_ = false;
      return;
    }
    // Once per run of failures: the same error every second says nothing new.
    if (!failing_) {
      spdlog::warn("event=store_checkpoint_failed error=\"{}\" effect=the_wal_grows_until_one_succeeds",
                   SqliteError(db_, "checkpoint"));
    }
    failing_ = true;
  }

  sqlite3* db_ = nullptr;
  bool failing_ = false;  // the thread's own
  std::mutex mutex_;
  std::condition_variable cv_;
  bool wake_ = false;      // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;
};

StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, const StoreKey& key,
                                                         size_t max_value_bytes, bool background_checkpoints,
                                                         std::shared_ptr<CaseKeyRing> ring) {
  DisableSqliteMemoryStatistics();
  std::unique_ptr<SqliteStore> store(new SqliteStore());
  store->key_ = key;
  store->ring_ = std::move(ring);
  store->path_ = path;
  // Case data: owner-only, whatever the umask (the -wal and -shm files
  // SQLite makes later take this file's mode); WAL with synchronous=FULL:
  // a commit is on disk when it returns.
  // Its WAL is written through liaison's VFS: a commit's frames in a few
  // writes, not two per page (sqlite/wal_write_vfs.h).
  auto vfs = WalWriteVfs();
  if (!vfs.ok()) return vfs.status();
  auto db = OpenSqliteFile(path, "store", kPageSize, *vfs);
  if (!db.ok()) return db.status();
  store->db_ = *db;
  // The page cache holds the queues' hot pages (the default 2 MiB is
  // outgrown by a few thousand queued messages, and every ack then reads its
  // row's page back through the kernel).
  // secure_delete=FAST: a deleted row's bytes (a shredded case's wrapped
  // key) are overwritten in its page, at no extra I/O (docs/audit.md).
  for (const char* pragma : {"PRAGMA foreign_keys=ON", "PRAGMA cache_size=-32768", "PRAGMA secure_delete=FAST",
                             // Statement journals and temporary tables in memory,
                             // not in temporary files written within a commit.
                             "PRAGMA temp_store=MEMORY"}) {
    LIAISON_RETURN_IF_ERROR(store->Exec(pragma).WithContext("store " + path));
  }
  {
    Query check(store->db_, store->Prepare("PRAGMA quick_check"));
    std::string verdict;
    int rc;
    while ((rc = check.Step()) == SQLITE_ROW) verdict += check.ColumnText(0);
    if (rc != SQLITE_DONE) {
      return Status::Corruption(check.Error("store " + path + " cannot be read").message());
    }
    if (verdict != "ok") {
      return Status::Corruption("store " + path + " failed its integrity check (" +
                                verdict.substr(0, 200) + "); restore it from a backup");
    }
  }
  LIAISON_RETURN_IF_ERROR(store->Exec(kSchema).WithContext("store " + path));
  // Stores made before messages had a label gain the column (NULL = none).
  bool has_label = false;
  {
    Query columns(store->db_, store->Prepare("PRAGMA table_info(messages)"));
    int rc;
    while ((rc = columns.Step()) == SQLITE_ROW) has_label |= columns.ColumnText(1) == "label";
    if (rc != SQLITE_DONE) return columns.Error("store " + path + ": reading its tables");
  }
  if (!has_label) {
    LIAISON_RETURN_IF_ERROR(store->Exec("ALTER TABLE messages ADD COLUMN label TEXT").WithContext("store " + path));
  }
  // Stores made before bodies had their own table: the copies move there,
  // in one transaction (all or none; the next start tries again).
  bool old_bodies = false;
  {
    Query q(store->db_, store->Prepare("SELECT 1 FROM messages WHERE sealed IS NOT NULL LIMIT 1"));
    const int rc = q.Step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return q.Error("store " + path + ": reading its tables");
    old_bodies = rc == SQLITE_ROW;
  }
  if (old_bodies) {
    LIAISON_RETURN_IF_ERROR(store
                              ->Exec("BEGIN IMMEDIATE; "
                                     "INSERT OR IGNORE INTO bodies (seq, sealed) "
                                     "SELECT seq, sealed FROM messages WHERE sealed IS NOT NULL; "
                                     "UPDATE messages SET sealed = NULL WHERE sealed IS NOT NULL; COMMIT")
                              .WithContext("store " + path + ": moving queued copies to their table"));
  }
  // No value larger than the broker can produce reaches the file.
  if (max_value_bytes > 0) {
    sqlite3_limit(store->db_, SQLITE_LIMIT_LENGTH,
                  static_cast<int>(std::min<size_t>(max_value_bytes, 1'000'000'000)));
  }
  LIAISON_RETURN_IF_ERROR(store->CheckKey());
  LIAISON_RETURN_IF_ERROR(store->CheckRing());
  if (background_checkpoints) {
    auto checkpointer = Checkpointer::Start(path);
    if (!checkpointer.ok()) return checkpointer.status();
    store->checkpointer_ = std::move(*checkpointer);
    // Replaces SQLite's autocheckpoint (the same hook): the commit only
    // wakes the checkpointer.
    sqlite3_wal_hook(
        store->db_,
        [](void* c, sqlite3*, const char*, int pages) {
          static_cast<Checkpointer*>(c)->Committed(pages);
          return SQLITE_OK;
        },
        store->checkpointer_.get());
  }
  return store;
}

SqliteStore::~SqliteStore() {
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  if (db_) {
    sqlite3_wal_hook(db_, nullptr, nullptr);
    sqlite3_close(db_);
  }
  checkpointer_.reset();  // after the last commit that could wake it
}

Status SqliteStore::CheckKey() {
  {
    Query q(db_, Prepare("SELECT value FROM meta WHERE name = 'key_check'"));
    const int rc = q.Step();
    if (rc == SQLITE_ROW) {
      if (!KeyCheckOpens(key_, q.ColumnBlob(0))) {
        return Status::PermissionDenied("store " + path_ +
                                        ": the store key does not match this database (wrong key file?)");
      }
      return Status::Ok();
    }
    if (rc != SQLITE_DONE) return q.Error("store " + path_ + ": reading the key check");
  }
  auto sealed = SealKeyCheck(key_);
  if (!sealed) return Status::Internal("store " + path_ + ": cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
  Query put(db_, Prepare("INSERT INTO meta (name, value) VALUES ('key_check', ?1)"));
  if (!put.Blob(1, sealed->data(), sealed->size()).Done()) return put.Error("store " + path_);
  return Status::Ok();
}

StatusOr<std::optional<std::pair<uint64_t, std::vector<uint8_t>>>> SqliteStore::ReadKekMeta() {
  std::optional<uint64_t> epoch;
  std::vector<uint8_t> check;
  Query q(db_, Prepare("SELECT name, value FROM meta WHERE name IN ('case_kek_epoch', 'case_kek_check')"));
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (q.ColumnText(0) == "case_kek_epoch") epoch = static_cast<uint64_t>(q.ColumnInt(1));
    else check = q.ColumnBlob(1);
  }
  if (rc != SQLITE_DONE) return q.Error("store " + path_ + ": reading the case-key epoch");
  if (!epoch) return std::optional<std::pair<uint64_t, std::vector<uint8_t>>>();
  return std::optional<std::pair<uint64_t, std::vector<uint8_t>>>(std::make_pair(*epoch, std::move(check)));
}

Status SqliteStore::CheckRing() {
  if (!ring_) return Status::Ok();
  auto meta = ReadKekMeta();
  if (!meta.ok()) return meta.status();
  return store::CheckRing(*ring_, path_, *meta);
}

Status SqliteStore::WriteKekMeta(uint64_t epoch, const SecretKey32& kek) {
  auto check = SealKekCheck(kek, epoch);
  if (!check) return Status::Internal("store: cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
  Query e(db_, Prepare("INSERT OR REPLACE INTO meta (name, value) VALUES ('case_kek_epoch', ?1)"));
  if (!e.Int(1, static_cast<int64_t>(epoch)).Done()) return e.Error("store: writing the case-key epoch");
  Query c(db_, Prepare("INSERT OR REPLACE INTO meta (name, value) VALUES ('case_kek_check', ?1)"));
  if (!c.Blob(1, check->data(), check->size()).Done()) return c.Error("store: writing the case-key epoch");
  return Status::Ok();
}

Status SqliteStore::SettleRing() {
  if (!ring_ || ring_settled_) return Status::Ok();
  auto meta = ReadKekMeta();
  if (!meta.ok()) return meta.status();
  if (!*meta) {
    const uint64_t epoch = ring_->epoch();
    auto kek = ring_->Kek(epoch);
    if (!kek) return Status::Internal("case-key ring " + ring_->path() + ": holds no KEK of its own epoch");
    LIAISON_RETURN_IF_ERROR(WriteKekMeta(epoch, *kek));
  } else if (const uint64_t epoch = (*meta)->first; !ring_->Kek(epoch) && ring_->epoch() > epoch) {
    LIAISON_RETURN_IF_ERROR(AdoptRing(epoch));
  } else {
    LIAISON_RETURN_IF_ERROR(ring_->Settle(epoch));
  }
  ring_settled_ = true;
  return Status::Ok();
}

Status SqliteStore::AdoptRing(uint64_t store_epoch) {
  // A restored backup: its case keys are under an epoch whose KEK was
  // destroyed since. A case the ring's snapshot holds takes its key from
  // there; one it does not hold was shredded after the backup and loses its
  // row (its copies stay, unreadable, and are set aside when read).
  std::vector<std::pair<std::string, std::string>> rows;
  {
    Query q(db_, Prepare("SELECT sender, case_hash FROM case_keys"));
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      const std::vector<uint8_t> hash = q.ColumnBlob(1);
      rows.emplace_back(q.ColumnText(0), std::string(hash.begin(), hash.end()));
    }
    if (rc != SQLITE_DONE) return q.Error("store: reading the case keys");
  }
  const uint64_t epoch = ring_->epoch();
  auto kek = ring_->Kek(epoch);
  if (!kek) return Status::Internal("case-key ring " + ring_->path() + ": holds no KEK of its own epoch");
  int64_t kept = 0, shredded = 0;
  for (const auto& [sender, case_hash] : rows) {
    auto snap = ring_->Snapshot(sender, case_hash);
    if (snap && snap->first == epoch) {
      Query u(db_, Prepare("UPDATE case_keys SET epoch = ?3, wrapped = ?4 WHERE sender = ?1 AND case_hash = ?2"));
      u.Text(1, sender).Blob(2, case_hash.data(), case_hash.size()).Int(3, static_cast<int64_t>(epoch));
      if (!u.Blob(4, snap->second.data(), snap->second.size()).Done()) return u.Error("store: adopting the case keys");
      ++kept;
    } else {
      Query d(db_, Prepare("DELETE FROM case_keys WHERE sender = ?1 AND case_hash = ?2"));
      if (!d.Text(1, sender).Blob(2, case_hash.data(), case_hash.size()).Done()) {
        return d.Error("store: adopting the case keys");
      }
      ++shredded;
    }
  }
  LIAISON_RETURN_IF_ERROR(WriteKekMeta(epoch, *kek));
  spdlog::warn("event=case_keys_adopted store_epoch={} ring_epoch={} cases_kept={} cases_shredded_since={}",
               store_epoch, epoch, kept, shredded);
  return Status::Ok();
}

Status SqliteStore::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = SqliteError(db_, std::string("store: ") + (error ? error : "error"));
    sqlite3_free(error);
    return Status::IoError(message);
  }
  return Status::Ok();
}

sqlite3_stmt* SqliteStore::Prepare(const char* sql) {
  auto it = statements_.find(sql);
  if (it != statements_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
    // Our SQL is fixed, but preparing also reads the schema (out of memory,
    // a damaged file): the statement using it fails, the broker does not.
    sqlite3_finalize(s);
    return nullptr;
  }
  statements_[sql] = s;
  return s;
}

Status SqliteStore::Apply(const WriteBatch& batch, std::vector<int64_t>* seqs) {
  if (seqs) seqs->assign(batch.copies.size(), 0);
  if (in_transaction_) return Status::Internal("store: Apply inside an open transaction");
  if (batch.empty()) return Status::Ok();
  LIAISON_RETURN_IF_ERROR(Begin());
  auto write = [&]() -> Status {
    for (size_t i = 0; i < batch.copies.size(); ++i) {
      const WriteBatch::Copy& c = batch.copies[i];
      LIAISON_RETURN_IF_ERROR(Enqueue(c.sender, c.message_id, c.recipient, c.case_ref, c.envelope.data(),
                                      c.envelope.size(), c.now_ms, c.expires_ms, c.purge_after_ms, c.label,
                                      c.case_keyed, seqs ? &(*seqs)[i] : nullptr));
    }
    for (const WriteBatch::Receipt& r : batch.receipts) {
      LIAISON_RETURN_IF_ERROR(PutReceipt(r.sender, r.message_id, r.receipt, r.purge_after_ms));
    }
    for (const WriteBatch::Acked& a : batch.acks) {
      // Without Ack()'s RETURNING (the core has the sender and label): a
      // RETURNING clause is a trigger to SQLite, which gives the statement a
      // journal of its own and a temporary table, per ack.
      Query u(db_, Prepare("UPDATE messages SET state = 2, acked_ms = ?2 "
                           "WHERE seq = ?1 AND recipient = ?3 AND state = 0"));
      if (!u.Int(1, a.seq).Int(2, a.now_ms).Text(3, a.recipient).Done()) return u.Error("store: recording an ack");
      if (sqlite3_changes(db_) > 0) LIAISON_RETURN_IF_ERROR(DropBody(a.seq));
    }
    for (const auto& [state, seqs] : {std::pair<int, const std::vector<int64_t>*>{3, &batch.expired},
                                      {4, &batch.erased}, {5, &batch.set_aside}}) {
      for (int64_t seq : *seqs) {
        // Only a queued copy changes: one acked meanwhile stays acked.
        Query u(db_, Prepare("UPDATE messages SET state = ?2 WHERE seq = ?1 AND state = 0"));
        if (!u.Int(1, seq).Int(2, state).Done()) return u.Error("store: updating a queued message");
        // A set-aside copy is kept (a restored key may open it); the others
        // are gone with their message.
        if (state != 5 && sqlite3_changes(db_) > 0) LIAISON_RETURN_IF_ERROR(DropBody(seq));
      }
    }
    // An operator's decision on a set-aside copy: only one still set aside
    // changes. A purged copy's body goes; a requeued one is read again.
    for (const auto& [state, seqs] : {std::pair<int, const std::vector<int64_t>*>{6, &batch.purged},
                                      {0, &batch.requeued}}) {
      for (int64_t seq : *seqs) {
        Query u(db_, Prepare("UPDATE messages SET state = ?2 WHERE seq = ?1 AND state = 5"));
        if (!u.Int(1, seq).Int(2, state).Done()) return u.Error("store: changing a set-aside message");
        if (state == 6 && sqlite3_changes(db_) > 0) LIAISON_RETURN_IF_ERROR(DropBody(seq));
      }
    }
    LIAISON_RETURN_IF_ERROR(ApplyClocks(batch));
    LIAISON_RETURN_IF_ERROR(ApplyThreads(batch));
    for (const auto& [agency, receipt] : batch.notices) LIAISON_RETURN_IF_ERROR(AddNotice(agency, receipt));
    for (int64_t seq : batch.notices_sent) LIAISON_RETURN_IF_ERROR(DeleteNotice(seq));
    LIAISON_RETURN_IF_ERROR(AppendLedger(batch.ledger));
    if (batch.trim_ledger_to > 0) LIAISON_RETURN_IF_ERROR(TrimLedger(batch.trim_ledger_to));
    if (batch.purge_before_ms > 0) {
      auto purged = PurgeDue(batch.purge_before_ms);
      if (!purged.ok()) return purged.status();
    }
    // Last: the erasure's own copies above are committed with it.
    for (const WriteBatch::Shred& shred : batch.shred) LIAISON_RETURN_IF_ERROR(ShredCase(shred.sender, shred.case_ref));
    return Status::Ok();
  };
  if (Status st = write(); !st.ok()) {
    Rollback();
    if (seqs) seqs->assign(batch.copies.size(), 0);
    return st;
  }
  Status committed = Commit();
  if (!committed.ok() && seqs) seqs->assign(batch.copies.size(), 0);
  return committed;
}

Status SqliteStore::Begin() {
  if (in_transaction_) return Status::Ok();
  LIAISON_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  in_transaction_ = true;
  if (Status st = SettleRing(); !st.ok()) {
    Rollback();
    return st;
  }
  return Status::Ok();
}

Status SqliteStore::Commit() {
  if (!in_transaction_) return Status::Ok();
  // A shred moves the ring to a new epoch before the commit: the commit
  // then holds the re-wrapped keys, or (failing) none of it happened.
  if (shred_pending_) {
    if (Status st = RotateRing(); !st.ok()) {
      Rollback();
      return st;
    }
  }
  Status st = Exec("COMMIT");
  if (!st.ok()) {
    Rollback();
    return st;
  }
  in_transaction_ = false;
  case_keys_.clear();
  shred_pending_ = false;
  // The store is at the new epoch: the old KEK goes now.
  if (ring_) ring_->Retire(staged_epoch_);
  staged_epoch_ = 0;
  return Status::Ok();
}

void SqliteStore::Rollback() {
  if (in_transaction_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  DiscardUnwrittenWalFrames(db_);
  in_transaction_ = false;
  case_keys_.clear();
  shred_pending_ = false;
  if (staged_epoch_ != 0) ring_->Abandon(staged_epoch_);
  staged_epoch_ = 0;
}

StatusOr<CaseKey> SqliteStore::CaseKeyFor(const std::string& sender, const std::string& case_hash) {
  const std::string id = sender + '\0' + case_hash;
  if (auto it = case_keys_.find(id); it != case_keys_.end()) return it->second;
  {
    Query q(db_, Prepare("SELECT epoch, wrapped FROM case_keys WHERE sender = ?1 AND case_hash = ?2"));
    const int rc = q.Text(1, sender).Blob(2, case_hash.data(), case_hash.size()).Step();
    if (rc == SQLITE_ROW) {
      const uint64_t epoch = static_cast<uint64_t>(q.ColumnInt(0));
      auto kek = ring_->Kek(epoch);
      auto key = kek ? UnwrapCaseKey(*kek, sender, case_hash, epoch, q.ColumnBlob(1)) : std::nullopt;
      if (!key) {
        return Status::PermissionDenied("store " + path_ + ": a case key does not open under the case-key ring " +
                                        ring_->path() + " (epoch " + std::to_string(epoch) +
                                        "): configure this store's ring");
      }
      case_keys_[id] = *key;
      return *key;
    }
    if (rc != SQLITE_DONE) return q.Error("store: reading a case key");
  }
  const CaseKey key = RandomSecretKey32();
  const uint64_t epoch = ring_->epoch();
  auto kek = ring_->Kek(epoch);
  auto wrapped = kek ? WrapCaseKey(*kek, sender, case_hash, epoch, key) : std::nullopt;
  if (!wrapped) return Status::Internal("store: cannot wrap a case key (OpenSSL AES-256-GCM failed, or the ring has no KEK)");
  Query put(db_, Prepare("INSERT INTO case_keys (sender, case_hash, epoch, wrapped) VALUES (?1, ?2, ?3, ?4)"));
  put.Text(1, sender).Blob(2, case_hash.data(), case_hash.size()).Int(3, static_cast<int64_t>(epoch));
  if (!put.Blob(4, wrapped->data(), wrapped->size()).Done()) return put.Error("store: writing a case key");
  case_keys_[id] = key;
  return key;
}

Status SqliteStore::ShredCase(const std::string& sender, const std::string& case_ref) {
  if (!ring_) return Status::Ok();
  const std::string h = CaseHash(key_, sender, case_ref);
  Query d(db_, Prepare("DELETE FROM case_keys WHERE sender = ?1 AND case_hash = ?2"));
  if (!d.Text(1, sender).Blob(2, h.data(), h.size()).Done()) return d.Error("store: destroying a case key");
  if (sqlite3_changes(db_) > 0) shred_pending_ = true;
  case_keys_.erase(sender + '\0' + h);
  return Status::Ok();
}

StatusOr<int64_t> SqliteStore::ShredUnused() {
  if (!ring_) return int64_t{0};
  Query d(db_, Prepare("DELETE FROM case_keys WHERE NOT EXISTS (SELECT 1 FROM messages m "
                       "WHERE m.sender = case_keys.sender AND m.case_hash = case_keys.case_hash)"));
  if (!d.Done()) return d.Error("store: destroying the keys of purged cases");
  const int64_t n = sqlite3_changes(db_);
  if (n > 0) {
    shred_pending_ = true;
    case_keys_.clear();
  }
  return n;
}

Status SqliteStore::RotateRing() {
  std::map<std::string, CaseKey> keys;
  {
    Query q(db_, Prepare("SELECT sender, case_hash, epoch, wrapped FROM case_keys"));
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      const std::string sender = q.ColumnText(0);
      const std::vector<uint8_t> hash = q.ColumnBlob(1);
      const std::string case_hash(hash.begin(), hash.end());
      const uint64_t epoch = static_cast<uint64_t>(q.ColumnInt(2));
      auto kek = ring_->Kek(epoch);
      auto key = kek ? UnwrapCaseKey(*kek, sender, case_hash, epoch, q.ColumnBlob(3)) : std::nullopt;
      if (!key) {
        return Status::PermissionDenied("store " + path_ + ": a case key does not open under the case-key ring " +
                                        ring_->path() + ": configure this store's ring");
      }
      keys[sender + '\0' + case_hash] = *key;
    }
    if (rc != SQLITE_DONE) return q.Error("store: reading the case keys");
  }
  auto staged = ring_->Stage(keys);
  if (!staged.ok()) return staged.status();
  staged_epoch_ = staged->epoch;  // abandoned by Rollback from here on
  for (const auto& [id, wrapped] : staged->wrapped) {
    const size_t zero = id.find('\0');
    const std::string sender = id.substr(0, zero), case_hash = id.substr(zero + 1);
    Query u(db_, Prepare("UPDATE case_keys SET epoch = ?3, wrapped = ?4 WHERE sender = ?1 AND case_hash = ?2"));
    u.Text(1, sender).Blob(2, case_hash.data(), case_hash.size()).Int(3, static_cast<int64_t>(staged->epoch));
    if (!u.Blob(4, wrapped.data(), wrapped.size()).Done()) return u.Error("store: re-wrapping the case keys");
  }
  LIAISON_RETURN_IF_ERROR(WriteKekMeta(staged->epoch, staged->kek));
  spdlog::info("event=case_keys_rotated epoch={} cases={}", staged->epoch, keys.size());
  return Status::Ok();
}


StatusOr<std::optional<std::vector<uint8_t>>> SqliteStore::FindReceipt(const std::string& sender,
                                                                const std::string& message_id) {
  Query q(db_, Prepare("SELECT receipt FROM receipts WHERE sender = ?1 AND message_id = ?2"));
  const int rc = q.Text(1, sender).Text(2, message_id).Step();
  if (rc == SQLITE_ROW) return std::optional<std::vector<uint8_t>>(q.ColumnBlob(0));
  if (rc == SQLITE_DONE) return std::optional<std::vector<uint8_t>>();
  return q.Error("store: reading a receipt");
}

StatusOr<size_t> SqliteStore::ScanReceiptKeys(ReceiptKeyCursor* after, size_t limit, const ReceiptKeyVisitor& each) {
  // By the primary key's index, in its order.
  Query q(db_, Prepare("SELECT sender, message_id, purge_after_ms FROM receipts "
                       "WHERE (sender, message_id) > (?1, ?2) ORDER BY sender, message_id LIMIT ?3"));
  q.Text(1, after->sender).Text(2, after->message_id).Int(3, static_cast<int64_t>(limit));
  ReceiptKeyCursor last;
  size_t n = 0;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    last.sender = q.ColumnText(0);
    last.message_id = q.ColumnText(1);
    each(last.sender, last.message_id, q.ColumnInt(2));
    ++n;
  }
  if (rc != SQLITE_DONE) return q.Error("store: reading the receipts' keys");
  if (n > 0) *after = std::move(last);
  return n;
}

Status SqliteStore::PutReceipt(const std::string& sender, const std::string& message_id,
                         const std::vector<uint8_t>& receipt, int64_t purge_after_ms) {
  Query q(db_, Prepare("INSERT OR REPLACE INTO receipts (sender, message_id, receipt, purge_after_ms) "
                       "VALUES (?1, ?2, ?3, ?4)"));
  q.Text(1, sender).Text(2, message_id).Blob(3, receipt.data(), receipt.size()).Int(4, purge_after_ms);
  if (!q.Done()) return q.Error("store: writing a receipt");
  return Status::Ok();
}

Status SqliteStore::Enqueue(const std::string& sender, const std::string& message_id,
                      const std::string& recipient, const std::string& case_ref,
                      const uint8_t* envelope, size_t size, int64_t now_ms, int64_t expires_ms,
                      int64_t purge_after_ms, const std::string& label, bool case_keyed, int64_t* seq) {
  if (seq) *seq = 0;
  const std::string case_hash = CaseHash(key_, sender, case_ref);
  std::optional<std::vector<uint8_t>> sealed;
  if (ring_ && case_keyed) {
    LIAISON_RETURN_IF_ERROR(SettleRing());
    auto key = CaseKeyFor(sender, case_hash);
    if (!key.ok()) return key.status();
    sealed = Seal(*key, CaseCopyAad(sender, message_id, recipient), envelope, size);
  } else {
    sealed = Seal(key_, CopyAad(sender, message_id, recipient), envelope, size);
  }
  if (!sealed) return Status::Internal("store: cannot encrypt the message (OpenSSL AES-256-GCM or its random source failed)");
  {
    Query q(db_, Prepare("INSERT OR IGNORE INTO messages (sender, message_id, recipient, case_hash, state, "
                         "created_ms, expires_ms, purge_after_ms, label) "
                         "VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8)"));
    q.Text(1, sender).Text(2, message_id).Text(3, recipient).Blob(4, case_hash.data(), case_hash.size());
    q.Int(5, now_ms).Int(6, expires_ms).Int(7, purge_after_ms).Text(8, label);
    if (!q.Done()) return q.Error("store: queueing a message");
  }
  // Ignored: this copy is queued already (its body too).
  if (sqlite3_changes(db_) > 0) {
    const int64_t inserted = sqlite3_last_insert_rowid(db_);
    Query b(db_, Prepare("INSERT INTO bodies (seq, sealed) VALUES (?1, ?2)"));
    if (!b.Int(1, inserted).Blob(2, sealed->data(), sealed->size()).Done()) {
      return b.Error("store: queueing a message");
    }
    if (seq) *seq = inserted;
  }
  Query d(db_, Prepare("INSERT OR IGNORE INTO disclosures (sender, case_hash, recipient) VALUES (?1, ?2, ?3)"));
  d.Text(1, sender).Blob(2, case_hash.data(), case_hash.size()).Text(3, recipient);
  if (!d.Done()) return d.Error("store: recording a disclosure");
  return Status::Ok();
}

StatusOr<std::vector<QueuedMessage>> SqliteStore::Pending(const std::string& recipient, int64_t after_seq,
                                                    int limit, std::vector<int64_t>* damaged_out) {
  std::vector<QueuedMessage> out;
  std::vector<int64_t> damaged;
  {
    // A row without its body is damaged like one whose body does not open.
    Query q(db_, Prepare("SELECT m.seq, m.sender, m.message_id, b.sealed, m.label, m.case_hash, k.epoch, k.wrapped "
                         "FROM messages m LEFT JOIN bodies b ON b.seq = m.seq "
                         "LEFT JOIN case_keys k ON k.sender = m.sender AND k.case_hash = m.case_hash "
                         "WHERE m.recipient = ?1 AND m.state = 0 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3"));
    q.Text(1, recipient).Int(2, after_seq).Int(3, limit);
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      QueuedMessage m;
      m.seq = q.ColumnInt(0);
      m.sender = q.ColumnText(1);
      m.message_id = q.ColumnText(2);
      std::vector<uint8_t> sealed = q.ColumnBlob(3);
      const std::vector<uint8_t> hash = q.ColumnBlob(5);
      std::optional<uint64_t> epoch;
      if (!q.ColumnIsNull(6)) epoch = static_cast<uint64_t>(q.ColumnInt(6));
      auto opened = OpenCopy(ring_.get(), key_, m.sender, m.message_id, recipient,
                             std::string(hash.begin(), hash.end()), epoch, q.ColumnBlob(7), sealed);
      if (!opened) {
        damaged.push_back(m.seq);  // set aside below, so it cannot block the queue
        continue;
      }
      m.envelope = std::move(*opened);
      m.label = q.ColumnText(4);
      out.push_back(std::move(m));
    }
    if (rc != SQLITE_DONE) return q.Error("store: reading the queue");
  }
  for (int64_t seq : damaged) {
    spdlog::error("event=store_damaged_message seq={} recipient={} action=set_aside "
                  "hint=\"restore the store from a backup to recover it\"", seq, recipient);
    if (damaged_out) {
      damaged_out->push_back(seq);
      continue;
    }
    Query u(db_, Prepare("UPDATE messages SET state = 5 WHERE seq = ?1"));
    if (!u.Int(1, seq).Done()) return u.Error("store: setting aside");
  }
  return out;
}

StatusOr<std::optional<AckedMessage>> SqliteStore::Ack(const std::string& recipient, int64_t seq,
                                                 int64_t now_ms) {
  std::optional<AckedMessage> sender;
  // The message itself is no longer needed once delivered: drop the copy now.
  Query u(db_, Prepare("UPDATE messages SET state = 2, acked_ms = ?2 "
                       "WHERE seq = ?1 AND recipient = ?3 AND state = 0 RETURNING sender, label"));
  int rc = u.Int(1, seq).Int(2, now_ms).Text(3, recipient).Step();
  if (rc == SQLITE_ROW) {
    sender = AckedMessage{u.ColumnText(0), u.ColumnText(1)};
    rc = u.Step();
  }
  if (rc != SQLITE_DONE) return u.Error("store: recording an ack");
  if (sender) LIAISON_RETURN_IF_ERROR(DropBody(seq));
  return sender;
}

Status SqliteStore::DropBody(int64_t seq) {
  Query d(db_, Prepare("DELETE FROM bodies WHERE seq = ?1"));
  if (!d.Int(1, seq).Done()) return d.Error("store: dropping a delivered copy");
  return Status::Ok();
}

StatusOr<std::vector<ExpiredMessage>> SqliteStore::ExpireDue(int64_t now_ms) {
  std::vector<ExpiredMessage> out;
  {
    auto due = Due(now_ms);
    if (!due.ok()) return due.status();
    out = std::move(*due);
  }
  if (out.empty()) return out;
  Query u(db_, Prepare("UPDATE messages SET state = 3 WHERE state = 0 AND expires_ms <= ?1"));
  if (!u.Int(1, now_ms).Done()) return u.Error("store: expiring messages");
  for (const ExpiredMessage& e : out) LIAISON_RETURN_IF_ERROR(DropBody(e.seq));
  return out;
}

StatusOr<std::vector<ExpiredMessage>> SqliteStore::Due(int64_t now_ms) {
  std::vector<ExpiredMessage> out;
  Query q(db_, Prepare("SELECT sender, message_id, recipient, label, seq FROM messages "
                       "WHERE state = 0 AND expires_ms <= ?1"));
  q.Int(1, now_ms);
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    out.push_back({q.ColumnText(0), q.ColumnText(1), q.ColumnText(2), q.ColumnText(3), q.ColumnInt(4)});
  }
  if (rc != SQLITE_DONE) return q.Error("store: finding expired messages");
  return out;
}

Status SqliteStore::ApplyClocks(const WriteBatch& batch) {
  for (const WriteBatch::ClockStart& c : batch.clocks_started) {
    // A clock already running for this copy (never expected: a resend is
    // answered from its receipt) keeps its start.
    Query q(db_, Prepare("INSERT OR IGNORE INTO clocks (sender, message_id, recipient, label, urgency, started_ms, "
                         "due_ms, purge_after_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
    q.Text(1, c.clock.sender).Text(2, c.clock.message_id).Text(3, c.clock.recipient).Text(4, c.clock.label);
    q.Int(5, c.clock.urgency).Int(6, c.clock.started_ms).Int(7, c.clock.due_ms).Int(8, c.purge_after_ms);
    if (!q.Done()) return q.Error("store: starting a response clock");
  }
  // Answered before fired in one batch: the response was stored first (the
  // core fires only what the store shows unanswered after a drain).
  for (const WriteBatch::ClockEnd& e : batch.clocks_answered) {
    Query q(db_, Prepare("UPDATE clocks SET answered_ms = ?4 WHERE sender = ?1 AND message_id = ?2 "
                         "AND recipient = ?3 AND answered_ms IS NULL"));
    if (!q.Text(1, e.sender).Text(2, e.message_id).Text(3, e.recipient).Int(4, e.at_ms).Done()) {
      return q.Error("store: stopping a response clock");
    }
  }
  for (const WriteBatch::ClockEnd& e : batch.clocks_fired) {
    Query q(db_, Prepare("UPDATE clocks SET fired_ms = ?4 WHERE sender = ?1 AND message_id = ?2 "
                         "AND recipient = ?3 AND fired_ms IS NULL AND answered_ms IS NULL"));
    if (!q.Text(1, e.sender).Text(2, e.message_id).Text(3, e.recipient).Int(4, e.at_ms).Done()) {
      return q.Error("store: firing a response clock");
    }
  }
  for (const WriteBatch::ClocksWithdrawn& w : batch.clocks_withdrawn) {
    Query q(db_, Prepare("DELETE FROM clocks WHERE sender = ?1 AND substr(label, 1, length(?2) + 1) = ?2 || '|'"));
    if (!q.Text(1, w.sender).Text(2, w.case_pseudonym).Done()) {
      return q.Error("store: forgetting a withdrawn case's response clocks");
    }
  }
  return Status::Ok();
}

Status SqliteStore::ApplyThreads(const WriteBatch& batch) {
  for (const WriteBatch::ThreadStart& t : batch.threads) {
    // A reference is random (128 bits): one seen before is a bug or a
    // resend committed twice, and keeps its first row.
    Query q(db_, Prepare("INSERT OR IGNORE INTO threads (ref, holder, root, origin, handling, purpose, circle, "
                         "onward, purge_after_ms, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"));
    q.Text(1, t.thread.ref).Text(2, t.thread.holder).Text(3, t.thread.root).Text(4, t.thread.origin);
    q.Int(5, t.thread.handling).Text(6, t.thread.purpose).Text(7, JoinList(t.thread.circle));
    q.Text(8, JoinList(t.thread.onward)).Int(9, t.purge_after_ms).Text(10, t.thread.message_id);
    if (!q.Done()) return q.Error("store: recording a thread reference");
  }
  for (const WriteBatch::Grant& g : batch.grants) {
    for (const std::string& grantee : g.grantees) {
      // Granted twice: kept as long as the later grant is.
      Query q(db_, Prepare("INSERT INTO thread_grants (root, grantee, purge_after_ms) VALUES (?1, ?2, ?3) "
                           "ON CONFLICT (root, grantee) DO UPDATE SET purge_after_ms = "
                           "max(purge_after_ms, excluded.purge_after_ms)"));
      q.Text(1, g.root).Text(2, grantee).Int(3, g.purge_after_ms);
      if (!q.Done()) return q.Error("store: recording a permission grant");
    }
  }
  return Status::Ok();
}

StatusOr<std::optional<Thread>> SqliteStore::FindThread(const std::string& ref) {
  Query q(db_, Prepare("SELECT holder, root, origin, handling, purpose, circle, onward, message_id FROM threads "
                       "WHERE ref = ?1"));
  q.Text(1, ref);
  const int rc = q.Step();
  if (rc == SQLITE_DONE) return std::optional<Thread>();
  if (rc != SQLITE_ROW) return q.Error("store: reading a thread");
  Thread t;
  t.ref = ref;
  t.holder = q.ColumnText(0);
  t.root = q.ColumnText(1);
  t.origin = q.ColumnText(2);
  t.handling = static_cast<int32_t>(q.ColumnInt(3));
  t.purpose = q.ColumnText(4);
  t.circle = SplitList(q.ColumnText(5));
  t.onward = SplitList(q.ColumnText(6));
  t.message_id = q.ColumnText(7);
  Query g(db_, Prepare("SELECT grantee FROM thread_grants WHERE root = ?1 ORDER BY grantee"));
  g.Text(1, t.root);
  int grc;
  while ((grc = g.Step()) == SQLITE_ROW) t.granted.push_back(g.ColumnText(0));
  if (grc != SQLITE_DONE) return g.Error("store: reading a thread's permission grants");
  return std::optional<Thread>(std::move(t));
}

StatusOr<std::vector<Clock>> SqliteStore::DueClocks(int64_t now_ms, int limit) {
  Query q(db_, Prepare("SELECT sender, message_id, recipient, label, urgency, started_ms, due_ms FROM clocks "
                       "WHERE fired_ms IS NULL AND answered_ms IS NULL AND due_ms <= ?1 "
                       "ORDER BY due_ms, sender, message_id, recipient LIMIT ?2"));
  q.Int(1, now_ms).Int(2, limit);
  std::vector<Clock> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    out.push_back({q.ColumnText(0), q.ColumnText(1), q.ColumnText(2), q.ColumnText(3),
                   static_cast<int32_t>(q.ColumnInt(4)), q.ColumnInt(5), q.ColumnInt(6)});
  }
  if (rc != SQLITE_DONE) return q.Error("store: finding response clocks past their deadline");
  return out;
}

StatusOr<std::optional<int64_t>> SqliteStore::OldestOpenClock() {
  Query q(db_, Prepare("SELECT MIN(started_ms) FROM clocks WHERE answered_ms IS NULL"));
  const int rc = q.Step();
  if (rc != SQLITE_ROW) return q.Error("store: reading the oldest response clock");
  if (q.ColumnIsNull(0)) return std::optional<int64_t>();
  return std::optional<int64_t>(q.ColumnInt(0));
}

StatusOr<int64_t> SqliteStore::PurgeDue(int64_t now_ms) {
  int64_t n = 0;
  {
    // Set-aside rows keep their bodies until purged.
    Query b(db_, Prepare("DELETE FROM bodies WHERE seq IN (SELECT seq FROM messages "
                         "WHERE state <> 0 AND purge_after_ms <= ?1)"));
    if (!b.Int(1, now_ms).Done()) return b.Error("store: purging");
  }
  for (const char* sql : {"DELETE FROM messages WHERE state <> 0 AND purge_after_ms <= ?1",
                          "DELETE FROM receipts WHERE purge_after_ms <= ?1",
                          "DELETE FROM clocks WHERE purge_after_ms <= ?1",
                          "DELETE FROM threads WHERE purge_after_ms <= ?1",
                          "DELETE FROM thread_grants WHERE purge_after_ms <= ?1"}) {
    Query q(db_, Prepare(sql));
    if (!q.Int(1, now_ms).Done()) return q.Error("store: purging");
    n += sqlite3_changes(db_);
  }
  // Retention: a case with no row left loses its key (shredded like an
  // erased one at this transaction's commit).
  auto unused = ShredUnused();
  if (!unused.ok()) return unused.status();
  return n;
}

StatusOr<std::unordered_map<std::string, int64_t>> SqliteStore::QueueDepths() {
  Query q(db_, Prepare("SELECT recipient, COUNT(*) FROM messages WHERE state = 0 GROUP BY recipient"));
  std::unordered_map<std::string, int64_t> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) out[q.ColumnText(0)] = q.ColumnInt(1);
  if (rc != SQLITE_DONE) return q.Error("store: counting queues");
  return out;
}

StatusOr<std::vector<std::string>> SqliteStore::Disclosures(const std::string& sender,
                                                      const std::string& case_ref) {
  const std::string h = CaseHash(key_, sender, case_ref);
  Query q(db_, Prepare("SELECT recipient FROM disclosures WHERE sender = ?1 AND case_hash = ?2 ORDER BY recipient"));
  q.Text(1, sender).Blob(2, h.data(), h.size());
  std::vector<std::string> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) out.push_back(q.ColumnText(0));
  if (rc != SQLITE_DONE) return q.Error("store: reading disclosures");
  return out;
}

StatusOr<std::vector<ExpiredMessage>> SqliteStore::QueuedOfCase(const std::string& sender,
                                                          const std::string& case_ref) {
  const std::string h = CaseHash(key_, sender, case_ref);
  std::vector<ExpiredMessage> out;
  Query q(db_, Prepare("SELECT message_id, recipient, label, seq FROM messages "
                       "WHERE sender = ?1 AND case_hash = ?2 AND state = 0"));
  q.Text(1, sender).Blob(2, h.data(), h.size());
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    out.push_back({sender, q.ColumnText(0), q.ColumnText(1), q.ColumnText(2), q.ColumnInt(3)});
  }
  if (rc != SQLITE_DONE) return q.Error("store: finding a case's queued messages");
  return out;
}

StatusOr<std::vector<ExpiredMessage>> SqliteStore::EraseQueued(const std::string& sender,
                                                         const std::string& case_ref) {
  const std::string h = CaseHash(key_, sender, case_ref);
  auto queued = QueuedOfCase(sender, case_ref);
  if (!queued.ok()) return queued.status();
  std::vector<ExpiredMessage> out = std::move(*queued);
  Query u(db_, Prepare("UPDATE messages SET state = 4 WHERE sender = ?1 AND case_hash = ?2 "
                       "AND state = 0"));
  if (!u.Text(1, sender).Blob(2, h.data(), h.size()).Done()) return u.Error("store: erasing a case");
  for (const ExpiredMessage& e : out) LIAISON_RETURN_IF_ERROR(DropBody(e.seq));
  return out;
}

Status SqliteStore::AddNotice(const std::string& agency, const std::vector<uint8_t>& receipt) {
  Query q(db_, Prepare("INSERT INTO notices (agency, receipt) VALUES (?1, ?2)"));
  if (!q.Text(1, agency).Blob(2, receipt.data(), receipt.size()).Done()) {
    return q.Error("store: writing a notice");
  }
  return Status::Ok();
}

StatusOr<std::vector<Notice>> SqliteStore::Notices(const std::string& agency, int limit) {
  Query q(db_, Prepare("SELECT seq, receipt FROM notices WHERE agency = ?1 ORDER BY seq LIMIT ?2"));
  q.Text(1, agency).Int(2, limit);
  std::vector<Notice> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) out.push_back({q.ColumnInt(0), q.ColumnBlob(1)});
  if (rc != SQLITE_DONE) return q.Error("store: reading notices");
  return out;
}

Status SqliteStore::DeleteNotice(int64_t seq) {
  Query q(db_, Prepare("DELETE FROM notices WHERE seq = ?1"));
  if (!q.Int(1, seq).Done()) return q.Error("store: deleting a notice");
  return Status::Ok();
}

Status SqliteStore::AppendLedger(const std::vector<std::pair<uint64_t, std::string>>& lines) {
  if (lines.empty()) return Status::Ok();
  // One row for the batch: a statement per record would cost more than the
  // records themselves.
  std::string text;
  for (const auto& [seq, line] : lines) {
    if (line.find('\n') != std::string::npos) return Status::Internal("store: a ledger record spans lines");
    if (!text.empty()) text += '\n';
    text += line;
  }
  Query q(db_, Prepare("INSERT INTO ledger_tail (seq, first_seq, lines) VALUES (?1, ?2, ?3)"));
  q.Int(1, static_cast<int64_t>(lines.back().first)).Int(2, static_cast<int64_t>(lines.front().first)).Text(3, text);
  if (!q.Done()) return q.Error("store: writing ledger records");
  Query m(db_, Prepare("INSERT OR REPLACE INTO meta (name, value) VALUES ('ledger_seq', ?1)"));
  if (!m.Int(1, static_cast<int64_t>(lines.back().first)).Done()) {
    return m.Error("store: writing the ledger position");
  }
  return Status::Ok();
}

Status SqliteStore::TrimLedger(uint64_t up_to_seq) {
  Query q(db_, Prepare("DELETE FROM ledger_tail WHERE seq <= ?1"));
  if (!q.Int(1, static_cast<int64_t>(up_to_seq)).Done()) return q.Error("store: trimming ledger records");
  return Status::Ok();
}

StatusOr<LedgerTail> SqliteStore::ReadLedgerTail() {
  LedgerTail tail;
  {
    Query q(db_, Prepare("SELECT value FROM meta WHERE name = 'ledger_seq'"));
    const int rc = q.Step();
    if (rc == SQLITE_ROW) tail.committed_seq = static_cast<uint64_t>(q.ColumnInt(0));
    else if (rc != SQLITE_DONE) return q.Error("store: reading the ledger position");
  }
  Query q(db_, Prepare("SELECT first_seq, lines FROM ledger_tail ORDER BY seq"));
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    uint64_t seq = static_cast<uint64_t>(q.ColumnInt(0));
    const std::string text = q.ColumnText(1);
    for (size_t start = 0; start <= text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      tail.lines.emplace_back(seq++, text.substr(start, end - start));
      start = end + 1;
    }
  }
  if (rc != SQLITE_DONE) return q.Error("store: reading ledger records");
  return tail;
}

StatusOr<std::vector<QueueSummary>> SqliteStore::QueueSummaries() {
  Query q(db_, Prepare("SELECT recipient, SUM(state = 0), MIN(CASE WHEN state = 0 THEN created_ms END), "
                       "SUM(state = 5) FROM messages WHERE (state = 0 OR state = 5) GROUP BY recipient ORDER BY recipient"));
  std::vector<QueueSummary> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    out.push_back({q.ColumnText(0), q.ColumnInt(1), q.ColumnInt(2), q.ColumnInt(3)});
  }
  if (rc != SQLITE_DONE) return q.Error("store: reading the queues");
  return out;
}

StatusOr<std::vector<QueueEntry>> SqliteStore::QueueEntries(const std::string& recipient, int limit) {
  Query q(db_, Prepare("SELECT seq, sender, message_id, label, state, created_ms FROM messages "
                       "WHERE recipient = ?1 AND (state = 0 OR state = 5) ORDER BY seq LIMIT ?2"));
  q.Text(1, recipient).Int(2, limit);
  std::vector<QueueEntry> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    QueueEntry e;
    e.seq = q.ColumnInt(0);
    e.sender = q.ColumnText(1);
    e.message_id = q.ColumnText(2);
    // Only the type of the label is shown.
    e.type = CopyLabel::Parse(q.ColumnText(3)).type;
    e.set_aside = q.ColumnInt(4) == 5;
    e.created_ms = q.ColumnInt(5);
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return q.Error("store: reading the queue of " + recipient);
  return out;
}

StatusOr<std::vector<ExpiredMessage>> SqliteStore::SetAside(const std::string& recipient) {
  Query q(db_, Prepare("SELECT sender, message_id, recipient, label, seq FROM messages "
                       "WHERE recipient = ?1 AND state = 5 ORDER BY seq"));
  q.Text(1, recipient);
  std::vector<ExpiredMessage> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    out.push_back({q.ColumnText(0), q.ColumnText(1), q.ColumnText(2), q.ColumnText(3), q.ColumnInt(4)});
  }
  if (rc != SQLITE_DONE) return q.Error("store: reading the set-aside messages of " + recipient);
  return out;
}

Status SqliteStore::Backup(const std::string& source, const std::string& destination) {
  struct stat st {};
  if (::stat(destination.c_str(), &st) == 0) {
    return Status::InvalidArgument("backup: " + destination + " exists; back up into a new folder");
  }
  if (::stat(source.c_str(), &st) != 0) return Status::NotFound("backup: no store at " + source);
  sqlite3* from = nullptr;
  sqlite3* to = nullptr;
  auto close_both = [&] {
    if (from) sqlite3_close(from);
    if (to) sqlite3_close(to);
  };
  if (sqlite3_open_v2(source.c_str(), &from, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    Status st = Status::IoError(SqliteError(from, "backup: cannot open the store " + source));
    close_both();
    return st;
  }
  sqlite3_busy_timeout(from, 5000);
  if (Status made = MakeOwnerOnlySqliteFile(destination).WithContext("backup"); !made.ok()) {
    close_both();
    return made;
  }
  if (sqlite3_open_v2(destination.c_str(), &to, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    Status st = Status::IoError(SqliteError(to, "backup: cannot open " + destination));
    close_both();
    return st;
  }
  sqlite3_backup* backup = sqlite3_backup_init(to, "main", from, "main");
  if (!backup) {
    Status st = Status::IoError(SqliteError(to, "backup: cannot start the backup of " + source));
    close_both();
    return st;
  }
  // All pages in one step: one read transaction, so one committed state
  // (WAL: the broker's writer is not blocked meanwhile). A busy or locked
  // source is retried for a bounded time.
  int rc = SQLITE_OK;
  for (int attempt = 0; attempt < 100; ++attempt) {
    rc = sqlite3_backup_step(backup, -1);
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) break;
    sqlite3_sleep(50);
  }
  const int finish = sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE || finish != SQLITE_OK) {
    Status st = Status::IoError(std::string("backup of ") + source + " failed: " +
                                sqlite3_errstr(rc != SQLITE_DONE ? rc : finish));
    close_both();
    ::unlink(destination.c_str());
    return st;
  }
  std::string verdict;
  {
    sqlite3_stmt* check = nullptr;
    if (sqlite3_prepare_v2(to, "PRAGMA integrity_check", -1, &check, nullptr) == SQLITE_OK) {
      while ((rc = sqlite3_step(check)) == SQLITE_ROW) {
        const auto* text = sqlite3_column_text(check, 0);
        if (text) verdict += reinterpret_cast<const char*>(text);
      }
      if (rc != SQLITE_DONE) verdict = "cannot read the copy";
    } else {
      verdict = "cannot check the copy";
    }
    sqlite3_finalize(check);
  }
  // Durable before it is reported done.
  const int closed = sqlite3_close(to);
  to = nullptr;
  close_both();
  if (verdict != "ok" || closed != SQLITE_OK) {
    ::unlink(destination.c_str());
    return Status::Corruption("backup: the copy of " + source + " failed its integrity check (" +
                              verdict.substr(0, 200) + ")");
  }
  const int fd = ::open(destination.c_str(), O_RDONLY | O_CLOEXEC);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced) return Status::IoError("backup: cannot sync " + destination + ": " + std::strerror(errno));
  return Status::Ok();
}

namespace {

// A statement of the export's own connection, finalized on scope exit.
class OwnedStatement {
 public:
  OwnedStatement(sqlite3* db, const std::string& sql) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s_, nullptr) != SQLITE_OK) {
      sqlite3_finalize(s_);
      s_ = nullptr;
    }
  }
  ~OwnedStatement() { sqlite3_finalize(s_); }
  OwnedStatement(const OwnedStatement&) = delete;
  OwnedStatement& operator=(const OwnedStatement&) = delete;
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

std::string ColumnString(sqlite3_stmt* s, int i) {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(s, i));
  return p ? std::string(p, sqlite3_column_bytes(s, i)) : std::string();
}
std::optional<std::string> ColumnOptionalString(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return ColumnString(s, i);
}

}  // namespace

StatusOr<StoreTotals> SqliteStore::Export(const std::string& path, const StoreKey& key, RowSink* sink,
                                          size_t part_rows) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::NotFound("store " + path + ": no such file (check the path)");
  sqlite3* db = nullptr;
  // Read-write without create: the exclusive lock needs a writer's open.
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    Status failed = Status::IoError(SqliteError(db, "cannot open the store " + path));
    sqlite3_close(db);
    return failed;
  }
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> owned(db, &sqlite3_close);
  sqlite3_busy_timeout(db, 0);  // in use is an answer, not something to wait for
  auto exec = [&](const char* sql, const std::string& what) -> Status {
    char* error = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &error) == SQLITE_OK) return Status::Ok();
    const int code = sqlite3_errcode(db) & 0xff;
    std::string message = SqliteError(db, "store " + path + ": " + what);
    sqlite3_free(error);
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED) {
      return Status::Unavailable("store " + path + " is in use (a broker, or another tool, has it open): stop the "
                                 "broker (systemctl stop liaison-broker) and run this again");
    }
    return Status::IoError(message);
  };
  // In WAL mode, the exclusive locking mode's first transaction takes the
  // database for this connection until it closes; BEGIN EXCLUSIVE fails at
  // once while any other connection (a running broker's) has it open.
  LIAISON_RETURN_IF_ERROR(exec("PRAGMA locking_mode=EXCLUSIVE", "setting the locking mode"));
  LIAISON_RETURN_IF_ERROR(exec("BEGIN EXCLUSIVE", "locking it"));
  auto query = [&](const std::string& sql, const std::string& what,
                   const std::function<Status(sqlite3_stmt*)>& row) -> Status {
    OwnedStatement q(db, sql);
    if (!q.get()) return Status::IoError(SqliteError(db, "store " + path + ": " + what));
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) LIAISON_RETURN_IF_ERROR(row(q.get()));
    if (rc != SQLITE_DONE) return Status::IoError(SqliteError(db, "store " + path + ": " + what));
    return Status::Ok();
  };
  {
    std::string verdict;
    LIAISON_RETURN_IF_ERROR(query("PRAGMA quick_check", "checking its integrity", [&](sqlite3_stmt* s) {
      verdict += ColumnString(s, 0);
      return Status::Ok();
    }));
    if (verdict != "ok") {
      return Status::Corruption("store " + path + " failed its integrity check (" + verdict.substr(0, 200) +
                                "); restore it from a backup before migrating");
    }
  }
  // Everything in the file must be something this build copies.
  static const std::set<std::string> kTables = {"meta", "messages", "bodies", "receipts",
                                                "disclosures", "notices", "ledger_tail", "case_keys", "clocks",
                                                "threads", "thread_grants"};
  LIAISON_RETURN_IF_ERROR(query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                                "listing its tables", [&](sqlite3_stmt* s) {
                                  const std::string name = ColumnString(s, 0);
                                  if (kTables.count(name)) return Status::Ok();
                                  return Status::InvalidArgument(
                                      "store " + path + " has a table this version does not know (" + name +
                                      "): migrate with the liaison version that wrote it");
                                }));
  StoreTotals totals;
  bool key_checked = false;
  LIAISON_RETURN_IF_ERROR(query("SELECT name, value FROM meta", "reading meta", [&](sqlite3_stmt* s) {
    const std::string name = ColumnString(s, 0);
    if (name == "key_check") {
      const std::string v = ColumnString(s, 1);
      if (!KeyCheckOpens(key, std::vector<uint8_t>(v.begin(), v.end()))) {
        return Status::PermissionDenied("store " + path +
                                        ": the store key does not match this database (wrong key file?)");
      }
      key_checked = true;
    } else if (name == "ledger_seq") {
      totals.ledger_position = sqlite3_column_int64(s, 1);
    } else if (name == "case_kek_epoch") {
      totals.case_kek_epoch = sqlite3_column_int64(s, 1);
    } else if (name == "case_kek_check") {
      totals.case_kek_check = ColumnString(s, 1);
    } else {
      return Status::InvalidArgument("store " + path + " has a setting this version does not know (meta " + name +
                                     "): migrate with the liaison version that wrote it");
    }
    return Status::Ok();
  }));
  if (!key_checked) {
    return Status::InvalidArgument("store " + path + " has no key check: it was never opened by a broker; "
                                   "nothing to migrate");
  }
  // Columns that older stores lack or still use (SqliteStore::Open moves
  // them): a label, and copies kept in the message row.
  bool has_label = false, has_sealed = false;
  LIAISON_RETURN_IF_ERROR(query("PRAGMA table_info(messages)", "reading its tables", [&](sqlite3_stmt* s) {
    const std::string column = ColumnString(s, 1);
    has_label |= column == "label";
    has_sealed |= column == "sealed";
    return Status::Ok();
  }));

  Rows part;
  auto flush = [&](bool always) -> Status {
    if (part.size() == 0 || (!always && part.size() < part_rows)) return Status::Ok();
    LIAISON_RETURN_IF_ERROR(sink->Put(part));
    part = Rows();
    return Status::Ok();
  };
  auto count = [&](const std::string& sql, int64_t* out) {
    return query(sql, "counting rows", [&](sqlite3_stmt* s) {
      *out = sqlite3_column_int64(s, 0);
      return Status::Ok();
    });
  };
  auto old_bodies = [&](const std::string& columns) -> std::string {
    if (!has_sealed) return "";
    return " UNION ALL SELECT " + columns + " FROM messages WHERE sealed IS NOT NULL "
           "AND seq NOT IN (SELECT seq FROM bodies)";
  };
  LIAISON_RETURN_IF_ERROR(count("SELECT COUNT(*) FROM messages", &totals.counts.messages));
  LIAISON_RETURN_IF_ERROR(count("SELECT COUNT(*) FROM (SELECT seq FROM bodies" + old_bodies("seq") + ")",
                                &totals.counts.bodies));
  LIAISON_RETURN_IF_ERROR(count("SELECT COUNT(*) FROM receipts", &totals.counts.receipts));
  LIAISON_RETURN_IF_ERROR(count("SELECT COUNT(*) FROM disclosures", &totals.counts.disclosures));
  LIAISON_RETURN_IF_ERROR(count("SELECT COUNT(*) FROM notices", &totals.counts.notices));
  LIAISON_RETURN_IF_ERROR(count("SELECT COUNT(*) FROM ledger_tail", &totals.counts.ledger_tail));
  // Tables that stores of older brokers lack: case keys (before erasure
  // shredded), clocks (before response deadlines), threads (before case
  // threads), thread_grants (before permission grants). Counted if there.
  auto optional_table = [&](const std::string& table, bool* has, int64_t* rows) -> Status {
    *has = false;
    LIAISON_RETURN_IF_ERROR(query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '" + table + "'",
                                  "listing its tables", [&](sqlite3_stmt*) {
                                    *has = true;
                                    return Status::Ok();
                                  }));
    return *has ? count("SELECT COUNT(*) FROM " + table, rows) : Status::Ok();
  };
  bool has_case_keys, has_clocks, has_threads, has_grants;
  LIAISON_RETURN_IF_ERROR(optional_table("case_keys", &has_case_keys, &totals.counts.case_keys));
  LIAISON_RETURN_IF_ERROR(optional_table("clocks", &has_clocks, &totals.counts.clocks));
  LIAISON_RETURN_IF_ERROR(optional_table("threads", &has_threads, &totals.counts.threads));
  LIAISON_RETURN_IF_ERROR(optional_table("thread_grants", &has_grants, &totals.counts.grants));
  // AUTOINCREMENT's high-water marks: numbers of rows already purged are
  // not given out again.
  LIAISON_RETURN_IF_ERROR(count("SELECT COALESCE(MAX(seq), 0) FROM messages", &totals.last_message_seq));
  LIAISON_RETURN_IF_ERROR(count("SELECT COALESCE(MAX(seq), 0) FROM notices", &totals.last_notice_seq));
  LIAISON_RETURN_IF_ERROR(query("SELECT name, seq FROM sqlite_sequence", "reading its numbering",
                                [&](sqlite3_stmt* s) {
                                  const std::string name = ColumnString(s, 0);
                                  const int64_t seq = sqlite3_column_int64(s, 1);
                                  if (name == "messages") totals.last_message_seq = std::max(totals.last_message_seq, seq);
                                  if (name == "notices") totals.last_notice_seq = std::max(totals.last_notice_seq, seq);
                                  return Status::Ok();
                                }));

  LIAISON_RETURN_IF_ERROR(query(
      std::string("SELECT seq, sender, message_id, recipient, case_hash, state, created_ms, expires_ms, acked_ms, "
                  "purge_after_ms, ") +
          (has_label ? "label" : "NULL") + " FROM messages ORDER BY seq",
      "reading messages", [&](sqlite3_stmt* s) {
        MessageRow m;
        m.seq = sqlite3_column_int64(s, 0);
        m.sender = ColumnString(s, 1);
        m.message_id = ColumnString(s, 2);
        m.recipient = ColumnString(s, 3);
        m.case_hash = ColumnOptionalString(s, 4);
        m.state = sqlite3_column_int64(s, 5);
        m.created_ms = sqlite3_column_int64(s, 6);
        m.expires_ms = sqlite3_column_int64(s, 7);
        if (sqlite3_column_type(s, 8) != SQLITE_NULL) m.acked_ms = sqlite3_column_int64(s, 8);
        m.purge_after_ms = sqlite3_column_int64(s, 9);
        m.label = ColumnOptionalString(s, 10);
        part.messages.push_back(std::move(m));
        return flush(false);
      }));
  LIAISON_RETURN_IF_ERROR(query("SELECT seq, sealed FROM bodies" + old_bodies("seq, sealed") + " ORDER BY seq", "reading bodies",
                                [&](sqlite3_stmt* s) {
                                  part.bodies.push_back({sqlite3_column_int64(s, 0), ColumnString(s, 1)});
                                  return flush(false);
                                }));
  LIAISON_RETURN_IF_ERROR(query("SELECT sender, message_id, receipt, purge_after_ms FROM receipts",
                                "reading receipts", [&](sqlite3_stmt* s) {
                                  part.receipts.push_back({ColumnString(s, 0), ColumnString(s, 1), ColumnString(s, 2),
                                                           sqlite3_column_int64(s, 3)});
                                  return flush(false);
                                }));
  LIAISON_RETURN_IF_ERROR(query("SELECT sender, case_hash, recipient FROM disclosures", "reading disclosures",
                                [&](sqlite3_stmt* s) {
                                  part.disclosures.push_back(
                                      {ColumnString(s, 0), ColumnString(s, 1), ColumnString(s, 2)});
                                  return flush(false);
                                }));
  LIAISON_RETURN_IF_ERROR(query("SELECT seq, agency, receipt FROM notices ORDER BY seq", "reading notices",
                                [&](sqlite3_stmt* s) {
                                  part.notices.push_back(
                                      {sqlite3_column_int64(s, 0), ColumnString(s, 1), ColumnString(s, 2)});
                                  return flush(false);
                                }));
  LIAISON_RETURN_IF_ERROR(query("SELECT seq, first_seq, lines FROM ledger_tail ORDER BY seq",
                                "reading ledger records", [&](sqlite3_stmt* s) {
                                  part.ledger_tail.push_back(
                                      {sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), ColumnString(s, 2)});
                                  return flush(false);
                                }));
  if (has_case_keys) {
    LIAISON_RETURN_IF_ERROR(query("SELECT sender, case_hash, epoch, wrapped FROM case_keys", "reading case keys",
                                  [&](sqlite3_stmt* s) {
                                    part.case_keys.push_back({ColumnString(s, 0), ColumnString(s, 1),
                                                              sqlite3_column_int64(s, 2), ColumnString(s, 3)});
                                    return flush(false);
                                  }));
  }
  if (has_clocks) {
    LIAISON_RETURN_IF_ERROR(query(
        "SELECT sender, message_id, recipient, label, urgency, started_ms, due_ms, purge_after_ms, fired_ms, "
        "answered_ms FROM clocks ORDER BY sender, message_id, recipient",
        "reading response clocks", [&](sqlite3_stmt* s) {
          ClockRow c;
          c.sender = ColumnString(s, 0);
          c.message_id = ColumnString(s, 1);
          c.recipient = ColumnString(s, 2);
          c.label = ColumnString(s, 3);
          c.urgency = sqlite3_column_int64(s, 4);
          c.started_ms = sqlite3_column_int64(s, 5);
          c.due_ms = sqlite3_column_int64(s, 6);
          c.purge_after_ms = sqlite3_column_int64(s, 7);
          if (sqlite3_column_type(s, 8) != SQLITE_NULL) c.fired_ms = sqlite3_column_int64(s, 8);
          if (sqlite3_column_type(s, 9) != SQLITE_NULL) c.answered_ms = sqlite3_column_int64(s, 9);
          part.clocks.push_back(std::move(c));
          return flush(false);
        }));
  }
  if (has_threads) {
    LIAISON_RETURN_IF_ERROR(query(
        "SELECT ref, holder, root, origin, handling, purpose, circle, onward, purge_after_ms, message_id FROM threads "
        "ORDER BY ref",
        "reading case threads", [&](sqlite3_stmt* s) {
          ThreadRow t;
          t.ref = ColumnString(s, 0);
          t.holder = ColumnString(s, 1);
          t.root = ColumnString(s, 2);
          t.origin = ColumnString(s, 3);
          t.handling = sqlite3_column_int64(s, 4);
          t.purpose = ColumnString(s, 5);
          t.circle = ColumnString(s, 6);
          t.onward = ColumnString(s, 7);
          t.purge_after_ms = sqlite3_column_int64(s, 8);
          t.message_id = ColumnString(s, 9);
          part.threads.push_back(std::move(t));
          return flush(false);
        }));
  }
  if (has_grants) {
    LIAISON_RETURN_IF_ERROR(query("SELECT root, grantee, purge_after_ms FROM thread_grants ORDER BY root, grantee",
                                  "reading permission grants", [&](sqlite3_stmt* s) {
                                    GrantRow g;
                                    g.root = ColumnString(s, 0);
                                    g.grantee = ColumnString(s, 1);
                                    g.purge_after_ms = sqlite3_column_int64(s, 2);
                                    part.grants.push_back(std::move(g));
                                    return flush(false);
                                  }));
  }
  LIAISON_RETURN_IF_ERROR(flush(true));
  // Nothing was written: the transaction only held the lock.
  LIAISON_RETURN_IF_ERROR(exec("ROLLBACK", "ending the export"));
  return totals;
}

}  // namespace liaison::store

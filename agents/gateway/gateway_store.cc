#include "gateway_store.h"

#include <sqlite3.h>

#include <chrono>

#include "liaison/keys.h"

namespace liaison::gateway {
namespace {

int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// One prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt& Bind(int i, const std::string& text) {
    sqlite3_bind_text(s_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, std::span<const uint8_t> blob) {
    sqlite3_bind_blob(s_, i, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t value) {
    sqlite3_bind_int64(s_, i, value);
    return *this;
  }
  int Step() { return s_ ? sqlite3_step(s_) : SQLITE_ERROR; }
  std::string Text(int i) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p ? std::string(p, sqlite3_column_bytes(s_, i)) : std::string();
  }
  std::vector<uint8_t> Blob(int i) {
    const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(s_, i));
    return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(s_, i)) : std::vector<uint8_t>();
  }
  int64_t Int(int i) { return sqlite3_column_int64(s_, i); }
  bool IsNull(int i) { return sqlite3_column_type(s_, i) == SQLITE_NULL; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

}  // namespace

StatusOr<std::unique_ptr<GatewayStore>> GatewayStore::Open(const std::string& path) {
  std::unique_ptr<GatewayStore> store(new GatewayStore());
  store->path_ = path;
  // Messages are case data: owner-only, whatever the umask (SQLite gives
  // the -wal and -shm files it makes later this file's mode).
  if (auto st = MakeOwnerOnlySqliteFile(path); !st.ok()) {
    return st.WithContext("gateway state file");
  }
  if (sqlite3_open_v2(path.c_str(), &store->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr) != SQLITE_OK) {
    return Status::IoError("cannot open the gateway state file " + path + ": " +
                           sqlite3_errmsg(store->db_));
  }
  sqlite3_busy_timeout(store->db_, 5000);
  char* err = nullptr;
  if (sqlite3_exec(store->db_,
                   // secure_delete: a deleted message's bytes are zeroed, not
                   // left in free pages (see Scrub for the WAL).
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;"
                   "CREATE TABLE IF NOT EXISTS outgoing ("
                   " seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
                   " digest TEXT NOT NULL, envelope BLOB, receipt BLOB,"
                   " accepted_ms INTEGER NOT NULL, answered_ms INTEGER);"
                   "CREATE INDEX IF NOT EXISTS outgoing_pending ON outgoing(seq) WHERE receipt IS NULL;"
                   "CREATE TABLE IF NOT EXISTS notices ("
                   " id TEXT NOT NULL, recipient TEXT NOT NULL, receipt BLOB NOT NULL,"
                   " PRIMARY KEY (id, recipient));"
                   "CREATE TABLE IF NOT EXISTS dead_letters ("
                   " sender TEXT NOT NULL, id TEXT NOT NULL, attempts INTEGER NOT NULL,"
                   " last_status INTEGER NOT NULL, last_error TEXT NOT NULL, dead_ms INTEGER NOT NULL,"
                   " PRIMARY KEY (sender, id));",
                   nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = "gateway state file " + path + ": " + (err ? err : "error") +
                          " (is it a liaison-gateway state file, and is its folder writable?)";
    sqlite3_free(err);
    return Status::IoError(message);
  }
  return store;
}

GatewayStore::~GatewayStore() {
  if (db_) sqlite3_close(db_);
}

StatusOr<GatewayStore::Accepted> GatewayStore::Accept(const std::string& id,
                                                      const std::string& digest,
                                                      std::span<const uint8_t> envelope) {
  std::lock_guard lock(mu_);
  {
    Stmt find(db_, "SELECT digest FROM outgoing WHERE id = ?1");
    find.Bind(1, id);
    if (find.Step() == SQLITE_ROW) {
      return find.Text(0) == digest ? Accepted::kDuplicate : Accepted::kConflict;
    }
  }
  Stmt insert(db_, "INSERT INTO outgoing (id, digest, envelope, accepted_ms) VALUES (?1, ?2, ?3, ?4)");
  insert.Bind(1, id).Bind(2, digest).Bind(3, envelope).Bind(4, NowMs());
  if (insert.Step() != SQLITE_DONE) {
    return Status::IoError("gateway state file " + path_ + ": cannot keep the message: " +
                           sqlite3_errmsg(db_));
  }
  return Accepted::kNew;
}

StatusOr<std::optional<GatewayStore::Outgoing>> GatewayStore::NextPending() {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT id, envelope FROM outgoing WHERE receipt IS NULL ORDER BY seq LIMIT 1");
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<Outgoing>();
  if (rc != SQLITE_ROW) return Status::IoError("gateway state file " + path_ + ": " + sqlite3_errmsg(db_));
  return std::optional<Outgoing>(Outgoing{s.Text(0), s.Blob(1)});
}

StatusOr<uint64_t> GatewayStore::PendingCount() {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT COUNT(*) FROM outgoing WHERE receipt IS NULL");
  if (s.Step() != SQLITE_ROW) return Status::IoError("gateway state file " + path_ + ": " + sqlite3_errmsg(db_));
  return static_cast<uint64_t>(s.Int(0));
}

Status GatewayStore::Answer(const std::string& id, std::span<const uint8_t> receipt) {
  std::lock_guard lock(mu_);
  {
    Stmt s(db_, "UPDATE outgoing SET receipt = ?2, envelope = NULL, answered_ms = ?3 WHERE id = ?1");
    s.Bind(1, id).Bind(2, receipt).Bind(3, NowMs());
    if (s.Step() != SQLITE_DONE) {
      return Status::IoError("gateway state file " + path_ + ": cannot record a receipt: " + sqlite3_errmsg(db_));
    }
  }  // finalized: the checkpoint below must not wait for it
  return Scrub();
}

Status GatewayStore::Scrub() {
  // secure_delete zeroed the message in the new page images, but the WAL
  // still holds the frames written when it was accepted: copy everything
  // into the database and cut the WAL to zero bytes.
  Stmt s(db_, "PRAGMA wal_checkpoint(TRUNCATE)");
  const int rc = s.Step();
  if (rc != SQLITE_ROW || s.Int(0) != 0) {
    return Status::IoError("gateway state file " + path_ +
                           ": the receipt is recorded, but the answered message's bytes are still in " +
                           path_ + "-wal (checkpoint " + (rc == SQLITE_ROW ? "busy" : sqlite3_errmsg(db_)) +
                           "); the next answer retries");
  }
  return Status::Ok();
}

Status GatewayStore::AddNotice(const std::string& id, const std::string& recipient,
                               std::span<const uint8_t> receipt) {
  std::lock_guard lock(mu_);
  // Only about messages this gateway sent (the agency may also send from
  // elsewhere, e.g. the CLI); a later notice replaces an earlier one.
  Stmt s(db_,
         "INSERT OR REPLACE INTO notices (id, recipient, receipt)"
         " SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM outgoing WHERE id = ?1)");
  s.Bind(1, id).Bind(2, recipient).Bind(3, receipt);
  if (s.Step() != SQLITE_DONE) {
    return Status::IoError("gateway state file " + path_ + ": cannot record a notice: " + sqlite3_errmsg(db_));
  }
  return Status::Ok();
}

StatusOr<std::optional<GatewayStore::Entry>> GatewayStore::Lookup(const std::string& id) {
  std::lock_guard lock(mu_);
  Entry entry;
  {
    Stmt s(db_, "SELECT receipt FROM outgoing WHERE id = ?1");
    s.Bind(1, id);
    const int rc = s.Step();
    if (rc == SQLITE_DONE) return std::optional<Entry>();
    if (rc != SQLITE_ROW) return Status::IoError("gateway state file " + path_ + ": " + sqlite3_errmsg(db_));
    if (!s.IsNull(0)) entry.receipt = s.Blob(0);
  }
  Stmt n(db_, "SELECT receipt FROM notices WHERE id = ?1 ORDER BY recipient");
  n.Bind(1, id);
  while (n.Step() == SQLITE_ROW) entry.notices.push_back(n.Blob(0));
  return std::optional<Entry>(std::move(entry));
}

StatusOr<int> GatewayStore::Purge(int64_t before_ms) {
  std::lock_guard lock(mu_);
  Stmt notices(db_,
               "DELETE FROM notices WHERE id IN (SELECT id FROM outgoing WHERE"
               " receipt IS NOT NULL AND answered_ms < ?1)");
  notices.Bind(1, before_ms);
  Stmt outgoing(db_, "DELETE FROM outgoing WHERE receipt IS NOT NULL AND answered_ms < ?1");
  outgoing.Bind(1, before_ms);
  if (notices.Step() != SQLITE_DONE || outgoing.Step() != SQLITE_DONE) {
    return Status::IoError("gateway state file " + path_ + ": cannot purge: " + sqlite3_errmsg(db_));
  }
  return sqlite3_changes(db_);
}

Status GatewayStore::AddDeadLetter(const DeadLetter& letter) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "INSERT OR REPLACE INTO dead_letters (sender, id, attempts, last_status, last_error, dead_ms)"
         " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  s.Bind(1, letter.sender).Bind(2, letter.id).Bind(3, letter.attempts).Bind(4, int64_t{letter.last_status});
  s.Bind(5, letter.last_error).Bind(6, NowMs());
  if (s.Step() != SQLITE_DONE) {
    return Status::IoError("gateway state file " + path_ + ": cannot record a dead letter: " + sqlite3_errmsg(db_));
  }
  return Status::Ok();
}

Status GatewayStore::RemoveDeadLetter(const std::string& sender, const std::string& id) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "DELETE FROM dead_letters WHERE sender = ?1 AND id = ?2");
  s.Bind(1, sender).Bind(2, id);
  if (s.Step() != SQLITE_DONE) {
    return Status::IoError("gateway state file " + path_ + ": cannot clear a dead letter: " + sqlite3_errmsg(db_));
  }
  return Status::Ok();
}

StatusOr<std::vector<GatewayStore::DeadLetter>> GatewayStore::DeadLetters() {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT sender, id, attempts, last_status, last_error FROM dead_letters ORDER BY dead_ms, rowid");
  std::vector<DeadLetter> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    out.push_back(DeadLetter{s.Text(0), s.Text(1), s.Int(2), static_cast<int>(s.Int(3)), s.Text(4)});
  }
  if (rc != SQLITE_DONE) return Status::IoError("gateway state file " + path_ + ": " + sqlite3_errmsg(db_));
  return out;
}

}  // namespace liaison::gateway

#include "gateway_store.h"

#include <sqlite3.h>

#include <spdlog/spdlog.h>

#include <chrono>

#include "liaison/keys.h"
#include "liaison/sqlite_statement.h"
#include "liaison/wire.h"

namespace liaison::gateway {
namespace {

int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// This agency's own messages are filed under this sender (no agency id has
// an '@'); a received message under the agency that sent it.
constexpr const char* kOwnAgency = "@self";

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

StatusOr<std::unique_ptr<GatewayStore>> GatewayStore::Open(const std::string& path, const std::string& key_file) {
  std::unique_ptr<GatewayStore> store(new GatewayStore());
  store->path_ = path;
  // Messages are case data: owner-only, whatever the umask.
  auto db = OpenSqliteFile(path, "gateway state file");
  if (!db.ok()) return db.status();
  store->db_ = *db;
  char* err = nullptr;
  if (sqlite3_exec(store->db_,
                   // secure_delete: a deleted message's bytes are zeroed, not
                   // left in free pages (see Scrub for the WAL).
                   "PRAGMA secure_delete=ON;"
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
  // State files made before messages were sealed gain the columns; their
  // pending rows (case_id NULL) are sent as they are.
  bool sealed_columns = false;
  {
    SqliteStatement columns(store->db_, "PRAGMA table_info(outgoing)");
    int rc;
    while ((rc = columns.Step()) == SQLITE_ROW) sealed_columns |= columns.ColumnText(1) == "case_id";
    if (rc != SQLITE_DONE) {
      return columns.Error("gateway state file " + path + ": reading its tables");
    }
  }
  if (!sealed_columns && sqlite3_exec(store->db_,
                                      "ALTER TABLE outgoing ADD COLUMN case_id BLOB;"
                                      "ALTER TABLE outgoing ADD COLUMN erasure INTEGER NOT NULL DEFAULT 0;",
                                      nullptr, nullptr, nullptr) != SQLITE_OK) {
    return Status::IoError(SqliteError(store->db_, "gateway state file " + path + ": adding the sealing columns"));
  }
  auto vault = CaseVault::Open(store->db_, "gateway state file " + path,
                               CaseVault::Files{key_file, "", "gateway state key", "gateway.yaml state_key_file"});
  if (!vault.ok()) return vault.status();
  store->vault_ = std::move(*vault);
  return store;
}

GatewayStore::~GatewayStore() {
  vault_.reset();
  if (db_) sqlite3_close(db_);
}

StatusOr<GatewayStore::Accepted> GatewayStore::Accept(const std::string& id,
                                                      const std::string& digest,
                                                      std::span<const uint8_t> envelope) {
  std::lock_guard lock(mu_);
  // What the message is filed under: its case and whether it erases one.
  std::string case_ref;
  bool erasure = false;
  std::vector<uint8_t> storage;
  if (const wire::Envelope* e = wire::VerifyEnvelope(wire::Aligned(envelope, storage))) {
    if (e->case_ref()) case_ref = e->case_ref()->str();
    erasure = e->payload_type() == wire::Payload::ErasureRequest;
  }
  Accepted accepted = Accepted::kNew;
  Status st = vault_->Transaction([&]() -> Status {
    SqliteStatement find(db_, "SELECT digest FROM outgoing WHERE id = ?1");
    const int rc = find.Text(1, id).Step();
    if (rc == SQLITE_ROW) {
      accepted = find.ColumnText(0) == digest ? Accepted::kDuplicate : Accepted::kConflict;
      return Status::Ok();
    }
    if (rc != SQLITE_DONE) {
      return find.Error("gateway state file " + path_ + ": cannot look the id up");
    }
    const std::string case_id = vault_->CaseId(kOwnAgency, case_ref);
    auto sealed = vault_->Seal(kOwnAgency, case_id, id, envelope);
    if (!sealed.ok()) return sealed.status();
    SqliteStatement insert(db_,
                "INSERT INTO outgoing (id, digest, envelope, accepted_ms, case_id, erasure)"
                " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    insert.Text(1, id).Text(2, digest).Blob(3, *sealed).Int(4, NowMs()).Blob(5, Bytes(case_id));
    if (insert.Int(6, int64_t{erasure ? 1 : 0}).Step() != SQLITE_DONE) {
      return insert.Error("gateway state file " + path_ + ": cannot keep the message");
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return accepted;
}

StatusOr<std::optional<GatewayStore::Outgoing>> GatewayStore::NextPending() {
  std::lock_guard lock(mu_);
  std::optional<Outgoing> next;
  Status st = vault_->Transaction([&]() -> Status {
    while (true) {
      SqliteStatement s(db_, "SELECT seq, id, envelope, case_id FROM outgoing WHERE receipt IS NULL ORDER BY seq LIMIT 1");
      const int rc = s.Step();
      if (rc == SQLITE_DONE) return Status::Ok();
      if (rc != SQLITE_ROW) return s.Error("gateway state file " + path_);
      const int64_t seq = s.ColumnInt(0);
      Outgoing out{s.ColumnText(1), s.ColumnBlob(2)};
      if (s.ColumnIsNull(3)) {  // accepted before messages were sealed
        next = std::move(out);
        return Status::Ok();
      }
      const std::vector<uint8_t> case_id = s.ColumnBlob(3);
      auto opened = vault_->Unseal(kOwnAgency, std::string(case_id.begin(), case_id.end()), out.id, out.envelope);
      if (!opened.ok()) return opened.status();
      if (*opened) {
        out.envelope = std::move(**opened);
        next = std::move(out);
        return Status::Ok();
      }
      // Its case was erased after this copy of the file was made (a
      // restored backup): it cannot be sent, and goes.
      spdlog::warn("event=state_message_shredded message_id={} reason=its_case_was_erased", out.id);
      SqliteStatement d(db_, "DELETE FROM outgoing WHERE seq = ?1");
      if (d.Int(1, seq).Step() != SQLITE_DONE) {
        return d.Error("gateway state file " + path_);
      }
    }
  });
  if (!st.ok()) return st;
  return next;
}

StatusOr<GatewayStore::PendingContents> GatewayStore::Pending() {
  std::lock_guard lock(mu_);
  PendingContents contents;
  Status st = vault_->Transaction([&]() -> Status {
    SqliteStatement s(db_, "SELECT id, envelope, case_id FROM outgoing WHERE receipt IS NULL ORDER BY seq");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      Outgoing out{s.ColumnText(0), s.ColumnBlob(1)};
      if (!s.ColumnIsNull(2)) {
        const std::vector<uint8_t> case_id = s.ColumnBlob(2);
        auto opened = vault_->Unseal(kOwnAgency, std::string(case_id.begin(), case_id.end()), out.id, out.envelope);
        if (!opened.ok()) return opened.status();
        if (!*opened) {
          ++contents.shredded;
          continue;
        }
        out.envelope = std::move(**opened);
      }
      contents.messages.push_back(std::move(out));
    }
    if (rc != SQLITE_DONE) return s.Error("gateway state file " + path_);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return contents;
}

StatusOr<uint64_t> GatewayStore::PendingCount() {
  std::lock_guard lock(mu_);
  SqliteStatement s(db_, "SELECT COUNT(*) FROM outgoing WHERE receipt IS NULL");
  if (s.Step() != SQLITE_ROW) return s.Error("gateway state file " + path_);
  return static_cast<uint64_t>(s.ColumnInt(0));
}

Status GatewayStore::Answer(const std::string& id, std::span<const uint8_t> receipt) {
  std::lock_guard lock(mu_);
  std::vector<uint8_t> storage;
  const wire::Receipt* r = wire::VerifyReceipt(wire::Aligned(receipt, storage));
  const bool accepted = r && r->code() == wire::Code::ok;
  Status st = vault_->Transaction([&]() -> Status {
    int64_t seq = 0;
    bool erasure = false;
    std::vector<uint8_t> case_id;
    {
      SqliteStatement find(db_, "SELECT seq, erasure, case_id FROM outgoing WHERE id = ?1 AND receipt IS NULL");
      const int rc = find.Text(1, id).Step();
      if (rc == SQLITE_ROW) {
        seq = find.ColumnInt(0);
        erasure = find.ColumnInt(1) != 0 && !find.ColumnIsNull(2);
        case_id = find.ColumnBlob(2);
      } else if (rc != SQLITE_DONE) {
        return find.Error("gateway state file " + path_ + ": cannot record a receipt");
      }
    }
    SqliteStatement s(db_, "UPDATE outgoing SET receipt = ?2, envelope = NULL, answered_ms = ?3 WHERE id = ?1");
    if (s.Text(1, id).Blob(2, receipt).Int(3, NowMs()).Step() != SQLITE_DONE) {
      return s.Error("gateway state file " + path_ + ": cannot record a receipt");
    }
    // The broker has the erasure and forwards it: the case's key goes.
    if (erasure && accepted) return ShredLocked(kOwnAgency, std::string(case_id.begin(), case_id.end()), seq);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return Scrub();
}

Status GatewayStore::ShredCase(const std::string& sender, const std::string& case_ref) {
  std::lock_guard lock(mu_);
  const std::string filed = sender.empty() ? kOwnAgency : sender;
  return vault_->Transaction([&]() -> Status { return ShredLocked(filed, vault_->CaseId(filed, case_ref), 0); });
}

Status GatewayStore::ShredLocked(const std::string& sender, const std::string& case_id, int64_t keep_after) {
  // The case's messages accepted after the erasure stay, under a new key;
  // earlier ones still pending (none, as the sender goes oldest first, but
  // for a received erasure: all) go.
  std::vector<std::pair<int64_t, Outgoing>> kept;
  {
    SqliteStatement s(db_, "SELECT seq, id, envelope FROM outgoing WHERE case_id = ?1 AND receipt IS NULL ORDER BY seq");
    s.Blob(1, Bytes(case_id));
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      const int64_t seq = s.ColumnInt(0);
      if (keep_after == 0 || seq <= keep_after) continue;
      Outgoing out{s.ColumnText(1), s.ColumnBlob(2)};
      auto opened = vault_->Unseal(sender, case_id, out.id, out.envelope);
      if (!opened.ok()) return opened.status();
      if (!*opened) continue;
      out.envelope = std::move(**opened);
      kept.emplace_back(seq, std::move(out));
    }
    if (rc != SQLITE_DONE) return s.Error("gateway state file " + path_);
  }
  SqliteStatement d(db_, "DELETE FROM outgoing WHERE case_id = ?1 AND receipt IS NULL AND (?2 = 0 OR seq <= ?2)");
  if (d.Blob(1, Bytes(case_id)).Int(2, keep_after).Step() != SQLITE_DONE) {
    return d.Error("gateway state file " + path_ + ": removing the erased case's messages");
  }
  auto shredded = vault_->Shred(sender, case_id);
  if (!shredded.ok()) return shredded.status();
  for (const auto& [seq, out] : kept) {
    auto sealed = vault_->Seal(sender, case_id, out.id, out.envelope);
    if (!sealed.ok()) return sealed.status();
    SqliteStatement u(db_, "UPDATE outgoing SET envelope = ?2 WHERE seq = ?1");
    if (u.Int(1, seq).Blob(2, *sealed).Step() != SQLITE_DONE) {
      return u.Error("gateway state file " + path_ + ": keeping a later message of the erased case");
    }
  }
  if (*shredded) spdlog::info("event=state_case_shredded kept_later={}", kept.size());
  return Status::Ok();
}

Status GatewayStore::Scrub() {
  // secure_delete zeroed the message in the new page images, but the WAL
  // still holds the frames written when it was accepted: copy everything
  // into the database and cut the WAL to zero bytes.
  SqliteStatement s(db_, "PRAGMA wal_checkpoint(TRUNCATE)");
  const int rc = s.Step();
  if (rc != SQLITE_ROW || s.ColumnInt(0) != 0) {
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
  SqliteStatement s(db_,
         "INSERT OR REPLACE INTO notices (id, recipient, receipt)"
         " SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM outgoing WHERE id = ?1)");
  s.Text(1, id).Text(2, recipient).Blob(3, receipt);
  if (s.Step() != SQLITE_DONE) {
    return s.Error("gateway state file " + path_ + ": cannot record a notice");
  }
  return Status::Ok();
}

StatusOr<std::optional<GatewayStore::Entry>> GatewayStore::Lookup(const std::string& id) {
  std::lock_guard lock(mu_);
  Entry entry;
  {
    SqliteStatement s(db_, "SELECT receipt FROM outgoing WHERE id = ?1");
    s.Text(1, id);
    const int rc = s.Step();
    if (rc == SQLITE_DONE) return std::optional<Entry>();
    if (rc != SQLITE_ROW) return s.Error("gateway state file " + path_);
    if (!s.ColumnIsNull(0)) entry.receipt = s.ColumnBlob(0);
  }
  SqliteStatement n(db_, "SELECT receipt FROM notices WHERE id = ?1 ORDER BY recipient");
  n.Text(1, id);
  int rc;
  while ((rc = n.Step()) == SQLITE_ROW) entry.notices.push_back(n.ColumnBlob(0));
  if (rc != SQLITE_DONE) return n.Error("gateway state file " + path_);
  return std::optional<Entry>(std::move(entry));
}

StatusOr<int> GatewayStore::Purge(int64_t before_ms) {
  std::lock_guard lock(mu_);
  SqliteStatement notices(db_,
                          "DELETE FROM notices WHERE id IN (SELECT id FROM outgoing WHERE"
                          " receipt IS NOT NULL AND answered_ms < ?1)");
  notices.Int(1, before_ms);
  SqliteStatement outgoing(db_, "DELETE FROM outgoing WHERE receipt IS NOT NULL AND answered_ms < ?1");
  outgoing.Int(1, before_ms);
  if (!notices.Done()) return notices.Error("gateway state file " + path_ + ": cannot purge");
  if (!outgoing.Done()) return outgoing.Error("gateway state file " + path_ + ": cannot purge");
  return sqlite3_changes(db_);
}

Status GatewayStore::AddDeadLetter(const DeadLetter& letter) {
  std::lock_guard lock(mu_);
  SqliteStatement s(db_,
         "INSERT OR REPLACE INTO dead_letters (sender, id, attempts, last_status, last_error, dead_ms)"
         " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  s.Text(1, letter.sender).Text(2, letter.id).Int(3, letter.attempts).Int(4, int64_t{letter.last_status});
  s.Text(5, letter.last_error).Int(6, NowMs());
  if (s.Step() != SQLITE_DONE) {
    return s.Error("gateway state file " + path_ + ": cannot record a dead letter");
  }
  return Status::Ok();
}

Status GatewayStore::RemoveDeadLetter(const std::string& sender, const std::string& id) {
  std::lock_guard lock(mu_);
  SqliteStatement s(db_, "DELETE FROM dead_letters WHERE sender = ?1 AND id = ?2");
  s.Text(1, sender).Text(2, id);
  if (s.Step() != SQLITE_DONE) {
    return s.Error("gateway state file " + path_ + ": cannot clear a dead letter");
  }
  return Status::Ok();
}

StatusOr<std::vector<GatewayStore::DeadLetter>> GatewayStore::DeadLetters() {
  std::lock_guard lock(mu_);
  SqliteStatement s(db_, "SELECT sender, id, attempts, last_status, last_error FROM dead_letters ORDER BY dead_ms, rowid");
  std::vector<DeadLetter> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    out.push_back(DeadLetter{s.ColumnText(0), s.ColumnText(1), s.ColumnInt(2), static_cast<int>(s.ColumnInt(3)), s.ColumnText(4)});
  }
  if (rc != SQLITE_DONE) return s.Error("gateway state file " + path_);
  return out;
}

}  // namespace liaison::gateway

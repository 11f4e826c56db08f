#include "liaison/outbox.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include "liaison/keys.h"
#include "liaison/sqlite_statement.h"

namespace liaison {
namespace {

// The sender this agency's own messages are filed under: no agency id has
// an '@' (it separates an address's kind and region), and the agent does
// not know its own id before the broker welcomes it.
constexpr const char* kOwnAgency = "@self";

std::string SenderOf(const std::string& sender) { return sender.empty() ? kOwnAgency : sender; }

struct Header {
  std::string id, case_ref;
  bool erasure = false;
};

// What the outbox files a message under. Bytes that are not an Envelope
// are kept all the same (the broker answers them `malformed`), under case "".
Header HeaderOf(std::span<const uint8_t> envelope) {
  Header h;
  std::vector<uint8_t> storage;
  const wire::Envelope* e = wire::VerifyEnvelope(wire::Aligned(envelope, storage));
  if (!e) return h;
  if (e->id()) h.id = e->id()->str();
  if (e->case_ref()) h.case_ref = e->case_ref()->str();
  h.erasure = e->payload_type() == wire::Payload::ErasureRequest;
  return h;
}

}  // namespace

StatusOr<std::unique_ptr<Outbox>> Outbox::Open(const std::string& path, const std::string& key_file) {
  std::unique_ptr<Outbox> box(new Outbox());
  box->path_ = path;
  if (key_file.empty()) {
    return Status::InvalidArgument("outbox " + path + ": no outbox key file (agent.yaml outbox_key_file)");
  }
  // Unsent messages are case data: owner-only, whatever the umask.
  auto db = OpenSqliteFile(path, "outbox");
  if (!db.ok()) return db.status();
  box->db_ = *db;
  char* err = nullptr;
  // secure_delete: a deleted row (a sent message, an erased case's key) is
  // zeroed in its page, not left in free space; the vault truncates the WAL
  // after an erasure.
  if (sqlite3_exec(box->db_,
                   "PRAGMA secure_delete=ON;"
                   "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " envelope BLOB NOT NULL);",
                   nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = "outbox " + path + ": " + (err ? err : "error");
    sqlite3_free(err);
    return Status::IoError(message);
  }
  // Outboxes made before messages were sealed gain the columns; their rows
  // (case_id NULL) are sent as they are.
  bool sealed_columns = false;
  {
    SqliteStatement columns(box->db_, "PRAGMA table_info(outbox)");
    int rc;
    while ((rc = columns.Step()) == SQLITE_ROW) sealed_columns |= columns.ColumnText(1) == "case_id";
    if (rc != SQLITE_DONE) return columns.Error("outbox " + path + ": reading its table");
  }
  if (!sealed_columns &&
      sqlite3_exec(box->db_, "ALTER TABLE outbox ADD COLUMN message_id TEXT; ALTER TABLE outbox ADD COLUMN case_id BLOB;",
                   nullptr, nullptr, nullptr) != SQLITE_OK) {
    return Status::IoError(SqliteError(box->db_, "outbox " + path + ": adding the sealing columns"));
  }
  auto vault = CaseVault::Open(box->db_, "outbox " + path,
                               CaseVault::Files{key_file, "", "outbox key", "agent.yaml outbox_key_file"});
  if (!vault.ok()) return vault.status();
  box->vault_ = std::move(*vault);
  return box;
}

Outbox::~Outbox() {
  vault_.reset();
  if (db_) sqlite3_close(db_);
}

Status Outbox::Add(std::span<const uint8_t> envelope) {
  const Header h = HeaderOf(envelope);
  return vault_->Transaction([&]() -> Status {
    const std::string case_id = vault_->CaseId(kOwnAgency, h.case_ref);
    auto sealed = vault_->Seal(kOwnAgency, case_id, h.id, envelope);
    if (!sealed.ok()) return sealed.status();
    SqliteStatement s(db_, "INSERT INTO outbox (envelope, message_id, case_id) VALUES (?1, ?2, ?3)");
    s.Blob(1, sealed->data(), sealed->size()).Text(2, h.id).Blob(3, case_id.data(), case_id.size());
    if (s.Step() != SQLITE_DONE) return s.Error("outbox " + path_ + ": cannot keep the message");
    return Status::Ok();
  });
}

StatusOr<int64_t> Outbox::Size() {
  SqliteStatement s(db_, "SELECT COUNT(*) FROM outbox");
  if (s.Step() != SQLITE_ROW) return s.Error("outbox " + path_);
  return s.ColumnInt(0);
}

StatusOr<std::vector<Outbox::Row>> Outbox::ReadRows(int64_t after, int64_t limit) {
  std::vector<Row> rows;
  SqliteStatement s(db_, "SELECT seq, envelope, message_id, case_id FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2");
  s.Int(1, after).Int(2, limit);
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    Row row;
    row.seq = s.ColumnInt(0);
    if (s.ColumnIsNull(3)) {
      row.envelope = s.ColumnBlob(1);  // kept before sealing
    } else {
      const std::vector<uint8_t> id = s.ColumnBlob(3), sealed = s.ColumnBlob(1);
      auto opened = vault_->Unseal(kOwnAgency, std::string(id.begin(), id.end()), s.ColumnText(2), sealed);
      if (!opened.ok()) return opened.status();
      row.envelope = std::move(*opened);
    }
    rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return s.Error("outbox " + path_ + ": reading its messages");
  return rows;
}

Status Outbox::DeleteRow(int64_t seq) {
  SqliteStatement d(db_, "DELETE FROM outbox WHERE seq = ?1");
  if (d.Int(1, seq).Step() != SQLITE_DONE) return d.Error("outbox " + path_ + ": removing a message");
  return Status::Ok();
}

StatusOr<Outbox::Contents> Outbox::Peek() {
  Contents contents;
  Status st = vault_->Transaction([&]() -> Status {
    auto rows = ReadRows(0, INT64_MAX);
    if (!rows.ok()) return rows.status();
    for (auto& row : *rows) {
      if (row.envelope) {
        contents.envelopes.push_back(std::move(*row.envelope));
      } else {
        ++contents.shredded;
      }
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return contents;
}

Status Outbox::ShredCase(const std::string& sender, const std::string& case_ref, int64_t keep_after) {
  const std::string filed = SenderOf(sender);
  return vault_->Transaction([&]() -> Status {
    const std::string case_id = vault_->CaseId(filed, case_ref);
    // The case's messages added after the erasure stay, under a new key.
    std::vector<std::pair<int64_t, std::vector<uint8_t>>> kept;
    std::vector<std::string> kept_ids;
    {
      SqliteStatement s(db_, "SELECT seq, envelope, message_id FROM outbox WHERE case_id = ?1 ORDER BY seq");
      s.Blob(1, case_id.data(), case_id.size());
      int rc;
      while ((rc = s.Step()) == SQLITE_ROW) {
        const int64_t seq = s.ColumnInt(0);
        if (keep_after > 0 && seq > keep_after) {
          auto opened = vault_->Unseal(filed, case_id, s.ColumnText(2), s.ColumnBlob(1));
          if (!opened.ok()) return opened.status();
          if (*opened) {
            kept.emplace_back(seq, std::move(**opened));
            kept_ids.push_back(s.ColumnText(2));
          }
        }
      }
      if (rc != SQLITE_DONE) return s.Error("outbox " + path_ + ": reading the erased case's messages");
    }
    SqliteStatement d(db_, "DELETE FROM outbox WHERE case_id = ?1");
    if (d.Blob(1, case_id.data(), case_id.size()).Step() != SQLITE_DONE) {
      return d.Error("outbox " + path_ + ": removing the erased case's messages");
    }
    auto shredded = vault_->Shred(filed, case_id);
    if (!shredded.ok()) return shredded.status();
    for (size_t i = 0; i < kept.size(); ++i) {
      auto sealed = vault_->Seal(filed, case_id, kept_ids[i], kept[i].second);
      if (!sealed.ok()) return sealed.status();
      SqliteStatement put(db_, "INSERT INTO outbox (seq, envelope, message_id, case_id) VALUES (?1, ?2, ?3, ?4)");
      put.Int(1, kept[i].first).Blob(2, sealed->data(), sealed->size()).Text(3, kept_ids[i]);
      if (put.Blob(4, case_id.data(), case_id.size()).Step() != SQLITE_DONE) {
        return put.Error("outbox " + path_ + ": keeping a later message of the erased case");
      }
    }
    if (*shredded) spdlog::info("event=outbox_case_shredded outbox=\"{}\" kept_later={}", path_, kept.size());
    return Status::Ok();
  });
}

Status Outbox::Flush(Agent& agent, const std::function<void(const ReceiptBuffer&)>& on_receipt) {
  while (true) {
    std::optional<Row> next;
    LIAISON_RETURN_IF_ERROR(vault_->Transaction([&]() -> Status {
      auto rows = ReadRows(0, 1);
      if (!rows.ok()) return rows.status();
      if (!rows->empty()) next = std::move(rows->front());
      // A message of an erased case (a backup restored after the erasure):
      // it no longer opens, and goes.
      if (next && !next->envelope) {
        spdlog::warn("event=outbox_message_shredded outbox=\"{}\" seq={} reason=its_case_was_erased", path_,
                     next->seq);
        return DeleteRow(next->seq);
      }
      return Status::Ok();
    }));
    if (!next) return Status::Ok();
    if (!next->envelope) continue;
    const std::vector<uint8_t>& envelope = *next->envelope;

    auto receipt = agent.Send(envelope);
    if (!receipt.ok()) return receipt.status();
    if ((*receipt)->code() == wire::Code::unavailable || (*receipt)->code() == wire::Code::busy) {
      return Status::Unavailable("the broker could not store the message; it stays in the outbox");
    }
    const Header h = HeaderOf(envelope);
    const bool erase = h.erasure && (*receipt)->code() == wire::Code::ok;
    if (erase) {
      // The broker has the erasure and forwards it: the case's key goes,
      // with the message (later messages of the case get a new key).
      LIAISON_RETURN_IF_ERROR(ShredCase("", h.case_ref, next->seq));
    }
    LIAISON_RETURN_IF_ERROR(vault_->Transaction([&]() -> Status { return DeleteRow(next->seq); }));
    on_receipt(*receipt);
  }
}

}  // namespace liaison

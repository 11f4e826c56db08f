#include "liaison/outbox.h"

#include <sqlite3.h>

#include "liaison/keys.h"

namespace liaison {
namespace {

Status Error(sqlite3* db, const std::string& what) {
  return Status::IoError(what + ": " + sqlite3_errmsg(db));
}

}  // namespace

StatusOr<std::unique_ptr<Outbox>> Outbox::Open(const std::string& path) {
  std::unique_ptr<Outbox> box(new Outbox());
  box->path_ = path;
  // Unsent messages are case data: owner-only, whatever the umask.
  LIAISON_RETURN_IF_ERROR(MakeOwnerOnlySqliteFile(path).WithContext("outbox"));
  if (sqlite3_open_v2(path.c_str(), &box->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    return Error(box->db_, "cannot open the outbox " + path);
  }
  sqlite3_busy_timeout(box->db_, 5000);
  char* err = nullptr;
  if (sqlite3_exec(box->db_,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                   "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " envelope BLOB NOT NULL);",
                   nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = "outbox " + path + ": " + (err ? err : "error");
    sqlite3_free(err);
    return Status::IoError(message);
  }
  return box;
}

Outbox::~Outbox() {
  if (db_) sqlite3_close(db_);
}

Status Outbox::Add(std::span<const uint8_t> envelope) {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db_, "INSERT INTO outbox (envelope) VALUES (?1)", -1, &s, nullptr);
  sqlite3_bind_blob(s, 1, envelope.data(), static_cast<int>(envelope.size()), SQLITE_TRANSIENT);
  const int rc = sqlite3_step(s);
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? Status::Ok() : Error(db_, "outbox " + path_ + ": cannot keep the message");
}

StatusOr<int64_t> Outbox::Size() {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM outbox", -1, &s, nullptr);
  int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_finalize(s);
  if (n < 0) return Error(db_, "outbox " + path_);
  return n;
}

Status Outbox::Flush(Agent& agent, const std::function<void(const ReceiptBuffer&)>& on_receipt) {
  while (true) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db_, "SELECT seq, envelope FROM outbox ORDER BY seq LIMIT 1", -1, &s, nullptr);
    if (sqlite3_step(s) != SQLITE_ROW) {
      sqlite3_finalize(s);
      return Status::Ok();
    }
    const int64_t seq = sqlite3_column_int64(s, 0);
    const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(s, 1));
    std::vector<uint8_t> envelope(data, data + sqlite3_column_bytes(s, 1));
    sqlite3_finalize(s);

    auto receipt = agent.Send(envelope);
    if (!receipt.ok()) return receipt.status();
    if ((*receipt)->code() == wire::Code::unavailable || (*receipt)->code() == wire::Code::busy) {
      return Status::Unavailable("the broker could not store the message; it stays in the outbox");
    }
    sqlite3_stmt* d = nullptr;
    sqlite3_prepare_v2(db_, "DELETE FROM outbox WHERE seq = ?1", -1, &d, nullptr);
    sqlite3_bind_int64(d, 1, seq);
    const int rc = sqlite3_step(d);
    sqlite3_finalize(d);
    if (rc != SQLITE_DONE) return Error(db_, "outbox " + path_);
    on_receipt(*receipt);
  }
}

}  // namespace liaison

#include "liaison/sqlite_statement.h"

#include <sqlite3.h>

#include "liaison/keys.h"

namespace liaison {

std::string SqliteError(sqlite3* db, const std::string& what) {
  const int code = sqlite3_extended_errcode(db) & 0xff;
  std::string hint;
  if (code == SQLITE_FULL) hint = " (the disk is full: free space; until then nothing more is stored)";
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) hint = " (the file is damaged: restore it from a backup)";
  if (code == SQLITE_READONLY || code == SQLITE_CANTOPEN) hint = " (check the path and its permissions)";
  return what + ": " + sqlite3_errmsg(db) + hint;
}

SqliteStatement::SqliteStatement(sqlite3* db, const char* sql) : db_(db), owned_(true), error_(SQLITE_OK) {
  if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) {
    sqlite3_finalize(s_);
    s_ = nullptr;
    error_ = SQLITE_ERROR;
  }
}

SqliteStatement::SqliteStatement(sqlite3* db, sqlite3_stmt* prepared)
    : db_(db), s_(prepared), owned_(false), error_(prepared ? SQLITE_OK : SQLITE_ERROR) {}

SqliteStatement::~SqliteStatement() {
  if (!s_) return;
  if (owned_) {
    sqlite3_finalize(s_);  // repeats the last step's error, already handled
    return;
  }
  sqlite3_reset(s_);  // likewise
  sqlite3_clear_bindings(s_);
}

void SqliteStatement::Keep(int rc) {
  if (rc != SQLITE_OK && error_ == SQLITE_OK) {
    error_ = rc;
    bind_failed_ = true;
  }
}

SqliteStatement& SqliteStatement::Text(int i, const std::string& v) {
  if (s_) Keep(sqlite3_bind_text64(s_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

SqliteStatement& SqliteStatement::Blob(int i, const void* data, size_t size) {
  if (s_) Keep(sqlite3_bind_blob64(s_, i, data, size, SQLITE_TRANSIENT));
  return *this;
}

SqliteStatement& SqliteStatement::Int(int i, int64_t v) {
  if (s_) Keep(sqlite3_bind_int64(s_, i, v));
  return *this;
}

int SqliteStatement::Step() {
  if (error_ != SQLITE_OK) return error_;
  const int rc = sqlite3_step(s_);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) error_ = rc;
  return rc;
}

bool SqliteStatement::Done() { return Step() == SQLITE_DONE; }

Status SqliteStatement::Error(const std::string& what) const {
  if (!s_) return Status::IoError(SqliteError(db_, what + " (preparing the statement)"));
  if (bind_failed_) return Status::IoError(what + ": " + sqlite3_errstr(error_) + " (a value was refused)");
  return Status::IoError(SqliteError(db_, what));
}

std::string SqliteStatement::ColumnText(int i) const {
  const auto* p = sqlite3_column_text(s_, i);
  return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, i)) : std::string();
}

std::vector<uint8_t> SqliteStatement::ColumnBlob(int i) const {
  const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(s_, i));
  return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(s_, i)) : std::vector<uint8_t>();
}

int64_t SqliteStatement::ColumnInt(int i) const { return sqlite3_column_int64(s_, i); }

bool SqliteStatement::ColumnIsNull(int i) const { return sqlite3_column_type(s_, i) == SQLITE_NULL; }

StatusOr<sqlite3*> OpenSqliteFile(const std::string& path, const std::string& what, int page_size,
                                  const char* vfs) {
  LIAISON_RETURN_IF_ERROR(MakeOwnerOnlySqliteFile(path).WithContext(what));
  sqlite3* db = nullptr;
  // sqlite3_open_v2 makes a handle even when it fails (it carries the
  // error): closed on every failure below.
  Status st;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK) {
    st = Status::IoError(SqliteError(db, "cannot open the " + what + " " + path));
  } else if (sqlite3_busy_timeout(db, 5000) != SQLITE_OK) {
    st = Status::IoError(SqliteError(db, what + " " + path));
  } else {
    // Only before the first write (journal_mode=WAL is one) does the page
    // size take effect; SQLite ignores it for a file that has pages.
    const std::string sized = page_size > 0 ? "PRAGMA page_size=" + std::to_string(page_size) : std::string();
    for (const char* pragma : {sized.c_str(), "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"}) {
      if (*pragma == '\0') continue;
      char* error = nullptr;
      if (sqlite3_exec(db, pragma, nullptr, nullptr, &error) != SQLITE_OK) {
        st = Status::IoError(SqliteError(db, what + " " + path + ": " + pragma));
        sqlite3_free(error);
        break;
      }
    }
  }
  if (!st.ok()) {
    sqlite3_close(db);
    return st;
  }
  return db;
}

}  // namespace liaison

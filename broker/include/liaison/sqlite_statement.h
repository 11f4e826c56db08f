// SQLite, the way every liaison file that uses it (the broker's store, the
// agent's outbox, the gateway's state file) talks to it: one statement
// wrapper that checks every result, and one opening sequence.
//
// In liaison_common (which links SQLite privately already, for --version and
// MakeOwnerOnlySqliteFile) so that the store and the agents share one copy.
// The header names sqlite3 and sqlite3_stmt only by declaration: a user
// includes <sqlite3.h> itself for the result codes (SQLITE_ROW, ...).
#ifndef LIAISON_SQLITE_STATEMENT_H_
#define LIAISON_SQLITE_STATEMENT_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "liaison/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace liaison {

// "<what>: <SQLite's message for db's last error>", with a hint for the
// operator where the error has an obvious remedy (disk full, a damaged
// file, permissions). Never holds values.
std::string SqliteError(sqlite3* db, const std::string& what);

// One use of a prepared statement: bind, step, read columns. Not copyable;
// one thread at a time (like the connection it runs on).
//
// Ownership: built from SQL text, it prepares the statement and finalizes it
// at scope exit. Built from a statement the caller prepared (and caches, and
// finalizes itself), it resets it and clears its bindings at scope exit, so
// that the next use starts clean.
//
// Failure: a failed prepare or a refused bind (SQLITE_TOOBIG past
// SQLITE_LIMIT_LENGTH, SQLITE_NOMEM) is kept, and makes every Step() fail
// with it instead of running the statement with NULL in the value's place.
// After a failed Step(), Error() says what failed, without values.
class SqliteStatement {
 public:
  // Prepares `sql` on `db`.
  SqliteStatement(sqlite3* db, const char* sql);
  // Uses `prepared`, which stays the caller's; null means its prepare
  // failed (then every Step() fails).
  SqliteStatement(sqlite3* db, sqlite3_stmt* prepared);
  ~SqliteStatement();
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  // Bind parameter `i` (1-based, as ?1 in the SQL); the value is copied.
  SqliteStatement& Text(int i, const std::string& v);
  SqliteStatement& Blob(int i, const void* data, size_t size);
  SqliteStatement& Blob(int i, std::span<const uint8_t> data) { return Blob(i, data.data(), data.size()); }
  SqliteStatement& Int(int i, int64_t v);

  // SQLITE_ROW, SQLITE_DONE, or an error (the failed prepare's or bind's,
  // if any; once a step failed, every later Step() returns that error).
  int Step();
  // Steps a statement that returns no rows: true on SQLITE_DONE.
  bool Done();
  // After a failed Step(): an IoError "<what>: <why>" for the operator.
  Status Error(const std::string& what) const;

  // Column `i` (0-based) of the row the last Step() returned; NULL reads
  // as "", {} or 0.
  std::string ColumnText(int i) const;
  std::vector<uint8_t> ColumnBlob(int i) const;
  int64_t ColumnInt(int i) const;
  bool ColumnIsNull(int i) const;

 private:
  void Keep(int rc);

  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  bool owned_;              // finalize (we prepared it) or reset (the caller's)
  int error_;               // the first failure, SQLITE_OK if none
  bool bind_failed_ = false;
};

// Opens (creating it if absent) the SQLite file at `path` as every liaison
// file is opened: made owner-only first (it holds case data; SQLite gives
// the -wal and -shm files it makes later this file's mode), a 5 s busy
// timeout, WAL with synchronous=FULL (a commit is on disk when it returns).
// `what` names the file in errors ("outbox", "store"). `page_size`, if not
// 0, is the page size of a file this call creates (a power of two from 512
// to 65536); a file that exists keeps its own. `vfs` names a registered
// SQLite VFS (nullptr: the default).
// On success the connection is the caller's, to close with sqlite3_close;
// on failure nothing stays open and the status says what and where.
StatusOr<sqlite3*> OpenSqliteFile(const std::string& path, const std::string& what, int page_size = 0,
                                  const char* vfs = nullptr);

}  // namespace liaison

#endif  // LIAISON_SQLITE_STATEMENT_H_

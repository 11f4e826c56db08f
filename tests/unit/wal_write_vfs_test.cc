// The store's WAL is written through liaison's VFS (sqlite/wal_write_vfs.h),
// which keeps a commit's frames in memory and writes them together. These
// tests try to catch it holding back what SQLite believes is written: a
// commit another connection cannot read, a commit lost with the process, a
// failed write that leaves a later commit wrong.
#include "sqlite/wal_write_vfs.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "sqlite/sqlite_store.h"
#include "testing/fixtures.h"

namespace liaison {
namespace {

using testing::TempDir;

// This thread's write system calls so far (write, pwrite, ...).
long long WriteCalls() {
  std::ifstream io("/proc/thread-self/io");
  std::string key;
  long long value = -1;
  while (io >> key >> value) {
    if (key == "syscw:") return value;
  }
  return -1;
}

class Db {
 public:
  // `query`: URI parameters, e.g. "psow=0".
  Db(const std::string& path, const char* vfs, const std::string& query = "") {
    const std::string name = query.empty() ? path : "file:" + path + "?" + query;
    ok_ = sqlite3_open_v2(name.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, vfs) ==
          SQLITE_OK;
  }
  ~Db() { sqlite3_close(db_); }
  bool ok() const { return ok_; }
  int Exec(const std::string& sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }
  std::string error() const { return sqlite3_errmsg(db_); }
  sqlite3* handle() const { return db_; }
  // The one integer `sql` returns; -1 if it fails.
  int64_t Int(const std::string& sql) {
    sqlite3_stmt* q = nullptr;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &q, nullptr) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
      v = sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    return v;
  }
  // Sets every row of t to generation `gen`, twice within one transaction
  // (with a cache of a few pages, the second pass rewrites frames the
  // first one spilled into the WAL: SQLite then rewrites their checksums).
  int Generation(int gen, int rows) {
    std::string sql = "BEGIN;";
    for (int pass = 0; pass < 2; ++pass) {
      sql += "UPDATE t SET gen = " + std::to_string(gen) + ", v = randomblob(" + std::to_string(3000 + pass) +
             ") WHERE id < " + std::to_string(rows) + ";";
    }
    sql += "INSERT INTO t (id, gen, v) VALUES (" + std::to_string(rows + gen) + ", " + std::to_string(gen) +
           ", randomblob(100)); COMMIT;";
    return Exec(sql);
  }

 private:
  sqlite3* db_ = nullptr;
  bool ok_ = false;
};

// A table t of `rows` rows of 3,000 bytes, generation 0, in the WAL.
void MakeTable(Db& writer, const std::string& synchronous, int rows) {
  ASSERT_EQ(SQLITE_OK, writer.Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=" + synchronous +
                                   "; PRAGMA cache_size=4; "
                                   "CREATE TABLE t (id INTEGER PRIMARY KEY, gen INTEGER, v BLOB)"))
      << writer.error();
  std::string fill = "BEGIN;";
  for (int i = 0; i < rows; ++i) fill += "INSERT INTO t VALUES (" + std::to_string(i) + ", 0, randomblob(3000));";
  ASSERT_EQ(SQLITE_OK, writer.Exec(fill + "COMMIT;")) << writer.error();
}

// The database and its WAL copied as they are now, the writer still open:
// what a crash would leave.
std::string CopyAsACrashWouldLeaveIt(const TempDir& dir, const std::string& path) {
  const std::string copy = dir.file("copy.db");
  std::filesystem::copy_file(path, copy);
  std::filesystem::copy_file(path + "-wal", copy + "-wal");
  return copy;
}

// A writer through the VFS on a table t of kRows rows.
class WalWriteVfsTest : public ::testing::Test {
 protected:
  static constexpr int kRows = 60;

  void OpenWriter(const std::string& synchronous, const std::string& query = "") {
    auto vfs = WalWriteVfs();
    ASSERT_TRUE(vfs.ok()) << vfs.status().ToString();
    writer_ = std::make_unique<Db>(path_, *vfs, query);
    ASSERT_TRUE(writer_->ok());
    MakeTable(*writer_, synchronous, kRows);
  }

  TempDir dir_;
  const std::string path_ = dir_.file("w.db");
  std::unique_ptr<Db> writer_;
};

// Each commit, read at once by another connection and in a copy of the
// files taken with the writer still open (what a crash would leave).
void ExpectEveryCommitReadableAtOnceAndAfterACrash(Db& writer, const TempDir& dir, const std::string& path,
                                                   int rows) {
  Db reader(path, nullptr);  // the default VFS: it reads the file alone
  ASSERT_TRUE(reader.ok());
  for (int gen = 1; gen <= 30; ++gen) {
    ASSERT_EQ(SQLITE_OK, writer.Generation(gen, rows)) << writer.error();
    ASSERT_EQ(rows, reader.Int("SELECT count(*) FROM t WHERE gen = " + std::to_string(gen) + " AND length(v) = 3001"))
        << "generation " << gen << " committed but not read";
    ASSERT_EQ(gen, reader.Int("SELECT max(gen) FROM t"));
  }
  // Every commit is in what a crash would leave, and its frames are valid.
  Db recovered(CopyAsACrashWouldLeaveIt(dir, path), nullptr);
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(rows, recovered.Int("SELECT count(*) FROM t WHERE gen = 30 AND length(v) = 3001"));
  EXPECT_EQ(30, recovered.Int("SELECT count(*) FROM t WHERE id >= " + std::to_string(rows + 1)));
  EXPECT_EQ(1, recovered.Int("SELECT 'ok' = (SELECT * FROM pragma_integrity_check)"));
}

TEST_F(WalWriteVfsTest, EveryCommitIsReadableAtOnceAndSurvivesTheProcess) {
  // synchronous=NORMAL: no sync at a commit, so nothing but the VFS's own
  // rule puts the frames in the file before the commit is published.
  ASSERT_NO_FATAL_FAILURE(OpenWriter("NORMAL"));
  ExpectEveryCommitReadableAtOnceAndAfterACrash(*writer_, dir_, path_, kRows);
}

// Without power-safe overwrite SQLite pads a commit to the next sector with
// copies of its commit frame, the last one written in two parts around the
// sync; every part is in the file before the commit is published.
TEST_F(WalWriteVfsTest, ACommitPaddedToASectorIsWholeInTheFile) {
  ASSERT_NO_FATAL_FAILURE(OpenWriter("FULL", "psow=0"));
  ExpectEveryCommitReadableAtOnceAndAfterACrash(*writer_, dir_, path_, kRows);
}

// A write that fails (a file-size limit, as a full disk) fails its commit;
// the frames held for it are dropped, and the next commit is whole.
TEST_F(WalWriteVfsTest, AFailedWriteFailsItsCommitAndTheNextOneIsWhole) {
  ASSERT_NO_FATAL_FAILURE(OpenWriter("FULL"));
  Db& writer = *writer_;
  ASSERT_EQ(SQLITE_OK, writer.Generation(1, kRows)) << writer.error();
  const auto wal_size = std::filesystem::file_size(path_ + "-wal");

  // Room for a few frames past the WAL's end: the next generation (~2x60
  // pages) does not fit.
  struct rlimit before {};
  ASSERT_EQ(0, getrlimit(RLIMIT_FSIZE, &before));
  auto previous = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limited = before;
  limited.rlim_cur = wal_size + 5 * 4120;
  ASSERT_EQ(0, setrlimit(RLIMIT_FSIZE, &limited));
  const int failed = writer.Generation(2, kRows);
  ASSERT_EQ(0, setrlimit(RLIMIT_FSIZE, &before));
  std::signal(SIGXFSZ, previous);
  EXPECT_NE(SQLITE_OK, failed) << "the commit passed the file-size limit";
  writer.Exec("ROLLBACK");  // if SQLite left the transaction open

  Db reader(path_, nullptr);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(0, reader.Int("SELECT count(*) FROM t WHERE gen = 2"));
  EXPECT_EQ(kRows, reader.Int("SELECT count(*) FROM t WHERE gen = 1 AND length(v) = 3001"));

  for (int gen = 3; gen <= 6; ++gen) {
    ASSERT_EQ(SQLITE_OK, writer.Generation(gen, kRows)) << writer.error();
    EXPECT_EQ(kRows, reader.Int("SELECT count(*) FROM t WHERE gen = " + std::to_string(gen) + " AND length(v) = 3001"));
  }
  Db recovered(CopyAsACrashWouldLeaveIt(dir_, path_), nullptr);
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(kRows, recovered.Int("SELECT count(*) FROM t WHERE gen = 6 AND length(v) = 3001"));
  EXPECT_EQ(1, recovered.Int("SELECT 'ok' = (SELECT * FROM pragma_integrity_check)"));
}

// A transaction that spilled frames into the buffer and rolled back leaves
// nothing to be written later over frames another connection committed
// meanwhile at the same place in the WAL.
TEST_F(WalWriteVfsTest, ARolledBackSpillIsNotWrittenOverAnotherWritersCommit) {
  ASSERT_NO_FATAL_FAILURE(OpenWriter("FULL"));
  Db& writer = *writer_;
  // Two passes over 180 KiB with a 4-page cache: frames spill, unflushed.
  ASSERT_EQ(SQLITE_OK, writer.Exec("BEGIN; UPDATE t SET gen = 99, v = randomblob(3001); "
                                   "UPDATE t SET v = randomblob(3001); ROLLBACK;"))
      << writer.error();
  DiscardUnwrittenWalFrames(writer.handle());  // as SqliteStore::Rollback does

  Db other(path_, nullptr);
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(SQLITE_OK, other.Generation(1, kRows)) << other.error();
  ASSERT_EQ(SQLITE_OK, writer.Generation(2, kRows)) << writer.error();
  EXPECT_EQ(0, other.Int("SELECT count(*) FROM t WHERE gen = 99"));
  Db recovered(CopyAsACrashWouldLeaveIt(dir_, path_), nullptr);
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(kRows, recovered.Int("SELECT count(*) FROM t WHERE gen = 2 AND length(v) = 3001"));
  EXPECT_EQ(2, recovered.Int("SELECT count(*) FROM t WHERE id > " + std::to_string(kRows)))
      << "a commit is missing from the WAL";
  EXPECT_EQ(1, recovered.Int("SELECT 'ok' = (SELECT * FROM pragma_integrity_check)"));
}

// What the VFS is for: a store's commit of 100 copies (dozens of WAL
// frames, two writes each through SQLite's own VFS) is a few writes.
TEST_F(WalWriteVfsTest, AStoreCommitsABatchInAFewWrites) {
  const std::string path = dir_.file("s.db");
  store::StoreKey key;
  key.fill(7);
  auto s = store::SqliteStore::Open(path, key);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto batch_of = [](int b) {
    store::WriteBatch batch;
    for (int i = 0; i < 100; ++i) {
      batch.copies.push_back({"a", "m" + std::to_string(b) + "-" + std::to_string(i), "b", "CASE-1", "",
                              std::vector<uint8_t>(2048, 'x'), 1000, 1000000, 2000000});
    }
    return batch;
  };
  ASSERT_TRUE((*s)->Apply(batch_of(0)).ok());  // the WAL's header, the tables' first pages
  const auto wal_before = std::filesystem::file_size(path + "-wal");
  const long long calls_before = WriteCalls();
  ASSERT_GE(calls_before, 0) << "no /proc/thread-self/io";
  const Status applied = (*s)->Apply(batch_of(1));
  const long long calls = WriteCalls() - calls_before;
  ASSERT_TRUE(applied.ok()) << applied.ToString();
  const auto frames = (std::filesystem::file_size(path + "-wal") - wal_before) / (8192 + 24);
  ASSERT_GE(frames, 30u) << "the batch wrote fewer pages than this test assumes";
  EXPECT_LE(calls, 16) << frames << " frames took " << calls << " write calls";
  std::printf("a batch of 100 copies of 2 KiB: %llu WAL frames in %lld write calls\n",
              static_cast<unsigned long long>(frames), calls);
}

}  // namespace
}  // namespace liaison

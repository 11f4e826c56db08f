#include "sqlite/wal_write_vfs.h"

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

namespace liaison {
namespace {

constexpr char kVfsName[] = "liaison-wal-writes";
// What a WAL file holds in memory at most: a full batch's commit is a few
// hundred 8 KiB frames, a few MiB.
constexpr size_t kMaxBufferBytes = size_t{4} << 20;
constexpr int kFrameHeaderBytes = 24;  // SQLite's WAL file format
// The default (unix) VFS writes at most 128 KiB - 1 bytes per call (it masks
// a longer length: os_unix.c, seekAndWriteFd), so a flush is written in
// pieces of that size: still a few calls per commit instead of two a page.
constexpr size_t kMaxWriteBytes = 0x1ffff;

// The bytes written to a WAL file and not yet handed to it.
struct Pending {
  std::vector<unsigned char> bytes;
  sqlite3_int64 offset = 0;  // of bytes[0]
  // From a commit frame's header to the next header that is not one: the
  // commit frame's page, and with `psow=0` the padding frames SQLite
  // repeats it in, split around a sync, all written as they come.
  bool in_commit = false;
};

struct WalFile {
  sqlite3_file file;   // pMethods = &kWalMethods
  sqlite3_file* real;  // the default VFS's file, in the same allocation after this struct
  Pending* pending;
};

constexpr size_t kWalFileBytes = (sizeof(WalFile) + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) *
                                 alignof(std::max_align_t);

sqlite3_vfs* Base(sqlite3_vfs* vfs) { return static_cast<sqlite3_vfs*>(vfs->pAppData); }
WalFile* Wal(sqlite3_file* f) { return reinterpret_cast<WalFile*>(f); }

int WriteThrough(WalFile* f, const unsigned char* data, size_t n, sqlite3_int64 off) {
  while (n > 0) {
    const size_t piece = n < kMaxWriteBytes ? n : kMaxWriteBytes;
    const int rc = f->real->pMethods->xWrite(f->real, data, static_cast<int>(piece), off);
    if (rc != SQLITE_OK) return rc;
    data += piece;
    off += static_cast<sqlite3_int64>(piece);
    n -= piece;
  }
  return SQLITE_OK;
}

// Hands the buffer to the file. Written or not, the bytes leave it: after a
// failure SQLite abandons the transaction and writes its frames again.
int Flush(WalFile* f) {
  Pending& p = *f->pending;
  if (p.bytes.empty()) return SQLITE_OK;
  const int rc = WriteThrough(f, p.bytes.data(), p.bytes.size(), p.offset);
  p.bytes.clear();
  return rc;
}

bool IsCommitFrameHeader(const void* data, int n) {
  if (n != kFrameHeaderBytes) return false;
  const auto* b = static_cast<const unsigned char*>(data);
  // Bytes 4-7: the database's size in pages after the commit; 0 in every
  // frame but a transaction's last.
  return (b[4] | b[5] | b[6] | b[7]) != 0;
}

int WalWrite(sqlite3_file* file, const void* data, int n, sqlite3_int64 off) {
  WalFile* f = Wal(file);
  Pending& p = *f->pending;
  if (n == kFrameHeaderBytes) p.in_commit = IsCommitFrameHeader(data, n);
  const sqlite3_int64 end = p.offset + static_cast<sqlite3_int64>(p.bytes.size());
  if (!p.bytes.empty() && off >= p.offset && off + n <= end) {
    std::memcpy(p.bytes.data() + (off - p.offset), data, n);  // a frame of this transaction rewritten
  } else {
    if (!p.bytes.empty() && (off != end || p.bytes.size() + n > kMaxBufferBytes)) {
      const int rc = Flush(f);
      if (rc != SQLITE_OK) return rc;
    }
    if (static_cast<size_t>(n) > kMaxBufferBytes) {
      return WriteThrough(f, static_cast<const unsigned char*>(data), static_cast<size_t>(n), off);
    }
    try {
      if (p.bytes.empty()) p.offset = off;
      const auto* b = static_cast<const unsigned char*>(data);
      p.bytes.insert(p.bytes.end(), b, b + n);
    } catch (const std::bad_alloc&) {
      p.bytes.clear();
      return SQLITE_IOERR_NOMEM;
    }
  }
  // A commit is in the file before SQLite publishes it in the wal-index,
  // where other connections look for frames, whatever `synchronous` says:
  // the commit frame's header goes with the frames before it, and what
  // follows it until the next transaction's first header is written as it
  // comes. (A header is also written alone when SQLite rewrites the
  // checksums of a transaction's frames; the last one rewritten is the
  // commit frame's, before the commit is published.)
  return p.in_commit ? Flush(f) : SQLITE_OK;
}

int WalRead(sqlite3_file* file, void* data, int n, sqlite3_int64 off) {
  WalFile* f = Wal(file);
  Pending& p = *f->pending;
  if (!p.bytes.empty()) {
    const sqlite3_int64 end = p.offset + static_cast<sqlite3_int64>(p.bytes.size());
    if (off >= p.offset && off + n <= end) {
      std::memcpy(data, p.bytes.data() + (off - p.offset), n);
      return SQLITE_OK;
    }
    if (off < end && off + n > p.offset) {
      const int rc = Flush(f);
      if (rc != SQLITE_OK) return rc;
    }
  }
  return f->real->pMethods->xRead(f->real, data, n, off);
}

int WalClose(sqlite3_file* file) {
  WalFile* f = Wal(file);
  const int flushed = Flush(f);
  const int closed = f->real->pMethods->xClose(f->real);
  delete f->pending;
  f->pending = nullptr;
  return flushed != SQLITE_OK ? flushed : closed;
}

int WalTruncate(sqlite3_file* file, sqlite3_int64 size) {
  WalFile* f = Wal(file);
  const int rc = Flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->real->pMethods->xTruncate(f->real, size);
}

int WalSync(sqlite3_file* file, int flags) {
  WalFile* f = Wal(file);
  const int rc = Flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->real->pMethods->xSync(f->real, flags);
}

int WalFileSize(sqlite3_file* file, sqlite3_int64* size) {
  WalFile* f = Wal(file);
  const int rc = Flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileSize(f->real, size);
}

int WalLock(sqlite3_file* file, int level) {
  sqlite3_file* real = Wal(file)->real;
  return real->pMethods->xLock(real, level);
}

int WalUnlock(sqlite3_file* file, int level) {
  sqlite3_file* real = Wal(file)->real;
  return real->pMethods->xUnlock(real, level);
}

int WalCheckReservedLock(sqlite3_file* file, int* out) {
  sqlite3_file* real = Wal(file)->real;
  return real->pMethods->xCheckReservedLock(real, out);
}

int WalFileControl(sqlite3_file* file, int op, void* arg) {
  WalFile* f = Wal(file);
  const int rc = Flush(f);
  if (rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileControl(f->real, op, arg);
}

int WalSectorSize(sqlite3_file* file) {
  sqlite3_file* real = Wal(file)->real;
  return real->pMethods->xSectorSize(real);
}

int WalDeviceCharacteristics(sqlite3_file* file) {
  sqlite3_file* real = Wal(file)->real;
  return real->pMethods->xDeviceCharacteristics(real);
}

// Version 1: a WAL file is never memory-mapped nor given shared memory
// (both are the database file's).
const sqlite3_io_methods kWalMethods = {
    1,
    WalClose,
    WalRead,
    WalWrite,
    WalTruncate,
    WalSync,
    WalFileSize,
    WalLock,
    WalUnlock,
    WalCheckReservedLock,
    WalFileControl,
    WalSectorSize,
    WalDeviceCharacteristics,
    nullptr,  // xShmMap
    nullptr,  // xShmLock
    nullptr,  // xShmBarrier
    nullptr,  // xShmUnmap
    nullptr,  // xFetch
    nullptr,  // xUnfetch
};

int Open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  sqlite3_vfs* base = Base(vfs);
  // Any other file is the default VFS's own, in this (larger) allocation.
  if ((flags & SQLITE_OPEN_WAL) == 0) return base->xOpen(base, name, file, flags, out_flags);
  WalFile* f = Wal(file);
  f->file.pMethods = nullptr;  // SQLite's contract until the open succeeds
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kWalFileBytes);
  const int rc = base->xOpen(base, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK) return rc;
  f->pending = new (std::nothrow) Pending();
  if (f->pending == nullptr) {
    f->real->pMethods->xClose(f->real);
    return SQLITE_NOMEM;
  }
  f->file.pMethods = &kWalMethods;
  return SQLITE_OK;
}

// The rest is the default VFS's, called with its own handle.
int Delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  return Base(vfs)->xDelete(Base(vfs), name, sync_dir);
}
int Access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return Base(vfs)->xAccess(Base(vfs), name, flags, out);
}
int FullPathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  return Base(vfs)->xFullPathname(Base(vfs), name, n, out);
}
void* DlOpen(sqlite3_vfs* vfs, const char* name) { return Base(vfs)->xDlOpen(Base(vfs), name); }
void DlError(sqlite3_vfs* vfs, int n, char* out) { Base(vfs)->xDlError(Base(vfs), n, out); }
void (*DlSym(sqlite3_vfs* vfs, void* handle, const char* symbol))(void) {
  return Base(vfs)->xDlSym(Base(vfs), handle, symbol);
}
void DlClose(sqlite3_vfs* vfs, void* handle) { Base(vfs)->xDlClose(Base(vfs), handle); }
int Randomness(sqlite3_vfs* vfs, int n, char* out) { return Base(vfs)->xRandomness(Base(vfs), n, out); }
int Sleep(sqlite3_vfs* vfs, int micros) { return Base(vfs)->xSleep(Base(vfs), micros); }
int CurrentTime(sqlite3_vfs* vfs, double* out) { return Base(vfs)->xCurrentTime(Base(vfs), out); }
int GetLastError(sqlite3_vfs* vfs, int n, char* out) { return Base(vfs)->xGetLastError(Base(vfs), n, out); }
int CurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  return Base(vfs)->xCurrentTimeInt64(Base(vfs), out);
}

}  // namespace

void DiscardUnwrittenWalFrames(sqlite3* db) {
  sqlite3_file* wal = nullptr;
  // Answered by the pager itself, without a call into the VFS.
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK || wal == nullptr) return;
  if (wal->pMethods != &kWalMethods) return;  // not ours, or not open
  Pending& p = *Wal(wal)->pending;
  p.bytes.clear();
  p.in_commit = false;
}

StatusOr<const char*> WalWriteVfs() {
  static sqlite3_vfs vfs;
  static int registered = SQLITE_ERROR;
  static std::once_flag once;
  std::call_once(once, [] {
    sqlite3_vfs* base = sqlite3_vfs_find(nullptr);
    if (base == nullptr || base->iVersion < 2 || base->xCurrentTimeInt64 == nullptr) return;
    vfs = sqlite3_vfs{};
    vfs.iVersion = 2;
    vfs.szOsFile = static_cast<int>(kWalFileBytes) + base->szOsFile;
    vfs.mxPathname = base->mxPathname;
    vfs.zName = kVfsName;
    vfs.pAppData = base;
    vfs.xOpen = Open;
    vfs.xDelete = Delete;
    vfs.xAccess = Access;
    vfs.xFullPathname = FullPathname;
    vfs.xDlOpen = DlOpen;
    vfs.xDlError = DlError;
    vfs.xDlSym = DlSym;
    vfs.xDlClose = DlClose;
    vfs.xRandomness = Randomness;
    vfs.xSleep = Sleep;
    vfs.xCurrentTime = CurrentTime;
    vfs.xGetLastError = GetLastError;
    vfs.xCurrentTimeInt64 = CurrentTimeInt64;
    registered = sqlite3_vfs_register(&vfs, /*makeDflt=*/0);
  });
  if (registered != SQLITE_OK) {
    return Status::Internal(std::string("cannot register SQLite's VFS ") + kVfsName + ": " +
                            sqlite3_errstr(registered));
  }
  return kVfsName;
}

}  // namespace liaison

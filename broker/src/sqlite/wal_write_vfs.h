// A SQLite VFS that writes a commit's WAL frames in a few writes, not two a page.
//
// Why: SQLite writes a WAL frame as two writes (its 24-byte header, then the
// page), so a commit of n pages is 2n pwrite calls before its fsync; on the
// virtual machines liaison is measured on, a system call costs more than
// copying the page, and writing the frames was ~17% of the broker's CPU.
// This VFS wraps the default one. For a WAL file it keeps consecutive writes
// in memory and hands them to the file together (in writes of up to
// 128 KiB, the most the default VFS takes at once):
//   - with a commit frame's header (a frame header whose "database size
//     after commit" field is not 0), and then that frame's page (and any
//     padding SQLite adds) as it comes: a commit is in the file before
//     SQLite publishes it in the shared wal-index, where other connections
//     look for frames, whatever `synchronous` says;
//   - before a sync, a truncate, a size query, a file-control call or a
//     close; before a read that overlaps the buffer (one wholly inside it
//     is answered from it); before a write that is neither inside the
//     buffer (a frame rewritten) nor its next byte;
//   - when the buffer would pass its bound (kMaxBufferBytes).
// A failed write is reported by the call that made it (so at the latest by
// the commit frame: the commit fails and SQLite rolls it back); the bytes
// buffered are dropped with it, as SQLite writes those frames again.
// A read, size or file-control call that had to flush reports that flush's
// failure (a write error).
// Every other file (the database, the -shm) is the default VFS's own file.
//
// Between transactions the buffer is empty, but for one case: frames a
// transaction spilled (its dirty pages outgrew the cache) and then rolled
// back. SQLite forgets them; the buffer would write them at its next flush,
// where another connection of the same file may meanwhile have committed
// frames. So whoever rolls back a write transaction on a connection of this
// VFS calls DiscardUnwrittenWalFrames after it.
#ifndef LIAISON_SQLITE_WAL_WRITE_VFS_H_
#define LIAISON_SQLITE_WAL_WRITE_VFS_H_

#include <sqlite3.h>

#include "liaison/status.h"

namespace liaison {

// The name to pass to sqlite3_open_v2 (registered on the first call, not as
// the default VFS; thread-safe). Fails only if SQLite cannot register it.
StatusOr<const char*> WalWriteVfs();

// Drops what `db`'s WAL file holds unwritten: call it after rolling a write
// transaction back (see above). Does nothing for a connection of another
// VFS or without an open WAL.
void DiscardUnwrittenWalFrames(sqlite3* db);

}  // namespace liaison

#endif  // LIAISON_SQLITE_WAL_WRITE_VFS_H_

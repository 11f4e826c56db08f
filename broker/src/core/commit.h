// The writer: commits the broker's batches off the core's thread, one at a
// time, so that the core admits the next batch while the previous one syncs
// (group commit: whatever arrives during a commit forms the next batch).
//
// The core submits a batch, goes on, and learns the result when event_fd()
// becomes readable (or waits for it, at a barrier). A receipt of a batch
// leaves only after its result is in.
#ifndef LIAISON_BROKER_CORE_COMMIT_H_
#define LIAISON_BROKER_CORE_COMMIT_H_

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "audit/ledger.h"
#include "liaison/status.h"
#include "store/store.h"

namespace liaison::broker {

// The ledger's part of a batch: its records, sealed into the chain and
// appended to the ledger file on the writer's thread, then committed with
// the batch (WriteBatch::ledger), so that the core never formats, hashes or
// signs a record itself.
struct LedgerWork {
  audit::Ledger* ledger = nullptr;  // not owned; nullptr: no ledger work
  std::vector<audit::Entry> entries;
  bool checkpoint = false;  // seal the chain with a signed checkpoint
};

// What became of a submitted batch.
struct CommitResult {
  Status status;                // Ok: the batch (and its ledger records) is durable
  bool ledger_written = false;  // records were appended: Keep() or Undo() must follow
  bool ledger_failed = false;   // the ledger could not be written: nothing was stored
  // On success: the batch's copies (their plaintext, for connected
  // receivers, so that nothing is read back from the store) and, one for
  // each, the seq the store gave it (0: not known, or queued already).
  std::vector<store::WriteBatch::Copy> copies;
  std::vector<int64_t> seqs;
  bool ok() const { return status.ok(); }
  std::string ToString() const { return status.ToString(); }
};

class Committer {
 public:
  // `store` (not owned) is used only by the writer thread from now on; it
  // must outlive the Committer. Fails if the thread's eventfd cannot be made.
  static StatusOr<std::unique_ptr<Committer>> Start(store::Store* store);
  ~Committer();  // finishes a submitted batch, then joins

  // Readable when a submitted batch's result is ready (poll it).
  int event_fd() const { return event_fd_; }
  // True from Submit() until TakeResult() or Wait() returned its result.
  bool busy() const { return busy_; }

  // Hands `batch` to the writer. Precondition: !busy(). With `ledger`, the
  // writer first writes its records (audit::Ledger::Write) and puts their
  // lines in the batch; if that fails, nothing is applied. The ledger is
  // used on the writer's thread until the result is taken; the caller must
  // not Write, Keep or Undo it meanwhile (Add is fine).
  void Submit(store::WriteBatch batch, LedgerWork ledger = {});
  // The submitted batch's result if it is ready (clears busy()), else nullopt.
  std::optional<CommitResult> TakeResult();
  // Blocks until the submitted batch is done; its result. Precondition: busy().
  CommitResult Wait();

 private:
  Committer() = default;
  void Loop();
  CommitResult Commit(store::WriteBatch& batch, LedgerWork& ledger);

  store::Store* store_ = nullptr;
  int event_fd_ = -1;
  bool busy_ = false;  // the core's view; touched by the core's thread only

  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<store::WriteBatch> next_;  // guarded by mutex_
  LedgerWork next_ledger_;                 // guarded by mutex_
  std::optional<CommitResult> result_;     // guarded by mutex_
  bool stopping_ = false;                  // guarded by mutex_
  std::thread thread_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CORE_COMMIT_H_

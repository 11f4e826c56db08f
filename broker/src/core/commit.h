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

#include "liaison/status.h"
#include "store/store.h"

namespace liaison::broker {

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

  // Hands `batch` to the writer. Precondition: !busy().
  void Submit(store::WriteBatch batch);
  // The submitted batch's result if it is ready (clears busy()), else nullopt.
  std::optional<Status> TakeResult();
  // Blocks until the submitted batch is done; its result. Precondition: busy().
  Status Wait();

 private:
  Committer() = default;
  void Loop();

  store::Store* store_ = nullptr;
  int event_fd_ = -1;
  bool busy_ = false;  // the core's view; touched by the core's thread only

  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<store::WriteBatch> next_;  // guarded by mutex_
  std::optional<Status> result_;           // guarded by mutex_
  bool stopping_ = false;                  // guarded by mutex_
  std::thread thread_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CORE_COMMIT_H_

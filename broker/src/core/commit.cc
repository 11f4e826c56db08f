#include "core/commit.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace liaison::broker {

StatusOr<std::unique_ptr<Committer>> Committer::Start(store::Store* store) {
  std::unique_ptr<Committer> c(new Committer());
  c->store_ = store;
  c->event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (c->event_fd_ < 0) return Status::Internal("eventfd failed for the store writer");
  c->thread_ = std::thread([raw = c.get()] { raw->Loop(); });
  return c;
}

Committer::~Committer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (event_fd_ >= 0) ::close(event_fd_);
}

void Committer::Submit(store::WriteBatch batch, LedgerWork ledger) {
  {
    std::lock_guard lock(mutex_);
    next_ = std::move(batch);
    next_ledger_ = std::move(ledger);
  }
  busy_ = true;
  cv_.notify_all();
}

std::optional<CommitResult> Committer::TakeResult() {
  uint64_t n;
  // Drained whether or not a result is ready: the next one writes again.
  [[maybe_unused]] ssize_t r = ::read(event_fd_, &n, sizeof n);
  std::lock_guard lock(mutex_);
  if (!result_) return std::nullopt;
  std::optional<CommitResult> out = std::move(result_);
  result_.reset();
  busy_ = false;
  return out;
}

CommitResult Committer::Wait() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return result_.has_value(); });
  CommitResult out = std::move(*result_);
  result_.reset();
  busy_ = false;
  lock.unlock();
  uint64_t n;
  [[maybe_unused]] ssize_t r = ::read(event_fd_, &n, sizeof n);
  return out;
}

void Committer::Loop() {
  while (true) {
    store::WriteBatch batch;
    LedgerWork ledger;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return next_.has_value() || stopping_; });
      if (!next_) return;  // stopping, nothing submitted
      batch = std::move(*next_);
      next_.reset();
      ledger = std::move(next_ledger_);
      next_ledger_ = {};
    }
    CommitResult result = Commit(batch, ledger);
    {
      std::lock_guard lock(mutex_);
      result_ = std::move(result);
    }
    cv_.notify_all();
    uint64_t one = 1;
    // Nothing useful to do on failure: the counter is already non-zero.
    [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
  }
}

CommitResult Committer::Commit(store::WriteBatch& batch, LedgerWork& work) {
  CommitResult result;
  if (work.ledger && (!work.entries.empty() || work.checkpoint)) {
    auto lines = work.ledger->Write(std::move(work.entries), work.checkpoint);
    if (!lines.ok()) {
      // A decision that cannot be recorded is not acted on: the file was
      // cut back, and nothing of the batch is stored.
      result.ledger_failed = true;
      result.status = Status::IoError("the ledger cannot be written: " + lines.status().message());
      return result;
    }
    result.ledger_written = !lines->empty();
    batch.ledger = std::move(*lines);
  }
  result.status = batch.empty() ? Status::Ok() : store_->Apply(batch, &result.seqs);
  if (result.status.ok()) {
    result.seqs.resize(batch.copies.size(), 0);
    result.copies = std::move(batch.copies);
  } else {
    result.seqs.clear();
  }
  return result;
}

}  // namespace liaison::broker

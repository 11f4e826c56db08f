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

void Committer::Submit(store::WriteBatch batch) {
  {
    std::lock_guard lock(mutex_);
    next_ = std::move(batch);
  }
  busy_ = true;
  cv_.notify_all();
}

std::optional<Status> Committer::TakeResult() {
  uint64_t n;
  // Drained whether or not a result is ready: the next one writes again.
  [[maybe_unused]] ssize_t r = ::read(event_fd_, &n, sizeof n);
  std::lock_guard lock(mutex_);
  if (!result_) return std::nullopt;
  std::optional<Status> out = std::move(result_);
  result_.reset();
  busy_ = false;
  return out;
}

Status Committer::Wait() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return result_.has_value(); });
  Status out = std::move(*result_);
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
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return next_.has_value() || stopping_; });
      if (!next_) return;  // stopping, nothing submitted
      batch = std::move(*next_);
      next_.reset();
    }
    Status st = store_->Apply(batch);
    {
      std::lock_guard lock(mutex_);
      result_ = std::move(st);
    }
    cv_.notify_all();
    uint64_t one = 1;
    // Nothing useful to do on failure: the counter is already non-zero.
    [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
  }
}

}  // namespace liaison::broker

// The lease that makes one of the brokers sharing a PostgreSQL store the
// active one (docs/operations.md, section 6c, "Two brokers: active and standby").
// A LeaseKeeper tries to take the lease every renew interval while its
// broker is a standby; once it has it, it hands the epoch to its broker
// (which fences its store with it, brings its ledger file up to the
// database's and starts serving) and renews it every interval on a
// connection of its own. When a renewal says the lease is gone, or the
// lease's time passes without a successful renewal, the broker has lost it:
// the keeper calls on_lost, which does not return.
#ifndef LIAISON_BROKER_LEASE_KEEPER_H_
#define LIAISON_BROKER_LEASE_KEEPER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "admin/metrics.h"
#include "postgres/pg_store.h"

namespace liaison::broker {

class LeaseKeeper {
 public:
  struct Options {
    std::string holder;  // this broker, as the lease row names it
    int64_t ttl_ms = 5000;
    int64_t renew_ms = 1000;
  };
  // `store` is used by the keeper's thread only. `metrics` (not owned)
  // outlives the keeper.
  LeaseKeeper(std::unique_ptr<store::PgStore> store, Options options, Metrics* metrics);
  ~LeaseKeeper();  // Stop()

  // Starts the thread. `on_taken(epoch)` runs once, on a thread of its own
  // (renewals go on meanwhile), when the lease is taken; it returns whether
  // the broker now serves as the active one. `on_lost(why)` runs on the
  // keeper's thread and must not return.
  //
  // `held_epoch` (0: none) is a lease the broker took itself before the
  // keeper started, at `taken_at` (steady clock, before the call): the
  // keeper renews it from the start, as the active one's.
  void Start(std::function<bool(int64_t epoch)> on_taken, std::function<void(const std::string& why)> on_lost,
             int64_t held_epoch = 0, std::chrono::steady_clock::time_point taken_at = {});
  void Stop();
  // After Stop(), once the broker's last batch has committed (a clean
  // stop): ends the lease held, if any, so that a standby takes over at its
  // next try rather than after the lease's TTL. Logs event=ha_lease_released
  // or, on failure, a warning (the lease then runs out by itself).
  void Release();

  // For /metrics (any thread).
  Metrics::HaState State() const;
  // The holder name of the broker started with `config_path`:
  // hostname:absolute config path. Stable across restarts, so that a broker
  // restarted after a crash takes its own lease back at once (with a new
  // epoch, PgStore::AcquireLease) instead of waiting for it to run out;
  // two brokers of a pair differ in it as long as they do not share both
  // host and config file.
  static std::string MakeHolder(const std::string& config_path);

 private:
  void Loop();
  // One attempt to take the lease, or to renew it; false when it is lost.
  void TryTake();
  bool Renew(std::string* why);

  std::unique_ptr<store::PgStore> store_;
  const Options options_;
  Metrics* metrics_;
  std::function<bool(int64_t)> on_taken_;
  std::function<void(const std::string&)> on_lost_;

  std::atomic<int64_t> epoch_{0};     // of the lease held (0: none)
  std::atomic<bool> serving_{false};  // on_taken returned true
  // steady_clock time (ns since its epoch) at the start of the last
  // successful take or renewal: the database set the lease's end after it.
  std::atomic<int64_t> last_ok_ns_{0};
  bool said_standby_ = false;    // event=ha_standby logged (keeper's thread)
  std::string last_failure_;     // the last renewal or take error logged (keeper's thread)

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
  std::thread activation_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_LEASE_KEEPER_H_

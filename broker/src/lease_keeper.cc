#include "lease_keeper.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

namespace liaison::broker {
namespace {

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

LeaseKeeper::LeaseKeeper(std::unique_ptr<store::PgStore> store, Options options, Metrics* metrics)
    : store_(std::move(store)), options_(std::move(options)), metrics_(metrics) {}

LeaseKeeper::~LeaseKeeper() { Stop(); }

std::string LeaseKeeper::MakeHolder(const std::string& config_path) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown-host");
  std::error_code ec;
  const auto path = std::filesystem::weakly_canonical(config_path, ec);
  return std::string(host) + ":" + (ec ? config_path : path.string());
}

void LeaseKeeper::Start(std::function<bool(int64_t)> on_taken, std::function<void(const std::string&)> on_lost,
                        int64_t held_epoch, std::chrono::steady_clock::time_point taken_at) {
  on_taken_ = std::move(on_taken);
  on_lost_ = std::move(on_lost);
  if (held_epoch > 0) {
    last_ok_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(taken_at.time_since_epoch()).count();
    epoch_ = held_epoch;
    serving_ = true;
    metrics_->SetHaReadiness("active", "");
  } else {
    said_standby_ = true;  // the broker said so at its start
    metrics_->SetHaReadiness("standby",
                             "role=standby: another broker holds the store's lease, or it is being taken");
  }
  thread_ = std::thread([this] { Loop(); });
}

void LeaseKeeper::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (activation_.joinable()) activation_.join();
}

void LeaseKeeper::Release() {
  const int64_t epoch = epoch_.load();
  if (epoch == 0) return;
  auto released = store_->ReleaseLease(options_.holder, epoch);
  if (!released.ok()) {
    spdlog::warn("event=ha_lease_release_failed epoch={} error=\"{}\" detail=\"the standby takes over once the "
                 "lease runs out\"",
                 epoch, released.status().message());
    return;
  }
  if (!*released) {
    spdlog::info("event=ha_lease_release_skipped epoch={} detail=\"the lease was no longer this broker's\"", epoch);
    return;
  }
  epoch_ = 0;
  serving_ = false;
  spdlog::info("event=ha_lease_released holder={} epoch={}", options_.holder, epoch);
}

Metrics::HaState LeaseKeeper::State() const {
  Metrics::HaState state;
  state.active = serving_.load();
  state.epoch = epoch_.load();
  const int64_t last = last_ok_ns_.load();
  if (state.epoch > 0 && last > 0) state.lease_age_seconds = static_cast<double>(SteadyNowNs() - last) / 1e9;
  return state;
}

void LeaseKeeper::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    lock.unlock();
    if (epoch_ == 0) {
      TryTake();
    } else if (std::string why; !Renew(&why)) {
      metrics_->SetHaReadiness("standby", "role=standby: this broker lost the store's lease");
      on_lost_(why);  // does not return
      return;
    }
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(options_.renew_ms), [this] { return stopping_; });
  }
}

void LeaseKeeper::TryTake() {
  const int64_t start = SteadyNowNs();
  auto taken = store_->AcquireLease(options_.holder, options_.ttl_ms);
  if (!taken.ok()) {
    if (taken.status().message() != last_failure_) {
      last_failure_ = taken.status().message();
      spdlog::warn("event=ha_lease_unreachable role=standby error=\"{}\"", last_failure_);
    }
    return;
  }
  last_failure_.clear();
  if (!taken->has_value()) {
    if (!said_standby_) {
      said_standby_ = true;
      spdlog::info("event=ha_standby holder={} detail=\"another broker holds the store's lease; this one answers "
                   "standby until it can take it\"",
                   options_.holder);
    }
    return;
  }
  const int64_t epoch = **taken;
  last_ok_ns_ = start;
  epoch_ = epoch;
  spdlog::info("event=ha_lease_taken holder={} epoch={}", options_.holder, epoch);
  // On a thread of its own: opening the store and the ledger may take
  // longer than a renewal interval, and the lease must be renewed meanwhile.
  activation_ = std::thread([this, epoch] {
    if (on_taken_(epoch)) {
      serving_ = true;
      metrics_->SetHaReadiness("active", "");
    }
  });
}

bool LeaseKeeper::Renew(std::string* why) {
  const int64_t start = SteadyNowNs();
  const int64_t ttl_ns = options_.ttl_ms * 1000000;
  // Checked before the call too: a broker paused (SIGSTOP, a long GC-like
  // stall) past its lease must step down whatever the database says now.
  if (start - last_ok_ns_.load() >= ttl_ns) {
    *why = "the lease ran out (" + std::to_string(options_.ttl_ms) + " ms) without a successful renewal";
    return false;
  }
  auto renewed = store_->RenewLease(options_.holder, epoch_, options_.ttl_ms);
  if (!renewed.ok()) {
    if (renewed.status().message() != last_failure_) {
      last_failure_ = renewed.status().message();
      spdlog::error("event=ha_renew_failed epoch={} error=\"{}\" action=retry_until_the_lease_runs_out",
                    epoch_.load(), last_failure_);
    }
    metrics_->SetHaReadiness("active", "role=active: cannot renew the store's lease (the database is unreachable?)");
    if (SteadyNowNs() - last_ok_ns_.load() >= ttl_ns) {
      *why = "the lease ran out (" + std::to_string(options_.ttl_ms) +
             " ms) while the database could not be reached: " + last_failure_;
      return false;
    }
    return true;
  }
  if (!*renewed) {
    *why = "the database says the lease of epoch " + std::to_string(epoch_.load()) +
           " is no longer this broker's (it ran out, or another broker took it)";
    return false;
  }
  last_ok_ns_ = start;
  if (!last_failure_.empty()) {
    spdlog::info("event=ha_renewed epoch={} detail=\"the database answers again\"", epoch_.load());
    last_failure_.clear();
  }
  if (serving_) metrics_->SetHaReadiness("active", "");
  return true;
}

}  // namespace liaison::broker

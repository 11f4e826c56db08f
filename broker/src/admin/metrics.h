// Operator metrics, exported in the Prometheus text format by the admin
// endpoint, kept and rendered with prometheus-cpp (Debian prometheus-cpp-dev).
// Labels carry agency ids, message types, decisions and codes; never message
// contents. Thread-safe: the reactor records, the admin thread renders.
#ifndef LIAISON_BROKER_ADMIN_METRICS_H_
#define LIAISON_BROKER_ADMIN_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "liaison/wire/control_generated.h"
#include "liaison/wire/envelope_generated.h"

namespace liaison::broker {

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // One decision for one recipient of a message from `sender`: `stored`
  // counts as decision="released", any other code under its own name
  // (denied, queue_full, ...). After the first message of a (sender, type,
  // code), this is one hash lookup by the sender's id and an atomic add.
  void Decision(const std::string& sender, wire::Payload type, wire::Code code);
  void Receipt(wire::Code code);
  void ReceiptLatency(std::chrono::microseconds latency);
  void Reload(bool ok);
  void SetQueueDepths(const std::unordered_map<std::string, int64_t>& depths);
  // Response deadlines: a clock fired (liaison_overdue_total{urgency}), and
  // the age of the oldest referral still waiting for its response
  // (liaison_oldest_open_clock_age_seconds; 0 when none waits).
  void Overdue(const std::string& urgency);
  void SetOldestOpenClockAge(double seconds);
  void SetReady(bool ready, const std::string& why);
  // Agencies with at least one live connection (for liaison status).
  void SetConnectedAgencies(std::vector<std::string> agencies);
  std::vector<std::string> ConnectedAgencies() const;
  void Beat() { last_beat_ = std::chrono::steady_clock::now().time_since_epoch().count(); }

  // Counters owned elsewhere, read when rendering.
  struct External {
    const std::atomic<uint64_t>* deliveries = nullptr;
    const std::atomic<uint64_t>* acks = nullptr;
    const std::atomic<uint64_t>* redeliveries = nullptr;
    const std::atomic<uint64_t>* expired = nullptr;
    const std::atomic<uint64_t>* commits = nullptr;
    const std::atomic<uint64_t>* commit_failures = nullptr;
    const std::atomic<uint64_t>* ledger_failures = nullptr;
    const std::atomic<uint64_t>* handshake_failures = nullptr;
    const std::atomic<uint64_t>* duplicates = nullptr;
    const std::atomic<uint64_t>* receipt_lookups = nullptr;
    const std::atomic<uint64_t>* busy = nullptr;
    const std::atomic<uint64_t>* hellos_refused = nullptr;
    std::function<uint64_t()> auth_refused;
    std::function<uint64_t()> auth_admitted;
  };
  void SetExternal(External e);

  // Gauges read from elsewhere when rendering, on the admin thread: the
  // policy version and, per recipient, the oldest queued message's age and
  // the set-aside messages (liaison_oldest_message_age_seconds,
  // liaison_set_aside_messages, liaison_policy_info). Set before the admin
  // endpoint starts; `source` runs on the admin thread only.
  struct QueueGauge {
    std::string recipient;
    int64_t oldest_age_seconds = 0;
    int64_t set_aside = 0;
  };
  struct Gauges {
    std::string policy_version;
    std::vector<QueueGauge> queues;
  };
  void SetGaugeSource(std::function<Gauges()> source);

  // The broker's part in an active/standby pair on a PostgreSQL store
  // (liaison_ha_role, liaison_ha_lease_age_seconds, liaison_ha_epoch);
  // without a source (SQLite) none of them is exported.
  struct HaState {
    bool active = false;
    double lease_age_seconds = 0;  // since the last successful take or renewal (0: never)
    int64_t epoch = 0;             // of the lease held (0: none)
  };
  void SetHaSource(std::function<HaState()> source);
  // The role /readyz names on its first detail line ("role=active" or
  // "role=standby"), and, if not empty, why the broker is not ready in that
  // role (a standby; an active broker that cannot renew its lease), which
  // holds whatever else says.
  void SetHaReadiness(const std::string& role, const std::string& not_ready_why);

  // The exposition: everything recorded here, the external counters and
  // gauges, and the process's own metrics (process_cpu_seconds_total,
  // process_resident_memory_bytes, process_open_fds, ...).
  std::string Render() const;
  // Alive: the reactor loop ran in the last few seconds.
  bool Healthy() const;
  bool Ready(std::string* why) const;
  // Lines that /readyz shows after its verdict, ready or not (e.g. that
  // policy signing is off).
  void SetReadyDetails(const std::string& details);
  std::string ReadyDetails() const;

 private:
  class LiveValues;  // the external counters and gauges, read at each scrape
  // wire::Payload and wire::Code values index these arrays (by position in
  // EnumValuesCode(): the codes are not contiguous).
  static constexpr size_t kTypes = static_cast<size_t>(wire::Payload::MAX) + 1;
  static constexpr size_t kCodes = sizeof(wire::EnumValuesCode()) / sizeof(wire::EnumValuesCode()[0]);
  // One sender's decision counters, resolved in the family on first use.
  using DecisionCounters = std::array<std::array<prometheus::Counter*, kCodes>, kTypes>;

  std::shared_ptr<prometheus::Registry> registry_;  // what is recorded here
  prometheus::Family<prometheus::Counter>& decisions_;
  prometheus::Family<prometheus::Counter>& receipts_;
  prometheus::Family<prometheus::Gauge>& queue_depths_;
  prometheus::Histogram& receipt_latency_;
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Counter& reloads_ok_;
  prometheus::Counter& reloads_failed_;
  prometheus::Family<prometheus::Counter>& overdue_;
  prometheus::Gauge& oldest_open_clock_;
  std::unique_ptr<LiveValues> live_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, DecisionCounters> decisions_by_sender_;  // GUARDED_BY(mu_)
  std::array<prometheus::Counter*, kCodes> receipts_by_code_{};            // GUARDED_BY(mu_)
  std::unordered_map<std::string, prometheus::Gauge*> depth_by_agency_;    // GUARDED_BY(mu_)
  std::vector<std::string> connected_;  // sorted; GUARDED_BY(mu_)
  bool ready_ = false;                  // GUARDED_BY(mu_)
  std::string not_ready_why_ = "starting";
  std::string ready_details_;
  std::string ha_role_;           // GUARDED_BY(mu_); empty: not in a pair
  std::string ha_not_ready_why_;  // GUARDED_BY(mu_)
  std::atomic<int64_t> last_beat_{0};
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_ADMIN_METRICS_H_

// Operator metrics, exported in the Prometheus text format by the admin
// endpoint. Labels carry agency ids, message types, decisions and codes;
// never message contents. Thread-safe: the reactor records, the admin thread
// renders.
#ifndef LIAISON_BROKER_ADMIN_METRICS_H_
#define LIAISON_BROKER_ADMIN_METRICS_H_

#include <array>
#include <functional>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace liaison::broker {

class Metrics {
 public:
  // One decision for one recipient (released, denied, queue_full, ...).
  void Decision(const std::string& type, const std::string& decision, const std::string& sender);
  void Receipt(const std::string& code);
  void ReceiptLatency(std::chrono::microseconds latency);
  void Reload(bool ok);
  void SetQueueDepths(const std::unordered_map<std::string, int64_t>& depths);
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

  std::string Render() const;
  // Alive: the reactor loop ran in the last few seconds.
  bool Healthy() const;
  bool Ready(std::string* why) const;
  // Lines that /readyz shows after its verdict, ready or not (e.g. that
  // policy signing is off).
  void SetReadyDetails(const std::string& details);
  std::string ReadyDetails() const;

 private:
  static constexpr std::array<double, 12> kBuckets = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,  0.5,   1.0,  2.5};
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> decisions_;
  std::map<std::string, uint64_t> receipts_;
  std::map<std::string, int64_t> queue_depths_;
  std::vector<std::string> connected_;  // sorted
  std::array<uint64_t, kBuckets.size() + 1> latency_buckets_{};
  double latency_sum_ = 0;
  uint64_t latency_count_ = 0;
  uint64_t reloads_ok_ = 0, reloads_failed_ = 0;
  bool ready_ = false;
  std::string not_ready_why_ = "starting";
  std::string ready_details_;
  std::atomic<int64_t> last_beat_{0};
  External external_;
  std::function<Gauges()> gauge_source_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_ADMIN_METRICS_H_

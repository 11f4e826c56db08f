#include "admin/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <algorithm>

#include "admin/process_metrics.h"
#include "liaison/version.h"

namespace liaison::broker {
namespace {

// The bounds of liaison_receipt_latency_seconds: from half a millisecond
// (a group commit on a fast disk) to 2.5 s.
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                                 0.05,   0.1,   0.25,  0.5,   1.0,  2.5};

size_t CodeIndex(wire::Code code) {
  const auto& codes = wire::EnumValuesCode();
  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); ++i) {
    if (codes[i] == code) return i;
  }
  return 0;  // not reached: every wire::Code is in EnumValuesCode()
}

const char* DecisionName(wire::Code code) {
  return code == wire::Code::stored ? "released" : wire::EnumNameCode(code);
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  return family;
}

prometheus::ClientMetric Sample(double value, prometheus::MetricType type,
                                std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  (type == prometheus::MetricType::Counter ? metric.counter.value : metric.gauge.value) = value;
  return metric;
}

}  // namespace

// What other parts own and the endpoint only reads: the reactor's and the
// ZAP handler's counters, the store's gauges (through the gauge source),
// and the build. Read at every scrape, so nothing copies them on the
// message path.
class Metrics::LiveValues : public prometheus::Collectable {
 public:
  void SetExternal(External e) {
    std::lock_guard<std::mutex> lock(mu_);
    external_ = std::move(e);
  }
  void SetGaugeSource(std::function<Gauges()> source) {
    std::lock_guard<std::mutex> lock(mu_);
    gauge_source_ = std::move(source);
  }
  void SetHaSource(std::function<HaState()> source) {
    std::lock_guard<std::mutex> lock(mu_);
    ha_source_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<prometheus::MetricFamily> out;
    auto gauge = [&out](const char* name, const char* help, double value,
                        std::vector<prometheus::ClientMetric::Label> labels = {}) {
      out.push_back(Family(name, help, MetricType::Gauge));
      out.back().metric.push_back(Sample(value, MetricType::Gauge, std::move(labels)));
    };
    auto counter = [&out](const char* name, const char* help, uint64_t value) {
      out.push_back(Family(name, help, MetricType::Counter));
      out.back().metric.push_back(Sample(static_cast<double>(value), MetricType::Counter));
    };
    auto read = [](const std::atomic<uint64_t>* a) { return a ? a->load(std::memory_order_relaxed) : 0; };
    gauge("liaison_up", "1 while the broker runs.", 1);
    const External& e = external_;
    counter("liaison_deliveries_total", "Messages sent to recipients (redeliveries included).", read(e.deliveries));
    counter("liaison_acks_total", "Acknowledgements from recipients.", read(e.acks));
    counter("liaison_redeliveries_total", "Deliveries repeated after a timeout.", read(e.redeliveries));
    counter("liaison_expired_total", "Messages that expired undelivered.", read(e.expired));
    counter("liaison_duplicates_total", "Resends answered with the original receipt.", read(e.duplicates));
    counter("liaison_receipt_lookups_total",
            "Message ids looked up in the store as possible resends (the receipt filter could not rule them out).",
            read(e.receipt_lookups));
    counter("liaison_busy_total", "Messages refused over an agency's rate or in-flight limit (resend later).",
            read(e.busy));
    counter("liaison_hellos_refused_total", "HELLOs refused over an agency's HELLO rate (event=hello_flood).",
            read(e.hellos_refused));
    counter("liaison_store_commits_total", "Group commits of the store.", read(e.commits));
    counter("liaison_store_commit_failures_total", "Batches refused because the store or ledger failed.",
            read(e.commit_failures));
    counter("liaison_ledger_failures_total", "Ledger writes that failed.", read(e.ledger_failures));
    counter("liaison_handshake_failures_total", "Refused connections (plaintext, unknown key, protocol).",
            read(e.handshake_failures));
    counter("liaison_auth_failures_total", "Keys refused by the ZAP handler.", e.auth_refused ? e.auth_refused() : 0);
    counter("liaison_auth_success_total", "Keys admitted by the ZAP handler.",
            e.auth_admitted ? e.auth_admitted() : 0);
    gauge("liaison_build_info", "The broker's release and source (git describe).", 1,
          {{"source", std::string(SourceVersion())}, {"version", std::string(ReleaseVersion())}});
    if (ha_source_) {
      const HaState ha = ha_source_();
      auto role = Family("liaison_ha_role",
                         "1 for this broker's role in an active/standby pair: active (holds the lease) or standby.",
                         MetricType::Gauge);
      role.metric.push_back(Sample(ha.active ? 1 : 0, MetricType::Gauge, {{"role", "active"}}));
      role.metric.push_back(Sample(ha.active ? 0 : 1, MetricType::Gauge, {{"role", "standby"}}));
      out.push_back(std::move(role));
      gauge("liaison_ha_lease_age_seconds",
            "Seconds since this broker last took or renewed the lease (0 if it never held it).",
            ha.lease_age_seconds);
      gauge("liaison_ha_epoch", "The epoch of the lease this broker holds (0: none).",
            static_cast<double>(ha.epoch));
    }
    if (gauge_source_) {
      const Gauges g = gauge_source_();
      gauge("liaison_policy_info", "The policy set in force (its version label).", 1, {{"version", g.policy_version}});
      auto age = Family("liaison_oldest_message_age_seconds",
                        "Age of the oldest queued (undelivered or unacknowledged) message, by recipient agency.",
                        MetricType::Gauge);
      auto set_aside = Family("liaison_set_aside_messages",
                              "Stored messages that do not decrypt, set aside for an operator, by recipient agency.",
                              MetricType::Gauge);
      for (const auto& q : g.queues) {
        age.metric.push_back(
            Sample(static_cast<double>(q.oldest_age_seconds), MetricType::Gauge, {{"agency", q.recipient}}));
        set_aside.metric.push_back(
            Sample(static_cast<double>(q.set_aside), MetricType::Gauge, {{"agency", q.recipient}}));
      }
      out.push_back(std::move(age));
      out.push_back(std::move(set_aside));
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  External external_;                     // GUARDED_BY(mu_)
  std::function<Gauges()> gauge_source_;  // GUARDED_BY(mu_)
  std::function<HaState()> ha_source_;    // GUARDED_BY(mu_)
};

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      decisions_(prometheus::BuildCounter()
                     .Name("liaison_decisions_total")
                     .Help("Decisions per recipient, by message type, decision and sender agency.")
                     .Register(*registry_)),
      receipts_(prometheus::BuildCounter()
                    .Name("liaison_receipts_total")
                    .Help("Receipts sent, by whole-message code.")
                    .Register(*registry_)),
      queue_depths_(prometheus::BuildGauge()
                        .Name("liaison_queue_depth")
                        .Help("Messages stored and not yet acknowledged, by recipient agency.")
                        .Register(*registry_)),
      receipt_latency_(
          prometheus::BuildHistogram()
              .Name("liaison_receipt_latency_seconds")
              .Help("From receiving a message to sending its receipt (includes the durable commit).")
              .Register(*registry_)
              .Add({}, kLatencyBuckets)),
      reloads_(prometheus::BuildCounter()
                   .Name("liaison_policy_reloads_total")
                   .Help("Policy reloads, by result.")
                   .Register(*registry_)),
      reloads_ok_(reloads_.Add({{"result", "ok"}})),
      reloads_failed_(reloads_.Add({{"result", "failed"}})),
      overdue_(prometheus::BuildCounter()
                   .Name("liaison_overdue_total")
                   .Help("Referrals not answered by their recipient within the urgency's response deadline.")
                   .Register(*registry_)),
      oldest_open_clock_(prometheus::BuildGauge()
                             .Name("liaison_oldest_open_clock_age_seconds")
                             .Help("Age of the oldest referral still waiting for its response (0: none).")
                             .Register(*registry_)
                             .Add({})),
      live_(std::make_unique<LiveValues>()) {
  // Every urgency's series exists from the start: an alert on its rate has
  // a zero to start from.
  for (const char* urgency : {"red", "amber", "green"}) overdue_.Add({{"urgency", urgency}});
  // The common receipt codes exist from the start, so that a rate over them
  // has a zero to start from rather than a missing series.
  for (wire::Code code : {wire::Code::ok, wire::Code::unavailable}) {
    receipts_by_code_[CodeIndex(code)] = &receipts_.Add({{"code", wire::EnumNameCode(code)}});
  }
}

Metrics::~Metrics() = default;

void Metrics::Decision(const std::string& sender, wire::Payload type, wire::Code code) {
  const size_t t = static_cast<size_t>(type) < kTypes ? static_cast<size_t>(type) : 0;
  const size_t c = CodeIndex(code);
  std::lock_guard<std::mutex> lock(mu_);
  prometheus::Counter*& counter = decisions_by_sender_[sender][t][c];
  if (!counter) {
    counter = &decisions_.Add(
        {{"type", wire::EnumNamePayload(type)}, {"decision", DecisionName(code)}, {"agency", sender}});
  }
  counter->Increment();
}

void Metrics::Receipt(wire::Code code) {
  const size_t c = CodeIndex(code);
  std::lock_guard<std::mutex> lock(mu_);
  prometheus::Counter*& counter = receipts_by_code_[c];
  if (!counter) counter = &receipts_.Add({{"code", wire::EnumNameCode(code)}});
  counter->Increment();
}

void Metrics::ReceiptLatency(std::chrono::microseconds latency) {
  receipt_latency_.Observe(static_cast<double>(latency.count()) / 1e6);
}

void Metrics::Overdue(const std::string& urgency) { overdue_.Add({{"urgency", urgency}}).Increment(); }

void Metrics::SetOldestOpenClockAge(double seconds) { oldest_open_clock_.Set(seconds); }

void Metrics::Reload(bool ok) { (ok ? reloads_ok_ : reloads_failed_).Increment(); }

void Metrics::SetQueueDepths(const std::unordered_map<std::string, int64_t>& depths) {
  std::lock_guard<std::mutex> lock(mu_);
  // A recipient that no longer has a queue leaves the exposition, as it did
  // when the depths were written out from a fresh map each time.
  for (auto it = depth_by_agency_.begin(); it != depth_by_agency_.end();) {
    if (depths.count(it->first) == 0) {
      queue_depths_.Remove(it->second);
      it = depth_by_agency_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [agency, n] : depths) {
    prometheus::Gauge*& gauge = depth_by_agency_[agency];
    if (!gauge) gauge = &queue_depths_.Add({{"agency", agency}});
    gauge->Set(static_cast<double>(n));
  }
}

void Metrics::SetConnectedAgencies(std::vector<std::string> agencies) {
  std::sort(agencies.begin(), agencies.end());
  std::lock_guard<std::mutex> lock(mu_);
  connected_ = std::move(agencies);
}

std::vector<std::string> Metrics::ConnectedAgencies() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connected_;
}

void Metrics::SetReady(bool ready, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = ready;
  not_ready_why_ = why;
}

void Metrics::SetReadyDetails(const std::string& details) {
  std::lock_guard<std::mutex> lock(mu_);
  ready_details_ = details;
}

std::string Metrics::ReadyDetails() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ha_role_.empty() ? ready_details_ : "role=" + ha_role_ + "\n" + ready_details_;
}

void Metrics::SetHaReadiness(const std::string& role, const std::string& not_ready_why) {
  std::lock_guard<std::mutex> lock(mu_);
  ha_role_ = role;
  ha_not_ready_why_ = not_ready_why;
}

void Metrics::SetGaugeSource(std::function<Gauges()> source) { live_->SetGaugeSource(std::move(source)); }

void Metrics::SetExternal(External e) { live_->SetExternal(std::move(e)); }

void Metrics::SetHaSource(std::function<HaState()> source) { live_->SetHaSource(std::move(source)); }

bool Metrics::Healthy() const {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return now - last_beat_.load() < std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                       std::chrono::seconds(5))
                                       .count();
}

bool Metrics::Ready(std::string* why) const {
  std::lock_guard<std::mutex> lock(mu_);
  const bool healthy = Healthy();
  if (why) {
    *why = !ha_not_ready_why_.empty() ? ha_not_ready_why_
           : !ready_                  ? not_ready_why_
           : !healthy                 ? "the reactor loop is not responding"
                                      : "";
  }
  return ready_ && healthy && ha_not_ready_why_.empty();
}

std::string Metrics::Render() const {
  std::vector<prometheus::MetricFamily> families = live_->Collect();
  for (auto& f : registry_->Collect()) families.push_back(std::move(f));
  static const ProcessMetrics process;
  for (auto& f : process.Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace liaison::broker

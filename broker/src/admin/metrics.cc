#include "admin/metrics.h"

#include "liaison/version.h"

#include <algorithm>
#include <sstream>

namespace liaison::broker {
namespace {

// Label values are agency ids, type and code names: no quotes or newlines,
// but escape anyway so that the exposition stays valid.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

void Counter(std::ostringstream& out, const char* name, const char* help, uint64_t value) {
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n" << name << " " << value << "\n";
}

}  // namespace

void Metrics::Decision(const std::string& type, const std::string& decision, const std::string& sender) {
  std::lock_guard<std::mutex> lock(mu_);
  ++decisions_[{type, decision, sender}];
}

void Metrics::Receipt(const std::string& code) {
  std::lock_guard<std::mutex> lock(mu_);
  ++receipts_[code];
}

void Metrics::ReceiptLatency(std::chrono::microseconds latency) {
  const double seconds = latency.count() / 1e6;
  std::lock_guard<std::mutex> lock(mu_);
  size_t i = 0;
  while (i < kBuckets.size() && seconds > kBuckets[i]) ++i;
  ++latency_buckets_[i];
  latency_sum_ += seconds;
  ++latency_count_;
}

void Metrics::Reload(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  ++(ok ? reloads_ok_ : reloads_failed_);
}

void Metrics::SetQueueDepths(const std::unordered_map<std::string, int64_t>& depths) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_depths_.clear();
  for (const auto& [agency, n] : depths) queue_depths_[agency] = n;
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
  return ready_details_;
}

void Metrics::SetGaugeSource(std::function<Gauges()> source) {
  std::lock_guard<std::mutex> lock(mu_);
  gauge_source_ = std::move(source);
}

void Metrics::SetExternal(External e) {
  std::lock_guard<std::mutex> lock(mu_);
  external_ = std::move(e);
}

bool Metrics::Healthy() const {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return now - last_beat_.load() < std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                       std::chrono::seconds(5))
                                       .count();
}

bool Metrics::Ready(std::string* why) const {
  std::lock_guard<std::mutex> lock(mu_);
  const bool healthy = Healthy();
  if (why) *why = !ready_ ? not_ready_why_ : (!healthy ? "the reactor loop is not responding" : "");
  return ready_ && healthy;
}

std::string Metrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  out << "# HELP liaison_up 1 while the broker runs.\n# TYPE liaison_up gauge\nliaison_up 1\n";
  out << "# HELP liaison_decisions_total Decisions per recipient, by message type, decision and sender agency.\n"
         "# TYPE liaison_decisions_total counter\n";
  for (const auto& [key, n] : decisions_) {
    const auto& [type, decision, sender] = key;
    out << "liaison_decisions_total{type=\"" << Label(type) << "\",decision=\"" << Label(decision)
        << "\",agency=\"" << Label(sender) << "\"} " << n << "\n";
  }
  out << "# HELP liaison_receipts_total Receipts sent, by whole-message code.\n"
         "# TYPE liaison_receipts_total counter\n";
  for (const auto& [code, n] : receipts_) out << "liaison_receipts_total{code=\"" << Label(code) << "\"} " << n << "\n";
  out << "# HELP liaison_queue_depth Messages stored and not yet acknowledged, by recipient agency.\n"
         "# TYPE liaison_queue_depth gauge\n";
  for (const auto& [agency, n] : queue_depths_) {
    out << "liaison_queue_depth{agency=\"" << Label(agency) << "\"} " << n << "\n";
  }
  out << "# HELP liaison_receipt_latency_seconds From receiving a message to sending its receipt (includes the durable commit).\n"
         "# TYPE liaison_receipt_latency_seconds histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    cumulative += latency_buckets_[i];
    out << "liaison_receipt_latency_seconds_bucket{le=\"" << kBuckets[i] << "\"} " << cumulative << "\n";
  }
  cumulative += latency_buckets_[kBuckets.size()];
  out << "liaison_receipt_latency_seconds_bucket{le=\"+Inf\"} " << cumulative << "\n"
      << "liaison_receipt_latency_seconds_sum " << latency_sum_ << "\n"
      << "liaison_receipt_latency_seconds_count " << latency_count_ << "\n";
  out << "# HELP liaison_policy_reloads_total Policy reloads, by result.\n# TYPE liaison_policy_reloads_total counter\n"
      << "liaison_policy_reloads_total{result=\"ok\"} " << reloads_ok_ << "\n"
      << "liaison_policy_reloads_total{result=\"failed\"} " << reloads_failed_ << "\n";
  auto read = [](const std::atomic<uint64_t>* a) { return a ? a->load() : 0; };
  Counter(out, "liaison_deliveries_total", "Messages sent to recipients (redeliveries included).", read(external_.deliveries));
  Counter(out, "liaison_acks_total", "Acknowledgements from recipients.", read(external_.acks));
  Counter(out, "liaison_redeliveries_total", "Deliveries repeated after a timeout.", read(external_.redeliveries));
  Counter(out, "liaison_expired_total", "Messages that expired undelivered.", read(external_.expired));
  Counter(out, "liaison_duplicates_total", "Resends answered with the original receipt.", read(external_.duplicates));
  Counter(out, "liaison_busy_total", "Messages refused over an agency's rate or in-flight limit (resend later).", read(external_.busy));
  Counter(out, "liaison_hellos_refused_total", "HELLOs refused over an agency's HELLO rate (event=hello_flood).",
          read(external_.hellos_refused));
  Counter(out, "liaison_store_commits_total", "Group commits of the store.", read(external_.commits));
  Counter(out, "liaison_store_commit_failures_total", "Batches refused because the store or ledger failed.",
          read(external_.commit_failures));
  Counter(out, "liaison_ledger_failures_total", "Ledger writes that failed.", read(external_.ledger_failures));
  Counter(out, "liaison_handshake_failures_total", "Refused connections (plaintext, unknown key, protocol).",
          read(external_.handshake_failures));
  Counter(out, "liaison_auth_failures_total", "Keys refused by the ZAP handler.",
          external_.auth_refused ? external_.auth_refused() : 0);
  Counter(out, "liaison_auth_success_total", "Keys admitted by the ZAP handler.",
          external_.auth_admitted ? external_.auth_admitted() : 0);
  out << "# HELP liaison_build_info The broker's release and source (git describe).\n"
         "# TYPE liaison_build_info gauge\n"
      << "liaison_build_info{version=\"" << Label(std::string(ReleaseVersion())) << "\",source=\""
      << Label(std::string(SourceVersion())) << "\"} 1\n";
  if (gauge_source_) {
    const Gauges gauges = gauge_source_();
    out << "# HELP liaison_policy_info The policy set in force (its version label).\n"
           "# TYPE liaison_policy_info gauge\n"
        << "liaison_policy_info{version=\"" << Label(gauges.policy_version) << "\"} 1\n";
    out << "# HELP liaison_oldest_message_age_seconds Age of the oldest queued (undelivered or unacknowledged) "
           "message, by recipient agency.\n# TYPE liaison_oldest_message_age_seconds gauge\n";
    for (const auto& q : gauges.queues) {
      out << "liaison_oldest_message_age_seconds{agency=\"" << Label(q.recipient) << "\"} " << q.oldest_age_seconds
          << "\n";
    }
    out << "# HELP liaison_set_aside_messages Stored messages that do not decrypt, set aside for an operator, "
           "by recipient agency.\n# TYPE liaison_set_aside_messages gauge\n";
    for (const auto& q : gauges.queues) {
      out << "liaison_set_aside_messages{agency=\"" << Label(q.recipient) << "\"} " << q.set_aside << "\n";
    }
  }
  return out.str();
}

}  // namespace liaison::broker

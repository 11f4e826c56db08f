#include "delivery/windows.h"

#include <algorithm>

namespace liaison::broker {

size_t DeliveryWindows::Room(const std::string& recipient) const {
  auto it = rows_.find(recipient);
  const size_t used = it == rows_.end() ? 0 : it->second.inflight.size();
  return used >= window_ ? 0 : window_ - used;
}

int64_t DeliveryWindows::Cursor(const std::string& recipient) const {
  auto it = rows_.find(recipient);
  return it == rows_.end() ? 0 : it->second.cursor;
}

bool DeliveryWindows::MaySend(const std::string& recipient, std::string_view message_id) const {
  if (!id_only_ackers_.count(recipient)) return true;
  auto it = rows_.find(recipient);
  if (it == rows_.end()) return true;
  return std::none_of(it->second.inflight.begin(), it->second.inflight.end(),
                      [&](const auto& entry) { return entry.second.message_id == message_id; });
}

void DeliveryWindows::Sent(const std::string& recipient, int64_t seq, InFlight message) {
  Row& row = rows_[recipient];
  row.inflight[seq] = std::move(message);
  row.cursor = std::max(row.cursor, seq);
}

void DeliveryWindows::Skip(const std::string& recipient, int64_t seq) {
  Row& row = rows_[recipient];
  row.cursor = std::max(row.cursor, seq);
}

DeliveryWindows::Acked DeliveryWindows::TakeAcked(const std::string& recipient, std::string_view sender,
                                                  std::string_view id) {
  Acked acked;
  if (sender.empty()) id_only_ackers_.insert(recipient);
  auto it = rows_.find(recipient);
  if (it == rows_.end()) return acked;
  Row& row = it->second;
  std::set<std::string_view> senders;
  for (const auto& [seq, message] : row.inflight) {
    if (message.message_id != id || (!sender.empty() && message.sender != sender)) continue;
    acked.copies.emplace_back(seq, message);
    senders.insert(message.sender);
  }
  if (sender.empty() && senders.size() > 1) {
    // Two senders' messages share the id: acking either could lose the
    // other. Neither is acked; both are redelivered (one at a time now).
    acked.copies.clear();
    acked.ambiguous_senders = senders.size();
    return acked;
  }
  for (const auto& [seq, message] : acked.copies) row.inflight.erase(seq);
  return acked;
}

void DeliveryWindows::Withdraw(const std::string& recipient, int64_t seq) {
  auto it = rows_.find(recipient);
  if (it == rows_.end()) return;
  Row& row = it->second;
  row.inflight.erase(seq);
  // Not yet sent: it is not sent at all (its row leaves the queue with the
  // batch that withdraws it; should that batch fail, every row is Reset).
  for (auto f = row.fresh.begin(); f != row.fresh.end(); ++f) {
    if (f->seq != seq) continue;
    row.fresh_bytes -= f->envelope.size();
    row.fresh.erase(f);
    break;
  }
}

void DeliveryWindows::CaughtUp(const std::string& recipient) {
  Row& row = rows_[recipient];
  row.caught_up = true;
}

bool DeliveryWindows::IsCaughtUp(const std::string& recipient) const {
  auto it = rows_.find(recipient);
  return it != rows_.end() && it->second.caught_up;
}

void DeliveryWindows::Offer(const std::string& recipient, Fresh copy) {
  auto it = rows_.find(recipient);
  if (it == rows_.end() || !it->second.caught_up) return;
  Row& row = it->second;
  // Committed after the read that caught the row up, so past it, unless a
  // store read that ran after its commit sent it already.
  if (copy.seq <= row.cursor) return;
  // Out of order (seqs grow with every commit, so this is not expected):
  // the store orders it.
  if ((!row.fresh.empty() && copy.seq <= row.fresh.back().seq) || row.fresh.size() >= kMaxFresh ||
      row.fresh_bytes + copy.envelope.size() > kMaxFreshBytes) {
    Forget(recipient);
    return;
  }
  row.fresh_bytes += copy.envelope.size();
  row.fresh.push_back(std::move(copy));
}

void DeliveryWindows::Forget(const std::string& recipient) {
  auto it = rows_.find(recipient);
  if (it == rows_.end()) return;
  it->second.caught_up = false;
  it->second.fresh.clear();
  it->second.fresh_bytes = 0;
}

DeliveryWindows::Fresh* DeliveryWindows::NextFresh(const std::string& recipient) {
  auto it = rows_.find(recipient);
  if (it == rows_.end() || it->second.fresh.empty()) return nullptr;
  return &it->second.fresh.front();
}

void DeliveryWindows::PopFresh(const std::string& recipient) {
  auto it = rows_.find(recipient);
  if (it == rows_.end() || it->second.fresh.empty()) return;
  it->second.fresh_bytes -= it->second.fresh.front().envelope.size();
  it->second.fresh.pop_front();
}

void DeliveryWindows::Reset(const std::string& recipient) { rows_[recipient] = Row{}; }

std::vector<std::string> DeliveryWindows::ResetAll() {
  std::vector<std::string> recipients;
  for (auto& [recipient, row] : rows_) {
    row = Row{};
    recipients.push_back(recipient);
  }
  return recipients;
}

std::vector<std::pair<std::string, size_t>> DeliveryWindows::Overdue(int64_t now_ms) {
  std::vector<std::pair<std::string, size_t>> overdue;
  for (auto& [recipient, row] : rows_) {
    if (row.inflight.empty() || now_ms - row.inflight.begin()->second.sent_ms <= redelivery_timeout_ms_) {
      continue;
    }
    overdue.emplace_back(recipient, row.inflight.size());
    row = Row{};
  }
  return overdue;
}

std::vector<std::string> DeliveryWindows::Recipients() const {
  std::vector<std::string> recipients;
  recipients.reserve(rows_.size());
  for (const auto& [recipient, row] : rows_) recipients.push_back(recipient);
  return recipients;
}

}  // namespace liaison::broker

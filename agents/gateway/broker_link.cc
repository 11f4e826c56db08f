#include "broker_link.h"

#include <spdlog/spdlog.h>

namespace liaison::gateway {

void Inbox::Add(std::string sender, std::string id, std::vector<uint8_t> envelope) {
  std::lock_guard lock(mu_);
  items_.try_emplace(Key(std::move(sender), std::move(id)), Entry{std::move(envelope), {}, next_order_++});
}

std::vector<Inbox::Item> Inbox::Lease(size_t max, Clock::duration lease) {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  std::vector<std::pair<uint64_t, std::map<Key, Entry>::iterator>> free;
  for (auto it = items_.begin(); it != items_.end(); ++it) {
    if (it->second.leased_until <= now) free.emplace_back(it->second.order, it);
  }
  std::sort(free.begin(), free.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Item> out;
  for (size_t i = 0; i < free.size() && out.size() < max; ++i) {
    auto it = free[i].second;
    it->second.leased_until = now + lease;
    out.push_back(Item{it->first.first, it->first.second, it->second.envelope});
  }
  return out;
}

std::optional<std::vector<uint8_t>> Inbox::Get(const std::string& sender, const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = items_.find(Key(sender, id));
  if (it == items_.end()) return std::nullopt;
  return it->second.envelope;
}

bool Inbox::Remove(const std::string& sender, const std::string& id) {
  std::lock_guard lock(mu_);
  return items_.erase(Key(sender, id)) > 0;
}

Inbox::Removed Inbox::RemoveById(const std::string& id, std::string* sender) {
  std::lock_guard lock(mu_);
  auto found = items_.end();
  for (auto it = items_.begin(); it != items_.end(); ++it) {
    if (it->first.second != id) continue;
    if (found != items_.end()) return Removed::kAmbiguous;
    found = it;
  }
  if (found == items_.end()) return Removed::kNotHeld;
  *sender = found->first.first;
  items_.erase(found);
  return Removed::kRemoved;
}

size_t Inbox::size() const {
  std::lock_guard lock(mu_);
  return items_.size();
}

BrokerLink::BrokerLink(AgentOptions options, GatewayStore& store, Inbox& inbox)
    : options_(std::move(options)), store_(store), inbox_(inbox) {}

BrokerLink::~BrokerLink() { Stop(); }

Status BrokerLink::Start() {
  AgentOptions send_options = options_;
  send_options.role = wire::Role::sender;
  send_options.outbox.clear();  // the GatewayStore is this gateway's outbox
  auto sender = Agent::Connect(send_options);
  if (!sender.ok()) return sender.status();
  AgentOptions receive_options = send_options;
  receive_options.role = wire::Role::receiver;
  auto receiver = Agent::Connect(receive_options);
  if (!receiver.ok()) return receiver.status();
  sender_ = std::move(*sender);
  receiver_ = std::move(*receiver);
  sender_thread_ = std::thread([this] { SenderLoop(); });
  receiver_thread_ = std::thread([this] { ReceiverLoop(); });
  return Status::Ok();
}

void BrokerLink::Stop() {
  stop_ = true;
  WakeSender();
  if (sender_thread_.joinable()) sender_thread_.join();
  if (receiver_thread_.joinable()) receiver_thread_.join();
}

void BrokerLink::WakeSender() {
  {
    std::lock_guard lock(mu_);
    pending_wake_ = true;
  }
  wake_.notify_all();
}

void BrokerLink::Ack(const std::string& sender, const std::string& id) {
  std::lock_guard lock(mu_);
  acks_.emplace_back(sender, id);
}

std::string BrokerLink::agency() const {
  std::lock_guard lock(mu_);
  return agency_;
}

void BrokerLink::SenderLoop() {
  // Back off on trouble so that a down broker or a full disk is not hammered;
  // the message stays first in line.
  auto backoff = std::chrono::milliseconds(200);
  auto pause = [&](std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, d, [&] { return stop_.load(); });
  };
  while (!stop_) {
    auto next = store_.NextPending();
    if (!next.ok()) {
      spdlog::error("event=state_read_failed error=\"{}\"", next.status().message());
      pause(std::chrono::seconds(1));
      continue;
    }
    if (!next->has_value()) {
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, std::chrono::seconds(1), [&] { return pending_wake_ || stop_.load(); });
      pending_wake_ = false;
      continue;
    }
    const auto& message = **next;
    auto receipt = sender_->Send(message.envelope);
    if (!receipt.ok()) {
      key_refused_ = receipt.status().code() == Status::Code::kPermissionDenied;
      spdlog::warn("event=send_deferred message_id={} reason=\"{}\"", message.id,
                   receipt.status().message());
      pause(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(10000));
      continue;
    }
    key_refused_ = false;
    if ((*receipt)->code() == wire::Code::unavailable || (*receipt)->code() == wire::Code::busy) {
      spdlog::warn("event=send_deferred message_id={} reason={}", message.id,
                   wire::EnumNameCode((*receipt)->code()));
      pause(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(10000));
      continue;
    }
    backoff = std::chrono::milliseconds(200);
    if (auto st = store_.Answer(message.id, receipt->bytes()); !st.ok()) {
      spdlog::error("event=state_write_failed message_id={} error=\"{}\"", message.id, st.message());
      pause(std::chrono::seconds(1));
      continue;
    }
    spdlog::info("event=message_sent message_id={} code={}", message.id,
                 wire::EnumNameCode((*receipt)->code()));
  }
}

void BrokerLink::FlushAcks() {
  std::deque<std::pair<std::string, std::string>> acks;
  {
    std::lock_guard lock(mu_);
    acks.swap(acks_);
  }
  for (const auto& [sender, id] : acks) {
    // Lost with the connection? The broker redelivers; the agent re-acks
    // a message it has seen acked.
    if (auto st = receiver_->Ack(sender, id); !st.ok()) {
      spdlog::warn("event=ack_failed message_id={} error=\"{}\"", id, st.message());
    }
  }
}

void BrokerLink::ReceiverLoop() {
  while (!stop_) {
    FlushAcks();
    auto message = receiver_->Receive(std::chrono::milliseconds(50));
    max_message_bytes_ = receiver_->max_message_bytes();
    if (!receiver_->agency_id().empty() && !connected_) {
      std::lock_guard lock(mu_);
      agency_ = receiver_->agency_id();
      connected_ = true;
      spdlog::info("event=broker_welcomed agency={}", agency_);
    }
    if (!message.ok()) {
      key_refused_ = message.status().code() == Status::Code::kPermissionDenied;
      spdlog::error("event=receive_failed error=\"{}\"", message.status().message());
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_.load(); });
      continue;
    }
    if (message->has_value()) {
      const EnvelopeBuffer& envelope = **message;
      const std::string id = envelope->id() ? envelope->id()->str() : std::string();
      const std::string from = envelope->from() ? envelope->from()->str() : std::string();
      inbox_.Add(from, id, std::vector<uint8_t>(envelope.bytes().begin(), envelope.bytes().end()));
      spdlog::info("event=message_received message_id={} from={}", id, from);
      if (on_delivery_) on_delivery_();
    }
    while (auto notice = receiver_->TakeNotice()) {
      const wire::Receipt* r = notice->get();
      if (!r->message_id() || !r->recipients()) continue;
      for (const auto* recipient : *r->recipients()) {
        if (!recipient->recipient()) continue;
        if (auto st = store_.AddNotice(r->message_id()->str(), recipient->recipient()->str(),
                                       notice->bytes());
            !st.ok()) {
          spdlog::error("event=state_write_failed error=\"{}\"", st.message());
        }
      }
    }
  }
  // Acks the system got a 200 for during shutdown still reach the broker
  // (queued on the socket; the agent lingers to send them).
  FlushAcks();
}

}  // namespace liaison::gateway

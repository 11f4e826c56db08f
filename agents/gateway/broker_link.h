// The gateway's side of the broker: two agent connections with the agency's
// key, each owned by its own thread (an Agent is single-threaded).
//
//  - The sender thread sends what the HTTP side accepted (GatewayStore),
//    oldest first, and records each receipt. A message the broker did not
//    answer, or answered `unavailable`, stays and is resent with the same id
//    (the broker answers a resend with the original receipt).
//  - The receiver thread takes deliveries into the Inbox and acks to the
//    broker only when the agency's system has acked (POST
//    /v1/inbox/{sender}/{id}/ack or a 2xx from its webhook): until then the broker keeps the message, so
//    a gateway crash loses nothing. Notices (delivered / expired) about sent
//    messages go to the GatewayStore.
#ifndef LIAISON_AGENTS_GATEWAY_BROKER_LINK_H_
#define LIAISON_AGENTS_GATEWAY_BROKER_LINK_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gateway_store.h"
#include "liaison/agent.h"

namespace liaison::gateway {

// Messages delivered to the agency and not yet acked by its system, oldest
// first, each by its identity (sender, id): ids are unique per sender only.
// Thread-safe. Bounded by the broker's delivery window (the broker sends no
// more than that many unacked messages to one connection).
class Inbox {
 public:
  using Clock = std::chrono::steady_clock;
  struct Item {
    std::string sender;  // Envelope.from
    std::string id;
    std::vector<uint8_t> envelope;  // verified Envelope bytes
  };
  // Adds a delivery; a second delivery of a message already held is ignored.
  void Add(std::string sender, std::string id, std::vector<uint8_t> envelope);
  // Up to `max` items not handed out in the last `lease`, oldest first;
  // marks them handed out until now + lease.
  std::vector<Item> Lease(size_t max, Clock::duration lease);
  // The message, without leasing it; nullopt if it is not held.
  std::optional<std::vector<uint8_t>> Get(const std::string& sender, const std::string& id) const;
  // Removes the message; false if it is not held (acked already, or never
  // delivered).
  bool Remove(const std::string& sender, const std::string& id);
  // For callers that name the id alone: removes the one message held with
  // this id and sets `*sender`. kAmbiguous (nothing removed) when messages
  // of several senders hold the id.
  enum class Removed { kRemoved, kNotHeld, kAmbiguous };
  Removed RemoveById(const std::string& id, std::string* sender);
  size_t size() const;

 private:
  using Key = std::pair<std::string, std::string>;  // (sender, id)
  struct Entry {
    std::vector<uint8_t> envelope;
    Clock::time_point leased_until{};
    uint64_t order;
  };
  mutable std::mutex mu_;
  uint64_t next_order_ = 0;
  std::map<Key, Entry> items_;
};

class BrokerLink {
 public:
  BrokerLink(AgentOptions options, GatewayStore& store, Inbox& inbox);
  ~BrokerLink();  // stops

  // Connects both agents (they retry by themselves while the broker is
  // down) and starts the threads. Fails only on bad options.
  Status Start();
  void Stop();

  // A message was accepted: the sender thread looks at the store now.
  void WakeSender();
  // The agency's system has the message (sender, id): acks it to the
  // broker (from the receiver thread, soon after, or at Stop()). The caller
  // has removed it from the Inbox.
  void Ack(const std::string& sender, const std::string& id);
  // Called on the receiver thread after each delivery added to the Inbox.
  void OnDelivery(std::function<void()> callback) { on_delivery_ = std::move(callback); }

  // The agency id the broker bound the key to; empty until welcomed.
  std::string agency() const;
  bool connected() const { return connected_.load(); }
  // The broker's limit on a message (bytes); 0 until welcomed.
  uint32_t max_message_bytes() const { return max_message_bytes_.load(); }
  bool key_refused() const { return key_refused_.load(); }

 private:
  void SenderLoop();
  void ReceiverLoop();
  void FlushAcks();

  AgentOptions options_;
  GatewayStore& store_;
  Inbox& inbox_;
  std::function<void()> on_delivery_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> connected_{false};
  std::atomic<bool> key_refused_{false};
  std::atomic<uint32_t> max_message_bytes_{0};
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool pending_wake_ = false;
  std::deque<std::pair<std::string, std::string>> acks_;  // (sender, id)
  std::string agency_;
  std::unique_ptr<Agent> sender_;
  std::unique_ptr<Agent> receiver_;
  std::thread sender_thread_;
  std::thread receiver_thread_;
};

}  // namespace liaison::gateway

#endif  // LIAISON_AGENTS_GATEWAY_BROKER_LINK_H_

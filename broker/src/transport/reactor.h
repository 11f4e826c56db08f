// The broker's reactor: one thread owns the ROUTER socket (CURVE server,
// authenticated through ZapHandler), drains it while it is readable, and for
// each message admits it (Dispatcher), forwards copies, and answers the
// sender with a Receipt. Per-agency connection state lives in a small table.
#ifndef LIAISON_BROKER_TRANSPORT_REACTOR_H_
#define LIAISON_BROKER_TRANSPORT_REACTOR_H_

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "config/broker_config.h"
#include "liaison/keys.h"
#include "routing/dispatcher.h"
#include "transport/zap_handler.h"

namespace liaison::broker {

// Counters read by operators (logged at shutdown; exported as metrics later).
struct ReactorStats {
  std::atomic<uint64_t> messages_in{0};
  std::atomic<uint64_t> messages_rejected{0};
  std::atomic<uint64_t> deliveries{0};
  std::atomic<uint64_t> recipients_offline{0};
  std::atomic<uint64_t> duplicates{0};
  std::atomic<uint64_t> malformed_frames{0};
  std::atomic<uint64_t> handshake_failures{0};
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> revoked_messages{0};  // from connections whose key a reload removed
};

class Reactor {
 public:
  Reactor(BrokerConfig config, CurveKeyPair server_keys,
          std::shared_ptr<const policy::PolicySet> policies);
  ~Reactor();

  // Starts authentication and binds the ROUTER. On success endpoint() is the
  // concrete endpoint (a "*" port is resolved).
  Status Bind();
  const std::string& endpoint() const { return endpoint_; }

  // Runs the loop on the calling thread until Stop().
  void Run();

  // Asks Run() to return. Safe from any thread (it writes an eventfd).
  void Stop();

  // Replaces the policy set (on reload). Safe from any thread; every
  // message is handled under exactly one set.
  void SetPolicies(std::shared_ptr<const policy::PolicySet> policies);
  std::shared_ptr<const policy::PolicySet> policies() const;

  const ReactorStats& stats() const { return stats_; }

 private:
  // One live connection of an agency that asked for deliveries.
  struct Receiver {
    std::string routing_id;
    int fd = -1;  // for disconnect logs only
  };

  void HandleRouterMessage(std::vector<zmq::message_t>& frames);
  void HandleHello(const Agency& agency, const std::string& routing_id, int fd,
                   const zmq::message_t& body);
  void HandleSend(const policy::PolicySet& policies, const Agency& agency,
                  const std::string& routing_id, const zmq::message_t& body);
  void HandleMonitorEvent();
  enum class SendResult { kSent, kFull, kGone };
  // Delivers to the agency's newest live receiver; sets the outcome's code
  // (forwarded or recipient_offline) and reason.
  void Deliver(const Agency& recipient, const flatbuffers::DetachedBuffer& envelope,
               RecipientOutcome& outcome);
  // Sends [routing_id, command, body] without blocking.
  SendResult SendTo(const std::string& routing_id, std::string_view command, const void* data,
                    size_t size);
  void RememberReceipt(const std::string& key, const flatbuffers::DetachedBuffer& receipt);

  BrokerConfig config_;
  CurveKeyPair server_keys_;
  std::shared_ptr<const policy::PolicySet> policies_;  // atomic_load / atomic_store only
  Dispatcher dispatcher_;

  zmq::context_t context_;
  ZapHandler zap_;
  std::unique_ptr<zmq::socket_t> router_;
  std::unique_ptr<zmq::socket_t> monitor_;
  int wake_fd_ = -1;  // eventfd written by Stop()
  std::string endpoint_;

  std::unordered_map<std::string, std::vector<Receiver>> receivers_;  // by agency id
  std::unordered_map<int, std::string> agency_by_fd_;                 // for disconnect logs
  // Receipts of recent messages by "sender\0id", so a resend is answered
  // with the original receipt instead of being delivered twice.
  std::unordered_map<std::string, std::vector<uint8_t>> recent_receipts_;
  std::deque<std::string> recent_order_;

  ReactorStats stats_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_TRANSPORT_REACTOR_H_

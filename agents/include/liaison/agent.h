// The liaison agent library: what an agency's system links to talk to the
// broker. One Agent is one authenticated connection (CURVE, the agency's key
// pair) that reconnects by itself after a broker restart.
//
// Thread safety: an Agent is used from one thread at a time (it owns ZeroMQ
// sockets, which are not thread-safe). Run several Agents for parallelism.
#ifndef LIAISON_AGENT_H_
#define LIAISON_AGENT_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "liaison/keys.h"
#include "liaison/status.h"
#include "liaison/wire.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace liaison {

struct AgentOptions {
  std::string broker_endpoint;    // e.g. tcp://127.0.0.1:7700
  std::string broker_public_key;  // Z85
  CurveKeyPair keys;              // this agency's key pair
  // Receivers get deliveries; senders only receipts. An agency may run one
  // receiver and any number of senders at once.
  wire::Role role = wire::Role::sender;
  std::chrono::milliseconds receipt_timeout{10000};  // Send() gives up after this
  std::chrono::milliseconds resend_interval{2000};   // Send() resends (same id) after this
  std::chrono::milliseconds heartbeat{1000};
  std::string agent_name = "liaison-agent/0.1.0";
  std::string outbox;  // SQLite file keeping messages until the broker has them; empty = none
};

// Reads an agent config file (deploy/config/agent.yaml is the commented
// example); relative paths are relative to the file's folder.
StatusOr<AgentOptions> LoadAgentConfig(const std::string& path);

// A verified FlatBuffer that owns its bytes.
template <typename T>
class OwnedBuffer {
 public:
  OwnedBuffer(std::vector<uint8_t> bytes, const T* root) : bytes_(std::move(bytes)), root_(root) {}
  OwnedBuffer(OwnedBuffer&&) = default;
  OwnedBuffer& operator=(OwnedBuffer&&) = default;
  const T* get() const { return root_; }
  const T* operator->() const { return root_; }
  std::span<const uint8_t> bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
  const T* root_;  // points into bytes_ (a moved vector keeps its buffer)
};

using ReceiptBuffer = OwnedBuffer<wire::Receipt>;
using EnvelopeBuffer = OwnedBuffer<wire::Envelope>;

class Agent {
 public:
  // Creates the connection; does not wait for the broker (it may be down,
  // the agent keeps trying). Fails only on bad options.
  static StatusOr<std::unique_ptr<Agent>> Connect(AgentOptions options);
  ~Agent();

  // Sends an Envelope (FlatBuffer bytes) and waits for its Receipt.
  // Resends the same bytes every resend_interval until a receipt arrives;
  // the broker answers a resend of a known id with the original receipt.
  // Returns the Receipt (which may itself say the message was rejected or a
  // recipient not reached), PermissionDenied if the broker refused this
  // agency's key, or DeadlineExceeded if no receipt came in time (the
  // message may still have been delivered: resending the same id is safe).
  StatusOr<ReceiptBuffer> Send(std::span<const uint8_t> envelope);

  // Low level, for tools and tests: sends frames as given, without waiting.
  Status SendFrames(std::string_view command, std::span<const uint8_t> body);

  // Pipelined sending: post envelopes with SendFrames(wire::kSend, bytes)
  // and collect their receipts here, in the order they arrive (waits up to
  // `timeout`; nullopt if none came). The caller keeps each message until
  // its receipt arrives and resends it (same id) if none comes. Do not mix
  // with Send() on the same Agent: Send() would take others' receipts.
  StatusOr<std::optional<ReceiptBuffer>> TakeReceipt(std::chrono::milliseconds timeout);

  // Waits up to `timeout` for a delivered message; nullopt on timeout.
  // Deliveries that arrived during Send() are returned first. A redelivery
  // of a message the application already acked (same sender and id) is
  // acked again and not returned; one of a message returned but not yet
  // acked is dropped: the application sees each message once.
  StatusOr<std::optional<EnvelopeBuffer>> Receive(std::chrono::milliseconds timeout);

  // Tells the broker the application has the message from `sender`
  // (Envelope.from) with `message_id`: ids are unique per sender only, so a
  // message's identity is the pair. Until it is acked, the broker redelivers
  // it (after a timeout, or when the agent reconnects).
  Status Ack(std::string_view sender, std::string_view message_id);
  // Acks by id alone, for callers that do not track senders: the message
  // received with this id. InvalidArgument if messages of several senders
  // with this id are unacked (use the two-argument form); with none, an ACK
  // without sender goes out, which the broker honours only where the id is
  // unambiguous among this agency's messages in flight.
  Status Ack(std::string_view message_id);

  // Updates about messages this agency sent: a Receipt per recipient that
  // got it ("delivered") or that it expired for ("expired"). They arrive on
  // the agency's receiver connection; nullopt if none is waiting.
  std::optional<ReceiptBuffer> TakeNotice();

  // Receives until `stop` is set, calling `handler` for each message and
  // acking it when the handler returns OK.
  using Handler = std::function<Status(const EnvelopeBuffer&)>;
  Status Run(const Handler& handler, const std::atomic<bool>& stop);

  // Waits until the broker has welcomed this connection (so that, for a
  // receiver, deliveries start); PermissionDenied if the key is refused,
  // DeadlineExceeded after `timeout`. Messages that arrive meanwhile are kept
  // for Receive().
  Status WaitReady(std::chrono::milliseconds timeout);

  // The agency id the broker bound this key to; empty until welcomed.
  const std::string& agency_id() const { return agency_id_; }
  // The broker's limits.max_message_bytes; 0 until welcomed.
  uint32_t max_message_bytes() const { return max_message_bytes_; }

 private:
  explicit Agent(AgentOptions options);
  Status Open();
  Status ReopenIfRefused();
  // Handles what arrives within `timeout`; returns after the first event.
  void Pump(std::chrono::milliseconds timeout);
  void HandleMonitorEvent();
  void HandleBrokerMessage();
  void SayHello();

  AgentOptions options_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> dealer_;
  std::unique_ptr<zmq::socket_t> monitor_;
  std::string agency_id_;
  uint32_t max_message_bytes_ = 0;
  bool key_refused_ = false;
  std::deque<EnvelopeBuffer> inbox_;
  std::deque<ReceiptBuffer> notices_;
  // "sender\0id" of messages the application acked, oldest first.
  std::unordered_set<std::string> seen_;
  std::deque<std::string> seen_order_;
  // "sender\0id" of messages received but not yet acked.
  std::unordered_set<std::string> in_progress_;
  std::unordered_map<std::string, ReceiptBuffer> receipts_;  // by message id ("" = unreadable)
  std::deque<std::string> receipt_order_;  // ids in receipts_, oldest first, for TakeReceipt
  // Receipts without an id still due for resends of earlier Send()s that
  // were answered without one (an id the broker cannot read or echo): each
  // is dropped on arrival, so that it is not taken for the next message's.
  int stale_unreadable_receipts_ = 0;
};

}  // namespace liaison

#endif  // LIAISON_AGENT_H_

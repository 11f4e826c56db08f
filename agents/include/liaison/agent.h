// The liaison agent library: what an agency's system links to talk to the
// broker. One Agent is one authenticated connection (CURVE, the agency's key
// pair) that reconnects by itself after a broker restart, and that moves to
// the next broker of a high-availability deployment when its broker is gone,
// silent or a standby (docs/protocol.md section 4, failover).
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
  // The broker: one endpoint, e.g. tcp://127.0.0.1:7700, or the brokers of a
  // high-availability deployment, tried in order (set one of the two). The
  // agent is connected to one endpoint at a time (a DEALER connected to
  // several would spread messages across them).
  std::string broker_endpoint;
  std::vector<std::string> broker_endpoints;
  std::string broker_public_key;  // Z85; every broker of a deployment has the same key
  CurveKeyPair keys;              // this agency's key pair
  // Receivers get deliveries; senders only receipts. An agency may run one
  // receiver and any number of senders at once.
  wire::Role role = wire::Role::sender;
  std::chrono::milliseconds receipt_timeout{10000};  // Send() gives up after this
  std::chrono::milliseconds resend_interval{2000};   // Send() resends (same id) after this
  std::chrono::milliseconds heartbeat{1000};
  // Failover, with several endpoints: the agent moves to the next one when a
  // connection has not completed its handshake within connect_timeout (the
  // broker is down or unreachable), a HELLO got no WELCOME within
  // welcome_timeout, the broker answers `standby`, or Send() has waited
  // silence_timeout without hearing anything from the broker. With one
  // endpoint only a `standby` answer makes the agent reconnect (to the same
  // endpoint); libzmq reconnects by itself otherwise.
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds welcome_timeout{2000};
  std::chrono::milliseconds silence_timeout{5000};
  std::string agent_name = "liaison-agent/0.1.0";
  std::string outbox;  // SQLite file keeping messages until the broker has them; empty = none
  // The outbox's key (liaison/case_vault.h), made at first use; its ring is
  // "<key file>.ring". LoadAgentConfig's default: beside secret_key_file,
  // named after the outbox ("outbox.db" -> "outbox.db.key").
  std::string outbox_key_file;
};

// Reads an agent config file (deploy/config/agent.yaml is the commented
// example); relative paths are relative to the file's folder.
StatusOr<AgentOptions> LoadAgentConfig(const std::string& path);
// What is wrong with a broker endpoint as an agent connects to it, or ""
// if nothing: tcp://HOST:PORT (HOST a name, an IPv4 address or [IPv6]) or
// ipc://PATH. Wildcards are for a broker's listen, not for connecting.
std::string BrokerEndpointProblem(const std::string& endpoint);

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
  // Resends the same bytes every resend_interval, and at once on every new
  // connection (after a reconnect or a move to the next broker), until a
  // receipt arrives; the broker answers a resend of a known id with the
  // original receipt. A `standby` answer is never returned: the agent moves
  // on and resends. Returns the Receipt (which may itself say the message
  // was rejected or a recipient not reached), PermissionDenied if the broker
  // refused this agency's key, or DeadlineExceeded if no receipt came in
  // time (the message may still have been delivered: resending the same id
  // is safe). With several endpoints it gives up only once every endpoint
  // was tried during this call, even past receipt_timeout.
  StatusOr<ReceiptBuffer> Send(std::span<const uint8_t> envelope);

  // Low level, for tools and tests: sends frames as given, without waiting.
  Status SendFrames(std::string_view command, std::span<const uint8_t> body);

  // Pipelined sending: post envelopes with SendFrames(wire::kSend, bytes)
  // and collect their receipts here, in the order they arrive (waits up to
  // `timeout`; nullopt if none came). The caller keeps each message until
  // its receipt arrives and resends it (same id) if none comes, also after
  // a failover (the agent resends only Send()'s message by itself). A
  // `standby` receipt is never returned. Do not mix with Send() on the same
  // Agent: Send() would take others' receipts.
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
  // The endpoint the agent is connected (or connecting) to now.
  const std::string& current_endpoint() const { return endpoints_[current_]; }
  // How many times the agent has moved to another endpoint.
  uint64_t failovers() const { return moves_; }

 private:
  explicit Agent(AgentOptions options);
  using Clock = std::chrono::steady_clock;
  Status Open();
  void Close();
  Status ReopenIfRefused();
  // Handles what arrives within `timeout`; returns after the first event
  // (or when a failover bound is due).
  void Pump(std::chrono::milliseconds timeout);
  void HandleMonitorEvent();
  void HandleBrokerMessage();
  void SayHello();
  // Failover: checks the bounds, schedules a move (with backoff once every
  // endpoint was tried without a WELCOME) and makes it when due.
  std::optional<Clock::time_point> NextFailoverCheck() const;
  void CheckFailover();
  void ScheduleMove(const char* reason);
  void MoveToNextEndpoint(const std::string& reason);
  std::string FailoverHistory(uint64_t since_moves) const;

  AgentOptions options_;
  std::vector<std::string> endpoints_;  // at least one
  size_t current_ = 0;                  // index into endpoints_
  // The current connection: since when it is (re)connecting, whether its
  // handshake is done, when it said HELLO and whether it was welcomed.
  Clock::time_point connecting_since_{};
  bool handshaken_ = false;
  Clock::time_point hello_at_{};
  bool welcomed_ = false;
  Clock::time_point last_heard_{};  // last frame from the broker (not a standby answer)
  // A scheduled move to the next endpoint and its reason; empty when none.
  std::optional<Clock::time_point> move_at_;
  std::string move_reason_;
  uint64_t moves_ = 0;
  uint64_t moves_without_welcome_ = 0;
  uint64_t refusals_in_a_row_ = 0;
  std::deque<std::string> failover_history_;  // "endpoint (reason)", newest last, bounded
  // The message Send() waits for (resent on every new connection), and
  // since when it waits; empty outside Send().
  std::span<const uint8_t> in_flight_;
  Clock::time_point in_flight_since_{};
  int in_flight_transmissions_ = 0;
  bool in_flight_queued_ = false;  // its last copy waits in the socket's queue for a connection
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

// Makes `message` a reply to, update of, or onward referral from `received`
// (a copy this agency received): derived_from = its thread (the broker then
// holds `message` to the case's handling code, docs/policies.md section 9a);
// a ReferralResponse's or CaseUpdate's empty in_reply_to = its id (a PermissionGrant's, when
// `received` is the PermissionRequest it answers); and, if
// `message` has no recipient yet, to = its sender. Fails, changing nothing,
// if `received` carries no thread (it came from a broker before case
// threads).
Status DeriveFrom(const wire::Envelope& received, wire::EnvelopeT* message);

}  // namespace liaison

#endif  // LIAISON_AGENT_H_

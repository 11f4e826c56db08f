#include "liaison/agent.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace liaison {
namespace {

// What a refused handshake (ZAP 400) can mean, from the agent's side.
Status KeyRefused() {
  return Status::PermissionDenied(
      "the broker refused the handshake: this agency's key is not registered or was revoked, or "
      "the broker key for this endpoint was retired after a broker key rotation; ask the operator "
      "(check secret_key_file, broker and broker_public_key_file)");
}

using Clock = std::chrono::steady_clock;

// Backoff before moving on once every endpoint was tried without a WELCOME
// (all down, or all standby during a lease handover): doubles per round, so
// that a deployment without an active broker is not hammered (nor its
// agency's HELLO limit used up), and stays short enough for a quick return.
constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{2000};
constexpr size_t kFailoverHistory = 32;

// What a failover reason (the log's reason=) means, for error messages.
std::string ReasonText(const std::string& reason, const AgentOptions& o) {
  if (reason == "no_handshake") {
    return "no handshake within " + std::to_string(o.connect_timeout.count()) + " ms";
  }
  if (reason == "no_welcome") {
    return "no WELCOME within " + std::to_string(o.welcome_timeout.count()) + " ms";
  }
  if (reason == "silence") {
    return "silent for " + std::to_string(o.silence_timeout.count()) + " ms";
  }
  if (reason == "standby") return "a standby";
  if (reason == "handshake_refused") return "refused the handshake";
  return reason;
}

// A message's identity: ids are unique per sender only.
std::string MessageKey(std::string_view sender, std::string_view id) {
  std::string key(sender);
  key.push_back('\0');
  key.append(id);
  return key;
}

std::string UniqueMonitorEndpoint() {
  static std::atomic<uint64_t> counter{0};
  return "inproc://liaison-agent-monitor-" + std::to_string(counter++);
}

}  // namespace

Agent::Agent(AgentOptions options) : options_(std::move(options)) {}

Agent::~Agent() { Close(); }

void Agent::Close() {
  monitor_.reset();
  dealer_.reset();
  context_.reset();
}

StatusOr<std::unique_ptr<Agent>> Agent::Connect(AgentOptions options) {
  if (!IsValidZ85Key(options.broker_public_key)) {
    return Status::InvalidArgument("broker public key is not a 40-character Z85 key");
  }
  if (!IsValidZ85Key(options.keys.public_z85) || !IsValidZ85Key(options.keys.secret_z85)) {
    return Status::InvalidArgument("agency key pair is not two 40-character Z85 keys");
  }
  if (!options.broker_endpoint.empty() && !options.broker_endpoints.empty()) {
    return Status::InvalidArgument("set either broker_endpoint or broker_endpoints, not both");
  }
  std::vector<std::string> endpoints = options.broker_endpoints;
  if (endpoints.empty()) endpoints.push_back(options.broker_endpoint);
  for (const auto& endpoint : endpoints) {
    if (endpoint.empty()) return Status::InvalidArgument("a broker endpoint is empty");
  }
  std::unique_ptr<Agent> agent(new Agent(std::move(options)));
  agent->endpoints_ = std::move(endpoints);
  LIAISON_RETURN_IF_ERROR(agent->Open());
  return agent;
}

Status Agent::Open() {
  try {
    context_ = std::make_unique<zmq::context_t>(1);
    dealer_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::dealer);
    dealer_->set(zmq::sockopt::curve_serverkey, options_.broker_public_key);
    dealer_->set(zmq::sockopt::curve_publickey, options_.keys.public_z85);
    dealer_->set(zmq::sockopt::curve_secretkey, options_.keys.secret_z85);
    const int heartbeat = static_cast<int>(options_.heartbeat.count());
    dealer_->set(zmq::sockopt::heartbeat_ivl, heartbeat);
    dealer_->set(zmq::sockopt::heartbeat_timeout, heartbeat * 3);
    dealer_->set(zmq::sockopt::reconnect_ivl, 100);
    dealer_->set(zmq::sockopt::reconnect_ivl_max, 2000);
    // Acks sent just before the agent closes still leave.
    dealer_->set(zmq::sockopt::linger, 2000);

    // DISCONNECTED starts the handshake bound of a connection that was up.
    const std::string monitor_endpoint = UniqueMonitorEndpoint();
    if (zmq_socket_monitor(dealer_->handle(), monitor_endpoint.c_str(),
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_DISCONNECTED) != 0) {
      return Status::Internal(std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()));
    }
    monitor_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::pair);
    monitor_->set(zmq::sockopt::linger, 0);
    monitor_->connect(monitor_endpoint);
    dealer_->connect(current_endpoint());
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("cannot connect to " + current_endpoint() + ": " + e.what());
  }
  connecting_since_ = Clock::now();
  handshaken_ = false;
  welcomed_ = false;
  in_flight_queued_ = false;  // whatever was queued died with the old socket
  return Status::Ok();
}

void Agent::SayHello() {
  flatbuffers::FlatBufferBuilder fbb(128);
  fbb.Finish(wire::CreateHelloDirect(fbb, options_.role, options_.agent_name.c_str()));
  // A HELLO that cannot be queued is noticed by the WELCOME bound (or by the
  // next handshake); there is nothing better to do with the failure here.
  (void)SendFrames(wire::kHello, {fbb.GetBufferPointer(), fbb.GetSize()});
  hello_at_ = Clock::now();
}

Status Agent::SendFrames(std::string_view command, std::span<const uint8_t> body) {
  if (!dealer_) return Status::Unavailable("no connection to a broker (" + current_endpoint() + ")");
  try {
    // Never block the caller: a full queue (broker unreachable for long) is
    // an answer, not a hang.
    if (!dealer_->send(zmq::buffer(command), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return Status::Unavailable("the outgoing queue to the broker is full; is the broker reachable?");
    }
    dealer_->send(zmq::const_buffer(body.data(), body.size()), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("send failed: ") + e.what());
  }
  return Status::Ok();
}

void Agent::Pump(std::chrono::milliseconds timeout) {
  if (const auto check = NextFailoverCheck()) {
    const auto until = std::chrono::ceil<std::chrono::milliseconds>(*check - Clock::now());
    timeout = std::max(std::chrono::milliseconds(0), std::min(timeout, until));
  }
  if (!dealer_) {  // a failed move: nothing to poll until it is tried again
    std::this_thread::sleep_for(timeout);
    CheckFailover();
    return;
  }
  zmq::pollitem_t items[] = {{dealer_->handle(), 0, ZMQ_POLLIN, 0},
                             {monitor_->handle(), 0, ZMQ_POLLIN, 0}};
  try {
    zmq::poll(items, 2, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return;
    throw;
  }
  if (items[1].revents & ZMQ_POLLIN) HandleMonitorEvent();
  if (items[0].revents & ZMQ_POLLIN) HandleBrokerMessage();
  CheckFailover();
}

std::optional<Agent::Clock::time_point> Agent::NextFailoverCheck() const {
  if (move_at_) return move_at_;
  if (endpoints_.size() < 2) return std::nullopt;
  if (!handshaken_) return connecting_since_ + options_.connect_timeout;
  if (!welcomed_) return hello_at_ + options_.welcome_timeout;
  if (!in_flight_.empty()) {
    return std::max(last_heard_, in_flight_since_) + options_.silence_timeout;
  }
  return std::nullopt;
}

void Agent::CheckFailover() {
  const auto due = NextFailoverCheck();
  if (!due || Clock::now() < *due) return;
  if (move_at_) {
    MoveToNextEndpoint(move_reason_);
  } else if (!handshaken_) {
    ScheduleMove("no_handshake");
  } else if (!welcomed_) {
    ScheduleMove("no_welcome");
  } else {
    ScheduleMove("silence");
  }
}

void Agent::ScheduleMove(const char* reason) {
  if (move_at_) return;  // one move at a time
  // Once every endpoint was tried without a WELCOME, wait before the next
  // round; the first round goes at once.
  const uint64_t rounds = moves_without_welcome_ / endpoints_.size();
  if (rounds == 0) {
    MoveToNextEndpoint(reason);
    return;
  }
  const auto backoff = std::min<std::chrono::milliseconds>(
      kMaxBackoff, kFirstBackoff * (uint64_t{1} << std::min<uint64_t>(rounds - 1, 10)));
  move_at_ = Clock::now() + backoff;
  move_reason_ = reason;
}

void Agent::MoveToNextEndpoint(const std::string& reason) {
  const std::string from = current_endpoint();
  current_ = (current_ + 1) % endpoints_.size();
  move_at_.reset();
  ++moves_;
  ++moves_without_welcome_;
  failover_history_.push_back(from + " (" + ReasonText(reason, options_) + ")");
  if (failover_history_.size() > kFailoverHistory) failover_history_.pop_front();
  // Endpoints and the reason only: never anything of a message.
  spdlog::warn("event=broker_failover from={} to={} reason={}", from, current_endpoint(), reason);
  // What was queued for the old connection goes nowhere: Send() resends its
  // message on the new one, and an unsent ACK is made good when the broker
  // redelivers (the agent acks a message it has seen acked again).
  if (dealer_) dealer_->set(zmq::sockopt::linger, 0);
  Close();
  if (Status st = Open(); !st.ok()) {
    // Out of file descriptors, say: no socket until the next attempt.
    Close();
    spdlog::error("event=broker_failover_failed to={} error=\"{}\"", current_endpoint(), st.message());
    move_at_ = Clock::now() + kMaxBackoff;
    move_reason_ = "open_failed";
  }
}

std::string Agent::FailoverHistory(uint64_t since_moves) const {
  const uint64_t count = std::min<uint64_t>(moves_ - since_moves, failover_history_.size());
  std::string text;
  for (size_t i = failover_history_.size() - count; i < failover_history_.size(); ++i) {
    text += (text.empty() ? "" : ", ") + failover_history_[i];
  }
  return text;
}

void Agent::HandleMonitorEvent() {
  std::vector<zmq::message_t> frames;
  if (!zmq::recv_multipart(*monitor_, std::back_inserter(frames), zmq::recv_flags::dontwait) ||
      frames.empty() || frames[0].size() < 6) {
    return;
  }
  uint16_t event;
  std::memcpy(&event, frames[0].data(), 2);
  if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
    // Each (re)connection starts unknown to the broker: introduce it, and
    // resend the message Send() waits for (its receipt may have been lost
    // with the old connection, or the old broker is gone).
    key_refused_ = false;
    refusals_in_a_row_ = 0;
    handshaken_ = true;
    welcomed_ = false;
    last_heard_ = Clock::now();
    SayHello();
    // A copy queued while connecting goes out on this connection already
    // (libzmq keeps the socket's queue across reconnects); one sent on an
    // earlier connection, or on the socket of the previous endpoint, does not.
    if (!in_flight_.empty() && !in_flight_queued_ && SendFrames(wire::kSend, in_flight_).ok()) {
      ++in_flight_transmissions_;
    }
    in_flight_queued_ = false;
  } else if (event == ZMQ_EVENT_DISCONNECTED) {
    // The handshake bound restarts only when a connection that was up goes
    // down: a handshake that keeps failing (a wrong broker key) disconnects
    // again and again and must not hold the agent there.
    if (handshaken_) connecting_since_ = Clock::now();
    handshaken_ = false;
    welcomed_ = false;
  } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
    // One broker of several refusing the key (its key retired after a
    // rotation, say) is a reason to try the next; all of them refusing it
    // in a row is the application's to hear.
    if (++refusals_in_a_row_ >= endpoints_.size()) {
      key_refused_ = true;
    } else {
      ScheduleMove("handshake_refused");
    }
  }
}

void Agent::HandleBrokerMessage() {
  std::vector<zmq::message_t> frames;
  if (!zmq::recv_multipart(*dealer_, std::back_inserter(frames), zmq::recv_flags::dontwait) ||
      frames.size() != 2) {
    return;  // not the protocol: ignore
  }
  const std::string_view command = frames[0].to_string_view();
  std::vector<uint8_t> bytes(frames[1].data<uint8_t>(), frames[1].data<uint8_t>() + frames[1].size());
  if (command == wire::kReceipt) {
    if (const wire::Receipt* receipt = wire::VerifyReceipt(bytes)) {
      if (receipt->code() == wire::Code::standby) {
        // Not an answer: the active broker is another one. Nothing is
        // reported; the message is resent there.
        ScheduleMove("standby");
        return;
      }
      last_heard_ = Clock::now();
      std::string id = receipt->message_id() ? receipt->message_id()->str() : std::string();
      if (id.empty() && stale_unreadable_receipts_ > 0) {
        --stale_unreadable_receipts_;
        return;
      }
      if (receipts_.insert_or_assign(id, ReceiptBuffer(std::move(bytes), receipt)).second) {
        receipt_order_.push_back(std::move(id));
      }
    }
    return;
  }
  last_heard_ = Clock::now();
  if (command == wire::kDeliver) {
    const wire::Envelope* envelope = wire::VerifyEnvelope(bytes);
    if (!envelope || !envelope->id()) return;
    const std::string_view from = envelope->from() ? envelope->from()->string_view() : "";
    std::string key = MessageKey(from, envelope->id()->string_view());
    if (seen_.count(key)) {
      // The application acked it already; the broker missed that ack.
      (void)Ack(from, envelope->id()->string_view());
      return;
    }
    // Handed out (or waiting to be) but not acked yet: the application will
    // ack the copy it has; acking this one could lose the message. Another
    // sender's message with the same id is another message.
    if (!in_progress_.insert(std::move(key)).second) return;
    inbox_.emplace_back(std::move(bytes), envelope);
  } else if (command == wire::kNotice) {
    if (const wire::Receipt* receipt = wire::VerifyReceipt(bytes)) {
      notices_.emplace_back(std::move(bytes), receipt);
    }
  } else if (command == wire::kWelcome) {
    if (const wire::Welcome* welcome = wire::VerifyWelcome(bytes)) {
      agency_id_ = welcome->agency() ? welcome->agency()->str() : std::string();
      max_message_bytes_ = welcome->max_message_bytes();
      welcomed_ = true;
      moves_without_welcome_ = 0;
    }
  }
}

Status Agent::ReopenIfRefused() {
  if (!key_refused_) return Status::Ok();
  // libzmq does not reconnect after a refused handshake; a fresh socket
  // tries again (the operator may have registered the key since).
  Close();
  key_refused_ = false;
  refusals_in_a_row_ = 0;
  return Open();
}

StatusOr<ReceiptBuffer> Agent::Send(std::span<const uint8_t> envelope) {
  LIAISON_RETURN_IF_ERROR(ReopenIfRefused());
  const wire::Envelope* parsed = wire::VerifyEnvelope(envelope);
  const std::string id = parsed && parsed->id() ? parsed->id()->str() : std::string();
  receipts_.erase(id);
  receipts_.erase("");
  const auto deadline = Clock::now() + options_.receipt_timeout;
  const uint64_t moves_at_start = moves_;
  auto next_send = Clock::now();
  // The message is resent on every new connection (HandleMonitorEvent)
  // while this call waits for its receipt.
  in_flight_ = envelope;
  in_flight_since_ = Clock::now();
  in_flight_transmissions_ = 0;
  in_flight_queued_ = false;
  struct ClearInFlight {
    Agent* agent;
    ~ClearInFlight() { agent->in_flight_ = {}; }
  } clear_in_flight{this};
  try {
    while (true) {
      const auto now = Clock::now();
      if (now >= next_send) {
        LIAISON_RETURN_IF_ERROR(SendFrames(wire::kSend, envelope));
        ++in_flight_transmissions_;
        in_flight_queued_ = !handshaken_;
        next_send = now + options_.resend_interval;
      }
      // The broker answers with an empty id when it could not read one (a
      // malformed or oversize message); one Send is in flight at a time, so
      // such a receipt is ours.
      auto it = receipts_.find(id);
      if (it == receipts_.end()) it = receipts_.find("");
      if (it != receipts_.end()) {
        // Every resend of a message answered without an id is answered
        // without one too, later: those answers are not the next message's.
        // (One lost with a broker restart costs a later such Send one
        // resend interval; taking it for another message's would be wrong.)
        if (it->first.empty()) stale_unreadable_receipts_ += in_flight_transmissions_ - 1;
        ReceiptBuffer receipt = std::move(it->second);
        receipts_.erase(it);
        if (receipts_.empty()) receipt_order_.clear();  // TakeReceipt's order; bounded here
        return receipt;
      }
      if (key_refused_) {
        return KeyRefused();
      }
      // With several brokers, each gets its chance (its bounds) before the
      // call gives up, however short receipt_timeout is.
      const bool all_tried = endpoints_.size() < 2 || moves_ - moves_at_start >= endpoints_.size();
      if (now >= deadline && all_tried) {
        if (endpoints_.size() < 2) {
          return Status::DeadlineExceeded(
              "no receipt from the broker at " + current_endpoint() + " within " +
              std::to_string(options_.receipt_timeout.count()) +
              " ms; is it running, and is broker_public_key right? Resending the same id is safe");
        }
        return Status::DeadlineExceeded(
            "no receipt from any of the " + std::to_string(endpoints_.size()) +
            " brokers within " + std::to_string(options_.receipt_timeout.count()) +
            " ms; tried " + FailoverHistory(moves_at_start) +
            "; are they running (one of them active), and is broker_public_key right? Resending "
            "the same id is safe");
      }
      // Past the deadline, only the failover bounds (Pump) and resends wake it.
      auto wait = (now >= deadline ? next_send : std::min(deadline, next_send)) - now;
      Pump(std::chrono::duration_cast<std::chrono::milliseconds>(wait) + std::chrono::milliseconds(1));
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("agent socket failed: ") + e.what());
  }
}

StatusOr<std::optional<ReceiptBuffer>> Agent::TakeReceipt(std::chrono::milliseconds timeout) {
  LIAISON_RETURN_IF_ERROR(ReopenIfRefused());
  const auto deadline = Clock::now() + timeout;
  bool polled = false;  // a zero timeout still reads what has arrived
  try {
    while (true) {
      // Send() takes receipts by id, leaving stale entries in the order.
      while (!receipt_order_.empty()) {
        auto it = receipts_.find(receipt_order_.front());
        receipt_order_.pop_front();
        if (it == receipts_.end()) continue;
        std::optional<ReceiptBuffer> receipt(std::move(it->second));
        receipts_.erase(it);
        return receipt;
      }
      if (key_refused_) {
        return KeyRefused();
      }
      const auto now = Clock::now();
      if (now >= deadline && polled) return std::optional<ReceiptBuffer>();
      Pump(std::max(std::chrono::milliseconds(0),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now)));
      polled = true;
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("agent socket failed: ") + e.what());
  }
}

StatusOr<std::optional<EnvelopeBuffer>> Agent::Receive(std::chrono::milliseconds timeout) {
  LIAISON_RETURN_IF_ERROR(ReopenIfRefused());
  const auto deadline = Clock::now() + timeout;
  try {
    while (inbox_.empty()) {
      if (key_refused_) {
        return KeyRefused();
      }
      const auto now = Clock::now();
      if (now >= deadline) return std::optional<EnvelopeBuffer>();
      Pump(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
           std::chrono::milliseconds(1));
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("agent socket failed: ") + e.what());
  }
  std::optional<EnvelopeBuffer> message(std::move(inbox_.front()));
  inbox_.pop_front();
  return message;
}

Status Agent::WaitReady(std::chrono::milliseconds timeout) {
  LIAISON_RETURN_IF_ERROR(ReopenIfRefused());
  const auto deadline = Clock::now() + timeout;
  try {
    while (agency_id_.empty()) {
      if (key_refused_) return Status::PermissionDenied("the broker refused this agency's key");
      const auto now = Clock::now();
      if (now >= deadline) {
        return Status::DeadlineExceeded("no welcome from the broker at " + current_endpoint() +
                                        (endpoints_.size() < 2 ? "" : "; tried " + FailoverHistory(0)));
      }
      Pump(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
           std::chrono::milliseconds(1));
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("agent socket failed: ") + e.what());
  }
  return Status::Ok();
}

std::optional<ReceiptBuffer> Agent::TakeNotice() {
  if (notices_.empty()) return std::nullopt;
  std::optional<ReceiptBuffer> notice(std::move(notices_.front()));
  notices_.pop_front();
  return notice;
}

Status Agent::Ack(std::string_view sender, std::string_view message_id) {
  // From now on a redelivery of this message is acked again, not returned.
  if (auto it = in_progress_.find(MessageKey(sender, message_id)); it != in_progress_.end()) {
    constexpr size_t kRemembered = 100000;
    seen_.insert(*it);
    seen_order_.push_back(std::move(in_progress_.extract(it).value()));
    if (seen_order_.size() > kRemembered) {
      seen_.erase(seen_order_.front());
      seen_order_.pop_front();
    }
  }
  flatbuffers::FlatBufferBuilder fbb(64);
  const auto id = fbb.CreateString(message_id);
  const auto from = sender.empty() ? flatbuffers::Offset<flatbuffers::String>() : fbb.CreateString(sender);
  fbb.Finish(wire::CreateAck(fbb, id, from));
  return SendFrames(wire::kAck, {fbb.GetBufferPointer(), fbb.GetSize()});
}

Status Agent::Ack(std::string_view message_id) {
  std::string sender;
  int found = 0;
  for (const std::string& key : in_progress_) {
    const auto nul = key.find('\0');
    if (std::string_view(key).substr(nul + 1) != message_id) continue;
    sender = key.substr(0, nul);
    ++found;
  }
  if (found > 1) {
    return Status::InvalidArgument("messages of " + std::to_string(found) +
                                   " senders with this id are unacked; ack with Ack(sender, id)");
  }
  return Ack(sender, message_id);
}

Status Agent::Run(const Handler& handler, const std::atomic<bool>& stop) {
  while (!stop) {
    auto message = Receive(std::chrono::milliseconds(200));
    if (!message.ok()) return message.status();
    if (!message->has_value()) continue;
    const EnvelopeBuffer& envelope = **message;
    if (handler(envelope).ok() && envelope->id()) {
      LIAISON_RETURN_IF_ERROR(
          Ack(envelope->from() ? envelope->from()->string_view() : "", envelope->id()->string_view()));
    }
  }
  return Status::Ok();
}

Status DeriveFrom(const wire::Envelope& received, wire::EnvelopeT* message) {
  if (!received.thread() || received.thread()->size() == 0) {
    return Status::InvalidArgument(
        "the received message has no thread (a broker before case threads delivered it); send the answer "
        "without derived_from");
  }
  message->derived_from = received.thread()->str();
  const std::string id = received.id() ? received.id()->str() : std::string();
  if (auto* response = message->payload.AsReferralResponse(); response && response->in_reply_to.empty()) {
    response->in_reply_to = id;
  }
  if (auto* update = message->payload.AsCaseUpdate(); update && update->in_reply_to.empty()) update->in_reply_to = id;
  // A grant answering the PermissionRequest received.
  if (auto* grant = message->payload.AsPermissionGrant(); grant && grant->in_reply_to.empty() &&
                                                          received.payload_type() == wire::Payload::PermissionRequest) {
    grant->in_reply_to = id;
  }
  if (message->to.empty() && received.from() && received.from()->size() > 0) {
    message->to.push_back(std::make_unique<wire::RecipientT>());
    message->to.back()->agency = received.from()->str();
  }
  return Status::Ok();
}

}  // namespace liaison

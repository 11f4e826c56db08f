#include "transport/reactor.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <zmq_addon.hpp>

namespace liaison::broker {
namespace {

constexpr const char* kMonitorEndpoint = "inproc://liaison-router-monitor";
// Messages handled per readable wake-up before the loop looks at its other
// sockets again, so that one busy sender cannot starve shutdown or events.
constexpr int kDrainBatch = 256;

std::string DeliveryKey(const std::string& sender, const std::string& id) {
  return sender + '\0' + id;
}

const char* HandshakeFailure(uint16_t event, uint32_t value) {
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) return "key_refused";
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
    return value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH ? "plaintext_or_wrong_mechanism"
                                                               : "protocol_error";
  }
  return "handshake_failed";
}

}  // namespace

Reactor::Reactor(BrokerConfig config, CurveKeyPair server_keys,
                 std::shared_ptr<const policy::PolicySet> policies)
    : config_(std::move(config)),
      server_keys_(std::move(server_keys)),
      policies_(std::move(policies)),
      dispatcher_(config_.limits),
      context_(1),
      zap_(context_, [this] { return this->policies()->shared_directory(); }) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Reactor::~Reactor() {
  monitor_.reset();
  router_.reset();
  zap_.Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

std::shared_ptr<const policy::PolicySet> Reactor::policies() const {
  return std::atomic_load(&policies_);
}

void Reactor::SetPolicies(std::shared_ptr<const policy::PolicySet> policies) {
  std::atomic_store(&policies_, std::move(policies));
}

Status Reactor::Bind() {
  if (wake_fd_ < 0) return Status::Internal("eventfd failed");
  LIAISON_RETURN_IF_ERROR(zap_.Start());
  try {
    router_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::router);
    router_->set(zmq::sockopt::curve_server, 1);
    router_->set(zmq::sockopt::curve_secretkey, server_keys_.secret_z85);
    router_->set(zmq::sockopt::zap_domain, "liaison");
    // Fail sends to unknown or vanished peers instead of dropping silently:
    // that is how the reactor learns a recipient is offline.
    router_->set(zmq::sockopt::router_mandatory, 1);
    router_->set(zmq::sockopt::linger, 0);
    router_->set(zmq::sockopt::sndhwm, static_cast<int>(config_.limits.send_high_water_mark));
    router_->set(zmq::sockopt::rcvhwm, static_cast<int>(config_.limits.send_high_water_mark));
    // The hard ceiling on one frame; between max_message_bytes and this, a
    // sender still gets a too_large receipt instead of a dropped connection.
    router_->set(zmq::sockopt::maxmsgsize,
                 static_cast<int64_t>(config_.limits.max_message_bytes * 4 + 4096));
    const int heartbeat = static_cast<int>(config_.heartbeat_ms);
    router_->set(zmq::sockopt::heartbeat_ivl, heartbeat);
    router_->set(zmq::sockopt::heartbeat_timeout, heartbeat * 3);
    router_->set(zmq::sockopt::heartbeat_ttl, heartbeat * 3);
    router_->set(zmq::sockopt::handshake_ivl, 5000);

    if (zmq_socket_monitor(router_->handle(), kMonitorEndpoint,
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_DISCONNECTED) != 0) {
      return Status::Internal(std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()));
    }
    monitor_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::pair);
    monitor_->set(zmq::sockopt::linger, 0);
    monitor_->connect(kMonitorEndpoint);

    router_->bind(config_.listen);
    endpoint_ = router_->get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("cannot listen on " + config_.listen + ": " + e.what() +
                               (e.num() == EADDRINUSE ? " (another process uses the port)" : ""));
  }
  return Status::Ok();
}

void Reactor::Stop() {
  uint64_t one = 1;
  // Nothing useful to do on failure: the counter is already non-zero.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void Reactor::Run() {
  spdlog::info("event=listening endpoint={} agencies={} policy_version={}", endpoint_,
               policies()->directory().agencies().size(), policies()->version());
  zmq::pollitem_t items[] = {
      {router_->handle(), 0, ZMQ_POLLIN, 0},
      {monitor_->handle(), 0, ZMQ_POLLIN, 0},
      {nullptr, wake_fd_, ZMQ_POLLIN, 0},
  };
  while (true) {
    try {
      zmq::poll(items, 3, std::chrono::milliseconds(-1));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::critical("event=poll_failed error=\"{}\"", e.what());
      return;
    }
    if (items[2].revents & ZMQ_POLLIN) break;
    if (items[1].revents & ZMQ_POLLIN) HandleMonitorEvent();
    if (items[0].revents & ZMQ_POLLIN) {
      for (int i = 0; i < kDrainBatch; ++i) {
        std::vector<zmq::message_t> frames;
        try {
          if (!zmq::recv_multipart(*router_, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
            break;
          }
        } catch (const zmq::error_t& e) {
          spdlog::error("event=recv_failed error=\"{}\"", e.what());
          break;
        }
        HandleRouterMessage(frames);
      }
    }
  }
  spdlog::info(
      "event=stopping messages_in={} rejected={} deliveries={} offline={} duplicates={} "
      "malformed={} handshake_failures={}",
      stats_.messages_in.load(), stats_.messages_rejected.load(), stats_.deliveries.load(),
      stats_.recipients_offline.load(), stats_.duplicates.load(), stats_.malformed_frames.load(),
      stats_.handshake_failures.load());
}

void Reactor::HandleRouterMessage(std::vector<zmq::message_t>& frames) {
  // [routing id, command, body]; ZAP put the agency id on every frame.
  const char* user_id = frames.size() > 1 ? zmq_msg_gets(frames[1].handle(), "User-Id") : nullptr;
  const char* key = frames.size() > 1 ? zmq_msg_gets(frames[1].handle(), kKeyProperty) : nullptr;
  // One policy set for the whole message, even if a reload swaps it now.
  const auto set = policies();
  const Agency* agency = user_id ? set->directory().Find(user_id) : nullptr;
  if (!agency || !key || agency->public_key != key) {
    // Admitted at handshake, but a reload has since removed the agency or
    // replaced its key: the connection no longer speaks for anyone.
    stats_.revoked_messages++;
    spdlog::warn("event=message_with_revoked_key agency={}", user_id ? user_id : "-");
    return;
  }
  const std::string routing_id = frames[0].to_string();
  if (frames.size() != 3) {
    stats_.malformed_frames++;
    auto receipt = BuildReceipt("", wire::Code::malformed,
                                "expected 2 frames [command, body] after the routing id, got " +
                                    std::to_string(frames.size() - 1),
                                agency->id, {});
    SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    spdlog::warn("event=malformed agency={} reason=frame_count frames={}", agency->id,
                 frames.size() - 1);
    return;
  }
  const std::string_view command = frames[1].to_string_view();
  if (command == wire::kSend) {
    HandleSend(*set, *agency, routing_id, frames[2]);
  } else if (command == wire::kHello) {
    int fd = zmq_msg_get(frames[1].handle(), ZMQ_SRCFD);
    HandleHello(*agency, routing_id, fd, frames[2]);
  } else if (command == wire::kAck) {
    // Delivery state arrives with the durable store; until then an ack is
    // only counted.
    if (wire::VerifyAck({frames[2].data<uint8_t>(), frames[2].size()})) {
      stats_.acks++;
    } else {
      stats_.malformed_frames++;
      auto receipt = BuildReceipt("", wire::Code::malformed, "ACK body is not a valid Ack table",
                                  agency->id, {});
      SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    }
  } else {
    stats_.malformed_frames++;
    auto receipt = BuildReceipt("", wire::Code::unknown_command,
                                "unknown command; expected HELLO, SEND or ACK", agency->id, {});
    SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    spdlog::warn("event=malformed agency={} reason=unknown_command", agency->id);
  }
}

void Reactor::HandleHello(const Agency& agency, const std::string& routing_id, int fd,
                          const zmq::message_t& body) {
  const wire::Hello* hello = wire::VerifyHello({body.data<uint8_t>(), body.size()});
  if (!hello) {
    stats_.malformed_frames++;
    spdlog::warn("event=malformed agency={} reason=bad_hello", agency.id);
    auto receipt = BuildReceipt("", wire::Code::malformed, "HELLO body is not a valid Hello table",
                                agency.id, {});
    SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    return;
  }
  // A HELLO (re)states the connection's role: it replaces any earlier one.
  auto& list = receivers_[agency.id];
  std::erase_if(list, [&](const Receiver& r) { return r.routing_id == routing_id; });
  if (hello->role() == wire::Role::receiver) list.push_back({routing_id, fd});
  if (fd >= 0) agency_by_fd_[fd] = agency.id;
  spdlog::info("event=connect agency={} role={} agent=\"{}\"", agency.id,
               wire::EnumNameRole(hello->role()),
               hello->agent() ? hello->agent()->string_view() : "");

  flatbuffers::FlatBufferBuilder fbb(128);
  fbb.Finish(wire::CreateWelcomeDirect(fbb, agency.id.c_str(), "liaison-broker 0.1.0",
                                       static_cast<uint32_t>(config_.limits.max_message_bytes)));
  SendTo(routing_id, wire::kWelcome, fbb.GetBufferPointer(), fbb.GetSize());
}

void Reactor::HandleSend(const policy::PolicySet& policies, const Agency& sender,
                         const std::string& routing_id, const zmq::message_t& body) {
  stats_.messages_in++;
  std::span<const uint8_t> bytes(body.data<uint8_t>(), body.size());

  // A resend of a message already handled gets the original receipt.
  const wire::Envelope* peek =
      bytes.size() <= config_.limits.max_message_bytes ? wire::VerifyEnvelope(bytes) : nullptr;
  if (peek && peek->id()) {
    auto it = recent_receipts_.find(DeliveryKey(sender.id, peek->id()->str()));
    if (it != recent_receipts_.end()) {
      stats_.duplicates++;
      spdlog::info("event=duplicate agency={} id={}", sender.id, peek->id()->string_view());
      SendTo(routing_id, wire::kReceipt, it->second.data(), it->second.size());
      return;
    }
  }

  Admission admission = dispatcher_.Admit(policies, sender, bytes);
  if (admission.code != wire::Code::ok) {
    stats_.messages_rejected++;
    spdlog::warn("event=rejected agency={} id={} code={} detail=\"{}\"", sender.id,
                 admission.message_id.empty() ? "-" : admission.message_id,
                 wire::EnumNameCode(admission.code), admission.detail);
    auto receipt = BuildReceipt(admission.message_id, admission.code, admission.detail, sender.id,
                                {}, policies.version());
    SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    return;
  }

  std::vector<RecipientOutcome> outcomes = std::move(admission.unresolved);
  for (Delivery& d : admission.deliveries) {
    Deliver(*d.recipient, d.envelope, d.outcome);
    outcomes.push_back(std::move(d.outcome));
    if (outcomes.back().code == wire::Code::forwarded) {
      stats_.deliveries++;
    } else {
      stats_.recipients_offline++;
    }
  }
  spdlog::info("event=message agency={} id={} type={} recipients={} forwarded={}", sender.id,
               admission.message_id, wire::EnumNamePayload(peek->payload_type()), outcomes.size(),
               std::count_if(outcomes.begin(), outcomes.end(),
                             [](const auto& o) { return o.code == wire::Code::forwarded; }));
  auto receipt = BuildReceipt(admission.message_id, wire::Code::ok, "", sender.id, outcomes,
                              policies.version());
  RememberReceipt(DeliveryKey(sender.id, admission.message_id), receipt);
  SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
}

void Reactor::Deliver(const Agency& recipient, const flatbuffers::DetachedBuffer& envelope,
                      RecipientOutcome& outcome) {
  outcome.code = wire::Code::recipient_offline;
  outcome.reason = "not-connected";
  auto it = receivers_.find(recipient.id);
  if (it == receivers_.end()) return;
  auto& list = it->second;
  // Newest connection first. A connection that is gone is forgotten; one
  // whose queue is full is kept (it is slow, not gone) and the next is tried.
  bool backlog = false;
  for (size_t i = list.size(); i-- > 0;) {
    switch (SendTo(list[i].routing_id, wire::kDeliver, envelope.data(), envelope.size())) {
      case SendResult::kSent:
        outcome.code = wire::Code::forwarded;
        outcome.reason.clear();
        return;
      case SendResult::kFull:
        backlog = true;
        break;
      case SendResult::kGone:
        spdlog::info("event=receiver_gone agency={}", recipient.id);
        list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
        break;
    }
  }
  if (list.empty()) receivers_.erase(it);
  if (backlog) outcome.reason = "connection-backlog";
}

Reactor::SendResult Reactor::SendTo(const std::string& routing_id, std::string_view command,
                                    const void* data, size_t size) {
  try {
    if (!router_->send(zmq::buffer(routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return SendResult::kFull;
    }
    router_->send(zmq::buffer(command), zmq::send_flags::sndmore);
    router_->send(zmq::const_buffer(data, size), zmq::send_flags::none);
    return SendResult::kSent;
  } catch (const zmq::error_t& e) {
    if (e.num() != EHOSTUNREACH) spdlog::error("event=send_failed error=\"{}\"", e.what());
    return SendResult::kGone;
  }
}

void Reactor::RememberReceipt(const std::string& key, const flatbuffers::DetachedBuffer& receipt) {
  if (config_.limits.dedupe_window == 0) return;
  recent_receipts_[key].assign(receipt.data(), receipt.data() + receipt.size());
  recent_order_.push_back(key);
  while (recent_order_.size() > config_.limits.dedupe_window) {
    recent_receipts_.erase(recent_order_.front());
    recent_order_.pop_front();
  }
}

void Reactor::HandleMonitorEvent() {
  std::vector<zmq::message_t> frames;
  if (!zmq::recv_multipart(*monitor_, std::back_inserter(frames), zmq::recv_flags::dontwait) ||
      frames.size() < 2 || frames[0].size() < 6) {
    return;
  }
  uint16_t event;
  uint32_t value;
  std::memcpy(&event, frames[0].data(), 2);
  std::memcpy(&value, static_cast<const char*>(frames[0].data()) + 2, 4);
  const std::string endpoint = frames[1].to_string();
  if (event == ZMQ_EVENT_DISCONNECTED) {
    auto it = agency_by_fd_.find(static_cast<int>(value));
    if (it != agency_by_fd_.end()) {
      spdlog::info("event=disconnect agency={}", it->second);
      agency_by_fd_.erase(it);
    }
    return;
  }
  stats_.handshake_failures++;
  // Unknown keys are logged with their fingerprint by the ZAP handler; here
  // every refused handshake is logged, plaintext peers included.
  spdlog::warn("event=handshake_refused reason={} endpoint={}", HandshakeFailure(event, value),
               endpoint);
}

}  // namespace liaison::broker

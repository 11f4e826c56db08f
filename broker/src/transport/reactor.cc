#include "transport/reactor.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <future>
#include <set>
#include <zmq_addon.hpp>

#include "admin/metrics.h"
#include "admin/operator_server.h"
#include "audit/ledger.h"
#include "liaison/logging.h"
#include "policy/policy_set.h"

namespace liaison::broker {
namespace {

constexpr const char* kMonitorEndpoint = "inproc://liaison-router-monitor";
// Messages handled per readable wake-up before the loop looks at its other
// sockets again, so that one busy sender cannot starve shutdown or events.
constexpr int kDrainBatch = 256;

const char* HandshakeFailure(uint16_t event, uint32_t value) {
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) return "key_refused";
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
    return value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH ? "plaintext_or_wrong_mechanism"
                                                               : "protocol_error";
  }
  return "handshake_failed";
}

}  // namespace

namespace {

std::vector<ServedKey> ServedKeys(std::vector<ServerKey> keys) {
  std::vector<ServedKey> served;
  for (size_t i = 0; i < keys.size(); ++i) {
    served.push_back({std::move(keys[i]), i == 0 ? kCurrentKeyDomain : PreviousKeyDomain(i - 1)});
  }
  if (!served.empty()) served[0].key.until_ms = INT64_MAX;  // the current key never retires
  return served;
}

std::string BrokerKeyFingerprint(const ServerKey& key) {
  return KeyFingerprint(DecodeZ85Key(key.keys.public_z85));
}

std::map<std::string, ZapHandler::KeyWindow> DomainWindows(const std::vector<ServedKey>& keys) {
  std::map<std::string, ZapHandler::KeyWindow> windows;
  for (const auto& k : keys) windows[k.domain] = {k.key.until_ms, BrokerKeyFingerprint(k.key)};
  return windows;
}

}  // namespace

struct Reactor::Activation {
  std::unique_ptr<store::Store> store, reader;
  std::unique_ptr<audit::Ledger> ledger;
  std::promise<Status> done;
};

Reactor::Reactor(BrokerConfig config, std::vector<ServerKey> server_keys,
                 std::shared_ptr<const policy::PolicySet> policies,
                 std::unique_ptr<store::Store> store, std::unique_ptr<store::Store> reader,
                 std::unique_ptr<audit::Ledger> ledger, Metrics* metrics)
    : Reactor(std::move(config), std::move(server_keys), std::move(policies), metrics) {
  core_ = std::make_unique<Pipeline>(config_, std::move(store), std::move(reader), std::move(ledger), metrics,
                                     &stats_, static_cast<Link*>(this), [this] { return this->policies(); });
  core_ready_ = true;
}

Reactor::Reactor(BrokerConfig config, std::vector<ServerKey> server_keys,
                 std::shared_ptr<const policy::PolicySet> policies, Metrics* metrics)
    : config_(std::move(config)),
      served_keys_(ServedKeys(std::move(server_keys))),
      policies_(std::move(policies)),
      context_(1),
      zap_(context_, [this] { return this->policies()->shared_directory(); },
           DomainWindows(served_keys_)),
      metrics_(metrics) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  activate_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  Metrics::External e;
  e.deliveries = &stats_.deliveries;
  e.acks = &stats_.acks;
  e.redeliveries = &stats_.redeliveries;
  e.expired = &stats_.expired;
  e.commits = &stats_.commits;
  e.commit_failures = &stats_.commit_failures;
  e.ledger_failures = &stats_.ledger_failures;
  e.handshake_failures = &stats_.handshake_failures;
  e.duplicates = &stats_.duplicates;
  e.receipt_lookups = &stats_.receipt_lookups;
  e.busy = &stats_.busy;
  e.hellos_refused = &stats_.hellos_refused;
  e.auth_refused = [this] { return zap_.refused(); };
  e.auth_admitted = [this] { return zap_.admitted(); };
  metrics_->SetExternal(std::move(e));
}

Reactor::~Reactor() {
  monitor_.reset();
  router_.reset();
  zap_.Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (activate_fd_ >= 0) ::close(activate_fd_);
}

std::shared_ptr<const policy::PolicySet> Reactor::policies() const {
  return std::atomic_load(&policies_);
}

void Reactor::RecordEvents(std::vector<audit::Entry> events) {
  // Under the lock, so that an activation cannot take the standby's events
  // between the check and the append.
  std::lock_guard<std::mutex> lock(activation_mu_);
  if (core_ready_) {
    core_->RecordEvents(std::move(events));
  } else {
    for (auto& e : events) standby_events_.push_back(std::move(e));
  }
}

StatusOr<SetAsideOutcome> Reactor::ActOnSetAside(const SetAsideRequest& request,
                                                 std::chrono::milliseconds timeout) {
  if (!core_ready_) {
    return Status::Unavailable("this broker is a standby (another broker holds the store's lease); "
                               "ask the active broker");
  }
  return core_->ActOnSetAside(request, timeout);
}

Status Reactor::Activate(std::unique_ptr<store::Store> store, std::unique_ptr<store::Store> reader,
                         std::unique_ptr<audit::Ledger> ledger, std::chrono::milliseconds timeout) {
  auto activation = std::make_shared<Activation>();
  activation->store = std::move(store);
  activation->reader = std::move(reader);
  activation->ledger = std::move(ledger);
  std::future<Status> done = activation->done.get_future();
  {
    std::lock_guard<std::mutex> lock(activation_mu_);
    if (core_ || activation_) return Status::Internal("the broker is already active");
    activation_ = activation;
  }
  uint64_t one = 1;
  if (::write(activate_fd_, &one, sizeof one) != sizeof one) {
    std::lock_guard<std::mutex> lock(activation_mu_);
    activation_.reset();
    return Status::Internal(std::string("cannot wake the reactor: ") + std::strerror(errno));
  }
  if (done.wait_for(timeout) != std::future_status::ready) {
    return Status::DeadlineExceeded("the reactor did not take the activation within " +
                                    std::to_string(timeout.count()) + " ms");
  }
  return done.get();
}

void Reactor::TakeActivation() {
  uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(activate_fd_, &count, sizeof count);
  std::shared_ptr<Activation> activation;
  {
    std::lock_guard<std::mutex> lock(activation_mu_);
    activation = std::move(activation_);
  }
  if (!activation || core_) return;
  auto core = std::make_unique<Pipeline>(config_, std::move(activation->store), std::move(activation->reader),
                                         std::move(activation->ledger), metrics_, &stats_, static_cast<Link*>(this),
                                         [this] { return this->policies(); });
  if (Status st = core->Start(); !st.ok()) {
    activation->done.set_value(st);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(activation_mu_);
    core_ = std::move(core);
    core_->RecordEvents(std::move(standby_events_));
    standby_events_.clear();
    core_ready_ = true;
  }
  metrics_->SetReady(true, "");
  activation->done.set_value(Status::Ok());
}

void Reactor::SetPolicies(std::shared_ptr<const policy::PolicySet> policies) {
  std::atomic_store(&policies_, std::move(policies));
}


Status Reactor::Bind() {
  if (wake_fd_ < 0 || activate_fd_ < 0) return Status::Internal("eventfd failed");
  if (core_) LIAISON_RETURN_IF_ERROR(core_->Start());
  LIAISON_RETURN_IF_ERROR(zap_.Start());
  try {
    router_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::router);
    router_->set(zmq::sockopt::curve_server, 1);
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

  } catch (const zmq::error_t& e) {
    return Status::Internal(std::string("cannot set up the broker socket: ") + e.what());
  }
  // A bind takes the socket's options as they are at that moment: each key
  // gets its own endpoint, with its own ZAP domain to tell them apart.
  const int64_t now = NowMillis();
  for (ServedKey& served : served_keys_) {
    const std::string fingerprint = BrokerKeyFingerprint(served.key);
    if (served.key.until_ms <= now) {
      served.retired = true;
      spdlog::warn("event=broker_key_retired broker_key_fingerprint={} endpoint={} reason=overlap_ended",
                   fingerprint, served.key.listen);
      continue;
    }
    try {
      router_->set(zmq::sockopt::curve_secretkey, served.key.keys.secret_z85);
      router_->set(zmq::sockopt::zap_domain, served.domain);
      router_->bind(served.key.listen);
      served.endpoint = router_->get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("cannot listen on " + served.key.listen + ": " + e.what() +
                                 (e.num() == EADDRINUSE
                                      ? " (another process, or another key of this broker, uses the port)"
                                      : ""));
    }
    if (&served != &served_keys_.front()) {
      spdlog::info("event=listening_previous_key endpoint={} broker_key_fingerprint={} until={}",
                   served.endpoint, fingerprint, wire::Rfc3339(served.key.until_ms));
    }
  }
  endpoint_ = served_keys_.front().endpoint;
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
  if (core_) {
    metrics_->SetReady(true, "");
  } else {
    metrics_->SetReady(false, "role=standby: another broker holds the store's lease");
  }
  metrics_->Beat();
  zmq::pollitem_t items[] = {
      {router_->handle(), 0, ZMQ_POLLIN, 0},
      {monitor_->handle(), 0, ZMQ_POLLIN, 0},
      {nullptr, wake_fd_, ZMQ_POLLIN, 0},
      {nullptr, activate_fd_, ZMQ_POLLIN, 0},
      {nullptr, core_ ? core_->commit_fd() : -1, ZMQ_POLLIN, 0},
  };
  auto next_timer = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (true) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        next_timer - std::chrono::steady_clock::now());
    items[0].events = !core_ || core_->accepting() ? ZMQ_POLLIN : 0;
    try {
      // The core's commit fd only once there is a core.
      zmq::poll(items, core_ ? 5 : 4, std::max(wait, std::chrono::milliseconds(0)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::critical("event=poll_failed error=\"{}\"", e.what());
      return;
    }
    if (items[2].revents & ZMQ_POLLIN) break;
    metrics_->Beat();
    if (items[1].revents & ZMQ_POLLIN) HandleMonitorEvent();
    if (items[3].revents & ZMQ_POLLIN) {
      TakeActivation();
      if (core_) items[4].fd = core_->commit_fd();
      continue;  // items[4] was not polled this round
    }
    if (core_ && (items[4].revents & ZMQ_POLLIN)) core_->OnCommitReady();
    if (items[0].revents & ZMQ_POLLIN) {
      // One batch: drain what is waiting (up to max_batch messages), then
      // commit it with one fsync and answer everyone in it.
      if (core_) core_->BeginDrain();
      for (int i = 0; i < kDrainBatch * 4 && (!core_ || core_->batch_messages() < config_.store.max_batch); ++i) {
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
      if (core_) core_->FinishBatch();
    }
    if (std::chrono::steady_clock::now() >= next_timer) {
      OnTimer();
      next_timer = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
  }
  if (core_) core_->Shutdown();
  spdlog::info(
      "event=stopping messages_in={} rejected={} stored={} deliveries={} duplicates={} "
      "malformed={} handshake_failures={}",
      stats_.messages_in.load(), stats_.messages_rejected.load(), stats_.stored.load(),
      stats_.deliveries.load(), stats_.duplicates.load(), stats_.malformed_frames.load(),
      stats_.handshake_failures.load());
}

void Reactor::HandleRouterMessage(std::vector<zmq::message_t>& frames) {
  // [routing id, command, body]; ZAP put the agency id on every frame.
  const char* user_id = frames.size() > 1 ? zmq_msg_gets(frames[1].handle(), "User-Id") : nullptr;
  const char* key = frames.size() > 1 ? zmq_msg_gets(frames[1].handle(), kKeyProperty) : nullptr;
  // One policy set for the whole message, even if a reload swaps it now.
  const auto set = policies();
  const Agency* agency = user_id ? set->directory().Find(user_id) : nullptr;
  if (served_keys_.size() > 1) {
    const char* domain = frames.size() > 1 ? zmq_msg_gets(frames[1].handle(), kBrokerKeyProperty) : nullptr;
    if (!domain || !DomainLive(domain, NowMillis())) {
      // Made with a broker key whose overlap has ended.
      stats_.retired_broker_key_messages++;
      spdlog::warn("event=message_with_retired_broker_key agency={}", user_id ? user_id : "-");
      return;
    }
  }
  if (!agency || !key || !AcceptsKey(*agency, key, NowMillis())) {
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
  if (!core_) {
    AnswerStandby(command, *agency, routing_id, frames[2]);
    return;
  }
  if (command == wire::kSend) {
    core_->HandleSend(set, *agency, routing_id, {frames[2].data<uint8_t>(), frames[2].size()});
  } else if (command == wire::kHello) {
    int fd = zmq_msg_get(frames[1].handle(), ZMQ_SRCFD);
    const char* domain = zmq_msg_gets(frames[1].handle(), kBrokerKeyProperty);
    HandleHello(*agency, key, domain ? domain : "", routing_id, fd, frames[2]);
  } else if (command == wire::kAck) {
    core_->HandleAck(*agency, {frames[2].data<uint8_t>(), frames[2].size()}, routing_id);
  } else {
    stats_.malformed_frames++;
    auto receipt = BuildReceipt("", wire::Code::unknown_command,
                                "unknown command; expected HELLO, SEND or ACK", agency->id, {});
    SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    spdlog::warn("event=malformed agency={} reason=unknown_command", agency->id);
  }
}

void Reactor::AnswerStandby(std::string_view command, const Agency& agency, const std::string& routing_id,
                            const zmq::message_t& body) {
  std::string id;
  if (command == wire::kSend && body.size() <= config_.limits.max_message_bytes) {
    // Echo the id so that the sender can match it (verified; never logged).
    std::vector<uint8_t> storage;
    const wire::Envelope* env = wire::VerifyEnvelope(wire::Aligned({body.data<uint8_t>(), body.size()}, storage));
    if (env && env->id()) id = env->id()->str();
  }
  auto receipt = BuildReceipt(id, wire::Code::standby,
                              "this broker is a standby: another broker holds the store's lease and is the "
                              "active one; connect to the next broker endpoint and resend with the same id",
                              agency.id, {});
  SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
}

namespace {

// An agent says HELLO once per (re)connection; more is a flood, which
// would otherwise cost a verify and a log line each.
constexpr double kHelloBurst = 10;
constexpr double kHellosPerSecond = 2;
constexpr auto kHelloFloodLogInterval = std::chrono::seconds(10);
// Connections whose HELLO budget is kept; past it the table starts afresh
// (a churn of connections cannot grow it without bound).
constexpr size_t kMaxHelloLimits = 4096;

}  // namespace

bool Reactor::HelloAllowed(const std::string& agency, const std::string& routing_id) {
  if (hello_limits_.size() >= kMaxHelloLimits && !hello_limits_.count(routing_id)) hello_limits_.clear();
  HelloLimit& limit = hello_limits_[routing_id];
  const auto now = std::chrono::steady_clock::now();
  if (limit.bucket.Take(kHelloBurst, kHellosPerSecond, now)) return true;
  ++limit.refused;
  if (now - limit.logged >= kHelloFloodLogInterval) {
    spdlog::warn("event=hello_flood agency={} refused={} limit_per_second={} action=busy", agency,
                 limit.refused, kHellosPerSecond);
    limit.refused = 0;
    limit.logged = now;
  }
  return false;
}

void Reactor::HandleHello(const Agency& agency, const std::string& key, const std::string& domain,
                          const std::string& routing_id, int fd, const zmq::message_t& body) {
  if (!HelloAllowed(agency.id, routing_id)) {
    stats_.hellos_refused++;
    auto receipt = BuildReceipt("", wire::Code::busy,
                                "too many HELLOs from this agency; reconnect and say HELLO later",
                                agency.id, {});
    SendTo(routing_id, wire::kReceipt, receipt.data(), receipt.size());
    return;
  }
  std::vector<uint8_t> storage;
  const wire::Hello* hello = wire::VerifyHello(wire::Aligned({body.data<uint8_t>(), body.size()}, storage));
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
  if (hello->role() == wire::Role::receiver) {
    list.push_back({routing_id, fd, key, domain});
    core_->ReceiverConnected(agency.id);
  }
  if (fd >= 0) agency_by_fd_[fd] = agency.id;
  spdlog::info("event=connect agency={} role={} agent={}", agency.id,
               wire::EnumNameRole(hello->role()),
               LogValue(hello->agent() ? hello->agent()->string_view() : ""));

  flatbuffers::FlatBufferBuilder fbb(128);
  fbb.Finish(wire::CreateWelcomeDirect(fbb, agency.id.c_str(), "liaison-broker 0.1.0",
                                       static_cast<uint32_t>(config_.limits.max_message_bytes)));
  SendTo(routing_id, wire::kWelcome, fbb.GetBufferPointer(), fbb.GetSize());
}


bool Reactor::HasReceiver(const std::string& agency) const {
  auto it = receivers_.find(agency);
  return it != receivers_.end() && !it->second.empty();
}

void Reactor::DropReceiver(const std::string& agency) {
  auto it = receivers_.find(agency);
  if (it != receivers_.end() && !it->second.empty()) it->second.pop_back();
}

std::vector<std::string> Reactor::ReceiverAgencies() const {
  std::vector<std::string> agencies;
  for (const auto& [agency, list] : receivers_) {
    if (!list.empty()) agencies.push_back(agency);
  }
  return agencies;
}

void Reactor::OnTimer() {
  if (served_keys_.size() > 1) RetireDueKeys(NowMillis());
  {
    // Agencies with a connection that said HELLO (senders and receivers),
    // for `liaison status`.
    std::set<std::string> connected;
    for (const auto& [fd, agency] : agency_by_fd_) connected.insert(agency);
    metrics_->SetConnectedAgencies({connected.begin(), connected.end()});
  }
  if (core_) core_->OnTimer();
}

const std::string* Reactor::LiveReceiverOf(const std::string& agency) {
  auto it = receivers_.find(agency);
  if (it == receivers_.end()) return nullptr;
  // A connection whose key a reload replaced or revoked gets nothing more.
  // Hold the set: a reload on the main thread may drop the last other
  // reference to it while `current` is in use (found by ThreadSanitizer).
  const auto set = policies();
  const Agency* current = set->directory().Find(agency);
  std::erase_if(it->second, [&](const Receiver& r) {
    const bool revoked =
        !current || !AcceptsKey(*current, r.key, NowMillis()) || !DomainLive(r.domain, NowMillis());
    if (revoked) spdlog::warn("event=receiver_revoked agency={}", agency);
    return revoked;
  });
  return it->second.empty() ? nullptr : &it->second.back().routing_id;
}


bool Reactor::DomainLive(std::string_view domain, int64_t now_ms) const {
  for (const ServedKey& served : served_keys_) {
    // By the clock too: between `until` and the next timer tick.
    if (served.domain == domain) return !served.retired && now_ms < served.key.until_ms;
  }
  return false;
}

void Reactor::RetireDueKeys(int64_t now_ms) {
  for (ServedKey& served : served_keys_) {
    if (served.retired || served.key.until_ms > now_ms) continue;
    served.retired = true;
    // Closing the endpoint also closes the connections accepted through it;
    // whatever still arrives from them is dropped by DomainLive().
    if (zmq_unbind(router_->handle(), served.endpoint.c_str()) != 0) {
      spdlog::error("event=unbind_failed endpoint={} error=\"{}\"", served.endpoint, zmq_strerror(zmq_errno()));
    }
    spdlog::warn("event=broker_key_retired broker_key_fingerprint={} endpoint={} reason=overlap_ended",
                 BrokerKeyFingerprint(served.key), served.endpoint);
    for (auto& [agency, list] : receivers_) {
      std::erase_if(list, [&](const Receiver& r) { return r.domain == served.domain; });
    }
  }
}

Link::SendResult Reactor::SendTo(const std::string& routing_id, std::string_view command,
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

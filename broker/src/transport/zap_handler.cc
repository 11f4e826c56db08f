#include "transport/zap_handler.h"

#include <spdlog/spdlog.h>

#include <zmq_addon.hpp>

#include "liaison/keys.h"

namespace liaison::broker {
namespace {

// One ZMTP metadata property: name length (1 byte), name, value length
// (4 bytes, big-endian), value.
std::string EncodeProperty(std::string_view name, std::string_view value) {
  std::string out;
  out.push_back(static_cast<char>(name.size()));
  out.append(name);
  const uint32_t n = static_cast<uint32_t>(value.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xff));
  out.append(value);
  return out;
}

}  // namespace

std::string PreviousKeyDomain(size_t index) { return "liaison-previous-" + std::to_string(index); }

ZapHandler::ZapHandler(zmq::context_t& context, DirectorySource directory,
                       std::map<std::string, KeyWindow> domains)
    : context_(context), directory_(std::move(directory)), domains_(std::move(domains)) {}

ZapHandler::~ZapHandler() { Stop(); }

Status ZapHandler::Start() {
  try {
    socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::rep);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return Status::Internal(std::string("cannot bind the ZAP handler: ") + e.what());
  }
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void ZapHandler::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  socket_.reset();
}

void ZapHandler::Run() {
  zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0}};
  while (!stop_) {
    try {
      // A short timeout lets Stop() end the thread without another socket.
      zmq::poll(items, 1, std::chrono::milliseconds(100));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(*socket_, std::back_inserter(request), zmq::recv_flags::dontwait)) {
        continue;
      }
      HandleRequest(request);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      spdlog::error("event=zap_error error=\"{}\"", e.what());
    }
  }
}

void ZapHandler::HandleRequest(std::vector<zmq::message_t>& request) {
  // RFC 27: version, request id, domain, address, routing id, mechanism,
  // credentials...; the reply echoes version and request id.
  std::string status_code = "400";
  std::string status_text = "unknown key";
  std::string user_id;
  std::string metadata;
  if (request.size() < 6 || request[0].to_string_view() != "1.0") {
    status_text = "malformed ZAP request";
    spdlog::error("event=zap_malformed frames={}", request.size());
  } else {
    const std::string domain = request[2].to_string();
    const std::string address = request[3].to_string();
    const std::string mechanism = request[5].to_string();
    const auto window = domains_.find(domain);
    if (window == domains_.end() || NowMillis() >= window->second.until_ms) {
      // The endpoint of a retired broker key, in the moment before the
      // reactor closes it.
      status_text = "broker key retired";
      refused_++;
      spdlog::warn("event=auth_refused reason=broker_key_retired broker_key_fingerprint={} peer={}",
                   window == domains_.end() ? "unknown" : window->second.fingerprint, address);
    } else if (mechanism != "CURVE" || request.size() < 7 || request[6].size() != 32) {
      status_text = "CURVE required";
      refused_++;
      spdlog::warn("event=auth_refused reason=not_curve mechanism={} peer={}", mechanism, address);
    } else {
      const std::string key = request[6].to_string();
      auto directory = directory_();
      const Agency* agency = directory ? directory->FindByKey(key) : nullptr;
      const bool previous = agency && key == agency->previous_raw_key;
      if (agency && previous && NowMillis() >= agency->previous_valid_until_ms) {
        refused_++;
        spdlog::warn("event=auth_refused reason=previous_key_expired agency={} key_fingerprint={} peer={}",
                     agency->id, KeyFingerprint(key), address);
      } else if (agency) {
        status_code = "200";
        status_text = "OK";
        user_id = agency->id;
        // The key this connection presented: checked again per message.
        metadata = EncodeProperty(kKeyProperty, previous ? agency->previous_public_key : agency->public_key) +
                   EncodeProperty(kBrokerKeyProperty, domain);
        if (previous) spdlog::info("event=auth_previous_key agency={} reason=rotation_overlap", agency->id);
        if (domain != kCurrentKeyDomain) {
          spdlog::info("event=auth_previous_broker_key agency={} broker_key_fingerprint={} "
                       "reason=rotation_overlap",
                       agency->id, window->second.fingerprint);
        }
        admitted_++;
        spdlog::debug("event=auth_ok agency={} peer={}", agency->id, address);
      } else {
        refused_++;
        spdlog::warn("event=auth_refused reason=unknown_key key_fingerprint={} peer={}",
                     KeyFingerprint(key), address);
      }
    }
  }
  std::vector<zmq::const_buffer> reply = {
      zmq::str_buffer("1.0"),
      zmq::buffer(request.size() > 1 ? request[1].data() : nullptr,
                  request.size() > 1 ? request[1].size() : 0),
      zmq::buffer(status_code), zmq::buffer(status_text), zmq::buffer(user_id),
      zmq::buffer(metadata)};
  zmq::send_multipart(*socket_, reply);
}

}  // namespace liaison::broker

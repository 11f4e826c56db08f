#include "webhook.h"

#include <utility>  // before asio: its awaitable.hpp uses std::exchange

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace liaison::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

}  // namespace

struct Webhook::Tls {
  ssl::context context{ssl::context::tls_client};
};

Webhook::Webhook(WebhookOptions options, Inbox& inbox, BrokerLink& link, GatewayStore& store)
    : options_(std::move(options)), inbox_(inbox), link_(link), store_(store), tls_(std::make_unique<Tls>()) {}

Webhook::~Webhook() { Stop(); }

Status Webhook::Start() {
  SSL_CTX_set_min_proto_version(tls_->context.native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  if (options_.ca_file.empty()) {
    tls_->context.set_default_verify_paths(ec);
  } else {
    tls_->context.load_verify_file(options_.ca_file, ec);
  }
  if (ec) {
    return Status::InvalidArgument("webhook.ca_file " + options_.ca_file + ": " + ec.message());
  }
  tls_->context.set_verify_mode(ssl::verify_peer);
  auto letters = store_.DeadLetters();
  if (!letters.ok()) return letters.status();
  for (const auto& letter : *letters) recorded_.emplace(letter.sender, letter.id);
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void Webhook::Stop() {
  stop_ = true;
  Notify();
  if (thread_.joinable()) thread_.join();
}

void Webhook::Notify() {
  {
    std::lock_guard lock(mu_);
    notified_ = true;
  }
  wake_.notify_all();
}

Webhook::Result Webhook::Post(const std::string& message_id, const std::string& body) {
  Result result;
  asio::io_context io;
  auto attempt = [&]() -> asio::awaitable<void> {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    auto endpoints = co_await resolver.async_resolve(options_.host, options_.port, asio::use_awaitable);
    beast::ssl_stream<beast::tcp_stream> stream(executor, tls_->context);
    SSL* handle = stream.native_handle();
    // The certificate must name the host we dial (or its IP address).
    boost::system::error_code ec;
    asio::ip::make_address(options_.host, ec);
    if (ec) {
      SSL_set_tlsext_host_name(handle, options_.host.c_str());
      SSL_set1_host(handle, options_.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(handle), options_.host.c_str());
    }
    co_await beast::get_lowest_layer(stream).async_connect(endpoints, asio::use_awaitable);
    co_await stream.async_handshake(ssl::stream_base::client, asio::use_awaitable);
    http::request<http::string_body> request{http::verb::post, options_.target, 11};
    request.set(http::field::host, options_.host);
    request.set(http::field::user_agent, "liaison-gateway/0.1.0");
    request.set(http::field::content_type, "application/json");
    request.set("Liaison-Message-Id", message_id);
    if (!options_.token.empty()) request.set(http::field::authorization, "Bearer " + options_.token);
    request.body() = body;
    request.prepare_payload();
    co_await http::async_write(stream, request, asio::use_awaitable);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(1 << 20);
    // The status line and headers are the answer: what follows (the body,
    // close_notify) may be cut short by a receiver that just closes, and
    // the receiver has the message all the same.
    co_await http::async_read_header(stream, buffer, parser, asio::use_awaitable);
    result.status = parser.get().result_int();
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(1));  // the rest is a courtesy
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  };
  bool done = false;
  asio::co_spawn(io, attempt(), [&](std::exception_ptr e) {
    done = true;
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      result.error = ex.what();
    }
  });
  io.run_for(std::chrono::milliseconds(options_.timeout_ms));
  if (!done && result.status == 0) result.error = "no answer within webhook.timeout_ms";
  return result;
}

void Webhook::Delivered(const Key& key, int status, int attempts) {
  spdlog::info("event=webhook_delivered message_id={} status={} attempts={}", key.second, status, attempts);
  inbox_.Remove(key.first, key.second);
  link_.Ack(key.first, key.second);
  if (recorded_.count(key) == 0) return;
  // Delivered after all (e.g. after a restart): no longer a dead letter.
  if (auto st = store_.RemoveDeadLetter(key.first, key.second); !st.ok()) {
    spdlog::error("event=state_write_failed error=\"{}\"", st.message());
    return;
  }
  recorded_.erase(key);
}

void Webhook::DeadLetter(const Key& key, const Result& last, int attempts) {
  // Not acked: the broker keeps the message. Ids and the transport's error
  // only; the message's values never reach the log or the record.
  spdlog::error("event=webhook_dead_letter message_id={} from={} attempts={} last_status={} error=\"{}\"",
                key.second, key.first, attempts, last.status, last.error);
  dead_.insert(key);
  GatewayStore::DeadLetter letter{key.first, key.second, attempts, last.status, last.error};
  if (auto st = store_.AddDeadLetter(letter); !st.ok()) {
    spdlog::error("event=state_write_failed error=\"{}\"", st.message());
    return;
  }
  recorded_.insert(key);
}

void Webhook::ShredIfErasure(const Inbox::Item& item) {
  // A withdrawal the agency's system now has: whatever the state file keeps
  // of that case (filed under its sender) is shredded.
  std::vector<uint8_t> storage;
  const wire::Envelope* e = wire::VerifyEnvelope(wire::Aligned(item.envelope, storage));
  if (!e || e->payload_type() != wire::Payload::ErasureRequest || item.sender.empty()) return;
  if (auto st = store_.ShredCase(item.sender, e->case_ref() ? e->case_ref()->str() : ""); !st.ok()) {
    spdlog::error("event=state_shred_failed message_id={} error=\"{}\"", item.id, st.message());
  }
}

void Webhook::Loop() {
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto delay = std::chrono::milliseconds(options_.retry_initial_ms);
  std::optional<Inbox::Item> current;
  Key key;
  std::string body;
  int attempts = 0;
  while (!stop_) {
    if (!current) {
      // Leased for a day: the webhook owns it until its system answers 2xx
      // (a dead letter's lease is renewed here, daily, and it is skipped).
      auto items = inbox_.Lease(1, std::chrono::hours(24));
      if (items.empty()) {
        std::unique_lock lock(mu_);
        wake_.wait_for(lock, std::chrono::milliseconds(500), [&] { return notified_ || stop_.load(); });
        notified_ = false;
        continue;
      }
      key = Key(items.front().sender, items.front().id);
      if (dead_.count(key) > 0) continue;
      current = std::move(items.front());
      auto json = codec.ToJson(current->envelope, /*pretty=*/false);
      if (!json.ok()) {  // cannot happen for a verified delivery; never loop on it
        spdlog::error("event=webhook_skipped message_id={} error=\"{}\"", current->id,
                      json.status().message());
        current.reset();
        continue;
      }
      body = std::move(*json);
      attempts = 0;
      delay = std::chrono::milliseconds(options_.retry_initial_ms);
    }
    ++attempts;
    const Result result = Post(current->id, body);
    if (result.status >= 200 && result.status < 300) {
      Delivered(key, result.status, attempts);
      ShredIfErasure(*current);
      current.reset();
      continue;
    }
    if (static_cast<uint64_t>(attempts) >= options_.max_attempts) {
      DeadLetter(key, result, attempts);
      current.reset();
      continue;
    }
    spdlog::warn("event=webhook_failed message_id={} attempt={} status={} error=\"{}\" retry_in_ms={}",
                 current->id, attempts, result.status, result.error, delay.count());
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, delay, [&] { return stop_.load(); });
    delay = std::min(delay * 2, std::chrono::milliseconds(options_.retry_max_ms));
  }
}

}  // namespace liaison::gateway

#include "https_server.h"

#include <utility>  // before asio: its awaitable.hpp uses std::exchange

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <chrono>
#include <list>
#include <mutex>
#include <thread>

#include "connection_table.h"
#include "liaison/keys.h"
#include "liaison/logging.h"
#include "liaison/wire.h"
#include "request.h"

namespace liaison::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;
using Clock = std::chrono::steady_clock;

// Until a connection has shown the agency's credential, the TLS handshake
// and each request header must be complete this long after the accept; so
// idle and slow-header connections do not hold a place (docs/operations.md).
constexpr auto kPreAuthTimeout = std::chrono::seconds(5);
constexpr auto kIdleTimeout = std::chrono::seconds(30);
// Unauthenticated connections one address may hold; its oldest one is shed
// for a new one beyond this.
constexpr uint64_t kMaxUnauthenticatedPerAddress = 16;
constexpr auto kShedReportInterval = std::chrono::seconds(10);

// TLS 1.2 with ECDHE and an AEAD cipher only (no CBC, no static RSA), and
// TLS 1.3's suites, all AEAD.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Suites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

std::string_view Sv(beast::string_view s) { return {s.data(), s.size()}; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Framing that two HTTP parsers could read differently (a proxy in front
// and the gateway) smuggles one request inside another: refuse it instead
// of guessing (RFC 9112 sections 6.1 and 6.3). Returns what is wrong.
std::optional<std::string> AmbiguousFraming(const Request& header) {
  int transfer_encodings = 0, content_lengths = 0;
  std::string_view transfer_encoding;
  for (const auto& field : header) {
    if (field.name() == http::field::transfer_encoding) {
      ++transfer_encodings;
      transfer_encoding = Trim(Sv(field.value()));
    } else if (field.name() == http::field::content_length) {
      ++content_lengths;
    }
  }
  if (transfer_encodings > 0 && content_lengths > 0) {
    return "Transfer-Encoding and Content-Length together; send one of them";
  }
  if (transfer_encodings > 1 ||
      (transfer_encodings == 1 &&
       !(transfer_encoding.size() == 7 && StartsWithNoCase(transfer_encoding, "chunked")))) {
    return "Transfer-Encoding: only 'chunked' (once, alone) is accepted";
  }
  if (content_lengths > 1) return "Content-Length: send it once";
  return std::nullopt;
}

}  // namespace

struct HttpsServer::Impl {
  Impl(const GatewayConfig& c, GatewayStore& s, Inbox& i, BrokerLink& l)
      : config(c),
        store(s),
        inbox(i),
        link(l),
        io(std::make_unique<asio::io_context>()),
        tls(ssl::context::tls_server),
        acceptor(std::make_unique<tcp::acceptor>(*io)),
        token_digest(c.token.empty() ? std::string() : Sha256Hex(c.token)) {}

  // --- replies ---------------------------------------------------------

  Response Json(http::status status, wire::JsonCodec::Root root, flatbuffers::FlatBufferBuilder& fbb) {
    Response res;
    res.result(status);
    res.set(http::field::content_type, "application/json");
    auto text = codecs.at(root)->ToJson({fbb.GetBufferPointer(), fbb.GetSize()}, /*pretty=*/false);
    if (!text.ok()) {
      // Never a 200 with half an answer: say it failed (names only).
      spdlog::error("event=reply_unprintable error=\"{}\"", text.status().message());
      res.result(http::status::internal_server_error);
      res.body() = "{\"error\": \"internal_error\", \"detail\": \"the reply could not be printed as JSON\"}\n";
      return res;
    }
    res.body() = *text + "\n";
    return res;
  }

  Response Problem(http::status status, const std::string& error, const std::string& detail) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(CreateProblemDirect(fbb, error.c_str(), detail.c_str()));
    return Json(status, wire::JsonCodec::Root::kGatewayProblem, fbb);
  }

  // --- authentication ----------------------------------------------------

  // The client certificate (when configured) was checked in the handshake;
  // the token is compared in constant time, over digests so that its length
  // does not leak either.
  bool Authorized(const Request& req) const {
    if (token_digest.empty()) return true;
    const std::string_view header = Sv(req[http::field::authorization]);
    constexpr std::string_view kBearer = "Bearer ";
    if (header.size() <= kBearer.size() || !StartsWithNoCase(header, kBearer)) return false;
    const std::string digest = Sha256Hex(header.substr(kBearer.size()));
    return CRYPTO_memcmp(digest.data(), token_digest.data(), digest.size()) == 0;
  }

  // --- routes ----------------------------------------------------------

  Response PostMessage(const Request& req) {
    auto prepared = PrepareMessage(envelope_codec, Sv(req.body()));
    if (!prepared.ok()) {
      return Problem(http::status::bad_request,
                     prepared.status().message().rfind("id:", 0) == 0 ? "invalid_field" : "invalid_json",
                     prepared.status().message());
    }
    PreparedMessage& message = *prepared;
    // Refused here rather than accepted and then never taken by the broker.
    if (const uint32_t limit = link.max_message_bytes(); limit > 0 && message.envelope.size() > limit) {
      return Problem(http::status::payload_too_large, "too_large",
                     "the message is " + std::to_string(message.envelope.size()) +
                         " bytes in binary form; the broker takes at most " + std::to_string(limit));
    }
    auto accepted = store.Accept(message.id, message.digest, message.envelope);
    if (!accepted.ok()) {
      spdlog::error("event=state_write_failed error=\"{}\"", accepted.status().message());
      return Problem(http::status::internal_server_error, "state_unavailable",
                     "the gateway could not keep the message; it was not accepted: resend it");
    }
    if (*accepted == GatewayStore::Accepted::kConflict) {
      return Problem(http::status::conflict, "id_conflict",
                     "id: this message id was already used for a different message; use a new id");
    }
    if (*accepted == GatewayStore::Accepted::kNew) link.WakeSender();
    const std::string url = "/v1/messages/" + PercentEncode(message.id) + "/receipt";
    flatbuffers::FlatBufferBuilder reply;
    reply.Finish(CreateAcceptedDirect(reply, message.id.c_str(), url.c_str()));
    Response res = Json(http::status::accepted, wire::JsonCodec::Root::kGatewayAccepted, reply);
    res.set(http::field::location, url);
    return res;
  }

  Response GetReceipt(const std::string& id) {
    auto entry = store.Lookup(id);
    if (!entry.ok()) {
      spdlog::error("event=state_read_failed error=\"{}\"", entry.status().message());
      return Problem(http::status::internal_server_error, "state_unavailable",
                     "the gateway could not read its state; try again");
    }
    if (!entry->has_value()) {
      return Problem(http::status::not_found, "unknown_message",
                     "no message with this id was sent through this gateway (or its receipt was purged)");
    }
    if ((*entry)->receipt.empty()) {
      flatbuffers::FlatBufferBuilder fbb;
      fbb.Finish(CreatePendingDirect(fbb, id.c_str(), "pending"));
      Response res = Json(http::status::accepted, wire::JsonCodec::Root::kGatewayPending, fbb);
      res.set(http::field::retry_after, "1");
      return res;
    }
    const wire::Receipt* receipt = wire::VerifyReceipt((*entry)->receipt);
    if (receipt == nullptr) {
      return Problem(http::status::internal_server_error, "state_damaged", "the stored receipt is damaged");
    }
    // The broker's receipt, with each recipient's later news (delivered,
    // expired) folded in: one Receipt that says where things stand now.
    std::unique_ptr<wire::ReceiptT> merged(receipt->UnPack());
    for (const auto& bytes : (*entry)->notices) {
      const wire::Receipt* notice = wire::VerifyReceipt(bytes);
      if (notice == nullptr || notice->recipients() == nullptr) continue;
      for (const auto* news : *notice->recipients()) {
        if (news->recipient() == nullptr) continue;
        for (auto& r : merged->recipients) {
          if (r->recipient != news->recipient()->string_view()) continue;
          r->code = news->code();
          if (news->reason() && news->reason()->size() > 0) r->reason = news->reason()->str();
        }
      }
    }
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishReceiptBuffer(fbb, wire::Receipt::Pack(fbb, merged.get()));
    return Json(http::status::ok, wire::JsonCodec::Root::kReceipt, fbb);
  }

  asio::awaitable<Response> GetInbox(std::string_view query) {
    if (config.webhook) co_return WebhookMode();
    uint64_t wait = 0, max = config.inbox_max_batch;
    if (auto v = QueryValue(query, "wait")) {
      auto n = ParseUint(*v);
      if (!n || *n > config.inbox_max_wait_seconds) {
        co_return Problem(http::status::bad_request, "invalid_parameter",
                          "wait: whole seconds from 0 to " + std::to_string(config.inbox_max_wait_seconds));
      }
      wait = *n;
    }
    if (auto v = QueryValue(query, "max")) {
      auto n = ParseUint(*v);
      if (!n || *n == 0 || *n > config.inbox_max_batch) {
        co_return Problem(http::status::bad_request, "invalid_parameter",
                          "max: from 1 to " + std::to_string(config.inbox_max_batch));
      }
      max = *n;
    }
    const auto deadline = Clock::now() + std::chrono::seconds(wait);
    const auto lease = std::chrono::seconds(config.inbox_lease_seconds);
    std::vector<Inbox::Item> items = inbox.Lease(max, lease);
    while (items.empty() && Clock::now() < deadline) {
      // Sleep until the deadline or a delivery (NotifyDelivery cancels).
      asio::steady_timer timer(*io, deadline);
      auto it = waiters.insert(waiters.end(), &timer);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      waiters.erase(it);
      items = inbox.Lease(max, lease);
    }
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<flatbuffers::Offset<wire::Envelope>> messages;
    for (const auto& item : items) {
      // A peer may send text that is not UTF-8 (the binary protocol allows
      // it); such a message cannot be JSON. It stays unacked with the broker
      // and is logged by id, instead of spoiling every page it lands on.
      if (!codecs.at(wire::JsonCodec::Root::kEnvelope)->ToJson(item.envelope, false).ok()) {
        spdlog::error("event=message_unprintable message_id={} reason=not_utf8", LogValue(item.id));
        continue;
      }
      std::unique_ptr<wire::EnvelopeT> copy(wire::GetEnvelope(item.envelope.data())->UnPack());
      messages.push_back(wire::Envelope::Pack(fbb, copy.get()));
    }
    fbb.Finish(CreateInboxPageDirect(fbb, &messages));
    co_return Json(http::status::ok, wire::JsonCodec::Root::kGatewayInboxPage, fbb);
  }

  // A received message is named by (sender, id); `sender` is empty on the
  // older path that names the id alone, served while the id is unambiguous.
  Response PostAck(std::string sender, const std::string& id) {
    if (config.webhook) return WebhookMode();
    using Removed = Inbox::Removed;
    const Removed removed = !sender.empty() ? (inbox.Remove(sender, id) ? Removed::kRemoved : Removed::kNotHeld)
                                            : inbox.RemoveById(id, &sender);
    if (removed == Removed::kAmbiguous) {
      return Problem(http::status::conflict, "ambiguous_id",
                     "messages from several agencies with this id are waiting; ack each with POST "
                     "/v1/inbox/{sender}/{id}/ack (sender is the message's `from`)");
    }
    if (removed == Removed::kNotHeld) {
      return Problem(http::status::not_found, "not_in_inbox",
                     "no unacked message with this sender and id is waiting (already acked, or never "
                     "delivered)");
    }
    link.Ack(sender, id);
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(CreateAckedDirect(fbb, id.c_str(), sender.c_str()));
    return Json(http::status::ok, wire::JsonCodec::Root::kGatewayAcked, fbb);
  }

  Response GetInboxMessage(const std::string& sender, const std::string& id) {
    if (config.webhook) return WebhookMode();
    auto bytes = inbox.Get(sender, id);
    if (!bytes) {
      return Problem(http::status::not_found, "not_in_inbox",
                     "no unacked message with this sender and id is waiting (already acked, or never "
                     "delivered)");
    }
    std::unique_ptr<wire::EnvelopeT> copy(wire::GetEnvelope(bytes->data())->UnPack());
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, copy.get()));
    return Json(http::status::ok, wire::JsonCodec::Root::kEnvelope, fbb);
  }

  Response WebhookMode() {
    return Problem(http::status::conflict, "webhook_mode",
                   "this gateway delivers to its webhook; the inbox is not served");
  }

  Response Health() {
    auto pending = store.PendingCount();
    auto dead = store.DeadLetters();
    const bool state_ok = pending.ok() && dead.ok();
    const bool refused = link.key_refused();
    flatbuffers::FlatBufferBuilder fbb;
    const std::string agency = link.agency();
    fbb.Finish(CreateHealthDirect(fbb, refused ? "key_refused" : state_ok ? "ok" : "state_unavailable",
                                  agency.c_str(), link.connected() ? "connected" : "connecting",
                                  pending.ok() ? *pending : 0, inbox.size(), dead.ok() ? dead->size() : 0));
    return Json(refused || !state_ok ? http::status::service_unavailable : http::status::ok,
                wire::JsonCodec::Root::kGatewayHealth, fbb);
  }

  // Routes one request; `route` is set to its template for the log.
  asio::awaitable<Response> Handle(const Request& req, std::string* route) {
    const Route r = Classify(Sv(req.target()));
    *route = r.name;
    const auto method = req.method();
    auto allow = [&](const char* methods) {
      Response res = Problem(http::status::method_not_allowed, "method_not_allowed",
                             std::string("use ") + methods);
      res.set(http::field::allow, methods);
      return res;
    };
    if (r.kind == Route::Kind::kHealth) co_return method == http::verb::get ? Health() : allow("GET");
    if (r.kind == Route::Kind::kNotFound) {
      co_return Problem(http::status::not_found, "not_found", "no such resource; see docs/openapi.yaml");
    }
    // Everything below needs the agency's credential.
    if (!Authorized(req)) {
      Response res = Problem(http::status::unauthorized, "unauthorized",
                             "Authorization: send 'Bearer <token>' with the agency's gateway token");
      res.set(http::field::www_authenticate, "Bearer realm=\"liaison-gateway\"");
      co_return res;
    }
    if (r.kind == Route::Kind::kMessages) co_return method == http::verb::post ? PostMessage(req) : allow("POST");
    if (r.kind == Route::Kind::kInbox) {
      if (method != http::verb::get) co_return allow("GET");
      co_return co_await GetInbox(r.query);
    }
    if (!r.id_ok) {
      co_return Problem(http::status::bad_request, "invalid_id",
                        "the sender and message id in the path must each match " +
                            std::string(wire::kMessageIdFormat));
    }
    if (r.kind == Route::Kind::kReceipt) co_return method == http::verb::get ? GetReceipt(r.id) : allow("GET");
    if (r.kind == Route::Kind::kInboxMessage) {
      co_return method == http::verb::get ? GetInboxMessage(r.sender, r.id) : allow("GET");
    }
    co_return method == http::verb::post ? PostAck(r.sender, r.id) : allow("POST");
  }

  // --- connections -------------------------------------------------------

  // Counts connections shed to make room, and says so at most every
  // kShedReportInterval (an attack must not fill the log).
  void NoteShed() {
    const auto now = Clock::now();
    if (now - last_shed_report < kShedReportInterval) return;
    spdlog::warn("event=http_connections_shed reason=unauthenticated total={} open={} limit={}",
                 table.shed_total(), table.open(), config.max_connections);
    last_shed_report = now;
  }

  // The agency's credential: the client certificate (checked in the
  // handshake) when there is no token, else the token in this request.
  bool Authenticates(const Request& header) const { return !token_digest.empty() && Authorized(header); }

  asio::awaitable<void> Session(tcp::socket socket) {
    std::string remote;
    boost::system::error_code ec;
    if (auto ep = socket.remote_endpoint(ec); !ec) remote = ep.address().to_string();
    beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), tls);
    auto& lowest = beast::get_lowest_layer(stream);
    const uint64_t shed_before = table.shed_total();
    const uint64_t id = table.Admit(remote, [&lowest] { lowest.close(); });
    if (table.shed_total() != shed_before) NoteShed();
    if (id == 0) {
      spdlog::warn("event=http_connection_refused reason=max_connections limit={}", config.max_connections);
      co_return;
    }
    struct Leave {
      ConnectionTable& table;
      uint64_t id;
      ~Leave() { table.Remove(id); }
    } leave{table, id};
    try {
      co_await Serve(stream, remote, id);
    } catch (const std::exception& e) {
      if (!table.shed(id)) spdlog::warn("event=http_connection_failed remote={} error=\"{}\"", remote, e.what());
    }
  }

  asio::awaitable<void> Serve(beast::ssl_stream<beast::tcp_stream>& stream, const std::string& remote, uint64_t id) {
    auto& lowest = beast::get_lowest_layer(stream);
    const auto pre_auth_deadline = Clock::now() + kPreAuthTimeout;
    boost::system::error_code ec;
    lowest.expires_at(pre_auth_deadline);
    co_await stream.async_handshake(ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!table.shed(id)) spdlog::warn("event=tls_handshake_failed remote={} error=\"{}\"", remote, ec.message());
      co_return;
    }
    if (token_digest.empty()) table.Authenticate(id);  // the verified client certificate
    beast::flat_buffer buffer;
    for (;;) {
      if (table.authenticated(id)) {
        lowest.expires_after(kIdleTimeout);
      } else {
        lowest.expires_at(pre_auth_deadline);
      }
      http::request_parser<http::string_body> parser;
      parser.header_limit(16 * 1024);
      parser.body_limit(config.max_body_bytes);
      // The header first: a client without the credential is refused
      // before the gateway reads (and buffers) its body.
      co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      std::optional<std::string> ambiguous;
      bool refused = false;
      if (!ec) {
        ambiguous = AmbiguousFraming(parser.get());
        if (Authenticates(parser.get())) table.Authenticate(id);
      }
      if (!ec && !ambiguous && !parser.is_done()) {
        if (parser.get().target() != "/healthz" && !Authorized(parser.get())) {
          refused = true;
        } else {
          lowest.expires_after(kIdleTimeout);
          co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
        }
      }
      if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof ||
          ec == asio::ssl::error::stream_truncated || ec == asio::error::operation_aborted) {
        co_return;
      }
      Response res;
      std::string route = "-";
      bool drain = false;
      const auto started = Clock::now();
      if (ambiguous) {
        route = "ambiguous-framing";
        res = Problem(http::status::bad_request, "ambiguous_framing", *ambiguous);
        res.keep_alive(false);
        drain = true;
      } else if (refused) {
        route = "unauthenticated-body";
        res = Problem(http::status::unauthorized, "unauthorized",
                      "Authorization: send 'Bearer <token>' with the agency's gateway token");
        res.set(http::field::www_authenticate, "Bearer realm=\"liaison-gateway\"");
        res.keep_alive(false);
        drain = true;
      } else if (ec == http::error::body_limit) {
        res = Problem(http::status::payload_too_large, "too_large",
                      "the body is larger than max_body_bytes (" + std::to_string(config.max_body_bytes) +
                          " bytes)");
        res.keep_alive(false);
        drain = true;
      } else if (ec) {
        res = Problem(http::status::bad_request, "bad_request", "not a valid HTTP/1.1 request: " + ec.message());
        res.keep_alive(false);
      } else {
        const Request& req = parser.get();
        res = co_await Handle(req, &route);
        res.version(req.version());
        res.keep_alive(req.keep_alive());
      }
      res.prepare_payload();
      spdlog::info("event=http_request remote={} method={} route={} status={} ms={}", remote,
                   ec ? "-" : LogValue({parser.get().method_string().data(), parser.get().method_string().size()}), route, res.result_int(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count());
      lowest.expires_after(kIdleTimeout);
      co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      if (drain) {
        co_await Drain(stream);
        co_return;
      }
      if (!res.keep_alive()) break;
    }
    lowest.expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  }

  // Reads what the client still sends of a refused body, so that closing
  // does not reset the connection before it reads the answer.
  asio::awaitable<void> Drain(beast::ssl_stream<beast::tcp_stream>& stream) {
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
    std::vector<char> scratch(64 * 1024);
    uint64_t drained = 0;
    boost::system::error_code ec;
    while (drained < 8 * config.max_body_bytes) {
      const size_t n =
          co_await stream.async_read_some(asio::buffer(scratch), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      drained += n;
    }
  }

  asio::awaitable<void> AcceptLoop() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (!acceptor->is_open()) co_return;
        // Out of descriptors (EMFILE) and the like: pause, do not spin.
        spdlog::warn("event=http_accept_failed error=\"{}\"", ec.message());
        asio::steady_timer pause(*io, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      asio::co_spawn(*io, Session(std::move(socket)), asio::detached);
    }
  }

  const GatewayConfig& config;
  GatewayStore& store;
  Inbox& inbox;
  BrokerLink& link;
  std::unique_ptr<asio::io_context> io;
  ssl::context tls;
  std::unique_ptr<tcp::acceptor> acceptor;  // destroyed before io
  std::string token_digest;
  ConnectionTable table{config.max_connections, kMaxUnauthenticatedPerAddress};  // I/O thread only
  Clock::time_point last_shed_report{};
  std::list<asio::steady_timer*> waiters;  // long polls; touched on the I/O thread only
  wire::JsonCodec envelope_codec{wire::JsonCodec::Root::kEnvelope};
  std::map<wire::JsonCodec::Root, std::unique_ptr<wire::JsonCodec>> codecs;
  std::thread thread;
  std::mutex io_mu;  // NotifyDelivery (any thread) against Stop() destroying io
};

HttpsServer::HttpsServer(const GatewayConfig& config, GatewayStore& store, Inbox& inbox, BrokerLink& link)
    : impl_(std::make_unique<Impl>(config, store, inbox, link)) {
  using Root = wire::JsonCodec::Root;
  for (Root root : {Root::kEnvelope, Root::kReceipt, Root::kGatewayAccepted, Root::kGatewayPending, Root::kGatewayInboxPage,
                    Root::kGatewayAcked, Root::kGatewayProblem, Root::kGatewayHealth}) {
    impl_->codecs.emplace(root, std::make_unique<wire::JsonCodec>(root));
  }
}

HttpsServer::~HttpsServer() { Stop(); }

Status HttpsServer::Start() {
  const GatewayConfig& c = impl_->config;
  auto& tls = impl_->tls;
  SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION);
  tls.set_options(ssl::context::default_workarounds | ssl::context::no_compression |
                  ssl::context::single_dh_use);
  if (SSL_CTX_set_cipher_list(tls.native_handle(), kTls12Ciphers) != 1 ||
      SSL_CTX_set_ciphersuites(tls.native_handle(), kTls13Suites) != 1) {
    return Status::Internal("this OpenSSL offers none of the AEAD cipher suites the gateway requires");
  }
  boost::system::error_code ec;
  tls.use_certificate_chain_file(c.certificate_file, ec);
  if (ec) return Status::InvalidArgument("tls.certificate_file " + c.certificate_file + ": " + ec.message());
  tls.use_private_key_file(c.private_key_file, ssl::context::pem, ec);
  if (ec) return Status::InvalidArgument("tls.private_key_file " + c.private_key_file + ": " + ec.message());
  if (SSL_CTX_check_private_key(tls.native_handle()) != 1) {
    return Status::InvalidArgument("tls.private_key_file " + c.private_key_file +
                                   " does not match tls.certificate_file " + c.certificate_file);
  }
  if (!c.client_ca_file.empty()) {
    tls.load_verify_file(c.client_ca_file, ec);
    if (ec) return Status::InvalidArgument("tls.client_ca_file " + c.client_ca_file + ": " + ec.message());
    tls.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    // Resumed sessions with client certificates need a session id context.
    static const unsigned char kContext[] = "liaison-gateway";
    SSL_CTX_set_session_id_context(tls.native_handle(), kContext, sizeof kContext - 1);
  }

  const auto colon = c.listen.rfind(':');
  try {
    const auto address = asio::ip::make_address(c.listen.substr(0, colon));
    const auto port = static_cast<unsigned short>(std::stoi(c.listen.substr(colon + 1)));
    tcp::endpoint endpoint(address, port);
    impl_->acceptor->open(endpoint.protocol());
    impl_->acceptor->set_option(asio::socket_base::reuse_address(true));
    impl_->acceptor->bind(endpoint);
    impl_->acceptor->listen();
    const auto bound = impl_->acceptor->local_endpoint();
    endpoint_ = bound.address().to_string() + ":" + std::to_string(bound.port());
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot listen on " + c.listen + ": " + e.what());
  }
  asio::co_spawn(*impl_->io, impl_->AcceptLoop(), asio::detached);
  impl_->thread = std::thread([this] { impl_->io->run(); });
  return Status::Ok();
}

void HttpsServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  asio::post(*impl_->io, [this] {
    boost::system::error_code ec;
    impl_->acceptor->close(ec);
  });
  impl_->io->stop();
  impl_->thread.join();
  // Destroys the suspended sessions while everything they refer to lives.
  std::lock_guard lock(impl_->io_mu);
  impl_->acceptor.reset();
  impl_->io.reset();
}

void HttpsServer::NotifyDelivery() {
  std::lock_guard lock(impl_->io_mu);
  if (!impl_->io) return;
  asio::post(*impl_->io, [this] {
    for (auto* timer : impl_->waiters) timer->cancel();
  });
}

}  // namespace liaison::gateway

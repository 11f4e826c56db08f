#include "admin/admin_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>

namespace liaison::broker {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A scraper sends one small GET at once; anything slower or bigger is not
// a scraper and must not hold the endpoint (docs/operations.md section 7).
constexpr auto kRequestTimeout = std::chrono::seconds(3);  // connect to end of request
constexpr auto kWriteTimeout = std::chrono::seconds(5);
constexpr uint32_t kMaxHeaderBytes = 8 * 1024;
constexpr uint64_t kMaxBodyBytes = 1024;
constexpr size_t kMaxConnections = 32;

http::response<http::string_body> Answer(const http::request<http::string_body>& request,
                                         const Metrics& metrics) {
  http::response<http::string_body> response;
  response.version(request.version());
  response.keep_alive(false);
  const std::string_view target(request.target().data(), request.target().size());
  std::string why;
  if (request.method() != http::verb::get) {
    response.result(http::status::method_not_allowed);
    response.body() = "only GET\n";
  } else if (target == "/metrics") {
    response.result(http::status::ok);
    response.set(http::field::content_type, "text/plain; version=0.0.4");
    response.body() = metrics.Render();
  } else if (target == "/healthz") {
    const bool healthy = metrics.Healthy();
    response.result(healthy ? http::status::ok : http::status::service_unavailable);
    response.body() = healthy ? "ok\n" : "reactor not responding\n";
  } else if (target == "/readyz") {
    const bool ready = metrics.Ready(&why);
    response.result(ready ? http::status::ok : http::status::service_unavailable);
    response.body() = (ready ? "ready\n" : "not ready: " + why + "\n") + metrics.ReadyDetails();
  } else {
    response.result(http::status::not_found);
    response.body() = "not found; try /metrics, /healthz or /readyz\n";
  }
  if (response.find(http::field::content_type) == response.end()) {
    response.set(http::field::content_type, "text/plain");
  }
  response.prepare_payload();
  return response;
}

// One connection: read one request within kRequestTimeout, answer, close.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const Metrics& metrics) : stream_(std::move(socket)), metrics_(metrics) {
    parser_.header_limit(kMaxHeaderBytes);
    parser_.body_limit(kMaxBodyBytes);
  }

  void Start() {
    stream_.expires_after(kRequestTimeout);
    http::async_read(stream_, buffer_, parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  // Still waiting for its request: the first to go when connections run out.
  bool waiting() const { return waiting_; }
  void Close() {
    beast::error_code ec;
    stream_.socket().close(ec);
  }

 private:
  void OnRead(beast::error_code ec) {
    waiting_ = false;
    if (ec == http::error::header_limit || ec == http::error::body_limit) {
      http::response<http::string_body> refused{http::status::payload_too_large, 11};
      refused.set(http::field::content_type, "text/plain");
      refused.body() = "request too large\n";
      refused.keep_alive(false);
      refused.prepare_payload();
      return Write(std::move(refused));
    }
    if (ec) return Close();  // timed out, closed or not HTTP
    Write(Answer(parser_.get(), metrics_));
  }

  void Write(http::response<http::string_body> response) {
    response_ = std::move(response);
    stream_.expires_after(kWriteTimeout);
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      self->Close();
    });
  }

  beast::tcp_stream stream_;
  const Metrics& metrics_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  http::response<http::string_body> response_;
  bool waiting_ = true;
};

}  // namespace

// Everything runs on the one admin thread: no locks.
struct AdminServer::Impl {
  explicit Impl(const Metrics& m) : metrics(m), acceptor(io) {}

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (!acceptor.is_open()) return;  // closed on Stop()
        // Out of descriptors and the like: try again shortly, do not spin.
        retry.expires_after(std::chrono::milliseconds(100));
        retry.async_wait([this](beast::error_code) { Accept(); });
        return;
      }
      if (MakeRoom()) {
        auto session = std::make_shared<Session>(std::move(socket), metrics);
        sessions.push_back(session);
        session->Start();
      }
      Accept();
    });
  }

  // True if a new connection may be served: under the cap, or after closing
  // the longest-waiting connection that has not sent its request yet.
  bool MakeRoom() {
    sessions.remove_if([](const std::weak_ptr<Session>& s) { return s.expired(); });
    if (sessions.size() < kMaxConnections) return true;
    for (auto it = sessions.begin(); it != sessions.end(); ++it) {
      auto session = it->lock();
      if (session && session->waiting()) {
        if (++shed % 100 == 1) {
          spdlog::warn("event=admin_connection_shed reason=max_connections limit={} shed_total={}",
                       kMaxConnections, shed);
        }
        session->Close();
        sessions.erase(it);
        return true;
      }
    }
    return false;
  }

  const Metrics& metrics;
  asio::io_context io;
  tcp::acceptor acceptor;
  asio::steady_timer retry{io};
  std::list<std::weak_ptr<Session>> sessions;  // oldest first
  uint64_t shed = 0;
  std::thread thread;
};

AdminServer::AdminServer(const Metrics& metrics) : impl_(std::make_unique<Impl>(metrics)) {}

AdminServer::~AdminServer() { Stop(); }

Status AdminServer::Start(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("admin.listen must be HOST:PORT, got " + listen);
  try {
    const auto address = asio::ip::make_address(listen.substr(0, colon));
    const auto port = static_cast<unsigned short>(std::stoi(listen.substr(colon + 1)));
    tcp::endpoint endpoint(address, port);
    impl_->acceptor.open(endpoint.protocol());
    impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
    impl_->acceptor.bind(endpoint);
    impl_->acceptor.listen();
    const auto bound = impl_->acceptor.local_endpoint();
    endpoint_ = bound.address().to_string() + ":" + std::to_string(bound.port());
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot listen for the admin endpoint on " + listen + ": " + e.what());
  }
  impl_->Accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  return Status::Ok();
}

void AdminServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->retry.cancel();
    for (auto& s : impl_->sessions) {
      if (auto session = s.lock()) session->Close();
    }
  });
  impl_->io.stop();
  impl_->thread.join();
}

}  // namespace liaison::broker

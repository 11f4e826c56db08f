#include "admin/admin_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace liaison::broker {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

}  // namespace

struct AdminServer::Impl {
  explicit Impl(const Metrics& m) : metrics(m), acceptor(io) {}

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // closed on Stop()
      Serve(std::move(socket));
      Accept();
    });
  }

  // Admin requests are tiny and rare: serve each connection in turn.
  void Serve(tcp::socket socket) {
    beast::error_code ec;
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    socket.set_option(asio::socket_base::linger(false, 0), ec);
    http::read(socket, buffer, request, ec);
    if (ec) return;
    http::response<http::string_body> response;
    response.version(request.version());
    response.keep_alive(false);
    const std::string target(request.target());
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
      response.body() = ready ? "ready\n" : "not ready: " + why + "\n";
    } else {
      response.result(http::status::not_found);
      response.body() = "not found; try /metrics, /healthz or /readyz\n";
    }
    if (response.find(http::field::content_type) == response.end()) {
      response.set(http::field::content_type, "text/plain");
    }
    response.prepare_payload();
    http::write(socket, response, ec);
    socket.shutdown(tcp::socket::shutdown_both, ec);
  }

  const Metrics& metrics;
  asio::io_context io;
  tcp::acceptor acceptor;
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
  });
  impl_->io.stop();
  impl_->thread.join();
}

}  // namespace liaison::broker

// Attacks on the gateway's HTTPS transport (issue 15, points 4 and 10),
// against the real liaison-gateway and broker on loopback:
//  - idle and slow-header connections must not lock out the agency's system
//    (docs/security.md: unauthenticated connections are shed first);
//  - request framing that two parsers could read differently is refused;
//  - TLS offers AEAD cipher suites only.
// The client here speaks raw bytes over TLS (Asio + OpenSSL), because curl
// would not send the malformed requests and its process start would blur
// the 1 s the well-behaved client is allowed.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <utility>  // before asio: its awaitable.hpp uses std::exchange

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <thread>

#include "integration/gateway_process.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

tcp::endpoint Endpoint(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  return {asio::ip::make_address(host_port.substr(0, colon)),
          static_cast<unsigned short>(std::stoi(host_port.substr(colon + 1)))};
}

struct Exchange {
  bool handshake = false;  // TLS was established
  std::string received;    // everything the gateway sent until it closed
  std::string error;
};

struct TlsOptions {
  std::string tls12_ciphers;  // set: TLS 1.2 only, offering just these
  std::string ca_file;        // verify the gateway's certificate against it
};

// One connection: TLS handshake, `request` sent as is, then everything the
// gateway answers until it closes the connection or `timeout` passes.
Exchange Send(const std::string& endpoint, const std::string& request, const TlsOptions& options,
              std::chrono::milliseconds timeout = 5000ms) {
  ssl::context tls(ssl::context::tls_client);  // outlives io, whose end destroys the streams
  if (!options.tls12_ciphers.empty()) {
    SSL_CTX_set_max_proto_version(tls.native_handle(), TLS1_2_VERSION);
    EXPECT_EQ(SSL_CTX_set_cipher_list(tls.native_handle(), options.tls12_ciphers.c_str()), 1)
        << "this OpenSSL lacks " << options.tls12_ciphers;
  }
  tls.load_verify_file(options.ca_file);
  tls.set_verify_mode(ssl::verify_peer);
  asio::io_context io;
  Exchange out;
  auto run = [&]() -> asio::awaitable<void> {
    ssl::stream<tcp::socket> stream(io, tls);
    co_await stream.next_layer().async_connect(Endpoint(endpoint), asio::use_awaitable);
    co_await stream.async_handshake(ssl::stream_base::client, asio::use_awaitable);
    out.handshake = true;
    co_await asio::async_write(stream, asio::buffer(request), asio::use_awaitable);
    char buffer[4096];
    for (;;) {
      boost::system::error_code ec;
      const size_t n = co_await stream.async_read_some(asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
      out.received.append(buffer, n);
      if (ec) break;
    }
  };
  asio::co_spawn(io, run(), [&](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      out.error = ex.what();
    }
  });
  io.run_for(timeout);
  return out;
}

// The status codes of the HTTP responses in `received` (status lines begin
// a line; a body may quote "HTTP/1.1" too), in order.
std::vector<int> Statuses(const std::string& received) {
  std::vector<int> out;
  for (size_t at = received.find("HTTP/1.1 "); at != std::string::npos; at = received.find("HTTP/1.1 ", at + 1)) {
    if (at == 0 || received[at - 1] == '\n') out.push_back(std::atoi(received.c_str() + at + 9));
  }
  return out;
}

// Holds idle TCP connections and TLS connections that dribble a request
// header one byte at a time, from several loopback source addresses
// (127.0.0.2 up), each reopened 200 ms after the gateway closes it: the
// pressure stays on for as long as this lives.
class ConnectionFlood {
 public:
  ConnectionFlood(const std::string& endpoint, int idle, int slow_header, int addresses)
      : target_(Endpoint(endpoint)) {
    tls_.set_verify_mode(ssl::verify_none);
    for (int i = 0; i < idle + slow_header; ++i) {
      const auto source = asio::ip::make_address_v4("127.0.0." + std::to_string(2 + i % addresses));
      if (i < slow_header) {
        asio::co_spawn(io_, SlowHeader(source), asio::detached);
      } else {
        asio::co_spawn(io_, Idle(source), asio::detached);
      }
    }
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ConnectionFlood() {
    io_.stop();
    thread_.join();
  }
  int connects() const { return connects_.load(); }
  int slow_handshakes() const { return slow_handshakes_.load(); }

 private:
  asio::awaitable<bool> Connect(tcp::socket& socket, const asio::ip::address_v4& source) {
    boost::system::error_code ec;
    socket.open(tcp::v4(), ec);
    if (!ec) socket.bind(tcp::endpoint(source, 0), ec);
    if (!ec) co_await socket.async_connect(target_, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) ++connects_;
    co_return !ec;
  }
  asio::awaitable<void> Pause(std::chrono::milliseconds d) {
    asio::steady_timer timer(io_, d);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  asio::awaitable<void> Idle(asio::ip::address_v4 source) {
    for (;;) {
      tcp::socket socket(io_);
      if (co_await Connect(socket, source)) {
        char byte;
        boost::system::error_code ec;  // never sends: waits for the gateway to close
        co_await socket.async_read_some(asio::buffer(&byte, 1), asio::redirect_error(asio::use_awaitable, ec));
      }
      co_await Pause(200ms);
    }
  }
  asio::awaitable<void> SlowHeader(asio::ip::address_v4 source) {
    for (;;) {
      ssl::stream<tcp::socket> stream(io_, tls_);
      boost::system::error_code ec;
      if (co_await Connect(stream.next_layer(), source)) {
        co_await stream.async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
        if (!ec) {
          ++slow_handshakes_;
          const std::string start = "POST /v1/messages HTTP/1.1\r\nHost: gateway\r\nX-Slow: ";
          co_await asio::async_write(stream, asio::buffer(start), asio::redirect_error(asio::use_awaitable, ec));
          while (!ec) {
            co_await Pause(300ms);
            co_await asio::async_write(stream, asio::buffer("a", 1), asio::redirect_error(asio::use_awaitable, ec));
          }
        }
      }
      co_await Pause(200ms);
    }
  }

  tcp::endpoint target_;
  ssl::context tls_{ssl::context::tls_client};  // outlives io_, whose end destroys the streams
  asio::io_context io_;
  std::atomic<int> connects_{0};
  std::atomic<int> slow_handshakes_{0};
  std::thread thread_;
};

class GatewayTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_});
    ASSERT_TRUE(broker_->Start().ok());
    gateway_ = std::make_unique<GatewayProcess>(dir_, *broker_, a_);
    Status st = gateway_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_TRUE(gateway_->WaitForLog("event=broker_welcomed"));
  }
  TlsOptions Verified() const { return TlsOptions{"", gateway_->pki().ca}; }
  std::string Auth() const { return "Authorization: Bearer " + gateway_->token() + "\r\n"; }
  std::string Message(const std::string& notes) const {
    return "{\"case_ref\": \"CASE-ADV-4\", \"to\": [{\"agency\": \"b\"}], \"payload_type\": \"CaseUpdate\", "
           "\"payload\": {\"notes\": \"" + notes + "\"}}";
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<GatewayProcess> gateway_;
};

// Issue 15 point 4: 64 (the default max_connections) idle or slow-header
// connections used to lock the agency's system out.
TEST_F(GatewayTransportTest, IdleAndSlowHeaderFloodsDoNotLockOutTheAgencysSystem) {
  ConnectionFlood flood(gateway_->endpoint(), /*idle=*/80, /*slow_header=*/40, /*addresses=*/6);
  // Let the flood fill the gateway's table (and keep it full).
  const auto filled = Clock::now() + 10s;
  while ((flood.connects() < 120 || flood.slow_handshakes() < 40) && Clock::now() < filled) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_GE(flood.connects(), 120) << "the flood did not get going";
  ASSERT_GE(flood.slow_handshakes(), 40) << "the slow-header attack did not get going";
  std::this_thread::sleep_for(500ms);

  int64_t slowest_ms = 0;
  for (int i = 0; i < 10; ++i) {
    const bool post = i % 2 == 0;
    const std::string body = Message("served-under-flood");
    const std::string request =
        post ? "POST /v1/messages HTTP/1.1\r\nHost: gateway\r\n" + Auth() +
                   "Content-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body
             : "GET /v1/inbox?wait=0 HTTP/1.1\r\nHost: gateway\r\n" + Auth() + "Connection: close\r\n\r\n";
    const auto started = Clock::now();
    const Exchange reply = Send(gateway_->endpoint(), request, Verified(), 3000ms);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    ASSERT_TRUE(reply.handshake) << "request " << i << ": " << reply.error;
    const std::vector<int> statuses = Statuses(reply.received);
    ASSERT_EQ(statuses, std::vector<int>{post ? 202 : 200}) << "request " << i << ": " << reply.received;
    EXPECT_LT(took.count(), 1000) << "request " << i << " took " << took.count() << " ms under the flood";
    slowest_ms = std::max<int64_t>(slowest_ms, took.count());
  }
  std::printf("[ measured ] slowest of 10 authenticated requests under the flood: %lld ms (%d attack connects)\n",
              static_cast<long long>(slowest_ms), flood.connects());
  EXPECT_TRUE(gateway_->WaitForLog("event=http_connections_shed reason=unauthenticated"));
}

// Issue 15 point 10: framing that splits or hides a request is refused.
TEST_F(GatewayTransportTest, AmbiguousRequestFramingIsRefusedWith400) {
  const std::string body = Message("framing");
  const std::string chunked = [&] {
    char size[16];
    std::snprintf(size, sizeof size, "%zx", body.size());
    return std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n";
  }();
  const std::string head = "POST /v1/messages HTTP/1.1\r\nHost: gateway\r\n" + Auth() +
                           "Content-Type: application/json\r\n";
  // A second request hidden after the end of the first one's chunks: a
  // gateway that read "chunked, identity" as chunked answers it too.
  const std::string smuggled = "GET /v1/inbox?wait=0 HTTP/1.1\r\nHost: gateway\r\n" + Auth() + "\r\n";
  const struct {
    const char* what;
    std::string request;
  } attacks[] = {
      {"xchunked with Content-Length",
       head + "Transfer-Encoding: xchunked\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body},
      {"chunked, identity", head + "Transfer-Encoding: chunked, identity\r\n\r\n" + chunked + smuggled},
      {"chunked with Content-Length",
       head + "Transfer-Encoding: chunked\r\nContent-Length: " + std::to_string(chunked.size()) + "\r\n\r\n" +
           chunked},
      {"two Transfer-Encoding fields",
       head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked},
      {"two Content-Length fields",
       head + "Content-Length: " + std::to_string(body.size()) + "\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body},
  };
  for (const auto& attack : attacks) {
    const Exchange reply = Send(gateway_->endpoint(), attack.request, Verified());
    ASSERT_TRUE(reply.handshake) << attack.what << ": " << reply.error;
    EXPECT_EQ(Statuses(reply.received), std::vector<int>{400}) << attack.what << ":\n" << reply.received;
  }
  // Plain chunked framing is fine, and the gateway still serves.
  const Exchange fine = Send(gateway_->endpoint(), head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
                             Verified());
  EXPECT_EQ(Statuses(fine.received), std::vector<int>{202}) << fine.received;
  EXPECT_EQ(gateway_->Call("POST", "/v1/messages", Message("after")).status, 202);
}

// Issue 15 point 10: no CBC (or other non-AEAD) suite is negotiated.
TEST_F(GatewayTransportTest, TlsOffersAeadCipherSuitesOnly) {
  const std::string health = "GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n";
  for (const char* cbc : {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
                          "ECDHE-ECDSA-AES256-SHA384"}) {
    const Exchange reply = Send(gateway_->endpoint(), health, TlsOptions{cbc, gateway_->pki().ca});
    EXPECT_FALSE(reply.handshake) << cbc << " was negotiated";
    EXPECT_TRUE(reply.received.empty()) << cbc;
  }
  for (const char* aead : {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                           "ECDHE-ECDSA-CHACHA20-POLY1305"}) {
    const Exchange reply = Send(gateway_->endpoint(), health, TlsOptions{aead, gateway_->pki().ca});
    EXPECT_TRUE(reply.handshake) << aead << ": " << reply.error;
    EXPECT_EQ(Statuses(reply.received), std::vector<int>{200}) << aead;
  }
  const Exchange tls13 = Send(gateway_->endpoint(), health, Verified());  // TLS 1.3, default suites
  EXPECT_EQ(Statuses(tls13.received), std::vector<int>{200}) << tls13.error;
}

}  // namespace
}  // namespace liaison::testing

// Attacks on webhook delivery (issue 15, point 7), against the real
// liaison-gateway and broker and a real TLS webhook receiver on loopback:
//  - a receiver that answers 200 and closes without TLS close_notify has
//    the message: it is acked once and never posted again;
//  - a receiver that keeps failing gets max_attempts posts with backoff,
//    then the message is a visible dead letter that is not acked, so the
//    broker keeps it and a restarted gateway delivers it.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <mutex>
#include <thread>

#include "integration/gateway_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

// The agency system's webhook endpoint over real TLS. Each request gets
// `answer` (raw HTTP bytes), after which the TCP connection is closed
// without a TLS close_notify, as a crashing or careless server does.
class AbruptReceiver {
 public:
  explicit AbruptReceiver(const TestPki& pki) : acceptor_(io_) {
    tls_.use_certificate_chain_file(pki.server_cert);
    tls_.use_private_key_file(pki.server_key, asio::ssl::context::pem);
    asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(endpoint.protocol());
    acceptor_.bind(endpoint);
    acceptor_.listen();
    acceptor_.non_blocking(true);
    thread_ = std::thread([this] { Loop(); });
  }
  ~AbruptReceiver() {
    stop_ = true;
    thread_.join();
  }
  std::string url() const {
    return "https://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/hook";
  }
  void set_answer(std::string answer) {
    std::lock_guard lock(mu_);
    answer_ = std::move(answer);
  }
  std::vector<std::string> ids() {
    std::lock_guard lock(mu_);
    return ids_;
  }

 private:
  void Loop() {
    while (!stop_) {
      asio::ip::tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      socket.non_blocking(false);
      // Bounded: a stuck gateway cannot hang the receiver.
      const timeval limit{3, 0};
      ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      asio::ssl::stream<asio::ip::tcp::socket> stream(std::move(socket), tls_);
      stream.handshake(asio::ssl::stream_base::server, ec);
      if (ec) continue;
      boost::beast::flat_buffer buffer;
      http::request<http::string_body> request;
      http::read(stream, buffer, request, ec);
      if (ec) continue;
      std::string answer;
      {
        std::lock_guard lock(mu_);
        ids_.push_back(std::string(request["Liaison-Message-Id"]));
        answer = answer_;
      }
      asio::write(stream, asio::buffer(answer), ec);
      stream.next_layer().close(ec);  // no close_notify
    }
  }

  std::atomic<bool> stop_{false};
  asio::io_context io_;
  asio::ssl::context tls_{asio::ssl::context::tls_server};
  asio::ip::tcp::acceptor acceptor_;
  std::mutex mu_;
  // A complete response whose body runs to the end of the stream, as
  // HTTP/1.1 allows without Content-Length: only close_notify would tell
  // the body's end from a cut.
  std::string answer_ = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nthanks\n";
  std::vector<std::string> ids_;
  std::thread thread_;
};

std::vector<uint8_t> Update(const std::string& id, const std::string& notes) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-HOOK-7";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = "a";
  wire::CaseUpdateT u;
  u.notes = notes;
  e.payload.Set(u);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

class GatewayWebhookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_});
    ASSERT_TRUE(broker_->Start().ok());
    gateway_ = std::make_unique<GatewayProcess>(dir_, *broker_, a_);
    hook_ = std::make_unique<AbruptReceiver>(gateway_->pki());
  }
  Status StartGateway(const std::string& webhook_extra) {
    gateway_->set_extra_config("webhook:\n  url: " + hook_->url() + "\n  ca_file: tls/ca.pem\n  timeout_ms: 3000\n" +
                               webhook_extra);
    return gateway_->Start();
  }
  std::unique_ptr<Agent> Connect(wire::Role role) {
    auto agent = Agent::Connect(broker_->AgentFor(b_, role));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    if (role == wire::Role::receiver && !(*agent)->WaitReady(5000ms).ok()) throw std::runtime_error("not welcomed");
    return std::move(*agent);
  }
  // Waits (bounded) for b's notice that `id` was delivered (acked by a).
  bool WaitForDelivered(Agent& notices, const std::string& id, std::chrono::milliseconds limit) {
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
      (void)notices.Receive(100ms);
      while (auto notice = notices.TakeNotice()) {
        if ((*notice)->message_id()->str() == id &&
            (*notice)->recipients()->Get(0)->code() == wire::Code::delivered) {
          return true;
        }
      }
    }
    return false;
  }
  size_t CountOf(const std::string& id) {
    size_t n = 0;
    for (const auto& seen : hook_->ids()) n += seen == id;
    return n;
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<GatewayProcess> gateway_;
  std::unique_ptr<AbruptReceiver> hook_;
};

TEST_F(GatewayWebhookTest, A200ClosedWithoutCloseNotifyIsOneDelivery) {
  ASSERT_TRUE(StartGateway("  retry_initial_ms: 100\n").ok());
  auto sender = Connect(wire::Role::sender);
  auto notices = Connect(wire::Role::receiver);
  ASSERT_TRUE(sender->Send(Update("abrupt-1", "hook")).ok());

  EXPECT_TRUE(WaitForDelivered(*notices, "abrupt-1", 10s)) << gateway_->log();
  EXPECT_TRUE(gateway_->WaitForLog("event=webhook_delivered message_id=abrupt-1 status=200 attempts=1"))
      << gateway_->log();
  // Retries would come after 100, 200, 400, 800 ms: none within 2 s.
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(CountOf("abrupt-1"), 1u) << "posted again after a complete 200:\n" << gateway_->log();
}

TEST_F(GatewayWebhookTest, RetriesAreBoundedThenADeadLetterStaysWithTheBrokerUntilARestart) {
  hook_->set_answer("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n");
  ASSERT_TRUE(StartGateway("  retry_initial_ms: 50\n  retry_max_ms: 400\n  max_attempts: 4\n").ok());
  auto sender = Connect(wire::Role::sender);
  auto notices = Connect(wire::Role::receiver);
  ASSERT_TRUE(sender->Send(Update("doomed-1", "Marker-Dead-Letter-4471")).ok());

  // Four attempts with backoff (50, 100, 200 ms apart), then a dead letter.
  ASSERT_TRUE(gateway_->WaitForLog("event=webhook_dead_letter message_id=doomed-1 from=b attempts=4 last_status=503",
                                   10000))
      << gateway_->log();
  EXPECT_NE(gateway_->log().find("event=webhook_failed message_id=doomed-1 attempt=3 status=503"), std::string::npos)
      << gateway_->log();
  EXPECT_NE(gateway_->log().find("retry_in_ms=200"), std::string::npos) << "no backoff: " << gateway_->log();
  HttpReply health = gateway_->Call("GET", "/healthz", "", /*credentials=*/false);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(JsonField(health.body, "webhook_dead_letters"), "1") << health.body;
  // Not posted again, and not acked: b hears nothing "delivered".
  EXPECT_FALSE(WaitForDelivered(*notices, "doomed-1", 1500ms));
  EXPECT_EQ(CountOf("doomed-1"), 4u);
  EXPECT_EQ(gateway_->log().find("Marker-Dead-Letter-4471"), std::string::npos) << "a value reached the log";

  // The receiver is fixed and the gateway restarted: the broker, which kept
  // the message, delivers it again; it is posted, acked, and no longer dead.
  hook_->set_answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  ASSERT_EQ(gateway_->Stop(), 0);
  ASSERT_TRUE(gateway_->Start().ok());
  EXPECT_TRUE(WaitForDelivered(*notices, "doomed-1", 10s)) << gateway_->log();
  EXPECT_EQ(CountOf("doomed-1"), 5u);
  health = gateway_->Call("GET", "/healthz", "", /*credentials=*/false);
  EXPECT_EQ(JsonField(health.body, "webhook_dead_letters"), "") << health.body;  // 0: left out
}

}  // namespace
}  // namespace liaison::testing

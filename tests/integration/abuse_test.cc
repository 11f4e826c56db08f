// Abuse resistance through the real broker: a flood from one agency is
// answered `busy` cheaply and does not hold up the others; half-open TCP
// connections and connection churn do not stop it serving.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using wire::Code;

std::vector<uint8_t> Update(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-ABUSE";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::CaseUpdateT u;
  u.notes = std::string(512, 'n');
  e.payload.Set(u);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

class AbuseTest : public ::testing::Test {
 protected:
  void Start(const std::string& extra) {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{flooder_, good_, recipient_}, extra);
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  std::unique_ptr<Agent> Connect(const TestAgency& who) {
    auto agent = Agent::Connect(broker_->AgentFor(who));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    return std::move(*agent);
  }
  // Sends `n` messages one after the other from `good_`; returns each
  // round trip in ms, failing the test on any receipt but `stored`.
  std::vector<double> SendGood(Agent& agent, int n, const std::string& prefix) {
    std::vector<double> ms;
    for (int i = 0; i < n; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto receipt = agent.Send(Update(prefix + std::to_string(i), "r"));
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      EXPECT_TRUE(receipt.ok()) << receipt.status().ToString();
      if (!receipt.ok()) continue;
      EXPECT_EQ((*receipt)->code(), Code::ok) << (*receipt)->detail()->str();
      if ((*receipt)->recipients() && (*receipt)->recipients()->size() == 1) {
        EXPECT_EQ((*receipt)->recipients()->Get(0)->code(), Code::stored);
      }
    }
    return ms;
  }
  static double P99(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, v.size() * 99 / 100)];
  }

  TempDir dir_;
  TestAgency flooder_ = MakeAgency("flooder", "health-service", "mombasa");
  TestAgency good_ = MakeAgency("good", "exit-programme", "mombasa");
  TestAgency recipient_ = MakeAgency("r", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(AbuseTest, AFloodFromOneAgencyIsAnsweredBusyAndTheOthersAreServed) {
  Start("limits:\n  rate_per_agency: 300\n  burst_per_agency: 300\n  max_in_flight_per_agency: 32\n");
  auto good = Connect(good_);
  const std::vector<double> quiet = SendGood(*good, 50, "quiet-");

  // Four connections of one agency send without waiting for receipts, each
  // ~5,000 messages a second, over 15 times the agency's limit together.
  // (Not as fast as the sockets take it: under ASan, the sending test
  // process itself then died in a libzmq 4.3.4 assertion, !_io_error in
  // stream_engine_base.cpp; noted, not investigated further.)
  std::atomic<bool> stop{false};
  std::atomic<int> flooded{0};
  std::vector<std::thread> flood;
  for (int t = 0; t < 4; ++t) {
    flood.emplace_back([&, t] {
      auto agent = Connect(flooder_);
      for (int i = 0; !stop && i < 20000; ++i) {
        if (agent->SendFrames(wire::kSend, Update("f" + std::to_string(t) + "-" + std::to_string(i), "r")).ok()) {
          ++flooded;
        }
        std::this_thread::sleep_for(200us);
      }
    });
  }
  std::this_thread::sleep_for(300ms);
  const std::vector<double> loud = SendGood(*good, 100, "loud-");
  stop = true;
  for (auto& t : flood) t.join();

  // The flood was refused as busy, cheaply, and said so in the log.
  EXPECT_TRUE(broker_->WaitForLog("event=agency_over_limit agency=flooder"));
  EXPECT_EQ(broker_->log().find("event=agency_over_limit agency=good"), std::string::npos);
  // Figures for the record (the bound is a liveness bound, not a benchmark).
  std::printf("flooded %d messages; good agency p99 quiet %.2f ms, during the flood %.2f ms\n",
              flooded.load(), P99(quiet), P99(loud));
  EXPECT_LT(P99(loud), 2000.0);
}

TEST_F(AbuseTest, HalfOpenConnectionsAndChurnDoNotStopTheBroker) {
  Start("");
  const std::string endpoint = broker_->endpoint();
  const int port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  // 64 TCP connections that never finish a handshake; half of them send junk.
  std::vector<int> sockets;
  for (int i = 0; i < 64; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    if (i % 2 == 0) {
      const char junk[] = "\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7fGET / HTTP/1.1\r\n\r\n";
      (void)!::write(fd, junk, sizeof junk);
    }
    sockets.push_back(fd);
  }
  // Churn: 50 receivers connect, are welcomed and go away.
  for (int i = 0; i < 50; ++i) {
    auto agent = Agent::Connect(broker_->AgentFor(recipient_, wire::Role::receiver));
    ASSERT_TRUE(agent.ok());
    ASSERT_TRUE((*agent)->WaitReady(5000ms).ok()) << "connection " << i;
  }
  // Meanwhile, and after, everyone else is served.
  auto good = Connect(good_);
  SendGood(*good, 20, "after-");
  for (int fd : sockets) ::close(fd);
  auto receiver = Agent::Connect(broker_->AgentFor(recipient_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  int received = 0;
  while (received < 20) {
    auto m = (*receiver)->Receive(5000ms);
    ASSERT_TRUE(m.ok() && m->has_value()) << "received " << received;
    ASSERT_TRUE((*receiver)->Ack((**m)->id()->string_view()).ok());
    ++received;
  }
  EXPECT_TRUE(broker_->running());
}

}  // namespace
}  // namespace liaison::testing

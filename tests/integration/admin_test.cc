// The operator's HTTP endpoint, scraped over real HTTP from the running broker.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <regex>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
namespace http = boost::beast::http;

// GET http://endpoint/target; returns (status, body).
std::pair<int, std::string> Get(const std::string& endpoint, const std::string& target) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  const auto colon = endpoint.rfind(':');
  socket.connect({boost::asio::ip::make_address(endpoint.substr(0, colon)),
                  static_cast<unsigned short>(std::stoi(endpoint.substr(colon + 1)))});
  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, endpoint);
  http::write(socket, request);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  return {static_cast<int>(response.result_int()), response.body()};
}

TEST(AdminTest, MetricsHealthAndReadinessOverHttp) {
  TempDir dir;
  TestAgency a = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b = MakeAgency("b", "youth-welfare", "mombasa");
  TestAgency c = MakeAgency("c", "security-agency", "mombasa");
  c.rules = "accept: []\n";
  BrokerProcess broker(dir, {a, b, c});
  ASSERT_TRUE(broker.Start().ok());
  ASSERT_TRUE(broker.WaitForLog("event=admin_listening endpoint="));
  std::smatch match;
  const std::string log = broker.log();
  ASSERT_TRUE(std::regex_search(log, match, std::regex("event=admin_listening endpoint=(\\S+)")));
  const std::string admin = match[1];

  auto sender = Agent::Connect(broker.AgentFor(a));
  for (const std::string to : {"b", "c"}) {
    wire::EnvelopeT e;
    e.id = "m-" + to;
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->agency = to;
    e.payload.Set(wire::CaseClosureT());
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    ASSERT_TRUE((*sender)->Send({fbb.GetBufferPointer(), fbb.GetSize()}).ok());
  }
  // An unknown key is counted as an authentication failure.
  auto stranger_options = broker.AgentFor(MakeAgency("x", "k", "r"));
  stranger_options.receipt_timeout = 1000ms;
  auto stranger = Agent::Connect(stranger_options);
  EXPECT_FALSE((*stranger)->Send(std::vector<uint8_t>(64, 1)).ok());

  EXPECT_EQ(200, Get(admin, "/healthz").first);
  EXPECT_EQ(200, Get(admin, "/readyz").first);
  EXPECT_EQ(404, Get(admin, "/nope").first);
  auto [status, metrics] = Get(admin, "/metrics");
  ASSERT_EQ(200, status);
  EXPECT_NE(std::string::npos,
            metrics.find("liaison_decisions_total{type=\"CaseClosure\",decision=\"released\",agency=\"a\"} 1"))
      << metrics;
  EXPECT_NE(std::string::npos,
            metrics.find("liaison_decisions_total{type=\"CaseClosure\",decision=\"denied\",agency=\"a\"} 1"));
  EXPECT_NE(std::string::npos, metrics.find("liaison_receipts_total{code=\"ok\"} 2"));
  EXPECT_NE(std::string::npos, metrics.find("liaison_receipt_latency_seconds_count 2"));
  EXPECT_NE(std::string::npos, metrics.find("liaison_auth_failures_total 1")) << metrics;
}

}  // namespace
}  // namespace liaison::testing

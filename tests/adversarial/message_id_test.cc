// Attacks on "a message id carries no personal data" (docs/security.md):
// ids reach logs and the ledger, which cannot be erased, so the broker
// admits only opaque tokens of [A-Za-z0-9._-]{1,64} and never logs another.
#include <gtest/gtest.h>

#include <chrono>

#include "integration/broker_process.h"
#include "integration/gateway_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;

std::vector<uint8_t> Envelope(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  e.payload.Set(wire::CaseClosureT());
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class MessageIdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_});
    ASSERT_TRUE(broker_->Start().ok());
    auto agent = Agent::Connect(broker_->AgentFor(a_));
    ASSERT_TRUE(agent.ok());
    agent_ = std::move(*agent);
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<Agent> agent_;
};

TEST_F(MessageIdTest, AnIdThatCouldCarryPersonalDataIsRefusedAndNeverLogged) {
  // Printable, no spaces: all of these passed the old check.
  const std::vector<std::string> hostile = {
      "amina.yusuf@mombasa.example",     // an e-mail address
      "Amina+Yusuf+born+2009-03-04",     // a name and a date of birth
      "case#17/amina/0722123456",        // a path with a phone number
      "amina:" + std::string(60, '7'),   // too long as well
      std::string(65, 'a'),              // only too long
  };
  for (const std::string& id : hostile) {
    auto receipt = agent_->Send(Envelope(id, "b"));
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    EXPECT_EQ(wire::Code::invalid_field, (*receipt)->code()) << id;
    // The receipt names the field, the format and what to do; it never
    // echoes the value.
    const std::string detail = (*receipt)->detail() ? (*receipt)->detail()->str() : "";
    EXPECT_TRUE(detail.starts_with("id must match [A-Za-z0-9._-]{1,64}")) << detail;
    EXPECT_NE(std::string::npos, detail.find("ULID")) << detail;
    EXPECT_EQ(std::string::npos, detail.find("amina")) << detail;
    EXPECT_TRUE(!(*receipt)->message_id() || (*receipt)->message_id()->size() == 0);
  }
  // A valid message after them: once it is logged and ledgered, so is
  // everything before it.
  auto ok = agent_->Send(Envelope("after-the-refusals", "b"));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(wire::Code::ok, (*ok)->code());
  ASSERT_TRUE(broker_->WaitForLog("event=message agency=a id=after-the-refusals"));

  const std::string log = broker_->log();
  EXPECT_EQ(hostile.size(), Count(log, "event=rejected agency=a id=- code=invalid_field")) << log;
  for (const std::string& needle : std::vector<std::string>{"amina", "Amina", "0722123456", std::string(65, 'a')}) {
    EXPECT_EQ(std::string::npos, log.find(needle)) << needle << " reached the log:\n" << log;
  }
  EXPECT_EQ(0, broker_->Stop());
  const std::string ledger = ReadText(broker_->ledger_path());
  EXPECT_NE(std::string::npos, ledger.find("after-the-refusals"));
  EXPECT_EQ(std::string::npos, ledger.find("amina"));
  EXPECT_EQ(std::string::npos, ledger.find("Amina"));
}

// A refusal of such an id carries no id, so a slow broker (found under
// ThreadSanitizer: the first answer took longer than resend_interval) made
// the agent resend, and the second refusal was taken for the next message's
// receipt: a stored message reported refused. A 1 ms resend interval
// resends every message many times before its answer comes.
TEST_F(MessageIdTest, ARefusalOfAResentHostileIdIsNotTakenForTheNextMessagesReceipt) {
  auto options = broker_->AgentFor(a_);
  options.resend_interval = 1ms;
  auto agent = Agent::Connect(options);
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  for (int i = 0; i < 5; ++i) {
    auto refused = (*agent)->Send(Envelope("amina.yusuf+" + std::to_string(i) + "@mombasa.example", "b"));
    ASSERT_TRUE(refused.ok()) << refused.status().ToString();
    EXPECT_EQ(wire::Code::invalid_field, (*refused)->code());
    const std::string id = "valid-" + std::to_string(i);
    auto stored = (*agent)->Send(Envelope(id, "b"));
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
    EXPECT_EQ(wire::Code::ok, (*stored)->code()) << id << " was answered with another message's receipt: "
                                                 << ((*stored)->detail() ? (*stored)->detail()->str() : "");
    ASSERT_TRUE((*stored)->message_id());
    EXPECT_EQ(id, (*stored)->message_id()->str());
  }
}

TEST_F(MessageIdTest, UlidsUuidsAndTheLongestTokenAreAccepted) {
  for (const std::string& id : {wire::NewMessageId(), std::string("0190c7a2-7b1e-7cc2-9a4e-3f1d2b6c8e90"),
                                std::string(64, 'Z'), std::string("m.1_b-2")}) {
    auto receipt = agent_->Send(Envelope(id, "b"));
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    EXPECT_EQ(wire::Code::ok, (*receipt)->code()) << id << ": " << (*receipt)->detail()->str();
    EXPECT_EQ(id, (*receipt)->message_id()->str());
  }
}

TEST_F(MessageIdTest, TheGatewayRefusesSuchAnIdBeforeItReachesTheBroker) {
  GatewayProcess gateway(dir_, *broker_, a_);
  ASSERT_TRUE(gateway.Start().ok());
  const HttpReply refused = gateway.Call(
      "POST", "/v1/messages",
      R"({"id": "amina.yusuf@mombasa.example", "to": [{"agency": "b"}], "payload_type": "CaseClosure", "payload": {}})");
  EXPECT_EQ(400, refused.status) << refused.body;
  EXPECT_NE(std::string::npos, refused.body.find("[A-Za-z0-9._-]{1,64}")) << refused.body;
  EXPECT_EQ(std::string::npos, refused.body.find("amina")) << refused.body;
  const HttpReply path = gateway.Call("GET", "/v1/messages/amina%40mombasa/receipt");
  EXPECT_EQ(400, path.status) << path.body;
  EXPECT_EQ(std::string::npos, gateway.log().find("amina"));
  EXPECT_EQ(std::string::npos, broker_->log().find("amina"));
}

}  // namespace
}  // namespace liaison::testing

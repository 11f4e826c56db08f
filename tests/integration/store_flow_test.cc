// Store-and-forward through the real broker: restarts with queued messages,
// redelivery, expiry, queue limits, erasure propagation, the agent outbox
// across a broker outage, and refusing to start on a bad store.
#include <gtest/gtest.h>
#include <signal.h>

#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "liaison/keys.h"
#include "liaison/outbox.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using wire::Code;

class StoreFlowTest : public ::testing::Test {
 protected:
  void Start(const std::string& extra = "") {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_, c_, d_}, extra);
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  std::unique_ptr<Agent> Connect(const TestAgency& who, wire::Role role) {
    auto agent = Agent::Connect(broker_->AgentFor(who, role));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    if (role == wire::Role::receiver && !(*agent)->WaitReady(5000ms).ok()) {
      throw std::runtime_error("not welcomed");
    }
    return std::move(*agent);
  }
  ReceiptBuffer Send(Agent& agent, const std::vector<uint8_t>& bytes) {
    auto r = agent.Send(bytes);
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
    return std::move(*r);
  }
  // Receives (and acks) what arrives within `wait`.
  std::vector<std::string> Drain(Agent& agent, std::chrono::milliseconds wait, bool ack = true) {
    std::vector<std::string> ids;
    while (true) {
      auto m = agent.Receive(wait);
      if (!m.ok() || !m->has_value()) return ids;
      ids.push_back((**m)->id()->str());
      if (ack) (void)agent.Ack((**m)->id()->string_view());
    }
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  TestAgency c_ = MakeAgency("c", "youth-welfare", "kwale");
  TestAgency d_ = MakeAgency("d", "health-service", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(StoreFlowTest, QueuedMessagesSurviveARestartAndArriveInOrder) {
  Start();
  auto a = Connect(a_, wire::Role::sender);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Code::stored, Send(*a, CaseMessage("q" + std::to_string(i), {"b"}))->recipients()->Get(0)->code());
  }
  const std::string endpoint = broker_->endpoint();
  EXPECT_EQ(0, broker_->Stop(SIGTERM));
  ASSERT_TRUE(broker_->Start(endpoint).ok());
  EXPECT_TRUE(broker_->WaitForLog("event=store_open queued=5"));
  auto b = Connect(b_, wire::Role::receiver);
  EXPECT_EQ((std::vector<std::string>{"q0", "q1", "q2", "q3", "q4"}), Drain(*b, 500ms));
}

TEST_F(StoreFlowTest, APipelinedSenderGetsEveryReceiptAndEveryMessageArrivesOnce) {
  // Many messages in flight on one connection (SendFrames + TakeReceipt, as
  // the bench drives the broker): each gets its own receipt, in some order.
  Start();
  auto a = Connect(a_, wire::Role::sender);
  ASSERT_TRUE(a->WaitReady(5000ms).ok());
  // More than max_in_flight_per_agency (128): some may be answered `busy`
  // (when they land in one batch); the sender resends those, same id.
  constexpr int kMessages = 200;
  std::map<std::string, std::vector<uint8_t>> messages;
  for (int i = 0; i < kMessages; ++i) {
    const std::string id = "p" + std::to_string(i);
    messages[id] = CaseMessage(id, {"b"});
    ASSERT_TRUE(a->SendFrames(wire::kSend, messages[id]).ok());
  }
  std::set<std::string> receipted;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (receipted.size() < kMessages && std::chrono::steady_clock::now() < deadline) {
    auto receipt = a->TakeReceipt(100ms);
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    if (!receipt->has_value()) continue;
    const wire::Receipt* r = (*receipt)->get();
    ASSERT_TRUE(r->message_id() && messages.count(r->message_id()->str()));
    if (r->code() == Code::busy) {
      ASSERT_TRUE(a->SendFrames(wire::kSend, messages[r->message_id()->str()]).ok());
      continue;
    }
    ASSERT_EQ(Code::ok, r->code()) << (r->detail() ? r->detail()->str() : "");
    EXPECT_EQ(Code::stored, r->recipients()->Get(0)->code());
    EXPECT_TRUE(receipted.insert(r->message_id()->str()).second) << "two receipts for one id";
  }
  EXPECT_EQ(kMessages, static_cast<int>(receipted.size()));
  auto none = a->TakeReceipt(0ms);  // nothing left over, and a zero wait returns
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto b = Connect(b_, wire::Role::receiver);
  std::vector<std::string> got = Drain(*b, 1000ms);
  EXPECT_EQ(receipted, std::set<std::string>(got.begin(), got.end()));
  EXPECT_EQ(got.size(), receipted.size());
}

TEST_F(StoreFlowTest, UnackedMessagesAreRedeliveredToTheNextConnection) {
  Start();
  auto a = Connect(a_, wire::Role::sender);
  Send(*a, CaseMessage("r1", {"b"}));
  {
    auto b = Connect(b_, wire::Role::receiver);
    EXPECT_EQ(std::vector<std::string>{"r1"}, Drain(*b, 1000ms, /*ack=*/false));
  }  // the application crashed before acking
  auto b = Connect(b_, wire::Role::receiver);
  EXPECT_EQ(std::vector<std::string>{"r1"}, Drain(*b, 500ms));
  auto again = Connect(b_, wire::Role::receiver);
  EXPECT_TRUE(Drain(*again, 500ms).empty());  // acked: gone
}

TEST_F(StoreFlowTest, UndeliveredMessagesExpireAndTheSenderIsTold) {
  Start();
  auto a_receiver = Connect(a_, wire::Role::receiver);
  auto a = Connect(a_, wire::Role::sender);
  EXPECT_EQ(Code::stored, Send(*a, CaseMessage("e1", {"b"}, "CASE-1", false, "2020-01-01T00:00:00Z"))
                              ->recipients()->Get(0)->code());
  bool told = false;
  for (int i = 0; i < 60 && !told; ++i) {
    (void)a_receiver->Receive(100ms);
    while (auto n = a_receiver->TakeNotice()) {
      if ((*n)->message_id()->str() == "e1" && (*n)->recipients()->Get(0)->code() == Code::expired) {
        told = true;
      }
    }
  }
  EXPECT_TRUE(told);
  auto b = Connect(b_, wire::Role::receiver);
  EXPECT_TRUE(Drain(*b, 500ms).empty());
}

TEST_F(StoreFlowTest, ARevokedAgencysQueuedMessagesAreHeldThenExpireAndTheSenderIsTold) {
  // b is offline with a message queued when the operator revokes it (its
  // agency file removed, reload). The message is neither delivered nor
  // dropped on the spot: it waits out its expiry like any undelivered
  // message, then the sender is told "expired".
  Start();
  auto a_receiver = Connect(a_, wire::Role::receiver);
  auto a = Connect(a_, wire::Role::sender);
  char expires[32];
  const std::time_t in_3s = std::time(nullptr) + 3;
  std::tm utc{};
  gmtime_r(&in_3s, &utc);
  std::strftime(expires, sizeof expires, "%Y-%m-%dT%H:%M:%SZ", &utc);
  EXPECT_EQ(Code::stored, Send(*a, CaseMessage("v1", {"b"}, "CASE-1", false, expires))->recipients()->Get(0)->code());

  std::filesystem::remove(broker_->policies_dir() + "/agencies/b.yaml");
  broker_->Signal(SIGHUP);
  ASSERT_TRUE(broker_->WaitForLog("event=reload_done agencies=3"));
  {
    // Its old key no longer gets in.
    auto b = Agent::Connect(broker_->AgentFor(b_, wire::Role::receiver));
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(Status::Code::kPermissionDenied, (*b)->WaitReady(3000ms).code());
  }
  bool told = false;
  for (int i = 0; i < 100 && !told; ++i) {
    (void)a_receiver->Receive(100ms);
    while (auto n = a_receiver->TakeNotice()) {
      if ((*n)->message_id()->str() == "v1" && (*n)->recipients()->Get(0)->code() == Code::expired) told = true;
    }
  }
  EXPECT_TRUE(told) << "no expired notice for the revoked recipient's message";
  EXPECT_TRUE(broker_->WaitForLog("event=expired agency=a recipient=b id=v1"));
}

TEST_F(StoreFlowTest, AFullQueueIsAClearAnswerAndOthersAreServed) {
  Start();
  broker_->Stop(SIGTERM);
  // The same broker with a queue limit of 3 per recipient.
  std::string config = ReadText(dir_.file("broker.yaml"));
  config.replace(config.find("  redelivery_timeout_ms"), 0, "  max_queue_per_recipient: 3\n");
  WriteText(dir_.file("broker.yaml"), config);
  ASSERT_TRUE(broker_->Start().ok());
  auto a = Connect(a_, wire::Role::sender);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Code::stored, Send(*a, CaseMessage("f" + std::to_string(i), {"b"}))->recipients()->Get(0)->code());
  }
  ReceiptBuffer full = Send(*a, CaseMessage("f3", {"b", "c"}));
  std::map<std::string, Code> codes;
  for (const auto* r : *full->recipients()) codes[r->recipient()->str()] = r->code();
  EXPECT_EQ(Code::queue_full, codes["b"]);
  EXPECT_EQ(Code::stored, codes["c"]);
  auto c = Connect(c_, wire::Role::receiver);
  EXPECT_EQ(std::vector<std::string>{"f3"}, Drain(*c, 500ms));
  EXPECT_TRUE(broker_->WaitForLog("event=queue_full recipient=b"));
  EXPECT_TRUE(broker_->WaitForLog("event=queue_threshold recipient=b depth=2 limit=3"));
}

TEST_F(StoreFlowTest, AnErasureReachesEveryAgencyThatReceivedTheCase) {
  Start();
  auto a = Connect(a_, wire::Role::sender);
  auto b = Connect(b_, wire::Role::receiver);
  Send(*a, CaseMessage("x1", {"b", "c"}, "CASE-X"));  // c is offline: x1 waits for it
  Send(*a, CaseMessage("y1", {"d"}, "CASE-Y"));
  EXPECT_EQ(std::vector<std::string>{"x1"}, Drain(*b, 500ms));

  ReceiptBuffer erasure = Send(*a, CaseMessage("x-erase", {"b"}, "CASE-X", /*erasure=*/true));
  std::set<std::string> to;
  for (const auto* r : *erasure->recipients()) to.insert(r->recipient()->str());
  EXPECT_EQ((std::set<std::string>{"b", "c"}), to);  // c too, though only b was addressed
  EXPECT_EQ(std::vector<std::string>{"x-erase"}, Drain(*b, 500ms));
  auto c = Connect(c_, wire::Role::receiver);
  // c never gets x1 (its undelivered copy was removed), only the erasure.
  EXPECT_EQ(std::vector<std::string>{"x-erase"}, Drain(*c, 500ms));
  auto d = Connect(d_, wire::Role::receiver);
  EXPECT_EQ(std::vector<std::string>{"y1"}, Drain(*d, 500ms));  // another case: untouched
}

TEST_F(StoreFlowTest, TheOutboxKeepsMessagesWhileTheBrokerIsDown) {
  Start();
  const std::string endpoint = broker_->endpoint();
  EXPECT_EQ(0, broker_->Stop(SIGTERM));

  auto box = Outbox::Open(dir_.file("outbox.db"), dir_.file("outbox.key"));
  ASSERT_TRUE(box.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*box)->Add(CaseMessage("o" + std::to_string(i), {"b"})).ok());
  auto options = broker_->AgentFor(a_);
  options.receipt_timeout = 700ms;
  {
    auto agent = Agent::Connect(options);
    ASSERT_TRUE(agent.ok());
    Status down = (*box)->Flush(**agent, [](const ReceiptBuffer&) {});
    EXPECT_EQ(Status::Code::kDeadlineExceeded, down.code());
  }
  EXPECT_EQ(3, *(*box)->Size());

  ASSERT_TRUE(broker_->Start(endpoint).ok());
  options.receipt_timeout = 5000ms;
  auto agent = Agent::Connect(options);
  std::vector<std::string> answered;
  ASSERT_TRUE((*box)->Flush(**agent, [&](const ReceiptBuffer& r) {
                        answered.push_back(r->message_id()->str());
                        EXPECT_EQ(Code::stored, r->recipients()->Get(0)->code());
                      }).ok());
  EXPECT_EQ((std::vector<std::string>{"o0", "o1", "o2"}), answered);
  EXPECT_EQ(0, *(*box)->Size());
  auto b = Connect(b_, wire::Role::receiver);
  EXPECT_EQ((std::vector<std::string>{"o0", "o1", "o2"}), Drain(*b, 500ms));
}

TEST_F(StoreFlowTest, AWrongStoreKeyStopsTheStart) {
  Start();
  broker_->Stop(SIGTERM);
  std::filesystem::remove(dir_.file("keys/store.key"));
  ASSERT_TRUE(WriteStoreKey(dir_.file("keys/store.key")).ok());
  Status st = broker_->Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string::npos, st.message().find("store key does not match")) << st.message();
}

}  // namespace
}  // namespace liaison::testing

// Attack on "nothing silently lost" (issue 15, point 3): two agencies send
// messages with the same id to the same recipient. Ids are made by senders
// and unique per sender only, so both are distinct messages: the recipient
// must get both, each ack must count for its own message, the ledger must
// hold one `delivered` record per (sender, id) and each sender its own
// `delivered` notice. Against the real broker (and gateway, and CLI) on
// loopback with CURVE.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "audit/ledger.h"
#include "integration/broker_process.h"
#include "integration/gateway_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::vector<uint8_t> Referral(const std::string& id, const std::string& to, const std::string& reason) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-SAME-ID";
  e.purpose = "referral-for-services";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::CaseReferralT referral;
  referral.reason = reason;
  e.payload.Set(referral);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// An ACK as agents built before Ack.sender existed send it: the id alone.
std::vector<uint8_t> IdOnlyAck(const std::string& id) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(wire::CreateAck(fbb, fbb.CreateString(id)));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (auto pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
  return n;
}

class SameIdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_, r_});
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
    a_notices_ = Connect(a_, wire::Role::receiver);
    b_notices_ = Connect(b_, wire::Role::receiver);
  }

  std::unique_ptr<Agent> Connect(const TestAgency& who, wire::Role role) {
    auto agent = Agent::Connect(broker_->AgentFor(who, role));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    if (role == wire::Role::receiver && !(*agent)->WaitReady(5000ms).ok()) {
      throw std::runtime_error(who.id + " was not welcomed");
    }
    return std::move(*agent);
  }

  // Each of a_ and b_ sends a referral with `id` to r_; both are stored.
  void BothSend(const std::string& id) {
    for (const TestAgency* sender : {&a_, &b_}) {
      auto agent = Connect(*sender, wire::Role::sender);
      auto receipt = agent->Send(Referral(id, r_.id, "from " + sender->id));
      ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
      ASSERT_EQ((*receipt)->code(), wire::Code::ok);
      ASSERT_EQ((*receipt)->recipients()->Get(0)->code(), wire::Code::stored) << sender->id;
    }
  }

  // Polls both senders' receiver connections for `delivered` notices about
  // `id` (to r_) until each sender in `want` has one or `timeout` passed;
  // returns the count per sender.
  std::map<std::string, int> DeliveredNotices(const std::string& id, const std::set<std::string>& want,
                                              std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      for (auto* agent : {a_notices_.get(), b_notices_.get()}) {
        (void)agent->Receive(50ms);  // pumps the socket
        while (auto n = agent->TakeNotice()) {
          if ((*n)->message_id()->str() != id || !(*n)->recipients()) continue;
          for (const auto* r : *(*n)->recipients()) {
            if (r->recipient()->str() == r_.id && r->code() == wire::Code::delivered) {
              ++notices_[(*n)->from()->str()];
            }
          }
        }
      }
      const bool all = std::all_of(want.begin(), want.end(), [&](const auto& w) { return notices_[w] > 0; });
      if (all || Clock::now() >= deadline) break;
    }
    auto out = notices_;
    notices_.clear();
    return out;
  }

  // After the broker stopped: the `delivered` records of `id`, by sender.
  std::map<std::string, int> DeliveredInLedger(const std::string& id) {
    EXPECT_EQ(0, broker_->Stop());
    auto records = audit::ReadLedger(broker_->ledger_path());
    EXPECT_TRUE(records.ok()) << records.status().ToString();
    std::map<std::string, int> by_sender;
    if (!records.ok()) return by_sender;
    for (const auto& bytes : *records) {
      const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
      if (r->decision() != ledger::Decision::delivered || !r->message_id() || r->message_id()->str() != id) continue;
      EXPECT_EQ(r->recipient()->str(), r_.id);
      ++by_sender[r->sender() ? r->sender()->str() : ""];
    }
    return by_sender;
  }

  // Up to `n` messages for `agent` within 10 s, by sender.
  static std::map<std::string, EnvelopeBuffer> ReceiveBySender(Agent& agent, size_t n) {
    std::map<std::string, EnvelopeBuffer> got;
    const auto deadline = Clock::now() + 10s;
    while (got.size() < n && Clock::now() < deadline) {
      auto m = agent.Receive(200ms);
      EXPECT_TRUE(m.ok()) << m.status().ToString();
      if (m.ok() && m->has_value()) got.emplace((**m)->from()->str(), std::move(**m));
    }
    return got;
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("exit-b", "exit-programme", "kwale");
  TestAgency r_ = MakeAgency("youth-r", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<Agent> a_notices_, b_notices_;
  std::map<std::string, int> notices_;
};

TEST_F(SameIdTest, TheRecipientAgentGetsBothAndEachAckCountsForItsOwnMessage) {
  auto r = Connect(r_, wire::Role::receiver);
  BothSend("same-1");
  auto got = ReceiveBySender(*r, 2);
  ASSERT_EQ(got.size(), 2u) << "one of the two messages with id same-1 never reached the application";
  EXPECT_EQ(got.at(a_.id)->payload_as_CaseReferral()->reason()->str(), "from exit-a");
  EXPECT_EQ(got.at(b_.id)->payload_as_CaseReferral()->reason()->str(), "from exit-b");
  // Naming the id alone cannot say which one.
  EXPECT_EQ(r->Ack("same-1").code(), Status::Code::kInvalidArgument);

  // The first ack is for a's message only: b's is still unacknowledged.
  ASSERT_TRUE(r->Ack(a_.id, "same-1").ok());
  auto first = DeliveredNotices("same-1", {b_.id}, 1500ms);
  EXPECT_EQ(first[a_.id], 1);
  EXPECT_EQ(first[b_.id], 0) << "acking exit-a's message also acknowledged exit-b's";

  ASSERT_TRUE(r->Ack(b_.id, "same-1").ok());
  auto second = DeliveredNotices("same-1", {b_.id}, 5000ms);
  EXPECT_EQ(second[a_.id], 0);
  EXPECT_EQ(second[b_.id], 1);

  // Both acked: nothing is redelivered (the test broker redelivers after 2 s).
  const size_t redeliveries = Count(broker_->log(), "event=redelivery recipient=youth-r");
  auto more = r->Receive(3000ms);
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(more->has_value());
  EXPECT_EQ(Count(broker_->log(), "event=redelivery recipient=youth-r"), redeliveries);

  EXPECT_EQ(DeliveredInLedger("same-1"), (std::map<std::string, int>{{a_.id, 1}, {b_.id, 1}}));
}

TEST_F(SameIdTest, AnAckWithoutSenderIsHonouredOnlyWhereTheIdIsUnambiguous) {
  auto r = Connect(r_, wire::Role::receiver);
  BothSend("same-2");
  {
    auto solo = Connect(a_, wire::Role::sender);
    ASSERT_TRUE(solo->Send(Referral("solo-2", r_.id, "only exit-a uses this id")).ok());
  }
  auto got = ReceiveBySender(*r, 2);
  ASSERT_EQ(got.size(), 2u);
  auto solo = r->Receive(5000ms);
  ASSERT_TRUE(solo.ok() && solo->has_value());
  ASSERT_EQ((**solo)->id()->str(), "solo-2");

  // An older agent's ACK by id alone: unambiguous for solo-2, so it counts.
  ASSERT_TRUE(r->SendFrames(wire::kAck, IdOnlyAck("solo-2")).ok());
  EXPECT_EQ(DeliveredNotices("solo-2", {a_.id}, 5000ms)[a_.id], 1);

  // Ambiguous for same-2 (both senders' messages are in flight): ignored.
  ASSERT_TRUE(r->SendFrames(wire::kAck, IdOnlyAck("same-2")).ok());
  ASSERT_TRUE(broker_->WaitForLog("event=ack_ambiguous agency=youth-r"));
  auto none = DeliveredNotices("same-2", {a_.id, b_.id}, 1000ms);
  EXPECT_EQ(none[a_.id] + none[b_.id], 0) << "an ambiguous ACK acknowledged a message";

  // Redelivered, and from now on one message of that id at a time, so the
  // older agent's repeated ACK acknowledges each in turn: nothing is lost,
  // nothing is redelivered forever.
  ASSERT_TRUE(broker_->WaitForLog("event=redelivery recipient=youth-r", 5000));
  std::map<std::string, int> total;
  const auto deadline = Clock::now() + 15s;
  while ((total[a_.id] < 1 || total[b_.id] < 1) && Clock::now() < deadline) {
    ASSERT_TRUE(r->SendFrames(wire::kAck, IdOnlyAck("same-2")).ok());
    for (const auto& [sender, n] : DeliveredNotices("same-2", {a_.id, b_.id}, 500ms)) total[sender] += n;
  }
  EXPECT_EQ(total[a_.id], 1);
  EXPECT_EQ(total[b_.id], 1);
  EXPECT_EQ(DeliveredInLedger("same-2"), (std::map<std::string, int>{{a_.id, 1}, {b_.id, 1}}));
}

TEST_F(SameIdTest, TheGatewayInboxHoldsBothAndNamesEachBySenderAndId) {
  GatewayProcess gateway(dir_, *broker_, r_);
  ASSERT_TRUE(gateway.Start().ok());
  ASSERT_TRUE(gateway.WaitForLog("event=broker_welcomed"));
  BothSend("same-3");

  // Both are listed (possibly over two polls: a listed message is leased).
  std::string listed;
  const auto deadline = Clock::now() + 10s;
  while (Count(listed, "\"id\": \"same-3\"") < 2 && Clock::now() < deadline) {
    HttpReply page = gateway.Call("GET", "/v1/inbox?wait=2");
    ASSERT_EQ(page.status, 200) << page.body;
    listed += page.body;
  }
  EXPECT_EQ(Count(listed, "\"id\": \"same-3\""), 2u) << listed;
  EXPECT_NE(listed.find("\"from\": \"exit-a\""), std::string::npos) << listed;
  EXPECT_NE(listed.find("\"from\": \"exit-b\""), std::string::npos) << listed;

  // The older path names the id alone: ambiguous here, so nothing is acked.
  HttpReply old_path = gateway.Call("POST", "/v1/inbox/same-3/ack");
  EXPECT_EQ(old_path.status, 409) << old_path.body;
  EXPECT_EQ(JsonField(old_path.body, "error"), "ambiguous_id");

  // Each is fetched and acked by sender and id.
  for (const TestAgency* sender : {&a_, &b_}) {
    HttpReply one = gateway.Call("GET", "/v1/inbox/" + sender->id + "/same-3");
    ASSERT_EQ(one.status, 200) << one.body;
    EXPECT_NE(one.body.find("from " + sender->id), std::string::npos) << one.body;
    HttpReply acked = gateway.Call("POST", "/v1/inbox/" + sender->id + "/same-3/ack");
    ASSERT_EQ(acked.status, 200) << acked.body;
    EXPECT_EQ(JsonField(acked.body, "message_id"), "same-3");
    EXPECT_EQ(JsonField(acked.body, "sender"), sender->id);
  }
  EXPECT_EQ(gateway.Call("POST", "/v1/inbox/exit-a/same-3/ack").status, 404);
  EXPECT_EQ(gateway.Call("GET", "/v1/inbox/exit-a/same-3").status, 404);
  auto notices = DeliveredNotices("same-3", {a_.id, b_.id}, 5000ms);
  EXPECT_EQ(notices[a_.id], 1);
  EXPECT_EQ(notices[b_.id], 1);

  // Where the id is unambiguous, the older path still works.
  {
    auto solo = Connect(a_, wire::Role::sender);
    ASSERT_TRUE(solo->Send(Referral("solo-3", r_.id, "only exit-a uses this id")).ok());
  }
  HttpReply page = gateway.Call("GET", "/v1/inbox?wait=10");
  ASSERT_NE(page.body.find("\"id\": \"solo-3\""), std::string::npos) << page.body;
  HttpReply solo_ack = gateway.Call("POST", "/v1/inbox/solo-3/ack");
  ASSERT_EQ(solo_ack.status, 200) << solo_ack.body;
  EXPECT_EQ(JsonField(solo_ack.body, "sender"), a_.id);
  EXPECT_EQ(DeliveredNotices("solo-3", {a_.id}, 5000ms)[a_.id], 1);

  ASSERT_EQ(gateway.Stop(), 0);
  EXPECT_EQ(DeliveredInLedger("same-3"), (std::map<std::string, int>{{a_.id, 1}, {b_.id, 1}}));
}

TEST_F(SameIdTest, ListenOutWritesOneFilePerSenderAndId) {
  const std::string cli_dir = dir_.file("cli");
  ASSERT_TRUE(WriteCurveKeyPair(cli_dir + "/keys", r_.id, r_.keys).ok());
  ASSERT_TRUE(WriteCurveKeyPair(cli_dir + "/keys", "broker", broker_->broker_keys()).ok());
  WriteText(cli_dir + "/agent.yaml", "broker: " + broker_->endpoint() +
                                         "\nbroker_public_key_file: keys/broker.pub\n"
                                         "secret_key_file: keys/" + r_.id + ".key\nheartbeat_ms: 200\n");
  const std::string out = cli_dir + "/inbox";
  const int log_fd = ::open((cli_dir + "/listen.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(log_fd, 0);
  pid_t pid = Spawn({LIAISON_CLI_BIN, "listen", "--config", cli_dir + "/agent.yaml", "--out", out, "--count", "2"},
                    log_fd, log_fd);
  ::close(log_fd);
  BothSend("same-4");

  // `--count 2`: it exits after writing and acking two messages.
  int status = 0;
  const auto deadline = Clock::now() + 15s;
  while (::waitpid(pid, &status, WNOHANG) == 0 && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
  if (Clock::now() >= deadline) {
    StopProcess(&pid, SIGKILL);
    FAIL() << "liaison listen did not get two messages: " << ReadText(cli_dir + "/listen.log");
  }
  EXPECT_EQ(ExitCode(status), 0) << ReadText(cli_dir + "/listen.log");

  std::set<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(out)) files.insert(entry.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"exit-a+same-4.json", "exit-b+same-4.json"}));
  EXPECT_NE(ReadText(out + "/exit-a+same-4.json").find("from exit-a"), std::string::npos);
  EXPECT_NE(ReadText(out + "/exit-b+same-4.json").find("from exit-b"), std::string::npos);

  auto notices = DeliveredNotices("same-4", {a_.id, b_.id}, 5000ms);
  EXPECT_EQ(notices[a_.id], 1);
  EXPECT_EQ(notices[b_.id], 1);
  EXPECT_EQ(DeliveredInLedger("same-4"), (std::map<std::string, int>{{a_.id, 1}, {b_.id, 1}}));
}

}  // namespace
}  // namespace liaison::testing

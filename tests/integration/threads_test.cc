// Case threads and handling codes through the real broker (docs/protocol.md,
// "Case threads"; docs/policies.md, "Handling codes"): every delivered copy
// carries a broker-issued thread reference; a message derived from it names
// it in derived_from; an H2 thread reaches only its originator, the
// originator's recipients and whom the originator's release rule allows
// onward, and any other recipient is denied with handling-h2 in the receipt
// and the ledger.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/broker_process.h"
#include "integration/gateway_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using wire::Code;

std::vector<uint8_t> Finish(wire::EnvelopeT& e) {
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

wire::EnvelopeT Header(const std::string& id, const std::string& to, wire::Handling handling) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-" + id;
  e.handling = handling;
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  return e;
}

std::vector<uint8_t> Referral(const std::string& id, const std::string& to, wire::Handling handling,
                              const std::string& derived_from = "", const std::string& thread = "",
                              const std::string& purpose = "referral-for-services") {
  wire::EnvelopeT e = Header(id, to, handling);
  e.purpose = purpose;
  e.derived_from = derived_from;
  e.thread = thread;
  wire::CaseReferralT r;
  r.reason = "needs-mentoring";
  e.payload.Set(std::move(r));
  return Finish(e);
}

std::vector<uint8_t> Update(const std::string& id, const std::string& to, const std::string& derived_from,
                            const std::string& purpose = "") {
  wire::EnvelopeT e = Header(id, to, wire::Handling::unspecified);
  e.derived_from = derived_from;
  e.purpose = purpose;
  wire::CaseUpdateT u;
  u.status = wire::CaseStatus::in_progress;
  e.payload.Set(std::move(u));
  return Finish(e);
}

// One recipient's outcome of a message: its code and reason, or the
// message's code if it was rejected whole.
struct Outcome {
  Code code = Code::ok;
  std::string reason;
};

class ThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // a (the originator) lets its recipients pass its cases on to d only.
    a_.rules =
        "release:\n"
        "  - id: release-with-onward\n"
        "    messages: [CaseReferral, ReferralResponse, CaseUpdate]\n"
        "    onward: {agencies: [d]}\n"
        "    fields: {others: allow}\n"
        "accept:\n"
        "  - id: accept-everything\n"
        "    messages: [CaseReferral, ReferralResponse, CaseUpdate]\n"
        "    fields: {others: allow}\n";
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_, c_, d_});
    // A judicial purpose (H1) and one purpose compatible with another (H0).
    const std::string path = broker_->policies_dir() + "/vocabulary.yaml";
    std::string vocabulary = ReadText(path);
    const size_t purposes = vocabulary.find("purposes:\n");
    ASSERT_NE(std::string::npos, purposes);
    vocabulary.insert(purposes + 10, "  judicial-proceedings: court\n");
    vocabulary +=
        "judicial_purposes: [judicial-proceedings]\n"
        "compatible_purposes:\n"
        "  referral-for-services: [case-coordination]\n";
    WriteText(path, vocabulary);
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  std::unique_ptr<Agent> Connect(const TestAgency& who, wire::Role role) {
    auto agent = Agent::Connect(broker_->AgentFor(who, role));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    if (!(*agent)->WaitReady(5000ms).ok()) throw std::runtime_error("not welcomed");
    return std::move(*agent);
  }

  Outcome Send(const TestAgency& who, const std::vector<uint8_t>& bytes) {
    auto agent = Connect(who, wire::Role::sender);
    auto r = agent->Send(bytes);
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
    if ((*r)->code() != Code::ok || !(*r)->recipients() || (*r)->recipients()->size() != 1) {
      return {(*r)->code(), (*r)->detail() ? (*r)->detail()->str() : ""};
    }
    const auto* one = (*r)->recipients()->Get(0);
    return {one->code(), one->reason() ? one->reason()->str() : ""};
  }

  // The thread reference of `who`'s copy of message `id` (acked), or empty
  // if none arrives within 5 s.
  std::string ThreadOf(const TestAgency& who, const std::string& id, std::string* derived_from = nullptr) {
    auto receiver = Connect(who, wire::Role::receiver);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto m = receiver->Receive(200ms);
      if (!m.ok() || !m->has_value()) continue;
      const wire::Envelope* env = (**m).get();
      (void)receiver->Ack(env->from()->string_view(), env->id()->string_view());
      if (env->id()->str() != id) continue;
      if (derived_from) *derived_from = env->derived_from() ? env->derived_from()->str() : "";
      return env->thread() ? env->thread()->str() : "";
    }
    return "";
  }

  // Ledger records of `decision` about message `id` with `reason`.
  int LedgerRecords(const std::string& decision, const std::string& id, const std::string& reason) const {
    int n = 0;
    std::istringstream in(ReadText(broker_->ledger_path()));
    for (std::string line; std::getline(in, line);) {
      n += line.find("\"decision\": \"" + decision + "\"") != std::string::npos &&
           line.find("\"message_id\": \"" + id + "\"") != std::string::npos &&
           line.find("\"reason\": \"" + reason + "\"") != std::string::npos;
    }
    return n;
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  TestAgency c_ = MakeAgency("c", "security-agency", "mombasa");
  TestAgency d_ = MakeAgency("d", "health-service", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(ThreadsTest, EveryCopyCarriesItsOwnOpaqueThreadReference) {
  wire::EnvelopeT e = Header("two", "b", wire::Handling::H2);
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = "d";
  e.payload.Set(wire::CaseReferralT());
  auto sender = Connect(a_, wire::Role::sender);
  auto r = sender->Send(Finish(e));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(Code::ok, (*r)->code());
  const std::string for_b = ThreadOf(b_, "two");
  const std::string for_d = ThreadOf(d_, "two");
  const std::regex hex128("[0-9a-f]{32}");
  EXPECT_TRUE(std::regex_match(for_b, hex128)) << for_b;
  EXPECT_TRUE(std::regex_match(for_d, hex128)) << for_d;
  EXPECT_NE(for_b, for_d);
  EXPECT_EQ(std::string::npos, for_b.find("CASE-"));
}

TEST_F(ThreadsTest, H2GoesBackToTheOriginatorAndOnwardOnlyWhereItsReleaseRuleAllows) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("root", "b", wire::Handling::H2)).code);
  const std::string thread = ThreadOf(b_, "root");
  ASSERT_FALSE(thread.empty());

  // Back to the originator: allowed; the copy does not carry b's reference.
  EXPECT_EQ(Code::stored, Send(b_, Update("back", "a", thread)).code);
  std::string passed_on;
  EXPECT_FALSE(ThreadOf(a_, "back", &passed_on).empty());
  EXPECT_EQ("", passed_on);

  // To c, whom a never sent it to and did not allow: denied in the receipt
  // and the ledger.
  const Outcome to_c = Send(b_, Referral("to-c", "c", wire::Handling::unspecified, thread));
  EXPECT_EQ(Code::denied, to_c.code);
  EXPECT_EQ("handling-h2", to_c.reason);
  EXPECT_TRUE(WaitForText([&] { return ReadText(broker_->ledger_path()); }, "handling-h2", 5000));
  EXPECT_EQ(1, LedgerRecords("denied", "to-c", "handling-h2"));

  // To d, whom a's release rule names under onward: allowed. d's copy is in
  // the same thread: d may answer a, but not pass it on to c either.
  EXPECT_EQ(Code::stored, Send(b_, Referral("to-d", "d", wire::Handling::unspecified, thread)).code);
  const std::string d_thread = ThreadOf(d_, "to-d");
  ASSERT_FALSE(d_thread.empty());
  EXPECT_NE(thread, d_thread);
  EXPECT_EQ(Code::stored, Send(d_, Update("d-back", "a", d_thread)).code);
  const Outcome d_to_c = Send(d_, Referral("d-to-c", "c", wire::Handling::unspecified, d_thread));
  EXPECT_EQ(Code::denied, d_to_c.code);
  EXPECT_EQ("handling-h2", d_to_c.reason);

  // The same message without derived_from is not held to the thread (the
  // sender's own data; its own policy decides).
  EXPECT_EQ(Code::stored, Send(b_, Referral("own", "c", wire::Handling::unspecified)).code);
}

TEST_F(ThreadsTest, AThreadWithoutH2MayBePassedOn) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("open", "b", wire::Handling::unspecified)).code);
  const std::string thread = ThreadOf(b_, "open");
  ASSERT_FALSE(thread.empty());
  EXPECT_EQ(Code::stored, Send(b_, Referral("open-to-c", "c", wire::Handling::unspecified, thread)).code);
}

TEST_F(ThreadsTest, DerivedFromMustBeAThreadTheSenderHolds) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("held", "b", wire::Handling::H2)).code);
  const std::string thread = ThreadOf(b_, "held");
  ASSERT_FALSE(thread.empty());
  // Unknown, malformed, and another agency's: the same answer, which names
  // the field and not the value.
  for (const std::string& named : {std::string(32, 'a'), std::string("not-a-thread"), thread}) {
    const Outcome o = Send(c_, Update("bad-" + std::to_string(named.size()) + named.substr(0, 3), "a", named));
    EXPECT_EQ(Code::invalid_field, o.code) << named;
    EXPECT_NE(std::string::npos, o.reason.find("derived_from")) << o.reason;
    EXPECT_EQ(std::string::npos, o.reason.find(named)) << o.reason;
  }
  // A sender may not set the thread itself.
  const Outcome forged = Send(b_, Referral("forged", "c", wire::Handling::unspecified, "", thread));
  EXPECT_EQ(Code::invalid_field, forged.code);
  EXPECT_NE(std::string::npos, forged.reason.find("thread")) << forged.reason;
}

TEST_F(ThreadsTest, AResponseInAThreadAnswersThatThreadsMessage) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("asked", "b", wire::Handling::H2)).code);
  auto receiver = Connect(b_, wire::Role::receiver);
  std::optional<EnvelopeBuffer> received;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!received && std::chrono::steady_clock::now() < deadline) {
    auto m = receiver->Receive(200ms);
    if (m.ok() && m->has_value()) received = std::move(**m);
  }
  ASSERT_TRUE(received);
  ASSERT_TRUE(receiver->Ack((*received)->from()->string_view(), (*received)->id()->string_view()).ok());

  // The agent library fills derived_from, in_reply_to and the recipient.
  wire::EnvelopeT answer;
  answer.id = "answer";
  answer.payload.Set(wire::ReferralResponseT());
  ASSERT_TRUE(DeriveFrom(*received->get(), &answer).ok());
  EXPECT_EQ((*received)->thread()->str(), answer.derived_from);
  EXPECT_EQ("asked", answer.payload.AsReferralResponse()->in_reply_to);
  ASSERT_EQ(1u, answer.to.size());
  EXPECT_EQ("a", answer.to[0]->agency);
  EXPECT_EQ(Code::stored, Send(b_, Finish(answer)).code);

  // An in_reply_to that names another message than the thread's is refused.
  wire::EnvelopeT wrong = Header("wrong", "a", wire::Handling::unspecified);
  wrong.derived_from = (*received)->thread()->str();
  wire::ReferralResponseT r;
  r.in_reply_to = "some-other-referral";
  wrong.payload.Set(std::move(r));
  const Outcome o = Send(b_, Finish(wrong));
  EXPECT_EQ(Code::invalid_field, o.code);
  EXPECT_NE(std::string::npos, o.reason.find("in_reply_to")) << o.reason;

  // A message from a broker before threads carries none: DeriveFrom says so.
  wire::EnvelopeT plain = Header("plain", "a", wire::Handling::unspecified);
  plain.payload.Set(wire::CaseUpdateT());
  const std::vector<uint8_t> bytes = Finish(plain);
  wire::EnvelopeT reply;
  EXPECT_FALSE(DeriveFrom(*wire::GetEnvelope(bytes.data()), &reply).ok());
  EXPECT_EQ("", reply.derived_from);
}

TEST_F(ThreadsTest, H1KeepsACaseOutOfJudicialPurposesAndH0KeepsACompatiblePurpose) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("h1", "b", wire::Handling::H1)).code);
  const std::string h1 = ThreadOf(b_, "h1");
  ASSERT_FALSE(h1.empty());
  const Outcome judicial = Send(b_, Update("h1-court", "c", h1, "judicial-proceedings"));
  EXPECT_EQ(Code::denied, judicial.code);
  EXPECT_EQ("handling-h1", judicial.reason);
  EXPECT_TRUE(WaitForText([&] { return ReadText(broker_->ledger_path()); }, "handling-h1", 5000));
  EXPECT_EQ(1, LedgerRecords("denied", "h1-court", "handling-h1"));
  EXPECT_EQ(Code::stored, Send(b_, Update("h1-coord", "c", h1, "case-coordination")).code);

  ASSERT_EQ(Code::stored, Send(a_, Referral("h0", "b", wire::Handling::H0)).code);
  const std::string h0 = ThreadOf(b_, "h0");
  ASSERT_FALSE(h0.empty());
  EXPECT_EQ(Code::stored, Send(b_, Update("h0-same", "c", h0, "referral-for-services")).code);
  EXPECT_EQ(Code::stored, Send(b_, Update("h0-compatible", "c", h0, "case-coordination")).code);
  EXPECT_EQ(Code::stored, Send(b_, Update("h0-unstated", "c", h0)).code);
  const Outcome other = Send(b_, Update("h0-other", "c", h0, "imminent-threat"));
  EXPECT_EQ(Code::denied, other.code);
  EXPECT_EQ("handling-h0", other.reason);
  EXPECT_TRUE(WaitForText([&] { return ReadText(broker_->ledger_path()); }, "handling-h0", 5000));
  EXPECT_EQ(1, LedgerRecords("denied", "h0-other", "handling-h0"));
}

TEST_F(ThreadsTest, H3RestrictionTextReachesTheRecipient) {
  wire::EnvelopeT e = Header("h3", "b", wire::Handling::H3);
  e.handling_restrictions = "Only the case worker may read this.";
  e.payload.Set(wire::CaseReferralT());
  ASSERT_EQ(Code::stored, Send(a_, Finish(e)).code);
  auto receiver = Connect(b_, wire::Role::receiver);
  std::string restrictions;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (restrictions.empty() && std::chrono::steady_clock::now() < deadline) {
    auto m = receiver->Receive(200ms);
    if (!m.ok() || !m->has_value()) continue;
    const wire::Envelope* env = (**m).get();
    (void)receiver->Ack(env->from()->string_view(), env->id()->string_view());
    if (env->handling_restrictions()) restrictions = env->handling_restrictions()->str();
  }
  EXPECT_EQ("Only the case worker may read this.", restrictions);
}

// An HTTPS-only system (through the gateway) sees the thread of what it
// receives and names it in derived_from; the broker holds it to H2 too.
TEST_F(ThreadsTest, TheGatewayShowsTheThreadAndTakesDerivedFrom) {
  GatewayProcess gateway(dir_, *broker_, b_);
  Status st = gateway.Start();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(gateway.WaitForLog("event=broker_welcomed"));
  ASSERT_EQ(Code::stored, Send(a_, Referral("gw-root", "b", wire::Handling::H2)).code);
  std::string thread;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (thread.empty() && std::chrono::steady_clock::now() < deadline) {
    const HttpReply page = gateway.Call("GET", "/v1/inbox?wait=1");
    ASSERT_EQ(page.status, 200) << page.body;
    if (page.body.find("gw-root") != std::string::npos) thread = JsonField(page.body, "thread");
  }
  ASSERT_FALSE(thread.empty());
  ASSERT_EQ(200, gateway.Call("POST", "/v1/inbox/gw-root/ack").status);

  auto post = [&](const std::string& id, const std::string& to) {
    const std::string body = "{\"id\": \"" + id + "\", \"derived_from\": \"" + thread + "\", \"to\": [{\"agency\": \"" +
                             to + "\"}], \"payload_type\": \"CaseUpdate\", \"payload\": {\"notes\": \"progress\"}}";
    const HttpReply sent = gateway.Call("POST", "/v1/messages", body);
    EXPECT_EQ(sent.status, 202) << sent.body;
    HttpReply receipt;
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      receipt = gateway.Call("GET", "/v1/messages/" + id + "/receipt");
      if (receipt.status == 200) break;
      std::this_thread::sleep_for(100ms);
    }
    return receipt.body;
  };
  const std::string to_c = post("gw-to-c", "c");
  EXPECT_EQ("denied", JsonField(to_c, "code")) << to_c;
  EXPECT_EQ("handling-h2", JsonField(to_c, "reason")) << to_c;
  const std::string to_a = post("gw-to-a", "a");
  EXPECT_EQ("stored", JsonField(to_a, "code")) << to_a;
}

}  // namespace
}  // namespace liaison::testing

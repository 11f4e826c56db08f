// Case threads and handling codes through the real broker (docs/protocol.md,
// "Case threads"; docs/policies.md, "Handling codes"): every delivered copy
// carries a broker-issued thread reference; a message derived from it names
// it in derived_from; an H2 thread reaches only its originator, the
// originator's recipients and whom the originator's release rule allows
// onward, and any other recipient is denied with handling-h2 in the receipt
// and the ledger. A holder asks the originator for permission to pass a
// case on (PermissionRequest); the originator's grant (PermissionGrant,
// accepted from the originator only) lets the next derived message through
// to the granted agency; `liaison audit query --thread` shows the path.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/broker_process.h"
#include "integration/gateway_process.h"
#include "liaison/agent.h"
#include "liaison/keys.h"

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

std::vector<uint8_t> Permission(const std::string& id, const std::string& derived_from, const std::string& to,
                                bool grant, const std::vector<std::string>& agencies,
                                const std::string& purpose = "case-coordination", const std::string& in_reply_to = "") {
  wire::EnvelopeT e = Header(id, to, wire::Handling::unspecified);
  e.derived_from = derived_from;
  e.purpose = purpose;
  if (grant) {
    wire::PermissionGrantT g;
    g.agencies = agencies;
    g.in_reply_to = in_reply_to;
    e.payload.Set(std::move(g));
  } else {
    wire::PermissionRequestT r;
    r.agencies = agencies;
    e.payload.Set(std::move(r));
  }
  return Finish(e);
}

// One recipient's outcome of a message: its code and reason, or the
// message's code if it was rejected whole.
struct Outcome {
  Code code = Code::ok;
  std::string reason;
};

Outcome OutcomeOf(const wire::Receipt& r) {
  if (r.code() != Code::ok || !r.recipients() || r.recipients()->size() != 1) {
    return {r.code(), r.detail() ? r.detail()->str() : ""};
  }
  const auto* one = r.recipients()->Get(0);
  return {one->code(), one->reason() ? one->reason()->str() : ""};
}

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
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_, c_, d_, e_});
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
    return OutcomeOf(*r->get());
  }

  // `who`'s copy of message `id` (acked, with the others before it), or
  // nothing if none arrives within 5 s.
  std::optional<EnvelopeBuffer> Take(const TestAgency& who, const std::string& id) {
    auto receiver = Connect(who, wire::Role::receiver);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto m = receiver->Receive(200ms);
      if (!m.ok() || !m->has_value()) continue;
      const wire::Envelope* env = (**m).get();
      (void)receiver->Ack(env->from()->string_view(), env->id()->string_view());
      if (env->id()->str() == id) return std::move(**m);
    }
    return std::nullopt;
  }

  // The thread reference of `who`'s copy of message `id` (Take), or empty
  // if none arrives within 5 s.
  std::string ThreadOf(const TestAgency& who, const std::string& id, std::string* derived_from = nullptr) {
    std::optional<EnvelopeBuffer> copy = Take(who, id);
    if (!copy) return "";
    const wire::Envelope* env = copy->get();
    if (derived_from) *derived_from = env->derived_from() ? env->derived_from()->str() : "";
    return env->thread() ? env->thread()->str() : "";
  }

  // The ledger line of `decision` about message `id` (to `recipient`), or
  // empty.
  std::string LedgerLine(const std::string& decision, const std::string& id, const std::string& recipient) const {
    std::istringstream in(ReadText(broker_->ledger_path()));
    for (std::string line; std::getline(in, line);) {
      if (line.find("\"decision\": \"" + decision + "\"") != std::string::npos &&
          line.find("\"message_id\": \"" + id + "\"") != std::string::npos &&
          line.find("\"recipient\": \"" + recipient + "\"") != std::string::npos) {
        return line;
      }
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
  TestAgency e_ = MakeAgency("e", "prison-service", "mombasa");
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

// Messages posted together reach the broker in one drain, which reads all
// their threads at once; each is still decided by its own. b holds an H2
// thread (not to be passed on to c) and an open one; c's thread and an
// unknown reference are not b's to use. A mix-up between the answers would
// swap a stored and a denied outcome.
TEST_F(ThreadsTest, MessagesPostedTogetherAreEachDecidedByTheirOwnThread) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("closed", "b", wire::Handling::H2)).code);
  ASSERT_EQ(Code::stored, Send(a_, Referral("open", "b", wire::Handling::unspecified)).code);
  ASSERT_EQ(Code::stored, Send(a_, Referral("for-c", "c", wire::Handling::H2)).code);
  const std::string closed = ThreadOf(b_, "closed");
  const std::string open = ThreadOf(b_, "open");
  const std::string cs = ThreadOf(c_, "for-c");
  ASSERT_FALSE(closed.empty() || open.empty() || cs.empty());

  const std::map<std::string, Code> expected = {
      {"closed-to-c", Code::denied},       {"open-to-c", Code::stored},
      {"cs-to-a", Code::invalid_field},    {"unknown-to-a", Code::invalid_field},
      {"closed-to-a", Code::stored},       {"no-thread-to-c", Code::stored}};
  const std::vector<std::vector<uint8_t>> posted = {
      Referral("closed-to-c", "c", wire::Handling::unspecified, closed),
      Referral("open-to-c", "c", wire::Handling::unspecified, open),
      Update("cs-to-a", "a", cs),
      Update("unknown-to-a", "a", std::string(32, 'f')),
      Update("closed-to-a", "a", closed),
      Referral("no-thread-to-c", "c", wire::Handling::unspecified)};
  auto sender = Connect(b_, wire::Role::sender);
  for (const auto& bytes : posted) ASSERT_TRUE(sender->SendFrames(wire::kSend, bytes).ok());
  std::map<std::string, Code> got;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (got.size() < expected.size() && std::chrono::steady_clock::now() < deadline) {
    auto r = sender->TakeReceipt(200ms);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (r->has_value()) got[(**r)->message_id()->str()] = OutcomeOf(*(**r).get()).code;
  }
  EXPECT_EQ(expected, got);
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

// A holder of H2 data asks its originator; the request reaches the
// originator under a thread reference of its own, which its grant names. A
// grant from anyone else is refused; the originator's lets the next derived
// message through to the granted agency, and only to it. All of it is in the
// ledger, names only, and `liaison audit query --thread` shows the path.
TEST_F(ThreadsTest, APermissionGrantFromTheOriginatorLetsTheCaseOnToTheGrantedAgencyOnly) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("p-root", "b", wire::Handling::H2)).code);
  const std::string thread = ThreadOf(b_, "p-root");
  ASSERT_FALSE(thread.empty());
  const Outcome before = Send(b_, Referral("p-to-c-1", "c", wire::Handling::unspecified, thread));
  EXPECT_EQ(Code::denied, before.code);
  EXPECT_EQ("handling-h2", before.reason);

  // The request goes to the originator whatever `to` says.
  const Outcome asked = Send(b_, Permission("p-ask", thread, "d", /*grant=*/false, {"c"}));
  EXPECT_EQ(Code::stored, asked.code) << asked.reason;
  std::optional<EnvelopeBuffer> request = Take(a_, "p-ask");
  ASSERT_TRUE(request);
  const wire::Envelope* req = request->get();
  EXPECT_EQ("b", req->from()->str());
  ASSERT_EQ(wire::Payload::PermissionRequest, req->payload_type());
  ASSERT_TRUE(req->payload_as_PermissionRequest()->agencies());
  EXPECT_EQ("c", req->payload_as_PermissionRequest()->agencies()->Get(0)->str());
  ASSERT_TRUE(req->thread());
  const std::string origin_ref = req->thread()->str();
  EXPECT_TRUE(std::regex_match(origin_ref, std::regex("[0-9a-f]{32}")));
  EXPECT_NE(thread, origin_ref);
  EXPECT_FALSE(req->derived_from() && req->derived_from()->size() > 0);

  // The holder cannot grant itself (nor anyone but the originator): denied,
  // and nothing granted.
  const Outcome forged = Send(b_, Permission("p-self-grant", thread, "a", /*grant=*/true, {"c"}));
  EXPECT_EQ(Code::denied, forged.code);
  EXPECT_EQ("permission-not-originator", forged.reason);
  EXPECT_TRUE(WaitForText([&] { return ReadText(broker_->ledger_path()); }, "permission-not-originator", 5000));
  EXPECT_EQ(1, LedgerRecords("denied", "p-self-grant", "permission-not-originator"));
  EXPECT_EQ("handling-h2", Send(b_, Referral("p-to-c-2", "c", wire::Handling::unspecified, thread)).reason);

  // The originator grants c, naming the reference the request reached it
  // under; the holder receives the grant.
  const Outcome granted = Send(a_, Permission("p-grant", origin_ref, "b", /*grant=*/true, {"c"},
                                              "case-coordination", "p-ask"));
  EXPECT_EQ(Code::stored, granted.code) << granted.reason;
  std::optional<EnvelopeBuffer> grant = Take(b_, "p-grant");
  ASSERT_TRUE(grant);
  ASSERT_EQ(wire::Payload::PermissionGrant, (*grant)->payload_type());
  EXPECT_EQ("c", (*grant)->payload_as_PermissionGrant()->agencies()->Get(0)->str());

  // c now, and only c: e (never granted) is still denied.
  EXPECT_EQ(Code::stored, Send(b_, Referral("p-to-c-3", "c", wire::Handling::unspecified, thread)).code);
  const Outcome to_e = Send(b_, Referral("p-to-e", "e", wire::Handling::unspecified, thread));
  EXPECT_EQ(Code::denied, to_e.code);
  EXPECT_EQ("handling-h2", to_e.reason);
  // A grant naming a message the thread's reference is not of is refused.
  const Outcome wrong_reply = Send(a_, Permission("p-grant-2", origin_ref, "b", true, {"e"}, "case-coordination",
                                                  "not-the-request"));
  EXPECT_EQ(Code::invalid_field, wrong_reply.code);

  // The ledger: the request and the grant, names of agencies only, all in
  // one thread whose id is not a thread reference.
  EXPECT_TRUE(WaitForText([&] { return ReadText(broker_->ledger_path()); }, "p-to-e", 5000));
  const std::string ask_line = LedgerLine("released", "p-ask", "a");
  const std::string grant_line = LedgerLine("released", "p-grant", "b");
  ASSERT_FALSE(ask_line.empty());
  ASSERT_FALSE(grant_line.empty());
  EXPECT_EQ("", LedgerLine("released", "p-ask", "d"));  // to the originator only
  EXPECT_NE(std::string::npos, ask_line.find("\"type\": \"PermissionRequest\"")) << ask_line;
  EXPECT_NE(std::string::npos, ask_line.find("\"permission\": [\"c\"]")) << ask_line;
  EXPECT_NE(std::string::npos, grant_line.find("\"permission\": [\"c\"]")) << grant_line;
  std::smatch m;
  const std::regex thread_field("\"thread\": \"([0-9a-f]+)\"");
  ASSERT_TRUE(std::regex_search(ask_line, m, thread_field)) << ask_line;
  const std::string thread_id = m[1];
  EXPECT_TRUE(std::regex_search(grant_line, m, thread_field));
  EXPECT_EQ(thread_id, m[1].str());
  const std::string root_line = LedgerLine("released", "p-root", "b");
  EXPECT_TRUE(std::regex_search(root_line, m, thread_field));
  EXPECT_EQ(thread_id, m[1].str());
  const std::string ledger = ReadText(broker_->ledger_path());
  for (const std::string& ref : {thread, origin_ref}) EXPECT_EQ(std::string::npos, ledger.find(ref));
  EXPECT_EQ(std::string::npos, ledger.find("CASE-p-root"));

  // An unrelated message is in another thread.
  ASSERT_EQ(Code::stored, Send(a_, Referral("p-other", "b", wire::Handling::H2)).code);
  EXPECT_FALSE(ThreadOf(b_, "p-other").empty());
  EXPECT_TRUE(WaitForText([&] { return ReadText(broker_->ledger_path()); }, "p-other", 5000));

  // The thread's whole path, in order.
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "query", "--ledger", broker_->ledger_path(), "--thread",
                           thread_id},
                          &out, &err))
      << err;
  size_t at = 0;
  for (const std::string& text : {std::string("released    a -> b"), std::string("denied      b -> c"),
                                  std::string("released    b -> a"), std::string("PermissionRequest"),
                                  std::string("permission-not-originator"), std::string("PermissionGrant"),
                                  std::string("released    b -> c"), std::string("denied      b -> e")}) {
    const size_t found = out.find(text, at);
    EXPECT_NE(std::string::npos, found) << text << " not after position " << at << " in:\n" << out;
    if (found != std::string::npos) at = found;
  }
  EXPECT_NE(std::string::npos, out.find("[permission: c]")) << out;
  EXPECT_NE(std::string::npos, out.find("delivered")) << out;
  EXPECT_NE(std::string::npos, out.find("of thread " + thread_id)) << out;

  std::string json;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "query", "--ledger", broker_->ledger_path(), "--thread",
                           thread_id, "--format", "json"},
                          &json, &err))
      << err;
  EXPECT_NE(std::string::npos, json.find("p-grant")) << json;
  EXPECT_EQ(std::string::npos, json.find("p-other")) << json;
}

// Only the data's holder asks, only about a coded thread, naming agencies
// the broker knows; and a grant lifts H1 for a judicial purpose.
TEST_F(ThreadsTest, PermissionMessagesAreCheckedAndAGrantLiftsH1ForTheGrantee) {
  ASSERT_EQ(Code::stored, Send(a_, Referral("q-root", "b", wire::Handling::H1)).code);
  const std::string thread = ThreadOf(b_, "q-root");
  ASSERT_FALSE(thread.empty());
  EXPECT_EQ(Code::missing_field, Send(b_, Permission("q-no-thread", "", "a", false, {"c"})).code);
  EXPECT_EQ(Code::invalid_field, Send(b_, Permission("q-unknown", thread, "a", false, {"nobody"})).code);
  EXPECT_EQ(Code::missing_field, Send(b_, Permission("q-empty", thread, "a", false, {})).code);
  EXPECT_EQ(Code::invalid_field, Send(c_, Permission("q-not-held", thread, "a", false, {"c"})).code);

  EXPECT_EQ(Code::stored, Send(b_, Permission("q-ask", thread, "a", false, {"c"}, "judicial-proceedings")).code);
  std::optional<EnvelopeBuffer> request = Take(a_, "q-ask");
  ASSERT_TRUE(request);
  ASSERT_TRUE((*request)->thread());
  // The agent library answers the request: derived_from, in_reply_to, to.
  wire::EnvelopeT grant;
  grant.id = "q-grant";
  grant.case_ref = "CASE-q-grant";
  grant.purpose = "judicial-proceedings";
  wire::PermissionGrantT allowed;
  allowed.agencies = {"c"};
  grant.payload.Set(std::move(allowed));
  ASSERT_TRUE(DeriveFrom(*request->get(), &grant).ok());
  EXPECT_EQ((*request)->thread()->str(), grant.derived_from);
  EXPECT_EQ("q-ask", grant.payload.AsPermissionGrant()->in_reply_to);
  ASSERT_EQ(1u, grant.to.size());
  EXPECT_EQ("b", grant.to[0]->agency);
  EXPECT_EQ(Code::stored, Send(a_, Finish(grant)).code);
  EXPECT_EQ(Code::stored, Send(b_, Update("q-court-c", "c", thread, "judicial-proceedings")).code);
  const Outcome to_d = Send(b_, Update("q-court-d", "d", thread, "judicial-proceedings"));
  EXPECT_EQ(Code::denied, to_d.code);
  EXPECT_EQ("handling-h1", to_d.reason);

  // An originator's own thread needs no permission; nor one without H1/H2.
  ASSERT_EQ(Code::stored, Send(a_, Referral("q-open", "b", wire::Handling::unspecified)).code);
  const std::string open = ThreadOf(b_, "q-open");
  ASSERT_FALSE(open.empty());
  EXPECT_EQ(Code::invalid_field, Send(b_, Permission("q-open-ask", open, "a", false, {"c"})).code);
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

// The command-line agent: `liaison listen` prints an H3 message's
// restriction text in words (and nothing for another code), and `liaison send --reply-to` files the reply
// in the received message's thread (derived_from and in_reply_to from the
// file listen wrote), so the thread's codes hold for it: back to the
// originator it is stored; passed on to c, whom the originator never
// allowed, it is denied handling-h2.
TEST_F(ThreadsTest, TheCliShowsRestrictionsAndRepliesInTheThread) {
  ASSERT_TRUE(WriteCurveKeyPair(dir_.file("cli-keys"), "b", b_.keys).ok());
  ASSERT_TRUE(WriteCurveKeyPair(dir_.file("cli-keys"), "broker", broker_->broker_keys()).ok());
  WriteText(dir_.file("b.yaml"), "brokers: [" + broker_->endpoint() +
                                     "]\nbroker_public_key_file: cli-keys/broker.pub\n"
                                     "secret_key_file: cli-keys/b.key\nreceipt_timeout_ms: 5000\n");
  wire::EnvelopeT e = Header("cli-h3", "b", wire::Handling::H3);
  e.handling_restrictions = "Only the case worker may read this.";
  e.payload.Set(wire::CaseReferralT());
  ASSERT_EQ(Code::stored, Send(a_, Finish(e)).code);
  ASSERT_EQ(Code::stored, Send(a_, Referral("cli-root", "b", wire::Handling::H2)).code);

  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "listen", "--config", dir_.file("b.yaml"), "--count", "2", "--out",
                           dir_.file("inbox")},
                          &out, &err))
      << err;
  EXPECT_NE(std::string::npos, err.find("restrictions (H3) on a cli-h3: Only the case worker may read this.\n"))
      << err;
  EXPECT_EQ(std::string::npos, err.find("restrictions (H3) on a cli-root")) << err;
  const std::string received = dir_.file("inbox") + "/a+cli-root.json";
  ASSERT_NE(std::string::npos, ReadText(received).find("\"thread\"")) << ReadText(received);

  // Back to the originator (the recipient comes from the received file).
  WriteText(dir_.file("response.json"),
            "{\"id\": \"cli-answer\", \"payload_type\": \"ReferralResponse\", \"payload\": {}}");
  EXPECT_EQ(0, RunCommand({LIAISON_CLI_BIN, "send", "--config", dir_.file("b.yaml"), "--reply-to", received,
                           dir_.file("response.json")},
                          &out, &err))
      << out << err;
  EXPECT_NE(std::string::npos, out.find("\"stored\"")) << out;
  auto answer = Take(a_, "cli-answer");
  ASSERT_TRUE(answer);
  ASSERT_TRUE((*answer)->payload_as_ReferralResponse());
  ASSERT_TRUE((*answer)->payload_as_ReferralResponse()->in_reply_to());
  EXPECT_EQ("cli-root", (*answer)->payload_as_ReferralResponse()->in_reply_to()->str());

  // Passed on to c: held to the thread, so denied. Without --reply-to the
  // same message is b's own and goes.
  WriteText(dir_.file("update.json"),
            "{\"id\": \"cli-to-c\", \"payload_type\": \"CaseUpdate\", \"payload\": {\"notes\": \"n\"}}");
  EXPECT_NE(0, RunCommand({LIAISON_CLI_BIN, "send", "--config", dir_.file("b.yaml"), "--reply-to", received, "--to",
                           "c", dir_.file("update.json")},
                          &out, &err));
  EXPECT_NE(std::string::npos, out.find("handling-h2")) << out << err;
  EXPECT_EQ(1, LedgerRecords("denied", "cli-to-c", "handling-h2"));
}

}  // namespace
}  // namespace liaison::testing

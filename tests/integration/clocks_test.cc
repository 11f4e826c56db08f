// Response deadlines through the real broker (docs/protocol.md, "Response
// deadlines"): a CaseReferral not answered in time gives its sender an
// overdue notice, its recipient a reminder and the sender's escalation
// contact a notice with metadata only; a response in time gives none; a
// late response stops the clock; a deadline passes across a restart and
// fires once. The test vocabulary sets a red deadline of a few seconds.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "audit/ledger.h"
#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using wire::Code;

// What a referral carries that no notice, log line or metric may show.
constexpr const char* kCaseRef = "CASE-SECRET-77";
constexpr const char* kGivenName = "Zawadi";
constexpr const char* kFamilyName = "Mwakilema";
constexpr const char* kReason = "recruiter-contact-in-ward";

constexpr int kRedSeconds = 4;
// Long enough that a response sent right after its referral arrives in time
// on a loaded machine; short enough to wait for.
constexpr int kAmberSeconds = 10;

std::vector<uint8_t> Finish(wire::EnvelopeT& e) {
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::vector<uint8_t> Referral(const std::string& id, const std::string& to,
                              wire::Urgency urgency = wire::Urgency::red, const std::string& case_ref = kCaseRef) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = case_ref;
  e.urgency = urgency;
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::CaseReferralT r;
  r.subject = std::make_unique<wire::SubjectT>();
  r.subject->given_name = kGivenName;
  r.subject->family_name = kFamilyName;
  r.reason = kReason;
  e.payload.Set(std::move(r));
  return Finish(e);
}

std::vector<uint8_t> Response(const std::string& id, const std::string& to, const std::string& in_reply_to) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "B-CASE-1";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::ReferralResponseT r;
  r.in_reply_to = in_reply_to;
  r.decision = wire::ResponseDecision::accepted;
  e.payload.Set(std::move(r));
  return Finish(e);
}

// Withdraws `case_ref` (sent to `to`, which received data of it).
std::vector<uint8_t> Erasure(const std::string& id, const std::string& to, const std::string& case_ref) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = case_ref;
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::ErasureRequestT r;
  r.reason = "consent-withdrawn";
  r.requested_by = "case-worker";
  e.payload.Set(std::move(r));
  return Finish(e);
}

// A notice, kept as the fields the tests look at and its raw bytes.
struct SeenNotice {
  std::string message_id, from, detail, recipient, reason;
  Code code = Code::ok;
  std::string bytes;
};

class ClocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // a escalates to coordinator e.
    a_.rules = "escalation:\n  agency: e\n";
    a_.rules += kAllowEverything;
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_, e_});
    // Seconds instead of hours, so that a deadline passes within a test.
    std::string vocabulary = ReadText(broker_->policies_dir() + "/vocabulary.yaml");
    vocabulary += "response_deadlines:\n  red: " + std::to_string(kRedSeconds) + "s\n  amber: " +
                  std::to_string(kAmberSeconds) + "s\n";
    WriteText(broker_->policies_dir() + "/vocabulary.yaml", vocabulary);
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  std::unique_ptr<Agent> Connect(const TestAgency& who, wire::Role role) {
    auto agent = Agent::Connect(broker_->AgentFor(who, role));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    if (!(*agent)->WaitReady(5000ms).ok()) throw std::runtime_error("not welcomed");
    return std::move(*agent);
  }
  Code SendTo(Agent& agent, const std::vector<uint8_t>& bytes) {
    auto r = agent.Send(bytes);
    if (!r.ok()) throw std::runtime_error(r.status().ToString());
    if ((*r)->code() != Code::ok || !(*r)->recipients() || (*r)->recipients()->size() != 1) return (*r)->code();
    return (*r)->recipients()->Get(0)->code();
  }

  // Collects `receiver`'s notices (acking deliveries) until one is an
  // overdue notice whose (message id, recipient) is (`id`, `recipient`),
  // or `timeout` passes. Every notice seen goes to `seen`.
  bool WaitForOverdue(Agent& receiver, const std::string& id, const std::string& recipient,
                      std::chrono::milliseconds timeout, std::vector<SeenNotice>* seen) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto m = receiver.Receive(100ms);
      if (m.ok() && m->has_value()) (void)receiver.Ack((**m)->from()->string_view(), (**m)->id()->string_view());
      bool found = false;
      while (auto n = receiver.TakeNotice()) {
        SeenNotice s;
        s.message_id = (*n)->message_id() ? (*n)->message_id()->str() : "";
        s.from = (*n)->from() ? (*n)->from()->str() : "";
        s.detail = (*n)->detail() ? (*n)->detail()->str() : "";
        if ((*n)->recipients() && (*n)->recipients()->size() == 1) {
          const auto* r = (*n)->recipients()->Get(0);
          s.recipient = r->recipient() ? r->recipient()->str() : "";
          s.reason = r->reason() ? r->reason()->str() : "";
          s.code = r->code();
        }
        s.bytes.assign(reinterpret_cast<const char*>((*n).bytes().data()), (*n).bytes().size());
        if (s.code == Code::overdue && s.message_id == id && s.recipient == recipient) found = true;
        seen->push_back(std::move(s));
      }
      if (found) return true;
    }
    return false;
  }
  // The same for the escalation contact, which is not told the referral's
  // id: an overdue notice from `sender` about `recipient`.
  bool WaitForEscalation(Agent& receiver, std::chrono::milliseconds timeout, std::vector<SeenNotice>* seen) {
    return WaitForOverdue(receiver, "", "b", timeout, seen);
  }

  static int Count(const std::vector<SeenNotice>& seen, const std::string& id) {
    int n = 0;
    for (const SeenNotice& s : seen) n += s.code == Code::overdue && s.message_id == id;
    return n;
  }
  static void ExpectNoCaseData(const std::string& text, const std::string& where) {
    for (const char* secret : {kCaseRef, kGivenName, kFamilyName, kReason}) {
      EXPECT_EQ(std::string::npos, text.find(secret)) << where << " shows " << secret;
    }
  }
  std::string LedgerText() const { return ReadText(broker_->ledger_path()); }
  // Ledger records of `decision` about message `id`.
  int LedgerRecords(const std::string& decision, const std::string& id) const {
    int n = 0;
    std::istringstream in(LedgerText());
    for (std::string line; std::getline(in, line);) {
      n += line.find("\"decision\": \"" + decision + "\"") != std::string::npos &&
           line.find("\"message_id\": \"" + id + "\"") != std::string::npos;
    }
    return n;
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  TestAgency e_ = MakeAgency("e", "health-service", "mombasa");  // the escalation contact
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(ClocksTest, AnUnansweredReferralNotifiesSenderRecipientAndEscalationWithMetadataOnly) {
  auto a_receiver = Connect(a_, wire::Role::receiver);
  auto b_receiver = Connect(b_, wire::Role::receiver);
  auto e_receiver = Connect(e_, wire::Role::receiver);
  auto a = Connect(a_, wire::Role::sender);
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("ref-1", "b")));

  std::vector<SeenNotice> to_a, to_b, to_e;
  const auto bound = std::chrono::seconds(kRedSeconds + 15);
  ASSERT_TRUE(WaitForOverdue(*a_receiver, "ref-1", "b", bound, &to_a)) << broker_->log();
  ASSERT_TRUE(WaitForOverdue(*b_receiver, "ref-1", "b", 10s, &to_b)) << broker_->log();
  ASSERT_TRUE(WaitForEscalation(*e_receiver, 10s, &to_e)) << broker_->log();

  auto overdue = [](const std::vector<SeenNotice>& seen) {
    for (const SeenNotice& s : seen) {
      if (s.code == Code::overdue) return s;
    }
    return SeenNotice{};
  };
  const SeenNotice sender = overdue(to_a), reminder = overdue(to_b), escalation = overdue(to_e);
  EXPECT_EQ("no-response-in-time", sender.reason);
  EXPECT_EQ("response-reminder", reminder.reason);
  EXPECT_EQ("escalation", escalation.reason);
  EXPECT_EQ("a", escalation.from);
  EXPECT_EQ("", escalation.message_id);  // not even the referral's id
  for (const SeenNotice* s : {&sender, &reminder, &escalation}) {
    EXPECT_NE(std::string::npos, s->detail.find("urgency=red")) << s->detail;
    EXPECT_NE(std::string::npos, s->detail.find("deadline_s=" + std::to_string(kRedSeconds))) << s->detail;
    EXPECT_NE(std::string::npos, s->detail.find("late_s=")) << s->detail;
    EXPECT_NE(std::string::npos, s->detail.find("sender_kind=exit-programme recipient_kind=youth-welfare"))
        << s->detail;
    ExpectNoCaseData(s->bytes, "the " + s->reason + " notice");
  }
  ExpectNoCaseData(broker_->log(), "the broker log");
  EXPECT_TRUE(broker_->WaitForLog("event=overdue agency=a recipient=b id=ref-1 urgency=red"));
  EXPECT_TRUE(broker_->WaitForLog("escalated_to=e"));

  // In the ledger once, with its metadata; in the metrics.
  EXPECT_TRUE(WaitForText([&] { return LedgerText(); }, "\"decision\": \"overdue\"", 5000));
  EXPECT_EQ(1, LedgerRecords("overdue", "ref-1"));
  const std::string log = broker_->log();
  std::smatch match;
  ASSERT_TRUE(std::regex_search(log, match, std::regex("event=admin_listening endpoint=(\\S+)")));
  const std::string metrics = HttpGet(match[1], "/metrics").second;
  EXPECT_NE(std::string::npos, metrics.find("liaison_overdue_total{urgency=\"red\"} 1")) << metrics;
  EXPECT_NE(std::string::npos, metrics.find("liaison_oldest_open_clock_age_seconds")) << metrics;
  ExpectNoCaseData(metrics, "the metrics");
}

TEST_F(ClocksTest, AResponseInTimeStopsTheClockAndALateOneClosesIt) {
  auto a_receiver = Connect(a_, wire::Role::receiver);
  auto a = Connect(a_, wire::Role::sender);
  auto b = Connect(b_, wire::Role::sender);
  // Answered at once, well within its deadline.
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("in-time", "b", wire::Urgency::amber)));
  ASSERT_EQ(Code::stored, SendTo(*b, Response("resp-1", "a", "in-time")));
  // Sent after it with the same urgency, so due after it: once this one
  // has fired, the first would have fired too (clocks fire in deadline
  // order).
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("late", "b", wire::Urgency::amber)));
  std::vector<SeenNotice> seen;
  ASSERT_TRUE(WaitForOverdue(*a_receiver, "late", "b", std::chrono::seconds(kAmberSeconds + 15), &seen))
      << broker_->log();
  EXPECT_EQ(0, Count(seen, "in-time"));
  EXPECT_EQ(0, LedgerRecords("overdue", "in-time"));
  // The response's record names the referral by its link, not by the
  // payload's text.
  EXPECT_NE(std::string::npos, LedgerText().find("\"in_reply_to\": \"" + audit::ReferralLink("a", "in-time") + "\""));

  // The late response closes the clock: no referral waits any more.
  ASSERT_EQ(Code::stored, SendTo(*b, Response("resp-2", "a", "late")));
  const std::string log = broker_->log();
  std::smatch match;
  ASSERT_TRUE(std::regex_search(log, match, std::regex("event=admin_listening endpoint=(\\S+)")));
  const std::string endpoint = match[1];
  EXPECT_TRUE(WaitForText([&] { return HttpGet(endpoint, "/metrics").second; },
                          "\nliaison_oldest_open_clock_age_seconds 0\n", 10000))
      << HttpGet(endpoint, "/metrics").second;
  EXPECT_EQ(1, LedgerRecords("overdue", "late"));
}

TEST_F(ClocksTest, ADeadlinePassingWhileTheBrokerIsDownFiresOnceAfterTheRestart) {
  {
    auto a = Connect(a_, wire::Role::sender);
    ASSERT_EQ(Code::stored, SendTo(*a, Referral("across", "b")));
  }
  const std::string endpoint = broker_->endpoint();
  ASSERT_EQ(0, broker_->Stop(SIGTERM));
  // The deadline passes while no broker runs.
  std::this_thread::sleep_for(std::chrono::seconds(kRedSeconds + 1));
  ASSERT_TRUE(broker_->Start(endpoint).ok());
  auto a_receiver = Connect(a_, wire::Role::receiver);
  std::vector<SeenNotice> seen;
  ASSERT_TRUE(WaitForOverdue(*a_receiver, "across", "b", 15s, &seen)) << broker_->log();
  EXPECT_TRUE(broker_->WaitForLog("event=overdue agency=a recipient=b id=across urgency=red late_s="));

  // Restarted again, it does not fire a second time: a later clock fires,
  // and "across" is not among the notices before it.
  ASSERT_EQ(0, broker_->Stop(SIGTERM));
  ASSERT_TRUE(broker_->Start(endpoint).ok());
  a_receiver = Connect(a_, wire::Role::receiver);
  auto a = Connect(a_, wire::Role::sender);
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("after", "b")));
  seen.clear();
  ASSERT_TRUE(WaitForOverdue(*a_receiver, "after", "b", std::chrono::seconds(kRedSeconds + 15), &seen))
      << broker_->log();
  EXPECT_EQ(0, Count(seen, "across"));
  EXPECT_EQ(1, LedgerRecords("overdue", "across"));
}

TEST_F(ClocksTest, AReferralWithoutUrgencyStartsNoClock) {
  auto a_receiver = Connect(a_, wire::Role::receiver);
  auto a = Connect(a_, wire::Role::sender);
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("no-urgency", "b", wire::Urgency::unspecified)));
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("urgent", "b")));
  std::vector<SeenNotice> seen;
  ASSERT_TRUE(WaitForOverdue(*a_receiver, "urgent", "b", std::chrono::seconds(kRedSeconds + 15), &seen))
      << broker_->log();
  EXPECT_EQ(0, Count(seen, "no-urgency"));
}

TEST_F(ClocksTest, AWithdrawnCaseRaisesNoOverdueNotice) {
  auto a_receiver = Connect(a_, wire::Role::receiver);
  auto a = Connect(a_, wire::Role::sender);
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("withdrawn", "b")));
  ASSERT_EQ(Code::stored, SendTo(*a, Erasure("erase-1", "b", kCaseRef)));
  // Another case's referral, sent after the erasure with the same urgency:
  // due after the withdrawn one, so when it fires the withdrawn one would
  // have fired before it.
  ASSERT_EQ(Code::stored, SendTo(*a, Referral("kept", "b", wire::Urgency::red, "CASE-OTHER-1")));
  std::vector<SeenNotice> seen;
  ASSERT_TRUE(WaitForOverdue(*a_receiver, "kept", "b", std::chrono::seconds(kRedSeconds + 15), &seen))
      << broker_->log();
  EXPECT_EQ(0, Count(seen, "withdrawn"));
  EXPECT_EQ(0, LedgerRecords("overdue", "withdrawn"));
  EXPECT_EQ(1, LedgerRecords("overdue", "kept"));
}

}  // namespace
}  // namespace liaison::testing

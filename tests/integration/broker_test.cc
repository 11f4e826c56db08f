// End-to-end tests: the real liaison-broker process on a free loopback port,
// CURVE on, real keys and policy files, driven by the real agent library.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <random>
#include <regex>
#include <set>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "audit/ledger.h"
#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "liaison/keys.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using wire::Code;

struct Address {
  std::string agency;
  std::string kind = {};
  std::string region = {};
};

std::vector<uint8_t> MakeEnvelope(const std::vector<Address>& to, const std::string& id,
                                  const std::string& from = "", const std::string& national_id = "") {
  wire::EnvelopeT e;
  e.id = id;
  e.from = from;
  e.case_ref = "CASE-7";
  e.purpose = "referral-for-services";
  for (const auto& a : to) {
    auto r = std::make_unique<wire::RecipientT>();
    r->agency = a.agency;
    r->kind = a.kind;
    r->region = a.region;
    e.to.push_back(std::move(r));
  }
  wire::CaseReferralT referral;
  referral.reason = "needs mentoring";
  if (!national_id.empty()) {
    referral.subject = std::make_unique<wire::SubjectT>();
    referral.subject->national_id = national_id;
  }
  e.payload.Set(referral);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  return wire::Rfc3339(std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartBroker(""); }

  void StartBroker(const std::string& extra_config) {
    broker_.reset();
    dir_ = std::make_unique<TempDir>();
    broker_ = std::make_unique<BrokerProcess>(*dir_, std::vector<TestAgency>{exit_, youth_m_, youth_k_, security_},
                                              extra_config);
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  std::unique_ptr<Agent> Sender(const TestAgency& agency) {
    auto agent = Agent::Connect(broker_->AgentFor(agency, wire::Role::sender));
    EXPECT_TRUE(agent.ok()) << agent.status().ToString();
    return agent.ok() ? std::move(*agent) : nullptr;
  }

  // A receiver the broker has registered (it answered HELLO with WELCOME).
  std::unique_ptr<Agent> Receiver(const TestAgency& agency) {
    auto agent = Agent::Connect(broker_->AgentFor(agency, wire::Role::receiver));
    EXPECT_TRUE(agent.ok()) << agent.status().ToString();
    if (!agent.ok()) return nullptr;
    EXPECT_TRUE((*agent)->WaitReady(5000ms).ok());
    EXPECT_EQ(agency.id, (*agent)->agency_id());
    return std::move(*agent);
  }

  // Sends and expects a receipt (whatever it says).
  ReceiptBuffer SendOk(Agent& agent, const std::vector<uint8_t>& bytes) {
    auto receipt = agent.Send(bytes);
    EXPECT_TRUE(receipt.ok()) << receipt.status().ToString();
    if (!receipt.ok()) throw std::runtime_error("no receipt");
    return std::move(*receipt);
  }

  std::optional<EnvelopeBuffer> ReceiveOne(Agent& agent, std::chrono::milliseconds wait = 3000ms) {
    auto message = agent.Receive(wait);
    EXPECT_TRUE(message.ok()) << message.status().ToString();
    return message.ok() ? std::move(*message) : std::nullopt;
  }

  TestAgency exit_ = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency youth_m_ = MakeAgency("youth-m", "youth-welfare", "mombasa");
  TestAgency youth_k_ = MakeAgency("youth-k", "youth-welfare", "kwale");
  TestAgency security_ = MakeAgency("sec-m", "security-agency", "mombasa");
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(BrokerTest, DeliversToTheAddressedAgencyWithAReceipt) {
  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);
  ReceiptBuffer receipt = SendOk(*exit, MakeEnvelope({{"youth-m"}}, "msg-1"));
  EXPECT_EQ(Code::ok, receipt->code());
  EXPECT_EQ("msg-1", receipt->message_id()->str());
  EXPECT_EQ("exit-a", receipt->from()->str());
  ASSERT_EQ(1u, receipt->recipients()->size());
  EXPECT_EQ("youth-m", receipt->recipients()->Get(0)->recipient()->str());
  EXPECT_EQ(Code::stored, receipt->recipients()->Get(0)->code());

  auto message = ReceiveOne(*youth);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ("msg-1", (*message)->id()->str());
  EXPECT_EQ("exit-a", (*message)->from()->str());  // set by the broker
  ASSERT_EQ(1u, (*message)->to()->size());
  EXPECT_EQ("youth-m", (*message)->to()->Get(0)->agency()->str());
  EXPECT_EQ("needs mentoring", (*message)->payload_as_CaseReferral()->reason()->str());
  EXPECT_TRUE(youth->Ack("msg-1").ok());
}

TEST_F(BrokerTest, AddressesByKindAndRegion) {
  auto youth_m = Receiver(youth_m_);
  auto youth_k = Receiver(youth_k_);
  auto exit = Sender(exit_);

  ReceiptBuffer kwale = SendOk(*exit, MakeEnvelope({{"", "youth-welfare", "kwale"}}, "k-1"));
  ASSERT_EQ(1u, kwale->recipients()->size());
  EXPECT_EQ("youth-k", kwale->recipients()->Get(0)->recipient()->str());
  auto got = ReceiveOne(*youth_k);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ("k-1", (*got)->id()->str());

  ReceiptBuffer all = SendOk(*exit, MakeEnvelope({{"", "youth-welfare", ""}}, "k-2"));
  EXPECT_EQ(2u, all->recipients()->size());
  for (Agent* agent : {youth_m.get(), youth_k.get()}) {
    auto m = ReceiveOne(*agent);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ("k-2", (*m)->id()->str());
  }
  // youth-m never saw the Kwale-only message.
  auto extra = ReceiveOne(*youth_m, 300ms);
  EXPECT_FALSE(extra.has_value());
}

TEST_F(BrokerTest, OfflineAndUnknownRecipientsAreReported) {
  auto exit = Sender(exit_);
  ReceiptBuffer receipt =
      SendOk(*exit, MakeEnvelope({{"sec-m"}, {"no-such-agency"}, {"", "prison-service", ""}}, "o-1"));
  ASSERT_EQ(Code::ok, receipt->code());
  ASSERT_EQ(3u, receipt->recipients()->size());
  std::map<std::string, Code> codes;
  for (const auto* r : *receipt->recipients()) codes[r->recipient()->str()] = r->code();
  EXPECT_EQ(Code::stored, codes["sec-m"]);  // kept until it connects
  EXPECT_EQ(Code::unknown_recipient, codes["no-such-agency"]);
  EXPECT_EQ(Code::unknown_recipient, codes["kind:prison-service"]);

  ReceiptBuffer later = SendOk(*exit, MakeEnvelope({{"sec-m"}}, "o-2"));
  EXPECT_EQ(Code::stored, later->recipients()->Get(0)->code());
  // The recipient connects: both arrive, in the order they were sent.
  auto security = Receiver(security_);
  for (const char* id : {"o-1", "o-2"}) {
    auto m = ReceiveOne(*security);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(id, (*m)->id()->str());
    EXPECT_TRUE(security->Ack(id).ok());
  }
  // The sender's receiver hears that both were delivered.
  auto exit_receiver = Receiver(exit_);
  std::set<std::string> delivered;
  for (int i = 0; i < 60 && delivered.size() < 2; ++i) {
    (void)exit_receiver->Receive(50ms);
    while (auto notice = exit_receiver->TakeNotice()) {
      ASSERT_EQ(1u, (*notice)->recipients()->size());
      EXPECT_EQ(Code::delivered, (*notice)->recipients()->Get(0)->code());
      delivered.insert((*notice)->message_id()->str());
    }
  }
  EXPECT_EQ((std::set<std::string>{"o-1", "o-2"}), delivered);
}

TEST_F(BrokerTest, UnknownKeyIsRefusedAndLoggedByFingerprint) {
  TestAgency stranger = MakeAgency("stranger", "exit-programme", "mombasa");
  auto options = broker_->AgentFor(stranger);
  options.receipt_timeout = 3000ms;
  auto agent = Agent::Connect(options);
  ASSERT_TRUE(agent.ok());
  auto receipt = (*agent)->Send(MakeEnvelope({{"youth-m"}}, "s-1"));
  ASSERT_FALSE(receipt.ok());
  EXPECT_EQ(Status::Code::kPermissionDenied, receipt.status().code());
  const std::string fingerprint = KeyFingerprint(DecodeZ85Key(stranger.keys.public_z85));
  EXPECT_TRUE(broker_->WaitForLog("reason=unknown_key key_fingerprint=" + fingerprint));
  // The key itself is never logged.
  EXPECT_EQ(std::string::npos, broker_->log().find(stranger.keys.public_z85));
}

TEST_F(BrokerTest, WrongBrokerKeyNeverConnects) {
  auto options = broker_->AgentFor(exit_);
  options.broker_public_key = MakeAgency("x", "k", "r").keys.public_z85;
  options.receipt_timeout = 1500ms;
  auto agent = Agent::Connect(options);
  ASSERT_TRUE(agent.ok());
  auto receipt = (*agent)->Send(MakeEnvelope({{"youth-m"}}, "w-1"));
  ASSERT_FALSE(receipt.ok());
  EXPECT_EQ(Status::Code::kDeadlineExceeded, receipt.status().code());
}

TEST_F(BrokerTest, PlaintextClientIsRefusedAndOthersKeepWorking) {
  zmq::context_t context;
  zmq::socket_t plain(context, zmq::socket_type::dealer);
  plain.set(zmq::sockopt::linger, 0);
  plain.connect(broker_->endpoint());
  auto bytes = MakeEnvelope({{"youth-m"}}, "p-1");
  plain.send(zmq::str_buffer("SEND"), zmq::send_flags::sndmore);
  plain.send(zmq::buffer(bytes), zmq::send_flags::none);
  zmq::pollitem_t items[] = {{plain.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, 1000ms);
  EXPECT_FALSE(items[0].revents & ZMQ_POLLIN) << "a plaintext peer got an answer";
  // Usually reason=plaintext_or_wrong_mechanism; on a loaded machine the
  // handshake may time out first (reason=handshake_failed). Refused either way.
  EXPECT_TRUE(broker_->WaitForLog("event=handshake_refused reason=", 7000)) << broker_->log();

  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);
  EXPECT_EQ(Code::stored, SendOk(*exit, MakeEnvelope({{"youth-m"}}, "p-2"))->recipients()->Get(0)->code());
  auto m = ReceiveOne(*youth);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ("p-2", (*m)->id()->str());  // the plaintext message never arrived
}

TEST_F(BrokerTest, SpoofedFromIsRejected) {
  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);
  ReceiptBuffer receipt = SendOk(*exit, MakeEnvelope({{"youth-m"}}, "f-1", "sec-m"));
  EXPECT_EQ(Code::spoofed_sender, receipt->code());
  EXPECT_EQ(0u, receipt->recipients() ? receipt->recipients()->size() : 0u);
  EXPECT_FALSE(ReceiveOne(*youth, 300ms).has_value());
  // Naming itself is fine.
  EXPECT_EQ(Code::ok, SendOk(*exit, MakeEnvelope({{"youth-m"}}, "f-2", "exit-a"))->code());
}

TEST_F(BrokerTest, BadBuffersGetErrorReceiptsWhileOthersAreServed) {
  StartBroker("limits:\n  max_message_bytes: 4096\n");
  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);

  std::mt19937 rng(7);
  std::vector<uint8_t> random(300);
  for (auto& b : random) b = static_cast<uint8_t>(rng());
  ReceiptBuffer r1 = SendOk(*exit, random);
  EXPECT_EQ(Code::malformed, r1->code());
  EXPECT_EQ("", r1->message_id()->str());

  auto good = MakeEnvelope({{"youth-m"}}, "b-1");
  std::vector<uint8_t> truncated(good.begin(), good.begin() + good.size() / 2);
  EXPECT_EQ(Code::malformed, SendOk(*exit, truncated)->code());

  wire::EnvelopeT big;
  big.id = "b-big";
  auto r = std::make_unique<wire::RecipientT>();
  r->agency = "youth-m";
  big.to.push_back(std::move(r));
  wire::CaseUpdateT update;
  update.notes = std::string(6000, 'x');
  big.payload.Set(update);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &big));
  ReceiptBuffer r3 = SendOk(*exit, {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()});
  EXPECT_EQ(Code::too_large, r3->code());
  EXPECT_NE(std::string::npos, r3->detail()->str().find("4096"));

  // Far above the limit, libzmq drops the connection; the agent reconnects.
  std::vector<uint8_t> huge(64 * 1024, 0);
  ASSERT_TRUE(exit->SendFrames(wire::kSend, huge).ok());

  ReceiptBuffer after = SendOk(*exit, good);
  EXPECT_EQ(Code::stored, after->recipients()->Get(0)->code());
  auto m = ReceiveOne(*youth);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ("b-1", (*m)->id()->str());
  EXPECT_FALSE(ReceiveOne(*youth, 300ms).has_value());  // nothing else got through
}

TEST_F(BrokerTest, BadFramesAndCommandsAreAnswered) {
  auto exit = Sender(exit_);
  // An unknown command.
  ASSERT_TRUE(exit->SendFrames("PUBLISH", MakeEnvelope({{"youth-m"}}, "c-1")).ok());
  ReceiptBuffer unknown = SendOk(*exit, std::vector<uint8_t>{});  // waits for the "" receipt
  // Both the PUBLISH and the empty SEND are answered with an empty id; the
  // agent keeps the newest, so check the broker counted the command.
  (void)unknown;
  EXPECT_TRUE(broker_->WaitForLog("reason=unknown_command"));

  // A CURVE client that sends three frames.
  zmq::context_t context;
  zmq::socket_t raw(context, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::curve_serverkey, broker_->broker_keys().public_z85);
  raw.set(zmq::sockopt::curve_publickey, exit_.keys.public_z85);
  raw.set(zmq::sockopt::curve_secretkey, exit_.keys.secret_z85);
  raw.connect(broker_->endpoint());
  std::vector<zmq::const_buffer> frames = {zmq::str_buffer("SEND"), zmq::str_buffer("a"),
                                           zmq::str_buffer("b")};
  zmq::send_multipart(raw, frames);
  std::vector<zmq::message_t> reply;
  raw.set(zmq::sockopt::rcvtimeo, 3000);
  ASSERT_TRUE(zmq::recv_multipart(raw, std::back_inserter(reply)));
  ASSERT_EQ(2u, reply.size());
  EXPECT_EQ("RECEIPT", reply[0].to_string());
  const wire::Receipt* receipt = wire::VerifyReceipt({reply[1].data<uint8_t>(), reply[1].size()});
  ASSERT_NE(nullptr, receipt);
  EXPECT_EQ(Code::malformed, receipt->code());
}

TEST_F(BrokerTest, ResendGetsTheOriginalReceiptAndOneDelivery) {
  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);
  auto bytes = MakeEnvelope({{"youth-m"}}, "d-1");
  ReceiptBuffer first = SendOk(*exit, bytes);
  ReceiptBuffer second = SendOk(*exit, bytes);
  EXPECT_EQ(first->at()->str(), second->at()->str());  // the same receipt
  EXPECT_EQ(Code::stored, second->recipients()->Get(0)->code());
  ASSERT_TRUE(ReceiveOne(*youth).has_value());
  EXPECT_FALSE(ReceiveOne(*youth, 300ms).has_value());
  EXPECT_TRUE(broker_->WaitForLog("event=duplicate agency=exit-a id=d-1"));
}

// The broker knows a resend from a new message without reading the store
// for every message (core/receipt_filter.h): what it knows must include
// every receipt stored before it started.
TEST_F(BrokerTest, AResendAfterARestartGetsTheOriginalReceiptAndNoSecondDelivery) {
  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);
  auto bytes = MakeEnvelope({{"youth-m"}}, "d-2");
  ReceiptBuffer first = SendOk(*exit, bytes);
  EXPECT_EQ(Code::stored, first->recipients()->Get(0)->code());
  ASSERT_TRUE(ReceiveOne(*youth).has_value());

  const std::string endpoint = broker_->endpoint();
  EXPECT_EQ(0, broker_->Stop(SIGTERM));
  Status st = broker_->Start(endpoint);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(broker_->WaitForLog("event=receipt_filter_loaded receipts=1 "));

  ReceiptBuffer second = SendOk(*exit, bytes);
  EXPECT_EQ(first->at()->str(), second->at()->str()) << "the same receipt";
  EXPECT_EQ(Code::stored, second->recipients()->Get(0)->code());
  EXPECT_TRUE(broker_->WaitForLog("event=duplicate agency=exit-a id=d-2"));
  EXPECT_FALSE(ReceiveOne(*youth, 300ms).has_value());
  // A new id after it is still new.
  EXPECT_EQ(Code::stored, SendOk(*exit, MakeEnvelope({{"youth-m"}}, "d-3"))->recipients()->Get(0)->code());
  auto m = ReceiveOne(*youth);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ("d-3", (*m)->id()->str());
}

// New ids are told from resends without a store read each: only the
// resend (and, rarely, a new id the filter cannot rule out) is looked up.
TEST_F(BrokerTest, NewMessagesAreNotLookedUpInTheStoreAsResends) {
  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);
  std::smatch match;
  const std::string log = broker_->log();
  ASSERT_TRUE(std::regex_search(log, match, std::regex("event=admin_listening endpoint=(\\S+)")));
  const std::string admin = match[1];
  auto lookups = [&]() -> long {
    const std::string metrics = HttpGet(admin, "/metrics").second;
    std::smatch m;
    if (!std::regex_search(metrics, m, std::regex("\nliaison_receipt_lookups_total (\\d+)"))) return -1;
    return std::stol(m[1]);
  };
  ASSERT_EQ(0, lookups());
  auto bytes = MakeEnvelope({{"youth-m"}}, "n-0");
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(Code::stored, SendOk(*exit, i == 0 ? bytes : MakeEnvelope({{"youth-m"}}, "n-" + std::to_string(i)))
                                ->recipients()->Get(0)->code());
  }
  EXPECT_LE(lookups(), 2) << "new ids read from the store";
  const long before = lookups();
  EXPECT_EQ(Code::stored, SendOk(*exit, bytes)->recipients()->Get(0)->code());
  EXPECT_TRUE(broker_->WaitForLog("event=duplicate agency=exit-a id=n-0"));
  EXPECT_EQ(before + 1, lookups()) << "the resend is read from the store";
}

TEST_F(BrokerTest, AgentsReconnectAfterABrokerRestart) {
  auto youth = Receiver(youth_m_);
  auto exit = Sender(exit_);
  EXPECT_EQ(Code::stored,
            SendOk(*exit, MakeEnvelope({{"youth-m"}}, "r-1"))->recipients()->Get(0)->code());
  ASSERT_TRUE(ReceiveOne(*youth).has_value());

  const std::string endpoint = broker_->endpoint();
  EXPECT_EQ(0, broker_->Stop(SIGTERM));
  Status st = broker_->Start(endpoint);
  ASSERT_TRUE(st.ok()) << st.ToString();

  // The receiver re-introduces itself once its connection is back.
  for (int i = 0; i < 100 && Count(broker_->log(), "event=connect agency=youth-m role=receiver") < 2;
       ++i) {
    (void)youth->Receive(50ms);
  }
  ASSERT_EQ(2u, Count(broker_->log(), "event=connect agency=youth-m role=receiver"));
  ReceiptBuffer receipt = SendOk(*exit, MakeEnvelope({{"youth-m"}}, "r-2"));
  EXPECT_EQ(Code::stored, receipt->recipients()->Get(0)->code());
  auto m = ReceiveOne(*youth);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ("r-2", (*m)->id()->str());
}

TEST_F(BrokerTest, ReloadAdmitsNewAgenciesAndKeepsTheLastGoodSet) {
  TestAgency prison = MakeAgency("prison-p", "prison-service", "mombasa");
  WriteText(broker_->policies_dir() + "/agencies/prison-p.yaml",
            "id: prison-p\nname: P\nkind: prison-service\nregion: mombasa\npublic_key: \"" +
                prison.keys.public_z85 + "\"\n" + kAllowEverything);
  broker_->Signal(SIGHUP);
  ASSERT_TRUE(broker_->WaitForLog("event=reload_done agencies=5"));
  auto youth = Receiver(youth_m_);
  auto sender = Sender(prison);
  EXPECT_EQ(Code::stored,
            SendOk(*sender, MakeEnvelope({{"youth-m"}}, "h-1"))->recipients()->Get(0)->code());

  WriteText(broker_->policies_dir() + "/agencies/broken.yaml", "id: broken\nkind: [oops\n");
  broker_->Signal(SIGHUP);
  ASSERT_TRUE(broker_->WaitForLog("event=reload_failed"));
  EXPECT_TRUE(broker_->WaitForLog("broken.yaml:"));
  EXPECT_EQ(Code::stored,
            SendOk(*sender, MakeEnvelope({{"youth-m"}}, "h-2"))->recipients()->Get(0)->code());
}

TEST_F(BrokerTest, AReplacedKeyStopsWorkingOnOpenConnections) {
  auto youth = Receiver(youth_m_);
  auto options = broker_->AgentFor(exit_);
  options.receipt_timeout = 1500ms;
  auto old_agent = Agent::Connect(options);
  ASSERT_TRUE(old_agent.ok());
  EXPECT_EQ(Code::ok, SendOk(**old_agent, MakeEnvelope({{"youth-m"}}, "v-1"))->code());
  ASSERT_TRUE(ReceiveOne(*youth).has_value());

  // The operator rotates exit-a's key (revoking the old one) and reloads.
  TestAgency rotated = MakeAgency("exit-a", "exit-programme", "mombasa");
  WriteText(broker_->policies_dir() + "/agencies/exit-a.yaml",
            "id: exit-a\nname: A\nkind: exit-programme\nregion: mombasa\npublic_key: \"" +
                rotated.keys.public_z85 + "\"\n" + kAllowEverything);
  broker_->Signal(SIGHUP);
  ASSERT_TRUE(broker_->WaitForLog("event=reload_done"));

  auto refused = (*old_agent)->Send(MakeEnvelope({{"youth-m"}}, "v-2"));
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(broker_->WaitForLog("event=message_with_revoked_key agency=exit-a"));
  EXPECT_FALSE(ReceiveOne(*youth, 300ms).has_value());

  auto fresh = Sender(rotated);
  EXPECT_EQ(Code::stored,
            SendOk(*fresh, MakeEnvelope({{"youth-m"}}, "v-3"))->recipients()->Get(0)->code());
  auto m = ReceiveOne(*youth);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ("v-3", (*m)->id()->str());
}

TEST_F(BrokerTest, DuringARotationOverlapOldAndNewKeysBothWorkUntilItsEnd) {
  auto youth = Receiver(youth_m_);
  auto options = broker_->AgentFor(exit_);
  options.receipt_timeout = 1500ms;
  auto old_agent = Agent::Connect(options);
  ASSERT_TRUE(old_agent.ok());
  EXPECT_EQ(Code::ok, SendOk(**old_agent, MakeEnvelope({{"youth-m"}}, "o-0"))->code());

  // The agency has a new key; the old one stays valid for 3 more seconds.
  TestAgency rotated = MakeAgency("exit-a", "exit-programme", "mombasa");
  const auto end = std::chrono::system_clock::now() + 3s;
  const std::string until = Rfc3339(end);
  WriteText(broker_->policies_dir() + "/agencies/exit-a.yaml",
            "id: exit-a\nname: A\nkind: exit-programme\nregion: mombasa\npublic_key: \"" +
                rotated.keys.public_z85 + "\"\nprevious_public_key: \"" + exit_.keys.public_z85 +
                "\"\nprevious_key_valid_until: \"" + until + "\"\n" + kAllowEverything);
  broker_->Signal(SIGHUP);
  ASSERT_TRUE(broker_->WaitForLog("event=reload_done"));

  // Both keys work, on open and on new connections.
  EXPECT_EQ(Code::stored, SendOk(**old_agent, MakeEnvelope({{"youth-m"}}, "o-1"))->recipients()->Get(0)->code());
  auto old_again = Agent::Connect(options);
  ASSERT_TRUE(old_again.ok());
  EXPECT_EQ(Code::stored, SendOk(**old_again, MakeEnvelope({{"youth-m"}}, "o-2"))->recipients()->Get(0)->code());
  EXPECT_TRUE(broker_->WaitForLog("event=auth_previous_key agency=exit-a"));
  auto fresh = Sender(rotated);
  EXPECT_EQ(Code::stored, SendOk(*fresh, MakeEnvelope({{"youth-m"}}, "n-1"))->recipients()->Get(0)->code());

  // After the overlap only the new key works.
  std::this_thread::sleep_until(end + 1200ms);
  EXPECT_FALSE((*old_agent)->Send(MakeEnvelope({{"youth-m"}}, "o-3")).ok());
  EXPECT_TRUE(broker_->WaitForLog("event=message_with_revoked_key agency=exit-a"));
  auto late = Agent::Connect(options);
  ASSERT_TRUE(late.ok());
  auto refused = (*late)->Send(MakeEnvelope({{"youth-m"}}, "o-4"));
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(broker_->WaitForLog("reason=previous_key_expired agency=exit-a"));
  EXPECT_EQ(Code::stored, SendOk(*fresh, MakeEnvelope({{"youth-m"}}, "n-2"))->recipients()->Get(0)->code());
  std::vector<std::string> got;
  while (auto m = ReceiveOne(*youth, 500ms)) got.push_back((*m)->id()->str());
  EXPECT_EQ(got, (std::vector<std::string>{"o-0", "o-1", "o-2", "n-1", "n-2"}));
}

// The broker's own key: the old key is served on its old endpoint until the
// overlap ends while agencies move to the new key and endpoint; pseudonyms
// do not change, since they come from the pseudonym key.
TEST_F(BrokerTest, RotatingTheBrokerKeyKeepsTheOldKeyUntilTheOverlapEndsAndChangesNoPseudonym) {
  // exit-a pseudonymises the subject's national id for every recipient.
  exit_.rules =
      "release:\n  - id: pseudonymise-ids\n    messages: [CaseReferral]\n"
      "    fields: {subject.national_id: pseudonymize, others: allow}\n"
      "accept:\n  - id: accept-everything\n    messages: [CaseReferral]\n    fields: {others: allow}\n";
  StartBroker("");
  std::vector<std::string> tokens;  // the national id as youth-m received it, per message
  auto token_of = [&](const std::optional<EnvelopeBuffer>& m) {
    const auto* subject = m ? (*m)->payload_as_CaseReferral()->subject() : nullptr;
    tokens.push_back(subject && subject->national_id() ? subject->national_id()->str() : "(none)");
  };
  const AgentOptions old_exit = [&] {
    auto o = broker_->AgentFor(exit_);
    o.receipt_timeout = 3000ms;  // long enough to ride out the broker's restart
    return o;
  }();
  const AgentOptions old_youth = broker_->AgentFor(youth_m_, wire::Role::receiver);
  auto exit_agent = Agent::Connect(old_exit);
  auto youth = Agent::Connect(old_youth);
  ASSERT_TRUE(exit_agent.ok() && youth.ok());
  ASSERT_TRUE((*youth)->WaitReady(5000ms).ok());
  EXPECT_EQ(Code::ok, SendOk(**exit_agent, MakeEnvelope({{"youth-m"}}, "k-0", "", "NID-4711"))->code());
  auto m0 = ReceiveOne(**youth);
  ASSERT_TRUE(m0.has_value());
  token_of(m0);
  ASSERT_TRUE((*youth)->Ack("k-0").ok());

  // The operator rotates: the old key stays on the old endpoint for 5 s.
  const std::string old_endpoint = broker_->endpoint();
  const std::string old_fingerprint = KeyFingerprint(DecodeZ85Key(broker_->broker_keys().public_z85));
  ASSERT_EQ(0, broker_->Stop());
  const auto end = std::chrono::system_clock::now() + 5s;
  ASSERT_TRUE(broker_->RotateKey(old_endpoint, Rfc3339(end)).ok());
  ASSERT_TRUE(broker_->Start().ok());
  ASSERT_NE(old_endpoint, broker_->endpoint());
  EXPECT_TRUE(broker_->WaitForLog("event=listening_previous_key endpoint=" + old_endpoint +
                                  " broker_key_fingerprint=" + old_fingerprint));

  // The agents that still have the old key reconnect and are served...
  EXPECT_EQ(Code::stored,
            SendOk(**exit_agent, MakeEnvelope({{"youth-m"}}, "k-1", "", "NID-4711"))->recipients()->Get(0)->code());
  auto m1 = ReceiveOne(**youth);
  ASSERT_TRUE(m1.has_value());
  EXPECT_EQ("k-1", (*m1)->id()->str());
  token_of(m1);
  ASSERT_TRUE((*youth)->Ack("k-1").ok());
  EXPECT_TRUE(broker_->WaitForLog("event=auth_previous_broker_key agency=exit-a"));
  // ...and so are agents with the new key on the new endpoint.
  auto new_exit = Sender(exit_);
  ASSERT_NE(nullptr, new_exit);
  EXPECT_EQ(Code::stored, SendOk(*new_exit, MakeEnvelope({{"youth-m"}}, "k-2", "", "NID-4711"))->recipients()->Get(0)->code());
  auto m2 = ReceiveOne(**youth);
  ASSERT_TRUE(m2.has_value());
  EXPECT_EQ("k-2", (*m2)->id()->str());
  token_of(m2);
  ASSERT_TRUE((*youth)->Ack("k-2").ok());

  // After the overlap the old endpoint is closed: old agents are not served,
  // new ones are.
  std::this_thread::sleep_until(end + 1200ms);
  EXPECT_TRUE(broker_->WaitForLog("event=broker_key_retired broker_key_fingerprint=" + old_fingerprint));
  EXPECT_FALSE((*exit_agent)->Send(MakeEnvelope({{"youth-m"}}, "k-3")).ok());
  auto late_options = old_exit;
  late_options.receipt_timeout = 1000ms;
  auto late = Agent::Connect(late_options);
  ASSERT_TRUE(late.ok());
  EXPECT_FALSE((*late)->Send(MakeEnvelope({{"youth-m"}}, "k-4")).ok());
  EXPECT_EQ(Code::stored, SendOk(*new_exit, MakeEnvelope({{"youth-m"}}, "k-5", "", "NID-4711"))->recipients()->Get(0)->code());
  EXPECT_FALSE(ReceiveOne(**youth, 500ms).has_value());  // the old receiver gets nothing more
  auto new_youth = Receiver(youth_m_);
  ASSERT_NE(nullptr, new_youth);
  auto m5 = ReceiveOne(*new_youth);
  ASSERT_TRUE(m5.has_value());
  EXPECT_EQ("k-5", (*m5)->id()->str());
  token_of(m5);

  // The field pseudonym is the same before, during and after the rotation.
  ASSERT_EQ(4u, tokens.size());
  EXPECT_EQ(32u, tokens[0].size()) << tokens[0];
  EXPECT_EQ(std::vector<std::string>(4, tokens[0]), tokens);
  EXPECT_EQ(std::string::npos, tokens[0].find("4711"));

  // So is every ledger record's case pseudonym, which comes from the same key.
  auto pseudonym_key = LoadPseudonymKeyFile(broker_->pseudonym_key_path());
  ASSERT_TRUE(pseudonym_key.ok());
  const std::string expected = audit::CasePseudonym(audit::DeriveCaseKey(*pseudonym_key), "exit-a", "CASE-7");
  ASSERT_EQ(0, broker_->Stop());
  auto records = audit::ReadLedger(broker_->ledger_path());
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  std::set<std::string> released;
  for (const auto& bytes : *records) {
    const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
    if (!r->message_id() || r->decision() != ledger::Decision::released) continue;
    released.insert(r->message_id()->str());
    EXPECT_EQ(expected, r->case_() ? r->case_()->str() : "") << r->message_id()->str();
  }
  EXPECT_EQ(released, (std::set<std::string>{"k-0", "k-1", "k-2", "k-5"}));
}

TEST_F(BrokerTest, APreviousBrokerKeyThatIsTheCurrentOneStopsTheStart) {
  ASSERT_EQ(0, broker_->Stop());
  WriteText(dir_->file("broker.yaml"),
            ReadText(dir_->file("broker.yaml")) +
                "previous_keys:\n  - {listen: tcp://127.0.0.1:1, secret_key_file: keys/broker.key, "
                "until: 2099-01-01T00:00:00Z}\n");
  Status st = broker_->Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string::npos, st.message().find("keys/broker.key holds the same key as")) << st.message();
}

TEST_F(BrokerTest, APreviousKeyWithoutAnEndIsAClearPolicyError) {
  WriteText(broker_->policies_dir() + "/agencies/exit-a.yaml",
            "id: exit-a\nname: A\nkind: exit-programme\nregion: mombasa\npublic_key: \"" +
                MakeAgency("x", "exit-programme", "mombasa").keys.public_z85 + "\"\nprevious_public_key: \"" +
                exit_.keys.public_z85 + "\"\n" + kAllowEverything);
  broker_->Signal(SIGHUP);
  ASSERT_TRUE(broker_->WaitForLog("event=reload_failed"));
  EXPECT_TRUE(broker_->WaitForLog("exit-a.yaml:6:"));
  EXPECT_TRUE(broker_->WaitForLog("previous_key_valid_until"));
}

TEST_F(BrokerTest, StopsCleanlyOnSigterm) {
  EXPECT_EQ(0, broker_->Stop(SIGTERM));
  EXPECT_TRUE(broker_->WaitForLog("event=stop"));
}

TEST(BrokerStartupTest, BadConfigIsAClearErrorWithItsLine) {
  TempDir dir;
  WriteText(dir.file("broker.yaml"),
            "listen: tcp://127.0.0.1:*\nsecret_key_file: k\npolicies_dir: p\nlimits:\n"
            "  max_mesage_bytes: 10\n");
  std::string out, err;
  int rc = RunCommand({LIAISON_BROKER_BIN, "--config", dir.file("broker.yaml")}, &out, &err);
  EXPECT_EQ(2, rc);
  EXPECT_NE(std::string::npos, err.find("broker.yaml:5:3")) << err;
  EXPECT_NE(std::string::npos, err.find("did you mean 'limits.max_message_bytes'")) << err;
}

TEST(BrokerStartupTest, MissingKeyAndBrokenPoliciesStopTheStart) {
  TempDir dir;
  WriteText(dir.file("broker.yaml"),
            "listen: tcp://127.0.0.1:*\nsecret_key_file: keys/broker.key\npolicies_dir: policies\n"
            "pseudonym_key_file: keys/pseudonym.key\n"
            "store: {path: liaison.db, key_file: keys/store.key}\n"
            "ledger: {path: ledger.log, signing_key_file: keys/ledger-signing.key}\n"
            "log:\n  console: true\n");
  std::string out, err;
  EXPECT_EQ(2, RunCommand({LIAISON_BROKER_BIN, "--config", dir.file("broker.yaml")}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("liaison keygen")) << err;

  auto keys = GenerateCurveKeyPair();
  ASSERT_TRUE(WriteCurveKeyPair(dir.file("keys"), "broker", *keys).ok());
  WritePolicies(dir.file("policies"), {MakeAgency("a", "exit-programme", "mombasa")});
  ASSERT_TRUE(WriteStoreKey(dir.file("keys/store.key")).ok());
  ASSERT_TRUE(WritePseudonymKeyFile(dir.file("keys/pseudonym.key"), "").ok());
  ASSERT_TRUE(audit::WriteSigningKey(dir.file("keys"), "ledger-signing").ok());
  WriteText(dir.file("policies/agencies/b.yaml"), "id: b\nname: B\nkind: exit-programe\nregion: mombasa\n");
  EXPECT_EQ(2, RunCommand({LIAISON_BROKER_BIN, "--config", dir.file("broker.yaml")}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("b.yaml:3:7")) << err;
  EXPECT_NE(std::string::npos, err.find("did you mean 'exit-programme'")) << err;
}

}  // namespace
}  // namespace liaison::testing

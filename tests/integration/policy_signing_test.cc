// DPO-signed policy files against the real broker (CURVE on loopback,
// reloads by SIGHUP): an operator's edit is refused and the old rules stay
// in force, a DPO-signed change goes live and is in the ledger, a DPO key
// rotates, the vocabulary needs its quorum, and unsigned mode says so.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <regex>

#include "audit/ledger.h"
#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "policy/signing.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using wire::Code;

// Agency a releases only case closures; the "widening" edit lets case
// updates through as well.
const char* const kClosuresOnly =
    "release:\n"
    "  - id: closures-only\n"
    "    messages: [CaseClosure]\n"
    "    fields: {others: allow}\n"
    "accept: []\n";

std::string Widen(const std::string& text) {
  return std::regex_replace(text, std::regex("messages: \\[CaseClosure\\]"), "messages: [CaseClosure, CaseUpdate]");
}

// The decision records of the ledger named `decision` (e.g. policy_live).
std::vector<std::string> LedgerLines(const std::string& ledger, const std::string& decision) {
  std::vector<std::string> out;
  std::istringstream lines(ReadText(ledger));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find("\"decision\": \"" + decision + "\"") != std::string::npos) {
      out.push_back(line);
    }
  }
  return out;
}

// Waits (bounded) until the ledger holds a `decision` record containing `needle`.
bool WaitForLedger(const std::string& ledger, const std::string& decision, const std::string& needle,
                   int timeout_ms = 8000) {
  return WaitForText(
      [&] {
        std::string all;
        for (const auto& l : LedgerLines(ledger, decision)) all += l + "\n";
        return all;
      },
      needle, timeout_ms);
}

class PolicySigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = MakeAgency("a", "exit-programme", "mombasa");
    a_.rules = kClosuresOnly;
    b_ = MakeAgency("b", "youth-welfare", "mombasa");
    c_ = MakeAgency("c", "health-service", "mombasa");
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_, c_},
                                              "policy_signing:\n  required: true\n  vocabulary_quorum: 2\n");
    keys_ = dir_.file("dpo");
    for (const char* id : {"a", "b", "c"}) {
      ASSERT_TRUE(policy::WriteDpoKey(keys_, id).ok());
      std::filesystem::create_directories(Policies() + "/dpo-keys");
      std::filesystem::copy_file(keys_ + "/" + id + ".dpo.pub", Policies() + "/dpo-keys/" + id + ".pub");
      Sign(AgencyFile(id), id);
    }
    Sign(Policies() + "/vocabulary.yaml", "a");
    Sign(Policies() + "/vocabulary.yaml", "b");
  }

  std::string Policies() const { return broker_->policies_dir(); }
  std::string AgencyFile(const std::string& id) const { return Policies() + "/agencies/" + id + ".yaml"; }
  std::string Key(const std::string& name) const { return keys_ + "/" + name + ".dpo.key"; }

  // Signs with the CLI, as a DPO would.
  void Sign(const std::string& file, const std::string& key_name) {
    std::string out, err;
    ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "policy", "sign", file, "--key", Key(key_name)}, &out, &err)) << err;
  }

  // Writes a file as an operator would: a new file renamed into place.
  void Replace(const std::string& file, const std::string& text) {
    WriteText(file + ".new", text);
    std::filesystem::rename(file + ".new", file);
  }

  // Sends a message of `type` from a to b; returns b's code in the receipt.
  Code SendToB(const std::string& id, bool update) {
    if (!sender_) {
      auto agent = Agent::Connect(broker_->AgentFor(a_));
      EXPECT_TRUE(agent.ok());
      sender_ = std::move(*agent);
    }
    wire::EnvelopeT e;
    e.id = id;
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->agency = "b";
    if (update) {
      e.payload.Set(wire::CaseUpdateT());
    } else {
      e.payload.Set(wire::CaseClosureT());
    }
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    auto receipt = sender_->Send({fbb.GetBufferPointer(), fbb.GetSize()});
    EXPECT_TRUE(receipt.ok()) << receipt.status().ToString();
    if (!receipt.ok() || !(*receipt)->recipients() || (*receipt)->recipients()->size() != 1) return Code::unavailable;
    return (*receipt)->recipients()->Get(0)->code();
  }

  // Sends SIGHUP and waits for the reload's outcome line after `reloads` earlier ones.
  bool Reload(const std::string& outcome) {
    const size_t before = CountLog(outcome);
    broker_->Signal(SIGHUP);
    const bool seen = WaitForText([&] { return std::to_string(CountLog(outcome) > before); }, "1", 8000);
    if (!seen) ADD_FAILURE() << "no " << outcome << " after SIGHUP; the broker's log:\n" << broker_->log();
    return seen;
  }
  size_t CountLog(const std::string& needle) const {
    const std::string log = broker_->log();
    size_t n = 0;
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  }

  std::string History(const std::string& agency) {
    std::string out, err;
    EXPECT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "query", "--ledger", broker_->ledger_path(),
                             "--policy-history", agency},
                            &out, &err))
        << err;
    return out;
  }

  std::string Fingerprint(const std::string& key_name) {
    auto pub = policy::LoadDpoPublicKey(keys_ + "/" + key_name + ".dpo.pub");
    EXPECT_TRUE(pub.ok());
    return pub.ok() ? policy::DpoFingerprint(*pub) : "";
  }

  TempDir dir_;
  TestAgency a_, b_, c_;
  std::string keys_;
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<Agent> sender_;
};

TEST_F(PolicySigningTest, OperatorEditIsRefusedAndADpoSignedChangeGoesLive) {
  ASSERT_TRUE(broker_->Start().ok());
  // Onboarding pinned each agency's DPO key; every file's version is live.
  ASSERT_TRUE(WaitForLedger(broker_->ledger_path(), "dpo_key_pinned", Fingerprint("a")));
  ASSERT_TRUE(WaitForLedger(broker_->ledger_path(), "policy_live", "agencies/a.yaml"));
  const std::string signed_hash = policy::FileSha256(ReadText(AgencyFile("a")));
  EXPECT_TRUE(WaitForLedger(broker_->ledger_path(), "policy_live", signed_hash));
  EXPECT_EQ(Code::stored, SendToB("closure-1", false));
  EXPECT_EQ(Code::denied, SendToB("update-1", true));

  // The operator widens a's release rule without its DPO: refused.
  const std::string widened = Widen(ReadText(AgencyFile("a")));
  ASSERT_NE(widened, ReadText(AgencyFile("a")));
  Replace(AgencyFile("a"), widened);
  ASSERT_TRUE(Reload("event=reload_failed"));
  EXPECT_TRUE(broker_->WaitForLog("reason=bad_signature"));
  EXPECT_TRUE(broker_->WaitForLog("a.yaml: no valid signature by a's pinned DPO key " + Fingerprint("a")));
  EXPECT_TRUE(WaitForLedger(broker_->ledger_path(), "policy_refused", "bad_signature"));
  // The old rule stays in force.
  EXPECT_EQ(Code::denied, SendToB("update-2", true));
  EXPECT_EQ(Code::stored, SendToB("closure-2", false));

  // The same edit signed by another agency's DPO: still refused.
  Sign(AgencyFile("a"), "b");
  ASSERT_TRUE(Reload("event=reload_failed"));
  EXPECT_EQ(Code::denied, SendToB("update-3", true));

  // Signed by a's DPO: live, and in the ledger with hash and signer.
  Sign(AgencyFile("a"), "a");
  ASSERT_TRUE(Reload("event=reload_done"));
  EXPECT_EQ(Code::stored, SendToB("update-4", true));
  const std::string new_hash = policy::FileSha256(ReadText(AgencyFile("a")));
  ASSERT_TRUE(WaitForLedger(broker_->ledger_path(), "policy_live", new_hash));
  for (const auto& line : LedgerLines(broker_->ledger_path(), "policy_live")) {
    if (line.find(new_hash) != std::string::npos) {
      EXPECT_NE(std::string::npos, line.find(Fingerprint("a")));
    }
  }

  // The history lists both versions, the pin and the refusals, in order.
  const std::string history = History("a");
  const size_t pinned = history.find("dpo_key_pinned");
  const size_t first = history.find(signed_hash.substr(0, 16));
  const size_t refused = history.find("refused: bad_signature");
  const size_t second = history.rfind(new_hash.substr(0, 16));  // the refusals carry the same bytes' hash
  EXPECT_NE(std::string::npos, pinned) << history;
  EXPECT_NE(std::string::npos, first) << history;
  EXPECT_NE(std::string::npos, refused) << history;
  EXPECT_NE(std::string::npos, second) << history;
  EXPECT_LT(first, refused) << history;
  EXPECT_LT(refused, second) << history;
  EXPECT_EQ(std::string::npos, History("b").find("agencies/a.yaml")) << History("b");

  // The ledger still verifies.
  auto key = audit::LoadVerifyKey(broker_->ledger_public_key());
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(0, broker_->Stop());
  const auto report = audit::VerifyLedger(broker_->ledger_path(), key->get());
  EXPECT_TRUE(report.ok) << report.Summary();
}

TEST_F(PolicySigningTest, ADpoKeyRotatesOnlyWithAStatementSignedByTheOldKey) {
  ASSERT_TRUE(broker_->Start().ok());
  ASSERT_TRUE(WaitForLedger(broker_->ledger_path(), "dpo_key_pinned", Fingerprint("a")));
  ASSERT_TRUE(policy::WriteDpoKey(keys_, "a2").ok());

  // A change signed by a new key alone: refused (anyone can make a key).
  Replace(AgencyFile("a"), Widen(ReadText(AgencyFile("a"))));
  std::filesystem::remove(AgencyFile("a") + ".sig");
  Sign(AgencyFile("a"), "a2");
  ASSERT_TRUE(Reload("event=reload_failed"));
  EXPECT_TRUE(broker_->WaitForLog("reason=wrong_signer"));
  EXPECT_EQ(Code::denied, SendToB("update-1", true));

  // A rotation statement signed by some other key: still refused.
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "policy", "rotate-key", "--policies", Policies(), "--agency", "a",
                           "--old-key", Key("b"), "--new-key", keys_ + "/a2.dpo.pub"},
                          &out, &err))
      << err;
  ASSERT_TRUE(Reload("event=reload_failed"));
  EXPECT_EQ(Code::denied, SendToB("update-2", true));
  for (const auto& f : std::filesystem::directory_iterator(Policies() + "/dpo-keys")) {
    if (f.path().string().find(".rotation") != std::string::npos) std::filesystem::remove(f.path());
  }

  // The statement signed by the old key: the new key is pinned, the change live.
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "policy", "rotate-key", "--policies", Policies(), "--agency", "a",
                           "--old-key", Key("a"), "--new-key", keys_ + "/a2.dpo.pub"},
                          &out, &err))
      << err;
  // Signatures of a's retired key no longer count, on the vocabulary too:
  // a's DPO signs it again with the new key.
  Sign(Policies() + "/vocabulary.yaml", "a2");
  ASSERT_TRUE(Reload("event=reload_done"));
  EXPECT_EQ(Code::stored, SendToB("update-3", true));
  ASSERT_TRUE(WaitForLedger(broker_->ledger_path(), "dpo_key_rotated", Fingerprint("a2")));
  EXPECT_TRUE(WaitForLedger(broker_->ledger_path(), "dpo_key_rotated", Fingerprint("a")));

  // From now on the old key is not enough, and the pin survives a restart.
  Replace(AgencyFile("a"), ReadText(AgencyFile("a")) + "# edited\n");
  std::filesystem::remove(AgencyFile("a") + ".sig");
  Sign(AgencyFile("a"), "a");
  ASSERT_EQ(0, broker_->Stop());
  EXPECT_FALSE(broker_->Start().ok());
  EXPECT_TRUE(broker_->WaitForLog("event=start_failed reason=policies_unsigned"));
  Sign(AgencyFile("a"), "a2");
  ASSERT_TRUE(broker_->Start().ok());
  EXPECT_TRUE(History("a").find("dpo_key_rotated") != std::string::npos);
}

TEST_F(PolicySigningTest, TheVocabularyNeedsAQuorumOfAgencyDpos) {
  ASSERT_TRUE(broker_->Start().ok());
  ASSERT_TRUE(WaitForLedger(broker_->ledger_path(), "policy_live", "vocabulary.yaml"));
  const std::string vocabulary = Policies() + "/vocabulary.yaml";
  Replace(vocabulary, ReadText(vocabulary) + "# a new purpose would go here\n");
  std::filesystem::remove(vocabulary + ".sig");

  Sign(vocabulary, "c");
  ASSERT_TRUE(Reload("event=reload_failed"));
  EXPECT_TRUE(broker_->WaitForLog("reason=vocabulary_quorum"));
  EXPECT_TRUE(broker_->WaitForLog("signed by the pinned DPO keys of 1 agency (c), needs 2"));
  EXPECT_TRUE(WaitForLedger(broker_->ledger_path(), "policy_refused", "vocabulary_quorum"));

  // A key that no agency pinned does not count.
  ASSERT_TRUE(policy::WriteDpoKey(keys_, "stranger").ok());
  Sign(vocabulary, "stranger");
  ASSERT_TRUE(Reload("event=reload_failed"));

  Sign(vocabulary, "a");
  ASSERT_TRUE(Reload("event=reload_done"));
  const std::string hash = policy::FileSha256(ReadText(vocabulary));
  ASSERT_TRUE(WaitForLedger(broker_->ledger_path(), "policy_live", hash));
  EXPECT_NE(std::string::npos, History("vocabulary").find(hash.substr(0, 16)));
}

TEST(PolicySigningModeTest, UnsignedModeIsAnnouncedAtStartAndInReadyz) {
  TempDir dir;
  BrokerProcess broker(dir, {MakeAgency("a", "exit-programme", "mombasa")});
  ASSERT_TRUE(broker.Start().ok());
  EXPECT_TRUE(broker.WaitForLog("event=policy_signing_off"));
  EXPECT_TRUE(broker.WaitForLog("policy_signing=off_unsigned_mode"));
  ASSERT_TRUE(broker.WaitForLog("event=admin_listening endpoint="));
  std::smatch match;
  const std::string log = broker.log();
  ASSERT_TRUE(std::regex_search(log, match, std::regex("event=admin_listening endpoint=(\\S+)")));
  const std::string body = HttpGet(match[1], "/readyz").second;
  EXPECT_NE(std::string::npos, body.find("policy signing: OFF (unsigned mode)")) << body;
  // Versions still go live on the record, signed by nobody.
  EXPECT_TRUE(WaitForLedger(broker.ledger_path(), "policy_live", "unsigned"));
}

TEST(PolicySigningModeTest, ASignedDeploymentRefusesToStartWithAnUnsignedFile) {
  TempDir dir;
  BrokerProcess broker(dir, {MakeAgency("a", "exit-programme", "mombasa")},
                       "policy_signing:\n  required: true\n  vocabulary_quorum: 1\n");
  EXPECT_FALSE(broker.Start().ok());
  EXPECT_TRUE(broker.WaitForLog("event=start_failed reason=policies_unsigned"));
  EXPECT_TRUE(broker.WaitForLog("agency a has no pinned DPO key"));
}

}  // namespace
}  // namespace liaison::testing

// Personal data never appears in logs, receipts or the ledger: distinctive
// marker values in every text field of every payload type (and of the
// header) go through the broker, accepted, denied and rejected; none may
// show up anywhere but at the recipient.
#include <gtest/gtest.h>
#include <signal.h>

#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "policy/schema_layout.h"
#include "testing/test_store.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using reflection::BaseType;

constexpr const char* kMarker = "CANARYzq";

// JSON for `object` with a marker in every text field.
std::string Fill(const reflection::Schema& schema, const reflection::Object& object, int& n) {
  std::string out = "{";
  bool first = true;
  for (const reflection::Field* f : *object.fields()) {
    const BaseType t = f->type()->base_type();
    std::string value;
    const std::string marker = "\"" + std::string(kMarker) + std::to_string(n++) + "\"";
    if (t == BaseType::String) {
      value = marker;
    } else if (t == BaseType::Vector && f->type()->element() == BaseType::String) {
      value = "[" + marker + "]";
    } else if (t == BaseType::Obj) {
      value = Fill(schema, *schema.objects()->Get(f->type()->index()), n);
    } else if (t == BaseType::Vector && f->type()->element() == BaseType::Obj) {
      value = "[" + Fill(schema, *schema.objects()->Get(f->type()->index()), n) + "]";
    } else {
      continue;
    }
    out += (first ? "" : ", ") + ("\"" + f->name()->str() + "\": ") + value;
    first = false;
  }
  return out + "}";
}

std::vector<uint8_t> Canary(const std::string& type, const std::string& id, const std::string& to,
                            const std::string& purpose) {
  const reflection::Schema& schema = wire::EnvelopeSchema();
  int n = 0;
  const std::string payload =
      Fill(schema, *schema.objects()->LookupByKey(("liaison.wire." + type).c_str()), n);
  const std::string json = std::string("{\"id\": \"") + id + "\", \"case_ref\": \"" + kMarker +
                           "case\", \"purpose\": \"" + purpose + "\", \"consent\": {\"scope\": \"" +
                           kMarker + "scope\"}, \"handling_restrictions\": \"" + kMarker +
                           "h3\", \"break_glass\": \"" + kMarker + "why\", \"to\": [{\"agency\": \"" + to +
                           "\"}], \"payload_type\": \"" + type + "\", \"payload\": " + payload + "}";
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto b = codec.ToBinary(json, "canary");
  if (!b.ok()) throw std::runtime_error(b.status().ToString() + "\n" + json);
  return *b;
}

TEST(CanaryTest, MarkersNeverLeaveTheMessagePath) {
  TempDir dir;
  TestAgency a = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b = MakeAgency("b", "youth-welfare", "mombasa");
  TestAgency c = MakeAgency("c", "security-agency", "mombasa");
  c.rules = "accept: []\n";  // denies everything
  BrokerProcess broker(dir, {a, b, c});
  ASSERT_TRUE(broker.Start().ok());
  auto receiver = Agent::Connect(broker.AgentFor(b, wire::Role::receiver));
  ASSERT_TRUE((*receiver)->WaitReady(5000ms).ok());
  auto notices = Agent::Connect(broker.AgentFor(a, wire::Role::receiver));
  ASSERT_TRUE((*notices)->WaitReady(5000ms).ok());
  auto sender = Agent::Connect(broker.AgentFor(a));
  wire::JsonCodec receipts(wire::JsonCodec::Root::kReceipt);
  std::string receipt_text;

  int sent = 0;
  for (const std::string& type : policy::SchemaLayout::Get().type_names()) {
    for (const auto& [to, purpose] : std::vector<std::pair<std::string, std::string>>{
             {"b", "referral-for-services"}, {"c", "referral-for-services"},
             {"b", std::string(kMarker) + "purpose"}}) {
      auto r = (*sender)->Send(Canary(type, "id" + std::to_string(sent++), to, purpose));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      receipt_text += *receipts.ToJson(r->bytes(), false) + "\n";
    }
  }
  // The recipient gets the values (that is the point), and acks them.
  int got = 0;
  std::string received_ids;
  while (true) {
    auto m = (*receiver)->Receive(500ms);
    if (!m.ok() || !m->has_value()) break;
    ++got;
    received_ids += (**m)->id()->str() + " ";
    (void)(*receiver)->Ack((**m)->id()->string_view());
  }
  // One per type, plus the erasure addressed to c: it also reaches b, which
  // holds data of the case. PermissionRequest and PermissionGrant are
  // refused whole at admission (no derived_from, and a marker is no agency
  // id): their refusals are searched for markers like everything else.
  EXPECT_EQ(static_cast<int>(policy::SchemaLayout::Get().type_names().size()) + 1 - 2, got) << received_ids;
  for (int i = 0; i < 20; ++i) {
    (void)(*notices)->Receive(50ms);
    while (auto n = (*notices)->TakeNotice()) receipt_text += *receipts.ToJson(n->bytes(), false) + "\n";
  }
  broker.Stop(SIGTERM);

  EXPECT_EQ(std::string::npos, receipt_text.find(kMarker)) << receipt_text;
  const std::string log = broker.log();
  EXPECT_EQ(std::string::npos, log.find(kMarker)) << log;
  const std::string ledger = ReadText(broker.ledger_path());
  EXPECT_FALSE(ledger.empty());
  EXPECT_EQ(std::string::npos, ledger.find(kMarker)) << ledger;
  // The store's files as they are on disk: SQLite's file and WAL, or on
  // PostgreSQL (LIAISON_TEST_STORE) the cluster's tables and WAL.
  uintmax_t store_bytes = 0;
  for (const std::string& file : TestStoreFiles(dir.path().string())) {
    const std::string bytes = ReadText(file);
    store_bytes += bytes.size();
    EXPECT_EQ(std::string::npos, bytes.find(kMarker)) << "plaintext personal data in " << file;
  }
  EXPECT_GT(store_bytes, 0u) << "no store files read";
}

TEST(FailClosedTest, NothingIsForwardedWhenTheLedgerCannotBeWritten) {
  TempDir dir;
  TestAgency a = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b = MakeAgency("b", "youth-welfare", "mombasa");
  BrokerProcess broker(dir, {a, b});
  // The ledger on /dev/full: every write fails with ENOSPC, like a full disk.
  std::string config = ReadText(dir.file("broker.yaml"));
  config.replace(config.find("path: ledger.log"), std::string("path: ledger.log").size(), "path: /dev/full");
  WriteText(dir.file("broker.yaml"), config);
  ASSERT_TRUE(broker.Start().ok());
  auto receiver = Agent::Connect(broker.AgentFor(b, wire::Role::receiver));
  ASSERT_TRUE((*receiver)->WaitReady(5000ms).ok());
  auto sender = Agent::Connect(broker.AgentFor(a));
  for (int i = 0; i < 2; ++i) {
    auto r = (*sender)->Send(Canary("CaseUpdate", "f" + std::to_string(i), "b", "referral-for-services"));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(wire::Code::unavailable, (*r)->code());
    EXPECT_EQ(0u, (*r)->recipients() ? (*r)->recipients()->size() : 0u);
  }
  auto m = (*receiver)->Receive(1000ms);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->has_value()) << "a message went out without its ledger record";
  EXPECT_TRUE(broker.WaitForLog("event=ledger_write_failed"));
  EXPECT_TRUE(broker.running());
}

}  // namespace
}  // namespace liaison::testing

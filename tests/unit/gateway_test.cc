// The gateway's parts without the network: its config, its state file and
// its inbox. (The whole gateway over HTTPS: tests/integration/gateway_test.cc.)
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <thread>

#include "broker_link.h"
#include "connection_table.h"
#include "gateway_config.h"
#include "gateway_store.h"
#include "request.h"
#include "liaison/keys.h"
#include "testing/fixtures.h"

namespace liaison::gateway {
namespace {

using liaison::testing::TempDir;
using liaison::testing::WriteText;
using namespace std::chrono_literals;

class GatewayConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto keys = GenerateCurveKeyPair();
    ASSERT_TRUE(keys.ok());
    ASSERT_TRUE(WriteCurveKeyPair(dir_.file("keys"), "a", *keys).ok());
    ASSERT_TRUE(WriteCurveKeyPair(dir_.file("keys"), "broker", *keys).ok());
    ASSERT_TRUE(WriteNewToken(dir_.file("token")).ok());
    WriteText(dir_.file("agent.yaml"),
              "broker: tcp://127.0.0.1:7700\nbroker_public_key_file: keys/broker.pub\n"
              "secret_key_file: keys/a.key\n");
    WriteText(dir_.file("cert.pem"), "x");
    WriteText(dir_.file("key.pem"), "x");
    ::chmod(dir_.file("key.pem").c_str(), 0600);
  }
  StatusOr<GatewayConfig> Load(const std::string& yaml) {
    WriteText(dir_.file("gateway.yaml"), yaml);
    return LoadGatewayConfig(dir_.file("gateway.yaml"));
  }
  const std::string base_ =
      "agent_config: agent.yaml\nstate_file: gw.db\n"
      "tls:\n  certificate_file: cert.pem\n  private_key_file: key.pem\n";
  TempDir dir_;
};

TEST_F(GatewayConfigTest, AGoodFileLoadsWithPathsResolvedAndTheTokenRead) {
  auto c = Load(base_ + "token_file: token\nwebhook:\n  url: https://cases.example:9443/in\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->state_file, dir_.file("gw.db"));
  EXPECT_EQ(c->token.size(), 64u);
  EXPECT_EQ(c->agent.broker_endpoint, "tcp://127.0.0.1:7700");
  ASSERT_TRUE(c->webhook.has_value());
  EXPECT_EQ(c->webhook->host, "cases.example");
  EXPECT_EQ(c->webhook->port, "9443");
  EXPECT_EQ(c->webhook->target, "/in");
}

// The state key: beside the config by default ("<config name>.state.key"),
// away from the state folder; configurable; never the state file itself
// (an error naming the line).
TEST_F(GatewayConfigTest, TheStateKeyLivesBesideTheConfigUnlessConfigured) {
  auto c = Load(base_ + "token_file: token\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->state_key_file, dir_.file("gateway.state.key"));
  auto configured = Load(base_ + "token_file: token\nstate_key_file: vault/gw.key\n");
  ASSERT_TRUE(configured.ok()) << configured.status().ToString();
  EXPECT_EQ(configured->state_key_file, dir_.file("vault/gw.key"));
  auto same = Load(base_ + "token_file: token\nstate_key_file: gw.db\n");
  ASSERT_FALSE(same.ok());
  EXPECT_NE(same.status().message().find("gateway.yaml:7:"), std::string::npos) << same.status().message();
  EXPECT_NE(same.status().message().find("state_key_file"), std::string::npos) << same.status().message();
}

TEST_F(GatewayConfigTest, TheBrokersAreThoseOfTheAgentConfig) {
  WriteText(dir_.file("agent.yaml"),
            "brokers: [tcp://broker-1.example:7700, tcp://broker-2.example:7700]\n"
            "broker_public_key_file: keys/broker.pub\nsecret_key_file: keys/a.key\n");
  auto c = Load(base_ + "token_file: token\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->agent.broker_endpoints,
            (std::vector<std::string>{"tcp://broker-1.example:7700", "tcp://broker-2.example:7700"}));

  WriteText(dir_.file("agent.yaml"),
            "broker: tcp://broker-1.example:7700\nbrokers: [tcp://broker-2.example:7700]\n"
            "broker_public_key_file: keys/broker.pub\nsecret_key_file: keys/a.key\n");
  auto both = Load(base_ + "token_file: token\n");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("agent.yaml:2:"), std::string::npos) << both.status().message();
  EXPECT_NE(both.status().message().find("agent_config"), std::string::npos) << both.status().message();
}

// gateway.yaml's own `brokers:` replaces agent_config's endpoint (the keys
// and timers stay the agent config's); one endpoint is a valid list.
TEST_F(GatewayConfigTest, ItsOwnBrokersReplaceTheAgentConfigsEndpoint) {
  auto c = Load(base_ + "token_file: token\nbrokers: [tcp://broker-1.example:7700, tcp://broker-2.example:7700]\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->agent.broker_endpoint, "");
  EXPECT_EQ(c->agent.broker_endpoints,
            (std::vector<std::string>{"tcp://broker-1.example:7700", "tcp://broker-2.example:7700"}));
  EXPECT_EQ(c->agent.keys.public_z85.size(), 40u) << "the keys still come from agent_config";

  auto one = Load(base_ + "token_file: token\nbrokers:\n  - tcp://broker-2.example:7700\n");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->agent.broker_endpoints, (std::vector<std::string>{"tcp://broker-2.example:7700"}));
}

TEST_F(GatewayConfigTest, ABadBrokersListIsRefusedWithFileLineAndIndex) {
  // base_ is 5 lines; token_file is line 6, brokers line 7.
  auto empty = Load(base_ + "token_file: token\nbrokers: []\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("gateway.yaml:7:"), std::string::npos) << empty.status().message();
  EXPECT_NE(empty.status().message().find("the list is empty"), std::string::npos) << empty.status().message();

  auto wildcard = Load(base_ + "token_file: token\nbrokers:\n  - tcp://broker-1.example:7700\n  - tcp://*:7700\n");
  ASSERT_FALSE(wildcard.ok());
  EXPECT_NE(wildcard.status().message().find("gateway.yaml:9:"), std::string::npos) << wildcard.status().message();
  EXPECT_NE(wildcard.status().message().find("brokers[1]"), std::string::npos) << wildcard.status().message();
  EXPECT_NE(wildcard.status().message().find("expected tcp://HOST:PORT"), std::string::npos)
      << wildcard.status().message();

  auto port = Load(base_ + "token_file: token\nbrokers: [tcp://broker-1.example:70000]\n");
  ASSERT_FALSE(port.ok());
  EXPECT_NE(port.status().message().find("gateway.yaml:7:"), std::string::npos) << port.status().message();
  EXPECT_NE(port.status().message().find("1 to 65535"), std::string::npos) << port.status().message();

  auto scalar = Load(base_ + "token_file: token\nbrokers: tcp://broker-1.example:7700\n");
  ASSERT_FALSE(scalar.ok());
  EXPECT_NE(scalar.status().message().find("gateway.yaml:7:"), std::string::npos) << scalar.status().message();
}

TEST_F(GatewayConfigTest, ErrorsNameTheFileLineAndKey) {
  auto c = Load(base_ + "token_file: token\ninbox:\n  lease_secs: 5\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("gateway.yaml:8:3: unknown key 'inbox.lease_secs'"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("lease_seconds"), std::string::npos) << c.status().message();
}

TEST_F(GatewayConfigTest, WithoutTokenOrClientCaItRefusesToStart) {
  auto c = Load(base_);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("token_file nor tls.client_ca_file"), std::string::npos);
}

TEST_F(GatewayConfigTest, ARequiredTlsBlockAndAnHttpsWebhook) {
  auto c = Load("agent_config: agent.yaml\nstate_file: gw.db\ntoken_file: token\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("tls"), std::string::npos);
  c = Load(base_ + "token_file: token\nwebhook:\n  url: http://cases.example/in\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("only https"), std::string::npos) << c.status().message();
}

TEST_F(GatewayConfigTest, AGroupReadableOrShortTokenIsRefused) {
  ::chmod(dir_.file("token").c_str(), 0644);
  auto c = Load(base_ + "token_file: token\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("chmod 600"), std::string::npos) << c.status().message();
  WriteText(dir_.file("short"), "abc\n");
  ::chmod(dir_.file("short").c_str(), 0600);
  c = Load(base_ + "token_file: short\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("fewer than 32"), std::string::npos) << c.status().message();
}

TEST_F(GatewayConfigTest, AGroupReadableTlsPrivateKeyIsRefused) {
  ::chmod(dir_.file("key.pem").c_str(), 0644);
  auto c = Load(base_ + "token_file: token\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("tls.private_key_file " + dir_.file("key.pem")), std::string::npos)
      << c.status().message();
  EXPECT_NE(c.status().message().find("chmod 600"), std::string::npos) << c.status().message();
}

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(GatewayStoreTest, AcceptRetryConflictAnswerAndNotices) {
  TempDir dir;
  auto store = GatewayStore::Open(dir.file("gw.db"), dir.file("gw.key"));
  ASSERT_TRUE(store.ok());
  GatewayStore& s = **store;
  EXPECT_EQ(*s.Accept("m1", "d1", Bytes("first")), GatewayStore::Accepted::kNew);
  EXPECT_EQ(*s.Accept("m2", "d2", Bytes("second")), GatewayStore::Accepted::kNew);
  EXPECT_EQ(*s.Accept("m1", "d1", Bytes("first")), GatewayStore::Accepted::kDuplicate);
  EXPECT_EQ(*s.Accept("m1", "other", Bytes("changed")), GatewayStore::Accepted::kConflict);
  EXPECT_EQ(*s.PendingCount(), 2u);

  auto next = s.NextPending();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->id, "m1");  // oldest first
  EXPECT_EQ((*next)->envelope, Bytes("first"));
  auto pending = s.Lookup("m1");
  ASSERT_TRUE(pending.ok() && pending->has_value());
  EXPECT_TRUE((*pending)->receipt.empty());

  ASSERT_TRUE(s.Answer("m1", Bytes("receipt-1")).ok());
  EXPECT_EQ((*s.NextPending())->id, "m2");
  ASSERT_TRUE(s.AddNotice("m1", "b", Bytes("delivered-b")).ok());
  ASSERT_TRUE(s.AddNotice("m1", "b", Bytes("delivered-b-again")).ok());  // replaces
  ASSERT_TRUE(s.AddNotice("not-ours", "b", Bytes("x")).ok());             // ignored
  auto entry = s.Lookup("m1");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_EQ((*entry)->receipt, Bytes("receipt-1"));
  ASSERT_EQ((*entry)->notices.size(), 1u);
  EXPECT_EQ((*entry)->notices[0], Bytes("delivered-b-again"));
  EXPECT_FALSE(s.Lookup("not-ours")->has_value());

  // The message's bytes are gone once the broker answered.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("gw.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  sqlite3_prepare_v2(db, "SELECT envelope IS NULL FROM outgoing WHERE id = 'm1'", -1, &q, nullptr);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(q, 0), 1);
  sqlite3_finalize(q);
  sqlite3_close(db);

  // Purge removes answered entries only.
  auto purged = s.Purge(std::numeric_limits<int64_t>::max());
  ASSERT_TRUE(purged.ok());
  EXPECT_FALSE(s.Lookup("m1")->has_value());
  EXPECT_TRUE(s.Lookup("m2")->has_value());
}

// Erasing a case deletes its pending messages and its key; another
// agency's case of the same reference is another case.
TEST(GatewayStoreTest, ShreddingACaseLeavesTheOthers) {
  TempDir dir;
  auto store = GatewayStore::Open(dir.file("gw.db"), dir.file("gw.key"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  GatewayStore& s = **store;
  ASSERT_EQ(*s.Accept("a1", "d", testing::CaseMessage("a1", {"b"}, "CASE-A")), GatewayStore::Accepted::kNew);
  ASSERT_EQ(*s.Accept("b1", "d", testing::CaseMessage("b1", {"b"}, "CASE-B")), GatewayStore::Accepted::kNew);
  ASSERT_TRUE(s.ShredCase("other-agency", "CASE-A").ok());
  EXPECT_EQ(*s.PendingCount(), 2u);
  ASSERT_TRUE(s.ShredCase("", "CASE-A").ok());
  auto pending = s.Pending();
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  ASSERT_EQ(pending->messages.size(), 1u);
  EXPECT_EQ(pending->messages[0].id, "b1");
  EXPECT_EQ(pending->messages[0].envelope, testing::CaseMessage("b1", {"b"}, "CASE-B"));
  EXPECT_EQ(pending->shredded, 0);
  // A later message of the erased case gets a new key and goes out.
  ASSERT_EQ(*s.Accept("a2", "d", testing::CaseMessage("a2", {"b"}, "CASE-A")), GatewayStore::Accepted::kNew);
  EXPECT_EQ(s.Pending()->messages.size(), 2u);
}

TEST(GatewayStoreTest, AnUnwritablePathIsAClearError) {
  auto store = GatewayStore::Open("/proc/no/such/dir/gw.db", "/proc/no/such/dir/gw.key");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("/proc/no/such/dir/gw.db"), std::string::npos);
}

TEST(InboxTest, LeasesOldestFirstAndHandsOutAgainAfterTheLease) {
  Inbox inbox;
  inbox.Add("s", "z-first", Bytes("1"));
  inbox.Add("s", "a-second", Bytes("2"));
  inbox.Add("s", "z-first", Bytes("dup"));  // a redelivery of a held message
  EXPECT_EQ(inbox.size(), 2u);
  auto one = inbox.Lease(1, 200ms);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].id, "z-first");  // arrival order, not id order
  EXPECT_EQ(one[0].sender, "s");
  EXPECT_EQ(one[0].envelope, Bytes("1"));
  auto rest = inbox.Lease(10, 200ms);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].id, "a-second");
  EXPECT_TRUE(inbox.Lease(10, 200ms).empty());
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(inbox.Lease(10, 200ms).size(), 2u);
  EXPECT_TRUE(inbox.Remove("s", "z-first"));
  EXPECT_FALSE(inbox.Remove("s", "z-first"));
  EXPECT_EQ(inbox.size(), 1u);
}

// Ids are unique per sender only: two senders' messages with one id are two
// messages, and naming the id alone cannot pick one of them.
TEST(InboxTest, TwoSendersSameIdAreTwoMessages) {
  Inbox inbox;
  inbox.Add("exit-a", "same", Bytes("from a"));
  inbox.Add("exit-b", "same", Bytes("from b"));
  inbox.Add("exit-c", "only", Bytes("from c"));
  EXPECT_EQ(inbox.size(), 3u);
  EXPECT_EQ(inbox.Get("exit-b", "same"), Bytes("from b"));
  EXPECT_FALSE(inbox.Get("exit-c", "same").has_value());
  std::string sender;
  EXPECT_EQ(inbox.RemoveById("same", &sender), Inbox::Removed::kAmbiguous);
  EXPECT_EQ(inbox.size(), 3u);
  EXPECT_EQ(inbox.RemoveById("only", &sender), Inbox::Removed::kRemoved);
  EXPECT_EQ(sender, "exit-c");
  EXPECT_EQ(inbox.RemoveById("only", &sender), Inbox::Removed::kNotHeld);
  EXPECT_TRUE(inbox.Remove("exit-a", "same"));
  EXPECT_EQ(inbox.RemoveById("same", &sender), Inbox::Removed::kRemoved);  // now unambiguous
  EXPECT_EQ(sender, "exit-b");
  EXPECT_EQ(inbox.size(), 0u);
}

TEST(RouteTest, InboxPathsNameSenderAndId) {
  Route r = Classify("/v1/inbox/exit-a/m%2D1/ack");
  EXPECT_EQ(r.kind, Route::Kind::kAck);
  EXPECT_EQ(r.sender, "exit-a");
  EXPECT_EQ(r.id, "m-1");
  EXPECT_TRUE(r.id_ok);
  // An id outside the opaque-token format is refused even when encoded.
  EXPECT_FALSE(Classify("/v1/inbox/exit-a/m%2F1/ack").id_ok);
  r = Classify("/v1/inbox/exit-a/m1");
  EXPECT_EQ(r.kind, Route::Kind::kInboxMessage);
  EXPECT_EQ(r.sender, "exit-a");
  EXPECT_EQ(r.id, "m1");
  r = Classify("/v1/inbox/m1/ack");  // the older form: the id alone
  EXPECT_EQ(r.kind, Route::Kind::kAck);
  EXPECT_EQ(r.sender, "");
  EXPECT_EQ(r.id, "m1");
  EXPECT_TRUE(r.id_ok);
  EXPECT_EQ(Classify("/v1/inbox/a/b/c").kind, Route::Kind::kNotFound);
  EXPECT_EQ(Classify("/v1/inbox/m1").kind, Route::Kind::kNotFound);
  EXPECT_FALSE(Classify("/v1/inbox//m1/ack").id_ok);
  EXPECT_FALSE(Classify("/v1/inbox/a%2/m1").id_ok);
}

TEST(GatewayStoreTest, DeadLettersAreRecordedListedAndCleared) {
  TempDir dir;
  auto store = GatewayStore::Open(dir.file("gw.db"), dir.file("gw.key"));
  ASSERT_TRUE(store.ok());
  GatewayStore& s = **store;
  ASSERT_TRUE(s.AddDeadLetter({"b", "m1", 4, 503, ""}).ok());
  ASSERT_TRUE(s.AddDeadLetter({"c", "m1", 2, 0, "stream truncated"}).ok());  // same id, other sender
  ASSERT_TRUE(s.AddDeadLetter({"b", "m1", 5, 500, ""}).ok());                // replaces
  auto letters = s.DeadLetters();
  ASSERT_TRUE(letters.ok());
  ASSERT_EQ(letters->size(), 2u);
  EXPECT_EQ((*letters)[1].sender, "b");
  EXPECT_EQ((*letters)[1].attempts, 5);
  EXPECT_EQ((*letters)[1].last_status, 500);
  EXPECT_EQ((*letters)[0].last_error, "stream truncated");
  ASSERT_TRUE(s.RemoveDeadLetter("b", "m1").ok());
  EXPECT_EQ(s.DeadLetters()->size(), 1u);
}

TEST(ConnectionTableTest, ShedsTheOldestUnauthenticatedFirstAndNeverAnAuthenticatedOne) {
  std::vector<uint64_t> closed;
  ConnectionTable table(/*max_connections=*/3, /*max_unauthenticated_per_address=*/2);
  std::vector<uint64_t> ids;
  auto admit = [&](const std::string& address) {
    const uint64_t id = table.Admit(address, [&closed, n = ids.size()] { closed.push_back(n); });
    ids.push_back(id);
    return id;
  };
  admit("10.0.0.1");  // #0
  admit("10.0.0.1");  // #1
  // A third from the same address sheds that address's oldest (#0).
  ASSERT_NE(admit("10.0.0.1"), 0u);  // #2
  EXPECT_EQ(closed, std::vector<uint64_t>{0});
  EXPECT_TRUE(table.shed(ids[0]));
  table.Remove(ids[0]);
  table.Authenticate(ids[1]);
  ASSERT_NE(admit("10.0.0.2"), 0u);  // #3: table now full (#1 auth, #2, #3)
  EXPECT_EQ(table.open(), 3u);
  // Full: the oldest unauthenticated (#2) goes, not the older authenticated #1.
  ASSERT_NE(admit("10.0.0.3"), 0u);  // #4
  EXPECT_EQ(closed, (std::vector<uint64_t>{0, 2}));
  table.Remove(ids[2]);
  table.Authenticate(ids[3]);
  table.Authenticate(ids[4]);
  // Everyone authenticated: a new connection is refused, nobody is shed.
  EXPECT_EQ(admit("10.0.0.4"), 0u);
  EXPECT_EQ(closed.size(), 2u);
  EXPECT_EQ(table.shed_total(), 2u);
  table.Remove(ids[1]);
  EXPECT_NE(admit("10.0.0.4"), 0u);
}

}  // namespace
}  // namespace liaison::gateway

#include <gtest/gtest.h>

#include "liaison/agent.h"
#include "testing/fixtures.h"

namespace liaison {
namespace {

using testing::TempDir;
using testing::WriteText;

TEST(AgentConfigTest, LoadsKeysRelativeToTheFile) {
  TempDir dir;
  auto broker = GenerateCurveKeyPair();
  auto mine = GenerateCurveKeyPair();
  ASSERT_TRUE(WriteCurveKeyPair(dir.file("keys"), "broker", *broker).ok());
  ASSERT_TRUE(WriteCurveKeyPair(dir.file("keys"), "me", *mine).ok());
  WriteText(dir.file("conf/agent.yaml"),
            "broker: tcp://127.0.0.1:7700\nbroker_public_key_file: ../keys/broker.pub\n"
            "secret_key_file: ../keys/me.key\nreceipt_timeout_ms: 1500\nrole: receiver\n");
  auto o = LoadAgentConfig(dir.file("conf/agent.yaml"));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ("tcp://127.0.0.1:7700", o->broker_endpoint);
  EXPECT_EQ(broker->public_z85, o->broker_public_key);
  EXPECT_EQ(mine->public_z85, o->keys.public_z85);
  EXPECT_EQ(1500, o->receipt_timeout.count());
  EXPECT_EQ(wire::Role::receiver, o->role);
}

TEST(AgentConfigTest, ErrorsNameTheKey) {
  TempDir dir;
  WriteText(dir.file("agent.yaml"), "broker: tcp://127.0.0.1:7700\nbrokr_public_key_file: x\n");
  auto o = LoadAgentConfig(dir.file("agent.yaml"));
  ASSERT_FALSE(o.ok());
  EXPECT_NE(std::string::npos, o.status().message().find("agent.yaml:2:1"));
  EXPECT_NE(std::string::npos, o.status().message().find("did you mean 'broker_public_key_file'"));

  WriteText(dir.file("agent2.yaml"),
            "broker: tcp://127.0.0.1:7700\nbroker_public_key_file: nope.pub\n"
            "secret_key_file: nope.key\n");
  auto missing = LoadAgentConfig(dir.file("agent2.yaml"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string::npos, missing.status().message().find("broker_public_key_file"));
}

// Key files for the broker and one agency under `dir`, and the YAML lines
// naming them.
std::string WriteKeys(const TempDir& dir) {
  auto broker = GenerateCurveKeyPair();
  auto mine = GenerateCurveKeyPair();
  EXPECT_TRUE(WriteCurveKeyPair(dir.file("keys"), "broker", *broker).ok());
  EXPECT_TRUE(WriteCurveKeyPair(dir.file("keys"), "me", *mine).ok());
  return "broker_public_key_file: keys/broker.pub\nsecret_key_file: keys/me.key\n";
}

TEST(AgentConfigTest, SeveralBrokersAreTriedInOrder) {
  TempDir dir;
  const std::string keys = WriteKeys(dir);
  WriteText(dir.file("agent.yaml"),
            keys + "brokers:\n  - tcp://broker-1.example:7700\n  - tcp://10.0.0.2:7700\n"
                   "  - tcp://[::1]:7701\nconnect_timeout_ms: 700\nwelcome_timeout_ms: 800\n"
                   "silence_timeout_ms: 900\n");
  auto o = LoadAgentConfig(dir.file("agent.yaml"));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->broker_endpoint, "");
  EXPECT_EQ(o->broker_endpoints, (std::vector<std::string>{"tcp://broker-1.example:7700",
                                                           "tcp://10.0.0.2:7700", "tcp://[::1]:7701"}));
  EXPECT_EQ(o->connect_timeout.count(), 700);
  EXPECT_EQ(o->welcome_timeout.count(), 800);
  EXPECT_EQ(o->silence_timeout.count(), 900);

  WriteText(dir.file("flow.yaml"), keys + "brokers: [tcp://a.example:1, tcp://b.example:2]\n");
  auto flow = LoadAgentConfig(dir.file("flow.yaml"));
  ASSERT_TRUE(flow.ok()) << flow.status().ToString();
  EXPECT_EQ(flow->broker_endpoints.size(), 2u);
  // The defaults, as documented.
  EXPECT_EQ(flow->connect_timeout.count(), 2000);
  EXPECT_EQ(flow->welcome_timeout.count(), 2000);
  EXPECT_EQ(flow->silence_timeout.count(), 5000);
}

TEST(AgentConfigTest, BrokerListErrorsNameTheLine) {
  TempDir dir;
  const std::string keys = WriteKeys(dir);
  auto error = [&](const std::string& yaml) {
    WriteText(dir.file("agent.yaml"), yaml);
    auto o = LoadAgentConfig(dir.file("agent.yaml"));
    EXPECT_FALSE(o.ok()) << yaml;
    return o.ok() ? std::string() : o.status().message();
  };
  std::string both = error(keys + "broker: tcp://a.example:7700\nbrokers: [tcp://b.example:7700]\n");
  EXPECT_NE(both.find("agent.yaml:4:"), std::string::npos) << both;
  EXPECT_NE(both.find("both `broker` and `brokers` are set"), std::string::npos) << both;

  std::string empty = error(keys + "brokers: []\n");
  EXPECT_NE(empty.find("agent.yaml:3:"), std::string::npos) << empty;
  EXPECT_NE(empty.find("the list is empty"), std::string::npos) << empty;

  std::string shape = error(keys + "brokers:\n  - tcp://a.example:7700\n  - http://b.example:7700\n"
                                   "  - tcp://c.example\n  - tcp://d.example:99999\n  - tcp://*:7700\n");
  EXPECT_NE(shape.find("agent.yaml:5:5: 'brokers[1]': expected tcp://HOST:PORT"), std::string::npos) << shape;
  EXPECT_NE(shape.find("agent.yaml:6:5: 'brokers[2]'"), std::string::npos) << shape;
  EXPECT_NE(shape.find("agent.yaml:7:5: 'brokers[3]'"), std::string::npos) << shape;
  EXPECT_NE(shape.find("the port must be 1 to 65535"), std::string::npos) << shape;
  EXPECT_NE(shape.find("agent.yaml:8:5: 'brokers[4]'"), std::string::npos) << shape;
  EXPECT_EQ(shape.find("brokers[0]"), std::string::npos) << shape;

  std::string one = error(keys + "broker: 127.0.0.1:7700\n");
  EXPECT_NE(one.find("agent.yaml:3:9: 'broker': expected tcp://HOST:PORT"), std::string::npos) << one;

  std::string none = error(keys);
  EXPECT_NE(none.find("set `broker: ENDPOINT`, or `brokers: [ENDPOINT, ...]`"), std::string::npos) << none;

  std::string not_list = error(keys + "brokers: tcp://a.example:7700\n");
  EXPECT_NE(not_list.find("'brokers': expected a list"), std::string::npos) << not_list;
}

TEST(AgentConfigTest, AgentRefusesBothOneAndSeveralEndpoints) {
  auto broker = GenerateCurveKeyPair();
  auto mine = GenerateCurveKeyPair();
  AgentOptions o;
  o.broker_public_key = broker->public_z85;
  o.keys = *mine;
  o.broker_endpoint = "tcp://127.0.0.1:7700";
  o.broker_endpoints = {"tcp://127.0.0.1:7701"};
  auto agent = Agent::Connect(o);
  ASSERT_FALSE(agent.ok());
  EXPECT_EQ(agent.status().code(), Status::Code::kInvalidArgument);
}

// The outbox's key: beside the agency's keys by default (named after the
// outbox), or where outbox_key_file says; without an outbox it is an error
// naming the line.
TEST(AgentConfigTest, TheOutboxKeyLivesWithTheKeysUnlessConfigured) {
  TempDir dir;
  const std::string keys = WriteKeys(dir);
  WriteText(dir.file("agent.yaml"), "broker: tcp://127.0.0.1:7700\n" + keys + "outbox: data/outbox.db\n");
  auto o = LoadAgentConfig(dir.file("agent.yaml"));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(dir.file("data/outbox.db"), o->outbox);
  EXPECT_EQ(dir.file("keys/outbox.db.key"), o->outbox_key_file);

  WriteText(dir.file("agent2.yaml"),
            "broker: tcp://127.0.0.1:7700\n" + keys + "outbox: data/outbox.db\noutbox_key_file: vault/ob.key\n");
  auto configured = LoadAgentConfig(dir.file("agent2.yaml"));
  ASSERT_TRUE(configured.ok()) << configured.status().ToString();
  EXPECT_EQ(dir.file("vault/ob.key"), configured->outbox_key_file);

  WriteText(dir.file("agent3.yaml"), "broker: tcp://127.0.0.1:7700\n" + keys + "outbox_key_file: vault/ob.key\n");
  auto alone = LoadAgentConfig(dir.file("agent3.yaml"));
  ASSERT_FALSE(alone.ok());
  EXPECT_NE(std::string::npos, alone.status().message().find("agent3.yaml:4:")) << alone.status().ToString();
  EXPECT_NE(std::string::npos, alone.status().message().find("no `outbox`")) << alone.status().ToString();
}

}  // namespace
}  // namespace liaison

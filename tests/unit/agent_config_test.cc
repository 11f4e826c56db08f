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

}  // namespace
}  // namespace liaison

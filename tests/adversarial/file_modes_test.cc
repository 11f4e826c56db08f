// Attacks on what liaison leaves on disk (issue 15, point 9), with the real
// broker, gateway and CLI on loopback under umask 022 (a common default):
//  - every file holding case data or secrets is readable by its owner only
//    (the store and its WAL, gateway.db and its WAL, the logs, the agent's
//    outbox, `liaison listen --out` files);
//  - a group-readable TLS private key stops the gateway;
//  - a message the gateway has handed to the broker leaves no plaintext in
//    gateway.db or its WAL.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "integration/gateway_process.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;

// Sets the umask for one test (children inherit it), restores it after.
class Umask {
 public:
  explicit Umask(mode_t mask) : old_(::umask(mask)) {}
  ~Umask() { ::umask(old_); }

 private:
  mode_t old_;
};

// The permission bits of `path`, or -1 if it does not exist.
int ModeOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

std::string Update(const std::string& notes) {
  return "{\"case_ref\": \"CASE-DISK-9\", \"to\": [{\"agency\": \"b\"}], \"payload_type\": \"CaseUpdate\", "
         "\"payload\": {\"notes\": \"" + notes + "\"}}";
}

class FileModesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_});
    ASSERT_TRUE(broker_->Start().ok());
    gateway_ = std::make_unique<GatewayProcess>(dir_, *broker_, a_);
  }
  // Sends `notes` through the gateway and waits until the broker answered.
  void SendThroughGateway(const std::string& notes) {
    const HttpReply sent = gateway_->Call("POST", "/v1/messages", Update(notes));
    ASSERT_EQ(sent.status, 202) << sent.body << sent.error;
    const std::string url = JsonField(sent.body, "receipt_url");
    HttpReply receipt;
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (receipt.status != 200 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(100ms);
      receipt = gateway_->Call("GET", url);
    }
    ASSERT_EQ(receipt.status, 200) << receipt.body;
  }
  std::string GatewayFile(const std::string& name) const { return dir_.file("gateway-a/" + name); }

  Umask umask_{022};
  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(FileModesTest, CaseDataSecretsAndLogsAreOwnerOnlyWhateverTheUmask) {
  ASSERT_TRUE(gateway_->Start().ok());
  SendThroughGateway("Marker-Disk-2291");

  // The CLI as agency b: listen --out, and send through an outbox.
  const std::string cli = dir_.file("cli-b");
  ASSERT_TRUE(WriteCurveKeyPair(cli + "/keys", "b", b_.keys).ok());
  ASSERT_TRUE(WriteCurveKeyPair(cli + "/keys", "broker", broker_->broker_keys()).ok());
  WriteText(cli + "/agent.yaml", "broker: " + broker_->endpoint() +
                                     "\nbroker_public_key_file: keys/broker.pub\nsecret_key_file: keys/b.key\n"
                                     "outbox: outbox.db\n");
  std::string out, err;
  ASSERT_EQ(RunCommand({"timeout", "20", LIAISON_CLI_BIN, "listen", "--config", cli + "/agent.yaml", "--out",
                        cli + "/in", "--count", "1"},
                       &out, &err),
            0)
      << err;
  WriteText(cli + "/reply.json",
            "{\"case_ref\": \"CASE-DISK-9\", \"payload_type\": \"CaseUpdate\", \"payload\": {\"notes\": \"x\"}}");
  ASSERT_EQ(RunCommand({"timeout", "20", LIAISON_CLI_BIN, "send", "--config", cli + "/agent.yaml", "--to", "a",
                        cli + "/reply.json"},
                       &out, &err),
            0)
      << err;

  const std::string broker_dir = std::filesystem::path(broker_->store_path()).parent_path().string();
  std::vector<std::string> must_exist = {broker_->store_path(),     broker_->store_path() + "-wal",
                                         broker_dir + "/broker.log", GatewayFile("gateway.db"),
                                         GatewayFile("gateway.db-wal"), GatewayFile("gateway.log"),
                                         cli + "/outbox.db"};
  for (const auto& entry : std::filesystem::directory_iterator(cli + "/in")) must_exist.push_back(entry.path());
  ASSERT_EQ(must_exist.size(), 8u) << "listen --out wrote no file";
  for (const auto& path : must_exist) {
    EXPECT_EQ(ModeOf(path), 0600) << path << " is mode " << std::oct << ModeOf(path);
  }
  for (const auto& path : {broker_->store_path() + "-shm", GatewayFile("gateway.db-shm"), cli + "/outbox.db-wal",
                           cli + "/outbox.db-shm"}) {
    const int mode = ModeOf(path);
    if (mode != -1) {
      EXPECT_EQ(mode, 0600) << path << " is mode " << std::oct << mode;
    }
  }
}

TEST_F(FileModesTest, AGroupReadableTlsPrivateKeyStopsTheGateway) {
  ASSERT_EQ(::chmod(gateway_->pki().server_key.c_str(), 0644), 0);
  const Status st = gateway_->Start();
  ASSERT_FALSE(st.ok()) << "the gateway started with a 0644 TLS private key";
  EXPECT_NE(st.message().find("tls.private_key_file"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("chmod 600"), std::string::npos) << st.message();
  ASSERT_EQ(::chmod(gateway_->pki().server_key.c_str(), 0600), 0);
  EXPECT_TRUE(gateway_->Start().ok());
}

TEST_F(FileModesTest, AnAnsweredMessageLeavesNoPlaintextInGatewayDbOrItsWal) {
  ASSERT_TRUE(gateway_->Start().ok());
  const std::string marker = "Marker-Wal-Plaintext-6183";
  SendThroughGateway(marker);
  // Read while the gateway runs: closing would checkpoint and hide the WAL.
  for (const auto& path : {GatewayFile("gateway.db"), GatewayFile("gateway.db-wal")}) {
    ASSERT_TRUE(std::filesystem::exists(path)) << path;
    EXPECT_EQ(ReadText(path).find(marker), std::string::npos) << "the message's plaintext is still in " << path;
  }
  EXPECT_TRUE(gateway_->running());
}

}  // namespace
}  // namespace liaison::testing

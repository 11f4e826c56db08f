// The real broker process on a PostgreSQL store (a cluster this test starts
// itself, testing/pg_cluster.h): the crash run of crash_run.h — SIGKILLs
// while messages flow, nothing acknowledged lost, nothing twice — and how
// the broker starts, checks and fails on a database.
//
// LIAISON_PG_CRASH_MESSAGES sizes the crash run (default 10,000, as the
// SQLite one).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "integration/broker_process.h"
#include "integration/crash_run.h"
#include "testing/fixtures.h"
#include "testing/pg_cluster.h"

namespace liaison::testing {
namespace {

class BrokerOnPostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    cluster_ = PgCluster::Shared(&why);
    if (!cluster_ && why.find("not found") != std::string::npos) GTEST_SKIP() << "postgresql: " << why;
    ASSERT_NE(nullptr, cluster_) << why;
  }
  // broker.yaml's store settings for a new database, with the password in
  // an owner-only file under `dir`.
  std::string StoreSettings(const TempDir& dir, const std::string& name, const std::string& password) {
    static std::atomic<int> next{0};
    auto url = cluster_->CreateDatabase(name + "_" + std::to_string(::getpid()) + "_" + std::to_string(next++));
    EXPECT_TRUE(url.ok()) << url.status().ToString();
    const std::string password_file = dir.file("db.password");
    WriteText(password_file, password + "\n");
    EXPECT_EQ(0, ::chmod(password_file.c_str(), 0600));
    return "backend: postgresql\nurl: \"" + (url.ok() ? *url : std::string()) + "\"\npassword_file: " +
           password_file + "\n";
  }
  PgCluster* cluster_ = nullptr;
};

TEST_F(BrokerOnPostgresTest, EveryStoredMessageArrivesExactlyOnceAcrossKills) {
  TempDir settings_dir;
  CrashRunOptions options;
  options.total = EnvInt("LIAISON_PG_CRASH_MESSAGES", 10000);
  options.kills = 3;
  options.senders = 16;
  options.store_settings = StoreSettings(settings_dir, "crash", cluster_->password());
  options.store_name = "postgresql";
  RunCrashTest(options);
}

// --check-config reaches the database and reads its schema without
// creating it; the first start creates it.
TEST_F(BrokerOnPostgresTest, CheckConfigReadsTheSchemaWithoutCreatingIt) {
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  BrokerProcess broker(dir, {exit}, "", false, StoreSettings(dir, "check", cluster_->password()));
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err))
      << out << err;
  EXPECT_NE(std::string::npos, out.find("schema version 0 (the broker migrates it to 1 at start)")) << out;
  EXPECT_NE(std::string::npos, out.find("host=127.0.0.1")) << out;
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  EXPECT_TRUE(broker.WaitForLog("event=store_schema_created")) << broker.log();
  broker.Stop();
  // The broker creates its ledger file 0640 and --check-config wants 0600:
  // a mismatch of the SQLite deployment too, not this test's subject.
  ASSERT_EQ(0, ::chmod(broker.ledger_path().c_str(), 0600));
  ASSERT_EQ(0, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err))
      << out << err;
  EXPECT_NE(std::string::npos, out.find("schema version 1 (current)")) << out;
}

// A wrong password: the broker does not start, says which server and what
// to check, and neither its log nor its output holds the password.
TEST_F(BrokerOnPostgresTest, AWrongPasswordStopsTheStartWithoutShowingIt) {
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  const std::string wrong = "Not-The-Password-31337";
  BrokerProcess broker(dir, {exit}, "", false, StoreSettings(dir, "wrong", wrong));
  Status st = broker.Start();
  ASSERT_FALSE(st.ok());
  const std::string log = broker.log();
  EXPECT_NE(std::string::npos, log.find("cannot connect")) << log;
  EXPECT_NE(std::string::npos, log.find("port=" + std::to_string(cluster_->port()))) << log;
  EXPECT_EQ(std::string::npos, log.find(wrong)) << log;
  EXPECT_EQ(std::string::npos, st.message().find(wrong)) << st.message();
  std::string out, err;
  EXPECT_EQ(2, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("cannot connect")) << err;
  EXPECT_EQ(std::string::npos, (out + err).find(wrong)) << out << err;
}

}  // namespace
}  // namespace liaison::testing

// The real broker process on a PostgreSQL store (a cluster this test starts
// itself, testing/pg_cluster.h): the crash run of crash_run.h — SIGKILLs
// while messages flow, nothing acknowledged lost, nothing twice — and how
// the broker starts, checks and fails on a database.
//
// LIAISON_PG_CRASH_MESSAGES sizes the crash run (default 10,000, as the
// SQLite one).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "integration/broker_process.h"
#include "integration/crash_run.h"
#include "liaison/agent.h"
#include "testing/fixtures.h"
#include "policy/signing.h"
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

// High availability (issue 17): two brokers on the database, agents that
// know both, 10,000 messages while the active broker is SIGKILLed three
// times (each time the standby takes over and the killed one comes back as
// the standby): every message answered stored reaches the application
// once, the active broker's ledger verifies, and the failover times are
// printed.
TEST_F(BrokerOnPostgresTest, TwoBrokersEveryStoredMessageArrivesExactlyOnceAcrossKills) {
  TempDir settings_dir;
  CrashRunOptions options;
  options.total = EnvInt("LIAISON_PG_CRASH_MESSAGES", 10000);
  options.kills = 3;
  options.senders = 16;
  options.store_settings = StoreSettings(settings_dir, "pair", cluster_->password()) +
                           "lease_ttl_ms: 3000\nlease_renew_ms: 500\n";
  options.store_name = "postgresql, active and standby";
  options.standby_pair = true;
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
  EXPECT_NE(std::string::npos, out.find("schema version 0 (the broker migrates it to 10 at start)")) << out;
  EXPECT_NE(std::string::npos, out.find("host=127.0.0.1")) << out;
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  EXPECT_TRUE(broker.WaitForLog("event=store_schema_created")) << broker.log();
  broker.Stop();
  // After a start: the files the broker made (the ledger 0640) pass.
  ASSERT_EQ(0, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err))
      << out << err;
  EXPECT_NE(std::string::npos, out.find("schema version 10 (current)")) << out;
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

std::vector<uint8_t> Update(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-" + id;
  auto r = std::make_unique<wire::RecipientT>();
  r->agency = to;
  e.to.push_back(std::move(r));
  wire::CaseUpdateT update;
  update.status = wire::CaseStatus::in_progress;
  e.payload.Set(update);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// Every session of the broker on the database at `url` ends, as at a
// server restart (and the call waits until they have).
void EndBrokerSessions(const std::string& url, const std::string& password) {
  const char* keywords[] = {"dbname", "password", nullptr};
  const char* values[] = {url.c_str(), password.c_str(), nullptr};
  PGconn* admin = PQconnectdbParams(keywords, values, 1);
  ASSERT_EQ(CONNECTION_OK, PQstatus(admin)) << PQerrorMessage(admin);
  PGresult* r = PQexec(admin,
                       "SELECT COUNT(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                       "WHERE application_name = 'liaison-broker' AND datname = current_database()");
  ASSERT_EQ(PGRES_TUPLES_OK, PQresultStatus(r)) << PQerrorMessage(admin);
  EXPECT_LE(1, std::atoi(PQgetvalue(r, 0, 0)));
  PQclear(r);
  PQfinish(admin);
}

// The broker's database connections dropped under it (a restarted server,
// a failover): the batch on a dropped connection is answered `unavailable`,
// never `stored`; the broker connects again by itself, a resend of the same
// id is stored, and the recipient gets each message once.
TEST_F(BrokerOnPostgresTest, DroppedDatabaseConnectionsAnswerUnavailableThenTheBrokerRecovers) {
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency youth = MakeAgency("youth-b", "youth-welfare", "mombasa");
  const std::string settings = StoreSettings(dir, "dropped", cluster_->password());
  const std::string url = settings.substr(settings.find('"') + 1,
                                          settings.rfind('"') - settings.find('"') - 1);
  BrokerProcess broker(dir, {exit, youth}, "", false, settings);
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  auto sender = Agent::Connect(broker.AgentFor(exit, wire::Role::sender));
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  auto first = (*sender)->Send(Update("m1", youth.id));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(wire::Code::ok, (*first)->code());
  ASSERT_EQ(wire::Code::stored, (*first)->recipients()->Get(0)->code());

  EndBrokerSessions(url, cluster_->password());

  // Until a batch commits, m2 is answered unavailable, then stored; any
  // other answer fails. Bounded by the attempts.
  int unavailable = 0;
  bool stored = false;
  for (int attempt = 0; attempt < 20 && !stored; ++attempt) {
    auto receipt = (*sender)->Send(Update("m2", youth.id));
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    if ((*receipt)->code() == wire::Code::unavailable) {
      ++unavailable;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    ASSERT_EQ(wire::Code::ok, (*receipt)->code()) << wire::EnumNameCode((*receipt)->code());
    ASSERT_EQ(wire::Code::stored, (*receipt)->recipients()->Get(0)->code());
    stored = true;
  }
  EXPECT_TRUE(stored) << broker.log();
  EXPECT_LE(1, unavailable) << "the batch on the dropped connection must not be answered stored";
  EXPECT_TRUE(broker.WaitForLog("event=store_reconnect")) << broker.log();

  auto receiver = Agent::Connect(broker.AgentFor(youth, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok()) << receiver.status().ToString();
  std::multiset<std::string> got;
  for (int i = 0; i < 30 && got.size() < 2; ++i) {
    auto m = (*receiver)->Receive(std::chrono::milliseconds(200));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    if (!m->has_value()) continue;
    got.insert((*m)->get()->id()->str());
    ASSERT_TRUE((*receiver)->Ack(exit.id, (*m)->get()->id()->string_view()).ok());
  }
  // Any late redelivery of an acked message would show now.
  for (int i = 0; i < 5; ++i) {
    auto m = (*receiver)->Receive(std::chrono::milliseconds(200));
    ASSERT_TRUE(m.ok());
    if (m->has_value()) got.insert((*m)->get()->id()->str());
  }
  EXPECT_EQ((std::multiset<std::string>{"m1", "m2"}), got);
  EXPECT_EQ(std::string::npos, broker.log().find(cluster_->password()));
}

// An id that admission refuses (here not UTF-8, which PostgreSQL's text
// type refuses too) never reaches the database's dedupe lookup: it is
// answered invalid_field, and the messages read with it in the same drain
// are unaffected (before, the drain's one lookup failed for all of them).
TEST_F(BrokerOnPostgresTest, AnIdTheDatabaseWouldRefuseFailsOnlyItsOwnMessage) {
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency youth = MakeAgency("youth-b", "youth-welfare", "mombasa");
  BrokerProcess broker(dir, {exit, youth}, "", false, StoreSettings(dir, "badid", cluster_->password()));
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  auto sender = Agent::Connect(broker.AgentFor(exit, wire::Role::sender));
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  // Pipelined, so that both are read in one drain as often as not.
  ASSERT_TRUE((*sender)->SendFrames(wire::kSend, Update("bad-\xff\xfe", youth.id)).ok());
  ASSERT_TRUE((*sender)->SendFrames(wire::kSend, Update("good-1", youth.id)).ok());
  std::map<std::string, wire::Code> answers;
  for (int i = 0; i < 50 && answers.size() < 2; ++i) {
    auto receipt = (*sender)->TakeReceipt(std::chrono::milliseconds(200));
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    if (!receipt->has_value()) continue;
    const wire::Receipt* r = (*receipt)->get();
    const wire::Code code = r->code() == wire::Code::ok && r->recipients() && r->recipients()->size() == 1
                                ? r->recipients()->Get(0)->code()
                                : r->code();
    answers[r->message_id() ? r->message_id()->str() : ""] = code;
  }
  EXPECT_EQ(wire::Code::stored, answers["good-1"]) << broker.log();
  ASSERT_EQ(2u, answers.size()) << broker.log();
  for (const auto& [id, code] : answers) {
    if (id != "good-1") {
      EXPECT_EQ(wire::Code::invalid_field, code) << wire::EnumNameCode(code);
    }
  }
  EXPECT_EQ(std::string::npos, broker.log().find("event=store_failed")) << broker.log();
}

// A batch that fails to commit takes the ledger records that no message
// decided (a policy version going live) with it; they are not lost but go
// again with the next batch, since no sender will resend them.
TEST_F(BrokerOnPostgresTest, APolicyEventOfAFailedBatchIsRecordedByTheNextOne) {
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency youth = MakeAgency("youth-b", "youth-welfare", "mombasa");
  const std::string settings = StoreSettings(dir, "events", cluster_->password());
  const std::string url = settings.substr(settings.find('"') + 1,
                                          settings.rfind('"') - settings.find('"') - 1);
  BrokerProcess broker(dir, {exit, youth}, "", false, settings);
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  auto ledger_has = [&](const std::string& needle) {
    return WaitForText([&] { return ReadText(broker.ledger_path()); }, needle, 10000);
  };
  ASSERT_TRUE(ledger_has("agencies/exit-a.yaml")) << "the start's policy_live records";

  // A new version of exit-a's file goes live while the broker's database
  // sessions are gone: the batch that carries its record fails first.
  const std::string file = broker.policies_dir() + "/agencies/exit-a.yaml";
  WriteText(file, ReadText(file) + "# reviewed by the DPO\n");
  const std::string hash = policy::FileSha256(ReadText(file));
  EndBrokerSessions(url, cluster_->password());
  broker.Signal(SIGHUP);
  EXPECT_TRUE(broker.WaitForLog("event=reload_done")) << broker.log();
  EXPECT_TRUE(broker.WaitForLog("event=commit_failed")) << broker.log();
  EXPECT_TRUE(ledger_has(hash)) << "the new version's policy_live record was lost with the failed batch\n"
                                << broker.log();
  broker.Stop();
  std::string out, err;
  EXPECT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker.ledger_path(), "--public-key",
                           broker.ledger_public_key()},
                          &out, &err))
      << out << err;
}

}  // namespace
}  // namespace liaison::testing

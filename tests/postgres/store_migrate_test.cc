// `liaison store migrate --from sqlite --to postgresql` on a store a real
// broker made: refused while that broker runs, then everything copied into
// an empty database of the test's own cluster (testing/pg_cluster.h), a
// second run refused (not empty), and the broker restarted on PostgreSQL
// delivers what was queued, once, keeps a set-aside copy set aside,
// answers a resend from the migrated receipt, and its ledger verifies.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>

#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "testing/fixtures.h"
#include "testing/pg_cluster.h"

namespace liaison::testing {
namespace {

std::vector<uint8_t> CaseUpdate(const std::string& id, const std::string& to) {
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

// One number from the database (bounded by libpq's connect_timeout).
int64_t CountRows(const std::string& url, const std::string& password, const std::string& sql) {
  const std::string conninfo = url + "&connect_timeout=10";
  const char* keywords[] = {"dbname", "password", nullptr};
  const char* values[] = {conninfo.c_str(), password.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, 1);
  int64_t n = -1;
  if (PQstatus(conn) == CONNECTION_OK) {
    PGresult* r = PQexec(conn, sql.c_str());
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) n = std::atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
  PQfinish(conn);
  return n;
}

class StoreMigrateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    cluster_ = PgCluster::Shared(&why);
    if (!cluster_ && why.find("not found") != std::string::npos) GTEST_SKIP() << "postgresql: " << why;
    ASSERT_NE(nullptr, cluster_) << why;
  }
  PgCluster* cluster_ = nullptr;
};

TEST_F(StoreMigrateTest, ASqliteStoreMovesToPostgresqlAndTheBrokerGoesOnFromIt) {
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency youth = MakeAgency("youth-b", "youth-welfare", "mombasa");
  BrokerProcess broker(dir, {exit, youth});
  ASSERT_TRUE(broker.Start().ok()) << broker.log();

  // 10 referrals stored; the recipient takes and acknowledges 3 (acked
  // rows, notices owed to the sender, who has no receiver connected); 7
  // stay queued.
  {
    auto sender = Agent::Connect(broker.AgentFor(exit, wire::Role::sender));
    ASSERT_TRUE(sender.ok()) << sender.status().ToString();
    for (int i = 0; i < 10; ++i) {
      auto receipt = (*sender)->Send(CaseUpdate("m" + std::to_string(i), youth.id));
      ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
      ASSERT_EQ(wire::Code::stored, (*receipt)->recipients()->Get(0)->code());
    }
    auto receiver = Agent::Connect(broker.AgentFor(youth, wire::Role::receiver));
    ASSERT_TRUE(receiver.ok()) << receiver.status().ToString();
    std::set<std::string> taken;
    for (int i = 0; i < 50 && taken.size() < 3; ++i) {
      auto m = (*receiver)->Receive(std::chrono::milliseconds(200));
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      if (!m->has_value()) continue;
      const std::string id = (*m)->get()->id()->str();
      if (id != "m0" && id != "m1" && id != "m2") continue;  // not acked: redelivered later
      ASSERT_TRUE((*receiver)->Ack(exit.id, id).ok());
      taken.insert(id);
    }
    ASSERT_EQ(3u, taken.size());
    // The acks are committed once their notices are in the store.
    ASSERT_TRUE(broker.WaitForLog("event=delivered", 5000)) << broker.log();
  }

  ASSERT_EQ(0, broker.Stop());

  int64_t case_keys = 0;
  // m3's sealed copy is damaged on disk: the broker sets it aside (kept,
  // undelivered) when it next reads the queue.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(SQLITE_OK, sqlite3_open_v2(broker.store_path().c_str(), &db, SQLITE_OPEN_READWRITE, nullptr));
    char* error = nullptr;
    const int rc = sqlite3_exec(db,
                                "UPDATE bodies SET sealed = zeroblob(length(sealed)) WHERE seq = "
                                "(SELECT seq FROM messages WHERE message_id = 'm3')",
                                nullptr, nullptr, &error);
    EXPECT_EQ(SQLITE_OK, rc) << (error ? error : "");
    EXPECT_EQ(1, sqlite3_changes(db));
    sqlite3_free(error);
    error = nullptr;
    // A response clock that fired and waits for its answer (no referral
    // here starts one: the row is the store's as a referral would leave
    // it), so that the copy carries one set and one NULL time.
    EXPECT_EQ(SQLITE_OK, sqlite3_exec(db,
                                      "INSERT INTO clocks (sender, message_id, recipient, label, urgency, started_ms, "
                                      "due_ms, purge_after_ms, fired_ms, answered_ms) VALUES ('exit-a', 'r1', "
                                      "'youth-b', 'label-r1', 1, 1000, 2000, 9000000000000, 2500, NULL)",
                                      nullptr, nullptr, &error))
        << (error ? error : "");
    sqlite3_free(error);
    // The cases' keys go with their copies (each CaseUpdate's case has one).
    sqlite3_stmt* count = nullptr;
    ASSERT_EQ(SQLITE_OK, sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM case_keys", -1, &count, nullptr));
    ASSERT_EQ(SQLITE_ROW, sqlite3_step(count));
    case_keys = sqlite3_column_int64(count, 0);
    sqlite3_finalize(count);
    ASSERT_EQ(SQLITE_OK, sqlite3_close(db));
  }
  EXPECT_LT(0, case_keys);
  ASSERT_TRUE(broker.Start(broker.endpoint()).ok()) << broker.log();
  auto url = cluster_->CreateDatabase("migrate_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  const std::string password_file = dir.file("db.password");
  WriteText(password_file, cluster_->password() + "\n");
  ASSERT_EQ(0, ::chmod(password_file.c_str(), 0600));
  const std::vector<std::string> migrate = {LIAISON_CLI_BIN, "store", "migrate", "--from", "sqlite", "--to",
                                            "postgresql", "--config", broker.config_path(), "--url", *url,
                                            "--password-file", password_file};
  std::string out, err;
  {
    // Delivered here and not acknowledged: still queued after the stop.
    auto receiver = Agent::Connect(broker.AgentFor(youth, wire::Role::receiver));
    ASSERT_TRUE(receiver.ok()) << receiver.status().ToString();
    for (int i = 0; i < 50 && broker.log().find("event=store_damaged_message") == std::string::npos; ++i) {
      auto m = (*receiver)->Receive(std::chrono::milliseconds(200));
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      if (m->has_value()) {
        EXPECT_NE("m3", (*m)->get()->id()->str());
      }
    }
    ASSERT_TRUE(broker.WaitForLog("event=store_damaged_message")) << broker.log();

    // The broker runs: the store is in use, nothing is copied.
    EXPECT_EQ(1, RunCommand(migrate, &out, &err)) << out << err;
    EXPECT_NE(std::string::npos, err.find("is in use")) << err;
    EXPECT_NE(std::string::npos, err.find("stop the broker")) << err;
    // The store is checked before the database is touched.
    EXPECT_EQ(0, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"));
  }

  ASSERT_EQ(0, broker.Stop());
  ASSERT_EQ(0, RunCommand(migrate, &out, &err)) << out << err;
  EXPECT_NE(std::string::npos, out.find("in one transaction")) << out;
  EXPECT_NE(std::string::npos, out.find("messages 10, bodies 7, receipts 10, disclosures 10")) << out;
  EXPECT_EQ(std::string::npos, (out + err).find(cluster_->password()));
  EXPECT_EQ(6, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM messages WHERE state = 0"));
  EXPECT_EQ(1, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM messages WHERE state = 5"));
  EXPECT_EQ(3, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM notices"));
  EXPECT_EQ(1, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM ledger_position"));
  EXPECT_EQ(case_keys, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM case_keys"));
  EXPECT_NE(std::string::npos, out.find("case_keys " + std::to_string(case_keys) + ", clocks 1")) << out;
  EXPECT_EQ(1, CountRows(*url, cluster_->password(),
                         "SELECT COUNT(*) FROM clocks WHERE sender = 'exit-a' AND message_id = 'r1' AND recipient = "
                         "'youth-b' AND label = 'label-r1' AND urgency = 1 AND started_ms = 1000 AND due_ms = 2000 "
                         "AND purge_after_ms = 9000000000000 AND fired_ms = 2500 AND answered_ms IS NULL"));

  // Not a second time over the copy.
  EXPECT_EQ(1, RunCommand(migrate, &out, &err)) << out << err;
  EXPECT_NE(std::string::npos, err.find("is not empty")) << err;
  EXPECT_EQ(10, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM messages"));

  // The broker on PostgreSQL: broker.yaml's store moves to the database
  // (the store key and the ledger stay), and the SQLite file goes away.
  std::string config = ReadText(broker.config_path());
  const std::string sqlite_line = "  path: liaison.db\n";
  ASSERT_NE(std::string::npos, config.find(sqlite_line));
  config.replace(config.find(sqlite_line), sqlite_line.size(),
                 "  backend: postgresql\n  url: \"" + *url + "\"\n  password_file: " + password_file + "\n");
  WriteText(broker.config_path(), config);
  ASSERT_EQ(0, ::rename(broker.store_path().c_str(), (broker.store_path() + ".migrated").c_str()));
  ASSERT_TRUE(broker.Start(broker.endpoint()).ok()) << broker.log();

  auto receiver = Agent::Connect(broker.AgentFor(youth, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok()) << receiver.status().ToString();
  std::multiset<std::string> got;
  for (int i = 0; i < 100 && got.size() < 6; ++i) {
    auto m = (*receiver)->Receive(std::chrono::milliseconds(200));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    if (!m->has_value()) continue;
    got.insert((*m)->get()->id()->str());
    ASSERT_TRUE((*receiver)->Ack(exit.id, (*m)->get()->id()->string_view()).ok());
  }
  // A resend of an acknowledged message is answered from the migrated
  // receipt and not delivered again.
  auto sender = Agent::Connect(broker.AgentFor(exit, wire::Role::sender));
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  auto resent = (*sender)->Send(CaseUpdate("m0", youth.id));
  ASSERT_TRUE(resent.ok()) << resent.status().ToString();
  EXPECT_EQ(wire::Code::stored, (*resent)->recipients()->Get(0)->code());
  for (int i = 0; i < 5; ++i) {
    auto m = (*receiver)->Receive(std::chrono::milliseconds(200));
    ASSERT_TRUE(m.ok());
    if (m->has_value()) got.insert((*m)->get()->id()->str());
  }
  EXPECT_EQ((std::multiset<std::string>{"m4", "m5", "m6", "m7", "m8", "m9"}), got) << broker.log();
  ASSERT_EQ(0, broker.Stop()) << broker.log();

  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker.ledger_path(), "--public-key",
                           broker.ledger_public_key()},
                          &out, &err))
      << out << err;
}

// A wrong store key is refused before the database is touched, and a
// database named in --url that does not answer is reported as such.
TEST_F(StoreMigrateTest, AWrongKeyOrAnUnreachableDatabaseIsRefused) {
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  BrokerProcess broker(dir, {exit});
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  ASSERT_EQ(0, broker.Stop());
  const std::string other_key = dir.file("other.key");
  ASSERT_TRUE(WriteStoreKey(other_key).ok());
  auto url = cluster_->CreateDatabase("migrate_key_" + std::to_string(::getpid()));
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  const std::string password_file = dir.file("db.password");
  WriteText(password_file, cluster_->password() + "\n");
  ASSERT_EQ(0, ::chmod(password_file.c_str(), 0600));
  std::string out, err;
  // The store refuses the key before the database is touched (a new
  // database would otherwise keep the wrong key's check).
  EXPECT_EQ(1, RunCommand({LIAISON_CLI_BIN, "store", "migrate", "--sqlite", broker.store_path(), "--store-key",
                           other_key, "--url", *url, "--password-file", password_file},
                          &out, &err));
  EXPECT_NE(std::string::npos, err.find("store key does not match")) << err;
  EXPECT_EQ(0, CountRows(*url, cluster_->password(), "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"));
  EXPECT_EQ(1, RunCommand({LIAISON_CLI_BIN, "store", "migrate", "--config", broker.config_path(), "--url",
                           "postgresql://liaison@127.0.0.1:1/none?connect_timeout=5", "--password-file",
                           password_file},
                          &out, &err));
  EXPECT_NE(std::string::npos, err.find("cannot connect")) << err;
  EXPECT_EQ(std::string::npos, err.find(cluster_->password())) << err;
}

}  // namespace
}  // namespace liaison::testing

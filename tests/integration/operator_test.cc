// The operator's commands against a real broker: --version and
// --check-config, `liaison status` and `liaison queues` while messages wait,
// purging and requeueing set-aside messages, and `liaison backup` during
// traffic restored into a fresh folder.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::vector<uint8_t> Update(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-7";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::CaseUpdateT u;
  u.notes = "SECRET-NOTE-TEXT";
  e.payload.Set(u);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// "ok" when stored; else the receipt's code or the error.
std::string Send(Agent& agent, const std::string& id, const std::string& to) {
  auto r = agent.Send(Update(id, to));
  if (!r.ok()) return r.status().ToString();
  return wire::EnumNameCode((*r)->code());
}

bool Stored(Agent& agent, const std::string& id, const std::string& to) { return Send(agent, id, to) == "ok"; }

// Runs `sql` on the store file beside the broker (as an operator's repair
// would); false with the error printed if it fails.
bool ExecSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  bool ok = sqlite3_open(path.c_str(), &db) == SQLITE_OK && sqlite3_busy_timeout(db, 5000) == SQLITE_OK;
  char* error = nullptr;
  ok = ok && sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error) == SQLITE_OK;
  if (!ok) std::cerr << "sqlite: " << (error ? error : sqlite3_errmsg(db)) << "\n";
  sqlite3_free(error);
  sqlite3_close(db);
  return ok;
}

// The store's seq of `recipient`'s copy of `id` (0 if none).
int64_t SeqOf(const std::string& path, const std::string& id, const std::string& recipient) {
  sqlite3* db = nullptr;
  int64_t seq = 0;
  sqlite3_stmt* q = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK &&
      sqlite3_busy_timeout(db, 5000) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "SELECT seq FROM messages WHERE message_id = ?1 AND recipient = ?2", -1, &q,
                         nullptr) == SQLITE_OK &&
      sqlite3_bind_text(q, 1, id.c_str(), -1, SQLITE_TRANSIENT) == SQLITE_OK &&
      sqlite3_bind_text(q, 2, recipient.c_str(), -1, SQLITE_TRANSIENT) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
    seq = sqlite3_column_int64(q, 0);
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  return seq;
}

class OperatorTest : public ::testing::Test {
 protected:
  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
};

TEST_F(OperatorTest, EveryBinaryPrintsItsVersionAndLibraries) {
  for (const std::string bin : {LIAISON_BROKER_BIN, LIAISON_CLI_BIN, LIAISON_GATEWAY_BIN}) {
    std::string out, err;
    ASSERT_EQ(0, RunCommand({bin, "--version"}, &out, &err)) << bin << ": " << err;
    EXPECT_NE(std::string::npos, out.find(fs::path(bin).filename().string() + " 0.1.0 (")) << out;
    for (const char* part : {"compiler:", "libzmq 4.", "OpenSSL 3.", "SQLite 3."}) {
      EXPECT_NE(std::string::npos, out.find(part)) << bin << " lacks " << part << ":\n" << out;
    }
  }
}

TEST_F(OperatorTest, CheckConfigValidatesWithoutStarting) {
  BrokerProcess broker(dir_, {a_, b_});
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err))
      << out << err;
  EXPECT_NE(std::string::npos, out.find("config ok")) << out;
  EXPECT_NE(std::string::npos, out.find("2 agencies")) << out;
  EXPECT_FALSE(fs::exists(broker.store_path())) << "a check must not create the store";
  EXPECT_FALSE(fs::exists(dir_.file("endpoint")));

  // A broken policy: the same file:line error as at start, exit 2.
  const std::string agency_file = broker.policies_dir() + "/agencies/b.yaml";
  const std::string good = ReadText(agency_file);
  WriteText(agency_file, good + "release:\n  - id: [unclosed\n");
  EXPECT_EQ(2, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err));
  EXPECT_NE(std::string::npos, (out + err).find("b.yaml:")) << out << err;
  WriteText(agency_file, good);

  // A store file readable by others.
  WriteText(broker.store_path(), "");
  ASSERT_EQ(0, ::chmod(broker.store_path().c_str(), 0644));
  EXPECT_EQ(2, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("mode 0644")) << out << err;
  fs::remove(broker.store_path());

  // The ledger: 0640 as the broker makes it passes (auditors of its group
  // read it); readable by others does not.
  const std::string ledger = broker.ledger_path();
  WriteText(ledger, "");
  ASSERT_EQ(0, ::chmod(ledger.c_str(), 0640));
  EXPECT_EQ(0, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err))
      << out << err;
  ASSERT_EQ(0, ::chmod(ledger.c_str(), 0644));
  EXPECT_EQ(2, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("mode 0644")) << out << err;
  EXPECT_NE(std::string::npos, err.find("chmod 640")) << out << err;
  fs::remove(ledger);

  // A missing key file.
  fs::rename(dir_.file("keys/store.key"), dir_.file("keys/store.key.away"));
  EXPECT_EQ(2, RunCommand({LIAISON_BROKER_BIN, "--config", broker.config_path(), "--check-config"}, &out, &err));
  EXPECT_NE(std::string::npos, (out + err).find("store.key")) << out << err;
}

TEST_F(OperatorTest, StatusAndQueuesShowWaitingMessagesWithoutContents) {
  BrokerProcess broker(dir_, {a_, b_});
  ASSERT_TRUE(broker.Start().ok());
  struct stat st {};
  ASSERT_EQ(0, ::stat(broker.admin_socket().c_str(), &st));
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(0600u, st.st_mode & 0777) << "the admin socket must be owner-only";

  auto sender = Agent::Connect(broker.AgentFor(a_));
  ASSERT_TRUE(sender.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Stored(**sender, "q-" + std::to_string(i), "b"));

  std::string out, err;
  // The reactor publishes the connected agencies once a second.
  std::string status;
  for (int attempt = 0; attempt < 30; ++attempt) {
    ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "status", "--config", broker.config_path()}, &status, &err)) << err;
    if (status.find("connected agencies: 1 (a)") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(std::string::npos, status.find("role:               active")) << status;
  EXPECT_NE(std::string::npos, status.find("connected agencies: 1 (a)")) << status;
  EXPECT_NE(std::string::npos, status.find("queued messages:    3")) << status;
  EXPECT_NE(std::string::npos, status.find("set aside:          0")) << status;
  EXPECT_NE(std::string::npos, status.find("policy version:")) << status;
  EXPECT_NE(std::string::npos, status.find("ledger:             last record ")) << status;
  EXPECT_NE(std::string::npos, status.find("\nb ")) << status;

  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "status", "--socket", broker.admin_socket(), "--json"}, &out, &err));
  EXPECT_NE(std::string::npos, out.find("\"queued\": 3")) << out;
  EXPECT_NE(std::string::npos, out.find("{\"recipient\": \"b\", \"queued\": 3")) << out;

  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "queues", "--config", broker.config_path(), "--recipient", "b"},
                          &out, &err))
      << err;
  for (int i = 0; i < 3; ++i) EXPECT_NE(std::string::npos, out.find("q-" + std::to_string(i))) << out;
  EXPECT_NE(std::string::npos, out.find("CaseUpdate")) << out;
  EXPECT_NE(std::string::npos, out.find("queued")) << out;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "queues", "--config", broker.config_path(), "--recipient", "b",
                           "--limit", "2", "--json"},
                          &out, &err));
  EXPECT_NE(std::string::npos, out.find("\"message_id\": \"q-1\", \"type\": \"CaseUpdate\"")) << out;
  EXPECT_EQ(std::string::npos, out.find("q-2")) << "--limit 2: " << out;
  EXPECT_EQ(1, RunCommand({LIAISON_CLI_BIN, "queues", "--config", broker.config_path(), "--limit", "0"}, &out,
                          &err));

  // Never contents or case references, in the answers or in the log.
  for (const std::string& text : {status, out, broker.log()}) {
    EXPECT_EQ(std::string::npos, text.find("SECRET-NOTE-TEXT"));
    EXPECT_EQ(std::string::npos, text.find("CASE-7"));
  }

  // Delivered and acked: the queue empties.
  auto receiver = Agent::Connect(broker.AgentFor(b_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  for (int i = 0; i < 3; ++i) {
    auto m = (*receiver)->Receive(5000ms);
    ASSERT_TRUE(m.ok() && m->has_value());
    ASSERT_TRUE((*receiver)->Ack("a", (**m)->id()->string_view()).ok());
  }
  bool empty = false;
  for (int attempt = 0; attempt < 50 && !empty; ++attempt) {
    ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "queues", "--socket", broker.admin_socket()}, &out, &err));
    empty = out.find("no queued or set-aside messages") != std::string::npos;
    if (!empty) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(empty) << out;

  // Without the broker: a clear failure, exit 1.
  broker.Stop();
  EXPECT_EQ(1, RunCommand({LIAISON_CLI_BIN, "status", "--config", broker.config_path()}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("did not answer")) << err;
}

TEST_F(OperatorTest, SetAsideMessagesArePurgedOrRequeuedEachInTheLedger) {
  BrokerProcess broker(dir_, {a_, b_});
  ASSERT_TRUE(broker.Start().ok());
  {
    auto sender = Agent::Connect(broker.AgentFor(a_));
    ASSERT_TRUE(sender.ok());
    for (const char* id : {"s-purge", "s-requeue", "s-good"}) ASSERT_TRUE(Stored(**sender, id, "b"));
  }
  broker.Stop();
  const int64_t purge_seq = SeqOf(broker.store_path(), "s-purge", "b");
  const int64_t requeue_seq = SeqOf(broker.store_path(), "s-requeue", "b");
  const int64_t good_seq = SeqOf(broker.store_path(), "s-good", "b");
  ASSERT_TRUE(purge_seq > 0 && requeue_seq > 0 && good_seq > 0);
  // Two damaged copies (they no longer decrypt); the intact body of one is
  // kept aside, as a backup would keep it.
  ASSERT_TRUE(ExecSql(broker.store_path(),
                      "CREATE TABLE kept AS SELECT seq, sealed FROM bodies WHERE seq = " + std::to_string(requeue_seq) +
                          "; UPDATE bodies SET sealed = zeroblob(40) WHERE seq IN (" + std::to_string(purge_seq) +
                          ", " + std::to_string(requeue_seq) + ");"));
  ASSERT_TRUE(broker.Start().ok());
  auto receiver = Agent::Connect(broker.AgentFor(b_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  {
    auto m = (*receiver)->Receive(5000ms);
    ASSERT_TRUE(m.ok() && m->has_value());
    EXPECT_EQ("s-good", (**m)->id()->str()) << "the damaged copies are set aside, not delivered";
    ASSERT_TRUE((*receiver)->Ack("a", "s-good").ok());
  }
  std::string out, err;
  const std::vector<std::string> list = {LIAISON_CLI_BIN, "queues", "--config", broker.config_path(), "--recipient",
                                         "b"};
  bool both_set_aside = false;
  for (int attempt = 0; attempt < 50 && !both_set_aside; ++attempt) {
    ASSERT_EQ(0, RunCommand(list, &out, &err)) << err;
    both_set_aside = out.find("set-aside") != out.rfind("set-aside");
    if (!both_set_aside) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(both_set_aside) << out;

  auto cli = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {LIAISON_CLI_BIN, "queues", "--config", broker.config_path()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunCommand(argv, &out, &err);
  };
  // Refused without a recipient, with a malformed list, and for a copy that
  // is not set aside (delivered): nothing happens to the others.
  EXPECT_EQ(2, cli({"--purge-set-aside", "all"}));
  EXPECT_NE(std::string::npos, err.find("--recipient")) << err;
  EXPECT_EQ(2, cli({"--recipient", "b", "--purge-set-aside", "1;2"}));
  EXPECT_EQ(1, cli({"--recipient", "b", "--purge-set-aside", std::to_string(good_seq)}));
  EXPECT_NE(std::string::npos, out.find("not set aside for b, nothing done: seq " + std::to_string(good_seq))) << out;

  ASSERT_EQ(0, cli({"--recipient", "b", "--purge-set-aside", std::to_string(purge_seq)})) << out << err;
  EXPECT_NE(std::string::npos, out.find("purged 1 set-aside message(s) of b")) << out;
  EXPECT_NE(std::string::npos, out.find("seq " + std::to_string(purge_seq) + " from a id s-purge CaseUpdate")) << out;
  // Purged once: a second purge finds nothing.
  EXPECT_EQ(1, cli({"--recipient", "b", "--purge-set-aside", std::to_string(purge_seq)}));

  // The operator repairs the other copy's body in place (from the backup),
  // then requeues it: the connected receiver gets it.
  ASSERT_TRUE(ExecSql(broker.store_path(), "UPDATE bodies SET sealed = (SELECT sealed FROM kept) WHERE seq = " +
                                               std::to_string(requeue_seq) + "; DROP TABLE kept;"));
  ASSERT_EQ(0, cli({"--recipient", "b", "--requeue-set-aside", "all", "--json"})) << out << err;
  EXPECT_NE(std::string::npos, out.find("\"action\": \"requeued\"")) << out;
  EXPECT_NE(std::string::npos, out.find("\"message_id\": \"s-requeue\"")) << out;
  {
    auto m = (*receiver)->Receive(5000ms);
    ASSERT_TRUE(m.ok() && m->has_value()) << "the requeued copy is delivered";
    EXPECT_EQ("s-requeue", (**m)->id()->str());
    ASSERT_TRUE((*receiver)->Ack("a", "s-requeue").ok());
  }
  bool empty = false;
  for (int attempt = 0; attempt < 50 && !empty; ++attempt) {
    ASSERT_EQ(0, RunCommand(list, &out, &err));
    empty = out.find("no queued or set-aside messages") != std::string::npos;
    if (!empty) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(empty) << out;
  receiver->reset();
  broker.Stop();

  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker.ledger_path(), "--public-key",
                           broker.ledger_public_key()},
                          &out, &err))
      << out << err;
  for (const std::string decision : {"purged", "requeued"}) {
    ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "query", "--ledger", broker.ledger_path(), "--decision",
                             decision, "--format", "csv"},
                            &out, &err))
        << err;
    const std::string id = decision == "purged" ? "s-purge" : "s-requeue";
    EXPECT_NE(std::string::npos, out.find("," + decision + "," + id + ",")) << out;
    EXPECT_NE(std::string::npos, out.find(",a,b,CaseUpdate,")) << out;
    EXPECT_NE(std::string::npos, out.find(",operator,")) << out;
    EXPECT_EQ(2u, std::count(out.begin(), out.end(), '\n')) << "one record: " << out;
  }
  for (const std::string& text : {ReadText(broker.ledger_path()), broker.log()}) {
    EXPECT_EQ(std::string::npos, text.find("SECRET-NOTE-TEXT"));
    EXPECT_EQ(std::string::npos, text.find("CASE-7"));
  }
}

// Every file under `root` by relative path, with its bytes.
std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file()) files[fs::relative(entry.path(), root).string()] = ReadText(entry.path().string());
  }
  return files;
}

// The policy version the running broker reports (liaison status --json).
std::string LivePolicyVersion(const BrokerProcess& broker) {
  std::string out, err;
  if (RunCommand({LIAISON_CLI_BIN, "status", "--socket", broker.admin_socket(), "--json"}, &out, &err) != 0) return "";
  const std::string key = "\"policy_version\": \"";
  const size_t at = out.find(key);
  if (at == std::string::npos) return "";
  return out.substr(at + key.size(), out.find('"', at + key.size()) - at - key.size());
}

TEST_F(OperatorTest, PolicyInstallReplacesTheLiveSetAtomicallyOrNotAtAll) {
  BrokerProcess broker(dir_, {a_, b_});
  ASSERT_TRUE(broker.Start().ok());
  const std::string live = broker.policies_dir();
  const std::string staged = dir_.file("staged");
  fs::copy(live, staged, fs::copy_options::recursive);
  const auto before = Snapshot(live);
  const std::string version_before = LivePolicyVersion(broker);
  ASSERT_FALSE(version_before.empty());
  const std::string b_file = "/agencies/b.yaml";
  const std::string good = ReadText(staged + b_file);
  std::string out, err;
  auto no_leftovers = [&] {
    for (const auto& entry : fs::directory_iterator(fs::path(live).parent_path())) {
      if (entry.path().filename().string().find(".install-") != std::string::npos) return false;
    }
    return true;
  };

  // A broken staged set is refused with the broker's file:line error; LIVE
  // stays byte for byte as it was.
  WriteText(staged + b_file, good + "release:\n  - id: [unclosed\n");
  EXPECT_EQ(1, RunCommand({LIAISON_CLI_BIN, "policy", "install", staged, live}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("b.yaml:")) << err;
  EXPECT_NE(std::string::npos, err.find("REFUSED")) << err;
  EXPECT_EQ(before, Snapshot(live));
  EXPECT_TRUE(no_leftovers());

  // A valid set whose files are not signed by the pinned DPO keys.
  WriteText(staged + b_file, good + "# reviewed by the DPO\n");
  const std::string pins = dir_.file("dpo-pins");
  WriteText(pins, "a " + std::string(64, 'a') + "\n");
  EXPECT_EQ(1, RunCommand({LIAISON_CLI_BIN, "policy", "install", staged, live, "--pins", pins}, &out, &err));
  EXPECT_NE(std::string::npos, err.find("REFUSED")) << err;
  EXPECT_EQ(before, Snapshot(live));
  EXPECT_TRUE(no_leftovers());

  // The same set without signing goes live, whole, and the broker reloads it.
  EXPECT_EQ(2, RunCommand({LIAISON_CLI_BIN, "policy", "install", live, live}, &out, &err));
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "policy", "install", staged, live}, &out, &err)) << out << err;
  const std::string key = "policy version ";
  ASSERT_NE(std::string::npos, out.find(key)) << out;
  const std::string version = out.substr(out.find(key) + key.size(), 16);
  EXPECT_NE(version_before, version);
  EXPECT_EQ(Snapshot(staged), Snapshot(live));
  EXPECT_TRUE(no_leftovers());
  std::string reported;
  for (int attempt = 0; attempt < 100 && reported != version; ++attempt) {
    std::this_thread::sleep_for(100ms);
    reported = LivePolicyVersion(broker);
  }
  EXPECT_EQ(version, reported) << broker.log();
  EXPECT_EQ(std::string::npos, broker.log().find("event=reload_failed")) << "the broker never saw a partial set";
}

// The broker sees a policy change as it happens (inotify), also one that
// keeps the file's size and modification time, which polling sizes and
// times cannot see, and also after the folder was replaced by an install.
TEST_F(OperatorTest, PolicyChangesAreSeenEvenWithTheSameSizeAndTime) {
  BrokerProcess broker(dir_, {a_, b_});
  const std::string live = broker.policies_dir();
  const std::string b_file = "/agencies/b.yaml";
  WriteText(live + b_file, ReadText(live + b_file) + "# revision A\n");
  ASSERT_TRUE(broker.Start().ok());
  ASSERT_FALSE(LivePolicyVersion(broker).empty());
  auto wait_for_version = [&](const std::string& want) {
    std::string reported;
    for (int attempt = 0; attempt < 100 && reported != want; ++attempt) {
      std::this_thread::sleep_for(100ms);
      reported = LivePolicyVersion(broker);
    }
    return reported;
  };
  auto same_size_and_time_edit = [&](const std::string& from, const std::string& to) {
    const std::string path = live + b_file;
    struct stat st {};
    ASSERT_EQ(0, ::stat(path.c_str(), &st));
    std::string text = ReadText(path);
    const size_t at = text.rfind(from);
    ASSERT_NE(std::string::npos, at);
    text.replace(at, from.size(), to);
    WriteText(path, text);
    const timespec times[2] = {st.st_atim, st.st_mtim};
    ASSERT_EQ(0, ::utimensat(AT_FDCWD, path.c_str(), times, 0));
  };
  auto version_of = [&](const std::string& dir) {
    std::string out, err;
    RunCommand({LIAISON_CLI_BIN, "policy", "check", dir}, &out, &err);
    return out.substr(out.rfind(' ') + 1, 16);
  };

  same_size_and_time_edit("# revision A", "# revision B");
  const std::string b = version_of(live);
  EXPECT_EQ(b, wait_for_version(b)) << broker.log();

  // Replaced by an install (one rename), then edited in place again.
  const std::string staged = dir_.file("staged");
  fs::copy(live, staged, fs::copy_options::recursive);
  WriteText(staged + b_file, ReadText(staged + b_file) + "# installed\n");
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "policy", "install", staged, live}, &out, &err)) << out << err;
  const std::string installed = version_of(live);
  EXPECT_EQ(installed, wait_for_version(installed)) << broker.log();
  same_size_and_time_edit("# revision B", "# revision C");
  const std::string c = version_of(live);
  EXPECT_NE(installed, c);
  EXPECT_EQ(c, wait_for_version(c)) << broker.log();
  EXPECT_EQ(std::string::npos, broker.log().find("policy_watch_unavailable")) << broker.log();
}

TEST_F(OperatorTest, BackupDuringTrafficRestoresIntoAFreshFolder) {
  BrokerProcess broker(dir_, {a_, b_});
  ASSERT_TRUE(broker.Start().ok());
  auto sender = Agent::Connect(broker.AgentFor(a_));
  ASSERT_TRUE(sender.ok());
  constexpr int kBefore = 20;
  for (int i = 0; i < kBefore; ++i) ASSERT_TRUE(Stored(**sender, "before-" + std::to_string(i), "b"));

  // Traffic while the backup runs: another sender keeps storing for b.
  std::atomic<bool> stop{false};
  std::atomic<int> during{0};
  std::atomic<bool> traffic_failed{false};
  std::string traffic_error;  // written by the traffic thread before traffic_failed
  std::atomic<int> resends{0};
  std::thread traffic([&] {
    auto agent = Agent::Connect(broker.AgentFor(a_));
    if (!agent.ok()) {
      traffic_failed = true;
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!stop && std::chrono::steady_clock::now() < deadline) {
      const std::string code = Send(**agent, "during-" + std::to_string(during), "b");
      // Over the agency's limits, or no receipt in time on a loaded machine:
      // resend, same id (safe: a stored one is answered with its receipt).
      if (code == "busy" || code.rfind("deadline exceeded", 0) == 0) {
        ++resends;
        continue;
      }
      if (code != "ok") {
        traffic_error = code;
        traffic_failed = true;
        return;
      }
      ++during;
    }
  });
  while (during < 5 && !traffic_failed) std::this_thread::sleep_for(10ms);
  const std::string backup = dir_.file("backup-1");
  std::string out, err;
  const int backup_rc = RunCommand({LIAISON_CLI_BIN, "backup", "--config", broker.config_path(), "--out", backup},
                                   &out, &err);
  const int during_backup_end = during;
  stop = true;
  traffic.join();
  ASSERT_EQ(0, backup_rc) << out << err;
  ASSERT_FALSE(traffic_failed) << traffic_error;
  std::cout << during_backup_end << " messages stored during the backup (" << resends << " resent)\n";
  EXPECT_GT(during_backup_end, 5);
  for (const char* name : {"store.db", "ledger.log", "MANIFEST"}) EXPECT_TRUE(fs::exists(backup + "/" + name));
  struct stat st {};
  ASSERT_EQ(0, ::stat((backup + "/store.db").c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 0777);
  // A second backup into the same folder is refused.
  EXPECT_EQ(2, RunCommand({LIAISON_CLI_BIN, "backup", "--config", broker.config_path(), "--out", backup}, &out,
                          &err));
  broker.Stop();

  // A fresh folder with the same store, pseudonym and ledger keys (backed up
  // apart from the data), a broker of its own.
  TempDir fresh;
  BrokerProcess restored(fresh, {a_, b_});
  for (const char* key : {"keys/store.key", "keys/store.key.ring", "keys/pseudonym.key", "keys/ledger-signing.key",
                          "keys/ledger-signing.pub"}) {
    fs::copy_file(dir_.file(key), fresh.file(key), fs::copy_options::overwrite_existing);
  }
  // Restore refuses a damaged backup.
  {
    TempDir damaged_dir;
    const std::string damaged = damaged_dir.file("b");
    fs::copy(backup, damaged);
    std::string ledger_text = ReadText(damaged + "/ledger.log");
    ledger_text[ledger_text.size() / 2] ^= 1;
    WriteText(damaged + "/ledger.log", ledger_text);
    EXPECT_EQ(1, RunCommand({LIAISON_CLI_BIN, "restore", "--config", restored.config_path(), "--from", damaged},
                            &out, &err));
    EXPECT_NE(std::string::npos, err.find("SHA-256")) << err;
    EXPECT_FALSE(fs::exists(restored.store_path()));
  }
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "restore", "--config", restored.config_path(), "--from", backup}, &out,
                          &err))
      << out << err;
  // Never over existing data.
  EXPECT_EQ(2, RunCommand({LIAISON_CLI_BIN, "restore", "--config", restored.config_path(), "--from", backup}, &out,
                          &err));
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", restored.ledger_path(), "--public-key",
                           restored.ledger_public_key()},
                          &out, &err))
      << out << err;

  ASSERT_TRUE(restored.Start().ok()) << restored.log();
  // What the backup held queued is what the restored broker delivers: the
  // messages stored before the backup, and a prefix of those during it.
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "queues", "--config", restored.config_path(), "--recipient", "b",
                           "--limit", "10000"},
                          &out, &err));
  auto receiver = Agent::Connect(restored.AgentFor(b_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  std::set<std::string> received;
  while (true) {
    auto m = (*receiver)->Receive(3000ms);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    if (!m->has_value()) break;
    received.insert((**m)->id()->str());
    ASSERT_TRUE((*receiver)->Ack("a", (**m)->id()->string_view()).ok());
  }
  for (int i = 0; i < kBefore; ++i) {
    EXPECT_EQ(1u, received.count("before-" + std::to_string(i))) << "before-" << i << " was lost";
  }
  int during_received = 0;
  while (received.count("during-" + std::to_string(during_received))) ++during_received;
  EXPECT_EQ(received.size(), static_cast<size_t>(kBefore + during_received))
      << "only a prefix of the traffic during the backup may be in it";
  // The message in flight when the backup ended may be in it too.
  EXPECT_LE(during_received, during_backup_end + 1);
  for (const auto& id : received) EXPECT_NE(std::string::npos, out.find(id)) << id << " not listed by queues";
  restored.Stop();
  // The restored broker's ledger, continued after the restore, verifies.
  EXPECT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", restored.ledger_path(), "--public-key",
                           restored.ledger_public_key()},
                          &out, &err))
      << out << err;
}

}  // namespace
}  // namespace liaison::testing

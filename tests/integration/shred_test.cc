// Erasure that shreds (issue 18, part 3; docs/audit.md "Erasure that
// shreds"): a backup taken before an erasure, opened with the store key and
// the current case-key ring, opens every other case's copies and none of the
// erased case's; restored and served by a real broker, it delivers the other
// case only; the ledger verifies and shows the erasure. The same for the
// agent's outbox (a copy of its file taken before the agent sent the
// erasure); the gateway's state file is in gateway_test.cc.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "liaison/keys.h"
#include "liaison/outbox.h"
#include "sqlite/sqlite_store.h"
#include "store/case_keys.h"

namespace liaison::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string Code(Agent& agent, const std::vector<uint8_t>& bytes) {
  auto r = agent.Send(bytes);
  if (!r.ok()) return r.status().ToString();
  return wire::EnumNameCode((*r)->code());
}

// What a copy of the store at `db` opens for `recipient` with the store key
// and the ring at `ring_path`: the ids that open, and how many do not.
struct Opened {
  std::set<std::string> ids;
  size_t unreadable = 0;
};
Opened OpenCopies(const std::string& db, const std::string& key_file, const std::string& ring_path,
                  const std::string& recipient) {
  Opened out;
  auto key = LoadStoreKey(key_file);
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  if (!key.ok()) return out;
  auto ring = store::CaseKeyRing::Open(ring_path, *key);
  EXPECT_TRUE(ring.ok()) << ring.status().ToString();
  if (!ring.ok()) return out;
  auto s = store::SqliteStore::Open(db, *key, 0, false, *ring);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  if (!s.ok()) return out;
  std::vector<int64_t> damaged;
  auto pending = (*s)->Pending(recipient, 0, 1000, &damaged);
  EXPECT_TRUE(pending.ok()) << pending.status().ToString();
  if (!pending.ok()) return out;
  for (const auto& m : *pending) out.ids.insert(m.message_id);
  out.unreadable = damaged.size();
  return out;
}

// The ids of the envelopes in a copy of an outbox (the file and its -wal,
// copied into a scratch folder) opened with the outbox key (and its ring),
// and how many of its messages do not open.
struct OutboxOpened {
  std::set<std::string> ids;
  int64_t shredded = -1;
};
OutboxOpened OpenOutboxCopy(const std::string& db, const std::string& key_file) {
  OutboxOpened out;
  TempDir scratch;
  fs::copy_file(db, scratch.file("outbox.db"));
  if (fs::exists(db + "-wal")) fs::copy_file(db + "-wal", scratch.file("outbox.db-wal"));
  auto box = Outbox::Open(scratch.file("outbox.db"), key_file);
  EXPECT_TRUE(box.ok()) << box.status().ToString();
  if (!box.ok()) return out;
  auto contents = (*box)->Peek();
  EXPECT_TRUE(contents.ok()) << contents.status().ToString();
  if (!contents.ok()) return out;
  for (const auto& bytes : contents->envelopes) {
    const wire::Envelope* e = wire::VerifyEnvelope(bytes);
    EXPECT_NE(nullptr, e);
    if (e) out.ids.insert(e->id()->str());
  }
  out.shredded = contents->shredded;
  return out;
}

std::string FileBytes(const std::string& path) { return fs::exists(path) ? ReadText(path) : std::string(); }

class ShredTest : public ::testing::Test {
 protected:
  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
};

TEST_F(ShredTest, AnErasureLeavesAnEarlierBackupReadableForEveryOtherCaseOnly) {
  BrokerProcess broker(dir_, {a_, b_});
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  const std::string key_file = dir_.file("keys/store.key");
  const std::string ring = key_file + ".ring";
  {
    auto a = Agent::Connect(broker.AgentFor(a_));
    ASSERT_TRUE(a.ok());
    // b is offline: both cases' copies wait in the store.
    ASSERT_EQ("ok", Code(**a, CaseMessage("x1", {"b"}, "CASE-X")));
    ASSERT_EQ("ok", Code(**a, CaseMessage("x2", {"b"}, "CASE-X")));
    ASSERT_EQ("ok", Code(**a, CaseMessage("y1", {"b"}, "CASE-Y")));
  }
  // The ring was made at the first start, owner-only.
  struct stat st {};
  ASSERT_EQ(0, ::stat(ring.c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 0777);

  const std::string backup = dir_.file("backup-1");
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "backup", "--config", broker.config_path(), "--out", backup}, &out, &err))
      << out << err;
  // Before the erasure the backup opens every case.
  {
    TempDir scratch;
    fs::copy_file(backup + "/store.db", scratch.file("s.db"));
    const Opened before = OpenCopies(scratch.file("s.db"), key_file, ring, "b");
    EXPECT_EQ((std::set<std::string>{"x1", "x2", "y1"}), before.ids);
    EXPECT_EQ(0u, before.unreadable);
  }

  {
    auto a = Agent::Connect(broker.AgentFor(a_));
    ASSERT_TRUE(a.ok());
    ASSERT_EQ("ok", Code(**a, CaseMessage("x-erase", {"b"}, "CASE-X", /*erasure=*/true)));
    // A later message of the same case gets a new key and stays readable.
    ASSERT_EQ("ok", Code(**a, CaseMessage("x3", {"b"}, "CASE-X")));
  }
  ASSERT_TRUE(broker.WaitForLog("event=case_keys_rotated")) << broker.log();
  EXPECT_EQ(0, broker.Stop());

  // The live store: the erasure itself and the later x3 are delivered.
  {
    TempDir scratch;
    fs::copy_file(broker.store_path(), scratch.file("live.db"));
    if (fs::exists(broker.store_path() + "-wal")) fs::copy_file(broker.store_path() + "-wal", scratch.file("live.db-wal"));
    const Opened live = OpenCopies(scratch.file("live.db"), key_file, ring, "b");
    EXPECT_EQ((std::set<std::string>{"y1", "x-erase", "x3"}), live.ids);
    EXPECT_EQ(0u, live.unreadable);
  }
  // The backup taken before: with the store key and the current ring, the
  // other case opens and none of the erased case's copies do.
  {
    TempDir scratch;
    fs::copy_file(backup + "/store.db", scratch.file("s.db"));
    const Opened after = OpenCopies(scratch.file("s.db"), key_file, ring, "b");
    EXPECT_EQ((std::set<std::string>{"y1"}), after.ids);
    EXPECT_EQ(2u, after.unreadable);  // x1, x2
  }
  // Nor does the backup's own wrapped key open under any KEK the ring holds:
  // the ring now holds one epoch only.
  {
    const std::string text = ReadText(ring);
    size_t keks = 0;
    for (size_t at = text.find("\nkek "); at != std::string::npos; at = text.find("\nkek ", at + 1)) ++keks;
    EXPECT_EQ(1u, keks) << "the previous epoch's KEK must be gone";
  }

  // The ledger still verifies and shows the erasure.
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker.ledger_path(), "--public-key",
                           broker.ledger_public_key()},
                          &out, &err))
      << out << err;
  const std::string ledger = ReadText(broker.ledger_path());
  EXPECT_NE(std::string::npos, ledger.find("\"erased\"")) << "the erased copies are in the ledger";
  EXPECT_NE(std::string::npos, ledger.find("ErasureRequest"));

  // Restored into a fresh folder with the keys (store key and ring, kept
  // apart from the data) and served by a real broker: b receives the other
  // case, never the erased one's copies.
  TempDir fresh;
  BrokerProcess restored(fresh, {a_, b_});
  for (const char* name : {"keys/store.key", "keys/store.key.ring", "keys/pseudonym.key", "keys/ledger-signing.key",
                           "keys/ledger-signing.pub"}) {
    fs::copy_file(dir_.file(name), fresh.file(name), fs::copy_options::overwrite_existing);
  }
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "restore", "--config", restored.config_path(), "--from", backup}, &out,
                          &err))
      << out << err;
  ASSERT_TRUE(restored.Start().ok()) << restored.log();
  auto receiver = Agent::Connect(restored.AgentFor(b_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  std::set<std::string> received;
  while (true) {
    auto m = (*receiver)->Receive(2000ms);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    if (!m->has_value()) break;
    received.insert((**m)->id()->str());
    ASSERT_TRUE((*receiver)->Ack("a", (**m)->id()->string_view()).ok());
  }
  EXPECT_EQ((std::set<std::string>{"y1"}), received);
  EXPECT_TRUE(restored.WaitForLog("event=case_keys_adopted")) << restored.log();
  EXPECT_TRUE(restored.WaitForLog("event=store_damaged_message")) << restored.log();
  restored.Stop();
}

// The agent's outbox: messages of two cases wait in it; a copy of the file
// (with its -wal) is the backup. The agent then sends an erasure of one
// case, which the broker accepts: with the outbox key and its current ring
// the backup still opens the other case's message and none of the erased
// case's. The file never holds a message's text in the clear.
TEST_F(ShredTest, AnOutboxErasureLeavesAnEarlierBackupReadableForTheOtherCaseOnly) {
  BrokerProcess broker(dir_, {a_, b_});
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  const std::string db = dir_.file("agent/outbox.db"), key_file = dir_.file("agent-keys/outbox.db.key");
  fs::create_directories(dir_.file("agent"));
  fs::create_directories(dir_.file("agent-keys"));
  const std::string marker = "PLAINTEXT-MARKER-";
  {
    auto box = Outbox::Open(db, key_file);
    ASSERT_TRUE(box.ok()) << box.status().ToString();
    ASSERT_TRUE((*box)->Add(CaseMessage("x1", {"b"}, "CASE-X", false, "", marker + "x1")).ok());
    ASSERT_TRUE((*box)->Add(CaseMessage("x2", {"b"}, "CASE-X", false, "", marker + "x2")).ok());
    ASSERT_TRUE((*box)->Add(CaseMessage("y1", {"b"}, "CASE-Y", false, "", marker + "y1")).ok());
  }
  // The key and its ring were made at first use, owner-only, beside each
  // other and away from the outbox.
  for (const std::string& secret : {key_file, key_file + ".ring"}) {
    struct stat st {};
    ASSERT_EQ(0, ::stat(secret.c_str(), &st)) << secret;
    EXPECT_EQ(0600u, st.st_mode & 0777) << secret;
  }
  const std::string backup = dir_.file("outbox-backup");
  fs::create_directories(backup);
  fs::copy_file(db, backup + "/outbox.db");
  if (fs::exists(db + "-wal")) fs::copy_file(db + "-wal", backup + "/outbox.db-wal");
  const std::string raw = FileBytes(backup + "/outbox.db") + FileBytes(backup + "/outbox.db-wal");
  ASSERT_FALSE(raw.empty());
  EXPECT_EQ(std::string::npos, raw.find(marker)) << "a message's text is in the outbox file in the clear";
  EXPECT_EQ(std::string::npos, raw.find("CASE-X")) << "a case reference is in the outbox file in the clear";
  // Before the erasure the backup opens both cases.
  const OutboxOpened before = OpenOutboxCopy(backup + "/outbox.db", key_file);
  EXPECT_EQ((std::set<std::string>{"x1", "x2", "y1"}), before.ids);
  EXPECT_EQ(0, before.shredded);

  {
    auto box = Outbox::Open(db, key_file);
    ASSERT_TRUE(box.ok()) << box.status().ToString();
    ASSERT_TRUE((*box)->Add(CaseMessage("x-erase", {"b"}, "CASE-X", /*erasure=*/true)).ok());
    // Added after the erasure: a new key, still sent.
    ASSERT_TRUE((*box)->Add(CaseMessage("x3", {"b"}, "CASE-X", false, "", marker + "x3")).ok());
    auto agent = Agent::Connect(broker.AgentFor(a_));
    ASSERT_TRUE(agent.ok());
    std::map<std::string, std::string> codes;
    Status flushed = (*box)->Flush(**agent, [&](const ReceiptBuffer& r) {
      codes[r->message_id()->str()] = wire::EnumNameCode(r->code());
    });
    ASSERT_TRUE(flushed.ok()) << flushed.ToString();
    EXPECT_EQ((std::map<std::string, std::string>{
                  {"x1", "ok"}, {"x2", "ok"}, {"y1", "ok"}, {"x-erase", "ok"}, {"x3", "ok"}}),
              codes);
    EXPECT_EQ(0, *(*box)->Size());
  }
  // The ring moved on: it holds one KEK, and the erased case's key is in no
  // snapshot.
  {
    const std::string text = ReadText(key_file + ".ring");
    size_t keks = 0;
    for (size_t at = text.find("\nkek "); at != std::string::npos; at = text.find("\nkek ", at + 1)) ++keks;
    EXPECT_EQ(1u, keks) << "the previous epoch's KEK must be gone";
    EXPECT_NE(std::string::npos, text.find("\nkek 2 ")) << text.substr(0, 200);
  }
  // The backup taken before: the other case opens, the erased one does not.
  const OutboxOpened after = OpenOutboxCopy(backup + "/outbox.db", key_file);
  EXPECT_EQ((std::set<std::string>{"y1"}), after.ids);
  EXPECT_EQ(2, after.shredded);  // x1, x2
  // The live file: no -wal frames left from before the erasure.
  EXPECT_EQ(0u, fs::exists(db + "-wal") ? fs::file_size(db + "-wal") : 0u);
  // b, offline until now, gets the other case, the erasure and the later
  // message: the broker removed the erased case's copies waiting for it.
  {
    auto receiver = Agent::Connect(broker.AgentFor(b_, wire::Role::receiver));
    ASSERT_TRUE(receiver.ok());
    std::set<std::string> received;
    while (received.size() < 3) {
      auto m = (*receiver)->Receive(5000ms);
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      if (!m->has_value()) break;
      received.insert((**m)->id()->str());
      ASSERT_TRUE((*receiver)->Ack("a", (**m)->id()->string_view()).ok());
    }
    EXPECT_EQ((std::set<std::string>{"y1", "x-erase", "x3"}), received);
  }
  // The ledger still verifies and shows the erasure.
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker.ledger_path(), "--public-key",
                           broker.ledger_public_key()},
                          &out, &err))
      << out << err;
  EXPECT_NE(std::string::npos, ReadText(broker.ledger_path()).find("ErasureRequest"));
  EXPECT_EQ(0, broker.Stop());
}

// The outbox key is the file's: another key does not open it (a clear
// error naming the setting), and the file is not changed by the attempt.
TEST_F(ShredTest, AnOutboxRefusesAKeyThatIsNotItsOwn) {
  const std::string db = dir_.file("outbox.db");
  {
    auto box = Outbox::Open(db, dir_.file("right.key"));
    ASSERT_TRUE(box.ok()) << box.status().ToString();
    ASSERT_TRUE((*box)->Add(CaseMessage("m1", {"b"})).ok());
  }
  // A missing key is lost, not made anew.
  auto missing = Outbox::Open(db, dir_.file("wrong.key"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string::npos, missing.status().message().find("does not exist")) << missing.status().ToString();
  EXPECT_NE(std::string::npos, missing.status().message().find("outbox_key_file")) << missing.status().ToString();
  EXPECT_FALSE(fs::exists(dir_.file("wrong.key")));
  // Another key is refused.
  ASSERT_TRUE(WriteStoreKey(dir_.file("wrong.key")).ok());
  auto wrong = Outbox::Open(db, dir_.file("wrong.key"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(std::string::npos, wrong.status().message().find("is not the key")) << wrong.status().ToString();
  EXPECT_NE(std::string::npos, wrong.status().message().find(dir_.file("wrong.key"))) << wrong.status().ToString();
  auto right = Outbox::Open(db, dir_.file("right.key"));
  ASSERT_TRUE(right.ok()) << right.status().ToString();
  EXPECT_EQ(1, *(*right)->Size());
}

}  // namespace
}  // namespace liaison::testing
